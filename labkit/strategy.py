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
"""
from __future__ import annotations

import math
from numbers import Real
from typing import NamedTuple

__all__ = ["STRATEGIES", "SMALL_DATA", "DISTANT_GAP", "choose_strategy", "bn_advice", "advise", "Advice", "plot_plane"]

STRATEGIES = ("feature_extraction", "partial_finetune", "full_finetune")
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


def bn_advice(n_images: int, domain_gap: float) -> str:
    """Return ``"freeze"`` (keep BatchNorm in eval, statistics kept) or ``"update"`` (let statistics adapt).

    With little data, batch statistics are noisy and frozen layers must see the inputs the way
    they were trained, so BatchNorm stays frozen; with plenty of data, its statistics can
    follow the new domain.

    Example:
        >>> bn_advice(50_000, 0.1)
        'update'
    """
    _check(n_images, domain_gap)
    return "update" if n_images >= SMALL_DATA else "freeze"


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
