"""Cached features: run the frozen backbone once, then train only the head.

When the backbone is frozen and nothing about the input changes between epochs, every
epoch computes exactly the same backbone outputs again. :func:`extract_features` computes
them once (one forward pass per image, under ``torch.inference_mode()``), and
:func:`fit_head` trains a small head on those tensors in memory, so every later epoch
costs only the head: a few milliseconds instead of a pass through the whole network.

The trade-off: cached features cannot see random augmentation. A ``RandomResizedCrop``
or ``ColorJitter`` in the dataset's transform is drawn once, at extraction, and the head
then sees that same crop of each image in every epoch. Use cached features with
deterministic preprocessing (resize, centre crop, normalize); when augmentation matters
(small data, a big domain gap), train the frozen model on images with :func:`labkit.train.fit`,
which redraws the augmentation every epoch at the cost of a backbone pass per image per epoch.

Features can be cached on disk (``cache="some/dir"``), keyed by the backbone's
architecture and weights, the data (contents where labkit can read them cheaply, and the
transform) and the precision, so a changed backbone or dataset never reuses stale features.
"""
from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import torch
from torch import nn

from labkit._batches import loader_len, place_model, progress_bar, split_batch, to_device, unwrap_subset
from labkit._env import progress_enabled
from labkit.device import resolve_amp, synchronize
from labkit.heads import get_head
from labkit.history import History
from labkit.train import fit

__all__ = ["Features", "HeadFit", "extract_features", "fit_head", "feature_cache_path", "split_head", "split_model",
           "compute_outputs"]

_RANDOM_TRANSFORM = re.compile(
    r"\b(Random\w*|ColorJitter|\w*AutoAugment|RandAugment|TrivialAugment\w*|AugMix|ElasticTransform|GaussianBlur)\("
)


class Features(NamedTuple):
    """Backbone outputs for a dataset: ``features`` (N, D) float32 and ``labels`` (N,) long, on the CPU."""

    features: torch.Tensor
    labels: torch.Tensor


class HeadFit(NamedTuple):
    """The trained head and its :class:`~labkit.train.History`."""

    head: nn.Module
    history: History


# --------------------------------------------------------------------------- fingerprints


def _hash_tensor(h, t: torch.Tensor) -> None:
    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)


