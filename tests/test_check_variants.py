"""The variant table: many correct and wrong answers per exercise, written as learners would.

Every correct variant must pass the public cases (and hidden cases drawn from a fixed rng: all
variants of the cheap exercises, the first four of those that build models); every
wrong variant must fail the public check with the hint that names its mistake.

Run as a script to count how many wrong variants another copy of the checks package lets through::

    git archive main labkit/grading/exercises | tar -x -C /tmp/old_checks
    python tests/test_check_variants.py /tmp/old_checks/labkit/grading/exercises
"""
from __future__ import annotations

import copy
import itertools
import math
import random
import sys

import numpy as np
import pytest
import torch
from torch import nn

from labkit import get_head, replace_head
from labkit.grading import EXERCISES, run_check
from labkit.grading.exercises import run_judge, run_observe
from labkit.strategy import bn_advice
from labkit.strategy import choose_strategy as reference_strategy

C, W = {}, {}  # exercise id -> [(label, answer)], [(label, answer, text the failed lines must hold)]


def correct(exercise_id: str, label: str):
    def add(fn):
        C.setdefault(exercise_id, []).append((label, fn))
        return fn

    return add


def wrong(exercise_id: str, label: str, expect: str):
    def add(fn):
        W.setdefault(exercise_id, []).append((label, fn, expect))
        return fn

    return add


def _freeze(model):
    for p in model.parameters():
        p.requires_grad = False


def _last_linear(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def _set(model, path, module):
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


# --- 01.freeze_and_swap ----------------------------------------------------------------------
E = "01.freeze_and_swap"


@correct(E, "loop, then replace_head")
def _(model, num_classes):
    for p in model.parameters():
        p.requires_grad = False
    replace_head(model, num_classes)
    return model


@correct(E, "requires_grad_(False) on the model")
def _(model, num_classes):
    model.requires_grad_(False)
    return replace_head(model, num_classes)


@correct(E, "hasattr fc else classifier[-1]")
def _(model, num_classes):
    for p in model.parameters():
        p.requires_grad_(False)
    if hasattr(model, "fc"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


@correct(E, "last Linear found by name")
def _(model, num_classes):
    _freeze(model)
    path, old = _last_linear(model)
    _set(model, path, nn.Linear(old.in_features, num_classes))
    return model


@correct(E, "an MLP head")
def _(model, num_classes):
    _freeze(model)
    path, old = _last_linear(model)
    _set(model, path, nn.Sequential(nn.Linear(old.in_features, 64), nn.ReLU(), nn.Linear(64, num_classes)))
    return model


@correct(E, "Dropout + Linear head")
def _(model, num_classes):
    _freeze(model)
    path, old = _last_linear(model)
    _set(model, path, nn.Sequential(nn.Dropout(0.2), nn.Linear(old.in_features, num_classes)))
    return model


@correct(E, "named_parameters loop, get_head for the size")
def _(model, num_classes):
    for _name, param in model.named_parameters():
        param.requires_grad = False
    path, _old = _last_linear(model)
    _set(model, path, nn.Linear(get_head(model).in_features, num_classes))
    return model


@correct(E, "eval mode too")
def _(model, num_classes):
    model.eval()
    _freeze(model)
    replace_head(model, num_classes)
    return model


@correct(E, "all but the last child frozen, then the head replaced")
def _(model, num_classes):
    for child in list(model.children()):
        for p in child.parameters():
            p.requires_grad = False
    path, old = _last_linear(model)
    _set(model, path, nn.Linear(old.in_features, num_classes, bias=True))
    return model


@correct(E, "getattr(model, 'fc', None)")
def _(model, num_classes):
    _freeze(model)
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        model.fc = nn.Linear(fc.in_features, num_classes)
    else:
        last = len(model.classifier) - 1
        model.classifier[last] = nn.Linear(model.classifier[last].in_features, num_classes)
    return model


@correct(E, "head without bias")
def _(model, num_classes):
    _freeze(model)
    path, old = _last_linear(model)
    _set(model, path, nn.Linear(old.in_features, num_classes, bias=False))
    return model


@wrong(E, "swap, then freeze", "you froze after swapping")
def _(model, num_classes):
    replace_head(model, num_classes)
    _freeze(model)
    return model


@wrong(E, "forgot to freeze", "all 60 backbone tensors of ResNet-18 are still trainable")
def _(model, num_classes):
    return replace_head(model, num_classes)


@wrong(E, "model.requires_grad = False (no effect)", "are still trainable")
def _(model, num_classes):
    model.requires_grad = False
    return replace_head(model, num_classes)


@wrong(E, "== instead of =", "are still trainable")
def _(model, num_classes):
    for p in model.parameters():
        p.requires_grad == False  # noqa: B015, E712 - the wrong answer this variant stands for
    return replace_head(model, num_classes)


@wrong(E, "freezes only the convolutional layers", "backbone tensors are still trainable")
def _(model, num_classes):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.requires_grad_(False)
    return replace_head(model, num_classes)


@wrong(E, "all but the last child frozen, MobileNet's hidden Linear left trainable",
       "backbone tensors are still trainable")
def _(model, num_classes):
    for child in list(model.children())[:-1]:
        child.requires_grad_(False)
    return replace_head(model, num_classes)


@wrong(E, "out size off by one", "gives 11 scores per image; expected num_classes = 10")
def _(model, num_classes):
    _freeze(model)
    path, old = _last_linear(model)
    _set(model, path, nn.Linear(old.in_features, num_classes + 1))
    return model


@wrong(E, "no return", "returned None")
def _(model, num_classes):
    _freeze(model)
    replace_head(model, num_classes)


@wrong(E, "returns a deepcopy", "returned a different object")
def _(model, num_classes):
    new = copy.deepcopy(model)
    _freeze(new)
    return replace_head(new, num_classes)


@wrong(E, "stacks on the frozen 1000-way head", "the old 1000-way head is still in the model")
def _(model, num_classes):
    _freeze(model)
    path, old = _last_linear(model)
    _set(model, path, nn.Sequential(old, nn.Linear(1000, num_classes)))
    return model


@wrong(E, "ResNet only (model.fc)", "raised AttributeError")
def _(model, num_classes):
    _freeze(model)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


@wrong(E, "in size hard-coded to 512",
       "the new head takes 512 features, but the backbone of MobileNetV3-Small gives 1024")
def _(model, num_classes):
    _freeze(model)
    path, _old = _last_linear(model)
    _set(model, path, nn.Linear(512, num_classes))
    return model


@wrong(E, "changes out_features only", "has no new layer: its head was not replaced")
def _(model, num_classes):
    _freeze(model)
    _last_linear(model)[1].out_features = num_classes
    return model


@wrong(E, "replaces the weight only", "the old 1000-way head is still in the model")
def _(model, num_classes):
    _freeze(model)
    _path, old = _last_linear(model)
    old.weight = nn.Parameter(torch.randn(num_classes, old.in_features))
    return model


@wrong(E, "adds an extra layer instead of replacing the head", "but the head of ResNet-18 is `fc`")
def _(model, num_classes):
    _freeze(model)
    model.extra = nn.Linear(1000, num_classes)
    return model


@wrong(E, "BatchNorm left trainable", "backbone tensors are still trainable")
def _(model, num_classes):
    for name, p in model.named_parameters():
        if "bn" not in name:
            p.requires_grad = False
    return replace_head(model, num_classes)


@wrong(E, "freezes the new head's bias too", "of the new head is frozen")
def _(model, num_classes):
    _freeze(model)
    replace_head(model, num_classes)
    get_head(model).bias.requires_grad = False
    return model


# --- 01.make_head_optimizer -------------------------------------------------------------------
E = "01.make_head_optimizer"


@correct(E, "list comprehension, Adam")
def _(model, lr):
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


@correct(E, "filter, SGD")
def _(model, lr):
    return torch.optim.SGD(filter(lambda p: p.requires_grad, model.parameters()), lr=lr)


@correct(E, "named_parameters, AdamW")
def _(model, lr):
    params = [p for _n, p in model.named_parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)


@correct(E, "one group dict")
def _(model, lr):
    return torch.optim.SGD([{"params": [p for p in model.parameters() if p.requires_grad]}], lr=lr, momentum=0.9)


@correct(E, "decay / no-decay groups at lr")
def _(model, lr):
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": 1e-2, "lr": lr},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0, "lr": lr},
    ])


