"""A learning-rate finder in the manner of fastai's ``lr_find``, which leaves everything as it found it.

The rate grows exponentially from ``start`` to ``end`` over ``steps`` optimizer steps, one
training batch each (the loader is cycled when it is shorter). The loss is smoothed with a
debiased exponential moving average, and the run stops early when the smoothed loss passes
``diverge`` times its best or stops being finite. A rate is then suggested by a rule:

- ``"valley"`` (default, fastai's): the longest stretch over which the smoothed loss keeps
  falling (a longest decreasing subsequence); the rate half way down it (a third plus a sixth).
- ``"minimum"``: the rate of the lowest smoothed loss, divided by 10.
- ``"steepest"``: the rate where the smoothed loss falls fastest against log(rate).

Like fastai, the rules skip the first tenth of the steps and the last five. Afterwards the
model's parameters, buffers (BatchNorm running statistics, ``num_batches_tracked``),
gradients and train/eval mode, a given optimizer's state and rates, and the random number
generators (torch CPU and CUDA, NumPy, Python ``random``, the loader's own generator) are
exactly as they were, so the finder can run at any point of a lesson without changing it.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from labkit._batches import loader_generators, loader_len, logits_of, model_device, place_model, split_batch, to_device
from labkit._validate import check_module, check_training_optimizer
from labkit.device import grad_scaler, resolve_amp

__all__ = ["lr_find", "LRFind", "plot_lr_find", "suggest_lr", "SUGGESTIONS"]

SUGGESTIONS = ("valley", "minimum", "steepest")


@dataclass
class LRFind:
    """What :func:`lr_find` measured.

    Attributes:
        rates: the learning rate of every step that ran.
        losses: the smoothed (debiased moving-average) loss after each step.
        raw_losses: the loss of each step's batch.
        suggestion: the rate the rule suggests.
        rule: the rule used (``"valley"``, ``"minimum"`` or ``"steepest"``).
        suggestions: every rule's rate.
        stopped_early: True when the run stopped before ``steps``.
        reason: why it stopped (divergence, a non-finite loss, or all steps done).
    """

    rates: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float
    rule: str
    suggestions: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    reason: str = ""

    def __str__(self) -> str:
        return (f"lr_find: suggested rate {self.suggestion:.2e} (rule {self.rule!r}; "
                + ", ".join(f"{k} {v:.2e}" for k, v in self.suggestions.items() if k != self.rule)
                + f"); {len(self.rates)} steps, {self.reason}")

    def plot(self, *, ax=None):
        """The smoothed loss against the rate (log scale), the suggestion marked; returns the Figure."""
        return plot_lr_find(self, ax=ax)


# --------------------------------------------------------------------------- suggestion rules
def _valley(losses: list[float]) -> int:
    """fastai's valley: the longest decreasing subsequence; an index a third plus a sixth into it."""
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return min(n - 1, max(0, max_start + int(sections) + int(sections / 2)))


def suggest_lr(rates: list[float], losses: list[float], rule: str = "valley") -> float:
    """The rate a rule suggests from a finder's rates and smoothed losses.

    Skips the first tenth and the last five points when at least five remain (as fastai does).

    Args:
        rates: increasing learning rates.
        losses: the smoothed loss at each rate.
        rule: ``"valley"``, ``"minimum"`` (rate of the lowest loss / 10) or ``"steepest"``.

    Example:
        >>> suggest_lr([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [2.0, 1.5, 1.0, 0.8, 3.0], "minimum")
        0.01
    """
    if rule not in SUGGESTIONS:
        raise ValueError(f"suggest: expected one of {', '.join(map(repr, SUGGESTIONS))}, got {rule!r}. "
                         "Fix: suggest='valley' (fastai's default).")
    if len(rates) != len(losses) or not rates:
        raise ValueError(f"suggest_lr: expected as many rates as losses (at least one), got {len(rates)} and "
                         f"{len(losses)}.")
    lo, hi = len(rates) // 10, len(rates) - 5
    if hi - lo < 5:
        lo, hi = 0, len(rates)
    pairs = [(r, v) for r, v in zip(rates[lo:hi], losses[lo:hi]) if math.isfinite(v)] or [(rates[0], 0.0)]
    rs, ls = [p[0] for p in pairs], [p[1] for p in pairs]
    if rule == "valley":
        rate = rs[_valley(ls)]
    elif rule == "minimum":
        rate = rs[min(range(len(ls)), key=ls.__getitem__)] / 10
    else:
        slopes = [(ls[i + 1] - ls[i]) / (math.log(rs[i + 1]) - math.log(rs[i])) for i in range(len(rs) - 1)]
        rate = rs[min(range(len(slopes)), key=slopes.__getitem__)] if slopes else rs[0]
    return min(max(rate, rates[0]), rates[-1])  # minimum / 10 may fall below start


