"""Training and evaluation loops that measure what they cost.

``fit`` trains any classifier with any optimizer and returns a :class:`History`: per
epoch the train and validation loss and accuracy, seconds, peak memory and images per
second. It picks the device (CUDA, then Apple MPS, then CPU) and, on CUDA, mixed
precision (bf16 where the GPU supports it, else fp16 with a gradient scaler).

Everything is plain PyTorch underneath: the model is an ``nn.Module``, the data a
``DataLoader`` (or any iterable of ``(images, labels)`` batches with a length), the
optimizer a ``torch.optim`` optimizer. labkit never wraps them.

Frozen layers stay frozen: ``fit`` calls ``model.train()`` each epoch and relies on
:func:`labkit.freeze.freeze`, which keeps frozen BatchNorm layers in eval mode (running
statistics untouched) even after ``model.train()``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, NamedTuple

import torch
from torch import nn

from labkit._batches import loader_len, logits_of, place_model, progress_bar, split_batch, to_device
from labkit._env import progress_enabled
from labkit._validate import check_data, check_training_optimizer
from labkit.device import AmpConfig, grad_scaler, resolve_amp
from labkit.history import History
from labkit.measure import PeakMemory, Stopwatch

__all__ = [
    "fit",
    "evaluate",
    "History",
    "EvalResult",
]


class EvalResult(NamedTuple):
    """Mean loss and accuracy over a loader, and how many images that covered."""

    loss: float
    accuracy: float
    n: int


class _Sums:
    """Running loss and accuracy, kept on the device (no host sync per batch)."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device, dtype=torch.float32)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.n = 0

    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            self.loss += loss.detach().float() * y.shape[0]
            self.correct += (out.detach().argmax(1) == y).sum()
        self.n += int(y.shape[0])

    def result(self) -> EvalResult:
        if self.n == 0:
            return EvalResult(math.nan, math.nan, 0)
        return EvalResult(float(self.loss) / self.n, int(self.correct) / self.n, self.n)


def _eval_pass(model, loader, loss_fn, device, amp: AmpConfig, channels_last, bar) -> EvalResult:
    """One pass in eval mode under ``torch.inference_mode()``; the model's mode is restored."""
    was_training = model.training
    model.eval()
    sums = _Sums(device)
    try:
        with torch.inference_mode():
            for batch in loader:
                x, y = to_device(*split_batch(batch, "evaluate"), device, channels_last)
                with amp.autocast(device):
                    out = logits_of(model(x))
                    loss = loss_fn(out.float(), y)
                sums.add(loss, out, y)
                bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    return sums.result()


def _train_epoch(model, loader, optimizer, loss_fn, device, amp: AmpConfig, scaler, channels_last,
                 bar, after_step: Callable[[], None] | None) -> EvalResult:
    """One pass of ``model.train()`` over ``loader``: forward, one optimizer-step path, running sums."""
    model.train()
    sums = _Sums(device)
    try:
        for step, batch in enumerate(loader):
            x, y = to_device(*split_batch(batch, "fit: train_loader"), device, channels_last)
            with amp.autocast(device):
                out = logits_of(model(x))  # auxiliary outputs, if any, are not trained
                loss = loss_fn(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # plain backward / step when the scaler is off
            scaler.step(optimizer)
            scaler.update()
            if after_step is not None:
                after_step()
            sums.add(loss, out, y)
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(sums.loss) / sums.n:.3f}")
    finally:
        bar.close()
    return sums.result()


