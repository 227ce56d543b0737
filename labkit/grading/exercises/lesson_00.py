"""Lesson 00's exercises (pretrained models): 00.most_accurate_under, 00.head_info, 00.make_preprocessing.

Declared with ``@exercise`` (the protocol of docs/EXERCISES.md). Observe runs in the learner's
kernel and imports only torch, torchvision, NumPy and PIL (lazily); the judges run in the
trusted process and take head locations from :mod:`labkit.heads`. A function that returns None
is treated as the stub (``call_learner(..., none_is_stub=True)``).

Example:
    >>> from labkit.grading.exercises import exercises_for
    >>> [e.name for e in exercises_for(LESSON)]
    ['most_accurate_under', 'head_info', 'make_preprocessing']
"""
from __future__ import annotations

import math
import random
from typing import Any

from .protocol import call_learner, exercise

__all__ = ["LESSON"]

LESSON = "00_pretrained_models"
_MAX_TEXT = 200


# --------------------------------------------------------------------------- observation helpers
def _text(value: Any) -> str:
    try:
        text = " ".join(str(value).split())
    except Exception:  # a learner object with a broken __str__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _describe(value: Any, depth: int = 0) -> dict:
    """A JSON-safe description of a returned value (type, and the value when it is small and plain)."""
    kind = type(value).__name__
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, float):
        return {"type": "float", "value": value if math.isfinite(value) else str(value)}
    if isinstance(value, str):
        return {"type": "str", "value": value[:_MAX_TEXT]}
    if isinstance(value, (tuple, list)) and depth == 0:
        return {"type": kind, "items": [_describe(v, 1) for v in list(value)[:4]], "len": len(value)}
    if isinstance(value, dict):
        out: dict = {"type": "dict", "keys": [str(k)[:40] for k in list(value)[:20]]}
        if isinstance(value.get("weights"), str):
            out["weights"] = value["weights"][:_MAX_TEXT]
        return out
    try:
        import torch

        if isinstance(value, torch.Tensor):
            out = {"type": "Tensor", "shape": list(value.shape)}
            if value.numel() == 1:
                out["value"] = float(value.item())
            return out
        if isinstance(value, torch.nn.Module):
            return {"type": "Module", "class": kind}
    except Exception:  # a returned object whose methods raise: describe it by type only
        pass
    return {"type": kind, "text": _text(value)}


def _raised_fail(chk: Any, shown: str, observation: dict) -> None:
    """Fail for the generic problems an observation can report (errors, wrong object kinds)."""
    if observation.get("not_callable"):
        chk.fail(f"the answer is a {observation['not_callable']}, not a function",
                 "define it with `def ...(...):` and run that cell")
    if observation.get("not_attempted"):
        chk.fail(f"{shown} {observation.get('why', 'returned None')}",
                 "remove the leftover stub and `return` your result on every path")
    if "raised" in observation:
        chk.fail(f"{shown} raised {observation['raised']}",
                 "call it yourself on the same input in a new cell to see the full traceback")


# --------------------------------------------------------------------------- 00.most_accurate_under
_BUDGET_COLUMNS = ("gflops", "file_mb", "params_m", "ms_per_image")


def _torchvision_rows() -> list[dict]:
    """The metadata table (same keys as labkit.zoo.weights_table, rebuilt here from torchvision)."""
    import torchvision
    from torchvision.models import get_model_weights, list_models

    rows = []
    for name in sorted(list_models(module=torchvision.models)):
        enum = get_model_weights(name)
        for w in enum:
            m = w.meta.get("_metrics", {}).get("ImageNet-1K")
            if m is None or not math.isfinite(float(m.get("acc@1", math.nan))):
                continue  # weights without an accuracy (VGG16's feature-extraction weights)
            rows.append({"weights": str(w), "builder": name, "default": w == enum.DEFAULT,
                         "acc@1": float(m["acc@1"]), "acc@5": float(m["acc@5"]),
                         "params_m": w.meta["num_params"] / 1e6, "gflops": float(w.meta["_ops"]),
                         "file_mb": float(w.meta["_file_size"])})
    return rows


