"""Lesson 05's exercises (medical domain adaptation): 05.reestimate_bn, 05.class_weights, 05.medical_policy,
05.most_confused_pair.

Declared with ``@exercise`` (the protocol of docs/EXERCISES.md); each ``cases`` gives the public
(hidden=False) or the drawn cases and :func:`.protocol.public_then_hidden` joins them. The judges
compare with ``labkit.adapt.adapt_batchnorm`` and the rule of :mod:`labkit.strategy` (trusted
process, imported lazily).

Example:
    >>> from labkit.grading.exercises import exercises_for
    >>> [e.name for e in exercises_for(LESSON)]
    ['reestimate_bn', 'class_weights_from_counts', 'medical_policy', 'most_confused_pair']
"""
from __future__ import annotations

import math
import random
from typing import Any

from .protocol import call_learner, exercise, fail_raised, public_then_hidden, tensor_from_json, tensor_to_json

__all__ = ["LESSON"]

LESSON = "05_medical_domain_adaptation"


def _tensor(d: Any):
    """The float64 tensor an observation field describes, or None when it is malformed (untrusted input)."""
    try:
        return tensor_from_json(d).double()
    except (ValueError, TypeError, RuntimeError):
        return None


# ---------------------------------------------------------------------------------------
# 05.reestimate_bn: BatchNorm statistics by hand
# ---------------------------------------------------------------------------------------
def _bn_net(spec: dict):
    """A small seeded conv net with two BatchNorm layers, and seeded batches of images."""
    import torch
    from torch import nn

    torch.manual_seed(spec["seed"])
    c1, c2 = spec["widths"]
    net = nn.Sequential(nn.Conv2d(3, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.Dropout(0.3),
                        nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, 3))
    with torch.no_grad():  # "pretrained" statistics, far from the new images' ones
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(500)
                m.momentum = spec["momentum"]
    net.train(spec["train_mode"])
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    batches = [(torch.randn(spec["batch"], 3, 8, 8, generator=g) * 1.5 + 0.7,
                torch.randint(0, 3, (spec["batch"],), generator=g)) for _ in range(spec["n_batches"])]
    return net, batches


def _bn_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    if not hidden:
        return [
            {"seed": 1, "widths": [4, 6], "batch": 8, "n_batches": 3, "momentum": 0.1, "train_mode": False},
            {"seed": 2, "widths": [5, 3], "batch": 6, "n_batches": 4, "momentum": 0.1, "train_mode": True},
        ]
    return [{"seed": rng.randrange(10, 10_000), "widths": [rng.randint(2, 8), rng.randint(2, 8)],
             "batch": rng.randint(4, 12), "n_batches": rng.randint(2, 5), "momentum": rng.choice([0.1, 0.01, 0.3]),
             "train_mode": rng.random() < 0.5} for _ in range(2)]


def _bn_state(net) -> dict:
    from torch import nn

    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    return {
        "means": [tensor_to_json(m.running_mean) for m in bns],
        "vars": [tensor_to_json(m.running_var) for m in bns],
        "counts": [int(m.num_batches_tracked) for m in bns],
        "momenta": [m.momentum for m in bns],
        "modes": [bool(m.training) for m in net.modules()],
        "params": [float(p.detach().double().sum()) for p in net.parameters()],
        "params_sq": [float((p.detach().double() ** 2).sum()) for p in net.parameters()],
    }


def _bn_observe(obj: Any, spec: dict) -> dict:
    if obj is None:
        return {"not_attempted": True}
    net, batches = _bn_net(spec)
    _, problem = call_learner(obj, net, batches)
    return problem if problem is not None else _bn_state(net)


def _bn_reference(spec: dict, how: str) -> dict:
    """The correct answer (``labkit.adapt.adapt_batchnorm`` on a fresh model) or a known mistake.

    Runs in the trusted process only (judge), so importing labkit here is safe.
    """
    import torch
    from torch import nn

    net, batches = _bn_net(spec)
    if how == "correct":
        from labkit.adapt import adapt_batchnorm

        adapt_batchnorm(net, batches)
        return _bn_state(net)
    modes = [m.training for m in net.modules()]
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    net.train(how == "all_train")  # the correct pass keeps dropout off
    for m in bns:
        if how != "no_reset":
            m.reset_running_stats()
        if how != "ema":
            m.momentum = None
        m.train()
    with torch.no_grad():
        for x, _ in batches:
            net(x)
    for m, (mom, count) in zip(bns, saved):
        m.momentum = mom
        m.num_batches_tracked.copy_(count)
    for m, mode in zip(net.modules(), modes):
        m.training = mode
    return _bn_state(net)