def group_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Every param group's learning rate by group name (its ``"name"`` key, else ``"group<i>"``).

    Example:
        >>> group_rates(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
        {'group0': 0.1}
    """
    rates = {}
    for i, group in enumerate(optimizer.param_groups):
        name = str(group.get("name") or f"group{i}")
        rates[name if name not in rates else f"{name} #{i}"] = group.get("lr")
    return rates


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    loss_fn: Callable | None = None,
    device: str | torch.device = "auto",
    amp: bool | str = "auto",
    channels_last: bool = False,
    progress: bool | None = None,
) -> EvalResult:
    """Mean loss and accuracy of ``model`` on ``loader`` (eval mode, ``torch.inference_mode``).

    The model's train/eval mode is restored afterwards.

    Args:
        model: a classifier returning (batch, classes) scores.
        loader: batches of ``(images, labels)``.
        loss_fn: default ``nn.CrossEntropyLoss()``.
        device: ``"auto"`` or where the model is.
        amp: mixed precision, as in :func:`resolve_amp`.
        channels_last: feed images in channels-last memory format.
        progress: draw a progress bar (default: see :func:`progress_enabled`).

    Example:
        >>> model = nn.Linear(4, 3)
        >>> data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
        >>> evaluate(model, data, device="cpu").n
        8
    """
    dev = place_model(model, device, "evaluate")
    check_data(loader, None, model, dev, channels_last, "evaluate: loader")
    return _eval_pass(
        model, loader, loss_fn or nn.CrossEntropyLoss(), dev, resolve_amp(dev, amp), channels_last,
        progress_bar(loader_len(loader), "eval", progress_enabled(progress)),
    )


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    loss_fn: Callable | None = None,
    device: str | torch.device = "auto",
    amp: bool | str = "auto",
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    channels_last: bool = False,
    num_classes: int | None = None,
    on_epoch_start: Callable[[int], Any] | None = None,
    progress: bool | None = None,
) -> History:
    """Train ``model`` for ``epochs`` and return a :class:`History` of what each epoch cost.

    Before any training, ``fit`` checks its inputs and stops with a clear message on: an empty loader,
    a head whose output size differs from the classes in the data, labels outside ``0..outputs-1``,
    ``epochs < 1``, a model on another device than asked, an optimizer with nothing trainable or another
    model's parameters.

    Each epoch runs ``model.train()`` over ``train_loader`` (frozen BatchNorm layers stay
    in eval, see :func:`labkit.freeze.freeze`), then ``model.eval()`` under
    ``torch.inference_mode()`` over ``val_loader``. ``scheduler.step()`` runs once per
    epoch (``ReduceLROnPlateau`` gets the validation loss, else the training loss), or
    after every optimizer step with ``scheduler_interval="batch"`` (``OneCycleLR``).

    Args:
        model: a classifier returning (batch, classes) scores; trained in place.
        train_loader: batches of ``(images, labels)``, e.g. a ``DataLoader``.
        val_loader: optional validation batches.
        optimizer: a ``torch.optim`` optimizer over the model's trainable parameters.
        epochs: number of passes over ``train_loader`` (>= 1).
        loss_fn: default ``nn.CrossEntropyLoss()``.
        device: ``"auto"`` (CUDA, then MPS, then CPU; a CPU model is moved there in
            place) or an explicit device, which must be where the model already is.
        amp: ``"auto"`` (on for CUDA: bf16 where supported, else fp16 with a gradient
            scaler), ``True``, ``False``, ``"bf16"`` or ``"fp16"``.
        scheduler: optional learning-rate scheduler.
        scheduler_interval: ``"epoch"`` (default) or ``"batch"``: when to call ``scheduler.step()``.
        channels_last: the model and images in channels-last memory format (faster under AMP on recent GPUs).
        num_classes: classes in the data, checked against the head (default: ``dataset.classes`` or the labels).
        on_epoch_start: called as ``on_epoch_start(epoch)`` (counting from 0) before each
            epoch trains, e.g. ``lambda e: gradual_unfreeze(model, optimizer, e, ...)``; the
            History's rates are read after it, so groups it adds are recorded.
        progress: draw progress bars (default on, off when ``LABKIT_PROGRESS=0`` or ``CI=true``).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> data = [(torch.randn(16, 3, 2, 2), torch.randint(0, 3, (16,)))]
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> h = fit(model, data, optimizer=opt, epochs=2, device="cpu", progress=False)
        >>> len(h), sorted(h.epochs[0])[:3]
        (2, ['epoch', 'images_per_sec', 'lr'])
    """
    per_batch = _check_fit_options(model, epochs, scheduler, scheduler_interval, on_epoch_start)
    dev, amp_cfg, n_out, n_train = _prepare(model, train_loader, val_loader, optimizer, device, amp, channels_last,
                                            num_classes)
    run = _FitRun(model, optimizer, loss_fn or nn.CrossEntropyLoss(), dev, amp_cfg, channels_last,
                  progress_enabled(progress), scheduler.step if per_batch else None)
    history = History(meta=_run_meta(model, dev, amp_cfg, channels_last, n_out, n_train))
    epoch_bar = progress_bar(epochs, "epochs", run.bar_on and epochs > 1, unit="epoch")
    try:
        for epoch in range(1, epochs + 1):
            if on_epoch_start is not None:
                on_epoch_start(epoch - 1)
            train, val = run.epoch(train_loader, val_loader, epoch, epochs, history)
            if scheduler is not None and not per_batch:
                _step_scheduler(scheduler, val.loss if val.loss is not None else train.loss)
            epoch_bar.update(1)
            shown = val.accuracy if val.accuracy is not None else train.accuracy
            epoch_bar.set_postfix(loss=f"{train.loss:.3f}", acc=f"{shown:.3f}")
    finally:
        if run.tracker.kind == "rss_peak_sampled":
            run.tracker.stop()
        epoch_bar.close()
    return history


def _prepare(model, train_loader, val_loader, optimizer, device, amp, channels_last, num_classes):
    """Place the model, check the optimizer and data; returns (device, AmpConfig, outputs, training images)."""
    dev = place_model(model, device)
    check_training_optimizer(model, optimizer)
    amp_cfg = resolve_amp(dev, amp)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    n_out, n_train = check_data(train_loader, None, model, dev, channels_last, "fit: train_loader",
                                infer_classes=True, num_classes=num_classes)
    if val_loader is not None:
        check_data(val_loader, n_out, None, dev, channels_last, "fit: val_loader")
    return dev, amp_cfg, n_out, n_train


class _FitRun:
    """What every epoch of one ``fit`` call shares; :meth:`epoch` trains one and appends its row."""

    def __init__(self, model, optimizer, loss_fn, dev, amp_cfg: AmpConfig, channels_last, bar_on, batch_step):
        self.model, self.optimizer, self.loss_fn, self.dev = model, optimizer, loss_fn, dev
        self.amp_cfg, self.channels_last, self.bar_on, self.batch_step = amp_cfg, channels_last, bar_on, batch_step
        self.scaler = grad_scaler(amp_cfg)
        self.tracker = PeakMemory(dev)

    def epoch(self, train_loader, val_loader, epoch: int, epochs: int, history: History):
        """Train one epoch, score ``val_loader``, append the epoch's row; returns (train, val) EvalResults."""
        lrs = group_rates(self.optimizer)
        self.tracker.start()
        bar = progress_bar(loader_len(train_loader), f"epoch {epoch}/{epochs}", self.bar_on)
        with Stopwatch(self.dev) as train_clock:
            train = _train_epoch(self.model, train_loader, self.optimizer, self.loss_fn, self.dev, self.amp_cfg,
                                 self.scaler, self.channels_last, bar, self.batch_step)
        _check_epoch(train, epoch, next(iter(lrs.values())))
        val, val_seconds = EvalResult(None, None, 0), None
        if val_loader is not None:
            with Stopwatch(self.dev) as val_clock:
                val = _eval_pass(self.model, val_loader, self.loss_fn, self.dev, self.amp_cfg, self.channels_last,
                                 progress_bar(loader_len(val_loader), "val", self.bar_on))
            val_seconds = val_clock.seconds
        self.tracker.stop()
        history.meta["memory_kind"] = self.tracker.kind
        history.epochs.append(_epoch_row(epoch, train, val, train_clock.seconds, val_seconds, self.tracker, lrs))
        return train, val


def _check_fit_options(model, epochs, scheduler, scheduler_interval, on_epoch_start) -> bool:
    """Checks of fit's plain arguments; returns whether the scheduler steps per batch."""
    if on_epoch_start is not None and not callable(on_epoch_start):
        raise TypeError(f"on_epoch_start: expected a function of the epoch (from 0), got "
                        f"{type(on_epoch_start).__name__}. Fix: on_epoch_start=lambda epoch: ...")
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        raise TypeError(f"epochs: expected an int >= 1, got {type(epochs).__name__} {epochs!r}. Fix: epochs=3.")
    if epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs}. Fix: epochs=1 or more.")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}.")
    if scheduler_interval not in ("epoch", "batch"):
        raise ValueError(
            f"scheduler_interval: expected 'epoch' or 'batch', got {scheduler_interval!r}. "
            f"Fix: 'batch' for OneCycleLR-style schedules, else 'epoch'."
        )
    per_batch = scheduler is not None and scheduler_interval == "batch"
    if per_batch and isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError(
            "scheduler_interval: ReduceLROnPlateau needs an epoch's loss, got scheduler_interval='batch'. "
            "Fix: scheduler_interval='epoch'."
        )
    return per_batch