@correct(E, "generator expression, nesterov")
def _(model, lr):
    return torch.optim.SGD((p for p in model.parameters() if p.requires_grad), lr=lr, momentum=0.9, nesterov=True)


@correct(E, "explicit loop, RMSprop")
def _(model, lr):
    trainable = []
    for p in model.parameters():
        if p.requires_grad:
            trainable.append(p)
    return torch.optim.RMSprop(trainable, lr=lr)


@correct(E, "per-module groups, lr set once")
def _(model, lr):
    groups = []
    for m in model.modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if own:
            groups.append({"params": own})
    return torch.optim.Adam(groups, lr=lr)


@wrong(E, "all parameters", "frozen tensors")
def _(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr)


@wrong(E, "model.fc.parameters() only", "your optimizer is missing")
def _(model, lr):
    head = model.fc if hasattr(model, "fc") else model.classifier[-1]
    return torch.optim.Adam(head.parameters(), lr=lr)


@wrong(E, "get_head(model).parameters() only", "other layers may be unfrozen too")
def _(model, lr):
    return torch.optim.Adam(get_head(model).parameters(), lr=lr)


@wrong(E, "fixed lr", "param group 0 has lr 0.001 for lr=0.01")
def _(model, lr):
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)


@wrong(E, "lower lr for the unfrozen backbone", "param group 1 has lr")
def _(model, lr):
    head = list(get_head(model).parameters())
    ids = {id(p) for p in head}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return torch.optim.SGD([{"params": head, "lr": lr}, {"params": rest, "lr": lr / 10}])


@wrong(E, "returns the list of parameters", "expected a torch.optim optimizer")
def _(model, lr):
    return [p for p in model.parameters() if p.requires_grad]


@wrong(E, "returns the optimizer class", "expected a torch.optim optimizer")
def _(model, lr):
    return torch.optim.SGD


_GLOBAL_MODEL = nn.Linear(3, 2)


@wrong(E, "uses a global model", "not parameters of the model passed in")
def _(model, lr):
    return torch.optim.SGD(_GLOBAL_MODEL.parameters(), lr=lr)


@wrong(E, "unfreezes everything first", "frozen tensors")
def _(model, lr):
    for p in model.parameters():
        p.requires_grad = True
    return torch.optim.SGD(model.parameters(), lr=lr)


@wrong(E, "inverted filter", "frozen tensors")
def _(model, lr):
    return torch.optim.SGD([p for p in model.parameters() if not p.requires_grad], lr=lr)


@wrong(E, "head added twice, in two groups", "raised ValueError")
def _(model, lr):
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD([{"params": trainable}, {"params": list(get_head(model).parameters())}], lr=lr)


@wrong(E, "last two tensors only", "your optimizer is missing")
def _(model, lr):
    return torch.optim.SGD(list(model.parameters())[-2:], lr=lr)


# --- 01.count_parameters ----------------------------------------------------------------------
E = "01.count_parameters"


@correct(E, "list, two sums")
def _(model):
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@correct(E, "nelement")
def _(model):
    total = sum(p.nelement() for p in model.parameters())
    trainable = sum(p.nelement() for p in model.parameters() if p.requires_grad)
    return trainable, total


@correct(E, "math.prod of shapes")
def _(model):
    total = trainable = 0
    for p in model.parameters():
        n = math.prod(p.shape)
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


@correct(E, "named_parameters")
def _(model):
    trainable = sum(p.numel() for _n, p in model.named_parameters() if p.requires_grad)
    return trainable, sum(p.numel() for _n, p in model.named_parameters())


@correct(E, "numpy prod, converted to int")
def _(model):
    sizes = [(int(np.prod(p.shape)), p.requires_grad) for p in model.parameters()]
    return sum(n for n, t in sizes if t), sum(n for n, _t in sizes)


@correct(E, "dedupe by id by hand")
def _(model):
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique if p.requires_grad), sum(p.numel() for p in unique)


@correct(E, "numel times requires_grad")
def _(model):
    return sum(p.numel() * p.requires_grad for p in model.parameters()), sum(p.numel() for p in model.parameters())


@correct(E, "torch.numel, returns a list")
def _(model):
    return [sum(torch.numel(p) for p in model.parameters() if p.requires_grad),
            sum(torch.numel(p) for p in model.parameters())]


@correct(E, "p.data.numel, numpy ints")
def _(model):
    return (np.int64(sum(p.data.numel() for p in model.parameters() if p.requires_grad)),
            np.int64(sum(p.data.numel() for p in model.parameters())))


@correct(E, "== True comparison")
def _(model):
    return (sum(p.numel() for p in model.parameters() if p.requires_grad == True),  # noqa: E712 - the style under test
            sum(p.numel() for p in model.parameters()))


@wrong(E, "counts tensors", "you counted tensors")
def _(model):
    return sum(1 for p in model.parameters() if p.requires_grad), len(list(model.parameters()))


@wrong(E, "swapped", "the two numbers are swapped")
def _(model):
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad)


@wrong(E, "everything as trainable", "you counted every parameter as trainable")
def _(model):
    total = sum(p.numel() for p in model.parameters())
    return total, total


@wrong(E, "total from state_dict", "BatchNorm buffer values (running statistics) that state_dict() holds")
def _(model):
    return (sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(v.numel() for v in model.state_dict().values()))


@wrong(E, "named_parameters(remove_duplicate=False)", "a layer that is used twice twice")
def _(model):
    params = [p for _n, p in model.named_parameters(remove_duplicate=False)]
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@wrong(E, "every module's parameters, nested modules again", "nested layers count several times")
def _(model):
    params = [p for m in model.modules() for p in m.parameters()]
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@wrong(E, "weights only", "it counts only the weights")
def _(model):
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    return sum(p.numel() for p in weights if p.requires_grad), sum(p.numel() for p in weights)


@wrong(E, "trainable = the head only", "it counts only the head")
def _(model):
    return sum(p.numel() for p in get_head(model).parameters()), sum(p.numel() for p in model.parameters())