def _close(a, b, tol: float = 1e-4) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool(((a - b).abs() <= tol * (1 + b.abs())).all())


@exercise("05.reestimate_bn", lesson=LESSON, name="reestimate_bn", cases=public_then_hidden(_bn_cases),
          observe=_bn_observe, params=("model", "batches"))
def _bn_judge(spec: dict, obs: dict, chk) -> None:
    shown = "reestimate_bn(model, batches)"
    if not isinstance(obs, dict):
        chk.fail("the check got no usable observation of your function", "make sure it runs without printing errors")
    if "raised" in obs:
        fail_raised(chk, shown, obs)
    if "not_callable" in obs:
        chk.fail(f"`reestimate_bn` is a {str(obs['not_callable'])[:40]}, not a function",
                 "define it with `def reestimate_bn(model, batches):`")
    ref = _bn_reference(spec, "correct")
    keys = ("means", "vars", "counts", "momenta", "modes", "params", "params_sq")
    if any(not isinstance(obs.get(k), list) or len(obs[k]) != len(ref[k]) for k in keys):
        chk.fail("the model came back with a different set of layers or parameters",
                 "change the model's statistics in place; do not replace its layers")
    got_m = [_tensor(t) for t in obs["means"]]
    got_v = [_tensor(t) for t in obs["vars"]]
    ref_m = [_tensor(t) for t in ref["means"]]
    ref_v = [_tensor(t) for t in ref["vars"]]
    start = _bn_net(spec)[0]
    start_state = _bn_state(start)
    if all(_close(g, _tensor(s), 0) for g, s in zip(got_m, start_state["means"])):
        chk.fail("the running statistics did not change",
                 "BatchNorm layers only record statistics in training mode: put them in train() during the pass")
    if not all(_close(g, r) for g, r in zip(got_m + got_v, ref_m + ref_v)):
        for how, hint in (("all_train", "call model.eval() first and put only the BatchNorm layers in train(): dropout "
                                        "must be off during the pass"),
                          ("ema",
                           "a cumulative average needs momentum=None during the pass (momentum=0.1 blends into the "
                           "old values)"),
                          ("no_reset", "reset the statistics first (bn.reset_running_stats()), then average over the "
                                       "batches")):
            alt = _bn_reference(spec, how)
            alt_all = [_tensor(t) for t in alt["means"] + alt["vars"]]
            if all(_close(g, r) for g, r in zip(got_m + got_v, alt_all)):
                chk.fail("the running statistics are not the average over the batches", hint)
        chk.fail("the running statistics are not the average over the batches of each batch's mean and variance",
                 "reset each BatchNorm layer, set momentum=None, run every batch once in training mode under "
                 "torch.no_grad()")
    chk.ok("running mean and variance are the cumulative average over the batches")
    if not all(isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=0, abs_tol=1e-12)
               for a, b in zip(obs["params"] + obs["params_sq"], ref["params"] + ref["params_sq"])):
        chk.fail("a weight of the model changed",
                 "no optimizer and no gradient: only the BatchNorm statistics may change")
    chk.ok("weights untouched")
    if obs["momenta"] != ref["momenta"]:
        chk.fail("the BatchNorm momentum was not put back",
                 "save each layer's momentum before the pass and restore it after")
    if obs["counts"] != ref["counts"]:
        chk.fail("num_batches_tracked was not put back",
                 "save each layer's num_batches_tracked before the pass and copy it back after (only the statistics "
                 "may change)")
    if obs["modes"] != ref["modes"]:
        chk.fail("the model's train/eval mode was not restored",
                 "remember each module's .training before the pass and set it back after (the model may have been in "
                 "train or eval mode)")
    chk.ok("momentum, num_batches_tracked and train/eval mode restored")


# ---------------------------------------------------------------------------------------
# 05.class_weights: weights from label counts
# ---------------------------------------------------------------------------------------
def _cw_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    if not hidden:
        return [{"counts": [200, 100, 50, 50]}, {"counts": [10, 10]}, {"counts": [900, 90, 9, 1, 300]}]
    return [{"counts": [rng.randint(1, 500) for _ in range(rng.randint(2, 7))]} for _ in range(3)]


