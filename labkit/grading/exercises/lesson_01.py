"""Lesson 01's exercises (feature extraction): freeze_and_swap, make_head_optimizer, count_parameters, cam_weights.

Declared with ``@exercise`` (the protocol of docs/EXERCISES.md). The cases name seeded models
(:mod:`.models`); the judges read the head's location from :mod:`labkit.heads` (trusted process).

Example:
    >>> from labkit.grading.exercises import exercises_for
    >>> [e.name for e in exercises_for(LESSON)]
    ['freeze_and_swap', 'make_head_optimizer', 'count_parameters', 'cam_weights']
"""
from __future__ import annotations

import math
import numbers
import random

from . import models
from .protocol import (
    Checker,
    CheckTimeout,
    call_learner,
    clip,
    exception_text,
    exercise,
    fail_if_raised,
    kind_of,
    lazy_torch,
    plural,
    short,
    str_list,
)

__all__ = ["LESSON"]

LESSON = "01_feature_extraction"
# The torchvision classifiers with a final Linear that the hidden cases of 01.freeze_and_swap draw from.
SWAP_FAMILY = ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5", "mnasnet0_5", "mobilenet_v2",
               "regnet_x_400mf")


def _swap_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 101, "num_classes": 10},
        {"arch": "mobilenet_v3_small", "seed": 102, "num_classes": 5},
    ]
    if hidden:
        for arch in rng.sample(SWAP_FAMILY, 2):
            n = rng.choice([k for k in range(2, 200) if k != 1000])
            cases.append({"arch": arch, "seed": rng.randrange(2**31), "num_classes": n, "hidden": True})
    return cases


def _swap_observe(fn, spec: dict) -> dict:
    torch = lazy_torch()
    model = models.fresh_model(spec)
    before = {id(p): (n, p) for n, p in model.named_parameters()}  # keeps the tensors alive
    out, problem = call_learner(fn, model, int(spec["num_classes"]))
    if problem is not None:
        return problem
    obs: dict = {"returned": "same" if out is model else ("none" if out is None else "other"),
                 "returned_type": kind_of(out)}
    obs["params"] = [
        {"name": n, "was": before[id(p)][0] if id(p) in before else None, "requires_grad": bool(p.requires_grad),
         "shape": list(p.shape)}
        for n, p in model.named_parameters()
    ]
    first = next(model.parameters(), None)
    try:
        model.eval()
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, 3, 32, 32, generator=g)
            if first is not None:
                x = x.to(first.device, first.dtype if first.is_floating_point() else None)
            y = model(x)
        obs["forward"] = {"shape": list(y.shape)} if isinstance(y, torch.Tensor) else {"type": kind_of(y)}
    except CheckTimeout:
        raise
    except Exception as exc:  # the model no longer runs: what it raised is the observation
        obs["forward"] = {"raised": f"{type(exc).__name__}: {exception_text(exc)}"}
    return obs


@exercise("01.freeze_and_swap", lesson=LESSON, name="freeze_and_swap", cases=_swap_cases, observe=_swap_observe,
          params=("model", "num_classes"))
def _judge_swap(spec: dict, obs: dict, chk: Checker) -> None:
    n = int(spec["num_classes"])
    label = models.label(spec)
    shown = f"freeze_and_swap(<fresh {label}>, {n})"
    fail_if_raised(chk, obs, shown)
    if obs.get("returned") == "none":
        chk.fail(f"{shown} returned None", "change the model in place, then `return model` at the end")
    if obs.get("returned") != "same":
        chk.fail(
            f"{shown} returned a different object ({clip(obs.get('returned_type'), 40)}) than the model it was given",
            "change the model you were given in place (assign a new head to it) and return that same model",
        )
    chk.ok("changes the model in place and returns it")
    facts = models.facts(spec, _swap_widths)
    params = [p for p in str_list(obs.get("params")) if isinstance(p, dict)]
    new = [p for p in params if p.get("was") is None]
    old = [p for p in params if p.get("was") is not None]
    _judge_new_head(spec, obs, chk, facts, new, old)
    chk.ok("the new head fits the backbone and gives num_classes scores")
    _judge_swap_frozen(chk, label, new, old)
    chk.ok("the backbone is frozen and only the new head is trainable")


