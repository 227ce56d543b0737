"""Pick a transfer strategy from two numbers: how much labelled data, and how far the domain is.

The rule of thumb is a plane with four quadrants (data size across, domain gap up):

=================  ==================================  ==================================
                   similar domain (gap < 0.5)          distant domain (gap >= 0.5)
=================  ==================================  ==================================
small (< 10,000)   feature extraction, BN frozen       partial fine-tuning, BN frozen
large (>= 10,000)  full fine-tuning (discriminative    full fine-tuning (from scratch only
                   LRs), BN statistics update          if huge and very distant), BN update
=================  ==================================  ==================================

It is a starting point, not a verdict: always confirm on a held-out validation split.

:data:`STRATEGY_TABLE` is the one description of every strategy labkit runs (what trains,
what BatchNorm does, which learning rates), and :func:`apply_strategy` sets a model up by
it; :func:`labkit.compare.compare_strategies`, the benchmark and the advice here all read it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import NamedTuple

from labkit._tables import render_table

__all__ = [
    "STRATEGIES", "ALL_STRATEGIES", "STRATEGY_TABLE", "Strategy", "strategy_table", "apply_strategy",
    "SMALL_DATA", "DISTANT_GAP", "choose_strategy", "bn_advice", "advise", "Advice", "plot_plane",
]


@dataclass(frozen=True)
class Strategy:
    """One row of :data:`STRATEGY_TABLE`.

    Attributes:
        name: the strategy's name, e.g. ``"partial_finetune"``.
        label: a short human label, e.g. ``"partial fine-tune"``.
        trains: ``"head"``, ``"last stages + head"`` or ``"everything"``.
        batchnorm: ``"freeze"`` (frozen layers' BatchNorm stays in eval, statistics kept) or
            ``"update"`` (every BatchNorm layer's statistics follow the new data).
        lr_rule: ``"head"`` (one rate, the head's), ``"head + thawed"`` (head at ``lr``, thawed
            pretrained stages at ``lr * thawed_lr_factor``), ``"one rate"`` (everything at the
            thawed rate) or ``"per stage"`` (:func:`labkit.optim.param_groups` with ``decay``).
        cached: the frozen backbone runs once and the head trains on stored features.
    """

    name: str
    label: str
    trains: str
    batchnorm: str
    lr_rule: str
    cached: bool = False


STRATEGY_TABLE: dict[str, Strategy] = {s.name: s for s in (
    Strategy("cached_features", "cached features", "head", "freeze", "head", cached=True),
    Strategy("feature_extraction", "feature extraction", "head", "freeze", "head"),
    Strategy("partial_finetune", "partial fine-tune", "last stages + head", "freeze", "head + thawed"),
    Strategy("full_finetune", "full fine-tune", "everything", "update", "one rate"),
    Strategy("discriminative_finetune", "discriminative fine-tune", "everything", "update", "per stage"),
)}
ALL_STRATEGIES = tuple(STRATEGY_TABLE)  # lightest first
STRATEGIES = ("feature_extraction", "partial_finetune", "full_finetune")  # what the decision rule returns
SMALL_DATA = 10_000  # fewer labelled images than this is "small"
DISTANT_GAP = 0.5  # a domain gap at or above this is "distant"

_REASONS = {
    ("feature_extraction", "freeze"): "little data on a familiar domain: the pretrained features already fit, "
    "and training only the head cannot overfit much",
    ("partial_finetune", "freeze"): "little data on an unfamiliar domain: keep the general early layers, "
    "thaw the later blocks so they can adapt, and augment heavily",
    ("full_finetune", "update"): "plenty of data: every layer can adapt without overfitting; use discriminative "
    "learning rates so early layers move slowly",
}


def _check(n_images: int, domain_gap: float) -> None:
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be a positive int (labelled training images), got {n_images!r}.")
    if isinstance(domain_gap, bool) or not isinstance(domain_gap, Real) or not 0 <= domain_gap <= 1:
        raise ValueError(
            f"domain_gap must be a number in [0, 1] (0: everyday photos like ImageNet, 1: nothing like them), "
            f"got {domain_gap!r}."
        )


def choose_strategy(n_images: int, domain_gap: float) -> str:
    """Return ``"feature_extraction"``, ``"partial_finetune"`` or ``"full_finetune"``.

    Args:
        n_images: labelled training images you have.
        domain_gap: 0 for everyday photos like ImageNet, 1 for images nothing like them.

    Example:
        >>> choose_strategy(300, 0.9)
        'partial_finetune'
    """
    _check(n_images, domain_gap)
    if n_images >= SMALL_DATA:
        return "full_finetune"
    return "partial_finetune" if domain_gap >= DISTANT_GAP else "feature_extraction"


def strategy_table() -> str:
    """:data:`STRATEGY_TABLE` as an aligned plain-text table.

    Example:
        >>> print(strategy_table().splitlines()[2])
        cached_features          head                freeze     head            yes
    """
    rows = [[s.name, s.trains, s.batchnorm, s.lr_rule, "yes" if s.cached else "no"] for s in STRATEGY_TABLE.values()]
    return render_table(["strategy", "trains", "BatchNorm", "learning rates", "cached"], rows, align="lllll")


def check_strategy(name: str, *, where: str = "strategy") -> Strategy:
    """The table row for ``name``; a clear error for an unknown name."""
    if name not in STRATEGY_TABLE:
        raise ValueError(
            f"{where}: expected one of {', '.join(STRATEGY_TABLE)}, got {name!r}. "
            f"Fix: strategies=('feature_extraction', 'full_finetune')."
        )
    return STRATEGY_TABLE[name]


def apply_strategy(
    model,
    strategy: str,
    *,
    num_classes: int,
    lr: float,
    thawed_lr_factor: float = 0.1,
    decay: float = 0.3,
    weight_decay: float = 0.0,
    partial_from: str | int | None = None,
) -> list[dict]:
    """Set ``model`` up for ``strategy`` (in place) and return its param groups.

    Freezes by the table's ``trains`` (frozen BatchNorm layers stay in eval, which is the
    ``"freeze"`` policy), puts a fresh ``num_classes`` head on, and builds the groups with
    :func:`labkit.optim.param_groups`, so every strategy gets the same weight-decay
    treatment and every group a ``stage`` key. Rates follow the table's ``lr_rule``.
    ``cached_features`` is set up like ``feature_extraction``; the caller caches.

    Args:
        model: a pretrained classifier.
        strategy: a name from :data:`STRATEGY_TABLE`.
        num_classes: outputs of the new head.
        lr: the new head's learning rate.
        thawed_lr_factor: thawed pretrained stages train at ``lr * thawed_lr_factor``
            (``partial_finetune``; ``full_finetune`` trains everything at that rate).
        decay: factor between neighbouring stages for ``discriminative_finetune``.
        weight_decay: for weight matrices and kernels (biases and norms get none).
        partial_from: first trainable stage for ``partial_finetune`` (default the last body stage).

    Example:
        >>> model = torchvision.models.resnet18(weights=None)
        >>> groups = apply_strategy(model, "partial_finetune", num_classes=5, lr=1e-2)
        >>> [(g["stage"], g["lr"]) for g in groups]
        [('layer4', 0.001), ('fc', 0.01)]
    """
    from labkit.freeze import freeze, freeze_to, unfreeze
    from labkit.heads import replace_head, stages
    from labkit.optim import param_groups

    row = check_strategy(strategy, where="apply_strategy")
    if not 0 < thawed_lr_factor <= 1:
        raise ValueError(
            f"thawed_lr_factor: expected a number in (0, 1] (thawed layers train slower than the new head), "
            f"got {thawed_lr_factor!r}. Fix: thawed_lr_factor=0.1."
        )
    if row.trains == "head":
        freeze(model)
        replace_head(model, num_classes)
    elif row.trains == "last stages + head":
        replace_head(model, num_classes)
        freeze_to(model, partial_from if partial_from is not None else list(stages(model))[-2])
    else:
        replace_head(model, num_classes)
        unfreeze(model)
    if row.lr_rule == "per stage":
        return param_groups(model, base_lr=lr, decay=decay, weight_decay=weight_decay)
    groups = param_groups(model, base_lr=lr, decay=1.0, weight_decay=weight_decay)
    head = list(stages(model))[-1]
    for g in groups:
        if row.lr_rule == "one rate" or (row.lr_rule == "head + thawed" and g["stage"] != head):
            g["lr"] = lr * thawed_lr_factor
    return groups


def bn_advice(n_images: int, domain_gap: float) -> str:
    """Return ``"freeze"`` (keep BatchNorm in eval, statistics kept) or ``"update"`` (let statistics adapt).

    With little data, batch statistics are noisy and frozen layers must see the inputs the way
    they were trained, so BatchNorm stays frozen; with plenty of data, its statistics can
    follow the new domain.

    Example:
        >>> bn_advice(50_000, 0.1)
        'update'
    """
    return STRATEGY_TABLE[choose_strategy(n_images, domain_gap)].batchnorm


class Advice(NamedTuple):
    """A strategy, what to do with BatchNorm, and why."""

    strategy: str
    bn: str
    reason: str

    def __str__(self) -> str:
        return f"{self.strategy} (BatchNorm: {self.bn}): {self.reason}"


def advise(n_images: int, domain_gap: float) -> Advice:
    """Strategy, BatchNorm advice and the reason, for one point of the plane.

    Example:
        >>> print(advise(300, 0.9))
        partial_finetune (BatchNorm: freeze): little data on an unfamiliar domain: ...
    """
    strategy, bn = choose_strategy(n_images, domain_gap), bn_advice(n_images, domain_gap)
    reason = _REASONS[(strategy, bn)]
    if strategy == "full_finetune" and domain_gap >= 0.8 and n_images >= 1_000_000:
        reason += "; with this much very distant data, training from scratch is worth a try"
    return Advice(strategy, bn, reason)


def plot_plane(points: dict[str, tuple[int, float]] | None = None, *, ax=None):
    """Draw the data-size by domain-gap plane with its quadrants, and mark ``points`` on it.

    Args:
        points: label -> (n_images, domain_gap), e.g. ``{"my cells": (300, 0.9)}``.
        ax: a matplotlib Axes to draw on (a new figure when omitted).

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    points = dict(points or {})
    for label, (n, gap) in points.items():
        _check(n, gap)
    if ax is None:
        # Made through pyplot for the inline backend, then released, so the returned Figure
        # shows exactly once (as the last line of a cell) and figures never pile up.
        fig = plt.figure(figsize=(7, 4.5))
        plt.close(fig)
        ax = fig.subplots()
    else:
        fig = ax.figure
    lo, hi = 10, 10_000_000
    colours = {"feature_extraction": "#cfe8cf", "partial_finetune": "#fde2b8", "full_finetune": "#cddcf3"}
    for x0, x1 in ((lo, SMALL_DATA), (SMALL_DATA, hi)):
        for y0, y1 in ((0, DISTANT_GAP), (DISTANT_GAP, 1)):
            n_mid, gap_mid = int(math.sqrt(x0 * x1)), (y0 + y1) / 2
            strategy = choose_strategy(n_mid, gap_mid)
            ax.axvspan(x0, x1, ymin=y0, ymax=y1, color=colours[strategy], zorder=0)
            ax.text(n_mid, gap_mid, f"{strategy.replace('_', ' ')}\nBN: {bn_advice(n_mid, gap_mid)}",
                    ha="center", va="center", fontsize=9, color="#333333")
    for label, (n, gap) in points.items():
        ax.plot([n], [gap], "o", color="#c0392b", zorder=3)
        ax.annotate(label, (n, gap), textcoords="offset points", xytext=(6, 6), fontsize=9, zorder=3)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, 1)
    ax.set_xlabel("labelled training images (log scale)")
    ax.set_ylabel("domain gap (0 = ImageNet-like photos)")
    ax.set_title("Choosing a transfer strategy")
    return fig