@wrong(E, "returns tensors", "returned tensors; expected Python ints")
def _(model):
    return (torch.tensor(sum(p.numel() for p in model.parameters() if p.requires_grad)),
            torch.tensor(sum(p.numel() for p in model.parameters())))


@wrong(E, "returns floats", "expected two ints")
def _(model):
    return (float(sum(p.numel() for p in model.parameters() if p.requires_grad)),
            float(sum(p.numel() for p in model.parameters())))


@wrong(E, "returns a dict", "expected a pair (trainable, total)")
def _(model):
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters())}


@wrong(E, "trainable from .grad", "is not the number of trainable parameter values")
def _(model):
    return sum(p.numel() for p in model.parameters() if p.grad is not None), sum(p.numel() for p in model.parameters())


@wrong(E, "state_dict, dedupe attempted by key", "BatchNorm buffer values")
def _(model):
    sd = model.state_dict()
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(sd[k].numel() for k in set(sd))


# --- 02.first_conv_weight ---------------------------------------------------------------------
E = "02.first_conv_weight"


def _first_conv(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@correct(E, "for loop, detach().clone()")
def _(model):
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().clone()
    raise ValueError("no Conv2d")


@correct(E, "next(), clone().detach()")
def _(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).weight.clone().detach()


@correct(E, ".data.clone()")
def _(model):
    return _first_conv(model).weight.data.clone()


@correct(E, "clone under no_grad")
def _(model):
    with torch.no_grad():
        return _first_conv(model).weight.clone()


@correct(E, "through NumPy and back")
def _(model):
    return torch.tensor(_first_conv(model).weight.detach().numpy())


@correct(E, "deepcopy of the detached weight")
def _(model):
    return copy.deepcopy(_first_conv(model).weight.detach())


@correct(E, "list of convs, [0]")
def _(model):
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[0].weight.detach().clone()


@correct(E, "by type name, named_modules")
def _(model):
    for _name, m in model.named_modules():
        if type(m).__name__ == "Conv2d":
            return m.weight.detach().cpu().clone()


@correct(E, "empty_like + copy_ under no_grad")
def _(model):
    w = _first_conv(model).weight
    with torch.no_grad():
        out = torch.empty_like(w).copy_(w)
    return out


@correct(E, "contiguous clone")
def _(model):
    return _first_conv(model).weight.detach().contiguous().clone()


@wrong(E, "next(model.parameters())", "the model's first parameter, which is not the first nn.Conv2d's weight")
def _(model):
    return next(model.parameters()).detach().clone()


@wrong(E, "first state_dict entry", "the model's first parameter, which is not the first nn.Conv2d's weight")
def _(model):
    return next(iter(model.state_dict().values())).clone()


@wrong(E, "first module with a weight", "the model's first parameter")
def _(model):
    return next(m.weight for m in model.modules() if getattr(m, "weight", None) is not None).detach().clone()


@wrong(E, "first module whose name ends in conv1", "a layer's name says nothing about its position")
def _(model):
    for name, m in model.named_modules():
        if name.endswith("conv1") and isinstance(m, nn.Conv2d):
            return m.weight.detach().clone()
    return _first_conv(model).weight.detach().clone()


@wrong(E, "model.conv1 or features[0][0]", "raised AttributeError")
def _(model):
    layer = model.conv1 if hasattr(model, "conv1") else model.features[0][0]
    return layer.weight.detach().clone()


@wrong(E, "last conv", "a later nn.Conv2d")
def _(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1].weight.detach().clone()


@wrong(E, "the Parameter itself", "nn.Parameter that still requires grad")
def _(model):
    return _first_conv(model).weight


@wrong(E, "detach without clone", "they share memory")
def _(model):
    return _first_conv(model).weight.detach()


@wrong(E, ".data", "they share memory")
def _(model):
    return _first_conv(model).weight.data


@wrong(E, "clone without detach", "still requires grad: it is part of the autograd graph")
def _(model):
    return _first_conv(model).weight.clone()


@wrong(E, "deepcopy of the Parameter", "a copy of the Parameter (e.g. copy.deepcopy) is still a trainable parameter")
def _(model):
    return copy.deepcopy(_first_conv(model).weight)


@wrong(E, "NumPy array", "returned a NumPy array; expected a tensor")
def _(model):
    return _first_conv(model).weight.detach().numpy().copy()


@wrong(E, "the conv module", "returned a Conv2d; expected a tensor")
def _(model):
    return _first_conv(model)


@wrong(E, "centres the weights in place", "changed the model's `conv1.weight`")
def _(model):
    w = _first_conv(model).weight.detach()
    w -= w.mean()
    return _first_conv(model).weight.detach().clone()


# --- 02.to_display ----------------------------------------------------------------------------
E = "02.to_display"


@correct(E, "amin/amax + where")
def _(weight):
    w = weight.detach()
    low, high = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    span = high - low
    scaled = torch.where(span > 0, (w - low) / torch.where(span > 0, span, torch.ones_like(span)),
                         torch.full_like(w, 0.5))
    return scaled.permute(0, 2, 3, 1)


@correct(E, "nan_to_num(0.5)")
def _(weight):
    w = weight.detach()
    low, high = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    return ((w - low) / (high - low)).nan_to_num(0.5).permute(0, 2, 3, 1)


@correct(E, "loop over filters")
def _(weight):
    out = []
    for f in weight.detach():
        lo, hi = f.min(), f.max()
        out.append(torch.full_like(f, 0.5) if hi == lo else (f - lo) / (hi - lo))
    return torch.stack(out).permute(0, 2, 3, 1)


@correct(E, "flatten(1).min(1) views")
def _(weight):
    w = weight.detach().clone()
    n = w.shape[0]
    lo = w.flatten(1).min(1).values.view(n, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(n, 1, 1, 1)
    span = hi - lo
    out = (w - lo) / span.clamp_min(1e-30)
    out[(span == 0).view(n)] = 0.5
    return out.permute(0, 2, 3, 1)


@correct(E, "NumPy, returns an ndarray")
def _(weight):
    w = weight.detach().cpu().numpy()
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    hi = w.max(axis=(1, 2, 3), keepdims=True)
    span = hi - lo
    out = np.where(span > 0, (w - lo) / np.where(span > 0, span, 1), 0.5)
    return out.transpose(0, 2, 3, 1)


@correct(E, "permute first, then scale")
def _(weight):
    w = weight.detach().permute(0, 2, 3, 1)
    lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    out = (w - lo) / (hi - lo)
    out[(hi == lo).expand_as(out)] = 0.5
    return out


@correct(E, "aminmax, movedim")
def _(weight):
    w = weight.detach().double()
    flat = w.reshape(w.shape[0], -1)
    lo, hi = torch.aminmax(flat, dim=1)
    lo, hi = lo.view(-1, 1, 1, 1), hi.view(-1, 1, 1, 1)
    const = hi == lo
    out = torch.where(const, torch.full_like(w, 0.5), (w - lo) / torch.where(const, torch.ones_like(hi), hi - lo))
    return out.movedim(1, -1).float()


@correct(E, "clone, then in-place ops on the clone")
def _(weight):
    w = weight.detach().clone()
    for i in range(w.shape[0]):
        lo, hi = w[i].min(), w[i].max()
        if hi > lo:
            w[i].sub_(lo).div_(hi - lo)
        else:
            w[i].fill_(0.5)
    return w.permute(0, 2, 3, 1).contiguous()


@correct(E, "without detach (still requires grad)")
def _(weight):
    low, high = weight.amin(dim=(1, 2, 3), keepdim=True), weight.amax(dim=(1, 2, 3), keepdim=True)
    span = high - low
    safe = torch.where(span == 0, torch.ones_like(span), span)
    return torch.where(span == 0, 0.5, (weight - low) / safe).permute(0, 2, 3, 1)


@wrong(E, "all filters scaled together", "scales all filters together")
def _(weight):
    w = weight.detach()
    return ((w - w.min()) / (w.max() - w.min())).permute(0, 2, 3, 1)


@wrong(E, "channels not moved last", "the color channels are not moved last")
def _(weight):
    w = weight.detach()
    lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    return ((w - lo) / (hi - lo)).nan_to_num(0.5)


@wrong(E, "reshape instead of permute", "right values in the wrong places")
def _(weight):
    w = weight.detach()
    lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    n, c, h, ww = w.shape
    return ((w - lo) / (hi - lo)).nan_to_num(0.5).reshape(n, h, ww, c)


@wrong(E, "transpose(1, 3)", "expected N x H x W x 3")
def _(weight):
    w = weight.detach()
    lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    return ((w - lo) / (hi - lo)).nan_to_num(0.5).transpose(1, 3)


@wrong(E, "divides by zero", "NaN values for a constant filter (division by zero)")
def _(weight):
    w = weight.detach()
    lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    return ((w - lo) / (hi - lo)).permute(0, 2, 3, 1)


@wrong(E, "epsilon in the denominator", "comes out just below 1")
def _(weight):
    w = weight.detach()
    lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    return ((w - lo) / (hi - lo + 1e-5)).permute(0, 2, 3, 1)


@wrong(E, "epsilon, constant handled separately", "comes out just below 1")
def _(weight):
    w = weight.detach()
    lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    out = torch.where(hi > lo, (w - lo) / (hi - lo + 1e-5), torch.full_like(w, 0.5))
    return out.permute(0, 2, 3, 1)


@wrong(E, "in place on the input", "changed its input")
def _(weight):
    w = weight.detach()
    lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    w.sub_(lo)
    return (w / (hi - lo)).nan_to_num(0.5).permute(0, 2, 3, 1)


@wrong(E, "per color channel", "scales each color channel on its own")
def _(weight):
    w = weight.detach()
    lo, hi = w.amin(dim=(2, 3), keepdim=True), w.amax(dim=(2, 3), keepdim=True)
    return ((w - lo) / (hi - lo)).nan_to_num(0.5).permute(0, 2, 3, 1)


@wrong(E, "constant filter to 0", "a constant filter does not come out as 0.5")
def _(weight):
    w = weight.detach()
    lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    return ((w - lo) / (hi - lo)).nan_to_num(0.0).permute(0, 2, 3, 1)


@wrong(E, "scaled across filters per position", "should span exactly [0, 1]")
def _(weight):
    w = weight.detach()
    lo, hi = w.amin(dim=0, keepdim=True), w.amax(dim=0, keepdim=True)
    return ((w - lo) / (hi - lo)).nan_to_num(0.5).permute(0, 2, 3, 1)


@wrong(E, "clamped, not scaled", "should span exactly [0, 1]")
def _(weight):
    return weight.detach().clamp(0, 1).permute(0, 2, 3, 1)


@wrong(E, "divided by the max only", "should span exactly [0, 1]")
def _(weight):
    w = weight.detach()
    return (w / w.abs().amax(dim=(1, 2, 3), keepdim=True)).permute(0, 2, 3, 1)


@wrong(E, "returns a list", "expected a tensor")
def _(weight):
    return [f for f in weight.detach()]


# --- 03.make_param_groups ---------------------------------------------------------------------
E = "03.make_param_groups"


def _stages(model):
    return [[model.conv1, model.bn1], [model.layer1], [model.layer2], [model.layer3], [model.layer4], [model.fc]]


@correct(E, "the lesson's solution")
def _(model, base_lr, decay):
    stages = _stages(model)
    return [{"params": [p for m in mods for p in m.parameters()], "lr": base_lr * decay ** (5 - i)} for i,
            mods in enumerate(stages)]


@correct(E, "parameter lists added")
def _(model, base_lr, decay):
    groups = [list(model.conv1.parameters()) + list(model.bn1.parameters())]
    groups += [list(getattr(model, f"layer{i}").parameters()) for i in range(1, 5)]
    groups.append(list(model.fc.parameters()))
    return [{"params": p, "lr": base_lr * decay ** (5 - i)} for i, p in enumerate(groups)]


@correct(E, "by name prefix")
def _(model, base_lr, decay):
    order = ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    buckets = {k: [] for k in order}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        buckets["stem" if top in ("conv1", "bn1") else top].append(p)
    return [{"params": buckets[k], "lr": base_lr * decay ** (len(order) - 1 - i)} for i, k in enumerate(order)]


@correct(E, "children() walk")
def _(model, base_lr, decay):
    stem, groups = [], []
    for name, child in model.named_children():
        if name in ("conv1", "bn1"):
            stem += list(child.parameters())
        elif name.startswith("layer") or name == "fc":
            groups.append(list(child.parameters()))
    groups.insert(0, stem)
    return [{"params": g, "lr": base_lr * decay ** (5 - i)} for i, g in enumerate(groups)]


@correct(E, "generators as params")
def _(model, base_lr, decay):
    return [
        {"params": itertools.chain(model.conv1.parameters(), model.bn1.parameters()), "lr": base_lr * decay**5},
        {"params": model.layer1.parameters(), "lr": base_lr * decay**4},
        {"params": model.layer2.parameters(), "lr": base_lr * decay**3},
        {"params": model.layer3.parameters(), "lr": base_lr * decay**2},
        {"params": model.layer4.parameters(), "lr": base_lr * decay},
        {"params": model.fc.parameters(), "lr": base_lr},
    ]


@correct(E, "rates built backwards from the head")
def _(model, base_lr, decay):
    lrs, lr = [], base_lr
    for _ in range(6):
        lrs.insert(0, lr)
        lr *= decay
    return [{"params": [p for m in mods for p in m.parameters()], "lr": r} for mods, r in zip(_stages(model), lrs)]


@correct(E, "a tuple, extra keys")
def _(model, base_lr, decay):
    names = ["layer1", "layer2", "layer3", "layer4", "fc"]
    stem = list(model.conv1.parameters()) + list(model.bn1.parameters())
    groups = [{"name": "stem", "params": stem, "lr": base_lr * decay**5, "weight_decay": 0.0}]
    for i, n in enumerate(names, start=1):
        groups.append({"name": n, "params": list(getattr(model, n).parameters()), "lr": base_lr * decay ** (5 - i),
                       "weight_decay": 0.0})
    return tuple(groups)


@wrong(E, "bn1 left out", "2 parameters of ResNet-18 are in no group (e.g. bn1.weight)")
def _(model, base_lr, decay):
    stages = [[model.conv1], [model.layer1], [model.layer2], [model.layer3], [model.layer4], [model.fc]]
    return [{"params": [p for m in mods for p in m.parameters()], "lr": base_lr * decay ** (5 - i)} for i,
            mods in enumerate(stages)]


@wrong(E, "rates reversed", "the stem has the highest lr and fc the lowest")
def _(model, base_lr, decay):
    return [{"params": [p for m in mods for p in m.parameters()], "lr": base_lr * decay**i} for i,
            mods in enumerate(_stages(model))]


@wrong(E, "no stem group", "the stem (conv1 and bn1) needs a group of its own")
def _(model, base_lr, decay):
    return [{"params": list(getattr(model, n).parameters()), "lr": base_lr * decay ** (4 - i)} for i,
            n in enumerate(["layer1", "layer2", "layer3", "layer4", "fc"])]


@wrong(E, "returns an optimizer", "returned an optimizer; expected the list of group dicts")
def _(model, base_lr, decay):
    return torch.optim.SGD([{"params": [p for m in mods for p in m.parameters()], "lr": base_lr * decay ** (5 - i)}
                            for i, mods in enumerate(_stages(model))])


@wrong(E, "exponent off by one", "every lr is decay times too small")
def _(model, base_lr, decay):
    return [{"params": [p for m in mods for p in m.parameters()], "lr": base_lr * decay ** (6 - i)} for i,
            mods in enumerate(_stages(model))]


@wrong(E, "base_lr hard-coded", "has lr")
def _(model, base_lr, decay):
    return [{"params": [p for m in mods for p in m.parameters()], "lr": 1e-3 * decay ** (5 - i)} for i,
            mods in enumerate(_stages(model))]


@wrong(E, "decay hard-coded", "has lr")
def _(model, base_lr, decay):
    return [{"params": [p for m in mods for p in m.parameters()], "lr": base_lr * 0.3 ** (5 - i)} for i,
            mods in enumerate(_stages(model))]


@wrong(E, "modules as params", "'params' is a module")
def _(model, base_lr, decay):
    mods = [nn.ModuleList([model.conv1, model.bn1]), model.layer1, model.layer2, model.layer3, model.layer4, model.fc]
    return [{"params": m, "lr": base_lr * decay ** (5 - i)} for i, m in enumerate(mods)]


@wrong(E, "bn1 in two groups", "bn1.weight is in group 0 and group 1")
def _(model, base_lr, decay):
    stages = [[model.conv1, model.bn1], [model.bn1, model.layer1], [model.layer2], [model.layer3], [model.layer4],
              [model.fc]]
    return [{"params": [p for m in mods for p in m.parameters()], "lr": base_lr * decay ** (5 - i)} for i,
            mods in enumerate(stages)]


@wrong(E, "bn1 with layer1", "group 1 holds layer1, stem; expected layer1")
def _(model, base_lr, decay):
    stages = [[model.conv1], [model.bn1, model.layer1], [model.layer2], [model.layer3], [model.layer4], [model.fc]]
    return [{"params": [p for m in mods for p in m.parameters()], "lr": base_lr * decay ** (5 - i)} for i,
            mods in enumerate(stages)]


@wrong(E, "key 'learning_rate'", "each group needs 'params' and 'lr'")
def _(model, base_lr, decay):
    return [{"params": [p for m in mods for p in m.parameters()], "learning_rate": base_lr * decay ** (5 - i)} for i,
            mods in enumerate(_stages(model))]


@wrong(E, "dict of groups", "expected a list of dicts")
def _(model, base_lr, decay):
    names = ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    return {n: {"params": [p for m in mods for p in m.parameters()], "lr": base_lr * decay ** (5 - i)} for i,
            (n, mods) in enumerate(zip(names, _stages(model)))}


@wrong(E, "times instead of power", "group 0 (stem) has lr")
def _(model, base_lr, decay):
    return [{"params": [p for m in mods for p in m.parameters()], "lr": base_lr * decay * (5 - i)} for i,
            mods in enumerate(_stages(model))]


@wrong(E, "groups from head to stem", "group 0 holds fc; expected stem")
def _(model, base_lr, decay):
    stages = _stages(model)[::-1]
    return [{"params": [p for m in mods for p in m.parameters()], "lr": base_lr * decay**i} for i,
            mods in enumerate(stages)]


# --- 03.conv1_drift ---------------------------------------------------------------------------
E = "03.conv1_drift"


def _same_shape(before, after):
    if before.shape != after.shape:
        raise ValueError(f"before and after differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")


@correct(E, "the lesson's solution")
def _(before, after):
    if before.shape != after.shape:
        raise ValueError(f"before and after must have the same shape, got {tuple(before.shape)} and "
                         f"{tuple(after.shape)}")
    before, after = before.detach().double(), after.detach().double()
    return float(torch.linalg.norm(after - before) / torch.linalg.norm(before))


@correct(E, "torch.norm and .item()")
def _(before, after):
    _same_shape(before, after)
    return ((after - before).norm() / before.norm()).item()


@correct(E, "torch.dist, torch.Size in the message")
def _(before, after):
    if before.shape != after.shape:
        raise ValueError(f"shape mismatch: {before.shape} != {after.shape}")
    return float(torch.dist(after, before) / torch.norm(before))


@correct(E, "NumPy after detach")
def _(before, after):
    _same_shape(before, after)
    b, a = before.detach().cpu().numpy(), after.detach().cpu().numpy()
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@correct(E, "sum of squares by hand")
def _(before, after):
    if list(before.shape) != list(after.shape):
        raise ValueError(f"shapes {list(before.shape)} and {list(after.shape)} differ")
    num = math.sqrt(float(((after - before) ** 2).sum()))
    den = math.sqrt(float((before**2).sum()))
    return num / den


@correct(E, "vector_norm, 'x'-joined shapes")
def _(before, after):
    if before.shape != after.shape:
        raise ValueError("x".join(map(str, before.shape)) + " vs " + "x".join(map(str, after.shape)))
    with torch.no_grad():
        return float(torch.linalg.vector_norm(after - before) / torch.linalg.vector_norm(before))


@correct(E, "pow / sum / sqrt, float64")
def _(before, after):
    if before.shape != after.shape:
        raise ValueError(f"{before.shape=} {after.shape=}")
    d = (after.double() - before.double()).pow(2).sum().sqrt()
    return float(d / before.double().pow(2).sum().sqrt())


@wrong(E, "absolute change", "the size of the change, not the relative change")
def _(before, after):
    _same_shape(before, after)
    return float((after - before).norm())


@wrong(E, "returns a tensor", "returned a tensor; expected a Python float")
def _(before, after):
    _same_shape(before, after)
    return (after - before).norm() / before.norm()


@wrong(E, "no shape check", "expected ValueError")
def _(before, after):
    return float((after - before).norm() / before.norm())


@wrong(E, "checks numel, not shape", "instead of raising ValueError")
def _(before, after):
    if before.numel() != after.numel():
        raise ValueError(f"{tuple(before.shape)} vs {tuple(after.shape)}")
    return float((after - before).norm() / before.norm())


@wrong(E, "ValueError without the shapes", "does not name both shapes")
def _(before, after):
    if before.shape != after.shape:
        raise ValueError("the shapes differ")
    return float((after - before).norm() / before.norm())


@wrong(E, "divides by after", "divided by the wrong norm")
def _(before, after):
    _same_shape(before, after)
    return float((after - before).norm() / after.norm())


@wrong(E, "squared norms", "squared norms")
def _(before, after):
    _same_shape(before, after)
    return float((after - before).pow(2).sum() / before.pow(2).sum())


@wrong(E, "L1 norms", "sums of absolute values, not Frobenius norms")
def _(before, after):
    _same_shape(before, after)
    return float((after - before).abs().sum() / before.abs().sum())


@wrong(E, "NumPy without detach", "raised RuntimeError")
def _(before, after):
    _same_shape(before, after)
    return float(np.linalg.norm(after.numpy() - before.numpy()) / np.linalg.norm(before.numpy()))


@wrong(E, "returns np.float32", "expected a Python float")
def _(before, after):
    _same_shape(before, after)
    return np.float32((after - before).norm().item() / before.norm().item())


@wrong(E, "int 0 for identical tensors", "returned a int; expected a Python float")
def _(before, after):
    _same_shape(before, after)
    if torch.equal(before, after):
        return 0
    return float((after - before).norm() / before.norm())


@wrong(E, "assert for the shapes", "raised AssertionError")
def _(before, after):
    assert before.shape == after.shape, f"{tuple(before.shape)} vs {tuple(after.shape)}"
    return float((after - before).norm() / before.norm())


@wrong(E, "TypeError for the shapes", "expected ValueError")
def _(before, after):
    if before.shape != after.shape:
        raise TypeError(f"{tuple(before.shape)} vs {tuple(after.shape)}")
    return float((after - before).norm() / before.norm())


@wrong(E, "mean drift per filter", "the relative change is")
def _(before, after):
    _same_shape(before, after)
    b, a = before.detach().flatten(1), after.detach().flatten(1)
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).mean())


