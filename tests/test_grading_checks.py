"""The exercise checks, run in-process on reference answers and on typical mistakes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from labkit import replace_head
from labkit.grading import EXERCISES, LESSONS, CheckResult, check, exercises_for, run_check

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
import synthetic  # noqa: E402


def _answer(name: str):
    """The reference answer from the synthetic lessons, defined here."""
    namespace = {"torch": torch, "nn": nn}
    exec(synthetic.answer_code(name), namespace)  # noqa: S102 - our own fixture code
    return namespace[name]


def _failed_lines(result: CheckResult) -> str:
    return "\n".join(line for line in result.feedback if not line.startswith("✔"))


# --- registry ---------------------------------------------------------------------------
def test_registry_holds_the_nine_exercises_of_the_contract():
    assert list(EXERCISES) == [
        "01.freeze_and_swap", "01.make_head_optimizer", "01.count_parameters",
        "02.first_conv_weight", "02.to_display",
        "03.make_param_groups", "03.conv1_drift",
        "04.choose_strategy", "04.scenario_answers",
        "05.reestimate_bn", "05.class_weights", "05.medical_policy",
    ]
    assert LESSONS == ("01_feature_extraction", "02_first_layer_filters", "03_discriminative_lr", "04_choosing_a_strategy",
                       "05_medical_domain_adaptation")
    assert [e.name for e in exercises_for("04_choosing_a_strategy")] == ["choose_strategy", "scenario_answers"]


def test_unknown_exercise_id_names_the_closest_one():
    with pytest.raises(ValueError, match="unknown exercise '01.freeze_and_swp'.*Did you mean '01.freeze_and_swap'"):
        check("01.freeze_and_swp", lambda m, n: m)


def test_unknown_lesson_lists_the_lessons():
    with pytest.raises(ValueError, match="unknown lesson '05_x': expected one of 01_feature_extraction"):
        exercises_for("05_x")


# --- every reference answer passes, public and hidden ----------------------------------------
@pytest.mark.parametrize("exercise_id", [e for e in EXERCISES if not e.startswith("05.")])  # 05: test_check_variants_05
def test_reference_answer_passes_public_and_hidden_cases(exercise_id):
    name = EXERCISES[exercise_id].name
    obj = _answer(name) if name != "scenario_answers" else eval(synthetic.SCENARIOS.split("=", 1)[1])  # noqa: S307
    public = run_check(exercise_id, obj)
    hidden = run_check(exercise_id, obj, hidden=True)
    assert public.status == "passed", public
    assert hidden.status == "passed", hidden
    assert (hidden.points, hidden.max_points) == (1.0, 1.0)


@pytest.mark.parametrize("exercise_id", [e for e in EXERCISES if EXERCISES[e].kind == "function" and not e.startswith("05.")])
def test_untouched_stub_is_not_attempted_without_a_traceback(exercise_id, capsys):
    name = EXERCISES[exercise_id].name
    namespace = {"torch": torch, "nn": nn}
    exec(synthetic.stub_code(name), namespace)  # noqa: S102
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
    def first_conv_weight(model):  # right on torchvision models, wrong on the hidden nested one
        return model.conv1.weight.detach().clone() if hasattr(model, "conv1") else model.features[0][0].weight.detach().clone()

    public = check("02.first_conv_weight", first_conv_weight)
    assert public.passed and "hidden" not in capsys.readouterr().out
    graded = run_check("02.first_conv_weight", first_conv_weight, hidden=True)
    assert graded.status == "failed"
    assert "(hidden test) first_conv_weight(<fresh a model whose first conv sits inside a `stem` block" in _failed_lines(graded)


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

    assert "did not finish within 0.3 s" in _failed_lines(run_check("04.choose_strategy", choose_strategy, time_limit=0.3))


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

    assert "gives 11 scores per image; expected num_classes = 10" in _failed_lines(run_check("01.freeze_and_swap", off_by_one))

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

    assert "the new head does not accept the backbone's 512 features" in _failed_lines(run_check("01.freeze_and_swap", freeze_and_swap))


# --- 01.make_head_optimizer / 01.count_parameters --------------------------------------------
def test_optimizer_over_all_parameters_names_the_frozen_count():
    result = run_check("01.make_head_optimizer", lambda model, lr: torch.optim.SGD(model.parameters(), lr=lr))
    assert "✘ your optimizer holds 60 frozen tensors" in result.feedback
    assert "  hint: pass only parameters with requires_grad" in result.feedback


def test_optimizer_with_fixed_lr_and_head_only_answers_fail():
    fixed = run_check("01.make_head_optimizer", lambda model, lr: torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01))
    assert "param group 0 has lr 0.01 for lr=0.003" in _failed_lines(fixed)
    head_only = run_check("01.make_head_optimizer", lambda model, lr: torch.optim.SGD(model.fc.parameters(), lr=lr), hidden=True)
    assert "(hidden test)" in _failed_lines(head_only)


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

    assert "changing your result changed the model's weights" in _failed_lines(run_check("02.first_conv_weight", shares))
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
    assert "NaN values for a constant filter (division by zero)" in _failed_lines(run_check("02.to_display", divides_by_zero))
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

    assert "2 parameters of ResNet-18 are in no group (e.g. bn1.weight)" in _failed_lines(run_check("03.make_param_groups", no_bn1))
    assert "the stem has the highest lr and fc the lowest" in _failed_lines(run_check("03.make_param_groups", reversed_lrs))
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
def test_choose_strategy_boundaries_are_hidden_and_vocabulary_is_public():
    def off_by_boundary(n_images, domain_gap):
        if n_images > 10_000:
            return "full_finetune"
        return "partial_finetune" if domain_gap > 0.5 else "feature_extraction"

    assert run_check("04.choose_strategy", off_by_boundary).passed
    lines = _failed_lines(run_check("04.choose_strategy", off_by_boundary, hidden=True))
    assert "(hidden test) choose_strategy(9_999, 0.5) returned 'feature_extraction', which is not the best fit" in lines
    assert "returned 'fine_tune'; expected one of" in _failed_lines(run_check("04.choose_strategy", lambda n, g: "fine_tune"))


def test_scenario_answers_lists_every_wrong_scenario_without_the_answer():
    answers = eval(synthetic.SCENARIOS.split("=", 1)[1])  # noqa: S307
    answers["satellite"] = ("feature_extraction", "update")
    result = run_check("04.scenario_answers", answers)
    lines = _failed_lines(result)
    assert "✔ microscopy is right" in result.feedback
    assert "✘ satellite: the strategy is not the best fit" in lines
    assert "✘ satellite: the BatchNorm choice is not right" in lines
    assert "partial_finetune" not in lines and "'freeze'" not in lines  # never the solution
    missing = run_check("04.scenario_answers", {"web_photos": ("full_finetune", "update")})
    assert "scenario_answers is missing 'microscopy', 'satellite', 'products'" in _failed_lines(missing)