# --------------------------------------------------------------------------- saving and restoring state
def _snapshot(model: nn.Module, optimizer, loader) -> dict:
    """Everything the finder may change, copied."""
    import copy

    import numpy as np

    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update((f"buffer:{n}", b) for n, b in model.named_buffers(remove_duplicate=False))
    return {
        "tensors": {n: t.detach().clone() for n, t in tensors.items()},
        "grads": {n: (None if p.grad is None else p.grad.detach().clone())
                  for n, p in model.named_parameters(remove_duplicate=False)},
        "training": {m: m.training for m in model.modules()},
        "device": model_device(model),
        "optimizer": None if optimizer is None else copy.deepcopy(optimizer.state_dict()),
        "rng": (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                np.random.get_state(), random.getstate()),
        "generators": [(g, g.get_state()) for g in loader_generators(loader)],
    }


def _restore(model: nn.Module, optimizer, saved: dict) -> None:
    import numpy as np

    if saved["device"] is not None and model_device(model) != saved["device"]:
        model.to(saved["device"])
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update((f"buffer:{n}", b) for n, b in model.named_buffers(remove_duplicate=False))
    with torch.no_grad():
        for name, value in saved["tensors"].items():
            tensors[name].copy_(value)
    for name, p in model.named_parameters(remove_duplicate=False):
        p.grad = saved["grads"][name]
    for m, flag in saved["training"].items():
        m.training = flag
    if optimizer is not None:
        optimizer.load_state_dict(saved["optimizer"])
    cpu, cuda, np_state, py_state = saved["rng"]
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(np_state)
    random.setstate(py_state)
    for g, state in saved["generators"]:
        g.set_state(state)


