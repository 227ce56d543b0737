"""The seeded models a case spec of lessons 01-03 describes, built the same in every process.

A spec such as ``{"arch": "resnet18", "seed": 101, "setup": {"frozen": True, "head": 10}}``
names a torchvision builder (``weights=None``) or one of the small models below, its seed,
and what to freeze or replace. The observe side hands the learner a fresh copy
(:func:`fresh_model`); the judge side computes trusted facts once per process (:func:`facts`).

Example:
    >>> fresh_model({"arch": "bn_first", "seed": 403})[0]
    BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
"""
from __future__ import annotations

import copy
import json
from collections import OrderedDict
from typing import Any, Callable

__all__ = ["TORCHVISION", "label", "build_model", "fresh_model", "pristine", "facts", "head_path", "set_module",
           "param_names"]

_LABELS = {
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "mobilenet_v3_small": "MobileNetV3-Small",
    "mobilenet_v2": "MobileNetV2",
    "efficientnet_b0": "EfficientNet-B0",
    "shufflenet_v2_x0_5": "ShuffleNetV2-x0.5",
    "mnasnet0_5": "MNASNet-0.5",
    "regnet_x_400mf": "RegNetX-400MF",
    "bn_first": "Sequential(BatchNorm2d, Conv2d, ...) CNN",
    "nested_conv1": "CNN whose first conv sits inside a `stem` block, before a layer named conv1",
    "shared": "model that uses one Linear layer twice",
    "small_cnn": "small CNN with BatchNorm, its conv1/bn1 frozen",
    "random_cnn": "small CNN",
    "random_mlp": "small model",
}
TORCHVISION = ("resnet18", "resnet34", "resnet50", "shufflenet_v2_x0_5", "regnet_x_400mf", "mobilenet_v3_small",
               "mobilenet_v2", "efficientnet_b0", "mnasnet0_5")
_PRISTINE: "OrderedDict[str, Any]" = OrderedDict()
_FACTS: "OrderedDict[str, dict]" = OrderedDict()


def label(spec: dict) -> str:
    """How feedback names the spec's model, e.g. "ResNet-18"."""
    return _LABELS.get(spec.get("arch"), str(spec.get("arch")))


def head_path(model) -> str:
    """The dotted name of the model's head (``labkit.heads.get_head_name``), e.g. "fc" or "classifier.3"."""
    from labkit.heads import get_head_name

    return get_head_name(model)


def _custom_model(spec: dict):
    """The hand-built models of the cases (not torchvision builders)."""
    from torch import nn

    arch = spec["arch"]
    if arch == "bn_first":
        return nn.Sequential(
            nn.BatchNorm2d(3), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
        )
    if arch == "nested_conv1":
        return nn.Sequential(OrderedDict(
            stem=nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU()),
            conv1=nn.Conv2d(8, 16, 3),
            pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            head=nn.Linear(16, 2),
        ))
    if arch == "shared":
        shared = nn.Linear(8, 8)
        model = nn.Sequential(nn.Linear(4, 8), shared, nn.ReLU(), shared, nn.Linear(8, 3))
        model[0].requires_grad_(False)
        return model
    if arch == "small_cnn":
        model = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 8, 3), bn1=nn.BatchNorm2d(8), relu=nn.ReLU(),
            layer1=nn.Sequential(nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)),
            pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, 5),
        ))
        model.conv1.requires_grad_(False)
        model.bn1.requires_grad_(False)
        return model
    if arch == "random_cnn":
        return _random_cnn(spec)
    if arch == "random_mlp":
        return _random_mlp(spec)
    raise ValueError(f"unknown model {arch!r} in a case spec")


