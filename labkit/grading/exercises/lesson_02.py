"""Lesson 02's exercises (first-layer filters): 02.first_conv_weight and 02.to_display.

Declared with ``@exercise`` (the protocol of docs/EXERCISES.md). Tensors travel from observe to
judge through the one codec, :func:`.protocol.tensor_to_json` / :func:`.protocol.tensor_from_json`.

Example:
    >>> from labkit.grading.exercises import exercises_for
    >>> [e.name for e in exercises_for(LESSON)]
    ['first_conv_weight', 'to_display']
"""
from __future__ import annotations

import random

from . import models
from .protocol import (
    MAX_ELEMENTS,
    Checker,
    CheckTimeout,
    call_learner,
    clip,
    exception_text,
    exercise,
    fail_if_raised,
    kind_of,
    lazy_torch,
    str_list,
    tensor_from_json,
    tensor_to_json,
)

__all__ = ["LESSON"]

LESSON = "02_first_layer_filters"


def _conv_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 401},
        {"arch": "mobilenet_v3_small", "seed": 402},
        {"arch": "bn_first", "seed": 403},
        {"arch": "nested_conv1", "seed": 404},
    ]
    if hidden:
        for _ in range(2):
            layout, names = [], rng.sample(["stem", "features", "body", "block", "encoder", "trunk"], 3)
            before = [["bn"]] * rng.randint(0, 1) + [["relu"]] * rng.randint(0, 1)
            first = [["conv", rng.randint(2, 12), rng.choice([1, 3, 5]), rng.random() < 0.5]]
            layout.append([names[0], before + first + [["relu"]]])
            layout.append(["conv1", [["conv", rng.randint(2, 12), 3, True]]])
            layout.append([names[1], [["bn"], ["conv", rng.randint(2, 12), 3, False], ["relu"]]])
            cases.append({"arch": "random_cnn", "seed": rng.randrange(2**31), "layout": layout, "hidden": True})
    return cases


def _conv_observe(fn, spec: dict) -> dict:
    torch = lazy_torch()
    model = models.fresh_model(spec)
    named = list(model.named_parameters())
    convs = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][:2]
    watched = [(n, p) for i, (n, p) in enumerate(named) if i == 0 or n in convs]
    snapshot = [p.detach().clone() for _, p in watched]
    w, problem = call_learner(fn, model)
    if problem is not None:
        return problem
    obs: dict = {"type": kind_of(w), "is_tensor": isinstance(w, torch.Tensor)}
    obs["call_changed"] = [n for (n, p), s in zip(watched, snapshot) if not torch.equal(p.detach(), s)]
    if not obs["is_tensor"]:
        obs["is_ndarray"] = type(w).__module__ == "numpy" and hasattr(w, "shape")
        return obs
    obs["is_parameter"] = isinstance(w, torch.nn.Parameter)
    obs["requires_grad"] = bool(w.requires_grad)
    if w.numel() <= MAX_ELEMENTS:
        obs["tensor"] = tensor_to_json(w)
    else:  # far bigger than any first conv here: its shape and first values identify it
        obs["sample"] = {"shape": list(w.shape), "head": tensor_to_json(w.detach().reshape(-1)[:256])}
    try:
        storage = w.untyped_storage().data_ptr()
        sharing = [(n, p) for n, p in named if p.untyped_storage().data_ptr() == storage]
        saved = [p.detach().clone() for _, p in sharing]
        with torch.no_grad():
            w.add_(1.0)
        obs["edit_changed"] = [n for (n, p), s in zip(sharing, saved) if not torch.equal(p.detach(), s)]
    except CheckTimeout:
        raise
    except Exception as exc:  # the result cannot be changed in place: the judge names it
        obs["edit_raised"] = f"{type(exc).__name__}: {exception_text(exc)}"
    return obs