# --------------------------------------------------------------------------- the run
def _check_options(loader, start, end, steps, smooth, diverge, suggest) -> None:
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"lr_find: {name} must be a positive finite rate, got {value!r}. Fix: start=1e-7, end=10.")
    if start >= end:
        raise ValueError(f"lr_find: expected start < end (the rate grows from start to end), got start={start:g}, "
                         f"end={end:g}. Fix: swap them, e.g. start=1e-7, end=10.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 5:
        raise ValueError(f"lr_find: steps must be an int >= 5 (a curve needs points), got {steps!r}. Fix: steps=100.")
    if not 0 <= smooth < 1:
        raise ValueError(f"lr_find: smooth must be in [0, 1) (0 = no smoothing), got {smooth!r}. Fix: smooth=0.98.")
    if not diverge > 1:
        raise ValueError(f"lr_find: diverge must be > 1 (stop when the loss passes diverge x its best), got "
                         f"{diverge!r}. Fix: diverge=4.0.")
    if suggest not in SUGGESTIONS:
        raise ValueError(f"lr_find: suggest must be one of {', '.join(map(repr, SUGGESTIONS))}, got {suggest!r}. "
                         "Fix: suggest='valley' (fastai's default).")
    if loader_len(loader) == 0:
        raise ValueError("lr_find: expected a loader with at least one batch, got an empty one. Fix: check the "
                         "dataset's length and that drop_last=True does not drop the only batch.")


def _batches(loader):
    """Batches forever, restarting the loader when it runs out."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("lr_find: expected a loader with at least one batch, got an empty one.")


def _run(model, loader, optimizer, loss_fn, dev, rates, smooth, diverge) -> tuple[list, list, list, str]:
    """The finder's loop; returns (rates, smoothed, raw, reason)."""
    amp = resolve_amp(dev, "auto")
    scaler = grad_scaler(amp)
    peaks = [g["lr"] for g in optimizer.param_groups]
    top = max(peaks) if max(peaks) > 0 else 1.0
    ratios = [p / top if max(peaks) > 0 else 1.0 for p in peaks]
    optimizer.state.clear()  # fresh moments: the curve must not depend on earlier training
    ran, smoothed, raw = [], [], []
    avg, best, reason = 0.0, math.inf, f"all {len(rates)} steps ran"
    model.train()
    batches = _batches(loader)
    for i, rate in enumerate(rates):
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = rate * ratio
        x, y = to_device(*split_batch(next(batches), "lr_find: loader"), dev, False)
        with amp.autocast(dev):
            loss = loss_fn(logits_of(model(x)).float(), y)
        value = float(loss.detach())
        if i == 0 and not math.isfinite(value):
            raise ValueError(f"lr_find: the loss is {value} at the very first step (rate {rate:.1e}), before any "
                             "update: the data or the model is broken, not the rate. Likely causes: NaN/inf pixels "
                             "or labels outside 0..classes-1, or weights that are already NaN. Fix: check "
                             "torch.isfinite(images).all() and the labels, then rebuild the model.")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        avg = smooth * avg + (1 - smooth) * value
        current = avg / (1 - smooth ** (i + 1))
        ran.append(rate)
        raw.append(value)
        smoothed.append(current)
        if not math.isfinite(current):
            return ran, smoothed, raw, f"stopped at step {i + 1} of {len(rates)}: the loss turned {current}"
        best = min(best, current)
        if current > diverge * best:
            return ran, smoothed, raw, (f"stopped at step {i + 1} of {len(rates)}: the smoothed loss {current:.3g} "
                                        f"passed {diverge:g}x its best ({best:.3g})")
    return ran, smoothed, raw, reason


def lr_find(
    model: nn.Module,
    loader: Iterable,
    *,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: Callable | None = None,
    smooth: float = 0.98,
    diverge: float = 4.0,
    suggest: str = "valley",
    device: str | torch.device = "auto",
    verbose: bool = True,
) -> LRFind:
    """Train briefly at exponentially growing rates, record the loss, suggest a rate, and undo everything.

    Only trainable parameters move (frozen ones get no gradient). With an optimizer that has
    several param groups (discriminative rates), every group's rate is scaled with the largest
    one, keeping their ratios; the rates reported are the largest group's. The optimizer starts
    from empty state (fresh moments) and gets its state and rates back afterwards. On CUDA the
    steps run under mixed precision (:func:`labkit.device.resolve_amp`).

    Args:
        model: a classifier; its trainable parameters are stepped, then restored bit for bit.
        loader: training batches ``(images, labels)``; cycled when shorter than ``steps``.
        start, end: the first and last rate (``start < end``).
        steps: optimizer steps (>= 5).
        optimizer: default ``torch.optim.Adam`` over the trainable parameters.
        loss_fn: default ``nn.CrossEntropyLoss()``.
        smooth: weight of the moving average (0 = raw losses).
        diverge: stop when the smoothed loss passes this multiple of its best.
        suggest: ``"valley"``, ``"minimum"`` (minimum / 10) or ``"steepest"``.
        device: ``"auto"`` (CUDA, then MPS, then CPU) or where the model is; the model goes back where it was.
        verbose: print one line with the rule and the suggestion.

    Example:
        >>> result = lr_find(model, train_loader, steps=50)  # doctest: +SKIP
        lr_find: suggested rate 1.58e-03 (rule 'valley'; minimum 5.01e-03, steepest 6.31e-04); 50 steps, ...
    """
    _check_options(loader, start, end, steps, smooth, diverge, suggest)
    check_module(model, "lr_find")
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer if optimizer is not None else torch.optim.Adam(trainable or [torch.zeros(1)], lr=start)
    check_training_optimizer(model, opt, where="lr_find")
    saved = _snapshot(model, optimizer, loader)
    try:
        dev = place_model(model, device, "lr_find")
        rates = [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
        ran, smoothed, raw, reason = _run(model, loader, opt, loss_fn or nn.CrossEntropyLoss(), dev, rates,
                                          smooth, diverge)
    finally:
        _restore(model, optimizer, saved)
    suggestions = {rule: suggest_lr(ran, smoothed, rule) for rule in SUGGESTIONS}
    result = LRFind(rates=ran, losses=smoothed, raw_losses=raw, suggestion=suggestions[suggest], rule=suggest,
                    suggestions=suggestions, stopped_early=len(ran) < steps, reason=reason)
    if verbose:
        print(result)
    return result


def plot_lr_find(result: LRFind, *, ax=None):
    """Plot the smoothed loss against the rate (log axis) with the suggestion marked; returns the Figure.

    Args:
        result: what :func:`lr_find` returned.
        ax: draw into this Axes (default: a new Figure).

    Example:
        >>> fig = plot_lr_find(lr_find(model, loader, verbose=False))  # doctest: +SKIP
    """
    from matplotlib.figure import Figure

    if not isinstance(result, LRFind):
        raise TypeError(f"plot_lr_find: expected the LRFind that lr_find returned, got {type(result).__name__}.")
    if ax is None:
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.subplots()
    ax.plot(result.rates, result.losses, label="smoothed loss")
    ax.plot(result.rates, result.raw_losses, alpha=0.25, linewidth=0.8, label="batch loss")
    finite = [v for v in result.losses if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) - 0.05 * abs(min(finite)), min(max(finite), 4 * min(finite)) * 1.1 + 1e-9)
    ax.axvline(result.suggestion, color="C3", linestyle="--",
               label=f"{result.rule}: {result.suggestion:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    return ax.figure
