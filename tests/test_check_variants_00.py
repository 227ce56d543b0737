"""Lesson 00's checks: correct variants in several styles pass, wrong variants fail with the right hint.

Also the protocol split: observations are JSON-safe, judging a JSON round-tripped observation
gives the same verdict, and a malformed observation is a failed case, not a crash.
"""
import json
import random

import pytest
import torch
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import v2

from labkit import get_head
from labkit.grading import exercises as checks_module
from labkit.grading import run_check
from labkit.grading.exercises import run_judge, run_observe

# the exercises lesson_00.py declares (not exercises_for: the test below checks they are registered first)
EXERCISES_00 = [e for e in checks_module.EXERCISES.values() if e.judge.__module__ == checks_module.lesson_00.__name__]
BY_ID = {e.id: e for e in EXERCISES_00}


# --------------------------------------------------------------------------- 00.most_accurate_under
def best_filter_max(rows, column, budget):
    fits = [r for r in rows if r[column] <= budget]
    if not fits:
        raise ValueError("nothing fits")
    return max(fits, key=lambda r: r["acc@1"])["weights"]


def best_sorted(rows, column, budget):
    for row in sorted(rows, key=lambda r: -r["acc@1"]):
        if row[column] <= budget:
            return row["weights"]
    raise ValueError(f"no row has {column} <= {budget}")


def best_loop(rows, column, budget):
    best = None
    for row in rows:
        if row[column] > budget:
            continue
        if best is None or row["acc@1"] > best["acc@1"]:
            best = row
    if best is None:
        raise ValueError("empty")
    return str(best["weights"])


def wrong_strict(rows, column, budget):
    fits = [r for r in rows if r[column] < budget]
    if not fits:
        raise ValueError("nothing fits")
    return max(fits, key=lambda r: r["acc@1"])["weights"]


def wrong_no_budget(rows, column, budget):
    return max(rows, key=lambda r: r["acc@1"])["weights"]


def wrong_cheapest(rows, column, budget):
    fits = [r for r in rows if r[column] <= budget]
    if not fits:
        raise ValueError("nothing fits")
    return min(fits, key=lambda r: r[column])["weights"]


def wrong_row(rows, column, budget):
    fits = [r for r in rows if r[column] <= budget]
    if not fits:
        raise ValueError("nothing fits")
    return max(fits, key=lambda r: r["acc@1"])


def wrong_builder(rows, column, budget):
    fits = [r for r in rows if r[column] <= budget]
    if not fits:
        raise ValueError("nothing fits")
    return max(fits, key=lambda r: r["acc@1"])["builder"]


def wrong_acc5(rows, column, budget):
    fits = [r for r in rows if r[column] <= budget]
    if not fits:
        raise ValueError("nothing fits")
    return max(fits, key=lambda r: r["acc@5"])["weights"]


def wrong_none_when_empty(rows, column, budget):
    fits = [r for r in rows if r[column] <= budget]
    return max(fits, key=lambda r: r["acc@1"])["weights"] if fits else None


def wrong_index_error(rows, column, budget):
    fits = sorted((r for r in rows if r[column] <= budget), key=lambda r: -r["acc@1"])
    return fits[0]["weights"]


def wrong_gflops_always(rows, column, budget):
    return best_filter_max(rows, "gflops", budget)


# --------------------------------------------------------------------------- 00.head_info
def head_via_get_head(model):
    head = get_head(model)
    return next(n for n, m in model.named_modules() if m is head), head.in_features


def head_last_linear(model):
    name, layer = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return name, int(layer.in_features)


def head_by_family(model):
    if hasattr(model, "fc"):
        return "fc", model.fc.in_features
    if hasattr(model, "heads"):
        return "heads.head", model.heads.head.in_features
    return f"classifier.{len(model.classifier) - 1}", model.classifier[-1].in_features


def head_wrong_container(model):
    name, size = head_via_get_head(model)
    return name.rpartition(".")[0] or name, size


