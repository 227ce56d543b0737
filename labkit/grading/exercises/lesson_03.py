"""Lesson 03's exercises (discriminative learning rates): 03.make_param_groups, 03.conv1_drift, 03.pick_rate.

Declared with ``@exercise`` (the protocol of docs/EXERCISES.md). The judge of the parameter
groups takes ResNet's stages (stem, layer1..layer4, fc) from :func:`labkit.heads.stages`.

Example:
    >>> from labkit.grading.exercises import exercises_for
    >>> [e.name for e in exercises_for(LESSON)]
    ['make_param_groups', 'conv1_drift', 'pick_rate']
"""
from __future__ import annotations

import math
import numbers
import random

from . import models
from .protocol import (
    Checker,
    call_learner,
    clip,
    exercise,
    fail_if_raised,
    kind_of,
    lazy_torch,
    plural,
    short,
    str_list,
)

__all__ = ["LESSON"]

LESSON = "03_discriminative_lr"


def _groups_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 601, "base_lr": 1e-3, "decay": 0.3},
        {"arch": "resnet50", "seed": 602, "base_lr": 1e-3, "decay": 0.3},
        {"arch": "resnet18", "seed": 603, "base_lr": 0.05, "decay": 0.5},
    ]
    if hidden:
        for _ in range(2):
            cases.append({
                "arch": rng.choice(["resnet18", "resnet34"]), "seed": rng.randrange(2**31),
                "base_lr": float(f"{10 ** rng.uniform(-5, -1):.3g}"), "decay": float(f"{rng.uniform(0.1, 0.9):.3g}"),
                "hidden": True,
            })
    return cases


def _groups_observe(fn, spec: dict) -> dict:
    torch = lazy_torch()
    model = models.fresh_model(spec)
    name_of = models.param_names(model)
    groups, problem = call_learner(fn, model, float(spec["base_lr"]), float(spec["decay"]))
    if problem is not None:
        return problem
    obs: dict = {"type": kind_of(groups), "is_optimizer": isinstance(groups, torch.optim.Optimizer)}
    obs["is_list"] = isinstance(groups, (list, tuple))
    if not obs["is_list"]:
        return obs
    out = []
    for g in list(groups)[:50]:
        item: dict = {"is_dict": isinstance(g, dict)}
        if isinstance(g, dict):
            item["keys"] = [short(k, 40) for k in g]
            lr = g.get("lr")
            if isinstance(lr, torch.Tensor) and lr.numel() == 1:
                lr = lr.item()
            number = isinstance(lr, numbers.Real) and not isinstance(lr, bool) and math.isfinite(float(lr))
            item["lr"] = float(lr) if number else None
            item["lr_repr"] = short(g.get("lr"), 40)
            params = g.get("params")
            if isinstance(params, torch.nn.Module):
                item["params_kind"] = "module"
                item["module_type"] = kind_of(params)
            elif isinstance(params, torch.Tensor):
                item["params_kind"] = "tensor"
                item["params"] = [name_of.get(id(params))]
            elif params is not None:
                try:
                    values = list(params)
                except TypeError:
                    item["params_kind"] = "other"
                    item["params_type"] = kind_of(params)
                else:
                    item["params_kind"] = "iterable"
                    item["params"] = [name_of.get(id(p)) if isinstance(p, torch.Tensor) else None for p in values]
                    item["non_tensors"] = [kind_of(p) for p in values if not isinstance(p, torch.Tensor)][:3]
        out.append(item)
    obs["groups"] = out
    obs["length"] = len(groups)
    return obs


def _groups_facts(model, spec: dict) -> dict:
    """Parameter names, the stages (``labkit.heads.stages``: stem, layer1..layer4, fc) and each name's stage."""
    from labkit.heads import stages

    stage_of = {id(p): name for name, module in stages(model).items() for p in module.parameters()}
    named = list(model.named_parameters())
    return {"names": [n for n, _ in named], "stages": list(stages(model)),
            "stage_of": {n: stage_of[id(p)] for n, p in named}}


