"""Look inside a trained classifier: its worst mistakes, its confusions, where it looks, and which rate to train at.

This module holds :func:`top_losses`, :func:`plot_top_losses` and :func:`most_confused` (fastai's
``plot_top_losses`` and ``most_confused``), and re-exports Grad-CAM (:mod:`labkit.cam`) and the
learning-rate finder (:mod:`labkit.lr_finder`) so a lesson finds them in one place::

    from labkit.interpret import grad_cam, plot_cam, lr_find, top_losses, plot_top_losses
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit._batches import dataset_classes, logits_of, place_model, split_batch, to_device
from labkit.cam import default_cam_layer, grad_cam, plot_cam
from labkit.lr_finder import SUGGESTIONS, LRFind, lr_find, plot_lr_find, suggest_lr

__all__ = [
    "top_losses", "TopLosses", "plot_top_losses", "most_confused",
    "grad_cam", "default_cam_layer", "plot_cam",
    "lr_find", "LRFind", "plot_lr_find", "suggest_lr", "SUGGESTIONS",
]


class TopLosses(NamedTuple):
    """The ``k`` examples with the highest loss, worst first (ties: lower dataset index first).

    Fields (tensors of length ``k``): ``indices`` (positions in the dataset's order), ``losses``
    (per-example cross-entropy), ``labels``, ``predictions``, ``prob_pred`` (probability of the
    predicted class), ``prob_true`` (probability of the true class); ``class_names`` (or None).
    """

    indices: torch.Tensor
    losses: torch.Tensor
    labels: torch.Tensor
    predictions: torch.Tensor
    prob_pred: torch.Tensor
    prob_true: torch.Tensor
    class_names: list | None = None

    def __str__(self) -> str:
        name = (lambda c: str(self.class_names[c])) if self.class_names else str
        rows = [f"{'index':>6} {'loss':>7}  {'true':<14} {'predicted':<14} {'p(pred)':>7} {'p(true)':>7}"]
        for i, loss, y, p, pp, pt in zip(*(t.tolist() for t in self[:6])):
            rows.append(f"{i:>6} {loss:>7.3f}  {name(y):<14} {name(p):<14} {pp:>7.3f} {pt:>7.3f}")
        return "\n".join(rows)


def _check_loader(loader, where: str) -> None:
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, (torch.utils.data.RandomSampler, torch.utils.data.SubsetRandomSampler)):
        raise ValueError(f"{where}: expected a loader that keeps the dataset's order, got one that shuffles, so the "
                         "indices would point at the wrong images. Fix: DataLoader(dataset, batch_size=64, "
                         "shuffle=False).")


def _per_example(model: nn.Module, loader, device, where: str) -> tuple[torch.Tensor, ...]:
    """Per-example (losses, labels, predictions, probabilities) over the loader, in its order (eval mode)."""
    _check_loader(loader, where)
    dev = place_model(model, device, where)
    was_training = {m: m.training for m in model.modules()}
    losses, labels, preds, probs = [], [], [], []
    try:
        model.eval()
        with torch.inference_mode():
            for batch in loader:
                x, y = to_device(*split_batch(batch, where), dev, False)
                out = logits_of(model(x)).float()
                if y.numel() and (int(y.min()) < 0 or int(y.max()) >= out.shape[1]):
                    raise ValueError(f"{where}: labels must lie in 0..{out.shape[1] - 1} (the model's outputs), "
                                     f"got {int(y.min())}..{int(y.max())}. Fix: replace_head(model, num_classes).")
                losses.append(F.cross_entropy(out, y, reduction="none").cpu())
                labels.append(y.cpu())
                preds.append(out.argmax(1).cpu())
                probs.append(out.softmax(1).cpu())
    finally:
        for m, flag in was_training.items():
            m.training = flag
    if not losses or sum(len(t) for t in labels) == 0:
        raise ValueError(f"{where}: expected a loader with at least one example, got an empty one.")
    return torch.cat(losses), torch.cat(labels).long(), torch.cat(preds), torch.cat(probs)


def top_losses(model: nn.Module, loader, *, k: int = 9, class_names: Sequence[str] | None = None,
               device: str | torch.device = "auto") -> TopLosses:
    """The ``k`` examples the model gets most wrong (highest cross-entropy), worst first.

    Runs in eval mode under ``torch.inference_mode`` and restores the mode. Ties are broken by
    index, so the ranking equals sorting by (-loss, index).

    Args:
        model: a classifier.
        loader: ``(images, labels)`` batches in the dataset's order (``shuffle=False``).
        k: how many to return (all, if the data holds fewer).
        class_names: names of the classes (default: ``loader.dataset.classes`` when present).
        device: ``"auto"`` or where the model is.

    Example:
        >>> worst = top_losses(model, val_loader, k=4)  # doctest: +SKIP
        >>> worst.indices
        tensor([17,  3, 41,  8])
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_losses: k must be a positive int, got {k!r}. Fix: k=9.")
    losses, labels, preds, probs = _per_example(model, loader, device, "top_losses")
    order = torch.sort(losses, descending=True, stable=True).indices[:k]  # stable: ties keep index order
    if class_names is None:
        class_names = dataset_classes(getattr(loader, "dataset", None))
    rows = torch.arange(len(losses))[order]
    return TopLosses(
        indices=rows, losses=losses[order], labels=labels[order], predictions=preds[order],
        prob_pred=probs[rows, preds[order]], prob_true=probs[rows, labels[order]],
        class_names=None if class_names is None else list(class_names),
    )


def most_confused(model: nn.Module, loader, *, class_names: Sequence[str] | None = None, min_count: int = 1,
                  device: str | torch.device = "auto") -> list[tuple]:
    """The (true, predicted, count) pairs the model confuses most, most frequent first.

    Args:
        model: a classifier.
        loader: ``(images, labels)`` batches.
        class_names: names for the classes (default: ``loader.dataset.classes``, else indices).
        min_count: leave out pairs seen fewer times.
        device: ``"auto"`` or where the model is.

    Example:
        >>> most_confused(model, val_loader)  # doctest: +SKIP
        [('tree', 'flower', 4), ('mug', 'ball', 2)]
    """
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, (torch.utils.data.RandomSampler, torch.utils.data.SubsetRandomSampler)):
        loader = torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size or 64)  # order is moot
    _, labels, preds, _ = _per_example(model, loader, device, "most_confused")
    if class_names is None:
        class_names = dataset_classes(getattr(loader, "dataset", None))
    pairs: dict[tuple[int, int], int] = {}
    for y, p in zip(labels.tolist(), preds.tolist()):
        if y != p:
            pairs[(y, p)] = pairs.get((y, p), 0) + 1
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    name = (lambda c: class_names[c]) if class_names is not None else (lambda c: c)
    return [(name(y), name(p), n) for (y, p), n in ranked if n >= min_count]


