"""Freeze and unfreeze parts of a model, report what trains, and prove that frozen parts stayed put.

BatchNorm policy. ``requires_grad=False`` stops gradient updates but not BatchNorm's running
statistics: a BatchNorm layer in training mode still overwrites ``running_mean`` and
``running_var`` on every forward pass, and ``model.train()`` switches every layer back to
training mode. So :func:`freeze` also holds each frozen BatchNorm layer in evaluation mode,
with a forward pre-hook that re-applies ``eval()`` just before the layer runs, for as long as
its affine parameters stay frozen. ``train_bn=True`` keeps BatchNorm layers fully trainable
instead (affine parameters learn, statistics update), as fastai does by default.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from labkit._validate import check_module
from labkit.heads import stages

__all__ = [
    "freeze",
    "unfreeze",
    "freeze_to",
    "trainable_report",
    "TrainableReport",
    "frozen_guard",
    "snapshot_frozen",
    "verify_frozen",
]

_BN = nn.modules.batchnorm._BatchNorm
_HELD: "weakref.WeakKeyDictionary[nn.Module, object]" = weakref.WeakKeyDictionary()


def _bn_is_frozen(bn: nn.Module) -> bool:
    own = list(bn.parameters(recurse=False))
    if own:
        return not any(p.requires_grad for p in own)
    return bn in _HELD  # affine=False: frozen while labkit holds it


def _hold_frozen_bn_in_eval(bn: nn.Module, args: tuple) -> None:
    """Forward pre-hook: a frozen BatchNorm layer always runs in eval mode."""
    if bn.training and _bn_is_frozen(bn):
        bn.training = False


def freeze(module: nn.Module, *, train_bn: bool = False) -> nn.Module:
    """Stop every parameter of ``module`` from training; frozen BatchNorm keeps its statistics.

    Works in place and returns ``module``. BatchNorm layers inside it are held in eval mode,
    even after a later ``model.train()``, so their running statistics are kept exactly (see
    the module docstring). With ``train_bn=True`` BatchNorm layers stay fully trainable:
    affine parameters learn and statistics update, as in fastai.

    Args:
        module: a model or any of its submodules (a stage, a block, a layer).
        train_bn: keep BatchNorm layers trainable.

    Example:
        >>> model = freeze(torchvision.models.resnet18(weights=None))
        >>> any(p.requires_grad for p in model.parameters())
        False
    """
    check_module(module, "freeze")
    for m in module.modules():
        is_bn = isinstance(m, _BN)
        for p in m.parameters(recurse=False):
            p.requires_grad_(is_bn and train_bn)
        if is_bn and not train_bn and m not in _HELD:
            _HELD[m] = m.register_forward_pre_hook(_hold_frozen_bn_in_eval)
        elif is_bn and train_bn and m in _HELD:
            _HELD.pop(m).remove()
            m.train(module.training)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """Make every parameter of ``module`` trainable again; BatchNorm layers follow ``train()``/``eval()``.

    Works in place and returns ``module``.

    Example:
        >>> model = unfreeze(freeze(torchvision.models.resnet18(weights=None)))
        >>> all(p.requires_grad for p in model.parameters())
        True
    """
    check_module(module, "unfreeze")
    for m in module.modules():
        for p in m.parameters(recurse=False):
            p.requires_grad_(True)
        if isinstance(m, _BN):
            if m in _HELD:
                _HELD.pop(m).remove()
            m.train(module.training)
    return module


def freeze_to(model: nn.Module, stage: str | int, *, train_bn: bool = False) -> nn.Module:
    """Freeze every stage before ``stage``; make ``stage`` and everything after it trainable.

    Stages come from :func:`labkit.heads.stages` (ResNet: ``stem``, ``layer1``..``layer4``,
    ``fc``). Works in place and returns the model.

    Args:
        model: the network.
        stage: the first trainable stage, by name or index (negative counts from the head).
        train_bn: keep BatchNorm layers in the frozen stages trainable.

    Example:
        >>> model = freeze_to(torchvision.models.resnet18(weights=None), "layer4")
        >>> [n for n, p in model.named_parameters() if p.requires_grad][:1]
        ['layer4.0.conv1.weight']
    """
    check_module(model, "freeze_to")
    parts = stages(model)
    names = list(parts)
    first = _stage_index(model, stage, names)
    for i, part in enumerate(parts.values()):
        if i < first:
            freeze(part, train_bn=train_bn)
        else:
            unfreeze(part)
    return model


@dataclass
class TrainableReport:
    """Trainable and total parameter counts per stage; prints as a table."""

    rows: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def trainable(self) -> int:
        return sum(r[1] for r in self.rows)

    @property
    def total(self) -> int:
        return sum(r[2] for r in self.rows)

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        width = max([len("stage"), len("total")] + [len(r[0]) for r in self.rows])
        lines = [f"{'stage':<{width}}  {'trainable':>12}  {'total':>12}  {'trainable %':>11}"]
        for name, trainable, total in self.rows + [("total", self.trainable, self.total)]:
            pct = 100.0 * trainable / total if total else 0.0
            lines.append(f"{name:<{width}}  {trainable:>12,}  {total:>12,}  {pct:>10.2f}%")
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        lines.append(f"trainable {self.trainable:,} of {self.total:,} ({self.fraction:.2%})")
        return "\n".join(lines)

    __repr__ = __str__


def trainable_report(model: nn.Module) -> TrainableReport:
    """Count trainable and total parameters in each stage of ``model``.

    Example:
        >>> model = replace_head(freeze(torchvision.models.resnet50(weights=None)), 37)
        >>> print(trainable_report(model))       # doctest: +ELLIPSIS
        stage      trainable         total  trainable %
        stem               0         9,536        0.00%
        ...
        fc            75,813        75,813      100.00%
        ...
        trainable 75,813 of 23,583,845 (0.32%)
    """
    check_module(model, "trainable_report")
    rows = []
    for name, part in stages(model).items():
        params = list(part.parameters())
        rows.append((name, sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)))
    return TrainableReport(rows)


def snapshot_frozen(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every frozen parameter and of the buffers of every frozen BatchNorm layer."""
    check_module(model, "snapshot_frozen")
    snap = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    for prefix, m in model.named_modules():
        if isinstance(m, _BN) and _bn_is_frozen(m):
            for name, buf in m.named_buffers(recurse=False):
                if buf is not None:
                    snap[f"{prefix}.{name}" if prefix else name] = buf.detach().clone()
    return snap