def _synthetic_rows(seed: int, n: int) -> list[dict]:
    """A made-up table with a measured-latency column, the same for a given seed in every process."""
    r = random.Random(seed)
    accs = r.sample(range(60000, 90000), n)
    rows = []
    for i, acc in enumerate(accs):
        gflops = round(10 ** r.uniform(-1.3, 1.8), 3)
        rows.append({"weights": f"Net{i}_Weights.V{1 + i % 2}", "builder": f"net{i}", "default": True,
                     "acc@1": acc / 1000, "acc@5": round(min(99.9, acc / 1000 + r.uniform(5, 20)), 3),
                     "params_m": round(r.uniform(1, 150), 2), "gflops": gflops,
                     "file_mb": round(r.uniform(4, 600), 2), "ms_per_image": round(r.uniform(3, 900), 1)})
    return rows


def _rows_for(spec: dict) -> list[dict]:
    table = spec.get("table")
    if table == "torchvision":
        return _torchvision_rows()
    return _synthetic_rows(int(table["seed"]), int(table["n"]))


def _boundary_case(seed: int, n: int, column: str) -> dict:
    """A made-up table (from ``seed`` on) and a budget equal to one row's value, where "<", "<=",
    "no budget" and "ranked by acc@5" each give a different answer than the right one."""
    for s in range(seed, seed + 1000):
        rows = _synthetic_rows(s, n)
        best_all = max(rows, key=lambda r: r["acc@1"])
        for row in sorted(rows, key=lambda r: r[column]):
            budget = row[column]
            fits = [r for r in rows if r[column] <= budget]
            strict = [r for r in rows if r[column] < budget]
            best = max(fits, key=lambda r: r["acc@1"])
            if (best is row and strict and best is not best_all
                    and max(fits, key=lambda r: r["acc@5"]) is not best):
                return {"table": {"seed": s, "n": n}, "column": column, "budget": budget}
    raise RuntimeError(f"no boundary case found for seed {seed}")  # pragma: no cover - never seen


def _cases_most_accurate(*, hidden: bool, rng: random.Random) -> list[dict]:
    specs = [
        {"table": "torchvision", "column": "gflops", "budget": 5.0},
        {"table": "torchvision", "column": "file_mb", "budget": 50.0},
        _boundary_case(11, 12, "ms_per_image"),
        {"table": "torchvision", "column": "params_m", "budget": 30.0},
        {"table": "torchvision", "column": "gflops", "budget": 0.01},  # nothing fits: ValueError
    ]
    for spec in specs:
        spec["hidden"] = False
    if hidden:
        for column in ("gflops", "file_mb"):
            lo, hi = (0.1, 40.0) if column == "gflops" else (5.0, 400.0)
            specs.append({"table": "torchvision", "column": column,
                          "budget": round(10 ** rng.uniform(math.log10(lo), math.log10(hi)), 3), "hidden": True})
        case = _boundary_case(rng.randrange(1000, 10**6), rng.randrange(6, 20), rng.choice(_BUDGET_COLUMNS))
        specs.append({**case, "hidden": True})
    return specs


def _observe_most_accurate(fn: Any, spec: dict) -> dict:
    rows = _rows_for(spec)
    value, problem = call_learner(fn, rows, spec["column"], spec["budget"], none_is_stub=True)
    if problem is not None:
        return problem
    return {"returned": _describe(value)}


def _shown_most_accurate(spec: dict) -> str:
    table = "<the torchvision table>" if spec.get("table") == "torchvision" else "<a made-up table>"
    return f"most_accurate_under({table}, {spec.get('column')!r}, {spec.get('budget')!r})"


def _judge_nothing_fits(shown: str, column: str, budget: float, observation: dict, chk: Any) -> None:
    """No model fits the budget: the only right answer is a ValueError."""
    if observation.get("error_type") == "ValueError":
        chk.ok("raises ValueError when no model fits the budget")
        return
    if observation.get("not_attempted"):
        chk.fail(f"{shown} {observation.get('why', 'returned None')} when no model fits the budget",
                 "when nothing fits, raise ValueError (with a message saying so) instead of returning None")
    if "raised" in observation:
        chk.fail(f"{shown} raised {observation['raised']} when no model fits; expected ValueError",
                 "check for an empty list of candidates first and `raise ValueError(...)`")
    returned = observation.get("returned")
    got = returned.get("value") if isinstance(returned, dict) else None
    chk.fail(f"{shown} returned {got!r}, but no model has {column} <= {budget:g}",
             "when nothing fits, raise ValueError (with a message saying so) instead of returning a model")


