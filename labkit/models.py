"""Pretrained backbones: torchvision's ImageNet weights (the Colab path) and the bundled micro-backbone.

``load_backbone("resnet18")`` is exactly what a Colab user runs: torchvision's weights API,
with the preprocessing that belongs to those weights. The bundled micro-backbone is used when
asked for, by name (``load_backbone("micro_resnet")``), with ``offline=True``, or with the
environment variable ``LABKIT_OFFLINE=1`` (set by CI and the tests), and, as the offline
default, when torchvision's weights cannot be fetched and the learner has not insisted on them:
then a banner says so once per session and how to insist. Insisting (``LABKIT_OFFLINE=0`` or
``offline=False``) makes a failed fetch an error that names the offline choice. Random weights
are only ever used when ``pretrained=False`` says so, and :meth:`Backbone.describe` always
tells which backbone and which weights are in use.

The micro-backbone is a torchvision ``ResNet`` (one BasicBlock per stage, 64x64 inputs) with
ResNet-18's module names and widths (``conv1`` 64x3x7x7, ``bn1``, ``layer1``..``layer4``,
``fc`` on 512 features), pretrained by ``python -m labkit pretrain`` on images made only by
labkit's code: formula-driven contours and synthetic scenes (see ``labkit.build.pretrain``).
Its weights file sits in ``labkit/weights/`` with a JSON file that holds its sha256,
preprocessing, pretraining recipe and measured figures.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from labkit._env import DOWNLOAD_TIMEOUT_S, env_flag, is_offline, socket_timeout

__all__ = [
    "Backbone",
    "MicroResNet",
    "MicroWeights",
    "BackboneUnavailableError",
    "WeightsChecksumError",
    "MICRO_NAME",
    "WEIGHTS_DIR",
    "build_micro_resnet",
    "micro_weights",
    "load_backbone",
    "is_offline",
    "cached_checkpoint_path",
    "sha256_of",
]

MICRO_NAME = "micro_resnet"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_MICRO_META = WEIGHTS_DIR / "micro_resnet.json"
_ALIASES = {"micro": MICRO_NAME, "micro_resnet": MICRO_NAME, "microresnet": MICRO_NAME}


class BackboneUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched or found (no network, no cached checkpoint)."""


class WeightsChecksumError(RuntimeError):
    """A weights file is not the one its metadata describes (sha256 mismatch)."""