def _model_fingerprint(backbone: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(type(backbone).__qualname__.encode())
    h.update(repr(backbone).encode())  # architecture, including a stripped head
    for name, t in backbone.state_dict().items():  # weights and BN statistics
        h.update(name.encode())
        _hash_tensor(h, t)
    return h.hexdigest()


def _data_fingerprint(dataset) -> str | None:
    """Hash of what labkit can read cheaply about the data; None when it cannot see the contents."""
    if dataset is None:
        return None
    base, indices = unwrap_subset(dataset)
    h = hashlib.blake2b(digest_size=16)
    h.update(type(base).__qualname__.encode())
    h.update(str(len(base)).encode())
    if indices is not None:
        h.update(repr(indices).encode())
    for attr in ("transform", "target_transform", "transforms"):
        h.update(repr(getattr(base, attr, None)).encode())
    content = False
    if isinstance(base, torch.utils.data.TensorDataset):
        for t in base.tensors:
            _hash_tensor(h, t)
        content = True
    samples = getattr(base, "samples", None) or getattr(base, "imgs", None)
    if isinstance(samples, (list, tuple)) and samples:
        for item in samples:
            path = item[0] if isinstance(item, (tuple, list)) else item
            h.update(repr(item).encode())
            try:
                st = Path(path).stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            except (OSError, TypeError):
                pass
        content = True
    data = getattr(base, "data", None)
    if data is not None and hasattr(data, "shape"):
        _hash_tensor(h, torch.as_tensor(data))
        content = True
    targets = getattr(base, "targets", None)
    if targets is not None:
        try:
            _hash_tensor(h, torch.as_tensor(targets))
        except (TypeError, ValueError, RuntimeError):
            pass
    return h.hexdigest() if content else None


def feature_cache_path(
    backbone: nn.Module,
    loader: Iterable,
    cache: str | Path,
    *,
    key: str | None = None,
    amp: str = "off",
) -> Path:
    """Where :func:`extract_features` keeps (or finds) the features for this backbone and data.

    Args:
        backbone: the feature extractor.
        loader: the loader whose ``dataset`` is fingerprinted.
        cache: the cache folder.
        key: your own name for the data, required when labkit cannot read the dataset's
            contents cheaply (anything but a ``TensorDataset``, an ``ImageFolder``-like
            dataset with ``samples``, or one with a ``data`` array).
        amp: the precision the features are computed in (part of the key).

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
        >>> feature_cache_path(nn.Identity(), torch.utils.data.DataLoader(ds), "cache").suffix
        '.pt'
    """
    data = _data_fingerprint(getattr(loader, "dataset", None))
    if data is None and key is None:
        raise ValueError(
            f"extract_features(cache=...): expected data labkit can fingerprint (TensorDataset, "
            f"ImageFolder, a dataset with .data), got {type(getattr(loader, 'dataset', loader)).__name__}, "
            f"so a changed dataset could silently reuse stale features. Fix: pass key='<name and "
            f"version of your data>' or cache=None."
        )
    h = hashlib.blake2b(digest_size=12)
    for part in (_model_fingerprint(backbone), data or "", key or "", amp):
        h.update(part.encode())
        h.update(b"\0")
    name = re.sub(r"[^A-Za-z0-9]+", "-", type(backbone).__name__).strip("-").lower() or "backbone"
    return Path(cache) / f"features-{name}-{h.hexdigest()}.pt"


# --------------------------------------------------------------------------- extraction


def _warn_if_random(loader) -> None:
    base, _ = unwrap_subset(getattr(loader, "dataset", None))
    text = " ".join(repr(getattr(base, a, None)) for a in ("transform", "transforms"))
    found = sorted(set(_RANDOM_TRANSFORM.findall(text)))
    if found:
        warnings.warn(
            f"extract_features: the data's transform contains random augmentation ({', '.join(found)}). "
            f"Cached features freeze one random draw per image: every epoch of fit_head sees the same "
            f"augmented copy. Fix: extract with deterministic transforms (resize, centre crop, "
            f"normalize), or train the frozen model on images with labkit.train.fit.",
            stacklevel=3,
        )


def extract_features(
    backbone: nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device = "auto",
    amp: bool | str = "auto",
    cache: str | Path | None = None,
    key: str | None = None,
    channels_last: bool = False,
    progress: bool | None = None,
) -> Features:
    """Run ``backbone`` once over ``loader`` and return its outputs with the labels.

    One pass, in eval mode, under ``torch.inference_mode()``: no autograd graph, BatchNorm
    uses its running statistics. Outputs with more than two dimensions are flattened. The
    backbone's train/eval mode is restored afterwards.

    Args:
        backbone: the network without its head (e.g. a ResNet whose ``fc`` is ``nn.Identity()``).
        loader: batches of ``(images, labels)``; deterministic transforms recommended
            (see the module notes on augmentation).
        device: ``"auto"`` (CUDA, MPS, CPU; a CPU backbone is moved there in place) or
            the device the backbone is on.
        amp: mixed precision for the pass (``"auto"``: on for CUDA). Features are stored as float32.
        cache: a folder; when given, features are saved there and loaded on the next call
            with the same backbone weights, data and precision.
        key: names the data for the cache key when labkit cannot read the dataset's contents.
        channels_last: feed images in channels-last memory format.
        progress: draw a progress bar (default: on, unless LABKIT_PROGRESS=0 or CI=true).

    Example:
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
        >>> ds = torch.utils.data.TensorDataset(torch.randn(10, 3, 2, 2), torch.arange(10) % 2)
        >>> feats, labels = extract_features(backbone, torch.utils.data.DataLoader(ds, batch_size=4), device="cpu")
        >>> feats.shape, labels.shape
        (torch.Size([10, 5]), torch.Size([10]))
    """
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"backbone: expected an nn.Module, got {type(backbone).__name__}.")
    n_batches = loader_len(loader)
    if n_batches == 0:
        raise ValueError(
            "extract_features: expected a loader with at least one batch, got an empty one. "
            "Fix: check the data folder/split, or lower batch_size if drop_last=True."
        )
    dev = place_model(backbone, device, "extract_features")
    amp_cfg = resolve_amp(dev, amp)
    amp_name = str(amp_cfg.dtype).replace("torch.", "") if amp_cfg.enabled else "off"
    path = None
    if cache is not None:
        path = feature_cache_path(backbone, loader, cache, key=key, amp=amp_name)
        if path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            return Features(saved["features"], saved["labels"])
    _warn_if_random(loader)
    bar = progress_bar(n_batches, "features", progress_enabled(progress))
    features, labels = _forward_all(backbone, loader, dev, amp_cfg, channels_last, bar)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"features": features, "labels": labels}, tmp)
        tmp.replace(path)
    return Features(features, labels)