@exercise("00.most_accurate_under", lesson=LESSON, name="most_accurate_under", cases=_cases_most_accurate,
          observe=_observe_most_accurate, params=("rows", "column", "budget"))
def _judge_most_accurate(spec: dict, observation: dict, chk: Any) -> None:
    rows = _rows_for(spec)
    column, budget = spec["column"], float(spec["budget"])
    shown = _shown_most_accurate(spec)
    fits = [r for r in rows if r[column] <= budget]
    if not isinstance(observation, dict):
        chk.fail(f"{shown}: the check got no usable observation", "make the function return a string")
    if not fits:
        _judge_nothing_fits(shown, column, budget, observation, chk)
        return
    _raised_fail(chk, shown, observation)
    returned = observation.get("returned")
    if not isinstance(returned, dict):
        chk.fail(f"{shown}: the check got a malformed observation", "return the weights name as a string")
    if returned.get("type") == "dict":
        chk.fail(f"{shown} returned a whole row (a dict)", "return the row's weights name, row['weights'], a string")
    if returned.get("type") != "str" or not isinstance(returned.get("value"), str):
        chk.fail(f"{shown} returned a {returned.get('type')}, not a string",
                 "return the weights name, e.g. 'ResNet50_Weights.IMAGENET1K_V2'")
    got = returned["value"]
    top = max(r["acc@1"] for r in fits)
    expected = {r["weights"] for r in fits if r["acc@1"] == top}
    if got in expected:
        chk.ok(f"picks the most accurate weights with {column} at most the budget")
        return
    by_name = {r["weights"]: r for r in rows}
    builders = {r["builder"] for r in fits if r["acc@1"] == top}
    if got not in by_name:
        if got in builders:
            chk.fail(f"{shown} returned the builder name {got!r}",
                     "return the weights name (row['weights']), which names the builder and the checkpoint")
        chk.fail(f"{shown} returned {got!r}, which is not a weights name in the table",
                 "return the 'weights' value of one of the rows you were given")
    row = by_name[got]
    best_all = max(r["acc@1"] for r in rows)
    strict = [r for r in rows if r[column] < budget]
    if row[column] > budget and row["acc@1"] == best_all:
        chk.fail(f"{shown} returned {got!r} with {column} = {row[column]:g}, over the budget",
                 "keep only the rows whose value in that column is at most the budget, then pick the most accurate")
    if row[column] > budget:
        chk.fail(f"{shown} returned {got!r} with {column} = {row[column]:g}, over the budget",
                 "filter on the column you were given: row[column] <= budget")
    if strict and row["acc@1"] == max(r["acc@1"] for r in strict):
        chk.fail(f"{shown} returned {got!r}, but a more accurate model sits exactly at the budget",
                 "'at most the budget' includes a model exactly at it: compare with <=, not <")
    if row["acc@5"] == max(r["acc@5"] for r in fits):
        chk.fail(f"{shown} returned {got!r}, the best by acc@5", "rank the models that fit by 'acc@1'")
    if row[column] in (min(r[column] for r in fits), max(r[column] for r in fits)):
        chk.fail(f"{shown} returned {got!r}, the cheapest or costliest model that fits, not the most accurate",
                 "among the rows that fit, pick the one with the highest 'acc@1'")
    chk.fail(f"{shown} returned {got!r} ({row['acc@1']:g}% acc@1); a model that fits is more accurate",
             "among the rows that fit, pick the one with the highest 'acc@1'")


# --------------------------------------------------------------------------- 00.head_info
_HEAD_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "efficientnet_b0", "efficientnet_b1",
               "efficientnet_b3", "efficientnet_v2_s", "vit_b_16", "vit_b_32")


def _cases_head_info(*, hidden: bool, rng: random.Random) -> list[dict]:
    specs = [{"arch": a, "num_classes": 1000, "hidden": False}
             for a in ("resnet18", "efficientnet_b0", "vit_b_16", "resnet50")]
    if hidden:
        for family in ("resnet", "efficientnet", "vit_"):
            arch = rng.choice([a for a in _HEAD_ARCHS if a.startswith(family)])
            specs.append({"arch": arch, "num_classes": rng.randrange(2, 200), "hidden": True})
    return specs