def _judge_new_head(spec: dict, obs: dict, chk: Checker, facts: dict, new: list[dict], old: list[dict]) -> None:
    """The new layers sit in the head, replace the old one, fit the backbone and give num_classes scores."""
    n, label = int(spec["num_classes"]), models.label(spec)
    head_path, container = facts["head"], facts["container"]
    old_head = [p for p in old if str(p.get("was")).startswith(head_path + ".")]
    if not new:
        chk.fail(
            f"the returned {label} has no new layer: its head was not replaced",
            "replace the head with a freshly built layer for num_classes, e.g. nn.Linear(in_features, num_classes)",
        )
    paths = [str(p.get("name", "")) for p in new]
    places = [q for q in (head_path, container) if q]
    inside = [q for q in places if all(name.startswith(q + ".") for name in paths)]
    if not inside:
        where = sorted({name.rsplit(".", 1)[0] for name in paths if not any(name.startswith(q + ".") for q in places)})
        chk.fail(
            f"new layers sit at `{', '.join(where)[:120]}`, but the head of {label} is `{head_path}`",
            "replace the model's final layer (its head) instead of adding or changing other layers",
        )
    if old_head:
        kept = old_head[0]
        chk.fail(
            f"the old {facts['out']}-way head is still in the model (its `{clip(kept.get('was'), 60)}` now sits at "
            f"`{clip(kept.get('name'), 60)}`)",
            "assign the new layer in place of the old head instead of wrapping or stacking on it",
        )
    place = max(inside, key=len)
    first_weight = next((p for p in new if len(p.get("shape") or []) == 2), None)
    width = facts["widths"][place]
    if first_weight is not None and first_weight["shape"][1] != width:
        chk.fail(
            f"the new head takes {first_weight['shape'][1]} features, but the backbone of {label} gives {width} at "
            f"`{place}`",
            "the new head's in size must match the backbone's feature size: read it from the old head (e.g. "
            "in_features)",
        )
    forward = obs.get("forward") if isinstance(obs.get("forward"), dict) else {}
    if "raised" in forward:
        chk.fail(f"the returned {label} no longer runs on a batch of images: {clip(forward['raised'])}",
                 "call the model on a small batch yourself to see the full traceback")
    shape = forward.get("shape")
    got = shape[-1] if isinstance(shape, list) and len(shape) == 2 else None
    if got != n:
        extra = " (1000 is ImageNet's: the old out size)" if got == 1000 else ""
        chk.fail(f"the new head of {label} gives {clip(got, 20)} scores per image; expected num_classes = {n}{extra}",
                 "the new head's out size must be num_classes")


def _judge_swap_frozen(chk: Checker, label: str, new: list[dict], old: list[dict]) -> None:
    """Every backbone tensor is frozen and every tensor of the new head trainable."""
    old_trainable = [str(p.get("name")) for p in old if p.get("requires_grad") is not False]
    new_frozen = [str(p.get("name")) for p in new if p.get("requires_grad") is not True]
    if not old_trainable and len(new_frozen) == len(new):
        chk.fail(
            f"nothing is trainable in the returned {label}",
            "you froze after swapping: swap the head after freezing (a freshly built layer starts trainable)",
        )
    if old and len(old_trainable) == len(old):
        chk.fail(
            f"all {len(old)} backbone tensors of {label} are still trainable",
            "freeze every parameter first (requires_grad = False), then replace the head",
        )
    if old_trainable:
        chk.fail(
            f"{len(old_trainable)} of {len(old)} backbone tensors are still trainable (e.g. "
            f"{clip(old_trainable[0], 60)})",
            "freeze every parameter of the model, not only some layers",
        )
    if new_frozen:
        chk.fail(f"{plural(len(new_frozen), 'tensor')} of the new head {'is' if len(new_frozen) == 1 else 'are'} "
                 f"frozen ({clip(new_frozen[0], 60)})", "the new head must be trainable: don't freeze after swapping")


