"""The exercise checks, run in-process on reference answers and on typical mistakes."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from labkit import replace_head, strategy
from labkit.grading import EXERCISES, LESSONS, CheckResult, check, exercises_for, run_check
from labkit.grading import exercises as checks
from labkit.grading.exercises import lesson_04, models, run_judge, run_observe, tensor_from_json, tensor_to_json

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
import synthetic

# Reference answers of the exercises that the synthetic lessons (tests/fixtures/grading/synthetic.py) do not hold.
ANSWERS = {
    "cam_weights": ("cam_weights(model, images, target, layer)", """
        model.eval()
        store = {}
        handle = model.get_submodule(layer).register_forward_hook(lambda module, args, out: store.update(act=out))
        try:
            logits = model(images.clone().requires_grad_(True))
            grad, = torch.autograd.grad(logits[:, target].sum(), store["act"])
        finally:
            handle.remove()
        return grad.mean(dim=(2, 3))
    """),
    "pick_rate": ("pick_rate(rates, losses)", """
        import math
        avg, smoothed = 0.0, []
        for i, loss in enumerate(losses):
            avg = 0.98 * avg + 0.02 * loss
            smoothed.append(avg / (1 - 0.98 ** (i + 1)))
        finite = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
        return rates[min(finite, key=lambda i: smoothed[i])] / 10
    """),
    "most_confused_pair": ("most_confused_pair(confusion)", """
        best = None
        for i in range(len(confusion)):
            for j in range(len(confusion)):
                if i != j and confusion[i][j] > 0 and (best is None or confusion[i][j] > confusion[best[0]][best[1]]):
                    best = (i, j)
        return best
    """),
}


def _answer_code(name: str) -> str:
    if name not in ANSWERS:
        return synthetic.answer_code(name)
    signature, body = ANSWERS[name]
    return f"def {signature}:\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"


def _stub_code(name: str) -> str:
    if name not in ANSWERS:
        return synthetic.stub_code(name)
    return f"def {ANSWERS[name][0]}:\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"


def _answer(name: str):
    """The reference answer from the synthetic lessons (or ANSWERS), defined here."""
    namespace = {"torch": torch, "nn": nn}
    exec(_answer_code(name), namespace)
    return namespace[name]


def _failed_lines(result: CheckResult) -> str:
    return "\n".join(line for line in result.feedback if not line.startswith("✔"))


# --- registry ---------------------------------------------------------------------------
def test_registry_holds_the_exercises_of_the_contract_lesson_00_first():
    assert list(EXERCISES) == [
        "00.most_accurate_under", "00.head_info", "00.make_preprocessing",
        "01.freeze_and_swap", "01.make_head_optimizer", "01.count_parameters", "01.cam_weights",
        "02.first_conv_weight", "02.to_display",
        "03.make_param_groups", "03.conv1_drift", "03.pick_rate",
        "04.choose_strategy", "04.scenario_answers",
        "05.reestimate_bn", "05.class_weights", "05.medical_policy", "05.most_confused_pair",
        "06.lora_param_count", "06.merged_weight", "06.choose_adaptation",
    ]
    assert LESSONS == ("00_pretrained_models", "01_feature_extraction", "02_first_layer_filters",
                       "03_discriminative_lr", "04_choosing_a_strategy", "05_medical_domain_adaptation",
                       "06_parameter_efficient_finetuning")
    assert [e.name for e in exercises_for("04_choosing_a_strategy")] == ["choose_strategy", "scenario_answers"]


def test_checks_loaded_by_path_load_the_lesson_modules_by_path_not_through_labkit(monkeypatch):
    import importlib.util
    import os
    import types

    fake = types.ModuleType("fake")  # what a submission could plant under labkit's names
    fake.EXERCISES, fake.Exercise, fake.exercise = {}, None, None
    for name in ("protocol", "lesson_00", "models"):
        monkeypatch.setitem(sys.modules, f"labkit.grading.exercises.{name}", fake)
    monkeypatch.setitem(sys.modules, "labkit.grading.exercises", fake)
    spec = importlib.util.spec_from_file_location("_labkit_checks_by_path", checks.__file__,
                                                  submodule_search_locations=[os.path.dirname(checks.__file__)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    try:
        spec.loader.exec_module(module)
        assert list(module.EXERCISES) == list(EXERCISES) and module.LESSONS == LESSONS
        head_info = module.EXERCISES["00.head_info"]
        assert isinstance(head_info,
                          module.Exercise) and head_info.judge.__module__ == "_labkit_checks_by_path.lesson_00"
        assert module.run_check("00.head_info", _answer("head_info")).status == "passed"
    finally:
        for name in [m for m in sys.modules if m.startswith("_labkit_checks_by_path.")]:
            sys.modules.pop(name, None)


def test_unknown_exercise_id_prints_the_valid_ids_without_a_traceback(capsys):
    result = check("01.freeze_and_swp", lambda m, n: m)
    out = capsys.readouterr().out
    assert result.status == "error" and result.points == 0
    assert "unknown exercise '01.freeze_and_swp'. Did you mean '01.freeze_and_swap'?" in out
    assert "The exercises are: 00.most_accurate_under, 00.head_info, 00.make_preprocessing, 01.freeze_and_swap" in out
    assert "04.scenario_answers" in out
    assert "Traceback" not in out
    with pytest.raises(ValueError, match="unknown exercise '01.freeze_and_swp'.*Did you mean '01.freeze_and_swap'"):
        run_check("01.freeze_and_swp", lambda m, n: m)


def test_arguments_in_the_wrong_order_get_the_call_to_use(capsys):
    def count_parameters(model):
        return 0, 0

    result = check(count_parameters, "01.count_parameters")
    assert result.status == "error"
    assert 'the first argument of check is the exercise id, a string' in capsys.readouterr().out


def test_passing_a_model_instead_of_the_function_names_the_fix(capsys):
    import torchvision

    result = check("01.count_parameters", torchvision.models.resnet18(weights=None))
    out = capsys.readouterr().out
    assert result.status == "failed"
    assert "✘ you passed a model (ResNet) to check, not your function `count_parameters`" in out
    assert "hint: pass the function itself: check('01.count_parameters', count_parameters)" in out
    assert "Traceback" not in out and "forward()" not in out


def test_wrong_signature_and_called_function_name_the_fix():
    def freeze_and_swap(model):
        return model

    lines = _failed_lines(run_check("01.freeze_and_swap", freeze_and_swap))
    assert "`freeze_and_swap` takes (model), but the exercise calls it as freeze_and_swap(model, num_classes)" in lines
    assert "define it as `def freeze_and_swap(model, num_classes):`" in lines
    called = _failed_lines(run_check("01.count_parameters", (10, 20)))
    assert "`count_parameters` is (10, 20), not a function" in called and "without calling it" in called


def test_scenario_answers_not_attempted_names_the_answer_scenarios_function():
    for obj in (None, {"web_photos": None, "microscopy": None, "satellite": None, "products": None}):
        result = run_check("04.scenario_answers", obj)
        assert result.status == "not attempted" and "fill in `answer_scenarios()`" in result.feedback[0]
    assert "`answer_scenarios()`" in run_check("04.scenario_answers").feedback[0]


def test_unknown_lesson_lists_the_lessons():
    with pytest.raises(ValueError,
                       match="unknown lesson '05_x': expected one of 00_pretrained_models, 01_feature_extraction"):
        exercises_for("05_x")


# --- every reference answer passes, public and hidden ----------------------------------------
@pytest.mark.parametrize("exercise_id", [e for e in EXERCISES if not e.startswith("05.")])  # 05: test_check_variants_05
def test_reference_answer_passes_public_and_hidden_cases(exercise_id):
    name = EXERCISES[exercise_id].name
    obj = _answer(name) if name != "scenario_answers" else eval(synthetic.SCENARIOS.split("=", 1)[1])
    public = run_check(exercise_id, obj)
    hidden = run_check(exercise_id, obj, hidden=True)
    assert public.status == "passed", public
    assert hidden.status == "passed", hidden
    assert (hidden.points, hidden.max_points) == (1.0, 1.0)


@pytest.mark.parametrize("exercise_id",
                         [e for e in EXERCISES if EXERCISES[e].kind == "function" and not e.startswith("05.")])
def test_untouched_stub_is_not_attempted_without_a_traceback(exercise_id, capsys):
    name = EXERCISES[exercise_id].name
    namespace = {"torch": torch, "nn": nn}
    exec(_stub_code(name), namespace)
    result = check(exercise_id, namespace[name])
    out = capsys.readouterr().out
    assert result.status == "not attempted" and result.points == 0
    assert f"… {exercise_id}: not attempted yet" in out
    assert "Traceback" not in out and "still raises NotImplementedError" in out


# --- check(): printing, lookup by name, results ---------------------------------------------
def test_check_prints_ticks_and_returns_a_result(capsys):
    result = check("04.choose_strategy", _answer("choose_strategy"))
    out = capsys.readouterr().out
    assert out.startswith("✔ 04.choose_strategy: passed (1/1)\n")
    assert "  ✔ picks the strategy from data size and domain gap" in out
    assert result.passed and result.feedback == tuple(line.strip() for line in out.splitlines()[1:])
    assert repr(result) == "CheckResult('04.choose_strategy', 'passed', 1/1)"


def test_check_without_object_looks_up_the_name_in_the_calling_namespace(capsys):
    assert check("04.scenario_answers").status == "not attempted"
    assert "`scenario_answers` is not defined yet" in capsys.readouterr().out
    globals()["scenario_answers"] = {"web_photos": None, "microscopy": None, "satellite": None, "products": None}
    try:
        assert check("04.scenario_answers", quiet=True).status == "not attempted"
    finally:
        del globals()["scenario_answers"]


def test_quiet_check_prints_nothing(capsys):
    check("03.conv1_drift", _answer("conv1_drift"), quiet=True)
    assert capsys.readouterr().out == ""


def test_public_check_never_runs_or_prints_hidden_cases(capsys):
    calls = []

    def choose_strategy(n_images, domain_gap):
        calls.append((n_images, domain_gap))
        return _answer("choose_strategy")(n_images, domain_gap)

    public = check("04.choose_strategy", choose_strategy)
    assert public.passed and "hidden" not in capsys.readouterr().out
    specs = EXERCISES["04.choose_strategy"].cases(hidden=False, rng=random.Random(0))
    assert calls == [(s["n_images"], s["domain_gap"]) for s in specs]
    graded = run_check("04.choose_strategy", choose_strategy, hidden=True, rng=random.Random(0))
    assert graded.passed and graded.feedback[-1] == "✔ 7 hidden tests passed"
    assert len(calls) == 2 * len(specs) + 7


def test_hidden_failures_are_tagged_and_come_from_the_same_contract():
    def choose_strategy(n_images, domain_gap):  # right on every public point, wrong just off them
        public = EXERCISES["04.choose_strategy"].cases(hidden=False, rng=random.Random())
        known = {(s["n_images"], s["domain_gap"]) for s in public}
        return _answer("choose_strategy")(n_images, domain_gap) if (n_images, domain_gap) in known else "full_finetune"

    assert run_check("04.choose_strategy", choose_strategy).passed
    lines = _failed_lines(run_check("04.choose_strategy", choose_strategy, hidden=True, rng=random.Random(3)))
    assert lines.startswith("✘ (hidden test) choose_strategy(")


def test_check_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check("01.count_parameters", _answer("count_parameters"), quiet=True)
    assert torch.equal(torch.rand(3), expected)


def test_function_that_raises_reports_type_and_message_not_a_traceback(capsys):
    def count_parameters(model):
        raise KeyError("no such layer " + "x" * 1000)

    result = check("01.count_parameters", count_parameters)
    out = capsys.readouterr().out
    assert result.status == "failed"
    assert "✘ count_parameters(<ResNet-18 with a frozen backbone>) raised KeyError: 'no such layer xxx" in out
    assert "Traceback" not in out and max(len(line) for line in out.splitlines()) < 400


def test_function_that_calls_sys_exit_fails_with_a_hint():
    def make_head_optimizer(model, lr):
        sys.exit(1)

    result = run_check("01.make_head_optimizer", make_head_optimizer)
    assert "called sys.exit() / exit()" in _failed_lines(result)


def test_function_that_hangs_is_stopped_by_the_time_limit():
    def count_parameters(model):
        while True:
            pass

    result = run_check("01.count_parameters", count_parameters, time_limit=0.5)
    assert result.status == "failed"
    assert "checking `count_parameters` did not finish within 0.5 s" in _failed_lines(result)


def test_hang_that_catches_exception_is_still_stopped():
    def choose_strategy(n, gap):
        while True:
            try:
                while True:
                    pass
            except Exception:  # a learner's broad except cannot swallow the time limit
                pass

    failed = _failed_lines(run_check("04.choose_strategy", choose_strategy, time_limit=0.3))
    assert "did not finish within 0.3 s" in failed


def test_bare_except_around_a_slow_call_cannot_swallow_the_time_limit():
    def count_parameters(model):
        try:
            time.sleep(3)
        except:  # noqa: E722 - the learner swallows the alarm, then answers correctly
            pass
        return _answer("count_parameters")(model)

    result = run_check("01.count_parameters", count_parameters, time_limit=0.3)
    assert result.status == "failed"
    assert "checking `count_parameters` did not finish within 0.3 s" in _failed_lines(result)


def test_time_limit_covers_the_whole_check_not_each_call():
    def choose_strategy(n, gap):
        time.sleep(0.05)
        return _answer("choose_strategy")(n, gap)

    failed = _failed_lines(run_check("04.choose_strategy", choose_strategy, time_limit=0.3))
    assert "did not finish within 0.3 s" in failed


def test_time_limit_still_fails_a_slow_check_outside_the_main_thread():
    def choose_strategy(n, gap):
        time.sleep(0.05)
        return _answer("choose_strategy")(n, gap)

    out = []
    worker = threading.Thread(
        target=lambda: out.append(run_check("04.choose_strategy", choose_strategy, time_limit=0.2)))
    worker.start()
    worker.join()
    assert "did not finish within 0.2 s" in _failed_lines(out[0])


def test_not_a_function_is_reported():
    result = run_check("01.count_parameters", 42)
    assert "`count_parameters` is 42, not a function" in _failed_lines(result)


# --- 01.freeze_and_swap -------------------------------------------------------------------
def test_freeze_and_swap_swap_then_freeze_hints_at_the_order():
    def freeze_and_swap(model, num_classes):
        replace_head(model, num_classes)
        for p in model.parameters():
            p.requires_grad = False
        return model

    lines = _failed_lines(run_check("01.freeze_and_swap", freeze_and_swap))
    assert "✘ nothing is trainable in the returned ResNet-18" in lines
    assert "hint: you froze after swapping: swap the head after freezing" in lines


def test_freeze_and_swap_forgot_to_freeze_names_the_count():
    lines = _failed_lines(run_check("01.freeze_and_swap", lambda model, n: replace_head(model, n)))
    assert "✘ all 60 backbone tensors of ResNet-18 are still trainable" in lines


def test_freeze_and_swap_wrong_out_size_and_missing_return():
    def off_by_one(model, num_classes):
        for p in model.parameters():
            p.requires_grad = False
        model.fc = nn.Linear(model.fc.in_features, num_classes + 1)
        return model

    failed = _failed_lines(run_check("01.freeze_and_swap", off_by_one))
    assert "gives 11 scores per image; expected num_classes = 10" in failed

    def no_return(model, num_classes):
        off_by_one(model, num_classes - 1)

    assert "returned None" in _failed_lines(run_check("01.freeze_and_swap", no_return))


def test_freeze_and_swap_resnet_only_answer_fails_on_the_non_resnet():
    def freeze_and_swap(model, num_classes):
        for p in model.parameters():
            p.requires_grad = False
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        return model

    result = run_check("01.freeze_and_swap", freeze_and_swap)
    assert "✔ the backbone is frozen and only the new head is trainable" in result.feedback
    assert "freeze_and_swap(<fresh MobileNetV3-Small>, 5) raised AttributeError" in _failed_lines(result)


def test_freeze_and_swap_wrong_in_size_is_caught():
    def freeze_and_swap(model, num_classes):
        for p in model.parameters():
            p.requires_grad = False
        model.fc = nn.Linear(100, num_classes)
        return model

    failed = _failed_lines(run_check("01.freeze_and_swap", freeze_and_swap))
    assert "the new head takes 100 features, but the backbone of ResNet-18 gives 512 at `fc`" in failed


# --- 01.make_head_optimizer / 01.count_parameters --------------------------------------------
def test_optimizer_over_all_parameters_names_the_frozen_count():
    result = run_check("01.make_head_optimizer", lambda model, lr: torch.optim.SGD(model.parameters(), lr=lr))
    assert "✘ your optimizer holds 60 frozen tensors" in result.feedback
    assert "  hint: pass only parameters with requires_grad" in result.feedback


def test_optimizer_with_fixed_lr_and_head_only_answers_fail():
    fixed = run_check("01.make_head_optimizer", lambda model,
                      lr: torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01))
    assert "param group 0 has lr 0.01 for lr=0.003" in _failed_lines(fixed)
    head_only = _failed_lines(run_check("01.make_head_optimizer",
                                        lambda model, lr: torch.optim.SGD(model.fc.parameters(), lr=lr)))
    assert "✘ your optimizer is missing 15 trainable tensors (e.g. layer4.0.conv1.weight)" in head_only
    assert "other layers may be unfrozen too" in head_only


def test_count_parameters_mistakes_get_specific_hints():
    def tensors(model):
        return sum(1 for p in model.parameters() if p.requires_grad), sum(1 for p in model.parameters())

    def swapped(model):
        return tuple(reversed(_answer("count_parameters")(model)))

    def all_trainable(model):
        total = sum(p.numel() for p in model.parameters())
        return total, total

    assert "you counted tensors (62), not parameter values" in _failed_lines(run_check("01.count_parameters", tensors))
    assert "the two numbers are swapped" in _failed_lines(run_check("01.count_parameters", swapped))
    assert "you counted every parameter as trainable" in _failed_lines(run_check("01.count_parameters", all_trainable))
    as_tensor = run_check("01.count_parameters", lambda m: (torch.tensor(1), torch.tensor(2)))
    assert "returned tensors; expected Python ints" in _failed_lines(as_tensor)


# --- lesson 02 --------------------------------------------------------------------------------
def test_first_conv_weight_sharing_memory_or_grad_is_caught():
    def shares(model):
        return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).weight.detach()

    def attached(model):
        return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).weight

    failed = _failed_lines(run_check("02.first_conv_weight", shares))
    assert "changing your result changed the model's `conv1.weight`: they share memory" in failed
    assert "still requires grad" in _failed_lines(run_check("02.first_conv_weight", attached))


def test_to_display_mistakes_get_specific_hints():
    ref = _answer("to_display")

    def together(w):
        w = w.detach()
        return ((w - w.min()) / (w.max() - w.min())).permute(0, 2, 3, 1)

    def no_permute(w):
        return ref(w).permute(0, 3, 1, 2)

    def reshaped(w):
        return ref(w).permute(0, 3, 1, 2).reshape(w.shape[0], w.shape[2], w.shape[3], 3)

    def divides_by_zero(w):
        w = w.detach()
        low, high = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
        return ((w - low) / (high - low)).permute(0, 2, 3, 1)

    def in_place(w):
        w.sub_(w.min())
        return ref(w)

    assert "scales all filters together" in _failed_lines(run_check("02.to_display", together))
    assert "the color channels are not moved last" in _failed_lines(run_check("02.to_display", no_permute))
    assert "right values in the wrong places" in _failed_lines(run_check("02.to_display", reshaped))
    failed = _failed_lines(run_check("02.to_display", divides_by_zero))
    assert "NaN values for a constant filter (division by zero)" in failed
    assert "changed its input" in _failed_lines(run_check("02.to_display", in_place))


# --- lesson 03 --------------------------------------------------------------------------------
def test_make_param_groups_mistakes_get_specific_hints():
    ref = _answer("make_param_groups")

    def no_bn1(model, base_lr, decay):
        groups = ref(model, base_lr, decay)
        groups[0]["params"] = list(model.conv1.parameters())
        return groups

    def reversed_lrs(model, base_lr, decay):
        groups = ref(model, base_lr, decay)
        for i, g in enumerate(groups):
            g["lr"] = base_lr * decay**i
        return groups

    def five(model, base_lr, decay):
        return ref(model, base_lr, decay)[1:]

    failed = _failed_lines(run_check("03.make_param_groups", no_bn1))
    assert "2 parameters of ResNet-18 are in no group (e.g. bn1.weight)" in failed
    failed = _failed_lines(run_check("03.make_param_groups", reversed_lrs))
    assert "the stem has the highest lr and fc the lowest" in failed
    lines = _failed_lines(run_check("03.make_param_groups", five))
    assert "returned 5 groups; expected 6" in lines and "the stem (conv1 and bn1) needs a group of its own" in lines


def test_conv1_drift_mistakes_get_specific_hints():
    def absolute(before, after):
        if before.shape != after.shape:
            raise ValueError("shapes")
        return float((after - before).norm())

    def tensor(before, after):
        return (after - before).norm() / before.norm()

    def no_shape_check(before, after):
        return float((after - before).norm() / before.norm())

    assert "the size of the change, not the relative change" in _failed_lines(run_check("03.conv1_drift", absolute))
    assert "returned a tensor; expected a Python float" in _failed_lines(run_check("03.conv1_drift", tensor))
    lines = _failed_lines(run_check("03.conv1_drift", no_shape_check))
    assert "raised RuntimeError" in lines and "expected ValueError" in lines


# --- lesson 04 --------------------------------------------------------------------------------
def test_choose_strategy_boundaries_are_public():
    def off_by_boundary(n_images, domain_gap):
        if n_images > 10_000:
            return "full_finetune"
        return "partial_finetune" if domain_gap > 0.5 else "feature_extraction"

    lines = _failed_lines(run_check("04.choose_strategy", off_by_boundary))
    assert "✘ choose_strategy(9_999, 0.5) returned 'feature_extraction', which is not the best fit" in lines
    assert "a gap of 0.5 is distant (distant: 0.5 or more)" in lines
    failed = _failed_lines(run_check("04.choose_strategy", lambda n, g: "fine_tune"))
    assert "returned 'fine_tune'; expected one of" in failed


def test_scenario_answers_lists_every_wrong_scenario_without_the_answer():
    answers = eval(synthetic.SCENARIOS.split("=", 1)[1])
    answers["satellite"] = ("feature_extraction", "update")
    result = run_check("04.scenario_answers", answers)
    lines = _failed_lines(result)
    assert "✔ microscopy is right" in result.feedback
    assert "✘ satellite: the strategy is not the best fit" in lines
    assert "✘ satellite: the BatchNorm choice is not right" in lines
    assert "partial_finetune" not in lines and "'freeze'" not in lines  # never the solution
    missing = run_check("04.scenario_answers", {"web_photos": ("full_finetune", "update")})
    assert "scenario_answers is missing 'microscopy', 'satellite', 'products'" in _failed_lines(missing)


# --- the protocol: cases / observe / judge ------------------------------------------------------
@pytest.mark.parametrize("exercise_id", list(EXERCISES))
def test_cases_are_json_public_ones_fixed_hidden_ones_drawn_from_the_rng(exercise_id):
    ex = EXERCISES[exercise_id]
    public = ex.cases(hidden=False, rng=random.Random(1))
    assert public == ex.cases(hidden=False, rng=random.Random(2)) and not any(s.get("hidden") for s in public)
    graded = ex.cases(hidden=True, rng=random.Random(1))
    assert graded[: len(public)] == public and all(s.get("hidden") for s in graded[len(public):])
    assert json.loads(json.dumps(graded)) == graded
    if len(graded) > len(public) and exercise_id != "04.scenario_answers":
        assert graded != ex.cases(hidden=True, rng=random.Random(2))


@pytest.mark.parametrize("exercise_id", list(EXERCISES))
def test_observations_are_json_and_judging_them_gives_the_same_result_as_run_check(exercise_id):
    name = EXERCISES[exercise_id].name
    obj = _answer(name) if name != "scenario_answers" else eval(synthetic.SCENARIOS.split("=", 1)[1])
    specs = EXERCISES[exercise_id].cases(hidden=False, rng=random.Random(0))
    observations = run_observe(exercise_id, obj, specs)
    text = json.dumps(observations, allow_nan=False)  # strict JSON: what the sandbox hands over
    assert not any(word in text for word in ('"passed"', '"status"', '"expected"'))
    assert run_judge(exercise_id, specs, json.loads(text)) == run_check(exercise_id, obj)


@pytest.mark.parametrize("exercise_id", list(EXERCISES))
def test_malformed_observations_fail_the_case_instead_of_crashing(exercise_id):
    specs = EXERCISES[exercise_id].cases(hidden=False, rng=random.Random(0))[:1]
    junk = [
        None, [], {}, {"type": 5}, {"items": "x", "length": 2},
        {"is_tensor": True, "tensor": {"shape": [10**9], "dtype": "float32", "data": []}},
        {"returned": "same", "params": [{"name": None, "was": 3}], "forward": {"shape": "x"}},
        {"groups": [1, 2], "is_list": True},
        {"is_optimizer": True, "groups": [{"params": [None]}]}, {"value": {"a": 1}},
        {"timed_out": True, "limit": "soon"},
    ]
    for observation in junk:
        result = run_judge(exercise_id, specs, [observation])
        assert result.status in ("failed", "not attempted"), (observation, result)
    assert run_judge(exercise_id, specs, "not a list").status == "failed"


def test_tensor_json_round_trip_keeps_shape_dtype_and_non_finite_values():
    t = torch.tensor([[1.5, float("nan")], [float("inf"), -float("inf")]], dtype=torch.float64)
    d = tensor_to_json(t)
    assert d == {"shape": [2, 2], "dtype": "float64", "data": [1.5, "nan", "inf", "-inf"]}
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    back = tensor_from_json(d)
    assert back.dtype == torch.float64 and torch.equal(back.nan_to_num(0.0), t.nan_to_num(0.0)) and back[0, 1].isnan()
    with pytest.raises(ValueError, match="data must be a list of 4 values"):
        tensor_from_json({"shape": [2, 2], "dtype": "float32", "data": [1.0]})
    with pytest.raises(ValueError, match="dtype must be one of"):
        tensor_from_json({"shape": [1], "dtype": "object", "data": [1]})


def test_a_spec_rebuilds_bit_identical_weights_in_another_process():
    spec = {"arch": "bn_first", "seed": 403}
    code = (
        "import json, sys; from labkit.grading.exercises import models, tensor_to_json; "
        "m = models.build_model(json.loads(sys.argv[1])); "
        "print(json.dumps([tensor_to_json(p) for p in m.parameters()]))"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                         check=True).stdout
    here = [tensor_to_json(p) for p in models.build_model(spec).parameters()]
    assert json.loads(out) == here


# --- the strategy rule: the judge reads labkit.strategy (issue 10) ------------------------------
def test_grader_judges_with_labkit_strategy_s_rule_on_both_sides_of_each_threshold():
    assert lesson_04._rule() is strategy  # no copy of the rule: the judge reads labkit.strategy
    sizes = [1, 2, 299, 300, 2_000, 9_998, 9_999, 10_000, 10_001, 50_000, 999_999, 1_000_000, 5_000_000]
    gaps = [0, 0.0, 0.1, 0.49, 0.4999999, 0.5, 0.5000001, 0.51, 0.79, 0.8, 0.95, 1, 1.0]
    for n in sizes:
        for gap in gaps:
            spec = {"n_images": n, "domain_gap": gap}
            right = strategy.choose_strategy(n, gap)
            for answer in strategy.STRATEGIES:
                obs = run_observe("04.choose_strategy", lambda n_images, domain_gap, a=answer: a, [spec])
                assert run_judge("04.choose_strategy", [spec], obs).passed == (answer == right), (n, gap, answer)
    public = EXERCISES["04.choose_strategy"].cases(hidden=False, rng=random.Random(0))
    points = {(s["n_images"], s["domain_gap"]) for s in public}
    small, distant = strategy.SMALL_DATA, strategy.DISTANT_GAP
    assert {small - 1, small, small + 1} <= {n for n, _ in points} and distant in {g for _, g in points}


def test_grader_scenario_answers_are_what_labkit_strategy_advises():
    for key, ((n, gap), facts) in lesson_04._SCENARIOS.items():
        advice = strategy.advise(n, gap)
        answer = (strategy.choose_strategy(n, gap), strategy.bn_advice(n, gap))
        assert answer == (advice.strategy, advice.bn), key
        assert f"{n:,}" in facts or "million" in facts
    reference = eval(synthetic.SCENARIOS.split("=", 1)[1])
    assert {k: tuple(v) for k, v in reference.items()} == {
        k: (strategy.choose_strategy(n, g), strategy.bn_advice(n, g))
        for k, ((n, g), _f) in lesson_04._SCENARIOS.items()
    }


# --- the package: one registry, loaded by path as a whole folder ------------------------------------
def test_the_registry_refuses_a_duplicate_exercise_id():
    from labkit.grading.exercises.protocol import register

    with pytest.raises(ValueError, match="id '01.freeze_and_swap' is registered twice .*expected one @exercise"):
        register(EXERCISES["01.freeze_and_swap"])
    assert list(EXERCISES).count("01.freeze_and_swap") == 1


def test_a_private_copy_loads_from_its_folder_or_its_init_and_a_single_file_is_refused(tmp_path):
    import shutil

    from labkit.grading.loading import CHECKS_PATH, checks_sha, load_checks

    copy = tmp_path / "exercises"
    shutil.copytree(CHECKS_PATH.parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    module = load_checks(copy)
    assert load_checks(copy / "__init__.py") is module and module is not checks
    assert module.EXERCISES["05.class_weights"].judge.__module__ == f"{module.__name__}.lesson_05"
    assert module.run_check("04.choose_strategy", _answer("choose_strategy")).passed
    assert checks_sha(copy) == checks_sha(None)
    with pytest.raises(ValueError, match="is a single file; .*start your private copy from the installed "
                                         "labkit/grading/exercises/"):
        load_checks(copy / "protocol.py")
    with pytest.raises(FileNotFoundError, match="start your private copy from the installed labkit/grading/exercises/"):
        load_checks(tmp_path / "missing")
