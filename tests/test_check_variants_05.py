"""Lesson 05 checks: correct variants in several styles pass, typical mistakes fail with the right hint.

Each row goes through the protocol parts separately (observe, then judge on a JSON round trip
of the observation), as the batch grader runs them, and through the in-notebook check.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from labkit.adapt import adapt_batchnorm
from labkit.grading import run_check
from labkit.grading.exercises import exercises_for
from labkit.grading.exercises.lesson_05 import _bn_net, _bn_reference, _bn_state

EX = {e.id: e for e in exercises_for("05_medical_domain_adaptation")}


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


# --------------------------------------------------------------------------- 05.reestimate_bn
def bn_with_torch(model, batches):
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = {m: m.training for m in model.modules()}
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for images, _ in batches:
            model(images)
    for m, (mom, n) in zip(bns, saved):
        m.momentum = mom
        m.num_batches_tracked.copy_(n)
    for m, mode in modes.items():
        m.training = mode
    return model


def bn_by_hooks(model, batches):
    """Hand-computed averages from hooks, written into the buffers (another correct style)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums = {m: [0, 0] for m in bns}
    modes = {m: m.training for m in model.modules()}

    def hook(m, args):
        x = args[0]
        sums[m][0] = sums[m][0] + x.mean((0, 2, 3))
        sums[m][1] = sums[m][1] + x.var((0, 2, 3), unbiased=True)

    handles = [m.register_forward_pre_hook(hook) for m in bns]
    model.eval()
    for m in bns:
        m.train()
    moms = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0  # use batch statistics, record nothing
    with torch.no_grad():
        for images, _ in batches:
            model(images)
    for h in handles:
        h.remove()
    for m, mom in zip(bns, moms):
        m.momentum = mom
        m.running_mean.copy_(sums[m][0] / len(batches))
        m.running_var.copy_(sums[m][1] / len(batches))
        m.num_batches_tracked -= len(batches)
    for m, mode in modes.items():
        m.training = mode
    return model


def bn_calls_labkit(model, batches):
    return adapt_batchnorm(model, batches)


def bn_ema(model, batches):  # forgot reset and momentum=None
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    with torch.no_grad():
        for images, _ in batches:
            model(images)
    for m, mode in modes.items():
        m.training = mode


def bn_eval_only(model, batches):  # never trains BN: nothing recorded
    model.eval()
    with torch.no_grad():
        for images, _ in batches:
            model(images)


def bn_mode_not_restored(model, batches):
    bn_with_torch(model, batches)
    model.eval()


def bn_momentum_lost(model, batches):
    bn_with_torch(model, batches)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None


def bn_whole_model_train(model, batches):  # dropout on during the pass
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    modes = {m: m.training for m in model.modules()}
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    model.train()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        for images, _ in batches:
            model(images)
    for m, (mom, n) in zip(bns, saved):
        m.momentum = mom
        m.num_batches_tracked.copy_(n)
    for m, mode in modes.items():
        m.training = mode


def bn_trains_weights(model, batches):
    bn_with_torch(model, batches)
    with torch.no_grad():
        model[0].weight.add_(0.01)


def bn_count_kept(model, batches):  # counts left at the number of batches
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    moms = [m.momentum for m in bns]
    bn_with_torch(model, batches)
    for m in bns:
        m.num_batches_tracked.fill_(len(batches))
    for m, mom in zip(bns, moms):
        m.momentum = mom


def bn_stub(model, batches):
    raise NotImplementedError()


def bn_crashes(model, batches):
    return model.nonexistent


@pytest.mark.parametrize("fn", [bn_with_torch, bn_by_hooks, bn_calls_labkit])
def test_reestimate_bn_correct_variants_pass(fn):
    assert _protocol("05.reestimate_bn", fn, hidden=True) == ("passed", [])
    assert run_check("05.reestimate_bn", fn, hidden=True).status == "passed"


@pytest.mark.parametrize("fn,hint", [
    (bn_ema, "momentum=None"),
    (bn_eval_only, "training mode"),
    (bn_mode_not_restored, "train/eval mode"),
    (bn_momentum_lost, "restore it after"),
    (bn_whole_model_train, "dropout must be off"),
    (bn_trains_weights, "only the BatchNorm statistics may change"),
    (bn_count_kept, "num_batches_tracked"),
    (bn_crashes, "full traceback"),
])
def test_reestimate_bn_mistakes_fail_with_their_hint(fn, hint):
    status, problems = _protocol("05.reestimate_bn", fn)
    assert status == "failed" and hint in _hints(problems), problems
    result = run_check("05.reestimate_bn", fn)
    assert result.status == "failed" and hint in "\n".join(result.feedback)