def _forward_all(backbone: nn.Module, loader, dev, amp_cfg, channels_last: bool, bar) -> Features:
    """One pass in eval mode under ``torch.inference_mode()``: flattened float32 outputs and labels, on the CPU."""
    was_training = backbone.training
    backbone.eval()
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    chunks, label_chunks = [], []
    try:
        with torch.inference_mode():
            for batch in loader:
                x, y = split_batch(batch, "extract_features: loader")
                x, _ = to_device(x, None, dev, channels_last)
                with amp_cfg.autocast(dev):
                    out = backbone(x)
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        f"extract_features: expected the backbone to return a tensor, got "
                        f"{type(out).__name__}. Fix: pass the network without its head, e.g. "
                        f"model.fc = nn.Identity()."
                    )
                chunks.append(out.flatten(1).float())  # stays on the device: no sync per batch
                label_chunks.append(torch.as_tensor(y).cpu())
                bar.update(1)
        synchronize(dev)
    finally:
        bar.close()
        backbone.train(was_training)
    if not chunks:
        raise ValueError("extract_features: expected a loader with at least one batch, got none.")
    # Concatenating outside inference_mode gives ordinary tensors that autograd can use later.
    features = torch.cat(chunks).cpu()
    del chunks
    return Features(features, torch.cat(label_chunks).long())


# --------------------------------------------------------------------------- head training


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """Take the final Linear head out of ``model`` (in place, replaced by ``nn.Identity``).

    Returns ``(backbone, head)``: the model now outputs the features the head consumed,
    ready for :func:`extract_features`, and the head is ready for :func:`fit_head`.

    Example:
        >>> backbone, head = split_head(torchvision.models.resnet18(weights=None))
        >>> backbone.fc, head
        (Identity(), Linear(in_features=512, out_features=1000, bias=True))
    """
    head = get_head(model)
    if not isinstance(head, nn.Linear):
        raise TypeError(
            f"cached features: expected the model's head to be an nn.Linear, got {type(head).__name__} "
            f"({type(model).__name__}). Fix: use a model with a Linear head, or train it on images "
            f"with labkit.train.fit."
        )
    path = next(name for name, m in model.named_modules() if m is head)
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())
    return model, head


# --------------------------------------------------------------------------- cutting a model at a stage

class _FlattenFeatures(nn.Module):
    """Flatten pooled maps (N x C x 1 x 1) to N x C before a Linear head; 2-D input passes unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) if x.dim() > 2 else x


def _stage_owners(model: nn.Module) -> tuple[list[str], dict[int, str]]:
    from labkit.heads import stages

    found = stages(model)
    owner: dict[int, str] = {}
    for name, module in found.items():
        if type(module).__name__ == "_StageGroup":  # a view on several layers of the model
            for member in module.children():
                owner[id(member)] = name
            if any(True for _ in module.parameters(recurse=False)):
                owner[-1] = name  # a bare parameter (ViT's class token): no sequential cut
        else:
            owner[id(module)] = name
    return list(found), owner


def _sequence(model: nn.Module, owner: dict[int, str]) -> list[tuple[str, nn.Module, str | None]]:
    """The model's layers in registration order as (name, module, stage or None for glue such as pooling)."""
    inside = {}

    def holds_stage(module: nn.Module) -> bool:
        if id(module) not in inside:
            inside[id(module)] = any(id(m) in owner for m in module.modules())
        return inside[id(module)]

    out: list[tuple[str, nn.Module, str | None]] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if child is None:
                continue
            path = prefix + name
            if id(child) in owner:
                out.append((path, child, owner[id(child)]))
            elif holds_stage(child):
                walk(child, path + ".")
            else:
                out.append((path, child, None))

    walk(model, "")
    return out