def _swap_widths(model, spec: dict) -> dict:
    nn = lazy_torch().nn
    head_path = models.head_path(model)
    container = head_path.rpartition(".")[0] or None  # a Sequential classifier may be replaced whole
    widths = {head_path: model.get_submodule(head_path).in_features}
    if container:
        first_linear = next(m for m in model.get_submodule(container).modules() if isinstance(m, nn.Linear))
        widths[container] = first_linear.in_features
    return {"widths": widths, "out": model.get_submodule(head_path).out_features, "head": head_path,
            "container": container}


def _optim_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 201, "setup": {"frozen": True, "head": 10}, "lr": 0.01},
        {"arch": "resnet18", "seed": 202, "setup": {"frozen": True, "head": 10, "unfrozen": ["layer4"]}, "lr": 0.003},
        {"arch": "mobilenet_v3_small", "seed": 203,
         "setup": {"frozen": True, "head": 4, "unfrozen": ["features.12", "features.1.block.1.fc1.weight"]},
         "lr": 0.05},
    ]
    if hidden:
        for arch in rng.sample(["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet0_5"], 2):
            names = [n for n, _ in models.pristine({"arch": arch, "seed": 0}).named_parameters()]
            unfrozen = sorted(rng.sample(names, rng.randint(1, 6)))
            lr = float(f"{10 ** rng.uniform(-5, 0):.3g}")
            setup = {"frozen": True, "head": rng.randint(2, 50), "unfrozen": unfrozen}
            cases.append({"arch": arch, "seed": rng.randrange(2**31), "setup": setup, "lr": lr, "hidden": True})
    return cases


def _optim_label(spec: dict) -> str:
    extra = [u for u in spec["setup"].get("unfrozen", [])]
    if not extra:
        return f"{models.label(spec)}, new head"
    shown = ", ".join(extra[:2]) + (f" and {len(extra) - 2} more" if len(extra) > 2 else "")
    return f"{models.label(spec)} with {shown} unfrozen, new head"


def _optim_observe(fn, spec: dict) -> dict:
    torch = lazy_torch()
    model = models.fresh_model(spec)
    name_of = models.param_names(model)
    opt, problem = call_learner(fn, model, float(spec["lr"]))
    if problem is not None:
        return problem
    obs: dict = {"type": kind_of(opt), "is_optimizer": isinstance(opt, torch.optim.Optimizer)}
    if obs["is_optimizer"]:
        groups = []
        for g in opt.param_groups:
            lr = g.get("lr")
            groups.append({
                "lr": float(lr) if isinstance(lr, numbers.Real) and not isinstance(lr, bool) else None,
                "lr_repr": short(lr, 40),
                "params": [name_of.get(id(p)) for p in g.get("params", [])],
            })
        obs["groups"] = groups
    return obs


def _optim_facts(model, spec: dict) -> dict:
    return {"trainable": [n for n, p in model.named_parameters() if p.requires_grad],
            "names": [n for n, _ in model.named_parameters()]}


@exercise("01.make_head_optimizer", lesson=LESSON, name="make_head_optimizer", cases=_optim_cases,
          observe=_optim_observe, params=("model", "lr"))
def _judge_optim(spec: dict, obs: dict, chk: Checker) -> None:
    lr = float(spec["lr"])
    shown = f"make_head_optimizer(<{_optim_label(spec)}>, {lr:g})"
    fail_if_raised(chk, obs, shown)
    if obs.get("is_optimizer") is not True:
        chk.fail(f"{shown} returned a {clip(obs.get('type'), 40)}; expected a torch.optim optimizer",
                 "build one, e.g. torch.optim.SGD(params, lr=lr), and return it")
    chk.ok("returns a torch.optim optimizer")
    facts = models.facts(spec, _optim_facts)
    trainable = set(facts["trainable"])
    groups = [g for g in str_list(obs.get("groups")) if isinstance(g, dict)]
    held = [p for g in groups for p in str_list(g.get("params"))]
    foreign = [p for p in held if p is None]
    if foreign:
        chk.fail(
            f"{plural(len(foreign), 'tensor')} in your optimizer {'is' if len(foreign) == 1 else 'are'} not "
            "parameters of the model passed in",
            "build the optimizer from the `model` argument, not from a global model or new tensors",
        )
    frozen = [p for p in held if p not in trainable]
    if frozen:
        chk.fail(f"your optimizer holds {len(frozen)} frozen tensors", "pass only parameters with requires_grad")
    twice = sorted({p for p in held if held.count(p) > 1})
    if twice:
        chk.fail(f"your optimizer holds {clip(twice[0], 60)} more than once", "pass each trainable parameter once")
    missing = [n for n in facts["trainable"] if n not in set(held)]
    if missing:
        chk.fail(
            f"your optimizer is missing {plural(len(missing), 'trainable tensor')} (e.g. {missing[0]})",
            "pass every parameter with requires_grad, not only the head's: other layers may be unfrozen too",
        )
    chk.ok("holds exactly the trainable parameters")
    for i, group in enumerate(groups):
        got = group.get("lr")
        if not isinstance(got, (int, float)) or isinstance(got, bool) or not math.isclose(float(got), lr, rel_tol=1e-9):
            chk.fail(f"param group {i} has lr {clip(group.get('lr_repr'), 40)} for lr={lr:g}",
                     "use the lr argument (not a fixed number) for every group")
    chk.ok("every group uses the lr passed in")