@exercise("03.make_param_groups", lesson=LESSON, name="make_param_groups", cases=_groups_cases, observe=_groups_observe,
          params=("model", "base_lr", "decay"))
def _judge_groups(spec: dict, obs: dict, chk: Checker) -> None:
    base_lr, decay = float(spec["base_lr"]), float(spec["decay"])
    label = models.label(spec)
    shown = f"make_param_groups(<fresh {label}>, {base_lr:g}, {decay:g})"
    fail_if_raised(chk, obs, shown)
    if obs.get("is_optimizer"):
        chk.fail(f"{shown} returned an optimizer; expected the list of group dicts",
                 "return the list you would pass to torch.optim.SGD(...)")
    groups = obs.get("groups")
    dicts = isinstance(groups, list) and all(isinstance(g, dict) and g.get("is_dict") for g in groups)
    if obs.get("is_list") is not True or not dicts:
        chk.fail(f"{shown} returned a {clip(obs.get('type'), 40)}; expected a list of dicts",
                 "one dict per stage, each with 'params' and 'lr'")
    if len(groups) != 6 or obs.get("length") != 6:
        hint = "one group each for stem (conv1 + bn1), layer1, layer2, layer3, layer4 and fc"
        if len(groups) == 5:
            hint += ": the stem (conv1 and bn1) needs a group of its own"
        chk.fail(f"{shown} returned {plural(len(groups), 'group')}; expected 6", hint)
    for i, g in enumerate(groups):
        keys = str_list(g.get("keys", []))
        if "'params'" not in keys or "'lr'" not in keys:
            chk.fail(f"group {i} has keys {', '.join(map(clip, keys)) or 'none'}; each group needs 'params' and 'lr'",
                     "e.g. {'params': list(model.layer1.parameters()), 'lr': ...}")
    facts = models.facts(spec, _groups_facts)
    _judge_group_members(groups, facts, chk, label)
    chk.ok("6 groups from stem to fc, every parameter in exactly one")
    _judge_group_rates(spec, groups, facts["stages"], chk)
    chk.ok("learning rates shrink by decay per stage from fc (base_lr) down to the stem")


def _judge_group_members(groups: list[dict], facts: dict, chk: Checker, label: str) -> None:
    """Every parameter in exactly one group, the groups in stage order (stem, layer1..layer4, fc)."""
    names, stage_of, order = facts["names"], facts["stage_of"], facts["stages"]
    where: dict[str, int] = {}
    stages_of_group: list[set[str]] = []
    for i, g in enumerate(groups):
        kind = g.get("params_kind")
        if kind == "module":
            chk.fail(f"group {i}'s 'params' is a module ({clip(g.get('module_type'), 40)})",
                     "use its parameters: list(module.parameters())")
        if kind not in ("iterable", "tensor"):
            chk.fail(f"group {i}'s 'params' is a {clip(g.get('params_type'), 40)}, not a list of parameters",
                     "use module.parameters(), e.g. list(model.layer1.parameters())")
        bad = str_list(g.get("non_tensors", []))
        if bad:
            chk.fail(f"group {i}'s 'params' holds {clip(bad[0], 40)} objects, not tensors",
                     "use module.parameters(), e.g. list(model.layer1.parameters())")
        stages = set()
        for p in str_list(g.get("params", [])):
            if p is None:
                chk.fail(f"group {i} holds a tensor that is not a parameter of the model passed in",
                         "build the groups from the `model` argument")
            p = str(p)
            if p in where:
                chk.fail(f"{p} is in group {where[p]} and group {i}", "every parameter belongs to exactly one group")
            where[p] = i
            stages.add(stage_of.get(p, p.split(".", 1)[0]))
        stages_of_group.append(stages)
    missing = [n for n in names if n not in where]
    if missing:
        stem = any(m.startswith(("bn1", "conv1")) for m in missing)
        hint = "the stem is conv1 and bn1 together" if stem else "put every parameter in a group"
        chk.fail(f"{plural(len(missing), 'parameter')} of {label} {'is' if len(missing) == 1 else 'are'} in no group "
                 f"(e.g. {missing[0]})", hint)
    for i, stages in enumerate(stages_of_group):
        if stages != {order[i]}:
            chk.fail(
                f"group {i} holds {', '.join(sorted(stages)) or 'nothing'}; expected {order[i]}",
                "order the groups from input to output: stem (conv1 + bn1), layer1, layer2, layer3, layer4, fc",
            )