def _observe_head_info(fn: Any, spec: dict) -> dict:
    import torch
    import torchvision

    with torch.device("meta"):  # built without initialising (fast), then given real, uninitialised CPU memory
        model = torchvision.models.get_model(spec["arch"], weights=None, num_classes=int(spec["num_classes"]))
    model = model.to_empty(device="cpu").eval()
    value, problem = call_learner(fn, model, none_is_stub=True)
    if problem is not None:
        return problem
    return {"returned": _describe(value)}


@exercise("00.head_info", lesson=LESSON, name="head_info", cases=_cases_head_info, observe=_observe_head_info,
          params=("model",))
def _judge_head_info(spec: dict, observation: dict, chk: Any) -> None:
    import torch
    import torchvision

    from labkit.heads import get_head_name

    arch, n = spec["arch"], int(spec["num_classes"])
    shown = f"head_info(<fresh {arch}, {n} classes>)"
    if not isinstance(observation, dict):
        chk.fail(f"{shown}: the check got no usable observation", "return a (name, feature_size) tuple")
    _raised_fail(chk, shown, observation)
    with torch.device("meta"):  # shapes only, no memory, no time
        model = torchvision.models.get_model(arch, weights=None, num_classes=n)
    path = get_head_name(model)
    head = model.get_submodule(path)
    features = head.in_features
    parent = path.rpartition(".")[0]
    returned = observation.get("returned")
    if not isinstance(returned, dict):
        chk.fail(f"{shown}: the check got a malformed observation", "return a (name, feature_size) tuple")
    items = returned.get("items")
    if returned.get("type") not in ("tuple", "list") or not isinstance(items, list) or len(items) != 2 \
            or returned.get("len") != 2:
        chk.fail(f"{shown} returned a {returned.get('type')} (length {returned.get('len', '-')}); expected a pair",
                 "return two things: `return name, feature_size`")
    first, second = (it if isinstance(it, dict) else {} for it in items)
    if first.get("type") in ("int", "float") and second.get("type") == "str":
        chk.fail(f"{shown} returned ({first.get('value')!r}, {second.get('value')!r}): the order is swapped",
                 "return the name first, then the feature size: `return name, feature_size`")
    if first.get("type") == "Module":
        chk.fail(f"{shown} returned the head module itself ({first.get('class')}) instead of its name",
                 "return the head's dotted name as a string, as named_modules() spells it (e.g. 'fc')")
    name = first.get("value") if first.get("type") == "str" else None
    if name is None:
        chk.fail(f"{shown}: the first item is a {first.get('type')}, not a string",
                 "the first item is the head's dotted name, e.g. 'fc'")
    if name != path:
        if name == parent:
            chk.fail(f"{shown} named {name!r}, the container; the head is the Linear inside it",
                     f"name the nn.Linear itself: for this family that is {parent}.<index or key> "
                     "(see named_modules())")
        if name in ("fc", "classifier.1", "heads.head", "classifier", "heads", "head"):
            chk.fail(f"{shown} named {name!r}, which is another family's head",
                     "find the head on the model you were given (get_head, or the last nn.Linear in named_modules()), "
                     "don't assume one name for every family")
        chk.fail(f"{shown} named {name!r}, which is not the layer that produces the class scores",
                 "the head is the final nn.Linear: find it with get_head or named_modules()")
    chk.ok("names the head of each family (fc, classifier.1, heads.head)")
    size = second.get("value") if second.get("type") == "int" else None
    if second.get("type") == "Tensor" or second.get("type") == "float":
        chk.fail(f"{shown}: the feature size is a {second.get('type')}, not an int",
                 "return a plain int, e.g. head.in_features")
    if size is None:
        chk.fail(f"{shown}: the second item is a {second.get('type')}, not an int",
                 "the second item is the head's in_features")
    if size != features:
        if size == n:
            chk.fail(f"{shown} gave feature size {size}: that is the number of classes (out_features)",
                     "the feature size is what enters the head: its in_features")
        chk.fail(f"{shown} gave feature size {size}; expected the size of the vector entering the head",
                 "read in_features from the head layer itself")
    chk.ok("gives the feature size entering the head (in_features)")


