"""Metrics for imbalanced classes: class weights, predictions, a confusion matrix, a per-class report.

Accuracy counts images, so on a dataset where one class is most of the images a model that
ignores the rare classes still scores well. The per-class view shows it: **recall** (of the
images of a class, how many were found), **precision** (of the images called that class, how
many were right), and **balanced accuracy**, the mean recall over classes (what accuracy
would be if every class had as many images).

torch and torchvision have none of these, so they are here, on plain tensors:

* :func:`class_counts`, :func:`class_weights`, :func:`sample_weights`: from the labels, the
  weights of a class-weighted loss (``nn.CrossEntropyLoss(weight=...)``) or of a balanced
  sampler (``torch.utils.data.WeightedRandomSampler``);
* :func:`predict`: predicted and true labels of a model over a loader;
* :func:`confusion_matrix`, :func:`class_report`, :func:`plot_confusion_matrix`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "class_counts",
    "class_weights",
    "sample_weights",
    "predict",
    "confusion_matrix",
    "ClassReport",
    "class_report",
    "plot_confusion_matrix",
]


def _labels(source: Any, what: str) -> torch.Tensor:
    """Integer labels from a tensor, a sequence, or a dataset with ``targets`` (Subset too)."""
    if isinstance(source, torch.utils.data.Subset):
        base = _labels(source.dataset, what)
        return base[torch.as_tensor(list(source.indices), dtype=torch.long)]
    if hasattr(source, "targets") and not isinstance(source, torch.Tensor):
        source = source.targets
    elif hasattr(source, "tensors") and len(source.tensors) >= 2:  # TensorDataset(images, labels)
        source = source.tensors[1]
    if isinstance(source, torch.Tensor):
        labels = source.detach().cpu().flatten()
    elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        labels = torch.as_tensor(list(source))
    else:
        raise TypeError(f"{what} expected labels (a tensor or list of ints) or a dataset with .targets, got "
                        f"{type(source).__name__}.")
    if labels.numel() == 0:
        raise ValueError(f"{what} got no labels; expected at least one.")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{what} expected integer class labels, got a {labels.dtype} tensor.")
    labels = labels.long()
    if labels.min() < 0:
        raise ValueError(f"{what} expected labels 0..num_classes-1, got {int(labels.min())}.")
    return labels


def _num_classes(labels: torch.Tensor, num_classes: int | None, what: str) -> int:
    top = int(labels.max()) + 1
    if num_classes is None:
        return top
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{what}: num_classes must be a positive int, got {num_classes!r}.")
    if top > num_classes:
        raise ValueError(f"{what}: a label is {top - 1} but num_classes={num_classes}; labels must be below it.")
    return num_classes


def class_counts(labels: Any, *, num_classes: int | None = None) -> torch.Tensor:
    """Images per class (int64 tensor), from labels or a dataset.

    Example:
        >>> class_counts([0, 0, 0, 1, 2, 2]).tolist()
        [3, 1, 2]
    """
    y = _labels(labels, "class_counts")
    return torch.bincount(y, minlength=_num_classes(y, num_classes, "class_counts"))


def class_weights(labels: Any, *, num_classes: int | None = None) -> torch.Tensor:
    """Loss weights that make every class count as much in total: ``N / (classes * count)``.

    A class with half the average count gets weight 2, one with twice the average 0.5, so
    the weights average to 1 over the images (the loss keeps its scale). Pass them to
    ``nn.CrossEntropyLoss(weight=...)``.

    Args:
        labels: training labels (tensor or list) or a dataset with ``targets``.
        num_classes: number of classes (default: largest label + 1).

    Raises:
        ValueError: a class has no images (it would need an infinite weight).

    Example:
        >>> class_weights([0, 0, 0, 1, 2, 2]).tolist()
        [0.6666666865348816, 2.0, 1.0]
    """
    counts = class_counts(labels, num_classes=num_classes)
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"class_weights: class(es) {missing} have no images, so no weight can balance them. "
                         "Add images of those classes or leave them out of num_classes.")
    return (counts.sum() / (len(counts) * counts)).float()


def sample_weights(labels: Any, *, num_classes: int | None = None) -> torch.Tensor:
    """One weight per image, ``1 / count of its class``: each class is drawn equally often by
    ``WeightedRandomSampler(sample_weights(y), num_samples=len(y))``.

    Example:
        >>> sample_weights([0, 0, 1]).tolist()
        [0.5, 0.5, 1.0]
    """
    y = _labels(labels, "sample_weights")
    counts = class_counts(y, num_classes=num_classes).double()
    return (1.0 / counts[y]).double()


def predict(model: nn.Module, loader: Iterable, *,
            device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels of ``model`` over ``loader`` (eval mode, no gradient; mode restored).

    Example:
        >>> pred, true = predict(nn.Linear(4, 3), [(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))])
        >>> pred.shape, true.tolist()
        (torch.Size([5]), [0, 1, 2, 0, 1])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"predict expected an nn.Module, got {type(model).__name__}.")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    modes = {m: m.training for m in model.modules()}
    preds, trues = [], []
    try:
        model.eval()
        with torch.inference_mode():
            for batch in loader:
                if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                    raise TypeError("predict: expected batches of (images, labels).")
                x, y = batch[0], batch[1]
                out = model(x.to(device))
                preds.append(out.argmax(1).cpu())
                trues.append(torch.as_tensor(y).cpu().long())
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not preds:
        raise ValueError("predict: the loader gave no batches.")
    return torch.cat(preds), torch.cat(trues)


def confusion_matrix(predicted: Any, true: Any, *, num_classes: int | None = None) -> torch.Tensor:
    """Counts of (true class, predicted class): row ``i`` holds the images of class ``i``.

    Example:
        >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2]).tolist()
        [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    """
    p, t = _labels(predicted, "confusion_matrix"), _labels(true, "confusion_matrix")
    if p.shape != t.shape:
        raise ValueError(f"confusion_matrix: got {p.numel()} predictions but {t.numel()} true labels; "
                         "expected one of each per image.")
    k = _num_classes(torch.cat([p, t]), num_classes, "confusion_matrix")
    return torch.bincount(t * k + p, minlength=k * k).reshape(k, k)


@dataclass(frozen=True)
class ClassReport:
    """Per-class recall, precision and count, with accuracy and balanced accuracy; prints as a table."""

    classes: tuple[str, ...]
    recall: tuple[float, ...]
    precision: tuple[float, ...]
    support: tuple[int, ...]
    accuracy: float
    balanced_accuracy: float

    def __str__(self) -> str:
        w = max(len("class"), *(len(c) for c in self.classes))
        lines = [f"{'class':<{w}}  {'images':>6}  {'recall':>6}  {'precision':>9}"]
        for c, n, r, p in zip(self.classes, self.support, self.recall, self.precision):
            lines.append(f"{c:<{w}}  {n:>6}  {r:>6.3f}  {p:>9.3f}")
        lines.append(f"accuracy {self.accuracy:.3f}, balanced accuracy (mean recall) {self.balanced_accuracy:.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"classes": list(self.classes), "recall": list(self.recall), "precision": list(self.precision),
                "support": list(self.support), "accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy}


def class_report(matrix: torch.Tensor, *, classes: Sequence[str] | None = None) -> ClassReport:
    """Recall, precision, accuracy and balanced accuracy from a confusion matrix.

    A class with no images gets recall 0 and counts in the balanced accuracy only if it has
    images; a class never predicted gets precision 0.

    Example:
        >>> r = class_report(confusion_matrix([0, 0, 0, 0], [0, 0, 0, 1]))
        >>> r.accuracy, r.balanced_accuracy
        (0.75, 0.5)
    """
    m = torch.as_tensor(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.numel() == 0:
        raise ValueError(f"class_report expected a square confusion matrix, got shape {tuple(m.shape)}.")
    m = m.double()
    k = m.shape[0]
    names = tuple(str(c) for c in classes) if classes is not None else tuple(str(i) for i in range(k))
    if len(names) != k:
        raise ValueError(f"class_report got {len(names)} class names for a {k}x{k} matrix.")
    support, found, called = m.sum(1), m.diag(), m.sum(0)
    if support.sum() == 0:
        raise ValueError("class_report: the confusion matrix is all zeros (no images).")
    recall = torch.where(support > 0, found / support.clamp(min=1), torch.zeros_like(found))
    precision = torch.where(called > 0, found / called.clamp(min=1), torch.zeros_like(found))
    present = support > 0
    return ClassReport(
        classes=names, recall=tuple(recall.tolist()), precision=tuple(precision.tolist()),
        support=tuple(int(v) for v in support.tolist()),
        accuracy=float(found.sum() / support.sum()), balanced_accuracy=float(recall[present].mean()),
    )


def plot_confusion_matrix(matrix: torch.Tensor, *, classes: Sequence[str] | None = None, normalize: bool = True,
                          title: str | None = None, ax=None):
    """Draw a confusion matrix (rows: true class, columns: predicted); return the Figure.

    With ``normalize`` each row is divided by its count, so the diagonal shows each class's
    recall whatever its size; the counts are printed in the cells either way. The input is
    not changed.

    Example:
        >>> fig = plot_confusion_matrix(torch.tensor([[5, 1], [2, 2]]), classes=["a", "b"])
    """
    import matplotlib.pyplot as plt

    m = torch.as_tensor(matrix).detach().cpu()
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"plot_confusion_matrix expected a square matrix, got shape {tuple(m.shape)}.")
    k = m.shape[0]
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"plot_confusion_matrix got {len(names)} class names for a {k}x{k} matrix.")
    counts = m.double()
    shown = counts / counts.sum(1, keepdim=True).clamp(min=1) if normalize else counts
    if ax is None:
        fig = plt.figure(figsize=(1.2 * k + 2.2, 1.1 * k + 1.4))
        plt.close(fig)  # shown once as a cell's value, never piling up
        ax = fig.subplots()
    else:
        fig = ax.figure
    im = ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    top = float(shown.max()) if shown.numel() else 1.0
    for i in range(k):
        for j in range(k):
            v = float(shown[i, j])
            text = f"{v:.2f}\n({int(counts[i, j])})" if normalize else f"{int(counts[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if v > 0.6 * (1 if normalize else top) else "black")
    ax.set_xticks(range(k), names, rotation=30, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or ("confusion matrix (rows sum to 1: the diagonal is recall)" if normalize
                           else "confusion matrix"))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig
