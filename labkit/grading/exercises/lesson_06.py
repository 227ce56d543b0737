"""Lesson 06's exercises (LoRA): 06.lora_param_count, 06.merged_weight, 06.choose_adaptation.

Declared with ``@exercise`` (the protocol of docs/EXERCISES.md). No peft here: the references are
the formulas (``tests/test_check_variants_06.py`` checks them against peft). The large-data
threshold of :func:`choose_adaptation_reference` is lesson 04's, from :mod:`labkit.strategy`.

Example:
    >>> choose_adaptation_reference(500, 1, 400, 330, 3.5)
    'lora'
"""
from __future__ import annotations

import math
import random
from typing import Any

from .protocol import call_learner, exercise, fail_raised, public_then_hidden, tensor_from_json, tensor_to_json

__all__ = ["LESSON", "choose_adaptation_reference"]

LESSON = "06_parameter_efficient_finetuning"


def _tensor(d: Any):
    """The float64 tensor an observation field describes, or None when it is malformed (untrusted input)."""
    try:
        return tensor_from_json(d).double()
    except (ValueError, TypeError, RuntimeError):
        return None


def _usable(chk, obs: Any, shown: str, define: str) -> None:
    """Fail on the observations every exercise treats alike (no dict, an error, not a function)."""
    if not isinstance(obs, dict):
        chk.fail("the check got no usable observation of your function", "make sure it runs without printing errors")
    if "raised" in obs:
        fail_raised(chk, shown, obs)
    if "not_callable" in obs:
        chk.fail(f"you passed a {str(obs['not_callable'])[:40]}, not a function", f"define it with `{define}`")


# ---------------------------------------------------------------------------------------
# 06.lora_param_count: LoRA's trainable parameters for one layer, by hand
# ---------------------------------------------------------------------------------------
def _layer(spec: dict):
    from torch import nn

    if spec["kind"] == "linear":
        return nn.Linear(spec["in"], spec["out"], bias=spec["bias"])
    return nn.Conv2d(spec["in"], spec["out"], kernel_size=1, bias=spec["bias"])


def _count_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    if not hidden:
        return [
            {"kind": "linear", "in": 768, "out": 3072, "bias": True, "r": 16},   # ViT-B/16's mlp.0
            {"kind": "conv1x1", "in": 16, "out": 96, "bias": False, "r": 8},     # Lite0's blocks.1.0.conv_pw
            {"kind": "conv1x1", "in": 320, "out": 1280, "bias": False, "r": 1},  # Lite0's conv_head, rank 1
            {"kind": "linear", "in": 10, "out": 3, "bias": False, "r": 4},
        ]
    specs = []
    for kind in ("linear", "conv1x1"):
        n_in, n_out = rng.randint(3, 600), rng.randint(3, 600)
        while n_out == n_in:
            n_out = rng.randint(3, 600)
        specs.append({"kind": kind, "in": n_in, "out": n_out, "bias": rng.random() < 0.5,
                      "r": rng.choice([1, 2, 4, 8, 16, 32])})
    return specs


def _count_observe(obj: Any, spec: dict) -> dict:
    if obj is None:
        return {"not_attempted": True}
    out, problem = call_learner(obj, _layer(spec), spec["r"])
    if problem is not None:
        return problem
    if out is None:
        return {"not_attempted": True}
    if isinstance(out, bool):
        return {"type": "bool"}
    if isinstance(out, int):
        return {"value": int(out), "type": "int"}
    try:  # a tensor, a float or a NumPy number: say what it was
        value = float(out.item() if hasattr(out, "item") else out)
    except Exception:  # not a number: say which type came
        return {"type": type(out).__name__[:40]}
    return {"value": value, "type": type(out).__name__[:40]}


@exercise("06.lora_param_count", lesson=LESSON, name="lora_param_count", cases=public_then_hidden(_count_cases),
          observe=_count_observe, params=("layer", "r"))
def _count_judge(spec: dict, obs: dict, chk) -> None:
    r, n_in, n_out = spec["r"], spec["in"], spec["out"]
    what = "nn.Linear" if spec["kind"] == "linear" else "1x1 nn.Conv2d"
    shown = f"lora_param_count(<{what} {n_in} -> {n_out}>, r={r})"
    _usable(chk, obs, shown, "def lora_param_count(layer, r):")
    value = obs.get("value")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        chk.fail(f"{shown} returned a {str(obs.get('type', '?'))[:40]}, not a number",
                 "return the count as a plain int")
    want = r * (n_in + n_out)
    if value != want:
        ins, outs = ("in_features", "out_features") if spec["kind"] == "linear" else ("in_channels", "out_channels")
        layer_own = n_in * n_out + (n_out if spec["bias"] else 0)
        mistakes = [
            (n_in * n_out,
             "that is the layer's own weight matrix; LoRA trains two thin matrices A (r x in) and B (out x r) instead"),
            (r * n_in * n_out,
             "A is r x in and B is out x r: their sizes add up, r * in + out * r, they do not multiply"),
            (n_in + n_out, "each of A and B has r rows or columns: multiply by the rank r"),
            (r * n_in, "that is only A (r x in); B (out x r) trains too"),
            (r * n_out, "that is only B (out x r); A (r x in) trains too"),
            (want + layer_own, "the layer's own weights stay frozen: count only A and B"),
            (want + n_out, "LoRA adds no bias: A and B are plain matrices"),
            (2 * want, "A and B are counted once each: r * (in + out) in all"),
        ]
        for wrong, hint in mistakes:
            if value == wrong:
                chk.fail(f"{shown} returned {value:,.0f}", hint)
        chk.fail(f"{shown} returned {value:,.0f}",
                 f"A is r x {ins} and B is {outs} x r, so LoRA adds r * ({ins} + {outs}) parameters")
    if obs.get("type") != "int":
        chk.fail(f"{shown} returned the right number as a {str(obs.get('type'))[:40]}",
                 "return a plain Python int (int(...) around a tensor or NumPy value)")
    chk.ok("r * (in + out) for a linear layer and for a 1x1 convolution (channels in and out)")


# ---------------------------------------------------------------------------------------
# 06.merged_weight: W + (alpha / r) * B @ A by hand
# ---------------------------------------------------------------------------------------
def _merge_inputs(spec: dict):
    """Seeded W, A, B in peft's shapes: (out, in), (r, in), (out, r), with 1 x 1 at the end for a conv."""
    import torch

    g = torch.Generator().manual_seed(spec["seed"])
    tail = (1, 1) if spec["kind"] == "conv1x1" else ()
    w = torch.randn(spec["out"], spec["in"], *tail, generator=g)
    a = torch.randn(spec["r"], spec["in"], *tail, generator=g) * 0.5
    b = torch.randn(spec["out"], spec["r"], *tail, generator=g) * 0.5
    return w, a, b


def _merge_reference(spec: dict, how: str = "correct"):
    w, a, b = (t.double() for t in _merge_inputs(spec))
    delta = (b.flatten(1) @ a.flatten(1)).reshape(w.shape)
    alpha, r = spec["alpha"], spec["r"]
    return {"correct": w + alpha / r * delta, "no_scaling": w + delta, "inverse_scaling": w + r / alpha * delta,
            "alpha_only": w + alpha * delta, "delta_only": alpha / r * delta}[how]


def _merge_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    if not hidden:
        return [
            {"kind": "linear", "in": 6, "out": 5, "r": 2, "alpha": 4, "seed": 1},
            {"kind": "conv1x1", "in": 4, "out": 7, "r": 3, "alpha": 6, "seed": 2},
            {"kind": "linear", "in": 8, "out": 8, "r": 4, "alpha": 16, "seed": 3},
            {"kind": "conv1x1", "in": 5, "out": 3, "r": 2, "alpha": 2, "seed": 4},
        ]
    return [{"kind": kind, "in": rng.randint(2, 12), "out": rng.randint(2, 12), "r": r,
             "alpha": rng.choice([r * 2, r * 4, 1, 32]), "seed": rng.randrange(10, 10_000)}
            for kind, r in (("linear", rng.choice([1, 2, 4])), ("conv1x1", rng.choice([1, 2, 3, 8])))]


def _merge_observe(obj: Any, spec: dict) -> dict:
    if obj is None:
        return {"not_attempted": True}
    w, a, b = _merge_inputs(spec)
    given = (w.clone(), a.clone(), b.clone())
    out, problem = call_learner(obj, given[0], given[1], given[2], spec["alpha"], spec["r"])
    if problem is not None:
        return problem
    if out is None:
        return {"not_attempted": True}
    changed = [name for name, before, after in zip(("weight", "lora_A", "lora_B"), (w, a, b), given)
               if not (before.shape == after.shape and bool((before == after).all()))]
    if not hasattr(out, "detach") or not hasattr(out, "shape"):
        try:
            import torch

            out = torch.as_tensor(out)
        except Exception:  # not convertible to a tensor: say which type came
            return {"type": type(out).__name__[:40], "changed": changed}
    try:
        return {"result": tensor_to_json(out.detach().double()), "changed": changed}
    except Exception:  # not a tensor the codec takes (e.g. complex): say which type came
        return {"type": type(out).__name__[:40], "changed": changed}


@exercise("06.merged_weight", lesson=LESSON, name="merged_weight", cases=public_then_hidden(_merge_cases),
          observe=_merge_observe, params=("weight", "lora_A", "lora_B", "alpha", "r"))
def _merge_judge(spec: dict, obs: dict, chk) -> None:
    shape = [spec["out"], spec["in"]] + ([1, 1] if spec["kind"] == "conv1x1" else [])
    shown = f"merged_weight(<W {'x'.join(map(str, shape))}>, A, B, alpha={spec['alpha']}, r={spec['r']})"
    _usable(chk, obs, shown, "def merged_weight(weight, lora_A, lora_B, alpha, r):")
    got = _tensor(obs.get("result"))
    if got is None:
        chk.fail(f"{shown} returned a {str(obs.get('type', '?'))[:40]}, not a tensor",
                 "return a tensor shaped like weight")
    if list(got.shape) != shape:
        hint = ("for a 1x1 convolution, compute the product on the 2-D matrices (.flatten(1) or [:, :, 0, 0]) and "
                "reshape it to weight.shape" if spec["kind"] == "conv1x1" else
                "B (out x r) @ A (r x in) is out x in, the shape of weight; A @ B or a transpose has another shape")
        chk.fail(f"{shown} returned shape {list(got.shape)}, expected weight's shape {shape}", hint)
    ref = _merge_reference(spec)

    def close(x) -> bool:
        return bool(((got - x).abs() <= 1e-4 * (1 + x.abs())).all())

    if not close(ref):
        for how, hint in (("no_scaling", "multiply B @ A by alpha / r before adding it"),
                          ("inverse_scaling", "the scale is alpha / r, not r / alpha"),
                          ("alpha_only", "divide alpha by the rank r: the scale is alpha / r"),
                          ("delta_only", "the merged weight is the frozen weight plus the update: "
                                         "W + (alpha / r) * B @ A")):
            if close(_merge_reference(spec, how)):
                chk.fail(f"{shown} returned a different weight", hint)
        chk.fail(f"{shown} returned a different weight", "W + (alpha / r) * (B @ A), with B out x r and A r x in")
    chk.ok("W + (alpha / r) * B @ A, for a linear layer and a 1x1 convolution")
    changed = obs.get("changed")
    if not isinstance(changed, list):
        chk.fail("the check got a malformed observation", None)
    if changed:
        chk.fail(f"{shown} changed its input {', '.join(str(c)[:10] for c in changed[:3])} in place",
                 "return a new tensor (weight + ...), not weight.add_(...): the frozen weight must stay as it was")
    chk.ok("inputs left unchanged")


# ---------------------------------------------------------------------------------------
# 06.choose_adaptation: feature extraction, LoRA or full fine-tuning
# ---------------------------------------------------------------------------------------
_CHOICES = ("feature_extraction", "lora", "full_finetune")