def _cw_observe(obj: Any, spec: dict) -> dict:
    if obj is None:
        return {"not_attempted": True}
    out, problem = call_learner(obj, list(spec["counts"]))
    if problem is not None:
        return problem
    if out is None:
        return {"not_attempted": True}
    try:
        values = out.detach().cpu().flatten().tolist() if hasattr(out, "detach") else (
            out.tolist() if hasattr(out, "tolist") else list(out))
        values = [float(v) for v in values]
    except Exception:  # not a sequence of numbers: say which type came
        return {"returned_type": type(out).__name__}
    return {"values": values, "type": type(out).__name__}


@exercise("05.class_weights", lesson=LESSON, name="class_weights_from_counts", cases=public_then_hidden(_cw_cases),
          observe=_cw_observe, params=("counts",))
def _cw_judge(spec: dict, obs: dict, chk) -> None:
    counts = spec["counts"]
    shown = f"class_weights_from_counts({counts})"
    if not isinstance(obs, dict):
        chk.fail("the check got no usable observation of your function", None)
    if "raised" in obs:
        fail_raised(chk, shown, obs)
    if "not_callable" in obs:
        chk.fail("`class_weights_from_counts` is not a function",
                 "define it with `def class_weights_from_counts(counts):`")
    if "returned_type" in obs or not isinstance(obs.get("values"), list):
        chk.fail(f"{shown} returned a {str(obs.get('returned_type', '?'))[:40]}, not a list of numbers",
                 "return a list or a 1-D tensor with one weight per class")
    got = obs["values"]
    if not all(isinstance(v, float) and math.isfinite(v) for v in got):
        chk.fail(f"{shown} returned values that are not finite numbers", "return one finite weight per class")
    if len(got) != len(counts):
        chk.fail(f"{shown} returned {len(got)} weights for {len(counts)} classes",
                 "one weight per class, in class order")
    chk.ok("one weight per class")
    n, k = sum(counts), len(counts)
    want = [n / (k * c) for c in counts]
    if all(math.isclose(g, w, rel_tol=1e-5) for g, w in zip(got, want)):
        chk.ok("weights are N / (classes x count): rare classes weigh more, the average weight per image is 1")
        return
    inverse = [1 / c for c in counts]
    if all(math.isclose(g, w, rel_tol=1e-5) for g, w in zip(got, inverse)):
        chk.fail(f"{shown} returned 1 / count",
                 "scale them so the average weight per image is 1: N / (classes x count)")
    share = [c / n for c in counts]
    if all(math.isclose(g, w, rel_tol=1e-5) for g, w in zip(got, share)) or (
            len(set(counts)) > 1 and all((a - b) * (ca - cb) > 0 for a, ca in zip(got, counts)
                                         for b, cb in zip(got, counts) if ca != cb)):
        chk.fail(f"{shown} gives the common classes the larger weights",
                 "a rare class needs a larger weight: divide by its count")
    chk.fail(f"{shown} returned {[round(v, 4) for v in got[:6]]}",
             "weight of class c = N / (number of classes x count of c), N = total images")


# ---------------------------------------------------------------------------------------
# 05.medical_policy: strategy and BatchNorm policy for a medical project
# ---------------------------------------------------------------------------------------
_BN = ("freeze", "update", "adapt")
#: The lesson's scenarios: (labelled images, domain gap, new scanner seen only through unlabelled images).
_SCENARIOS = {
    "blood_smears": (400, 0.9, False),
    "chest_xrays": (100_000, 0.8, False),
    "wound_photos": (2_000, 0.3, False),
    "second_scanner": (400, 0.9, True),
}


def _rule() -> tuple[int, float]:
    """Lesson 04's thresholds (small data below SMALL_DATA images, distant from DISTANT_GAP), from labkit.strategy."""
    from labkit.strategy import DISTANT_GAP, SMALL_DATA

    return SMALL_DATA, DISTANT_GAP


def _expected(n: int, gap: float, new_scanner: bool) -> tuple[str, str]:
    from labkit.strategy import bn_advice, choose_strategy

    strategy = choose_strategy(n, gap)
    if new_scanner:
        return strategy, "adapt"
    return strategy, bn_advice(n, gap)