def _run_meta(model, dev, amp_cfg: AmpConfig, channels_last, n_out, n_train) -> dict:
    return {
        "device": str(dev),
        "amp": str(amp_cfg.dtype).replace("torch.", "") if amp_cfg.enabled else "off",
        "grad_scaler": amp_cfg.use_scaler,
        "channels_last": bool(channels_last),
        "num_outputs": n_out,
        "train_images": n_train,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "memory_kind": None,
        "torch_threads": torch.get_num_threads(),
    }


def _check_epoch(train: EvalResult, epoch: int, lr) -> None:
    if train.n == 0:
        raise ValueError(
            f"fit: train_loader yielded no batches in epoch {epoch}. Fix: a loader that can be "
            f"iterated more than once (a DataLoader, not a generator)."
        )
    if not math.isfinite(train.loss):
        raise FloatingPointError(
            f"fit: training loss became {train.loss} in epoch {epoch}. Fix: lower the learning "
            f"rate (now {lr}), or check the data for NaNs."
        )


def _epoch_row(epoch, train: EvalResult, val: EvalResult, seconds, val_seconds, tracker: PeakMemory, lrs) -> dict:
    return {
        "epoch": epoch,
        "train_loss": train.loss,
        "train_acc": train.accuracy,
        "val_loss": val.loss,
        "val_acc": val.accuracy,
        "seconds": seconds,
        "val_seconds": val_seconds,
        "images_per_sec": train.n / seconds if seconds > 0 else math.inf,
        "peak_mem_mb": tracker.peak_mb,
        "lr": next(iter(lrs.values())),
        "lrs": lrs,
    }


def _step_scheduler(scheduler, loss: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(loss)
    else:
        scheduler.step()