def head_wrong_out_features(model):
    head = get_head(model)
    return next(n for n, m in model.named_modules() if m is head), head.out_features


def head_wrong_always_fc(model):
    return "fc", get_head(model).in_features


def head_wrong_module(model):
    head = get_head(model)
    return head, head.in_features


def head_wrong_swapped(model):
    name, size = head_via_get_head(model)
    return size, name


def head_wrong_single(model):
    return head_via_get_head(model)[0]


def head_wrong_tensor_size(model):
    name, size = head_via_get_head(model)
    return name, torch.tensor(size)


# --------------------------------------------------------------------------- 00.make_preprocessing
def pre_compose(weights):
    p = weights.transforms()
    return T.Compose([T.Resize(p.resize_size[0], interpolation=p.interpolation), T.CenterCrop(p.crop_size[0]),
                      T.ToTensor(), T.Normalize(p.mean, p.std)])


def pre_v2(weights):
    p = weights.transforms()
    return v2.Compose([v2.PILToTensor(), v2.Resize(p.resize_size, interpolation=p.interpolation, antialias=True),
                       v2.CenterCrop(p.crop_size), v2.ToDtype(torch.float32, scale=True), v2.Normalize(p.mean, p.std)])


def pre_preset(weights):
    return weights.transforms()


def pre_function(weights):
    p = weights.transforms()

    def transform(img):
        img = T.functional.resize(img, p.resize_size, interpolation=p.interpolation)
        img = T.functional.center_crop(img, p.crop_size)
        return T.functional.normalize(T.functional.to_tensor(img), p.mean, p.std)

    return transform


def pre_wrong_bilinear(weights):
    p = weights.transforms()
    return T.Compose([T.Resize(p.resize_size[0]), T.CenterCrop(p.crop_size[0]), T.ToTensor(),
                      T.Normalize(p.mean, p.std)])


def pre_wrong_no_normalize(weights):
    p = weights.transforms()
    return T.Compose([T.Resize(p.resize_size[0], interpolation=p.interpolation), T.CenterCrop(p.crop_size[0]),
                      T.ToTensor()])


def pre_wrong_resize_to_crop(weights):
    p = weights.transforms()
    return T.Compose([T.Resize(p.crop_size[0], interpolation=p.interpolation), T.CenterCrop(p.crop_size[0]),
                      T.ToTensor(), T.Normalize(p.mean, p.std)])


def pre_wrong_squash(weights):
    p = weights.transforms()
    size = p.crop_size[0]
    return T.Compose([T.Resize((size, size), interpolation=p.interpolation), T.ToTensor(), T.Normalize(p.mean, p.std)])


def pre_wrong_224(weights):
    p = weights.transforms()
    return T.Compose([T.Resize(p.resize_size[0], interpolation=p.interpolation), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize(p.mean, p.std)])


def pre_wrong_pil_out(weights):
    p = weights.transforms()
    return T.Compose([T.Resize(p.resize_size[0], interpolation=p.interpolation), T.CenterCrop(p.crop_size[0])])


def pre_wrong_batched(weights):
    inner = pre_compose(weights)
    return lambda img: inner(img).unsqueeze(0)


def pre_wrong_not_callable(weights):
    return weights.transforms().crop_size


def pre_wrong_uint8(weights):
    p = weights.transforms()
    return T.Compose([T.Resize(p.resize_size[0], interpolation=p.interpolation), T.CenterCrop(p.crop_size[0]),
                      T.PILToTensor()])


def stub(*args):
    raise NotImplementedError()


CORRECT = [
    ("00.most_accurate_under", best_filter_max),
    ("00.most_accurate_under", best_sorted),
    ("00.most_accurate_under", best_loop),
    ("00.head_info", head_via_get_head),
    ("00.head_info", head_last_linear),
    ("00.head_info", head_by_family),
    ("00.make_preprocessing", pre_compose),
    ("00.make_preprocessing", pre_v2),
    ("00.make_preprocessing", pre_preset),
    ("00.make_preprocessing", pre_function),
]

