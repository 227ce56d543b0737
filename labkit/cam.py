"""Grad-CAM: which part of an image made the network say what it said.

Grad-CAM (Selvaraju et al., 2017) takes the gradient of one class's logit with respect to a
convolutional feature map, averages it over space to get one weight per channel, sums the
channels with those weights and keeps the positive part (ReLU). The result is a coarse map,
at the layer's resolution, of the places whose features raised that class's score.

:func:`grad_cam` picks its layer the way the course finds everything, by name: the last stage
before the head (:func:`labkit.heads.stages`) whose output is a 4-D feature map, found by
running the model once with hooks. A Vision Transformer has no such map: its blocks output
token sequences, and the patch tokens (the class token dropped) are reshaped to their grid.
There the default layer is the *input* of the last block, because the head reads only the class
token, so the last block's own patch outputs never reach the logit (their gradient is zero).

:func:`plot_cam` draws a map over its image, undoing the normalisation when given ``mean`` and ``std``.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit._batches import logits_of, model_device
from labkit._images import displayable

__all__ = ["grad_cam", "default_cam_layer", "plot_cam"]


# --------------------------------------------------------------------------- layer choice
def _stage_outputs(model: nn.Module) -> list[tuple[str, str]]:
    """(stage name, dotted name of the module whose output is the stage's output), stem to last body stage."""
    from labkit.heads import stages

    names = {id(m): n for n, m in model.named_modules() if n}
    out = []
    for stage, module in list(stages(model).items())[:-1]:  # the last stage holds the head
        if type(module).__name__ == "_StageGroup":
            members = [m for m in module.children()]
            if not members:  # only parameters (e.g. a ViT class token)
                continue
            module = members[-1]
        if id(module) in names:
            out.append((stage, names[id(module)]))
    return out


def _output_kind(output) -> str | None:
    if isinstance(output, torch.Tensor):
        if output.dim() == 4:
            return "map"
        if output.dim() == 3 and _token_grid(output.shape[1]) is not None:
            return "tokens"
    return None


def _token_grid(n_tokens: int) -> tuple[int, int] | None:
    """(leading tokens to drop, grid side) for a square grid of patches, or None."""
    for extra in (0, 1, 2):  # none, a class token, class + distillation tokens
        side = math.isqrt(max(n_tokens - extra, 0))
        if side > 1 and side * side == n_tokens - extra:
            return extra, side
    return None


def default_cam_layer(model: nn.Module, images: torch.Tensor) -> str:
    """The dotted module name :func:`grad_cam` uses when no ``layer`` is given.

    The last stage before the head whose output is a 4-D feature map, found by running
    ``images`` through the model once with hooks (eval mode, no gradients; the mode is restored).
    For a transformer (stages that output token sequences) it is the output of the last block
    but one, i.e. the input of the last block.

    Args:
        model: a classification network.
        images: a batch the model accepts (one image is enough).

    Example:
        >>> default_cam_layer(torchvision.models.resnet18(weights=None), torch.rand(1, 3, 64, 64))
        'layer4'
    """
    candidates = _stage_outputs(model)
    kinds: dict[str, str | None] = {}
    handles = []
    modules = dict(model.named_modules())
    for _, name in candidates:
        def record(module, args, output, name=name):
            kinds[name] = _output_kind(output)
        handles.append(modules[name].register_forward_hook(record))
    was_training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(images[:1].to(model_device(model) or images.device))
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training.items():
            m.training = flag
    maps = [name for _, name in candidates if kinds.get(name) == "map"]
    tokens = [name for _, name in candidates if kinds.get(name) == "tokens"]
    if tokens and (not maps or candidates[-1][1] in tokens):
        if len(tokens) < 2:
            raise ValueError(f"grad_cam: {type(model).__name__} has only one token stage ({tokens[0]!r}); the head "
                             "reads its class token, so its patch tokens get no gradient. Fix: pass layer=... naming "
                             "a module inside that stage, e.g. its first normalisation layer.")
        return tokens[-2]
    if not maps:
        raise ValueError(f"grad_cam: no stage of {type(model).__name__} before the head outputs a 4-D feature map "
                         f"(stages: {', '.join(s for s, _ in candidates)}). Fix: pass layer='<dotted name>' of a "
                         "convolutional layer (see model.named_modules()).")
    return maps[-1]


# --------------------------------------------------------------------------- checks
def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"grad_cam: expected images as a tensor (N, C, H, W), got {type(images).__name__}. "
                        "Fix: pass a preprocessed batch, e.g. torch.stack([backbone.eval_transform(img)]).")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"grad_cam: expected images of shape (N, C, H, W) or (C, H, W), got {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise ValueError("grad_cam: expected at least one image, got an empty batch (N = 0). Fix: pass images[:1] "
                         "or more.")
    return images


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"grad_cam: expected an nn.Module, got {type(model).__name__}.")
    if not any(isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d)) for m in model.modules()):
        raise ValueError(f"grad_cam: expected a convolutional network (or a ViT with its patch convolution), got "
                         f"{type(model).__name__} without any nn.Conv2d: it has no spatial feature map to explain. "
                         "Fix: use a CNN such as a ResNet or an EfficientNet.")