def _judge_group_rates(spec: dict, groups: list[dict], order: list[str], chk: Checker) -> None:
    """Group i's lr is base_lr * decay ** (5 - i): the head at base_lr, each earlier stage decay times less."""
    base_lr, decay = float(spec["base_lr"]), float(spec["decay"])
    shown = f"make_param_groups(<fresh {models.label(spec)}>, {base_lr:g}, {decay:g})"
    lrs = [g.get("lr") for g in groups]
    for i, lr in enumerate(lrs):
        if not isinstance(lr, (int, float)) or isinstance(lr, bool):
            chk.fail(f"{shown}: group {i} has lr {clip(groups[i].get('lr_repr'), 40)}; expected a number",
                     "set 'lr' to a float: base_lr * decay ** (5 - i)")
    expected = [base_lr * decay ** (5 - i) for i in range(6)]
    if math.isclose(lrs[0], expected[5], rel_tol=1e-6) and math.isclose(lrs[5], expected[0], rel_tol=1e-6):
        chk.fail(f"{shown}: the stem has the highest lr and fc the lowest",
                 "the head (fc) gets base_lr; each earlier stage gets decay times the next one's lr")
    if all(math.isclose(lr, want * decay, rel_tol=1e-6) for lr, want in zip(lrs, expected)):
        chk.fail(f"{shown}: every lr is decay times too small (fc has {lrs[5]:.3g}, not base_lr)",
                 "group i gets base_lr * decay ** (5 - i): fc, group 5, gets base_lr itself")
    for i, (lr, want) in enumerate(zip(lrs, expected)):
        if not math.isclose(lr, want, rel_tol=1e-6):
            chk.fail(f"{shown}: group {i} ({order[i]}) has lr {lr:.3g}; expected {want:.3g}",
                     "the head (fc) gets base_lr; each earlier stage gets decay times the next one's lr")


def _drift_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"kind": "drift", "seed": 701, "shape": [64, 3, 7, 7], "scale": 0.1, "dtype": "float32", "parameter": False,
         "shown": "two 64x3x7x7 tensors"},
        {"kind": "drift", "seed": 702, "shape": [16, 3, 5, 5], "scale": 0.5, "dtype": "float32", "parameter": True,
         "shown": "a conv layer's weight (an nn.Parameter) and a changed copy"},
        {"kind": "identical", "seed": 703, "shape": [5, 5], "shown": "t, t.clone()"},
        {"kind": "mismatch", "shapes": [[3, 3], [3, 4]], "shown": "<3x3 tensor>, <3x4 tensor>"},
        {"kind": "mismatch", "shapes": [[4, 1], [1, 4]], "shown": "<4x1 tensor>, <1x4 tensor>"},
        {"kind": "mismatch", "shapes": [[2, 6], [3, 4]], "shown": "<2x6 tensor>, <3x4 tensor>"},
    ]
    if hidden:
        shape = [rng.randint(1, 32), rng.randint(1, 8), rng.randint(1, 5), rng.randint(1, 5)]
        cases.append({"kind": "drift", "seed": rng.randrange(2**31), "shape": shape,
                      "scale": float(f"{10 ** rng.uniform(-4, 0.5):.3g}"), "dtype": rng.choice(["float32", "float64"]),
                      "parameter": rng.random() < 0.5, "shown": f"two {'x'.join(map(str, shape))} tensors",
                      "hidden": True})
        a, b = rng.randint(2, 6), rng.randint(2, 6)
        pair = rng.choice([[[a, b], [b, a]] if a != b else [[a, b], [a, b + 1]], [[a * b], [a, b]], [[a, 1], [1, b]]])
        shown = f"<{'x'.join(map(str, pair[0]))} tensor>, <{'x'.join(map(str, pair[1]))} tensor>"
        cases.append({"kind": "mismatch", "shapes": pair, "shown": shown, "hidden": True})
    return cases