CORRECT_BY_ID = {e: f for e, f in reversed(CORRECT)}

WRONG = [
    ("00.most_accurate_under", wrong_strict, "not <"),
    ("00.most_accurate_under", wrong_no_budget, "at most the budget"),
    ("00.most_accurate_under", wrong_cheapest, "highest 'acc@1'"),
    ("00.most_accurate_under", wrong_row, "row['weights']"),
    ("00.most_accurate_under", wrong_builder, "weights name (row['weights'])"),
    ("00.most_accurate_under", wrong_acc5, "by 'acc@1'"),
    ("00.most_accurate_under", wrong_none_when_empty, "raise ValueError"),
    ("00.most_accurate_under", wrong_index_error, "raise ValueError"),
    ("00.most_accurate_under", wrong_gflops_always, "the column you were given"),
    ("00.head_info", head_wrong_container, "name the nn.Linear itself"),
    ("00.head_info", head_wrong_out_features, "in_features"),
    ("00.head_info", head_wrong_always_fc, "don't assume one name"),
    ("00.head_info", head_wrong_module, "dotted name as a string"),
    ("00.head_info", head_wrong_swapped, "name first"),
    ("00.head_info", head_wrong_single, "return two things"),
    ("00.head_info", head_wrong_tensor_size, "plain int"),
    ("00.make_preprocessing", pre_wrong_bilinear, "interpolation=weights.transforms().interpolation"),
    ("00.make_preprocessing", pre_wrong_no_normalize, "mean and std"),
    ("00.make_preprocessing", pre_wrong_resize_to_crop, "resize the shorter side"),
    ("00.make_preprocessing", pre_wrong_squash, "squashes"),
    ("00.make_preprocessing", pre_wrong_224, "not every checkpoint uses 224"),
    ("00.make_preprocessing", pre_wrong_pil_out, "ToTensor"),
    ("00.make_preprocessing", pre_wrong_batched, "no batch dimension"),
    ("00.make_preprocessing", pre_wrong_not_callable, "callable"),
    ("00.make_preprocessing", pre_wrong_uint8, "floats"),
]


@pytest.mark.parametrize("exercise, fn", CORRECT, ids=[f"{e}-{f.__name__}" for e, f in CORRECT])
def test_correct_variant_passes(exercise, fn, one_torch_thread):
    result = run_check(exercise, fn)
    assert result.status == "passed", str(result)


@pytest.mark.parametrize("exercise, fn, hint", WRONG, ids=[f"{e}-{f.__name__}" for e, f, _ in WRONG])
def test_wrong_variant_fails_with_its_hint(exercise, fn, hint, one_torch_thread):
    result = run_check(exercise, fn)
    assert result.status == "failed", str(result)
    assert hint in "\n".join(result.feedback), str(result)


@pytest.mark.parametrize("exercise", sorted(BY_ID))
def test_stub_and_none_are_not_attempted(exercise):
    assert run_check(exercise, stub).status == "not attempted"
    assert run_check(exercise, lambda *a: None).status == "not attempted"


@pytest.mark.parametrize("exercise, fn", [("00.most_accurate_under", best_sorted), ("00.head_info", head_last_linear),
                                          ("00.make_preprocessing", pre_v2)])
def test_hidden_cases_pass_for_a_correct_variant(exercise, fn, one_torch_thread):
    result = run_check(exercise, fn, hidden=True, time_limit=None)
    assert result.status == "passed", str(result)
    assert any("hidden test" in line for line in result.feedback)