def split_model(model: nn.Module, *, at: str | int, check: bool = True,
                probe_size: int = 64) -> tuple[nn.Module, nn.Module]:
    """Cut ``model`` before stage ``at``: ``(bottom, top)`` with ``top(bottom(x)) == model(x)``.

    Both halves are ``nn.Sequential`` views that hold the model's own layers (no copies), so
    training ``top`` trains the model. The stages are :func:`labkit.heads.stages`', so the
    same call works on torchvision's ResNet (``at="layer4"``), timm's EfficientNet
    (``at="blocks.6"``) and any model whose forward runs its layers in registration order.
    ``at`` may be the head stage: then ``bottom`` gives the pooled, flattened features.

    Why: when ``bottom`` is frozen (labkit.freeze keeps its BatchNorm in eval) and no
    augmentation runs inside the loop, its outputs never change, so compute them once with
    :func:`compute_outputs` and train ``top`` on them: partial fine-tuning at the cost of
    its thawed stages only ("cached activations").

    Steps of the model's ``forward`` that are not layers are not in the halves: timm runs
    dropout before its classifier as a function call, so ``top`` in training mode has none.
    In eval mode the halves compute exactly the model (``check`` verifies it on a random
    ``probe_size`` batch and raises when a model's forward is not a plain sequence, e.g. ViT).

    Args:
        model: a classifier with stages (:func:`labkit.heads.stages`).
        at: the first stage of ``top``, by name or index (negative counts from the head).
        check: verify ``top(bottom(x)) == model(x)`` in eval mode on a random batch.
        probe_size: side of that batch's images.

    Example:
        >>> bottom, top = split_model(torchvision.models.resnet18(weights=None), at="layer4")
        >>> [name for name, _ in top.named_children()]
        ['layer4', 'avgpool', 'flatten', 'fc']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"split_model: expected an nn.Module, got {type(model).__name__}.")
    names, owner = _stage_owners(model)
    if isinstance(at, bool) or not isinstance(at, (str, int)):
        raise TypeError(f"split_model: at must be a stage name or index, got {type(at).__name__}. Stages: {names}.")
    if isinstance(at, int):
        if not -len(names) <= at < len(names):
            raise ValueError(f"split_model: at={at} is out of range for {len(names)} stages {names}.")
        at = names[at]
    if at not in names:
        raise ValueError(f"split_model: at must be one of the stages {names}, got {at!r}.")
    if -1 in owner:
        raise TypeError(f"split_model cannot cut {type(model).__name__}: a stage holds a bare parameter (a class "
                        "token or position embedding), so its forward is not a sequence of layers.")
    seq = _sequence(model, owner)
    head = names[-1]
    start = next(i for i, (_, _, stage) in enumerate(seq) if stage == at)
    first_head = next(i for i, (_, _, stage) in enumerate(seq) if stage == head)

    def halve(part: list) -> nn.Sequential:
        out = nn.Sequential()
        for path, module, stage in part:
            if stage == head and "flatten" not in out._modules and path == seq[first_head][0]:
                out.add_module("flatten", _FlattenFeatures())
            out.add_module(path.replace(".", "_"), module)
        return out

    bottom, top = halve(seq[:start]), halve(seq[start:])
    if at == head:
        bottom.add_module("flatten", _FlattenFeatures())
    if check:
        _check_halves(model, bottom, top, probe_size)
    return bottom, top


def _check_halves(model: nn.Module, bottom: nn.Module, top: nn.Module, size: int) -> None:
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    modes = {m: m.training for m in model.modules()}
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    try:
        model.eval()
        with torch.no_grad():
            whole = model(x)
            try:
                halves = top(bottom(x))
            except Exception as e:  # any failure means: not a plain sequence
                halves = e
    finally:
        for m, mode in modes.items():
            m.training = mode
    if isinstance(halves, Exception) or halves.shape != whole.shape or not torch.allclose(
            halves, whole, rtol=1e-4, atol=1e-4 * (1 + whole.abs().max().item())):
        why = f"({type(halves).__name__}: {halves})" if isinstance(halves, Exception) else "(different outputs)"
        raise TypeError(f"split_model could not cut {type(model).__name__}: running its layers in order does not "
                        f"compute its forward {why}. It works on models whose forward is a plain sequence of "
                        "stages (ResNet, EfficientNet, MobileNet, VGG, ...).")


def compute_outputs(module: nn.Module, data, *, batch_size: int = 128):
    """``module``'s outputs over images or a loader: eval mode, no gradient, on the CPU; modes restored.

    Unlike :func:`extract_features` the outputs keep their shape (activations that enter a
    stage, for :func:`split_model`'s ``top``) and stay where the module is (no device move).

    Args:
        module: e.g. the ``bottom`` of :func:`split_model`.
        data: an image tensor (N x C x H x W; returns a tensor) or batches of ``(images, labels)``
            (returns :class:`Features` with the outputs and the labels).
        batch_size: images per forward pass for a tensor.

    Example:
        >>> compute_outputs(nn.Flatten(), torch.zeros(3, 2, 2)).shape
        torch.Size([3, 4])
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"compute_outputs: expected an nn.Module, got {type(module).__name__}.")
    is_tensor = isinstance(data, torch.Tensor)
    if not is_tensor and (isinstance(data, (str, bytes)) or not hasattr(data, "__iter__")):
        raise TypeError(f"compute_outputs: expected an image tensor or a loader of (images, labels), got "
                        f"{type(data).__name__}. Fix: compute_outputs(bottom, images) or "
                        f"compute_outputs(bottom, loader).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"compute_outputs: expected a positive int batch_size, got {batch_size!r}. "
                         f"Fix: batch_size=128.")
    first = next(iter(module.parameters()), None)
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            if is_tensor:
                device = first.device if first is not None else data.device
                return torch.cat([module(data[i:i + batch_size].to(device)).cpu()
                                  for i in range(0, len(data), batch_size)])
            outputs, labels = [], []
            for batch in data:
                x, y = split_batch(batch, "compute_outputs: loader")
                outputs.append(module(x.to(first.device if first is not None else x.device)).cpu())
                labels.append(torch.as_tensor(y).cpu())
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not outputs:
        raise ValueError("compute_outputs: expected a loader with at least one batch, got none.")
    return Features(torch.cat(outputs), torch.cat(labels).long())