# --------------------------------------------------------------------------- micro-backbone
class MicroResNet(ResNet):
    """A small torchvision ResNet: one BasicBlock per stage, ResNet-18's names and widths.

    Being a ``torchvision.models.ResNet``, everything written for ResNet-18 (``model.conv1``,
    ``model.layer4``, ``model.fc.in_features == 512``, head replacement, stage freezing) works
    on it unchanged. It is meant for 64x64 inputs, so a CPU epoch over a few hundred images
    takes seconds.

    Example:
        >>> m = MicroResNet(num_classes=10)
        >>> tuple(m.conv1.weight.shape), m.fc.in_features
        ((64, 3, 7, 7), 512)
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)


def build_micro_resnet(num_classes: int | None = None) -> MicroResNet:
    """A randomly initialised micro-backbone (torchvision's ResNet initialisation).

    Args:
        num_classes: outputs of ``fc``; default: the pretraining task's outputs, so the bundled
            weights load into it.

    Example:
        >>> build_micro_resnet(5).fc
        Linear(in_features=512, out_features=5, bias=True)
    """
    if num_classes is None:
        num_classes = len(_read_micro_meta(_MICRO_META, required=False).get("categories", [])) or 1000
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"build_micro_resnet expected num_classes to be a positive int, got {num_classes!r}.")
    return MicroResNet(num_classes=num_classes)


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_micro_meta(path: Path, *, required: bool = True) -> dict:
    if not path.is_file():
        if not required:
            return {}
        raise FileNotFoundError(
            f"labkit's micro-backbone metadata {path} is missing. Expected it beside the weights file "
            f"in {WEIGHTS_DIR}; restore it from git (`git checkout -- labkit/weights`) or rebuild both "
            "with `python -m labkit pretrain`."
        )
    return json.loads(path.read_text())


@dataclass(frozen=True)
class MicroWeights:
    """The micro-backbone's pretrained weights, shaped like a torchvision ``WeightsEnum`` member.

    ``transforms()``, ``meta`` and ``get_state_dict()`` behave as they do for
    ``ResNet18_Weights.DEFAULT``, so lesson code can treat both kinds of weights alike.

    Example:
        >>> w = micro_weights()
        >>> str(w), w.meta["input_size"]
        ('MicroResNet_Weights.CONTOURS_V7', 64)
    """

    file: Path
    meta: dict = field(repr=False)

    @property
    def name(self) -> str:
        return self.meta.get("weights", "MicroResNet_Weights.CONTOURS_V7").split(".")[-1]

    def __str__(self) -> str:
        return self.meta.get("weights", "MicroResNet_Weights.CONTOURS_V7")

    def transforms(self) -> Callable:
        """The evaluation preprocessing these weights were trained for (resize, centre crop, normalize)."""
        from labkit.data import make_eval_transform

        return make_eval_transform(self.meta)

    def get_state_dict(self, *, check_hash: bool = True, **_: Any) -> dict[str, torch.Tensor]:
        """Read the weights (as float32) after checking the file's sha256 against the metadata."""
        if not self.file.is_file():
            raise FileNotFoundError(
                f"micro-backbone weights file {self.file} not found. Restore it from git "
                "(`git checkout -- labkit/weights`) or rebuild it with `python -m labkit pretrain`."
            )
        if check_hash:
            expected, got = self.meta.get("sha256"), sha256_of(self.file)
            if got != expected:
                raise WeightsChecksumError(
                    f"sha256 mismatch for {self.file}: expected {expected} (from its metadata), got {got}. "
                    "The file is damaged or is not the file its metadata describes (a Git LFS pointer, an "
                    "interrupted copy, a retrained file without new metadata). Restore it with "
                    "`git checkout -- labkit/weights` or rebuild both with `python -m labkit pretrain`."
                )
        state = torch.load(self.file, map_location="cpu", weights_only=True)
        return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def micro_weights(weights_file: str | Path | None = None) -> MicroWeights:
    """The bundled micro-backbone weights (or another file with a ``.json`` metadata beside it).

    Args:
        weights_file: a ``.pt`` file written by ``python -m labkit pretrain``; default: the bundled one.

    Example:
        >>> micro_weights().file.name
        'micro_resnet.pt'
    """
    if weights_file is None:
        meta = _read_micro_meta(_MICRO_META)
        return MicroWeights(WEIGHTS_DIR / meta["file"], meta)
    path = Path(weights_file)
    return MicroWeights(path, _read_micro_meta(path.with_suffix(".json")))


# --------------------------------------------------------------------------- the result type
class Backbone(NamedTuple):
    """A loaded backbone and everything that belongs with it.

    Fields: ``model`` (an ``nn.Module`` in eval mode on the CPU), ``weights`` (a torchvision
    ``WeightsEnum`` member, a :class:`MicroWeights`, or ``None`` for random initialisation),
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
            line = (f"backbone: {m['name']} [OFFLINE stand-in for {m['stand_in_for']}: not ImageNet weights], "
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
        f"Carrying on with labkit's bundled micro_resnet in place of {name}: formula-driven pretraining,",
        "64x64 inputs, not ImageNet weights, so the lesson's figures will differ from the ones in Colab.",
        "To insist on the real weights (and get an error while they cannot be fetched), set",
        "LABKIT_OFFLINE=0 before starting Jupyter; to choose the bundled backbone quietly, set LABKIT_OFFLINE=1.",
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
        "num_classes": model.fc.out_features if isinstance(getattr(model, "fc", None), nn.Linear) else None,
    }
    meta.update(extra)
    return meta


def _load_micro(pretrained: bool, weights_file: str | Path | None, stand_in_for: str | None) -> Backbone:
    from labkit.data import get_preprocessing, make_eval_transform, make_train_transform

    weights = micro_weights(weights_file)  # metadata is needed even for random init (preprocessing)
    model = build_micro_resnet(len(weights.meta["categories"]))
    if pretrained:
        model.load_state_dict(weights.get_state_dict())
        label = f"{weights} (labkit formula-driven pretraining, bundled file {weights.file.name})"
        used = weights
    else:
        label = "none (random initialization)"
        used = None
    pre = get_preprocessing(weights.meta)
    meta = _meta_for(model, used, MICRO_NAME, "labkit", pre, label, stand_in_for=stand_in_for,
                     file=str(weights.file) if pretrained else None,
                     categories=list(weights.meta["categories"]))
    return Backbone(model.eval(), used, make_eval_transform(pre), make_train_transform(pre), meta)


def _load_torchvision(name: str, pretrained: bool, progress: bool, timeout: float) -> Backbone:
    import torchvision
    from labkit.data import get_preprocessing, make_eval_transform, make_train_transform

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as e:
        choices = sorted(torchvision.models.list_models(module=torchvision.models))
        raise ValueError(
            f"load_backbone expected 'micro_resnet' or a torchvision classification model name "
            f"(such as 'resnet18', 'resnet50', 'mobilenet_v3_small'), got {name!r}. Known: {', '.join(choices)}."
        ) from e
    default = enum.DEFAULT
    pre = get_preprocessing(default)
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
            f"access once (Google Colab has it). Offline, ask for the bundled micro-backbone instead: "
            f"load_backbone({name!r}, offline=True), or set the environment variable LABKIT_OFFLINE=1, or "
            f"load_backbone('micro_resnet'); or leave LABKIT_OFFLINE unset (not 0) and labkit falls back to it "
            f"with a banner. (labkit never switches to random weights on its own.)"
        ) from e
    dataset = "ImageNet-1K" if "IMAGENET1K" in str(default) else default.meta.get("recipe", "torchvision")
    meta = _meta_for(model, default, name, "torchvision", pre, f"{default} ({dataset}, torchvision)",
                     file=str(cached), categories=list(default.meta.get("categories", [])))
    return Backbone(model.eval(), default, make_eval_transform(pre), make_train_transform(pre), meta)


def load_backbone(name: str = "resnet18", *, pretrained: bool = True, offline: bool | None = None,
                  weights_file: str | Path | None = None, verbose: bool = True, progress: bool = False,
                  timeout: float = DOWNLOAD_TIMEOUT_S) -> Backbone:
    """Load a classification backbone with its matching preprocessing.

    Args:
        name: a torchvision model name ("resnet18", ...) or "micro_resnet" (the bundled backbone).
        pretrained: load pretrained weights; ``False`` gives a randomly initialised model (and says so).
        offline: use the bundled micro-backbone in place of a torchvision model. Default: the
            ``LABKIT_OFFLINE`` environment variable: 1 -> the micro-backbone; unset -> torchvision,
            falling back to the micro-backbone with a banner when the weights cannot be fetched;
            0 -> torchvision or an error. ``False`` forces the torchvision path (or an error).
        weights_file: another micro-backbone weights file (with its ``.json`` beside it).
        verbose: print the one-line description.
        progress: show torchvision's download progress bar.
        timeout: seconds before a stalled download is given up.

    Returns:
        a :class:`Backbone` ``(model, weights, eval_transform, train_transform, meta)``.

    Raises:
        BackboneUnavailableError: the learner insisted (``LABKIT_OFFLINE=0`` or ``offline=False``)
            and the torchvision weights could not be downloaded or found in the cache; the message
            names the offline choice.
        WeightsChecksumError: the micro-backbone's file does not match its recorded sha256.

    Example:
        >>> bb = load_backbone("micro_resnet")
        backbone: micro_resnet, weights: MicroResNet_Weights.CONTOURS_V7 (...), input 64x64
        >>> bb.model.fc.in_features
        512
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"load_backbone expected a model name such as 'resnet18' or 'micro_resnet', got {name!r}.")
    key = name.strip().lower()
    insisted = offline is False or (offline is None and _insists_online())
    offline = is_offline() if offline is None else bool(offline)
    if key in _ALIASES:
        bb = _load_micro(pretrained, weights_file, None)
    elif offline:
        bb = _load_micro(pretrained, weights_file, key)
        warnings.warn(f"offline mode: using labkit's micro_resnet in place of {key} "
                      "(formula-driven pretraining, 64x64 inputs; figures will differ from ImageNet weights).",
                      stacklevel=2)
    else:
        if weights_file is not None:
            raise ValueError(f"weights_file is for the micro-backbone only, got it with name={name!r}.")
        if not pretrained or insisted:
            bb = _load_torchvision(key, pretrained, progress, timeout)
            _FETCH_FAILURES.pop(key, None)
        elif key in _FETCH_FAILURES:  # failed earlier this session: the banner was shown then
            bb = _load_micro(pretrained, weights_file, key)
            bb.meta["fallback_reason"] = _FETCH_FAILURES[key]
        else:
            try:
                bb = _load_torchvision(key, pretrained, progress, timeout)
            except BackboneUnavailableError as e:
                cause = e.__cause__ or e
                reason = f"{type(cause).__name__}: {cause}"[:200]
                _FETCH_FAILURES[key] = reason
                bb = _load_micro(pretrained, weights_file, key)
                bb.meta["fallback_reason"] = reason
                import torchvision

                weights_name = str(torchvision.models.get_model_weights(key).DEFAULT)
                print(_fallback_banner(key, weights_name, reason), flush=True)
    if verbose:
        print(bb.describe())
    return bb
