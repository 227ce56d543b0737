"""How far convolution filters moved during fine-tuning: one relative change per filter, and its chart.

``before`` and ``after`` accept what :mod:`labkit.filters` accepts: a model (its first
``nn.Conv2d``, or the conv layer named by ``layer=``), a conv module, a 4-D weight tensor or a
state dict. Nothing here changes its input; the chart is a ``matplotlib.figure.Figure`` that
pyplot has already let go of.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from labkit._conv import Source, conv_layers, new_figure, weight_of

__all__ = ["filter_drift", "plot_filter_drift"]


def _layer_weight(source: Source, layer: str | None, what: str) -> tuple[str, torch.Tensor]:
    if layer is None:
        return weight_of(source, what)
    if isinstance(source, nn.Module):
        layers = conv_layers(source)
        if layer not in layers:
            some = ", ".join(list(layers)[:6])
            raise KeyError(f"{what} has no conv layer named {layer!r}; conv layers are: {some}"
                           f"{', ...' if len(layers) > 6 else ''}.")
        return layer, layers[layer].weight.detach().to("cpu", torch.float32).clone()
    if isinstance(source, Mapping):
        key = f"{layer}.weight"
        if key not in source:
            raise KeyError(f"{what} (a state dict) has no entry {key!r}.")
        return weight_of({key: source[key]}, what)
    raise ValueError(f"layer={layer!r} only applies to models and state dicts; {what} is a "
                     f"{type(source).__name__}. Drop layer= or pass the model.")


def filter_drift(before: Source, after: Source, *, layer: str | None = None) -> torch.Tensor:
    """How far each filter moved: ``||after_i - before_i|| / ||before_i||`` per filter.

    Args:
        before, after: models, conv layers, 4-D weight tensors or state dicts (e.g. a deep copy
            of the model taken before fine-tuning, and the model after).
        layer: dotted name of the conv layer to compare (models and state dicts only);
            default: the first conv.

    Returns:
        A float tensor with one relative change per filter (0 = unchanged; a filter that was
        all zeros before gives inf if it changed).

    Example:
        >>> after = copy.deepcopy(model)
        >>> with torch.no_grad(): after.conv1.weight[0] *= 1.1
        >>> filter_drift(model, after)[:3]
        tensor([0.1000, 0.0000, 0.0000])
    """
    name_b, wb = _layer_weight(before, layer, "before")
    name_a, wa = _layer_weight(after, layer, "after")
    if wb.shape != wa.shape:
        raise ValueError(
            f"before and after must have the same filter shape; got {tuple(wb.shape)} ({name_b}) and "
            f"{tuple(wa.shape)} ({name_a}). Compare the same layer of the same architecture."
        )
    change = (wa - wb).flatten(1).norm(dim=1)
    size = wb.flatten(1).norm(dim=1)
    return torch.where(size > 0, change / size.clamp_min(1e-30),
                       torch.where(change > 0, torch.full_like(change, math.inf), torch.zeros_like(change)))


def plot_filter_drift(before: Source, after: Source | Mapping[str, Source], *,
                      layer: str | None = None) -> Figure:
    """Bar chart of each filter's relative change (``filter_drift``), mean in the legend.

    Args:
        before: the starting point (model, conv layer, weight tensor or state dict).
        after: the end point, or a dict {label: end point} to compare runs from the same start,
            e.g. {"one learning rate": a, "discriminative": b}.
        layer: dotted conv layer name (models and state dicts only); default: the first conv.

    Example:
        >>> fig = plot_filter_drift(before, {"one lr": a, "discriminative": b})
    """
    runs = dict(after) if isinstance(after, Mapping) and not _is_state_dict(after) else {"after": after}
    drifts = {str(label): filter_drift(before, a, layer=layer) for label, a in runs.items()}
    name = layer or _layer_weight(before, None, "before")[0]
    n = next(iter(drifts.values())).shape[0]
    fig = new_figure((max(6.0, min(14.0, 0.12 * n + 2)), 3.2))
    ax = fig.subplots()
    width = 0.85 / len(drifts)
    for k, (label, d) in enumerate(drifts.items()):
        ax.bar(np.arange(n) + (k - (len(drifts) - 1) / 2) * width, d.numpy(), width=width,
               label=f"{label} (mean {float(d.mean()):.3g})")
    ax.set_xlabel("filter")
    ax.set_ylabel("relative change")
    ax.set_xlim(-0.7, n - 0.3)
    top = max(float(d[torch.isfinite(d)].max()) if torch.isfinite(d).any() else 0.0 for d in drifts.values())
    ax.set_ylim(0, 1.3 * top if top > 0 else 1.0)
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    ax.set_title(f"{name}: how far each filter moved, \u2016after \u2212 before\u2016 / \u2016before\u2016",
                 fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.16, top=0.88)
    return fig


def _is_state_dict(obj) -> bool:
    """A state dict has parameter names as keys ("conv1.weight"); a dict of runs has labels."""
    return isinstance(obj, Mapping) and any(str(k).endswith((".weight", ".bias")) for k in obj)