# --- 04.choose_strategy -----------------------------------------------------------------------
E = "04.choose_strategy"


@correct(E, "the lesson's solution")
def _(n_images, domain_gap):
    if n_images >= 10_000:
        return "full_finetune"
    if domain_gap >= 0.5:
        return "partial_finetune"
    return "feature_extraction"


@correct(E, "small first")
def _(n_images, domain_gap):
    if n_images < 10000:
        return "feature_extraction" if domain_gap < 0.5 else "partial_finetune"
    return "full_finetune"


@correct(E, "dict lookup")
def _(n_images, domain_gap):
    small, distant = n_images < 10_000, domain_gap >= 0.5
    return {(True, False): "feature_extraction", (True, True): "partial_finetune"}.get((small, distant),
                                                                                       "full_finetune")


@correct(E, "constants")
def _(n_images, domain_gap):
    SMALL, FAR = 10**4, 0.5
    large = not n_images < SMALL
    return "full_finetune" if large else ("partial_finetune" if domain_gap >= FAR else "feature_extraction")


@correct(E, "match statement")
def _(n_images, domain_gap):
    match (n_images >= 1e4, domain_gap >= 0.5):
        case (True, _):
            return "full_finetune"
        case (False, True):
            return "partial_finetune"
        case _:
            return "feature_extraction"