def _count_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 301, "setup": {"frozen": True, "head": 10},
         "shown": "ResNet-18 with a frozen backbone"},
        {"arch": "mobilenet_v3_small", "seed": 302, "shown": "MobileNetV3-Small, all trainable"},
        {"arch": "small_cnn", "seed": 303,
         "shown": "a small CNN with BatchNorm: conv1 and bn1 frozen, layer1 and fc trainable"},
        {"arch": "shared", "seed": 304, "shown": "a model that uses one Linear layer twice, its first layer frozen"},
    ]
    if hidden:
        for _ in range(2):
            width = rng.randint(3, 12)
            depth = rng.randint(3, 5)
            widths = [rng.randint(2, 12)] + [width] * (depth - 1) + [rng.randint(2, 6)]
            share = rng.randint(1, depth - 2)
            frozen = sorted(rng.sample(range(depth), rng.randint(1, depth - 1)))
            cases.append({
                "arch": "random_mlp", "seed": rng.randrange(2**31), "widths": widths, "share": share, "frozen": frozen,
                "bn": rng.random() < 0.5, "hidden": True,
                "shown": f"a {depth}-layer model that uses one layer twice, some layers frozen",
            })
    return cases


def _count_observe(fn, spec: dict) -> dict:
    torch = lazy_torch()
    got, problem = call_learner(fn, models.fresh_model(spec))
    if problem is not None:
        return problem
    obs: dict = {"type": kind_of(got)}
    if isinstance(got, (tuple, list)):
        items = []
        for x in list(got)[:4]:
            item = {"type": kind_of(x), "is_tensor": isinstance(x, torch.Tensor),
                    "integral": isinstance(x, numbers.Integral) and not isinstance(x, bool)}
            try:
                value = x.item() if isinstance(x, torch.Tensor) and x.numel() == 1 else x
                integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
                item["value"] = int(value) if integral else (float(value) if isinstance(value, numbers.Real) else None)
            except Exception:  # a returned object whose methods raise: no value
                item["value"] = None
            if isinstance(item.get("value"), float) and not math.isfinite(item["value"]):
                item["value"] = None
            items.append(item)
        obs["items"] = items
        obs["length"] = len(got)
    return obs


def _count_facts(model, spec: dict) -> dict:
    params = list(model.parameters())
    dup = [p for _, p in model.named_parameters(remove_duplicate=False)]
    linears = [m for m in model.modules() if isinstance(m, lazy_torch().nn.Linear)]
    head = linears[-1] if linears else None
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "tensors": len(params),
        "trainable_tensors": sum(1 for p in params if p.requires_grad),
        "state_dict": sum(v.numel() for v in model.state_dict().values()),
        "buffers": sum(b.numel() for b in model.buffers()),
        "dup_total": sum(p.numel() for p in dup),
        "dup_trainable": sum(p.numel() for p in dup if p.requires_grad),
        "nested": sum(p.numel() for m in model.modules() for p in m.parameters()),
        "weights_only": sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight")),
        "trainable_weights_only": sum(p.numel() for n,
                                      p in model.named_parameters() if n.endswith("weight") and p.requires_grad),
        "head_only": sum(p.numel() for p in head.parameters()) if head is not None else None,
    }