def _image_at(source, index: int) -> torch.Tensor:
    """The image at ``index`` of a tensor batch, a dataset or a loader's dataset."""
    if isinstance(source, torch.Tensor):
        return source[index]
    dataset = source.dataset if isinstance(source, torch.utils.data.DataLoader) else source
    item = dataset[index]
    return item[0] if isinstance(item, (tuple, list)) else item


def plot_top_losses(result: TopLosses, images_or_loader, *, ncols: int = 3, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, cams: torch.Tensor | None = None, alpha: float = 0.5):
    """A grid of the worst examples, each titled predicted / true / loss / probability of the true class.

    Args:
        result: what :func:`top_losses` returned.
        images_or_loader: the images in dataset order: a tensor (N, C, H, W), a dataset or the loader.
        ncols: images per row.
        mean, std: the normalisation to undo for display (e.g. ``backbone.meta["mean"]``).
        cams: optional Grad-CAM maps, one per row of ``result``, overlaid on the images.
        alpha: opacity of the maps.

    Example:
        >>> worst = top_losses(model, val_loader)  # doctest: +SKIP
        >>> fig = plot_top_losses(worst, val_loader, mean=[0.5] * 3, std=[0.5] * 3)  # doctest: +SKIP
    """
    from matplotlib.figure import Figure

    from labkit._images import displayable

    if not isinstance(result, TopLosses):
        raise TypeError(f"plot_top_losses: expected the TopLosses that top_losses returned, got "
                        f"{type(result).__name__}.")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"plot_top_losses: ncols must be a positive int, got {ncols!r}.")
    k = len(result.indices)
    if cams is not None and len(cams) != k:
        raise ValueError(f"plot_top_losses: expected one map per example ({k}), got {len(cams)}.")
    cols, rows = min(ncols, k), -(-k // ncols)
    fig = Figure(figsize=(2.6 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    name = (lambda c: str(result.class_names[c])) if result.class_names else str
    for j, ax in enumerate(axes):
        ax.set_axis_off()
        if j >= k:
            continue
        image = _image_at(images_or_loader, int(result.indices[j]))
        if cams is not None:
            plot_cam(image, cams[j], ax=ax, alpha=alpha, mean=mean, std=std)
        else:
            arr = displayable(image, mean, std)
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
        ax.set_title(f"{name(int(result.predictions[j]))} / {name(int(result.labels[j]))}\n"
                     f"loss {float(result.losses[j]):.2f}, p {float(result.prob_true[j]):.2f}", fontsize="small")
    fig.suptitle("predicted / true, loss, probability of the true class", fontsize="medium")
    return fig