def verify_frozen(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Raise AssertionError naming every tensor of ``snapshot`` that is no longer bit-identical."""
    current = dict(model.named_parameters())
    current.update(dict(model.named_buffers()))
    changed = []
    for name, before in snapshot.items():
        now = current.get(name)
        if now is None:
            changed.append(f"{name} (no longer in the model)")
        elif now.shape != before.shape or not torch.equal(now.detach().to(before.device), before):
            if now.shape == before.shape and before.is_floating_point():
                delta = (now.detach().to(before.device).float() - before.float()).abs().max().item()
                changed.append(f"{name} (max |change| {delta:.3g})")
            else:
                changed.append(name)
    if changed:
        listed = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise AssertionError(
            f"{len(changed)} frozen tensor(s) changed: {listed}. Frozen parameters must not be in the "
            "optimizer (or use weight decay on them), and frozen BatchNorm layers must stay in eval mode: "
            "freeze them with labkit.freeze.freeze, which holds them in eval."
        )


@contextlib.contextmanager
def frozen_guard(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Context manager: prove that nothing frozen changed inside the block.

    Snapshots every frozen parameter and frozen BatchNorm buffer on entry and, if the block
    finished without an exception, raises AssertionError naming each one that changed.

    Example:
        >>> with frozen_guard(model):
        ...     fit(model, loader, optimizer=opt, epochs=1)
    """
    snapshot = snapshot_frozen(model)
    yield snapshot
    verify_frozen(model, snapshot)


def _stage_index(model: nn.Module, stage: str | int, names: list[str] | None = None) -> int:
    """Position of ``stage`` (a name or an index) among ``stages(model)``, checked."""
    names = names if names is not None else list(stages(model))
    if isinstance(stage, bool) or not isinstance(stage, (int, str)):
        raise TypeError(f"stage must be a stage name or an int index, got {type(stage).__name__}. Valid names: {names}")
    if isinstance(stage, int):
        if not -len(names) <= stage < len(names):
            raise IndexError(f"stage index {stage} is out of range for {len(names)} stages: {names}")
        return stage % len(names)
    if stage not in names:
        raise KeyError(f"unknown stage {stage!r} for {type(model).__name__}; valid stages are {names}")
    return names.index(stage)