class _TensorBatches:
    """Mini-batches over in-memory tensors (already on the training device): no per-item
    indexing or collation, which would cost more than the head itself."""

    def __init__(self, features, labels, batch_size: int, shuffle: bool, generator=None):
        self.dataset = torch.utils.data.TensorDataset(features, labels)
        self.features, self.labels = features, labels
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.features.device)
            for i in range(0, n, self.batch_size):
                idx = order[i : i + self.batch_size]
                yield self.features[idx], self.labels[idx]
        else:
            for i in range(0, n, self.batch_size):
                yield self.features[i : i + self.batch_size], self.labels[i : i + self.batch_size]


def _as_features(data, name: str) -> Features:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        f, y = data
        if isinstance(f, torch.Tensor) and isinstance(y, torch.Tensor):
            if f.dim() != 2:
                raise ValueError(
                    f"fit_head: {name} features expected shape (N, D), got {tuple(f.shape)}. "
                    f"Fix: features.flatten(1)."
                )
            if len(f) != len(y):
                raise ValueError(
                    f"fit_head: {name} has {len(f)} feature rows but {len(y)} labels. "
                    f"Fix: pass the pair returned by extract_features unchanged."
                )
            if len(f) == 0:
                raise ValueError(f"fit_head: {name} expected at least one example, got 0. Fix: check the data.")
            return Features(f, y)
    raise TypeError(
        f"fit_head: {name} expected (features, labels) tensors as returned by extract_features, "
        f"got {type(data).__name__}."
    )


