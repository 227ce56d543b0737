"""Shared plumbing of the loops (private to labkit): reading datasets and batches, placing models, progress bars.

``fit``, ``evaluate``, ``extract_features``, ``compare_strategies`` and the benchmark import
these names from here; none of them reaches into another module's private names.
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.device import resolve_device

__all__ = [
    "batch_images",
    "loader_generators",
    "unwrap_subset",
    "dataset_labels",
    "dataset_classes",
    "count_classes",
    "loader_len",
    "split_batch",
    "to_device",
    "logits_of",
    "model_device",
    "place_model",
    "progress_bar",
]


def unwrap_subset(dataset):
    """(base dataset, indices or None) through any chain of torch Subsets."""
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        idx = list(dataset.indices)
        indices = idx if indices is None else [idx[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def dataset_labels(dataset) -> torch.Tensor | None:
    """All class labels of a dataset when they are cheap to read (no image loading)."""
    if dataset is None:
        return None
    base, indices = unwrap_subset(dataset)
    labels = None
    if isinstance(base, torch.utils.data.TensorDataset) and len(base.tensors) >= 2:
        labels = base.tensors[1]
    elif hasattr(base, "targets"):
        try:
            labels = torch.as_tensor(base.targets)
        except (TypeError, ValueError, RuntimeError):
            labels = None
    if labels is None or labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        return None
    labels = labels.detach().cpu()
    if indices is not None:
        labels = labels[torch.as_tensor(indices, dtype=torch.long)]
    return labels


def dataset_classes(dataset) -> list | None:
    """The dataset's ``classes`` list (through Subsets), or None."""
    base, _ = unwrap_subset(dataset) if dataset is not None else (None, None)
    classes = getattr(base, "classes", None)
    if classes is None:
        return None
    try:
        return list(classes)
    except TypeError:
        return None


def count_classes(loader) -> int | None:
    """Classes in a loader's data: ``len(dataset.classes)``, else largest label + 1, else None."""
    dataset = getattr(loader, "dataset", None)
    classes = dataset_classes(dataset)
    if classes is not None:
        return len(classes)
    labels = dataset_labels(dataset)
    if labels is not None and labels.numel():
        return int(labels.max()) + 1
    return None


def loader_len(loader) -> int | None:
    """``len(loader)``, or None for iterables without a length."""
    try:
        return len(loader)
    except TypeError:
        return None


def batch_images(batch, where: str) -> torch.Tensor:
    """The image tensor of a batch that is images or ``(images, labels)``; a clear error otherwise."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if isinstance(x, dict):
        raise TypeError(f"{where}: expected batches of images or (images, labels), got a dict.")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: expected batches of image tensors or (images, labels) pairs, got "
                        f"{type(x).__name__}. Pass a DataLoader over the new domain's images.")
    return x


def split_batch(batch, where: str):
    """``(images, labels)`` from a tuple/list batch or a dict with common key names."""
    if isinstance(batch, dict):
        pairs = (("image", "label"), ("images", "labels"), ("x", "y"), ("input", "target"), ("inputs", "targets"))
        for xk, yk in pairs:
            if xk in batch and yk in batch:
                return batch[xk], batch[yk]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"{where}: expected each batch to be (images, labels), got {type(batch).__name__}"
        f"{' of length ' + str(len(batch)) if isinstance(batch, (tuple, list)) else ''}. "
        f"Fix: use a Dataset whose items are (image_tensor, class_index)."
    )


def to_device(x, y, device: torch.device, channels_last: bool):
    """Images and labels on ``device`` (non-blocking copies; images channels-last if asked)."""
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    if y is None:
        return x, None
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    return x, y.to(device, non_blocking=True)


def logits_of(out):
    """Class scores from a model's output (GoogLeNet and Inception return a named tuple in training)."""
    return out.logits if hasattr(out, "logits") and not isinstance(out, torch.Tensor) else out


def model_device(model: nn.Module) -> torch.device | None:
    """The one device holding the model's parameters and buffers (None for a model without any)."""
    devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
    if not devices:
        return None
    if len(devices) > 1:
        raise ValueError(
            f"model: expected all parameters on one device, got {sorted(str(d) for d in devices)}. "
            f"Fix: model.to('cpu') or model.to('cuda') before fit()."
        )
    return devices.pop()


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        cur = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)
    return True


def place_model(model: nn.Module, device: str | torch.device, where: str = "fit") -> torch.device:
    """The device to train on. ``"auto"`` moves a CPU model to the best device (in place);
    an explicit device must be where the model already is."""
    current = model_device(model)
    if device == "auto":
        if current is not None and current.type != "cpu":
            return current
        target = resolve_device("auto")
        if current is not None and target.type != "cpu":
            model.to(target)
        return target
    target = resolve_device(device)
    if current is not None and not _same_device(current, target):
        raise ValueError(
            f"device: {where} was asked to run on {target}, but the model is on {current}. "
            f"Fix: model.to('{target}') before building the optimizer, or pass device='{current}' "
            f"(or device='auto')."
        )
    return target


class _NoBar:
    """Stands in for a tqdm bar when progress is off: every call does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int | None, desc: str, enabled: bool, unit: str = "batch"):
    """A tqdm bar (widget in Jupyter/Colab, text in a terminal), or a do-nothing stand-in when disabled."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit=unit, dynamic_ncols=True)


def loader_generators(loader) -> list[torch.Generator]:
    """The random generators that decide a loader's shuffling order (its own and its sampler's)."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                  getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found