def _drift_inputs(spec: dict):
    torch = lazy_torch()
    if spec["kind"] == "mismatch":
        g = torch.Generator().manual_seed(7)
        return tuple(torch.rand(*s, generator=g) + 0.5 for s in spec["shapes"])
    g = torch.Generator().manual_seed(int(spec["seed"]))
    if spec["kind"] == "identical":
        t = torch.randn(*spec["shape"], generator=g)
        return t, t.clone()
    dtype = getattr(torch, spec["dtype"])
    before = torch.randn(*spec["shape"], generator=g, dtype=dtype)
    after = before + float(spec["scale"]) * torch.randn(*spec["shape"], generator=g, dtype=dtype)
    if spec.get("parameter"):
        return torch.nn.Parameter(before), after
    return before, after


def _drift_observe(fn, spec: dict) -> dict:
    torch = lazy_torch()
    before, after = _drift_inputs(spec)
    got, problem = call_learner(fn, before, after)
    if problem is not None:  # a ValueError is what the mismatch cases expect: the judge reads it
        return problem
    obs: dict = {"type": kind_of(got), "is_float": isinstance(got, float), "is_tensor": isinstance(got, torch.Tensor)}
    value = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)):
        obs["value"] = float(value)
    return obs


def _shape_forms(shape: list[int]) -> list[str]:
    inner = ",".join(map(str, shape))
    return [inner if len(shape) > 1 else f"({inner},)", inner if len(shape) > 1 else f"[{inner}]",
            "x".join(map(str, shape)), "×".join(map(str, shape))]


@exercise("03.conv1_drift", lesson=LESSON, name="conv1_drift", cases=_drift_cases, observe=_drift_observe,
          params=("before", "after"))
def _judge_drift(spec: dict, obs: dict, chk: Checker) -> None:
    shown = f"conv1_drift({spec['shown']})" if spec["kind"] != "drift" else f"conv1_drift(<{spec['shown']}>)"
    if spec["kind"] == "mismatch":
        hint = "compare before.shape and after.shape first and raise ValueError naming both shapes"
        if "raised" not in obs:
            chk.fail(f"{shown} returned {clip(obs.get('value', obs.get('type')), 40)} instead of raising ValueError",
                     hint)
        if obs.get("exit") or obs.get("is_value_error") is not True:
            chk.fail(f"{shown} raised {clip(obs.get('raised'))}; expected ValueError", hint)
        text = str(obs.get("raised", "")).replace(" ", "")
        missing = [s for s in spec["shapes"] if not any(form in text for form in _shape_forms(s))]
        if missing:
            chk.fail(f"{shown} raised ValueError, but its message does not name both shapes "
                     f"({clip(obs.get('raised'), 120)})",
                     "put both shapes in the message, e.g. f\"... {tuple(before.shape)} and {tuple(after.shape)}\"")
        chk.ok("raises ValueError when the shapes differ")
        return
    fail_if_raised(chk, obs, shown)
    if obs.get("is_tensor"):
        chk.fail(f"{shown} returned a tensor; expected a Python float", "convert the result with .item() or float(...)")
    if obs.get("is_float") is not True or not isinstance(obs.get("value"), float):
        chk.fail(f"{shown} returned a {clip(obs.get('type'), 40)}; expected a Python float",
                 "return float(...) of the relative change")
    got = obs["value"]
    b, a = (t.detach().double() for t in _drift_inputs(spec))
    want = float((a - b).norm() / b.norm())
    if spec["kind"] == "identical":
        if got != 0.0:
            chk.fail(f"{shown} returned {got:.4g}; expected 0.0 for identical tensors",
                     "no change gives a relative change of 0.0")
        chk.ok("gives 0.0 for identical tensors")
        return
    if not math.isclose(got, want, rel_tol=1e-4):
        diff = float((a - b).norm())
        if math.isclose(got, diff, rel_tol=1e-4):
            chk.fail(f"{shown} returned {got:.4g}, the size of the change, not the relative change",
                     "divide by the norm of `before`")
        if math.isclose(got, diff / float(a.norm()), rel_tol=1e-4):
            chk.fail(f"{shown} returned {got:.4g}: divided by the wrong norm",
                     "divide by the norm of `before`, not `after`")
        if math.isclose(got, want**2, rel_tol=1e-4):
            chk.fail(f"{shown} returned {got:.4g}: squared norms",
                     "use the Frobenius norm itself (square root of the sum of squares)")
        if math.isclose(got, float((a - b).abs().sum() / b.abs().sum()), rel_tol=1e-4):
            chk.fail(f"{shown} returned {got:.4g}: sums of absolute values, not Frobenius norms",
                     "Frobenius norm: square root of the sum of squares, e.g. torch.linalg.norm(t)")
        chk.fail(f"{shown} returned {got:.4g}; the relative change is {want:.4g}",
                 "relative change = norm(after - before) / norm(before), Frobenius norms")
    chk.ok("returns the relative change ||after - before|| / ||before|| as a float")




