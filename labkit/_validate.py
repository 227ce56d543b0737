"""Input validation (private to labkit): the models, data and optimizers ``fit`` and the surgery verify.

Each check stops with what was expected, what came, and the fix.
"""
from __future__ import annotations

import torch
from torch import nn

from labkit._batches import dataset_classes, dataset_labels, loader_len, logits_of, split_batch

__all__ = ["check_module", "check_training_optimizer", "output_size", "check_labels", "check_data"]


def check_module(obj: object, verb: str) -> None:
    """Stop unless ``obj`` is an nn.Module; ``verb`` names the public function that was called."""
    if not isinstance(obj, nn.Module):
        raise TypeError(
            f"{verb} expects an nn.Module, got {type(obj).__name__}. "
            f"Pass a model or one of its submodules, e.g. {verb}(model) or {verb}(model.layer1)."
        )


def check_training_optimizer(model: nn.Module, optimizer, where: str = "fit") -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{where}: optimizer expected a torch.optim.Optimizer, got {type(optimizer).__name__}. "
            f"Fix: optimizer=torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)."
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            f"{where}: expected at least one trainable parameter, got 0 trainable of "
            f"{sum(1 for _ in model.parameters())} parameter tensors (every parameter is frozen). "
            f"Fix: replace the head after freezing (freeze(model); replace_head(model, n)), "
            f"not before."
        )
    owned = {id(p) for p in model.parameters()}
    opt_params = [p for g in optimizer.param_groups for p in g["params"]]
    foreign = sum(1 for p in opt_params if id(p) not in owned)
    if foreign:
        raise ValueError(
            f"{where}: expected the optimizer to hold this model's parameters, got {foreign} of "
            f"{len(opt_params)} tensors that belong to another model. Fix: build the optimizer "
            f"from this model after all surgery: torch.optim.SGD([p for p in model.parameters() "
            f"if p.requires_grad], lr=...)."
        )
    if not any(id(p) in {id(t) for t in trainable} for p in opt_params):
        raise ValueError(
            f"{where}: expected the optimizer to hold trainable parameters, got none of the model's "
            f"{len(trainable)} trainable tensors (it holds only frozen ones). Fix: build the optimizer "
            f"after replace_head: [p for p in model.parameters() if p.requires_grad]."
        )


def output_size(model: nn.Module, x: torch.Tensor, device: torch.device, channels_last: bool) -> int:
    """Number of outputs, by running one image through the model (eval mode, no autograd)."""
    was_training = model.training
    sample = x[:1].to(device)
    if channels_last and sample.dim() == 4:
        sample = sample.contiguous(memory_format=torch.channels_last)
    try:
        model.eval()
        with torch.inference_mode():
            out = logits_of(model(sample))
    except RuntimeError as err:
        raise RuntimeError(
            f"fit: the model could not run on one batch element of shape {tuple(sample.shape)} "
            f"on {device}: {err}"
        ) from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"fit: expected the model to return class scores of shape (batch, classes), got {shape}. "
            f"Fix: end the model with a Linear head (labkit.heads.replace_head)."
        )
    return int(out.shape[1])


def check_labels(labels: torch.Tensor, n_out: int, where: str, whole: bool) -> None:
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(
            f"{where}: expected integer class labels (torch.long), got {labels.dtype}. "
            f"Fix: return class indices 0..{n_out - 1} from the Dataset."
        )
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_out:
        bad = lo if lo < 0 else hi
        scope = "the data" if whole else "the first batch"
        raise ValueError(
            f"{where}: labels out of range: the head has {n_out} outputs, so labels must be in "
            f"0..{n_out - 1}, but {scope} holds label {bad}. Fix: replace_head(model, {max(hi + 1, n_out)}) "
            f"if the data has more classes, or remap the labels to start at 0."
        )


def check_data(
    loader, n_out: int | None, model: nn.Module | None, device, channels_last, where: str, *,
    infer_classes: bool = False, num_classes: int | None = None,
):
    """Empty loader, label range and head size vs classes. Returns (n_out, n_images).

    The data's class count is ``num_classes`` when the caller states it, else ``dataset.classes``,
    else (with ``infer_classes``) the labels when every class 0..max occurs.
    """
    n_batches = loader_len(loader)
    if n_batches == 0:
        size = loader_len(getattr(loader, "dataset", None) or [])
        raise ValueError(
            f"{where}: expected a loader with at least one batch, got an empty one "
            f"(dataset of {size if size is not None else 'unknown size'} items). Fix: check the data "
            f"folder/split, or lower batch_size if drop_last=True."
        )
    try:
        first = next(iter(loader))
    except StopIteration:
        raise ValueError(
            f"{where}: expected a loader with at least one batch, got an empty one. "
            f"Fix: check the data folder/split."
        ) from None
    x, y = split_batch(first, where)
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if model is not None:
        n_out = output_size(model, x, device, channels_last)
    assert n_out is not None
    dataset = getattr(loader, "dataset", None)
    classes = dataset_classes(dataset)
    labels = dataset_labels(dataset)
    if num_classes is not None and num_classes != n_out:
        raise ValueError(
            f"{where}: the model's head has {n_out} outputs but the data has {num_classes} classes. "
            f"Fix: replace_head(model, {num_classes})."
        )
    if num_classes is None and classes is not None and len(classes) != n_out:
        raise ValueError(
            f"{where}: the model's head has {n_out} outputs but the data has {len(classes)} classes "
            f"({', '.join(map(str, classes[:5]))}{', ...' if len(classes) > 5 else ''}). "
            f"Fix: replace_head(model, {len(classes)})."
        )
    if labels is not None:
        check_labels(labels, n_out, where, whole=True)
        n_data = int(labels.max()) + 1 if labels.numel() else 0
        # Only when every label 0..n_data-1 occurs are we sure how many classes the data has.
        complete = n_data > 0 and len(torch.unique(labels)) == n_data
        if classes is None and num_classes is None and infer_classes and complete and n_data != n_out:
            raise ValueError(
                f"{where}: the model's head has {n_out} outputs but the data has {n_data} classes "
                f"(labels 0..{n_data - 1}). Fix: replace_head(model, {n_data})."
            )
    check_labels(y, n_out, where, whole=False)
    n_images = None
    try:
        n_images = len(dataset) if dataset is not None else None
    except TypeError:
        pass
    return n_out, n_images
