"""LoRA with Hugging Face ``peft``: the few things the course adds to it.

``peft`` does the LoRA itself (``LoraConfig``, ``get_peft_model``, ``save_pretrained``,
``merge_and_unload``); lessons call it directly. This module adds only what ``peft`` leaves
to the user and the lessons need:

* :func:`lora_targets`: which layers to adapt, chosen by kind and by stage (``labkit.stages``),
  the same call for a CNN (1x1 convolutions, linear maps over channels) and a vision transformer
  (its MLP ``nn.Linear`` layers and its ``nn.MultiheadAttention`` blocks); the head is never a target.
* :func:`head_name`: the head's dotted name, for ``modules_to_save`` (without it the saved
  adapter holds no head at all).
* :func:`count_lora_parameters`: what trains, split into LoRA matrices and saved modules.
* :func:`hold_frozen_batchnorm`: keep every frozen BatchNorm layer of a (peft) model in eval
  mode, so training leaves the running statistics, which the adapter file does not hold, as
  the pretrained backbone has them.

Example:
    >>> from peft import LoraConfig, get_peft_model
    >>> model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=5)
    >>> config = LoraConfig(r=4, lora_alpha=4, target_modules=lora_targets(model),
    ...                     modules_to_save=[head_name(model)])
    >>> peft_model = hold_frozen_batchnorm(get_peft_model(model, config))
    >>> count_lora_parameters(peft_model).saved
    5125
"""
from __future__ import annotations

from typing import NamedTuple

from torch import nn

from labkit._validate import check_module
from labkit.freeze import freeze
from labkit.heads import get_head_name, stages

__all__ = ["LORA_KINDS", "LoraCount", "count_lora_parameters", "head_name", "hold_frozen_batchnorm", "lora_targets"]

#: Layer kinds :func:`lora_targets` can choose: 1x1 convolutions (groups=1), ``nn.Linear`` layers
#: (outside attention blocks), and ``nn.MultiheadAttention`` blocks (peft adapts their packed
#: query/key/value projection and their output projection together).
LORA_KINDS = ("conv1x1", "linear", "attention")

_BN = nn.modules.batchnorm._BatchNorm


def _is_pointwise(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1
            and not isinstance(module, nn.Conv3d))


def _kind_of(module: nn.Module) -> str | None:
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    if isinstance(module, nn.Linear):
        return "linear"
    if _is_pointwise(module):
        return "conv1x1"
    return None


def _check_kinds(kinds) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = (kinds,)
    if not isinstance(kinds, (tuple, list)) or not kinds or any(k not in LORA_KINDS for k in kinds):
        raise ValueError(f"lora_targets expected kinds to be a non-empty tuple drawn from {LORA_KINDS}, got {kinds!r}. "
                         "Fix: kinds=('conv1x1', 'linear', 'attention') (the default) or a subset of it.")
    return tuple(kinds)


def _stage_slice(names: list[str], first_stage, last_stage) -> tuple[int, int]:
    body = names[:-1]  # the last stage holds the head, never a target

    def index(stage, which: str, default: int) -> int:
        if stage is None:
            return default
        if isinstance(stage, str) and stage in body:
            return body.index(stage)
        why = "it is the head's stage (the head goes in modules_to_save)" if stage == names[-1] else "no such stage"
        raise ValueError(f"lora_targets expected {which} to be one of the model's body stages {body}, got {stage!r} "
                         f"({why}). Fix: {which}={body[len(body) // 2]!r}, or None for all of them.")

    lo, hi = index(first_stage, "first_stage", 0), index(last_stage, "last_stage", len(body) - 1)
    if lo > hi:
        raise ValueError(f"lora_targets expected first_stage ({first_stage!r}) to come no later than last_stage "
                         f"({last_stage!r}) in {body}. Fix: swap them.")
    return lo, hi


def lora_targets(model: nn.Module, *, kinds: tuple[str, ...] = LORA_KINDS, first_stage: str | None = None,
                 last_stage: str | None = None) -> list[str]:
    """Dotted names of the layers LoRA should adapt, for ``LoraConfig(target_modules=...)``.

    Chooses, in the stages ``first_stage`` .. ``last_stage`` of :func:`labkit.stages` (default:
    every stage but the head's), the layers of the given ``kinds`` that are linear maps over
    features: 1x1 convolutions with ``groups=1`` (``"conv1x1"``: a matrix applied to every pixel's
    channels), ``nn.Linear`` layers (``"linear"``) and ``nn.MultiheadAttention`` blocks
    (``"attention"``). The ``nn.Linear`` inside an attention block (its ``out_proj``) is never
    chosen on its own: ``nn.MultiheadAttention`` does not call it, so a LoRA there would never
    be used; peft adapts it through the block. Call it on the plain model, before
    ``get_peft_model``.

    Args:
        model: a classification network whose stages :func:`labkit.stages` finds.
        kinds: which layer kinds to choose, from ``LORA_KINDS``.
        first_stage: the first stage to adapt (by name), e.g. ``"blocks.4"``; ``None``: the first one.
        last_stage: the last stage to adapt; ``None``: the last stage before the head.

    Returns:
        the layers' names in registration order (a list of str; peft matches them exactly).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: an unknown kind or stage, or no layer of those kinds in those stages.

    Example:
        >>> vit = torchvision.models.vit_b_16(weights=None)
        >>> lora_targets(vit)[:3]
        ['encoder.layers.encoder_layer_0.self_attention', 'encoder.layers.encoder_layer_0.mlp.0',
         'encoder.layers.encoder_layer_0.mlp.3']
        >>> len(lora_targets(timm.create_model("tf_efficientnet_lite0")))   # 31 conv_pw/conv_pwl + conv_head
        32
    """
    check_module(model, "lora_targets")
    kinds = _check_kinds(kinds)
    parts = stages(model)
    names = list(parts)
    lo, hi = _stage_slice(names, first_stage, last_stage)
    chosen_stages = [parts[n] for n in names[lo:hi + 1]]
    inside = {id(m) for stage in chosen_stages for m in stage.modules()}
    in_attention = {id(inner) for block in model.modules() if isinstance(block, nn.MultiheadAttention)
                    for inner in block.modules() if inner is not block}
    head = _head_path_or_none(model)
    out = [name for name, m in model.named_modules()
           if name and id(m) in inside and id(m) not in in_attention and name != head and _kind_of(m) in kinds]
    if not out:
        raise ValueError(f"lora_targets found no layer of kinds {kinds} in the stages {names[lo:hi + 1]} of "
                         f"{type(model).__name__}. Fix: widen kinds to {LORA_KINDS} or the stages (first_stage=None), "
                         "or pass target_modules to LoraConfig yourself (peft also adapts kxk convolutions).")
    return out