def _conv_facts(model, spec: dict) -> dict:
    nn = lazy_torch().nn
    convs = [(n, m.weight.detach().clone()) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    named = list(model.named_parameters())
    return {"convs": convs, "first_param": (named[0][0], named[0][1].detach().clone())}


@exercise("02.first_conv_weight", lesson=LESSON, name="first_conv_weight", cases=_conv_cases, observe=_conv_observe,
          params=("model",))
def _judge_conv(spec: dict, obs: dict, chk: Checker) -> None:
    torch = lazy_torch()
    label = models.label(spec)
    shown = f"first_conv_weight(<fresh {label}>)"
    fail_if_raised(chk, obs, shown)
    if obs.get("is_tensor") is not True:
        if obs.get("is_ndarray"):
            chk.fail(f"{shown} returned a NumPy array; expected a tensor",
                     "return the tensor itself (no .numpy()): .detach().clone() makes the copy")
        chk.fail(f"{shown} returned a {clip(obs.get('type'), 40)}; expected a tensor",
                 "return the .weight of the first nn.Conv2d")
    facts = models.facts(spec, _conv_facts)
    first_name, want = facts["convs"][0]
    changed_by_call = str_list(obs.get("call_changed", []))
    if changed_by_call:
        chk.fail(f"calling {shown} changed the model's `{clip(changed_by_call[0], 60)}`",
                 "read the weight without modifying the model (no in-place ops on it)")
    if isinstance(obs.get("sample"), dict):
        shape = obs["sample"].get("shape")
        head = tensor_from_json(obs["sample"].get("head")).to(torch.float64)
        starts_alike = [n for n, v in facts["convs"][1:]
                        if list(v.shape) == shape and _same(v.reshape(-1)[: head.numel()], head)]
        other = starts_alike[0] if starts_alike else None
        if other is not None:
            chk.fail(f"{shown} returned the weight of `{other}`, a later nn.Conv2d; the first one is `{first_name}`",
                     "go through model.modules() in order and stop at the first nn.Conv2d")
        chk.fail(f"{shown} returned a tensor of shape {'x'.join(map(clip, shape or []))}; the first nn.Conv2d of "
                 f"{label} has weights {'x'.join(map(str, want.shape))}",
                 "take the first nn.Conv2d in model.modules() order, then its .weight")
    got = tensor_from_json(obs.get("tensor"))
    if not _same(got, want):
        _fail_other_tensor(spec, chk, facts, got)
    chk.ok("returns the weights of the first nn.Conv2d (64x3x7x7 for ResNet-18)")
    _judge_detached(obs, chk, shown)
    chk.ok("is a detached copy: changing it leaves the model unchanged")


def _same(a, b) -> bool:
    torch = lazy_torch()
    return tuple(a.shape) == tuple(b.shape) and torch.equal(a.to(torch.float64), b.to(torch.float64))


def _fail_other_tensor(spec: dict, chk: Checker, facts: dict, got) -> None:
    """Name what the returned tensor is instead: the first parameter, a later conv, another shape."""
    label = models.label(spec)
    shown = f"first_conv_weight(<fresh {label}>)"
    first_name, want = facts["convs"][0]
    p_name, p_value = facts["first_param"]
    if _same(got, p_value) and p_name != f"{first_name}.weight":
        chk.fail(
            f"{shown} returned `{p_name}`, the model's first parameter, which is not the first nn.Conv2d's "
            f"weight (`{first_name}.weight`)",
            "the first parameter need not belong to a conv (here a BatchNorm2d comes first): look for the first "
            "module that is an nn.Conv2d",
        )
    other = next((n for n, v in facts["convs"][1:] if _same(got, v)), None)
    if other is not None:
        hint = "go through model.modules() in order and stop at the first nn.Conv2d"
        if other.endswith("conv1"):
            hint = "a layer's name says nothing about its position: " + hint
        chk.fail(f"{shown} returned the weight of `{other}`, a later nn.Conv2d; the first one is `{first_name}`",
                 hint)
    if tuple(got.shape) != tuple(want.shape):
        chk.fail(
            f"{shown} returned shape {'x'.join(map(str, got.shape))}; the first nn.Conv2d of {label} has "
            f"weights {'x'.join(map(str, want.shape))}",
            "take the first nn.Conv2d in model.modules() order (registration order), then its .weight",
        )
    chk.fail(f"{shown} has the right shape but not the first conv's weights",
             "take the weight of the first nn.Conv2d in model.modules() order, unchanged")


def _judge_detached(obs: dict, chk: Checker, shown: str) -> None:
    """The result does not require grad and has its own memory (changing it leaves the model alone)."""
    detach = "call .detach() on the weight (then .clone() so it has its own memory)"
    problems: list[tuple[str, str | None]] = []
    if obs.get("requires_grad") is not False:
        if obs.get("is_parameter"):
            problems.append((f"{shown} returned an nn.Parameter that still requires grad: a copy of the Parameter "
                             "(e.g. copy.deepcopy) is still a trainable parameter, not a detached tensor", detach))
        else:
            problems.append((f"{shown} still requires grad: it is part of the autograd graph "
                             "(e.g. .clone() without .detach())", detach))
    if "edit_raised" in obs:
        problems.append((f"adding 1 to your result raised {clip(obs['edit_raised'])}",
                         "return an ordinary tensor: weight.detach().clone()"))
    edited = str_list(obs.get("edit_changed", []))
    if edited:
        problems.append((f"changing your result changed the model's `{clip(edited[0], 60)}`: they share memory",
                         "add .clone() after .detach() (.detach() alone, or .data, still shares the model's memory)"))
    if problems:
        chk.fail_many(problems)


def _display_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"seed": 501, "shape": [6, 3, 5, 7], "scales": [0.01, 0.063, 0.398, 2.51, 15.8, 100.0],
         "offsets": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "constant": [], "parameter": False, "dtype": "float32",
         "shown": "a random 6x3x5x7 tensor"},
        {"seed": 502, "shape": [3, 3, 4, 4], "scales": [1.0, 1.0, 1.0], "offsets": [0.0, 0.7, 0.0], "constant": [1],
         "parameter": False, "dtype": "float32", "shown": "a 3x3x4x4 tensor whose filter 1 is constant"},
        {"seed": 503, "shape": [16, 3, 5, 5], "scales": [0.1] * 16, "offsets": [0.0] * 16, "constant": [],
         "parameter": True, "dtype": "float32", "shown": "a conv layer's 16x3x5x5 weight (an nn.Parameter)"},
    ]
    if hidden:
        for _ in range(2):
            n, h, w = rng.randint(2, 12), rng.randint(2, 8), rng.randint(2, 8)
            constant = sorted(rng.sample(range(n), rng.randint(0, 1)))
            cases.append({
                "seed": rng.randrange(2**31), "shape": [n, 3, h, w],
                "scales": [float(f"{10 ** rng.uniform(-3, 2):.3g}") for _ in range(n)],
                "offsets": [round(rng.uniform(-5, 5), 3) for _ in range(n)], "constant": constant,
                "parameter": rng.random() < 0.5, "dtype": rng.choice(["float32", "float64"]),
                "shown": f"a random {n}x3x{h}x{w} tensor", "hidden": True,
            })
    return cases