def _rule(point: list, *, strict: bool = False, large_from: int | None = None, full_copies: bool = True,
          shared_backbone: bool = True, small: str = "lora", full: bool = True) -> str | None:
    """The lesson's rule with one thing changed (a mistake the judge tests for); None: ValueError."""
    n, tasks, storage, model, adapter = point
    if large_from is None:  # lesson 04's threshold, from its one home (judge side: imported lazily)
        from labkit.strategy import SMALL_DATA as large_from

    def fits(need: float) -> bool:
        return need < storage if strict else need <= storage

    if storage < model:
        return None
    if full and n >= large_from and fits(tasks * model if full_copies else model):
        return "full_finetune"
    if n < large_from and small == "feature_extraction":
        return "feature_extraction"
    if fits(model + tasks * adapter if shared_backbone else tasks * adapter):
        return "lora"
    return "feature_extraction"


def choose_adaptation_reference(n_images: int, n_tasks: int, storage_mb: float, model_mb: float,
                                adapter_mb: float) -> str:
    """The lesson's rule (a deliberate copy, so a submission cannot patch it).

    Storage: full fine-tuning keeps one whole model per task; LoRA one shared backbone plus an
    adapter per task; feature extraction one shared backbone (a head is a few KB: counted as 0).
    Large data (10,000 images or more) and every full copy fits: full fine-tuning. Else LoRA if
    its adapters fit; else feature extraction. Not even the backbone fits: ValueError.
    """
    choice = _rule([n_images, n_tasks, storage_mb, model_mb, adapter_mb])
    if choice is None:
        raise ValueError(f"not even one backbone ({model_mb} MB) fits in {storage_mb} MB")
    return choice


# (n_images, n_tasks, storage_mb, model_mb, adapter_mb): ViT-B/16-like sizes, exact in binary
_POINTS = [
    [500, 1, 400, 330, 3.5],        # small data, the adapter fits: lora
    [50_000, 3, 1000, 330, 3.5],    # large data, three full copies fit: full_finetune
    [50_000, 40, 1000, 330, 3.5],   # large data, 40 full copies do not fit, 40 adapters do: lora
    [50_000, 400, 1000, 330, 3.5],  # not even the adapters fit: feature_extraction
    [9_999, 2, 5000, 330, 3.5],     # just small: lora
    [10_000, 1, 400, 330, 3.5],     # just large, one full copy fits: full_finetune
    [50_000, 2, 660, 330, 3.5],     # the full copies fill the budget exactly: full_finetune
    [200, 10, 365, 330, 3.5],       # the adapters fill the budget exactly: lora
    [200, 10, 360, 330, 3.5],       # the adapters alone fit, not with the backbone: feature_extraction
    [1_000, 1, 300, 330, 3.5],      # not even the backbone fits: ValueError
]


def _choose_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    if not hidden:
        return [{"points": [list(p) for p in _POINTS]}]
    points = []
    for _ in range(8):
        model_mb = rng.choice([18, 45, 98, 330, 1200])
        adapter_mb = rng.choice([0.25, 0.5, 0.75, 1.5, 3.5, 12.0])
        n_tasks = rng.choice([1, 2, 5, 20, 100, 1000])
        storage = rng.choice([model_mb * rng.choice([1, 2, 4, 20]), model_mb + adapter_mb * rng.randint(1, 200),
                              model_mb * 0.5, model_mb * rng.randint(1, 50)])
        points.append([rng.choice([rng.randint(20, 9_999), rng.randint(10_000, 2_000_000)]), n_tasks, storage,
                       model_mb, adapter_mb])
    return [{"points": points}]


def _choose_observe(obj: Any, spec: dict) -> dict:
    if obj is None:
        return {"not_attempted": True}
    answers = []
    for point in spec["points"]:
        out, problem = call_learner(obj, *point)
        if problem is not None:
            if problem.get("not_attempted") or "not_callable" in problem:
                if not answers or "not_callable" in problem:
                    return problem
                answers.append({"raised": "NotImplementedError", "error_type": "NotImplementedError"})
                continue
            answers.append(problem)
            continue
        answers.append({"returned": out[:40] if isinstance(out, str) else repr(out)[:60],
                        "type": type(out).__name__[:40]})
    return {"answers": answers}