@correct(E, "labkit.strategy")
def _(n_images, domain_gap):
    return reference_strategy(n_images, domain_gap)


@correct(E, "and / or")
def _(n_images, domain_gap):
    if n_images < 10_000 and domain_gap < 0.5:
        return "feature_extraction"
    if n_images < 10_000 and domain_gap >= 0.5:
        return "partial_finetune"
    return "full_finetune"


@wrong(E, "n > 10_000", "10,000 images is large data")
def _(n_images, domain_gap):
    if n_images > 10_000:
        return "full_finetune"
    return "partial_finetune" if domain_gap >= 0.5 else "feature_extraction"


@wrong(E, "gap > 0.5", "a gap of 0.5 is distant")
def _(n_images, domain_gap):
    if n_images >= 10_000:
        return "full_finetune"
    return "partial_finetune" if domain_gap > 0.5 else "feature_extraction"


@wrong(E, "both boundaries off", "is not the best fit")
def _(n_images, domain_gap):
    if n_images > 10_000:
        return "full_finetune"
    return "partial_finetune" if domain_gap > 0.5 else "feature_extraction"


@wrong(E, "n <= 10_000 is small", "10,000 images is large data")
def _(n_images, domain_gap):
    if n_images <= 10_000:
        return "partial_finetune" if domain_gap >= 0.5 else "feature_extraction"
    return "full_finetune"