def test_reestimate_bn_stub_is_not_attempted():
    assert _protocol("05.reestimate_bn", bn_stub)[0] == "not attempted"
    assert run_check("05.reestimate_bn", bn_stub).status == "not attempted"


def test_the_judges_reference_is_adapt_batchnorm_and_matches_the_by_hand_algorithm():
    spec = EX["05.reestimate_bn"].cases(hidden=False, rng=random.Random(0))[1]
    net, batches = _bn_net(spec)
    bn_with_torch(net, batches)
    by_hand = _bn_state(net)
    ref = _bn_reference(spec, "correct")
    for a, b in zip(by_hand["means"] + by_hand["vars"], ref["means"] + ref["vars"]):
        np.testing.assert_allclose(a["data"], b["data"], rtol=1e-6, atol=1e-7)
    assert by_hand["modes"] == ref["modes"] and by_hand["counts"] == ref["counts"]


def test_reestimate_bn_judge_survives_a_malformed_observation():
    ex = EX["05.reestimate_bn"]
    spec = ex.cases(hidden=False, rng=random.Random(0))[0]
    for obs in ({}, {"means": "x"}, {"means": [{"shape": [2], "data": ["a", "b"]}], "vars": [], "counts": [],
                                      "momenta": [], "modes": [], "params": [], "params_sq": []}):
        chk = _Chk()
        with pytest.raises(AssertionError):
            ex.judge(spec, obs, chk)
        assert chk.problems


# --------------------------------------------------------------------------- 05.class_weights
def cw_list(counts):
    n, k = sum(counts), len(counts)
    return [n / (k * c) for c in counts]


def cw_tensor(counts):
    c = torch.tensor(counts, dtype=torch.float32)
    return c.sum() / (len(c) * c)


def cw_numpy(counts):
    c = np.asarray(counts, dtype=float)
    return c.sum() / c.size / c


def cw_inverse(counts):
    return [1 / c for c in counts]


def cw_share(counts):
    return [c / sum(counts) for c in counts]


def cw_wrong_length(counts):
    return cw_list(counts)[:-1]


def cw_stub(counts):
    raise NotImplementedError()


def cw_none(counts):
    return None


def cw_crash(counts):
    return counts / 2


@pytest.mark.parametrize("fn", [cw_list, cw_tensor, cw_numpy])
def test_class_weights_correct_variants_pass(fn):
    assert _protocol("05.class_weights", fn, hidden=True) == ("passed", [])
    assert run_check("05.class_weights", fn, hidden=True).status == "passed"


@pytest.mark.parametrize("fn,hint", [
    (cw_inverse, "average weight per image is 1"),
    (cw_share, "rare class needs a larger weight"),
    (cw_wrong_length, "one weight per class"),
    (cw_crash, "full traceback"),
])
def test_class_weights_mistakes_fail_with_their_hint(fn, hint):
    status, problems = _protocol("05.class_weights", fn)
    assert status == "failed" and hint in _hints(problems), problems
    assert run_check("05.class_weights", fn).status == "failed"


@pytest.mark.parametrize("fn", [cw_stub, cw_none])
def test_class_weights_stubs_are_not_attempted(fn):
    assert _protocol("05.class_weights", fn)[0] == "not attempted"
    assert run_check("05.class_weights", fn).status == "not attempted"


# --------------------------------------------------------------------------- 05.medical_policy
def mp_with_labkit(n_images, domain_gap, new_scanner):
    from labkit.strategy import bn_advice, choose_strategy

    bn = "adapt" if new_scanner else bn_advice(n_images, domain_gap)
    return choose_strategy(n_images, domain_gap), bn


def mp_by_hand(n, gap, new_scanner):
    if n >= 10_000:
        return ["full_finetune", "adapt" if new_scanner else "update"]
    strategy = "partial_finetune" if gap >= 0.5 else "feature_extraction"
    return [strategy, "adapt" if new_scanner else "freeze"]


def mp_ignores_scanner(n, gap, new_scanner):
    return mp_by_hand(n, gap, False)


def mp_always_adapt(n, gap, new_scanner):
    return (mp_by_hand(n, gap, new_scanner)[0], "adapt")


def mp_wrong_threshold(n, gap, new_scanner):  # gap > 0.5 instead of >= 0.5
    s, bn = mp_by_hand(n, gap, new_scanner)
    return ("feature_extraction" if s == "partial_finetune" and gap == 0.5 else s), bn


def mp_frozen_word(n, gap, new_scanner):
    return (mp_by_hand(n, gap, new_scanner)[0], "frozen")


def mp_one_string(n, gap, new_scanner):
    return "partial_finetune"


def mp_stub(n, gap, new_scanner):
    raise NotImplementedError()