def _mistakes() -> tuple:
    """The mistakes the judge tests for: a change to :func:`_rule` and its hint."""
    from labkit.strategy import SMALL_DATA

    just_large = ({"large_from": SMALL_DATA + 1},
                  f"{SMALL_DATA:,} labelled images already counts as large data (n_images >= {SMALL_DATA:_})")
    return (*_MISTAKES[:3], just_large, *_MISTAKES[3:])  # in the order the judge tries them


_MISTAKES = (
    ({"full_copies": False}, "full fine-tuning keeps one whole model per task: tasks x model_mb must fit"),
    ({"shared_backbone": False}, "LoRA stores the shared backbone too: model_mb + tasks x adapter_mb must fit"),
    ({"strict": True}, "a budget that exactly holds what an option needs is enough: compare with <=, not <"),
    ({"small": "feature_extraction"}, ("small data does not rule LoRA out: the rule picks 'lora' whenever its "
                                       "storage fits, and feature extraction only when the adapters do not fit")),
    ({"full": False}, "with large data and room for every full copy, full fine-tuning is the first choice"),
)
_RULE_TEXT = ("storage: full fine-tuning = tasks x model_mb, LoRA = model_mb + tasks x adapter_mb, feature extraction "
              "= model_mb; large data (>= 10,000) and every full copy fits -> 'full_finetune', else 'lora' if it fits, "
              "else 'feature_extraction'")


@exercise("06.choose_adaptation", lesson=LESSON, name="choose_adaptation", cases=public_then_hidden(_choose_cases),
          observe=_choose_observe, params=("n_images", "n_tasks", "storage_mb", "model_mb", "adapter_mb"))
def _choose_judge(spec: dict, obs: dict, chk) -> None:
    _usable(chk, obs, "choose_adaptation(...)",
            "def choose_adaptation(n_images, n_tasks, storage_mb, model_mb, adapter_mb):")
    points, answers = spec["points"], obs.get("answers")
    if not isinstance(answers, list) or len(answers) != len(points):
        chk.fail("the check got no usable observation", None)
    no_error, problems, vocabulary_ok = [], [], True
    for point, got in zip(points, answers):
        shown = f"choose_adaptation({point[0]:_}, {point[1]}, {point[2]:g}, {point[3]:g}, {point[4]:g})"
        want = _rule(point)
        if not isinstance(got, dict):
            chk.fail("the check got a malformed observation", None)
        if want is None:
            if got.get("error_type") != "ValueError":
                what = (f"raised {str(got['raised'])[:80]}" if "raised" in got
                        else f"returned {str(got.get('returned'))[:40]}")
                no_error.append((f"{shown} {what}, but not even the backbone ({point[3]:g} MB) fits in {point[2]:g} MB",
                                 "when nothing fits, raise ValueError (with a message saying so)"))
            continue
        if "raised" in got:
            fail_raised(chk, shown, got)
        returned = got.get("returned")
        if got.get("type") != "str" or returned not in _CHOICES:
            vocabulary_ok = False
            problems.append((f"{shown} returned {str(returned)[:40]}",
                             f"return one of {', '.join(map(repr, _CHOICES))}"))
        elif returned != want:
            problems.append((f"{shown} returned {returned!r}", None))
    if problems and vocabulary_ok:
        given = [a.get("returned") for a in answers]
        for change, hint in _mistakes():
            if all(_rule(p) is None or g == _rule(p, **change) for p, g in zip(points, given)):
                chk.fail_many([(message, hint) for message, _ in problems[:4]])
        problems = [(message, _RULE_TEXT if i == 0 else None) for i, (message, _) in enumerate(problems)]
    if problems or no_error:
        chk.fail_many((problems + no_error)[:4])
    if vocabulary_ok:
        chk.ok("one of 'feature_extraction', 'lora', 'full_finetune' for every project; ValueError when nothing fits")
    chk.ok("storage per option counted right, data size decides full fine-tuning")