def _display_input(spec: dict):
    torch = lazy_torch()
    n, c, h, w = (int(s) for s in spec["shape"])
    g = torch.Generator().manual_seed(int(spec["seed"]))
    dtype = getattr(torch, spec["dtype"])
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    scales = torch.tensor(spec["scales"], dtype=torch.float64).view(n, 1, 1, 1)
    x = x * scales + torch.tensor(spec["offsets"], dtype=torch.float64).view(n, 1, 1, 1)
    for i in spec["constant"]:
        x[int(i)] = float(spec["offsets"][int(i)])
    x = x.to(dtype)
    return torch.nn.Parameter(x) if spec.get("parameter") else x


def _display_observe(fn, spec: dict) -> dict:
    torch = lazy_torch()
    weight = _display_input(spec)
    saved = weight.detach().clone()
    out, problem = call_learner(fn, weight)
    if problem is not None:
        return problem
    obs: dict = {"type": kind_of(out), "input_changed": not torch.equal(weight.detach(), saved)}
    if not isinstance(out, torch.Tensor) and type(out).__module__ == "numpy" and hasattr(out, "shape"):
        try:
            out = torch.from_numpy(out.copy())
        except Exception:  # e.g. an object array
            pass
    if isinstance(out, torch.Tensor):
        try:
            obs["tensor"] = tensor_to_json(out.detach().to(torch.float64) if out.is_floating_point() else out)
        except ValueError as exc:
            obs["tensor_problem"] = exception_text(exc)
    return obs


def _display_reference(x):
    torch = lazy_torch()
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    span = high - low
    scaled = torch.where(span > 0, (x - low) / torch.where(span > 0, span, torch.ones_like(span)),
                         torch.full_like(x, 0.5))
    return scaled.permute(0, 2, 3, 1)


@exercise("02.to_display", lesson=LESSON, name="to_display", cases=_display_cases, observe=_display_observe,
          params=("weight",))