@wrong(E, "from_scratch for huge distant data", "returned 'from_scratch'; expected one of")
def _(n_images, domain_gap):
    if n_images >= 1_000_000 and domain_gap >= 0.8:
        return "from_scratch"
    if n_images >= 10_000:
        return "full_finetune"
    return "partial_finetune" if domain_gap >= 0.5 else "feature_extraction"


@wrong(E, "own vocabulary", "returned 'fine_tune'; expected one of")
def _(n_images, domain_gap):
    return "fine_tune" if domain_gap >= 0.5 else "feature_extraction"


@wrong(E, "spaces instead of underscores", "did you mean 'feature_extraction'")
def _(n_images, domain_gap):
    if n_images >= 10_000:
        return "full finetune"
    return "partial finetune" if domain_gap >= 0.5 else "feature extraction"


@wrong(E, "gap rule reversed", "is not the best fit")
def _(n_images, domain_gap):
    if n_images >= 10_000:
        return "full_finetune"
    return "feature_extraction" if domain_gap >= 0.5 else "partial_finetune"


@wrong(E, "large and distant -> partial", "is not the best fit")
def _(n_images, domain_gap):
    if domain_gap >= 0.5:
        return "partial_finetune"
    return "full_finetune" if n_images >= 10_000 else "feature_extraction"


@wrong(E, "missing return for large data", "returned None; expected one of")
def _(n_images, domain_gap):
    if n_images < 10_000:
        return "partial_finetune" if domain_gap >= 0.5 else "feature_extraction"


@wrong(E, "returns (strategy, bn)", "expected one of")
def _(n_images, domain_gap):
    return reference_strategy(n_images, domain_gap), bn_advice(n_images, domain_gap)


@wrong(E, "gap >= 0.49", "a gap of 0.49 is similar")
def _(n_images, domain_gap):
    if n_images >= 10_000:
        return "full_finetune"
    return "partial_finetune" if domain_gap >= 0.49 else "feature_extraction"


# --- 04.scenario_answers ----------------------------------------------------------------------
E = "04.scenario_answers"
RIGHT = {
    "web_photos": ("full_finetune", "update"),
    "microscopy": ("partial_finetune", "freeze"),
    "satellite": ("partial_finetune", "freeze"),
    "products": ("full_finetune", "update"),
}


def _with(**changes):
    out = dict(RIGHT)
    out.update(changes)
    return out