@exercise("01.count_parameters", lesson=LESSON, name="count_parameters", cases=_count_cases, observe=_count_observe,
          params=("model",))
def _judge_count(spec: dict, obs: dict, chk: Checker) -> None:
    shown = f"count_parameters(<{clip(spec.get('shown'), 120)}>)"
    fail_if_raised(chk, obs, shown)
    items = obs.get("items")
    pair = isinstance(items, list) and obs.get("length") == 2 and len(items) == 2
    if not pair or not all(isinstance(i, dict) for i in items):
        chk.fail(f"{shown} returned a {clip(obs.get('type'), 40)}; expected a pair (trainable, total)",
                 "end with `return trainable, total`")
    if any(i.get("is_tensor") for i in items):
        chk.fail(f"{shown} returned tensors; expected Python ints",
                 "convert with int(...) or sum p.numel() values, which are ints")
    if not all(i.get("integral") is True and isinstance(i.get("value"), int) for i in items):
        chk.fail(f"{shown} returned ({clip(items[0].get('type'), 20)}, {clip(items[1].get('type'), 20)}); expected "
                 "two ints", "count elements with p.numel(), which gives ints")
    tr, tot = items[0]["value"], items[1]["value"]
    f = models.facts(spec, _count_facts)
    total, trainable = f["total"], f["trainable"]
    if (tr, tot) == (total, trainable) and total != trainable:
        chk.fail(f"{shown}: the two numbers are swapped", "return (trainable, total) in that order")
    if tot != total:
        _fail_total(shown, tot, f, chk)
    if tr != trainable:
        _fail_trainable(shown, tr, f, chk)
    chk.ok("returns (trainable, total) as ints")
    chk.ok("counts parameter values (numel), trainable ones only when requires_grad")


def _fail_total(shown: str, tot: int, f: dict, chk: Checker) -> None:
    """The total is wrong: name the count it matches (tensors, state_dict, a shared layer twice, ...)."""
    total = f["total"]
    message = f"{shown}: total = {tot:,} is not the number of parameter values in the model ({total:,} is)"
    if tot == f["tensors"]:
        chk.fail(f"{shown}: you counted tensors ({tot}), not parameter values",
                 "add up p.numel() for each parameter instead of counting parameters")
    if tot == f["state_dict"] and f["buffers"] and tot != f["dup_total"]:
        chk.fail(message,
                 f"it counts the {f['buffers']:,} BatchNorm buffer values (running statistics) that state_dict() "
                 "holds: they are not parameters; count model.parameters()")
    if tot == f["dup_total"]:
        chk.fail(message,
                 "it counts a layer that is used twice twice (named_parameters(remove_duplicate=False) or "
                 "state_dict() list it under both names): model.parameters() lists each parameter once")
    if tot == f["nested"]:
        chk.fail(message,
                 "it adds up the parameters of every module and of the modules inside it, so nested layers count "
                 "several times: sum over model.parameters() once")
    if tot == f["weights_only"]:
        chk.fail(message, "it counts only the weights: biases (and BatchNorm's weight and bias) are parameters too")
    chk.fail(message, "sum p.numel() over model.parameters()")


def _fail_trainable(shown: str, tr: int, f: dict, chk: Checker) -> None:
    """The trainable count is wrong: name the count it matches (all, tensors, a shared layer twice, head only)."""
    total, trainable = f["total"], f["trainable"]
    message = f"{shown}: trainable = {tr:,} is not the number of trainable parameter values ({trainable:,} is)"
    if tr == total:
        chk.fail(f"{shown}: you counted every parameter as trainable", "count only parameters with p.requires_grad")
    if tr == f["trainable_tensors"]:
        chk.fail(f"{shown}: you counted trainable tensors ({tr}), not their values",
                 "add up p.numel() for each parameter with requires_grad")
    if tr == f["dup_trainable"]:
        chk.fail(message,
                 "it counts a trainable layer that is used twice twice: model.parameters() lists each parameter "
                 "once")
    if f["head_only"] is not None and tr == f["head_only"]:
        chk.fail(message,
                 "it counts only the head (the last Linear layer), but other layers are trainable too: count "
                 "every parameter with requires_grad")
    if tr == f["trainable_weights_only"]:
        chk.fail(message, "it counts only the trainable weights: biases are parameters too")
    chk.fail(message, "sum p.numel() over the parameters with requires_grad")




