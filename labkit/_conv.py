"""Finding convolution weights (private to labkit): what :mod:`labkit.filters` and :mod:`labkit.drift` share.

``conv_layers`` and ``first_conv`` are public as :func:`labkit.filters.conv_layers` and
:func:`labkit.filters.first_conv`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

__all__ = ["Source", "conv_layers", "first_conv", "weight_of", "new_figure"]

Source = Union[nn.Module, torch.Tensor, np.ndarray, Mapping]


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every ``nn.Conv2d`` of ``model``, by dotted name, in registration order.

    Args:
        model: any ``nn.Module``; a conv module on its own is returned under the name "".

    Example:
        >>> list(conv_layers(torchvision.models.resnet18(weights=None)))[:3]
        ['conv1', 'layer1.0.conv1', 'layer1.0.conv2']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a model (an nn.Module with conv layers), got {type(model).__name__}; "
                        "to look at a weight tensor directly, use plot_filters(weight).")
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The model's first ``nn.Conv2d`` (registration order) and its dotted name.

    Args:
        model: a CNN, or a ViT (its patch embedding is a conv).

    Example:
        >>> first_conv(torchvision.models.vit_b_16(weights=None))[0]
        'conv_proj'
    """
    layers = conv_layers(model)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no nn.Conv2d layer, so it has no filters to show. "
            "Expected a CNN (e.g. torchvision resnet18) or a ViT (its patch embedding is a conv); "
            "or pass a 4-D weight tensor directly."
        )
    return next(iter(layers.items()))


def weight_of(source: Source, what: str = "source") -> tuple[str, torch.Tensor]:
    """(name, detached float32 CPU copy of a 4-D weight) for any accepted source."""
    if isinstance(source, nn.Conv2d):
        name, weight = type(source).__name__, source.weight
    elif isinstance(source, nn.Module):
        name, conv = first_conv(source)
        weight = conv.weight
    elif isinstance(source, Mapping):
        found = [(k, v) for k, v in source.items()
                 if str(k).endswith("weight") and torch.is_tensor(v) and v.dim() == 4]
        if not found:
            raise ValueError(
                f"the state dict given as {what} has no 4-D '*.weight' entry (a conv weight); "
                "pass a model, a conv layer or a 4-D weight tensor instead."
            )
        key, weight = found[0]
        name = str(key)[: -len(".weight")] if str(key).endswith(".weight") else str(key)
    elif isinstance(source, (torch.Tensor, np.ndarray)):
        name, weight = "weight", torch.as_tensor(source)
    else:
        raise TypeError(
            f"{what} must be a model, a conv layer, a 4-D weight tensor or a state dict; "
            f"got {type(source).__name__}."
        )
    if isinstance(weight, torch.nn.parameter.UninitializedParameter):
        raise ValueError(f"{what} is a lazy conv that has not seen an input yet; run one batch through it first.")
    if weight.dim() != 4:
        raise ValueError(
            f"{what} must be a 4-D weight (filters x input channels x height x width); "
            f"got a {weight.dim()}-D tensor of shape {tuple(weight.shape)}. "
            "Pass a conv layer's weight, e.g. model.conv1.weight."
        )
    if 0 in weight.shape:
        raise ValueError(
            f"{what} has no filters to show or score: got a weight of shape {tuple(weight.shape)}; expected "
            "N x C x H x W with every size at least 1. Fix: pass a non-empty weight (check the slice or index "
            "that picked the filters)."
        )
    return name, weight.detach().to("cpu", torch.float32).clone()


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure made through pyplot (so a notebook knows how to show it), then released by it.

    Released figures are not shown again at the end of a notebook cell and never pile up in
    pyplot's list, yet display once when returned and can be saved.
    """
    fig = plt.figure(figsize=figsize)
    plt.close(fig)
    return fig
