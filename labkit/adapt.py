"""Adapt a trained model to a new domain without labels: re-estimate BatchNorm statistics (AdaBN).

A network trained on one scanner normalises every BatchNorm layer's input with the mean and
variance it saw on that scanner. On images from another scanner (another stain, lamp, focus)
those statistics are off, and every later layer receives inputs scaled differently from what
it was trained on. AdaBN (Li et al. 2016, "Revisiting Batch Normalization For Practical Domain
Adaptation") replaces them with the statistics of the new domain, measured on unlabelled
images: no labels, no gradient, no weight changes.

:func:`adapt_batchnorm` does exactly that: it resets each BatchNorm layer's running mean and
variance and re-estimates them as a cumulative average over the loader (``momentum=None``
during the pass, so every batch counts equally), then restores everything else: weights,
every other buffer (``num_batches_tracked`` included), the BatchNorm momentum, and the
train/eval mode of every module.

Frozen BatchNorm layers. :func:`labkit.freeze.freeze` holds frozen BatchNorm layers in eval
mode with a forward pre-hook, so that training never changes their statistics. Adaptation
is the one place where changing them is the point: during the pass :func:`adapt_batchnorm`
adds its own pre-hook, which runs after labkit's and puts the layer back in training mode.
The layers stay frozen (and held) afterwards.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from labkit._batches import batch_images

__all__ = ["adapt_batchnorm", "batchnorm_layers"]

_BN = nn.modules.batchnorm._BatchNorm


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The BatchNorm layers of ``model`` that keep running statistics, as ``(name, layer)`` pairs.

    Example:
        >>> len(batchnorm_layers(torchvision.models.resnet18(weights=None)))
        20
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"batchnorm_layers expected an nn.Module, got {type(model).__name__}.")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BN) and m.track_running_stats
            and m.running_mean is not None]


def _force_train(bn: nn.Module, args: tuple) -> None:
    """Forward pre-hook used only during adaptation: the layer uses and records batch statistics."""
    bn.training = True


def adapt_batchnorm(model: nn.Module, loader: Iterable, *, max_batches: int | None = None,
                    device: str | torch.device | None = None) -> nn.Module:
    """Re-estimate every BatchNorm layer's running statistics on ``loader`` (AdaBN); nothing else changes.

    Each BatchNorm layer's ``running_mean`` and ``running_var`` are reset and replaced by the
    average, over the batches of ``loader``, of the batch mean and (unbiased) variance of its
    input, computed with every layer before it already adapted (one forward pass per batch,
    ``torch.no_grad``). Labels in the batches are ignored. Afterwards every parameter and every
    other buffer (``num_batches_tracked`` included) is bit for bit what it was, and so are each
    BatchNorm layer's ``momentum`` and every module's train/eval mode. Works in place and
    returns ``model``. Layers frozen with :func:`labkit.freeze.freeze` are adapted too (see
    the module docstring).

    Args:
        model: a trained network with BatchNorm layers.
        loader: batches of images, or of ``(images, labels)``, from the new domain (unlabelled
            is fine). Use batches of 16 or more: each batch's variance is one estimate.
        max_batches: stop after this many batches (default: the whole loader).
        device: where to run; default: where the model's parameters are.

    Raises:
        ValueError: the model has no BatchNorm layer with running statistics, or the loader is empty.

    Example:
        >>> model = torchvision.models.resnet18(weights=None)
        >>> images = [torch.randn(8, 3, 64, 64) for _ in range(4)]
        >>> adapt_batchnorm(model, images) is model
        True
    """
    layers = _check_adapt(model, loader, max_batches)
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    modes = {m: m.training for m in model.modules()}
    saved = {m: (m.momentum, m.running_mean.clone(), m.running_var.clone(),
                 None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in layers}
    hooks = []
    try:
        model.eval()  # dropout and everything else off; only BatchNorm runs in training mode
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: running = mean over batches so far
            m.train()
            hooks.append(m.register_forward_pre_hook(_force_train))  # runs after labkit.freeze's hold hook
        _forward_batches(model, loader, max_batches, device)
    except BaseException:
        for m, (_, mean, var, _n) in saved.items():  # leave the model as it was
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        raise
    finally:
        for h in hooks:
            h.remove()
        for m, (momentum, _, _, count) in saved.items():
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)
        for m, mode in modes.items():
            m.training = mode
    return model


def _check_adapt(model, loader, max_batches) -> list[nn.Module]:
    """adapt_batchnorm's input checks; returns the BatchNorm layers to adapt."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"adapt_batchnorm expected an nn.Module as model, got {type(model).__name__}.")
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}.")
    if isinstance(loader, (torch.Tensor, str, bytes)) or not hasattr(loader, "__iter__"):
        raise TypeError(f"adapt_batchnorm expected an iterable of image batches (a DataLoader) as loader, got "
                        f"{type(loader).__name__}. Wrap a single tensor as [images].")
    layers = [m for _, m in batchnorm_layers(model)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer with running statistics, so there is "
                         "nothing to adapt (AdaBN needs BatchNorm; GroupNorm/LayerNorm models keep no statistics).")
    return layers


def _forward_batches(model: nn.Module, loader, max_batches: int | None, device: torch.device) -> None:
    """One forward pass per batch without gradient; an empty loader is an error."""
    seen = 0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x = batch_images(batch, "adapt_batchnorm: loader")
            model(x.to(device, non_blocking=True))
            seen += 1
    if seen == 0:
        raise ValueError("adapt_batchnorm: the loader gave no batches; pass a DataLoader over the new domain's "
                         "images.")
