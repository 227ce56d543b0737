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

The domain gap need not be a guess: :func:`measure_domain_gap` reads it from one forward
pass, as how far the data's activation statistics sit from the ones every BatchNorm layer
stored during pretraining (:func:`batchnorm_shift`), against real photographs measured the
same way (:func:`reference_photos`).

Partial fine-tuning, architecture-neutral: :func:`choose_partial_from` picks the first stage
to thaw (the last stages holding a quarter of the body's weights); :func:`labkit.features.split_model`
cuts the model there into a frozen bottom and a trainable top that share its layers, and
:func:`labkit.features.compute_outputs` runs the bottom once so that only the top runs in the training loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import NamedTuple

import torch
from torch import nn

from labkit._tables import render_table

__all__ = [
    "STRATEGIES", "ALL_STRATEGIES", "STRATEGY_TABLE", "Strategy", "strategy_table", "apply_strategy",
    "SMALL_DATA", "DISTANT_GAP", "choose_strategy", "bn_advice", "advise", "Advice", "plot_plane",
    "batchnorm_shift", "measure_domain_gap", "DomainGap", "reference_photos",
    "choose_partial_from",
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
    for n, gap in points.values():
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


# --------------------------------------------------------------------------- measuring the domain gap
def _batches_of(data, where: str):
    """Image batches from a tensor (split into 64s), a DataLoader, or a list of batches."""
    from labkit._batches import batch_images

    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise ValueError(f"{where}: expected images N x C x H x W, got shape {tuple(data.shape)}.")
        return [data[i:i + 64] for i in range(0, len(data), 64)]
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"{where}: expected an image tensor, a DataLoader or a list of batches, got "
                        f"{type(data).__name__}.")
    return (batch_images(batch, where) for batch in data)


def batchnorm_shift(model: nn.Module, data, *, max_batches: int | None = None) -> dict[str, float]:
    """How far ``data``'s activations are from the statistics stored in each BatchNorm layer.

    Every BatchNorm layer keeps the mean and variance of its input channels over the
    pretraining images (``running_mean``, ``running_var``). One forward pass in eval mode
    measures the same two numbers on ``data``; for each channel the distance is the
    2-Wasserstein distance between the two Gaussians, in units of the stored standard
    deviation, ``sqrt((m - m0)**2 + (s - s0)**2) / s0``; a layer's value is the mean over its
    channels. 0: the data looks, to that layer, like the pretraining images; 1: a channel's
    mean or spread is off by one stored standard deviation. Channels whose stored variance is
    exactly 0 (dead filters) are left out. Nothing in the model changes.

    Compare datasets on equal numbers of images: the estimate of a channel's mean and spread
    is noisier on fewer images, which reads as a larger distance.

    Args:
        model: a network with BatchNorm layers (their running statistics are the reference).
        data: images ``N x C x H x W`` preprocessed for ``model``, or a DataLoader of images or
            ``(images, labels)``.
        max_batches: stop after this many batches.

    Returns:
        Layer name -> distance, in the order the layers come in the model.

    Example:
        >>> shift = batchnorm_shift(torchvision.models.resnet18(weights=None), torch.randn(8, 3, 64, 64))
        >>> len(shift), next(iter(shift))
        (20, 'bn1')
    """
    from labkit.adapt import batchnorm_layers

    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(f"batchnorm_shift: {type(model).__name__} has no BatchNorm layer with running statistics, "
                         "so there are no stored statistics to compare with.")
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ValueError(f"batchnorm_shift: max_batches must be a positive int or None, got {max_batches!r}.")
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    sums: dict[str, list] = {}

    def record(name):
        def hook(module, args):
            x = args[0].detach().double().transpose(0, 1).flatten(1)  # channels x values
            s = sums.setdefault(name, [0.0, 0.0, 0])
            s[0], s[1], s[2] = s[0] + x.sum(1), s[1] + (x * x).sum(1), s[2] + x.shape[1]
        return hook

    modes = {m: m.training for m in model.modules()}
    hooks = [bn.register_forward_pre_hook(record(name)) for name, bn in layers]
    seen = 0
    try:
        model.eval()
        with torch.no_grad():
            for i, x in enumerate(_batches_of(data, "batchnorm_shift")):
                if max_batches is not None and i >= max_batches:
                    break
                model(x.to(device))
                seen += 1
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    if seen == 0:
        raise ValueError("batchnorm_shift: data gave no images; pass a tensor of images or a non-empty DataLoader.")
    out = {}
    for name, bn in layers:
        total, squares, count = sums[name]
        mean = total / count
        sd = (squares / count - mean * mean).clamp_min(0).sqrt()
        mean0, var0 = bn.running_mean.double().cpu(), bn.running_var.double().cpu()
        alive = var0 > 0
        dist = (((mean.cpu() - mean0) ** 2 + (sd.cpu() - var0.sqrt()) ** 2) / (var0 + bn.eps)).sqrt()
        out[name] = float(dist[alive].mean()) if alive.any() else 0.0
    return out


class DomainGap(NamedTuple):
    """What :func:`measure_domain_gap` measured.

    Fields: ``gap`` (0 to 1, the number the decision rule takes), ``distance`` (the data's
    mean :func:`batchnorm_shift` over layers, in stored standard deviations), ``reference``
    (the same for the reference photographs) and ``layers`` (layer name -> the data's shift).
    ``float(result)`` is the gap.
    """

    gap: float
    distance: float
    reference: float
    layers: dict

    def __float__(self) -> float:
        return float(self.gap)

    def __str__(self) -> str:
        ratio = self.distance / self.reference
        return (f"domain gap {self.gap:.2f} (BatchNorm shift {self.distance:.3f}, {ratio:.2f}x "
                f"the reference photos' {self.reference:.3f})")


def measure_domain_gap(model: nn.Module, data, *, reference, max_batches: int | None = None) -> DomainGap:
    """The domain gap of ``data`` for ``model``, from 0 (like photographs) towards 1, from one forward pass.

    ``distance`` is the mean over layers of :func:`batchnorm_shift`: how far, in stored
    standard deviations, the data's activations sit from the statistics the network kept
    from its pretraining photos. Real photographs are not at 0 either (other photos, another
    input size than the pretraining one, a finite sample), so the gap is read against a
    ``reference`` set of photographs: ``gap = 1 - reference / distance``, clipped to [0, 1].
    0: no farther than the photos; 0.5 (labkit's :data:`DISTANT_GAP`): twice as far; 0.75:
    four times. It measures how unfamiliar the images' statistics are to the network, not
    whether its features suit the task: a short fine-tuning comparison settles that.

    Args:
        model: a pretrained network with BatchNorm layers.
        data: the dataset's images (tensor ``N x C x H x W``, preprocessed for ``model``) or a DataLoader.
        reference: photographs preprocessed the same way (:func:`reference_photos`), as a
            tensor or DataLoader, or their distance (a positive number) measured before.
            Use as many images as in ``data``: fewer images read as a larger distance.
        max_batches: stop after this many batches of ``data`` (and of ``reference``).

    Returns:
        A :class:`DomainGap`; ``.gap`` goes into :func:`choose_strategy` and :func:`plot_plane`.

    Example:
        >>> print(measure_domain_gap(model, cells_images, reference=photos))  # doctest: +SKIP
        domain gap 0.51 (BatchNorm shift 0.599, 2.06x the reference photos' 0.291)
    """
    if isinstance(reference, bool):
        raise TypeError("measure_domain_gap: reference must be images, a DataLoader or a distance (a number), "
                        "got a bool.")
    if isinstance(reference, Real):
        if not math.isfinite(reference) or reference <= 0:
            raise ValueError(f"measure_domain_gap: a reference distance must be a positive number, got {reference!r}. "
                             "Fix: reference=reference_photos(backbone) (images), or a distance measured on them.")
        ref = float(reference)
    else:
        ref = _mean(batchnorm_shift(model, reference, max_batches=max_batches).values())
        if ref <= 0:
            raise ValueError("measure_domain_gap: the reference images match the stored statistics exactly "
                             "(distance 0), so there is no scale to read the gap against. Fix: use real photographs.")
    layers = batchnorm_shift(model, data, max_batches=max_batches)
    distance = _mean(layers.values())
    gap = 0.0 if distance <= 0 else min(1.0, max(0.0, 1.0 - ref / distance))
    return DomainGap(gap, distance, ref, layers)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def reference_photos(source, *, crops: int = 3, seed: int = 0) -> torch.Tensor:
    """The sample photographs that ship with scikit-image and scikit-learn, preprocessed: a reference for the gap.

    Six everyday photos (an astronaut, a cat, a cup of coffee, a rocket, a Chinese temple, a
    flower), each whole and in ``crops`` random crops (half to three quarters of its side),
    each also mirrored: ``6 * (1 + crops) * 2`` images. For measuring only (nothing in the
    course trains on them).

    Args:
        source: a backbone (or anything :func:`labkit.data.make_eval_transform` accepts), or a
            transform from a PIL image to a tensor.
        crops: random crops per photo.
        seed: chooses the crops.

    Example:
        >>> reference_photos(backbone).shape  # doctest: +SKIP
        torch.Size([48, 3, 112, 112])
    """
    import random

    import numpy as np
    from PIL import Image

    if isinstance(crops, bool) or not isinstance(crops, int) or crops < 0:
        raise ValueError(f"reference_photos: crops must be an int >= 0, got {crops!r}.")
    if callable(source) and not isinstance(source, nn.Module) and not hasattr(source, "meta"):
        transform = source
    else:
        from labkit.data import make_eval_transform

        transform = make_eval_transform(source)
    try:
        import skimage.data
        from sklearn.datasets import load_sample_image
    except ImportError as e:
        raise ImportError("reference_photos needs scikit-image and scikit-learn (their sample photos). "
                          "Fix: pip install scikit-image scikit-learn.") from e
    arrays = [getattr(skimage.data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")]
    arrays += [load_sample_image(name) for name in ("china.jpg", "flower.jpg")]
    rng = random.Random(seed)
    out = []
    for array in arrays:
        photo = Image.fromarray(np.asarray(array)[..., :3])
        views = [photo]
        for _ in range(crops):
            w, h = photo.size
            side = int(min(w, h) * rng.uniform(0.5, 0.75))
            left, top = rng.randrange(w - side + 1), rng.randrange(h - side + 1)
            views.append(photo.crop((left, top, left + side, top + side)))
        for view in views:
            out += [transform(view), transform(view.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
    return torch.stack(out)


def choose_partial_from(model: nn.Module, *, share: float = 0.25) -> str:
    """The first stage to thaw for partial fine-tuning: the last stages holding ``share`` of the body's weights.

    Counting from the stage before the head backwards, stages are added until they hold at
    least ``share`` of the parameters of the body (every stage but the head). The same rule
    gives a comparable thaw on different networks: ResNet-18's ``layer4`` alone holds three
    quarters of its body, while EfficientNet-Lite0 keeps 12% in ``conv_head`` and needs
    ``blocks.6`` too.

    Args:
        model: a network with stages (:func:`labkit.heads.stages`).
        share: the part of the body's parameters to thaw, in (0, 1].

    Example:
        >>> choose_partial_from(torchvision.models.resnet18(weights=None))
        'layer4'
    """
    from labkit.heads import stages

    if isinstance(share, bool) or not isinstance(share, Real) or not 0 < share <= 1:
        raise ValueError(f"choose_partial_from: share must be a number in (0, 1], got {share!r}. Fix: share=0.25.")
    found = list(stages(model).items())
    if len(found) < 2:
        raise ValueError(f"choose_partial_from: {type(model).__name__} has {len(found)} stage(s); partial fine-tuning "
                         "needs a body stage before the head.")
    body = found[:-1]
    sizes = [sum(p.numel() for p in module.parameters()) for _, module in body]
    total, thawed = sum(sizes), 0
    for (name, _), size in zip(reversed(body), reversed(sizes)):
        thawed += size
        if thawed >= share * total:
            return name
    return body[0][0]
