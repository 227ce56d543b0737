"""Lesson 06 checks: correct variants in several styles pass, typical mistakes fail with the right hint.

Each row goes through the protocol parts separately (observe, then judge on a JSON round trip
of the observation), as the batch grader runs them, and through the in-notebook check. The
judges' formulas are checked against peft itself.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from labkit.grading import run_check
from labkit.grading.exercises import exercises_for
from labkit.grading.exercises.lesson_06 import (
    _merge_inputs,
    _merge_reference,
    choose_adaptation_reference,
)

EX = {e.id: e for e in exercises_for("06_parameter_efficient_finetuning")}


class _Chk:
    """A stand-in checker that records ok lines and stops at the first failure."""

    hidden = False

    def __init__(self):
        self.lines, self.problems = [], []

    def ok(self, message):
        self.lines.append(message)

    def fail(self, message, hint=None):
        self.problems.append((message, hint))
        raise AssertionError(message)

    def fail_many(self, problems):
        self.problems.extend(problems)
        raise AssertionError(problems[0][0])


def _protocol(exercise_id, obj, *, hidden=False):
    """Observe (JSON round trip) and judge every case; return (status, problems)."""
    ex = EX[exercise_id]
    specs = ex.cases(hidden=False, rng=random.Random(0))
    if hidden:
        specs += ex.cases(hidden=True, rng=random.Random(7))
    for spec in specs:
        spec = json.loads(json.dumps(spec))
        obs = json.loads(json.dumps(ex.observe(obj, spec)))
        if obs.get("not_attempted"):
            return "not attempted", []
        chk = _Chk()
        try:
            ex.judge(spec, obs, chk)
        except AssertionError:
            return "failed", chk.problems
    return "passed", []


def _hints(problems):
    return " | ".join(f"{m} -- {h}" for m, h in problems)


def _assert_fails_with(exercise_id, fn, hint):
    status, problems = _protocol(exercise_id, fn)
    assert status == "failed" and hint in _hints(problems), problems
    result = run_check(exercise_id, fn)
    assert result.status == "failed" and hint in "\n".join(result.feedback)


def _sizes(layer):
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    return layer.in_channels, layer.out_channels


def stub(*args):
    raise NotImplementedError()


# --------------------------------------------------------------------------- 06.lora_param_count
def count_by_hand(layer, r):
    n_in, n_out = _sizes(layer)
    return r * (n_in + n_out)


def count_from_weight(layer, r):
    w = layer.weight
    return int(r * w.shape[0] + r * w.shape[1])


def count_with_peft(layer, r):
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(nn.Sequential(layer), LoraConfig(r=r, target_modules=["0"]))
    return sum(p.numel() for n, p in wrapped.named_parameters() if "lora_" in n)


def count_as_tensor(layer, r):
    return torch.tensor(count_by_hand(layer, r))


def count_full_matrix(layer, r):
    n_in, n_out = _sizes(layer)
    return n_in * n_out


def count_multiplied(layer, r):
    n_in, n_out = _sizes(layer)
    return r * n_in * n_out


def count_no_rank(layer, r):
    return sum(_sizes(layer))


def count_only_a(layer, r):
    return r * _sizes(layer)[0]


def count_with_layer(layer, r):
    return count_by_hand(layer, r) + sum(p.numel() for p in layer.parameters())


@pytest.mark.parametrize("fn", [count_by_hand, count_from_weight, count_with_peft])
def test_lora_param_count_correct_variants_pass(fn):
    assert _protocol("06.lora_param_count", fn, hidden=True) == ("passed", [])
    assert run_check("06.lora_param_count", fn, hidden=True).status == "passed"


@pytest.mark.parametrize("fn,hint", [
    (count_full_matrix, "layer's own weight matrix"),
    (count_multiplied, "they do not multiply"),
    (count_no_rank, "multiply by the rank r"),
    (count_only_a, "that is only A"),
    (count_with_layer, "stay frozen"),
    (count_as_tensor, "plain Python int"),
])
def test_lora_param_count_mistakes_fail_with_their_hint(fn, hint):
    _assert_fails_with("06.lora_param_count", fn, hint)


def test_lora_param_count_stub_is_not_attempted():
    assert _protocol("06.lora_param_count", stub)[0] == "not attempted"
    assert run_check("06.lora_param_count", stub).status == "not attempted"


# --------------------------------------------------------------------------- 06.merged_weight
def merge_flatten(w, a, b, alpha, r):
    return w + alpha / r * (b.flatten(1) @ a.flatten(1)).reshape(w.shape)


def merge_einsum(w, a, b, alpha, r):
    if w.dim() == 4:
        return w + (alpha / r) * torch.einsum("or,ri->oi", b[:, :, 0, 0], a[:, :, 0, 0])[:, :, None, None]
    return torch.addmm(w, b, a, alpha=alpha / r)


def merge_numpy(w, a, b, alpha, r):
    wn, an, bn = (t.numpy() for t in (w, a, b))
    return wn + alpha / r * (bn.reshape(bn.shape[0], -1) @ an.reshape(an.shape[0], -1)).reshape(wn.shape)


def merge_in_place(w, a, b, alpha, r):
    return w.add_(alpha / r * (b.flatten(1) @ a.flatten(1)).reshape(w.shape))


def merge_no_scaling(w, a, b, alpha, r):
    return w + (b.flatten(1) @ a.flatten(1)).reshape(w.shape)


def merge_inverse(w, a, b, alpha, r):
    return w + r / alpha * (b.flatten(1) @ a.flatten(1)).reshape(w.shape)


def merge_delta_only(w, a, b, alpha, r):
    return alpha / r * (b.flatten(1) @ a.flatten(1)).reshape(w.shape)


def merge_2d_for_conv(w, a, b, alpha, r):
    return w.flatten(1) + alpha / r * (b.flatten(1) @ a.flatten(1))


@pytest.mark.parametrize("fn", [merge_flatten, merge_einsum, merge_numpy])
def test_merged_weight_correct_variants_pass(fn):
    assert _protocol("06.merged_weight", fn, hidden=True) == ("passed", [])
    assert run_check("06.merged_weight", fn, hidden=True).status == "passed"


@pytest.mark.parametrize("fn,hint", [
    (merge_in_place, "not weight.add_"),
    (merge_no_scaling, "multiply B @ A by alpha / r"),
    (merge_inverse, "not r / alpha"),
    (merge_delta_only, "frozen weight plus the update"),
    (merge_2d_for_conv, "reshape it to weight.shape"),
])
def test_merged_weight_mistakes_fail_with_their_hint(fn, hint):
    _assert_fails_with("06.merged_weight", fn, hint)


def test_merged_weight_stub_is_not_attempted():
    assert _protocol("06.merged_weight", stub)[0] == "not attempted"


@pytest.mark.parametrize("kind", ["linear", "conv1x1"])
def test_the_merge_reference_is_what_peft_merges(kind):
    from peft import LoraConfig, get_peft_model

    spec = {"kind": kind, "in": 6, "out": 4, "r": 2, "alpha": 6, "seed": 5}
    w, a, b = _merge_inputs(spec)
    layer = nn.Linear(6, 4, bias=False) if kind == "linear" else nn.Conv2d(6, 4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(w)
    model = get_peft_model(nn.Sequential(layer), LoraConfig(r=2, lora_alpha=6, target_modules=["0"]))
    wrapped = model.base_model.model[0]
    with torch.no_grad():
        wrapped.lora_A["default"].weight.copy_(a)
        wrapped.lora_B["default"].weight.copy_(b)
    merged = model.merge_and_unload()[0].weight.detach().double()
    np.testing.assert_allclose(merged.numpy(), _merge_reference(spec).numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- 06.choose_adaptation
def choose_by_hand(n_images, n_tasks, storage_mb, model_mb, adapter_mb):
    if storage_mb < model_mb:
        raise ValueError("nothing fits")
    if n_images >= 10_000 and n_tasks * model_mb <= storage_mb:
        return "full_finetune"
    if model_mb + n_tasks * adapter_mb <= storage_mb:
        return "lora"
    return "feature_extraction"


def choose_by_table(n_images, n_tasks, storage_mb, model_mb, adapter_mb):
    need = {"full_finetune": n_tasks * model_mb, "lora": model_mb + n_tasks * adapter_mb,
            "feature_extraction": model_mb}
    options = ["full_finetune", "lora", "feature_extraction"] if n_images >= 10_000 else ["lora", "feature_extraction"]
    for option in options:
        if need[option] <= storage_mb:
            return option
    raise ValueError(f"{model_mb} MB does not fit in {storage_mb} MB")


def choose_full_ignores_tasks(n, t, s, m, a):
    return "full_finetune" if n >= 10_000 and m <= s else choose_by_hand(n, t, s, m, a)


def choose_lora_without_backbone(n, t, s, m, a):
    out = choose_by_hand(n, t, s, m, a)
    return "lora" if out == "feature_extraction" and t * a <= s else out


def choose_strict(n, t, s, m, a):
    if s <= m:
        raise ValueError("nothing fits")
    if n >= 10_000 and t * m < s:
        return "full_finetune"
    return "lora" if m + t * a < s else "feature_extraction"


def choose_threshold_gt(n, t, s, m, a):
    return choose_by_hand(n if n != 10_000 else 9_999, t, s, m, a)


def choose_small_is_head(n, t, s, m, a):
    out = choose_by_hand(n, t, s, m, a)
    return "feature_extraction" if n < 10_000 else out


def choose_no_error(n, t, s, m, a):
    return "feature_extraction" if s < m else choose_by_hand(n, t, s, m, a)


def choose_capitalised(n, t, s, m, a):
    return {"lora": "LoRA"}.get(choose_by_hand(n, t, s, m, a), choose_by_hand(n, t, s, m, a))


@pytest.mark.parametrize("fn", [choose_by_hand, choose_by_table, choose_adaptation_reference])
def test_choose_adaptation_correct_variants_pass(fn):
    assert _protocol("06.choose_adaptation", fn, hidden=True) == ("passed", [])
    assert run_check("06.choose_adaptation", fn, hidden=True).status == "passed"


@pytest.mark.parametrize("fn,hint", [
    (choose_full_ignores_tasks, "one whole model per task"),
    (choose_lora_without_backbone, "stores the shared backbone too"),
    (choose_strict, "compare with <=, not <"),
    (choose_threshold_gt, "10,000 labelled images already counts as large"),
    (choose_small_is_head, "small data does not rule LoRA out"),
    (choose_no_error, "raise ValueError"),
    (choose_capitalised, "return one of 'feature_extraction', 'lora', 'full_finetune'"),
])
def test_choose_adaptation_mistakes_fail_with_their_hint(fn, hint):
    _assert_fails_with("06.choose_adaptation", fn, hint)


def test_choose_adaptation_stub_is_not_attempted():
    assert _protocol("06.choose_adaptation", stub)[0] == "not attempted"
    assert run_check("06.choose_adaptation", stub).status == "not attempted"


def test_choose_adaptation_judge_survives_a_malformed_observation():
    ex = EX["06.choose_adaptation"]
    spec = ex.cases(hidden=False, rng=random.Random(0))[0]
    for obs in ({}, {"answers": "x"}, {"answers": [1, 2]}, {"answers": [{"returned": 3}] * len(spec["points"])}):
        chk = _Chk()
        with pytest.raises(AssertionError):
            ex.judge(spec, obs, chk)
        assert chk.problems