def _mp_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    if not hidden:
        small, distant = _rule()
        edges = [[small - 1, distant, False], [small, round(distant - 0.01, 2), True], [50, 0.1, True]]
        points = [list(v) for v in _SCENARIOS.values()] + edges
        return [{"points": points}]
    small, _ = _rule()
    points = [[rng.choice([rng.randint(1, small - 1), rng.randint(small, 5_000_000)]), round(rng.random(), 2),
               rng.random() < 0.4] for _ in range(8)]
    return [{"points": points}]


def _mp_observe(obj: Any, spec: dict) -> dict:
    if obj is None:
        return {"not_attempted": True}
    answers = []
    for n, gap, new_scanner in spec["points"]:
        out, problem = call_learner(obj, n, gap, new_scanner)
        if problem is not None and ("not_callable" in problem or (problem.get("not_attempted") and not answers)):
            return problem
        if problem is not None:
            answers.append({"raised": "NotImplementedError"} if problem.get("not_attempted") else problem)
            continue
        if isinstance(out, (tuple, list)):
            answers.append([x[:40] if isinstance(x, str) else repr(x)[:40] for x in out][:3])
        else:
            answers.append({"returned": repr(out)[:60]})
    return {"answers": answers}


@exercise("05.medical_policy", lesson=LESSON, name="medical_policy", cases=public_then_hidden(_mp_cases),
          observe=_mp_observe, params=("n_images", "domain_gap", "new_scanner"))
def _mp_judge(spec: dict, obs: dict, chk) -> None:
    from labkit.strategy import STRATEGIES as _STRATEGIES

    if not isinstance(obs, dict):
        chk.fail("the check got no usable observation", None)
    if "not_callable" in obs:
        chk.fail("`medical_policy` is not a function",
                 "define it with `def medical_policy(n_images, domain_gap, new_scanner):`")
    points, answers = spec["points"], obs.get("answers")
    if not isinstance(answers, list) or len(answers) != len(points):
        chk.fail("the check got no usable observation", None)
    problems = []
    for (n, gap, new_scanner), got in zip(points, answers):
        shown = f"medical_policy({n:_}, {gap}, {new_scanner})"
        if isinstance(got, dict) and "raised" in got:
            fail_raised(chk, shown, got)
        if not isinstance(got, list) or len(got) != 2:
            chk.fail(f"{shown} returned {str(got.get('returned', got) if isinstance(got, dict) else got)[:60]}",
                     "return a pair (strategy, bn), e.g. (\"feature_extraction\", \"freeze\")")
        strategy, bn = got
        if strategy not in _STRATEGIES:
            chk.fail(f"{shown} gave strategy {strategy[:40]}", f"use one of {', '.join(map(repr, _STRATEGIES))}")
        if bn not in _BN:
            chk.fail(f"{shown} gave bn {bn[:40]}", f"use one of {', '.join(map(repr, _BN))}")
        want_s, want_bn = _expected(n, gap, new_scanner)
        small, distant = _rule()
        size = "small" if n < small else "large"
        near = "distant" if gap >= distant else "similar"
        if strategy != want_s:
            problems.append((f"{shown}: the strategy is not what the decision rule gives",
                             f"{n:,} labelled images is {size} data (small: fewer than {small:,}) and a gap of {gap} "
f"is {near} "
                             f"(distant: {distant} or more); labkit.strategy.choose_strategy applies the rule"))
        if bn != want_bn:
            if new_scanner:
                hint = ("a new scanner seen only through unlabelled images: re-estimate BatchNorm on them ('adapt'), "
                        "whatever the training data")
            elif bn == "adapt":
                hint = ("'adapt' is for a new scanner or site seen only through unlabelled images; without one, "
                        "follow bn_advice")
            else:
                hint = ("small data gives noisy batch statistics (keep BatchNorm frozen); with lots of data they can "
                        "update")
            problems.append((f"{shown}: the BatchNorm policy is not right", hint))
        if problems:
            chk.fail_many(problems)
    chk.ok("returns a (strategy, bn) pair from the vocabulary")
    chk.ok("strategy from data size and domain gap, BatchNorm from data size or a new scanner")