# ---------------------------------------------------------------------------------------
# 01.cam_weights: Grad-CAM's channel weights by hand
# ---------------------------------------------------------------------------------------
# The 4-D feature maps the drawn cases hook, per architecture (outputs of stages at 64 px).
CAM_LAYERS = {"resnet18": ("layer2", "layer3", "layer4"), "mobilenet_v3_small": ("features.6", "features.9",
                                                                                  "features.12"),
              "shufflenet_v2_x0_5": ("stage3", "stage4", "conv5"), "mnasnet0_5": ("layers.10", "layers.14")}


def _cam_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 901, "layer": "layer4", "target": 3, "n": 2, "img_seed": 11,
         "shown": "a fresh ResNet-18 (in training mode), 2 images, target 3, layer 'layer4'"},
        {"arch": "resnet18", "seed": 902, "setup": {"frozen": True, "head": 5}, "layer": "layer3", "target": 4, "n": 3,
         "img_seed": 12,
         "shown": "a ResNet-18 with a frozen backbone and a new 5-class head, 3 images, target 4, layer 'layer3'"},
        {"arch": "mobilenet_v3_small", "seed": 903, "layer": "features.9", "target": 10, "n": 1, "img_seed": 13,
         "shown": "a MobileNetV3-Small (with dropout), 1 image, target 10, layer 'features.9'"},
    ]
    if hidden:
        for arch in rng.sample(sorted(CAM_LAYERS), 2):
            head = rng.choice([None, rng.randint(2, 20)])
            spec = {"arch": arch, "seed": rng.randrange(2**31), "layer": rng.choice(CAM_LAYERS[arch]),
                    "target": rng.randrange(head or 1000), "n": rng.randint(1, 3), "img_seed": rng.randrange(2**31),
                    "shown": f"a {models.label({'arch': arch})}", "hidden": True}
            if head:
                spec["setup"] = {"frozen": True, "head": head}
            cases.append(spec)
    return cases


def _cam_images(spec: dict):
    torch = lazy_torch()
    g = torch.Generator().manual_seed(int(spec["img_seed"]))
    return torch.randn(int(spec["n"]), 3, 64, 64, generator=g)


def _cam_observe(fn, spec: dict) -> dict:
    from .protocol import tensor_to_json

    torch = lazy_torch()
    model = models.fresh_model(spec)
    images = _cam_images(spec)
    before = images.clone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # dropout in a model left in training mode draws the same masks as the judge's
        got, problem = call_learner(fn, model, images, int(spec["target"]), str(spec["layer"]))
    if problem is not None:
        return problem
    obs: dict = {"type": kind_of(got), "is_tensor": isinstance(got, torch.Tensor)}
    if obs["is_tensor"]:
        obs["weights"] = tensor_to_json(got.detach().float().cpu())
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    obs["hooks_left"] = hooks
    obs["images_changed"] = not torch.equal(images.detach(), before)
    return obs


def _cam_reference(spec: dict, how: str = "right"):
    """Grad-CAM's channel weights as :func:`labkit.cam.grad_cam` computes them, or as a typical mistake would."""
    import copy

    torch = lazy_torch()
    model = copy.deepcopy(models.pristine(spec))
    if how != "train_mode":
        model.eval()
    target, store = int(spec["target"]), {}
    handle = model.get_submodule(str(spec["layer"])).register_forward_hook(lambda m, a, out: store.update(act=out))
    try:
        with torch.enable_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            x = _cam_images(spec).requires_grad_(True)
            logits = model(x)
            scores = {"softmax": lambda: logits.softmax(1)[:, target].sum(), "all_logits": lambda: logits.sum(),
                      "argmax": lambda: logits.gather(1, logits.argmax(1)[:, None]).sum(),
                      "loss": lambda: torch.nn.functional.cross_entropy(logits, torch.full((len(x),), target))}
            score = scores[how]() if how in scores else logits[:, target].sum()
            grad, = torch.autograd.grad(score, store["act"])
    finally:
        handle.remove()
    act = store["act"].detach()
    reduce = {"sum": lambda: grad.sum((2, 3)), "activations": lambda: act.mean((2, 3)),
              "max": lambda: grad.amax((2, 3)), "times_act": lambda: (grad * act).mean((2, 3))}
    return (reduce[how]() if how in reduce else grad.mean((2, 3))).detach().double()