# ---------------------------------------------------------------------------------------
# 03.pick_rate: read a learning-rate finder's curve with a stated rule
# ---------------------------------------------------------------------------------------
SMOOTH = 0.98  # the finder's moving-average weight (labkit.lr_finder.lr_find's default)


def _rate_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"n": 100, "start": 1e-7, "end": 10.0, "fall": 0.55, "blow": 0.9, "noise": 0.0, "seed": 801, "tail": None,
         "shown": "a clean curve: it falls, then diverges"},
        {"n": 100, "start": 1e-7, "end": 10.0, "fall": 0.5, "blow": 0.85, "noise": 0.15, "seed": 802, "tail": None,
         "shown": "a noisy curve"},
        {"n": 60, "start": 1e-6, "end": 1e-2, "fall": 0.8, "blow": None, "noise": 0.02, "seed": 803, "tail": None,
         "shown": "a curve that never diverges: the loss still falls at the last rate"},
        {"n": 80, "start": 1e-7, "end": 10.0, "fall": 0.5, "blow": 0.8, "noise": 0.05, "seed": 804, "tail": "nan",
         "shown": "a curve whose last loss is nan (the run blew up)"},
    ]
    if hidden:
        for _ in range(3):
            blow = rng.choice([None, round(rng.uniform(0.75, 0.95), 3)])
            cases.append({
                "n": rng.randint(30, 120), "start": float(f"{10 ** rng.uniform(-8, -5):.3g}"),
                "end": float(f"{10 ** rng.uniform(-1.5, 1):.3g}"), "fall": round(rng.uniform(0.3, 0.7), 3),
                "blow": blow, "noise": round(rng.uniform(0.0, 0.2), 3), "seed": rng.randrange(2**31),
                "tail": rng.choice([None, None, "nan", "inf"]) if blow is not None else None,
                "shown": "a finder curve", "hidden": True,
            })
    return cases


def _curve(spec: dict) -> tuple[list[float], list[float]]:
    """The case's rates (growing exponentially) and batch losses: a fall, maybe a blow-up, noise, maybe nan/inf last."""
    n, start, end = int(spec["n"]), float(spec["start"]), float(spec["end"])
    g = random.Random(int(spec["seed"]))
    rates, losses = [], []
    for i in range(n):
        t = i / (n - 1)
        loss = 2.3 - 1.6 / (1 + math.exp(-(t - float(spec["fall"])) / 0.07))
        if spec.get("blow") is not None:
            loss += 0.5 * (math.exp(max(t - float(spec["blow"]), 0.0) / 0.04) - 1)
        loss = max(0.05, loss * (1 + float(spec["noise"]) * g.gauss(0, 1)))
        rates.append(start * (end / start) ** t)
        losses.append(round(loss, 6))
    if spec.get("tail"):
        losses[-1] = float(spec["tail"])
    return rates, losses