# ---------------------------------------------------------------------------------------
# 05.most_confused_pair: the largest off-diagonal cell of a confusion matrix
# ---------------------------------------------------------------------------------------
def _mc_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    if not hidden:
        return [
            {"matrix": [[40, 2, 1, 7], [3, 45, 0, 2], [9, 0, 38, 3], [1, 4, 2, 43]], "shown": "a 4x4 matrix"},
            {"matrix": [[30, 0, 3], [5, 20, 0], [5, 0, 25]], "shown": "a 3x3 matrix with a tie"},
            {"matrix": [[12, 0, 6], [0, 15, 6], [0, 0, 20]], "shown": "a 3x3 matrix with a tie in one column"},
            {"matrix": [[0, 50], [0, 50]], "shown": "a 2x2 matrix where every image is called class 1"},
            {"matrix": [[10, 0, 0], [0, 10, 0], [0, 0, 10]], "shown": "a 3x3 matrix with no mistakes"},
        ]
    cases = []
    for _ in range(3):
        k = rng.randint(2, 8)
        matrix = [[rng.randint(0, 6) if i != j else rng.randint(5, 60) for j in range(k)] for i in range(k)]
        if rng.random() < 0.5:  # force a tie for the top off-diagonal count
            top = max(matrix[i][j] for i in range(k) for j in range(k) if i != j)
            i, j = rng.choice([(i, j) for i in range(k) for j in range(k) if i != j])
            matrix[i][j] = top
        cases.append({"matrix": matrix, "shown": f"a {k}x{k} matrix"})
    return cases


def _mc_expected(matrix: list[list[int]]) -> tuple[int, int] | None:
    cells = [(-matrix[i][j], i, j) for i in range(len(matrix)) for j in range(len(matrix)) if i != j and matrix[i][j]]
    return (min(cells)[1], min(cells)[2]) if cells else None


def _mc_observe(obj: Any, spec: dict) -> dict:
    import torch

    out, problem = call_learner(obj, torch.tensor(spec["matrix"], dtype=torch.int64))
    if problem is not None:
        return problem
    if out is None:
        return {"returned_none_answer": True}
    if isinstance(out, torch.Tensor) and out.numel() <= 2:
        out = out.flatten().tolist()
    if isinstance(out, (tuple, list)) and len(out) == 2:
        values = []
        for x in out:
            x = x.item() if isinstance(x, torch.Tensor) and x.numel() == 1 else x
            integral = hasattr(x, "__index__") and not isinstance(x, bool)
            values.append(int(x.__index__()) if integral else repr(x)[:30])
        return {"pair": values}
    return {"returned": repr(out)[:60], "type": type(out).__name__}


@exercise("05.most_confused_pair", lesson=LESSON, name="most_confused_pair", cases=public_then_hidden(_mc_cases),
          observe=_mc_observe, params=("confusion",))
def _mc_judge(spec: dict, obs: dict, chk) -> None:
    matrix = spec["matrix"]
    k = len(matrix)
    shown = f"most_confused_pair(<{spec.get('shown', 'a matrix')}>)"
    if "raised" in obs:
        fail_raised(chk, shown, obs)
    want = _mc_expected(matrix)
    hint = ("rows are the true classes, columns the predicted ones: return (row, column) of the largest count off "
            "the diagonal, the lowest row (then column) on a tie, or None when there is none")
    if obs.get("returned_none_answer"):
        if want is None:
            chk.ok("returns None when there is no mistake")
            return
        chk.fail(f"{shown} returned None; expected {want}", hint)
    pair = obs.get("pair")
    if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        chk.fail(f"{shown} returned {str(obs.get('returned', pair))[:60]}; expected a pair (true, predicted) of ints",
                 "return a tuple of two ints, e.g. (2, 0)")
    got = tuple(pair)
    if want is None:
        chk.fail(f"{shown} returned {got}; expected None: nothing off the diagonal is above 0",
                 "return None when the matrix holds no mistakes (every off-diagonal count is 0)")
    if got != want:
        ranked = sorted((-matrix[i][j], i, j) for i in range(k) for j in range(k) if i != j)
        tied = [(i, j) for c, i, j in ranked if c == ranked[0][0]]
        if got[0] == got[1]:
            why = "that cell is on the diagonal (images classified right): skip it"
        elif got == want[::-1]:
            why = "that is (predicted, true): rows are the true classes, so return (row, column)"
        elif got in tied:
            why = "several cells share the largest count: take the lowest true index, then the lowest predicted one"
        else:
            why = "its count is not the largest off the diagonal"
        chk.fail(f"{shown} returned {got}; expected {want} (count {matrix[want[0]][want[1]]}): {why}", hint)
    chk.ok("returns (true, predicted) of the largest off-diagonal count, ties to the lowest index")