def _random_cnn(spec: dict):
    """A small CNN; ``spec["layout"]`` is ``[[block name, [[kind, ...], ...]], ...]``."""
    from torch import nn

    blocks, channels = OrderedDict(), 3
    for name, layers in spec["layout"]:
        mods = []
        for layer in layers:
            if layer[0] == "bn":
                mods.append(nn.BatchNorm2d(channels))
            elif layer[0] == "relu":
                mods.append(nn.ReLU())
            elif layer[0] == "conv":
                width, size = int(layer[1]), int(layer[2])
                mods.append(nn.Conv2d(channels, width, size, padding=size // 2, bias=bool(layer[3])))
                channels = int(layer[1])
        blocks[name] = nn.Sequential(*mods) if len(mods) != 1 else mods[0]
    blocks["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    blocks["fc"] = nn.Linear(channels, 2)
    return nn.Sequential(blocks)


def _random_mlp(spec: dict):
    """A small MLP: ``widths``, ``share`` (a layer used twice, or None), ``frozen`` layers, ``bn``."""
    from torch import nn

    widths = [int(w) for w in spec["widths"]]
    layers: list = []
    linears = [nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    for i, lin in enumerate(linears):
        layers.append(lin)
        if spec.get("bn"):
            layers.append(nn.BatchNorm1d(widths[i + 1]))
        layers.append(nn.ReLU())
        if spec.get("share") == i and widths[i] == widths[i + 1]:
            layers.append(lin)
    model = nn.Sequential(*layers)
    for i in spec.get("frozen", []):
        linears[int(i)].requires_grad_(False)
    return model


def build_model(spec: dict):
    """The model a spec describes, built from scratch under its seed."""
    import torch

    arch = spec["arch"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec.get("seed", 0)))
        if arch in TORCHVISION:
            import torchvision

            model = getattr(torchvision.models, arch)(weights=None)
        else:
            model = _custom_model(spec)
        setup = spec.get("setup") or {}
        if setup.get("frozen"):
            for p in model.parameters():
                p.requires_grad_(False)
        if setup.get("head"):
            path = head_path(model)
            old = model.get_submodule(path)
            set_module(model, path, torch.nn.Linear(old.in_features, int(setup["head"])))
        for prefix in setup.get("unfrozen", []):
            names = dict(model.named_parameters())
            if prefix in names:
                names[prefix].requires_grad_(True)
            else:
                model.get_submodule(prefix).requires_grad_(True)
    return model


def _spec_key(spec: dict) -> str:
    keys = ("arch", "seed", "setup", "layout", "widths", "share", "frozen", "bn")
    return json.dumps({k: spec[k] for k in keys if k in spec}, sort_keys=True)


def pristine(spec: dict):
    """The spec's model, built once per process and never handed to learner code."""
    key = _spec_key(spec)
    if key not in _PRISTINE:
        _PRISTINE[key] = build_model(spec)
        while len(_PRISTINE) > 12:
            _PRISTINE.popitem(last=False)
    _PRISTINE.move_to_end(key)
    return _PRISTINE[key]


def fresh_model(spec: dict):
    """A fresh copy of the spec's model for the learner's code (observe side)."""
    return copy.deepcopy(pristine(spec))


def facts(spec: dict, compute: Callable[[Any, dict], dict]) -> dict:
    """Trusted facts about the spec's model, computed once per process (judge side).

    In the batch grader the judge runs in its own process, so its models were never near
    learner code; in-process (``check``) the pristine build is only ever copied for the learner.
    """
    key = f"{compute.__name__}:{_spec_key(spec)}"
    if key not in _FACTS:
        _FACTS[key] = compute(pristine(spec), spec)
        while len(_FACTS) > 32:
            _FACTS.popitem(last=False)
    _FACTS.move_to_end(key)
    return _FACTS[key]


def set_module(model, path: str, module) -> None:
    """Put ``module`` at the dotted ``path`` of ``model``."""
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, module)


def param_names(model) -> dict[int, str]:
    """``id(parameter) -> name`` for the model's parameters (to name what an optimizer holds)."""
    return {id(p): n for n, p in model.named_parameters()}