C[E] = [
    ("tuples", dict(RIGHT)),
    ("lists", {k: list(v) for k, v in RIGHT.items()}),
    ("dict(...) call, other key order", dict(products=("full_finetune", "update"),
                                             satellite=("partial_finetune", "freeze"),
                                             microscopy=("partial_finetune", "freeze"),
                                             web_photos=("full_finetune", "update"))),
    ("from labkit.strategy", {k: (reference_strategy(n, g), bn_advice(n, g)) for k, (n, g) in
                              {"web_photos": (50_000, 0.1), "microscopy": (300, 0.9), "satellite": (2_000, 0.7),
                               "products": (5_000_000, 0.2)}.items()}),
]
W[E] = [
    ("satellite as similar", _with(satellite=("feature_extraction", "freeze")),
     "satellite: the strategy is not the best fit"),
    ("products from scratch", _with(products=("from_scratch", "update")), "has strategy ('from_scratch', 'update')"),
    ("microscopy updates BN", _with(microscopy=("partial_finetune", "update")),
     "microscopy: the BatchNorm choice is not right"),
    ("web photos frozen", _with(web_photos=("feature_extraction", "freeze")),
     "web_photos: the strategy is not the best fit"),
    ("pair turned around", _with(satellite=("freeze", "partial_finetune")), "turned around"),
    ("capital Freeze", _with(microscopy=("partial_finetune", "Freeze")), "has bn 'Freeze'"),
    ("typo in the strategy", _with(satellite=("partial_fine_tune", "freeze")), "did you mean 'partial_finetune'"),
    ("a key missing", {k: v for k, v in RIGHT.items() if k != "products"}, "scenario_answers is missing 'products'"),
    ("an extra key", _with(medical=("partial_finetune", "freeze")), "unexpected keys 'medical'"),
    ("values as dicts", {k: {"strategy": s, "bn": b} for k, (s, b) in RIGHT.items()}, "expected a pair (strategy, bn)"),
    ("strategy only", {k: s for k, (s, _b) in RIGHT.items()}, "expected a pair (strategy, bn)"),
    ("eval / train for BN", {k: (s, "eval" if b == "freeze" else "train") for k, (s, b) in RIGHT.items()},
     "use 'freeze' or 'update'"),
    ("a list of pairs", list(RIGHT.values()), "expected a dict"),
    ("everything full fine-tuning", {k: ("full_finetune", "update") for k in RIGHT},
     "microscopy: the strategy is not the best fit"),
    ("BN backwards everywhere", {k: (s, "freeze" if b == "update" else "update") for k, (s, b) in RIGHT.items()},
     "the BatchNorm choice is not right"),
]


# --- 01.cam_weights ---------------------------------------------------------------------------
E = "01.cam_weights"


def _hooked(model, images, target, layer, score=None, *, eval_mode=True, remove=True):
    """(gradient, activation) at `layer` of `score(logits)` (default: the target's logit), hooked as learners do."""
    if eval_mode:
        model.eval()
    store = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda module, args, out: store.update(act=out))
    logits = model(images.clone().requires_grad_(True))
    value = score(logits) if score is not None else logits[:, target].sum()
    grad, = torch.autograd.grad(value, store["act"])
    if remove:
        handle.remove()
    return grad, store["act"].detach()


@correct(E, "forward hook and autograd.grad")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer)[0].mean(dim=(2, 3))


@correct(E, "tensor hook on the activation, then backward()")
def _(model, images, target, layer):
    model.eval()
    grads = []

    def keep(module, args, out):
        out.register_hook(grads.append)

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        x = images.detach().clone()
        x.requires_grad = True
        model(x)[:, target].sum().backward()
    finally:
        handle.remove()
    return grads[0].mean(dim=(2, 3))


@correct(E, "full backward hook on the layer")
def _(model, images, target, layer):
    model.eval()
    grads = {}
    module = model.get_submodule(layer)
    handle = module.register_full_backward_hook(lambda m, grad_in, grad_out: grads.update(g=grad_out[0]))
    try:
        out = model(images.clone().requires_grad_(True))
        out[:, target].sum().backward()
    finally:
        handle.remove()
    return grads["g"].mean(dim=[2, 3])


@correct(E, "retain_grad on the activation, one image at a time")
def _(model, images, target, layer):
    model.eval()
    rows = []
    for image in images:
        store = {}
        handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out, store=store: store.update(act=out))
        out = model(image[None].clone().requires_grad_(True))
        handle.remove()
        store["act"].retain_grad()
        out[0, target].backward()
        g = store["act"].grad
        rows.append(g.sum(dim=(2, 3))[0] / (g.shape[2] * g.shape[3]))
    return torch.stack(rows)


@wrong(E, "sums the gradient over space", "summed over the h x w positions")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer)[0].sum(dim=(2, 3))


@wrong(E, "averages the activations", "feature map's averages, not its gradient's")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer)[1].mean(dim=(2, 3))


@wrong(E, "gradient times activation", "multiplying by the activations comes later")
def _(model, images, target, layer):
    grad, act = _hooked(model, images, target, layer)
    return (grad * act).mean(dim=(2, 3))


@wrong(E, "maximum over space", "maximum over space, not its average")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer)[0].amax(dim=(2, 3))


@wrong(E, "gradient of the softmax probability", "gradient of the softmax probability")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer, lambda z: z.softmax(1)[:, target].sum())[0].mean(dim=(2, 3))


@wrong(E, "gradient of the loss", "gradient of the cross-entropy loss")
def _(model, images, target, layer):
    def loss(z):
        return nn.functional.cross_entropy(z, torch.full((len(z),), target))

    return _hooked(model, images, target, layer, loss)[0].mean(dim=(2, 3))


@wrong(E, "gradient of every logit", "sum of every logit")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer, lambda z: z.sum())[0].mean(dim=(2, 3))


@wrong(E, "explains the predicted class", "explains the predicted class: use the `target` argument")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer, lambda z: z.gather(1, z.argmax(1)[:, None]).sum())[0].mean(dim=(2, 3))


@wrong(E, "forgets model.eval()", "call model.eval() first")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer, eval_mode=False)[0].mean(dim=(2, 3))


@wrong(E, "leaves the hook on the model", "left 1 hook on the model")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer, remove=False)[0].mean(dim=(2, 3))


@wrong(E, "averages over the batch too", "you averaged over the batch too")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer)[0].mean(dim=(0, 2, 3))


@wrong(E, "keeps the spatial dims", "expected (N, C)")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer)[0].mean(dim=(2, 3), keepdim=True)


@wrong(E, "no gradient path through a frozen backbone", "on a frozen backbone nothing in the graph requires grad")
def _(model, images, target, layer):
    model.eval()
    store = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda module, args, out: store.update(act=out))
    try:
        grad, = torch.autograd.grad(model(images)[:, target].sum(), store["act"])
    finally:
        handle.remove()
    return grad.mean(dim=(2, 3))


@wrong(E, "returns a NumPy array", "expected a tensor of shape (N, C)")
def _(model, images, target, layer):
    return _hooked(model, images, target, layer)[0].mean(dim=(2, 3)).numpy()


# --- 03.pick_rate -----------------------------------------------------------------------------
E = "03.pick_rate"


def _ema(losses, beta=0.98, debias=True):
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)) if debias else avg)
    return out


def _lowest(values):
    """Index of the lowest finite value, the first on a tie."""
    return min((i for i, v in enumerate(values) if math.isfinite(v)), key=lambda i: (values[i], i))


@correct(E, "a loop and min over the finite points")
def _(rates, losses):
    return rates[_lowest(_ema(losses))] / 10