def _make_head(train: Features, head: nn.Module | None, num_classes: int | None, hidden: int | None) -> nn.Module:
    """The given head, or a new Linear (``hidden``: a small MLP) from the features' width to the classes."""
    if head is not None:
        if hidden is not None:
            raise ValueError("fit_head: pass either head=... or hidden=..., not both. Fix: drop hidden.")
        return head
    dim = train.features.shape[1]
    if num_classes is None:
        num_classes = int(train.labels.max()) + 1
    if hidden is None:
        return nn.Linear(dim, num_classes)
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, num_classes))


def fit_head(
    train: Features | tuple,
    val: Features | tuple | None = None,
    *,
    epochs: int,
    head: nn.Module | None = None,
    num_classes: int | None = None,
    hidden: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: torch.optim.Optimizer | None = None,
    batch_size: int = 32,
    shuffle: bool = True,
    loss_fn: Callable | None = None,
    scheduler=None,
    device: str | torch.device = "auto",
    amp: bool | str = False,
    seed: int | None = None,
    progress: bool | None = None,
) -> HeadFit:
    """Train a linear (or small MLP) head on cached features, all in memory.

    The features go to the device once; each epoch is then only the head's forward and
    backward over mini-batches of feature rows. Returns the head and the same
    :class:`~labkit.train.History` that :func:`labkit.train.fit` returns.

    Args:
        train: ``(features, labels)`` from :func:`extract_features`.
        val: optional validation ``(features, labels)``.
        epochs: passes over the features (>= 1).
        head: your own head module; default a new ``nn.Linear(D, num_classes)``, or with
            ``hidden`` a ``Linear -> ReLU -> Dropout(0.2) -> Linear`` MLP.
        num_classes: outputs of the new head (default: largest train label + 1).
        hidden: hidden width for an MLP head.
        lr, weight_decay: for the default Adam optimizer.
        optimizer: your own optimizer over the head's parameters (then ``lr`` is unused).
        batch_size: rows per step.
        shuffle: reshuffle rows every epoch (``seed`` makes the order repeatable).
        loss_fn, scheduler: as in :func:`labkit.train.fit`.
        device: ``"auto"`` or the head's device.
        amp: mixed precision; off by default (a head is tiny, full precision costs nothing).
        seed: seeds the head's initialisation and the shuffling.
        progress: progress bars (default: on, unless LABKIT_PROGRESS=0 or CI=true).

    Example:
        >>> feats = Features(torch.randn(64, 8), torch.arange(64) % 2)
        >>> head, history = fit_head(feats, epochs=3, device="cpu", progress=False)
        >>> head, len(history)
        (Linear(in_features=8, out_features=2, bias=True), 3)
    """
    train = _as_features(train, "train")
    val = _as_features(val, "val") if val is not None else None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"fit_head: batch_size expected an int >= 1, got {batch_size!r}. Fix: batch_size=32.")
    generator = None
    if seed is not None:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
    head = _make_head(train, head, num_classes, hidden)
    dev = place_model(head, device, "fit_head")
    if optimizer is None:
        optimizer = torch.optim.Adam(
            [p for p in head.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay
        )
    feats = train.features.to(dev, torch.float32)
    labels = train.labels.to(dev).long()
    loader = _TensorBatches(feats, labels, batch_size, shuffle, generator)
    val_loader = None
    if val is not None:
        val_loader = _TensorBatches(
            val.features.to(dev, torch.float32), val.labels.to(dev).long(), max(batch_size, 256), False
        )
    history = fit(
        head, loader, val_loader, optimizer=optimizer, epochs=epochs, loss_fn=loss_fn,
        device=dev, amp=amp, scheduler=scheduler, num_classes=num_classes, progress=progress,
    )
    history.meta["cached_features"] = True
    return HeadFit(head, history)
