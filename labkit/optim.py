"""Optimizer set-up for transfer learning: discriminative learning rates, gradual unfreezing, sanity checks.

Everything here returns or edits plain ``torch.optim`` objects: :func:`param_groups` gives the
list of ``{"params", "lr", ...}`` dicts any optimizer accepts, and :func:`gradual_unfreeze`
adds groups with ``optimizer.add_param_group`` so the state of groups already there is kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real

import torch
from torch import nn

from labkit._tables import render_table
from labkit._validate import check_module
from labkit.freeze import unfreeze
from labkit.heads import stages

__all__ = ["param_groups", "gradual_unfreeze", "check_optimizer", "OptimizerCheck"]


def _check_rates(base_lr: float, decay: float, weight_decay: float) -> None:
    for name, value in (("base_lr", base_lr), ("decay", decay), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
        if not math.isfinite(value):
            fix = {"base_lr": "base_lr=1e-3", "decay": "decay=0.3", "weight_decay": "weight_decay=0.0"}[name]
            raise ValueError(f"{name} must be a finite number, got {value!r}: a NaN or infinite rate would make "
                             f"every weight NaN after one step. Fix: pass a finite value such as {fix}.")
    if base_lr <= 0:
        raise ValueError(f"base_lr must be a positive learning rate, got {base_lr}. Typical heads train at 1e-3.")
    if not 0 < decay <= 1:
        raise ValueError(
            f"decay must be in (0, 1], got {decay}: each earlier stage trains at `decay` times the rate of the next "
            "(0.3 is a common choice; 1.0 gives every stage the same rate)."
        )
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")


def _groups_for_stage(name: str, module: nn.Module, lr: float, weight_decay: float, seen: set[int]) -> list[dict]:
    params = []
    for p in module.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    if not params:
        return []
    if weight_decay == 0:
        return [{"params": params, "lr": lr, "weight_decay": 0.0, "name": name, "stage": name}]
    # Biases and normalization weights (1-D tensors) are not decayed.
    decayed = [p for p in params if p.ndim > 1]
    plain = [p for p in params if p.ndim <= 1]
    groups = []
    if decayed:
        groups.append({"params": decayed, "lr": lr, "weight_decay": weight_decay, "name": name, "stage": name})
    if plain:
        groups.append({"params": plain, "lr": lr, "weight_decay": 0.0, "name": f"{name} (no decay)", "stage": name})
    return groups


def _format_groups(groups: list[dict]) -> str:
    rows = [[g["name"], f"{g['lr']:.2e}", f"{g['weight_decay']:.1e}", str(len(g["params"])),
             f"{sum(p.numel() for p in g['params']):,}"] for g in groups]
    return render_table(["group", "lr", "wd", "tensors", "params"], rows, align="lrrrr",
                        min_widths=[0, 9, 7, 7, 12], rule=False)


def param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    decay: float,
    weight_decay: float = 0.0,
    verbose: bool = False,
) -> list[dict]:
    """Discriminative learning rates: one param group per stage, the head fastest.

    The head stage trains at ``base_lr`` and each earlier stage at ``decay`` times the rate of
    the stage after it, so with ``n`` stages stage ``i`` gets ``base_lr * decay ** (n - 1 - i)``.
    Only trainable parameters are included (frozen stages give no group, and the rates of the
    others do not move). With ``weight_decay > 0`` each stage is split in two groups so that
    biases and normalization weights (1-D tensors) are not decayed.

    Args:
        model: the network; stages come from :func:`labkit.heads.stages`.
        base_lr: learning rate of the head.
        decay: factor between neighbouring stages, in (0, 1].
        weight_decay: weight decay for weight matrices and conv kernels.
        verbose: print one line per group (rate, tensors, parameters).

    Returns:
        A list of dicts with keys ``params``, ``lr``, ``weight_decay``, ``name`` (for display:
        ``"layer1"``, ``"layer1 (no decay)"``) and ``stage`` (the stage's name, the same for
        both halves of a split stage), ready for any ``torch.optim`` optimizer.

    Example:
        >>> groups = param_groups(torchvision.models.resnet50(weights=None), base_lr=1e-3, decay=0.3)
        >>> [f"{g['lr']:.2e}" for g in groups]
        ['2.43e-06', '8.10e-06', '2.70e-05', '9.00e-05', '3.00e-04', '1.00e-03']
    """
    check_module(model, "param_groups")
    _check_rates(base_lr, decay, weight_decay)
    parts = stages(model)
    n = len(parts)
    seen: set[int] = set()
    groups = []
    for i, (name, module) in enumerate(parts.items()):
        groups += _groups_for_stage(name, module, base_lr * decay ** (n - 1 - i), weight_decay, seen)
    if not groups:
        raise ValueError(
            f"{type(model).__name__} has no trainable parameters, so there is nothing to optimize. "
            "Unfreeze something first (e.g. replace_head(model, num_classes) or unfreeze(model.layer4))."
        )
    if verbose:
        print(_format_groups(groups))
    return groups


def gradual_unfreeze(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    *,
    every: int = 1,
    base_lr: float,
    decay: float,
    weight_decay: float = 0.0,
) -> list[str]:
    """Thaw stages from the head backwards on a schedule; call it at the start of every epoch.

    At ``epoch`` (counting from 0) the last ``1 + epoch // every`` stages are trainable. Stages
    that become trainable now are unfrozen and their param groups (same rates as
    :func:`param_groups`) are added with ``optimizer.add_param_group``; groups already in the
    optimizer, and their state (momentum, Adam moments), are left as they are.

    Returns:
        The names of the stages thawed by this call (empty when nothing changed).

    Example:
        >>> model = replace_head(freeze(torchvision.models.resnet18(weights=None)), 5)
        >>> opt = torch.optim.AdamW(param_groups(model, base_lr=1e-3, decay=0.3))
        >>> [gradual_unfreeze(model, opt, e, base_lr=1e-3, decay=0.3) for e in range(3)]
        [[], ['layer4'], ['layer3']]
    """
    check_module(model, "gradual_unfreeze")
    _check_rates(base_lr, decay, weight_decay)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0 (the epoch about to start, from 0), got {epoch!r}.")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1 (epochs between thaws), got {every!r}.")
    parts = list(stages(model).items())
    n = len(parts)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    thawed = []
    for i in range(max(0, n - 1 - epoch // every), n):
        name, module = parts[i]
        if all(id(p) in in_optimizer for p in module.parameters()):
            continue
        unfreeze(module)
        for group in _groups_for_stage(name, module, base_lr * decay ** (n - 1 - i), weight_decay, in_optimizer):
            optimizer.add_param_group(group)
        thawed.append(name)
    return thawed


@dataclass
class OptimizerCheck:
    """What :func:`check_optimizer` found: parameter names that are wrongly in or missing from an optimizer."""

    frozen: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    frozen_numel: int = 0
    missing_numel: int = 0

    @property
    def ok(self) -> bool:
        return not self.frozen and not self.missing

    def __str__(self) -> str:
        if self.ok:
            return "optimizer OK: it holds every trainable parameter and no frozen one"
        lines = []
        if self.frozen:
            lines.append(
                f"optimizer holds {len(self.frozen)} frozen tensors ({self.frozen_numel:,} parameters), e.g. "
                f"{', '.join(self.frozen[:3])}: pass only parameters with requires_grad, "
                "e.g. [p for p in model.parameters() if p.requires_grad]"
            )
        if self.missing:
            lines.append(
                f"{len(self.missing)} trainable tensors ({self.missing_numel:,} parameters) are not in the optimizer, "
                f"e.g. {', '.join(self.missing[:3])}: they will never update. After unfreezing, add them with "
                "optimizer.add_param_group(...) (or labkit.optim.gradual_unfreeze), or rebuild the optimizer"
            )
        return "\n".join(lines)

    __repr__ = __str__


def check_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> OptimizerCheck:
    """Name frozen parameters inside ``optimizer`` and trainable ones missing from it.

    Catches the two classic pitfalls: an optimizer built on ``model.parameters()`` after
    freezing, and layers unfrozen later without telling the optimizer.

    Example:
        >>> model = replace_head(freeze(torchvision.models.resnet18(weights=None)), 5)
        >>> print(check_optimizer(torch.optim.SGD(model.parameters(), lr=0.1), model))
        optimizer holds 60 frozen tensors (11,176,512 parameters), e.g. conv1.weight, bn1.weight, bn1.bias: ...
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"check_optimizer expects a torch.optim.Optimizer first, got {type(optimizer).__name__}. "
            "Call it as check_optimizer(optimizer, model)."
        )
    check_module(model, "check_optimizer")
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    report = OptimizerCheck()
    for name, p in model.named_parameters():
        if id(p) in in_optimizer and not p.requires_grad:
            report.frozen.append(name)
            report.frozen_numel += p.numel()
        elif id(p) not in in_optimizer and p.requires_grad:
            report.missing.append(name)
            report.missing_numel += p.numel()
    return report