@correct(E, "NumPy, non-finite values masked")
def _(rates, losses):
    smoothed = np.array(_ema(losses))
    return float(np.asarray(rates)[np.where(np.isfinite(smoothed), smoothed, np.inf).argmin()] / 10)


@correct(E, "torch, nan_to_num")
def _(rates, losses):
    avg, smoothed = torch.tensor(0.0, dtype=torch.float64), []
    for i, loss in enumerate(torch.tensor(losses, dtype=torch.float64)):
        avg = 0.98 * avg + 0.02 * loss
        smoothed.append(avg / (1 - 0.98 ** (i + 1)))
    s = torch.stack(smoothed)
    s = torch.where(torch.isfinite(s), s, torch.tensor(float("inf"), dtype=torch.float64))
    return float(rates[int(s.argmin())] / 10)


@correct(E, "the average written out as a weighted sum")
def _(rates, losses):
    best, best_i = math.inf, 0
    for i in range(len(losses)):
        weights = [0.02 * 0.98 ** (i - j) for j in range(i + 1)]
        value = sum(w * v for w, v in zip(weights, losses[: i + 1])) / (1 - 0.98 ** (i + 1))
        if math.isfinite(value) and value < best:
            best, best_i = value, i
    return rates[best_i] / 10


@wrong(E, "forgets to divide by 10", "it is the rate at the minimum itself")
def _(rates, losses):
    return rates[_lowest(_ema(losses))]


@wrong(E, "multiplies by 10", "the rate at the minimum times 10")
def _(rates, losses):
    return rates[_lowest(_ema(losses))] * 10


@wrong(E, "no smoothing", "it is where the raw batch losses are lowest")
def _(rates, losses):
    return rates[_lowest(losses)] / 10


@wrong(E, "moving average not debiased", "the moving average is not debiased")
def _(rates, losses):
    return rates[_lowest(_ema(losses, debias=False))] / 10


@wrong(E, "fastai's valley rule", "that is fastai's valley rule")
def _(rates, losses):
    from labkit.lr_finder import suggest_lr

    return suggest_lr(rates, _ema(losses), "valley")


@wrong(E, "labkit's suggest_lr minimum (skips the ends)", "skips the first tenth and the last five points")
def _(rates, losses):
    from labkit.lr_finder import suggest_lr

    return suggest_lr(rates, _ema(losses), "minimum")


@wrong(E, "argmin that lands on nan", "a nan or inf loss is not a minimum")
def _(rates, losses):
    return float(rates[int(torch.tensor(_ema(losses)).argmin())] / 10)


@wrong(E, "returns a tensor", "returned a tensor; expected a Python float")
def _(rates, losses):
    return torch.tensor(rates[_lowest(_ema(losses))] / 10)


@wrong(E, "returns the index", "expected 0.2719")
def _(rates, losses):
    return float(_lowest(_ema(losses)))


@wrong(E, "a lighter moving average (0.9)", "with the finder's moving average (weight 0.98)")
def _(rates, losses):
    return rates[_lowest(_ema(losses, beta=0.9))] / 10


@wrong(E, "returns a string", "expected a float (a learning rate)")
def _(rates, losses):
    return f"{rates[_lowest(_ema(losses))] / 10:.2e}"


@wrong(E, "the steepest fall", "expected 0.2719")
def _(rates, losses):
    from labkit.lr_finder import suggest_lr

    return suggest_lr(rates, _ema(losses), "steepest")


# --- the table's tests ------------------------------------------------------------------------
def _failed_lines(result) -> str:
    return "\n".join(line for line in result.feedback if not line.startswith("✔"))


CORRECT = [(e, label, obj) for e, rows in C.items() for label, obj in rows]
WRONG = [(e, label, obj, expect) for e, rows in W.items() for label, obj, expect in rows]


OWN_TABLES = {  # lessons whose table lives elsewhere
    "00_pretrained_models": "tests/test_check_variants_00.py",
    "05_medical_domain_adaptation": "tests/test_check_variants_05.py",
    "06_parameter_efficient_finetuning": "tests/test_check_variants_06.py",
}


def test_every_exercise_has_many_correct_and_wrong_variants():
    for exercise_id in [e for e, ex in EXERCISES.items() if ex.lesson not in OWN_TABLES]:
        assert len(C[exercise_id]) >= 4 and len(W[exercise_id]) >= 10, exercise_id


CHEAP = ("02.to_display", "03.conv1_drift", "04.choose_strategy", "04.scenario_answers")
HIDDEN_TOO = {(e, label) for e, rows in C.items() for label, _obj in rows[:4]}  # the rest: public cases only, for speed


@pytest.mark.parametrize(("exercise_id", "label", "answer"), CORRECT, ids=[f"{e}:{lab}" for e, lab, _ in CORRECT])
def test_correct_variant_passes_public_and_hidden_cases(exercise_id, label, answer):
    public = run_check(exercise_id, answer)
    assert public.passed, public
    if (exercise_id, label) not in HIDDEN_TOO and exercise_id not in CHEAP:
        return
    specs = [s for s in EXERCISES[exercise_id].cases(hidden=True, rng=random.Random(17)) if s.get("hidden")]
    hidden = run_judge(exercise_id, specs, run_observe(exercise_id, answer, specs))
    assert hidden.passed, hidden


@pytest.mark.parametrize(("exercise_id", "label", "answer", "expect"), WRONG,
                         ids=[f"{e}:{lab}" for e, lab, _, _ in WRONG])
def test_wrong_variant_fails_the_public_check_with_its_hint(exercise_id, label, answer, expect):
    result = run_check(exercise_id, answer)
    assert result.status == "failed", result
    assert expect in _failed_lines(result), result
    assert "Traceback" not in str(result)


def _count_passing_wrong(checks) -> dict[str, tuple[int, int, int]]:
    """exercise id -> (wrong variants, passing public, passing public + hidden) under ``checks``."""
    out = {}
    for exercise_id, rows in W.items():
        public = hidden = 0
        for _label, answer, _expect in rows:
            if checks.run_check(exercise_id, answer).status == "passed":
                public += 1
                hidden += checks.run_check(exercise_id, answer, hidden=True).status == "passed"
        out[exercise_id] = (len(rows), public, hidden)
    return out


if __name__ == "__main__":  # python tests/test_check_variants.py [path/to/exercises/]

    torch.set_num_threads(1)
    if len(sys.argv) > 1:
        from labkit.grading.loading import load_checks

        module = load_checks(sys.argv[1])  # a copy of the exercises/ folder, or its __init__.py
    else:
        import labkit.grading.exercises as module
    counts = _count_passing_wrong(module)
    for exercise_id, (n, public, hidden) in counts.items():
        print(f"{exercise_id:<26} correct {len(C[exercise_id]):>3}  wrong {n:>3}  wrong passing check() {public:>3}  "
              f"also passing hidden {hidden:>3}")
    passing, also_hidden = sum(c[1] for c in counts.values()), sum(c[2] for c in counts.values())
    print(f"{'total':<26} correct {len(CORRECT):>3}  wrong {len(WRONG):>3}  wrong passing check() {passing:>3}"
          f"  also passing hidden {also_hidden:>3}")