# --------------------------------------------------------------------------- 00.make_preprocessing
# One per family and per rule the exercise states: a 232 resize, bicubic, a 300 crop, a 384 crop.
_PRE_PUBLIC = ("ResNet50_Weights.IMAGENET1K_V2", "EfficientNet_B0_Weights.IMAGENET1K_V1",
               "EfficientNet_B3_Weights.IMAGENET1K_V1", "ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1")
_N_SAMPLES = 1500
_TOLERANCE = 0.03  # mean |difference| on normalized values; the wrong interpolation gives ~0.15


def _weights(name: str):
    import torchvision

    if not isinstance(name, str) or name.count(".") != 1:
        raise ValueError(f"bad weights name {name!r}")
    enum_name, member = name.split(".")
    return torchvision.models.get_weight(f"{enum_name}.{member}")


def _image(spec: dict):
    import numpy as np
    from PIL import Image

    h, w = (int(v) for v in spec["size"])
    return Image.fromarray(np.random.RandomState(int(spec["seed"])).randint(0, 256, (h, w, 3), dtype=np.uint8))


def _positions(shape: list[int], seed: int) -> list[tuple[int, int, int]]:
    r = random.Random(seed)
    c, h, w = shape
    return [(r.randrange(c), r.randrange(h), r.randrange(w)) for _ in range(_N_SAMPLES)]


def _cases_preprocessing(*, hidden: bool, rng: random.Random) -> list[dict]:
    sizes = ([300, 420], [420, 300], [360, 360], [400, 450])
    specs = [{"weights": w, "seed": 100 + i, "size": s, "hidden": False} for i,
             (w, s) in enumerate(zip(_PRE_PUBLIC, sizes))]
    if hidden:
        from torchvision.models import get_model_weights

        pool = [str(w) for name in ("resnet34", "resnet101", "efficientnet_b1", "efficientnet_b2", "efficientnet_b4",
                                    "efficientnet_v2_s", "vit_b_32", "vit_l_16")
                for w in get_model_weights(name)]
        for _ in range(2):
            specs.append({"weights": rng.choice(pool), "seed": rng.randrange(10**6),
                          "size": [rng.randrange(260, 640), rng.randrange(260, 640)], "hidden": True})
    return specs


def _observe_preprocessing(fn: Any, spec: dict) -> dict:
    import torch

    weights = _weights(spec["weights"])
    transform, problem = call_learner(fn, weights, none_is_stub=True)
    if problem is not None:
        return problem
    if not callable(transform):
        return {"returned": _describe(transform)}
    out, problem = call_learner(transform, _image(spec), none_is_stub=True)
    if problem is not None:
        problem["stage"] = "transform"
        return problem
    if not isinstance(out, torch.Tensor):
        return {"returned": {"type": "callable"}, "output": _describe(out)}
    out = out.detach().cpu()
    obs: dict = {"returned": {"type": "callable"},
                 "output": {"type": "Tensor", "shape": list(out.shape), "dtype": str(out.dtype).replace("torch.", "")}}
    if out.dim() == 3 and out.shape[0] == 3 and out.is_floating_point():
        flat = out.float()
        obs["output"]["samples"] = [float(flat[c, y, x]) for c, y, x in _positions(list(out.shape), int(spec["seed"]))]
        obs["output"]["mean"] = float(flat.mean())
    return obs


def _reference_variants(weights, image) -> dict:
    """The right output and the outputs of the mistakes the hints name."""
    import torch
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode as IM

    preset = weights.transforms()
    crop, resize = int(preset.crop_size[0]), int(preset.resize_size[0])
    other = IM.BILINEAR if preset.interpolation == IM.BICUBIC else IM.BICUBIC

    def pipe(*, size=resize, interp=preset.interpolation, normalize=True, square=False):
        steps = [T.Resize((size, size) if square else size, interpolation=interp), T.CenterCrop(crop), T.ToTensor()]
        if normalize:
            steps.append(T.Normalize(preset.mean, preset.std))
        return T.Compose(steps)(image)

    with torch.no_grad():
        return {
            "right": preset(image),
            "interpolation": pipe(interp=other),
            "no_normalize": pipe(normalize=False),
            "resize_to_crop": pipe(size=crop),
            "squash": pipe(size=crop, square=True),
        }