def _check_layer(model: nn.Module, layer: str) -> None:
    names = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in names or not layer:
        stage_list = ", ".join(f"{s} -> {n!r}" for s, n in _stage_outputs(model))
        raise ValueError(f"grad_cam: {type(model).__name__} has no layer named {layer!r}. Expected the dotted name "
                         f"of a module; the stages' outputs are: {stage_list} (any name from model.named_modules() "
                         "works). Fix: layer=None picks the last convolutional stage.")


def _targets(target, logits: torch.Tensor) -> torch.Tensor:
    n, classes = logits.shape
    if target is None:
        return logits.argmax(1)
    if isinstance(target, bool):
        raise TypeError("grad_cam: target must be a class index, got a bool.")
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"grad_cam: target must hold integer class indices, got dtype {t.dtype}.")
    t = t.reshape(-1).to(logits.device)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"grad_cam: expected one target per image ({n}) or a single int, got {t.numel()} targets.")
    bad = t[(t < 0) | (t >= classes)]
    if bad.numel():
        raise ValueError(f"grad_cam: target {int(bad[0])} is out of range: the model has {classes} classes "
                         f"(0..{classes - 1}). Fix: pass a class index below {classes}, or target=None for the "
                         "predicted class.")
    return t.long()


# --------------------------------------------------------------------------- the map
def _as_map(act: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature map and its gradient as (N, C, h, w), reshaping transformer tokens to their grid."""
    if act.dim() == 4:
        return act, grad
    extra, side = _token_grid(act.shape[1])
    def grid(t):
        return t[:, extra:, :].transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)
    return grid(act), grid(grad)


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    *,
    target: int | Sequence[int] | torch.Tensor | None = None,
    layer: str | None = None,
    upsample: bool = False,
) -> torch.Tensor:
    """Grad-CAM maps, one per image, each in [0, 1] (divided by its own maximum; all zeros if nothing is positive).

    The model runs in eval mode; its mode, ``requires_grad`` flags, hooks and ``.grad`` fields are
    left as found, and ``images`` is not changed (gradients are taken with ``torch.autograd.grad``).

    Args:
        model: a classifier (torchvision ResNet / EfficientNet, timm's EfficientNets, a ViT ...).
        images: a preprocessed batch (N, C, H, W), or one image (C, H, W).
        target: the class to explain: ``None`` (the predicted class), one int for every image, or
            one index per image.
        layer: dotted module name (``model.named_modules()``); default :func:`default_cam_layer`.
            A layer that outputs tokens (N, L, C) is reshaped to its square grid of patches.
        upsample: resize the maps to the images' H x W (bilinear) instead of the layer's h x w.

    Example:
        >>> grad_cam(torchvision.models.resnet18(weights=None), torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 2, 2])
    """
    _check_model(model)
    images = _check_images(images)
    if layer is not None:
        _check_layer(model, layer)
    dev = model_device(model) or images.device
    x = images.detach().to(dev).clone()
    layer = layer if layer is not None else default_cam_layer(model, x)
    module = model.get_submodule(layer)
    store: dict[str, torch.Tensor] = {}
    def keep(mod, args, output):
        store["act"] = output
    was_training = {m: m.training for m in model.modules()}
    handle = module.register_forward_hook(keep)
    try:
        model.eval()
        with torch.enable_grad():
            x.requires_grad_(True)  # a graph exists even when every parameter is frozen
            logits = logits_of(model(x))
            act = store.get("act")
            if not isinstance(act, torch.Tensor) or _output_kind(act) is None:
                shape = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
                raise ValueError(f"grad_cam: layer {layer!r} outputs {shape}; expected a 4-D feature map (N, C, h, w) "
                                 "or transformer tokens (N, L, C) on a square grid. Fix: pick a convolutional stage.")
            t = _targets(target, logits)
            score = logits.gather(1, t[:, None]).sum()
            grad, = torch.autograd.grad(score, act, allow_unused=False)
    finally:
        handle.remove()
        for m, flag in was_training.items():
            m.training = flag
    act, grad = _as_map(act.detach().float(), grad.detach().float())
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(1))
    if not torch.any(grad):
        warnings.warn(f"grad_cam: the target logit does not depend on layer {layer!r} (its gradient is zero), so "
                      "the maps are empty. Likely causes: a zero-initialised head (train it first), or, on a ViT, the "
                      "last block's patch tokens, which the class-token head never reads (layer=None picks the "
                      "input of the last block).", stacklevel=2)
    if upsample:
        cam = F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1)[:, None, None]
    cam = torch.where(peak > 0, cam / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(cam))
    return cam.clamp_(0, 1).cpu()


# --------------------------------------------------------------------------- plotting
def plot_cam(image, cam: torch.Tensor, *, ax=None, alpha: float = 0.5, title: str | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None, cmap: str = "jet"):
    """Overlay a Grad-CAM map on its image and return the Figure (neither input is changed).

    Args:
        image: a normalised tensor (C, H, W) (give ``mean`` and ``std`` to undo the normalisation)
            or a displayable array (H, W, 3) in [0, 1] or 0..255.
        cam: the map (h, w), e.g. ``grad_cam(model, x)[0]``; resized to the image (bilinear).
        ax: draw into this Axes (default: a new Figure).
        alpha: opacity of the map.
        title: the Axes title.
        mean, std: the normalisation the image went through.
        cmap: matplotlib colormap of the map.

    Example:
        >>> fig = plot_cam(x[0], grad_cam(model, x)[0], mean=[0.5] * 3, std=[0.5] * 3)  # doctest: +SKIP
    """
    from matplotlib.figure import Figure

    if not 0 <= alpha <= 1:
        raise ValueError(f"plot_cam: alpha must be in [0, 1], got {alpha!r}.")
    arr = displayable(image, mean, std)
    heat = torch.as_tensor(cam).detach().cpu().float()
    if heat.dim() == 3 and heat.shape[0] == 1:
        heat = heat[0]
    if heat.dim() != 2:
        raise ValueError(f"plot_cam: expected one map (h, w), got shape {tuple(heat.shape)}. Fix: pass cams[i].")
    if tuple(heat.shape) != arr.shape[:2]:
        heat = F.interpolate(heat[None, None], size=arr.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    if ax is None:
        fig = Figure(figsize=(4, 4 * arr.shape[0] / arr.shape[1]), layout="constrained")
        ax = fig.subplots()
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
    ax.imshow(heat.numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title, fontsize="medium")
    return ax.figure