def _smoothed(losses: list[float], beta: float = SMOOTH, *, debias: bool = True) -> list[float]:
    """The finder's debiased exponential moving average (``debias=False``: the forgotten correction)."""
    avg, out = 0.0, []
    for i, value in enumerate(losses):
        avg = beta * avg + (1 - beta) * value
        out.append(avg / (1 - beta ** (i + 1)) if debias else avg)
    return out


def _argmin_finite(values: list[float]) -> int:
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    return min(finite, key=lambda i: (values[i], i))


def _rate_observe(fn, spec: dict) -> dict:
    torch = lazy_torch()
    rates, losses = _curve(spec)
    got, problem = call_learner(fn, list(rates), list(losses))
    if problem is not None:
        return problem
    obs: dict = {"type": kind_of(got), "is_tensor": isinstance(got, torch.Tensor)}
    value = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        obs["value"] = float(value) if math.isfinite(float(value)) else str(float(value))
    return obs


def _rate_mistakes(rates: list[float], losses: list[float]) -> list[tuple[float, str]]:
    """(the rate a typical mistake returns, what to say about it)."""
    from labkit.lr_finder import suggest_lr

    smooth = _smoothed(losses)
    at_min = rates[_argmin_finite(smooth)]
    out = [
        (at_min, "it is the rate at the minimum itself: the rule divides it by 10"),
        (at_min * 10, "it is the rate at the minimum times 10: the rule divides by 10"),
        (rates[_argmin_finite(losses)] / 10,
         "it is where the raw batch losses are lowest: smooth them with the finder's moving average "
         "(weight 0.98) first"),
        (rates[_argmin_finite(_smoothed(losses, debias=False))] / 10,
         "the moving average is not debiased: divide it by 1 - 0.98 ** (i + 1), or its first values sit near 0"),
        (suggest_lr(rates, smooth, "valley"), "that is fastai's valley rule, not the minimum divided by 10"),
        (suggest_lr(rates, smooth, "minimum"),
         "that is labkit's suggest_lr, which skips the first tenth and the last five points; this rule uses every "
         "point"),
    ]
    bad = [i for i, v in enumerate(smooth) if not math.isfinite(v)]
    if bad:
        out.append((rates[bad[0]] / 10, "a nan or inf loss is not a minimum: skip the losses that are not finite"))
    return out


@exercise("03.pick_rate", lesson=LESSON, name="pick_rate", cases=_rate_cases, observe=_rate_observe,
          params=("rates", "losses"))
def _judge_rate(spec: dict, obs: dict, chk: Checker) -> None:
    shown = f"pick_rate(<{spec['shown']}, {spec['n']} points>)"
    fail_if_raised(chk, obs, shown)
    if obs.get("is_tensor"):
        chk.fail(f"{shown} returned a tensor; expected a Python float", "convert the rate with float(...)")
    got = obs.get("value")
    if isinstance(got, str):
        chk.fail(f"{shown} returned {clip(got, 20)}; expected a finite rate",
                 "a nan or inf loss is not a minimum: skip the losses that are not finite")
    if not isinstance(got, float):
        chk.fail(f"{shown} returned a {clip(obs.get('type'), 40)}; expected a float (a learning rate)",
                 "return the chosen rate as a float")
    chk.ok("returns a rate as a float")
    rates, losses = _curve(spec)
    smooth = _smoothed(losses)
    at_min = rates[_argmin_finite(smooth)]
    if not math.isclose(got, at_min / 10, rel_tol=1e-6):
        for value, why in _rate_mistakes(rates, losses):
            if math.isclose(got, value, rel_tol=1e-6):
                chk.fail(f"{shown} returned {got:.4g}; expected {at_min / 10:.4g}: {why}",
                         "smooth with the debiased moving average (0.98), take the rate at the lowest finite smoothed "
                         "loss, divide it by 10")
        chk.fail(f"{shown} returned {got:.4g}; expected {at_min / 10:.4g} (the lowest smoothed loss is at rate "
                 f"{at_min:.4g})",
                 "smooth with the debiased moving average (0.98), take the rate at the lowest finite smoothed loss, "
                 "divide it by 10")
    chk.ok("the rate at the lowest smoothed loss, divided by 10, on clean, noisy and never-diverging curves")