def _head_path_or_none(model: nn.Module) -> str | None:
    try:
        return get_head_name(model)
    except ValueError:
        return None


def head_name(model: nn.Module) -> str:
    """The head's dotted name, for ``LoraConfig(modules_to_save=[head_name(model)])``.

    A new head is trained in full and must be saved with the adapter; peft saves only the
    LoRA matrices and the modules listed in ``modules_to_save``.

    Example:
        >>> head_name(torchvision.models.vit_b_16(weights=None)), head_name(torchvision.models.resnet18())
        ('heads.head', 'fc')
    """
    check_module(model, "head_name")
    if any(".modules_to_save." in n or ".lora_" in n for n, _ in model.named_parameters()):
        raise ValueError("head_name expected the plain model, got one that peft has already wrapped. "
                         "Fix: call head_name(model) before get_peft_model(model, config).")
    return get_head_name(model)


class LoraCount(NamedTuple):
    """Parameters of a peft model: ``lora`` (the A and B matrices), ``saved`` (trainable copies
    from ``modules_to_save``, e.g. the head), ``trainable`` (all that train), ``total`` (every
    parameter, as ``print_trainable_parameters`` counts them) and ``fraction`` (trainable / total)."""

    lora: int
    saved: int
    trainable: int
    total: int
    fraction: float

    def __str__(self) -> str:
        return (f"trainable {self.trainable:,} of {self.total:,} ({self.fraction:.2%}): "
                f"LoRA matrices {self.lora:,}, saved modules {self.saved:,}")


def count_lora_parameters(model: nn.Module) -> LoraCount:
    """Count what a peft model trains: LoRA matrices, modules in ``modules_to_save``, and the rest.

    Example:
        >>> lin = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
        >>> pm = get_peft_model(lin, LoraConfig(r=2, target_modules=["0"], modules_to_save=["2"]))
        >>> count_lora_parameters(pm)      # 2 * (10 + 20) = 60; head 20 * 3 + 3 = 63
        LoraCount(lora=60, saved=63, trainable=123, total=406, fraction=0.302...)
    """
    check_module(model, "count_lora_parameters")
    lora = saved = trainable = total = 0
    for name, p in model.named_parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
            if ".lora_" in f".{name}":
                lora += n
            elif ".modules_to_save." in f".{name}":
                saved += n
    if lora == 0 and not any(".lora_" in f".{n}" for n, _ in model.named_parameters()):
        raise ValueError(f"count_lora_parameters expected a model wrapped by peft's get_peft_model, got a "
                         f"{type(model).__name__} without LoRA layers. Fix: "
                         "count_lora_parameters(get_peft_model(model, LoraConfig(...))).")
    return LoraCount(lora, saved, trainable, total, trainable / total if total else 0.0)


def hold_frozen_batchnorm(model: nn.Module) -> nn.Module:
    """Hold every BatchNorm layer whose parameters are all frozen in eval mode, even under ``model.train()``.

    peft freezes the backbone's weights but leaves BatchNorm to ``train()``: in training mode a
    frozen BatchNorm still overwrites its running mean and variance with each batch's, and those
    statistics are buffers that ``save_pretrained`` does not save. A fresh backbone plus the saved
    adapter then computes something else than the trained model. Holding them in eval (what
    :func:`labkit.freeze` does to frozen layers) keeps the pretrained statistics, so the adapter
    file is all that changed. In place; returns the model. BatchNorm layers with a trainable
    parameter (e.g. listed in ``modules_to_save``) are left alone.

    Example:
        >>> pm = hold_frozen_batchnorm(get_peft_model(model, config))
        >>> pm.train(); bn = pm.base_model.model.bn1; _ = pm(x); bn.training
        False
    """
    check_module(model, "hold_frozen_batchnorm")
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if isinstance(m, _BN) and own and not any(p.requires_grad for p in own):
            freeze(m)  # no-op on the weights; registers labkit's eval-mode hook
    return model