@pytest.mark.parametrize("fn", [mp_with_labkit, mp_by_hand])
def test_medical_policy_correct_variants_pass(fn):
    assert _protocol("05.medical_policy", fn, hidden=True) == ("passed", [])
    assert run_check("05.medical_policy", fn, hidden=True).status == "passed"


@pytest.mark.parametrize("fn,hint", [
    (mp_ignores_scanner, "re-estimate BatchNorm"),
    (mp_always_adapt, "'adapt' is for a new scanner"),
    (mp_wrong_threshold, "distant: 0.5 or more"),
    (mp_frozen_word, "use one of 'freeze'"),
    (mp_one_string, "pair (strategy, bn)"),
])
def test_medical_policy_mistakes_fail_with_their_hint(fn, hint):
    status, problems = _protocol("05.medical_policy", fn)
    assert status == "failed" and hint in _hints(problems), problems
    result = run_check("05.medical_policy", fn)
    assert result.status == "failed" and hint in "\n".join(result.feedback)


def test_medical_policy_stub_is_not_attempted():
    assert _protocol("05.medical_policy", mp_stub)[0] == "not attempted"
    assert run_check("05.medical_policy", mp_stub).status == "not attempted"


# --------------------------------------------------------------------------- 05.most_confused_pair
def mc_loops(confusion):
    best = None
    for i in range(len(confusion)):
        for j in range(len(confusion)):
            if i != j and confusion[i][j] > 0 and (best is None or confusion[i][j] > confusion[best[0]][best[1]]):
                best = (i, j)
    return best


def mc_torch(confusion):
    off = confusion.clone()
    off.fill_diagonal_(0)
    if off.max() == 0:
        return None
    flat = int(off.flatten().argmax())  # the first maximum in row-major order: lowest row, then column
    return divmod(flat, off.shape[1])


def mc_sorted(confusion):
    k = confusion.shape[0]
    cells = sorted((-int(confusion[i, j]), i, j) for i in range(k) for j in range(k) if i != j and confusion[i, j] > 0)
    return (cells[0][1], cells[0][2]) if cells else None


def mc_tensor_pair(confusion):
    pair = mc_torch(confusion)
    return None if pair is None else torch.tensor(pair)


def mc_with_diagonal(confusion):  # forgets to skip the right answers
    flat = int(confusion.flatten().argmax())
    return divmod(flat, confusion.shape[1])


def mc_transposed(confusion):  # (predicted, true)
    pair = mc_torch(confusion)
    return None if pair is None else (pair[1], pair[0])


def mc_last_tie(confusion):  # ties broken by the highest index
    best = None
    for i in range(len(confusion)):
        for j in range(len(confusion)):
            if i != j and confusion[i][j] > 0 and (best is None or confusion[i][j] >= confusion[best[0]][best[1]]):
                best = (i, j)
    return best


def mc_never_none(confusion):  # no mistakes: still a pair
    return mc_torch(confusion) or (0, 1)


def mc_stub(confusion):
    raise NotImplementedError()


@pytest.mark.parametrize("fn", [mc_loops, mc_torch, mc_sorted, mc_tensor_pair])
def test_most_confused_pair_correct_variants_pass(fn):
    assert _protocol("05.most_confused_pair", fn, hidden=True) == ("passed", [])
    assert run_check("05.most_confused_pair", fn, hidden=True).status == "passed"


@pytest.mark.parametrize(("fn", "hint"), [
    (mc_with_diagonal, "that cell is on the diagonal"),
    (mc_transposed, "that is (predicted, true)"),
    (mc_last_tie, "take the lowest true index, then the lowest predicted one"),
    (mc_never_none, "expected None: nothing off the diagonal is above 0"),
])
def test_most_confused_pair_mistakes_fail_with_their_hint(fn, hint):
    status, problems = _protocol("05.most_confused_pair", fn)
    assert status == "failed" and hint in _hints(problems), _hints(problems)
    lines = "\n".join(run_check("05.most_confused_pair", fn).feedback)
    assert "expected" in lines and "returned" in lines  # what was expected and what came


def test_most_confused_pair_stub_is_not_attempted():
    assert _protocol("05.most_confused_pair", mc_stub)[0] == "not attempted"
    assert run_check("05.most_confused_pair", mc_stub).status == "not attempted"


def test_most_confused_pair_judge_survives_a_malformed_observation():
    spec = EX["05.most_confused_pair"].cases(hidden=False, rng=random.Random(0))[0]
    for junk in ({}, {"pair": ["x", 1]}, {"pair": [1]}, {"returned": 5}):
        chk = _Chk()
        with pytest.raises(AssertionError):
            EX["05.most_confused_pair"].judge(spec, junk, chk)