def test_hidden_cases_are_fresh_and_public_cases_fixed():
    for ex in EXERCISES_00:
        public_a = ex.cases(hidden=False, rng=random.Random(1))
        public_b = ex.cases(hidden=False, rng=random.Random(2))
        assert public_a == public_b and not any(s["hidden"] for s in public_a)
        hidden_a = [s for s in ex.cases(hidden=True, rng=random.Random(1)) if s["hidden"]]
        hidden_b = [s for s in ex.cases(hidden=True, rng=random.Random(2)) if s["hidden"]]
        assert hidden_a and hidden_a != hidden_b
        json.dumps(public_a + hidden_a)  # JSON-safe specs


def _judge_all(ex, specs, observations):
    """The trusted side alone: the protocol's run_judge on (spec, observation) pairs."""
    return run_judge(ex.id, specs, observations).status


@pytest.mark.parametrize("exercise, fn", [("00.most_accurate_under", wrong_strict), ("00.head_info", head_by_family),
                                          ("00.make_preprocessing", pre_compose),
                                          ("00.make_preprocessing", pre_wrong_bilinear)])
def test_judging_json_round_tripped_observations_gives_the_same_verdict(exercise, fn, one_torch_thread):
    ex = BY_ID[exercise]
    specs = ex.cases(hidden=False, rng=random.Random(0))
    observations = [ex.observe(fn, spec) for spec in specs]
    text = json.dumps(observations)
    assert "Tensor(" not in text
    assert _judge_all(ex, specs, json.loads(text)) == run_check(exercise, fn).status


@pytest.mark.parametrize("exercise", sorted(BY_ID))
@pytest.mark.parametrize("observation", [
    {}, {"returned": None}, {"returned": "fc"}, {"returned": {"type": "tuple", "items": "x", "len": 2}},
    {"returned": {"type": "str", "value": 5}}, {"returned": {"type": "callable"},
                                                "output": {"type": "Tensor", "shape": "big"}},
    {"returned": {"type": "callable"}, "output": {"type": "Tensor", "shape": [3, 224, 224], "dtype": "float32",
                                                   "samples": ["a"] * 10}},
    {"raised": "ValueError: boom", "error_type": "ValueError"}, {"misuse": "module",
                                                                 "type": "ResNet"}, "not a dict", None,
])
def test_a_malformed_observation_is_a_failed_case_not_a_crash(exercise, observation):
    ex = BY_ID[exercise]
    spec = ex.cases(hidden=False, rng=random.Random(0))[0]
    assert _judge_all(ex, [spec], [observation]) == "failed"


@pytest.mark.parametrize("exercise", sorted(BY_ID))
def test_a_not_attempted_first_observation_is_not_attempted_and_a_later_one_fails(exercise):
    ex = BY_ID[exercise]
    specs = ex.cases(hidden=False, rng=random.Random(0))[:2]
    assert _judge_all(ex, specs, [{"not_attempted": True}, {"not_attempted": True}]) == "not attempted"
    good = [ex.observe(CORRECT_BY_ID[exercise], spec) for spec in specs]
    assert _judge_all(ex, specs, [good[0], {"not_attempted": True, "raised": "NotImplementedError: "}]) == "failed"
    assert _judge_all(ex, specs, [good[0], {"not_attempted": True, "returned_none": True}]) == "failed"


def test_lesson_00_exercises_use_the_protocol_exercise_type_and_are_registered_first():
    assert all(isinstance(e, checks_module.Exercise) for e in EXERCISES_00)
    assert [e.id for e in EXERCISES_00] == list(checks_module.EXERCISES)[:3]
    assert checks_module.LESSONS[0] == "00_pretrained_models"
    assert [e.params for e in EXERCISES_00] == [("rows", "column", "budget"), ("model",), ("weights",)]


def test_run_observe_gives_json_safe_observations_for_every_exercise(one_torch_thread):
    for ex in EXERCISES_00:
        specs = ex.cases(hidden=False, rng=random.Random(0))[:1]
        observations = run_observe(ex.id, CORRECT_BY_ID[ex.id], specs)
        assert json.loads(json.dumps(observations, allow_nan=False)) == observations
        assert run_judge(ex.id, specs, observations).status == "passed"