_CAM_MISTAKES = (
    ("sum", "the gradient is summed over the h x w positions: average it (mean over dims 2 and 3)"),
    ("activations", "these are the feature map's averages, not its gradient's"),
    ("times_act", "the weights are the averaged gradient alone; multiplying by the activations comes later"),
    ("max", "the gradient's maximum over space, not its average"),
    ("softmax", "this is the gradient of the softmax probability: Grad-CAM takes the target's logit (before softmax)"),
    ("loss", "this is the gradient of the cross-entropy loss: Grad-CAM takes the target's logit itself"),
    ("all_logits", "this is the gradient of the sum of every logit: take only the target class's logit"),
    ("argmax", "this explains the predicted class: use the `target` argument"),
    ("train_mode", "the model ran in training mode (BatchNorm used the batch's statistics): call model.eval() first"),
)


def _cam_close(got, want) -> bool:
    scale = float(want.abs().max())
    return tuple(got.shape) == tuple(want.shape) and float((got - want).abs().max()) <= 1e-3 * scale + 1e-12


@exercise("01.cam_weights", lesson=LESSON, name="cam_weights", cases=_cam_cases, observe=_cam_observe,
          params=("model", "images", "target", "layer"))
def _judge_cam(spec: dict, obs: dict, chk: Checker) -> None:
    from .protocol import tensor_from_json

    shown = f"cam_weights(<{clip(spec['shown'], 120)}>)"
    if "does not require grad" in str(obs.get("raised", "")):
        chk.fail(f"{shown} raised {clip(obs['raised'], 160)}",
                 "on a frozen backbone nothing in the graph requires grad: call requires_grad_(True) on a copy of the "
                 "images (images.clone().requires_grad_(True)) before the forward pass")
    fail_if_raised(chk, obs, shown)
    if obs.get("is_tensor") is not True:
        chk.fail(f"{shown} returned a {clip(obs.get('type'), 40)}; expected a tensor of shape (N, C)",
                 "return the averaged gradient, e.g. grad.mean(dim=(2, 3))")
    want = _cam_reference(spec)
    got = tensor_from_json(obs["weights"]).double()
    n, c = want.shape
    if tuple(got.shape) != (n, c):
        hint = "one row per image and one weight per channel: average over h and w only, e.g. grad.mean(dim=(2, 3))"
        if tuple(got.shape) == (c,):
            hint = "you averaged over the batch too: keep one row per image, grad.mean(dim=(2, 3))"
        chk.fail(f"{shown} returned shape {tuple(got.shape)}; expected (N, C) = ({n}, {c})", hint)
    chk.ok("returns one weight per image and channel, shape (N, C)")
    if not _cam_close(got, want):
        for how, why in _CAM_MISTAKES:
            if _cam_close(got, _cam_reference(spec, how)):
                chk.fail(f"{shown}: the weights differ from Grad-CAM's (largest gap "
                         f"{float((got - want).abs().max()):.3g}, weights up to {float(want.abs().max()):.3g}): {why}",
                         "hook the layer's output, take the gradient of logits[:, target].sum() with respect to it "
                         "(model.eval() first), average it over h and w")
        chk.fail(f"{shown}: the weights differ from Grad-CAM's (largest gap {float((got - want).abs().max()):.3g}, "
                 f"weights up to {float(want.abs().max()):.3g})",
                 "hook the layer's output, take the gradient of logits[:, target].sum() with respect to it "
                 "(model.eval() first), average it over h and w")
    chk.ok("equal to Grad-CAM's weights: the target logit's gradient at the layer, averaged over space (eval mode)")
    if obs.get("hooks_left"):
        chk.fail(f"{shown} left {plural(int(obs['hooks_left']), 'hook')} on the model",
                 "keep the handle that register_forward_hook returns and call handle.remove() (in a finally: block)")
    if obs.get("images_changed"):
        chk.fail(f"{shown} changed the images it was given", "work on a copy: images.clone()")
    chk.ok("leaves no hook behind and the images unchanged")