def _judge_display(spec: dict, obs: dict, chk: Checker) -> None:
    torch = lazy_torch()
    shown = f"to_display(<{clip(spec.get('shown'), 80)}>)"
    fail_if_raised(chk, obs, shown)
    if obs.get("input_changed") is not False:
        chk.fail(f"{shown} changed its input",
                 "work on a copy: avoid in-place ops like sub_ / div_ on the weight you were given")
    chk.ok("leaves its input unchanged")
    if "tensor" not in obs:
        chk.fail(f"{shown} returned a {clip(obs.get('type'), 40)}; expected a tensor",
                 "return the scaled, permuted tensor")
    try:
        got = tensor_from_json(obs["tensor"]).to(torch.float64)
    except (ValueError, TypeError, RuntimeError):
        chk.fail(f"{shown} returned something that is not a numeric tensor", "return the scaled, permuted tensor")
    x = _display_input(spec).detach().to(torch.float64)
    n, c, h, w = x.shape
    if tuple(got.shape) != (n, h, w, c) and tuple(got.shape) == (n, c, h, w):
        chk.fail(f"{shown} returned N x 3 x H x W: the color channels are not moved last",
                 "permute the axes to N x H x W x 3 for imshow")
    if tuple(got.shape) != (n, h, w, c):
        chk.fail(
            f"{shown} returned shape {'x'.join(map(str, got.shape))}; expected N x H x W x 3 = {n}x{h}x{w}x{c}",
            "permute the axes (a reshape or view keeps the memory order and scrambles pixels)",
        )
    chk.ok("returns N x H x W x 3")
    _judge_display_values(shown, x, got, chk)


def _judge_display_values(shown: str, x, got, chk: Checker) -> None:
    """Each filter min-max scaled on its own, a constant one at 0.5; else name the mistake the values show."""
    torch = lazy_torch()
    n, c, h, w = x.shape
    ref = _display_reference(x)
    const = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))) == 0
    if torch.isnan(got).any():
        chk.fail(f"{shown} has NaN values" + (" for a constant filter (division by zero)" if const.any() else ""),
                 "a filter with max == min has nothing to scale: map it to 0.5")
    if const.any():
        if not torch.allclose(got[const], torch.full_like(got[const], 0.5)):
            chk.fail(f"{shown}: a constant filter does not come out as 0.5 (mid-gray)",
                     "map a filter with max == min to 0.5 instead of dividing by zero")
        chk.ok("maps a constant filter to 0.5 (no division by zero)")
    if torch.allclose(got, ref, atol=1e-5, rtol=1e-4):
        chk.ok("scales each filter on its own to [0, 1]")
        return
    if h == w and torch.allclose(got, ref.transpose(1, 2), atol=1e-5, rtol=1e-4):
        chk.fail(f"{shown} returns each image transposed (N x W x H x 3)",
                 "use permute(0, 2, 3, 1): transpose(1, 3) swaps height and width")
    var = ~const
    lows = got[var].amin(dim=(1, 2, 3))
    highs = got[var].amax(dim=(1, 2, 3))
    starts_at_0 = torch.allclose(lows, torch.zeros_like(lows), atol=1e-5)
    if not (starts_at_0 and torch.allclose(highs, torch.ones_like(highs), atol=1e-5)):
        overall = ((x - x.min()) / (x.max() - x.min())).permute(0, 2, 3, 1)
        if torch.allclose(got, overall, atol=1e-5):
            chk.fail(f"{shown} scales all filters together",
                     "scale each filter on its own: its min and max over its 3 x H x W values")
        if starts_at_0 and float(highs.max()) <= 1 + 1e-6 and float(highs.min()) > 0.99:
            chk.fail(f"{shown}: the largest value of a filter comes out just below 1 ({float(highs.min()):.6f})",
                     "divide by exactly (max - min), without adding a small epsilon; map a constant filter to 0.5 "
                     "separately")
        chk.fail(f"{shown}: each filter's values should span exactly [0, 1]",
                 "subtract the filter's min, then divide by (max - min), per filter")
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    per_channel = ((x - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))).permute(0, 2, 3, 1)
    if torch.allclose(got, per_channel, atol=1e-5):
        chk.fail(f"{shown} scales each color channel on its own",
                 "use one min and one max per filter, across all 3 channels")
    if torch.allclose(got.reshape(n, -1).sort(dim=1).values, ref.reshape(n, -1).sort(dim=1).values, atol=1e-5):
        chk.fail(f"{shown} has the right values in the wrong places",
                 "use permute to move the channels last; reshape/view/transpose of other axes scrambles pixels")
    chk.fail(f"{shown} does not match per-filter min-max scaling",
             "per filter: (x - min) / (max - min), then channels last")