@exercise("00.make_preprocessing", lesson=LESSON, name="make_preprocessing", cases=_cases_preprocessing,
          observe=_observe_preprocessing, params=("weights",))
def _judge_preprocessing(spec: dict, observation: dict, chk: Any) -> None:
    import torch

    name = spec["weights"]
    shown = f"make_preprocessing({name})"
    if not isinstance(observation, dict):
        chk.fail(f"{shown}: the check got no usable observation", "return a transform (a callable)")
    if observation.get("stage") == "transform":
        _raised_fail(chk, f"the transform from {shown}, applied to a PIL image,", observation)
    _raised_fail(chk, shown, observation)
    returned = observation.get("returned")
    returned = returned if isinstance(returned, dict) else {}
    if returned.get("type") != "callable":
        chk.fail(f"{shown} returned a {returned.get('type')}, not a transform",
                 "return a callable that takes a PIL image, e.g. transforms.Compose([...])")
    out = observation.get("output")
    out = out if isinstance(out, dict) else {}
    if out.get("type") != "Tensor":
        chk.fail(f"the transform from {shown} gave a {out.get('type')} for a PIL image, not a tensor",
                 "end the pipeline with ToTensor() (or PILToTensor + ToDtype(float32, scale=True)) and Normalize")
    weights = _weights(name)
    variants = _reference_variants(weights, _image(spec))
    right = variants["right"]
    shape = out.get("shape")
    if shape != list(right.shape):
        crop = int(right.shape[-1])
        if isinstance(shape, list) and len(shape) == 3 and shape[-2:] != [crop, crop]:
            chk.fail(f"the transform from {shown} gave shape {shape}; these weights expect {list(right.shape)}",
                     "read crop_size (and resize_size) from weights.transforms(): not every checkpoint uses 224")
        chk.fail(f"the transform from {shown} gave shape {shape}; expected {list(right.shape)} "
                 "(channels, height, width)",
                 "return one image as a 3 x crop x crop float tensor; no batch dimension")
    if out.get("dtype") not in ("float32", "float64", "float16", "bfloat16"):
        chk.fail(f"the transform from {shown} gave dtype {out.get('dtype')}",
                 "convert to floats in [0, 1] (ToTensor) before Normalize")
    samples = out.get("samples")
    numbers = isinstance(samples, list) and all(isinstance(v, (int, float)) for v in samples)
    if not numbers or len(samples) != _N_SAMPLES:
        chk.fail(f"{shown}: the check got a malformed observation", "return a float tensor")
    positions = _positions(list(right.shape), int(spec["seed"]))

    def distance(t: torch.Tensor) -> float:
        total = 0.0
        for v, (c, y, x) in zip(samples, positions):
            d = abs(float(v) - float(t[c, y, x]))
            total += d if math.isfinite(d) else 1e6
        return total / len(samples)

    d_right = distance(right)
    if d_right <= _TOLERANCE:
        chk.ok("matches weights.transforms() (resize, crop, interpolation, mean and std)")
        return
    nearest = min((k for k in variants if k != "right"), key=lambda k: distance(variants[k]))
    preset = weights.transforms()
    hints = {
        "interpolation": f"these weights were trained with {preset.interpolation.value} resizing: pass "
                         "interpolation=weights.transforms().interpolation to Resize",
        "no_normalize": "normalize with the weights' mean and std after converting to a tensor",
        "resize_to_crop": f"resize the shorter side to resize_size ({int(preset.resize_size[0])}), then centre-crop "
                          f"crop_size ({int(preset.crop_size[0])})",
        "squash": "Resize(size) with one int keeps the aspect ratio; Resize((h, w)) squashes the image: resize the "
                  "shorter "
                  "side to resize_size, then centre-crop",
    }
    if distance(variants[nearest]) < d_right:
        chk.fail(f"the transform from {shown} differs from weights.transforms() (mean |difference| {d_right:.3f})",
                 hints[nearest])
    chk.fail(f"the transform from {shown} differs from weights.transforms() (mean |difference| {d_right:.3f})",
             "compare your steps with print(weights.transforms()): resize_size, crop_size, interpolation, mean, std")
