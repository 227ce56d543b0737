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

import contextlib
import math
import os
import random
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

import torch
from torch import nn

__all__ = [
    "fit",
    "evaluate",
    "History",
    "EvalResult",
    "AmpConfig",
    "resolve_device",
    "resolve_amp",
    "loader_kwargs",
    "seed_everything",
    "progress_enabled",
    "PeakMemory",
]

_MB = 2**20


# --------------------------------------------------------------------------- device & AMP


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` (or any device spec) into a ``torch.device``.

    ``"auto"`` picks CUDA if a GPU is visible, then Apple's MPS, then the CPU.

    Args:
        device: ``"auto"``, a device string such as ``"cuda:0"``, or a ``torch.device``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"device: expected 'auto', a device string like 'cuda' or a torch.device, "
            f"got {type(device).__name__} {device!r}. Fix: pass device='auto'."
        )
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}. "
            f"Fix: pass one of those."
        ) from err


class AmpConfig(NamedTuple):
    """Mixed-precision settings chosen by :func:`resolve_amp`."""

    enabled: bool
    dtype: torch.dtype | None
    use_scaler: bool

    def autocast(self, device: torch.device):
        """A context manager that runs the forward pass in ``dtype`` (or does nothing)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def _cuda_bf16_supported() -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # pragma: no cover - depends on the driver
        return False


def resolve_amp(device: torch.device, amp: bool | str | torch.dtype = "auto") -> AmpConfig:
    """Choose mixed precision for ``device``.

    ``"auto"`` turns AMP on for CUDA only: bf16 where the GPU supports it (no scaler
    needed), else fp16 with a ``GradScaler``. On CPU and MPS ``"auto"`` means off;
    ``True`` or ``"bf16"`` asks for bf16 autocast there too.

    Args:
        device: the device training runs on.
        amp: ``"auto"``, ``True``, ``False``, ``"bf16"``, ``"fp16"`` or a dtype.

    Example:
        >>> resolve_amp(torch.device("cpu"), "auto")
        AmpConfig(enabled=False, dtype=None, use_scaler=False)
    """
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if amp is False or amp is None:
        return AmpConfig(False, None, False)
    if amp == "auto":
        if device.type != "cuda":
            return AmpConfig(False, None, False)
        amp = True
    if amp is True:
        if device.type == "cuda":
            dtype = torch.bfloat16 if _cuda_bf16_supported() else torch.float16
        elif device.type == "mps":
            dtype = torch.float16
        else:
            dtype = torch.bfloat16
    elif isinstance(amp, str) and amp in names:
        dtype = names[amp]
    elif isinstance(amp, torch.dtype) and amp in (torch.bfloat16, torch.float16):
        dtype = amp
    else:
        raise ValueError(
            f"amp: expected 'auto', True, False, 'bf16' or 'fp16', got {amp!r}. "
            f"Fix: pass amp='auto' (on for CUDA, off elsewhere)."
        )
    return AmpConfig(True, dtype, device.type == "cuda" and dtype == torch.float16)


def _make_scaler():
    try:
        return torch.amp.GradScaler("cuda")
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler()


def loader_kwargs(device: str | torch.device = "auto", *, num_workers: int | None = None) -> dict:
    """DataLoader settings that suit ``device``: pinned memory and worker processes on CUDA.

    Pinned (page-locked) host memory lets ``fit`` copy batches to the GPU with
    ``non_blocking=True`` while the previous batch is still computing.

    Args:
        device: where training will run (``"auto"`` resolves as in :func:`resolve_device`).
        num_workers: loader worker processes; default 0 off CUDA (in-memory lesson data
            gains nothing from workers) and ``min(4, cpu count)`` on CUDA.

    Example:
        >>> loader_kwargs("cpu")
        {'pin_memory': False, 'num_workers': 0}
        >>> # DataLoader(dataset, batch_size=32, shuffle=True, **loader_kwargs("auto"))
    """
    device = resolve_device(device)
    cuda = device.type == "cuda"
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if cuda else 0
    kwargs: dict[str, Any] = {"pin_memory": cuda, "num_workers": int(num_workers)}
    if num_workers > 0:
        kwargs["persistent_workers"] = True
    return kwargs


def seed_everything(seed: int = 0, *, deterministic: bool = False) -> int:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) so a lesson reruns the same.

    Args:
        seed: the seed.
        deterministic: also ask PyTorch for deterministic algorithms (slower on GPU;
            operations without a deterministic version warn instead of failing).

    Example:
        >>> seed_everything(0)
        0
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__} {seed!r}. Fix: seed_everything(0).")
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)  # affects child processes only
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


# --------------------------------------------------------------------------- progress


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to draw progress bars: ``progress`` if given, else off when the environment
    sets ``LABKIT_PROGRESS=0`` or ``CI=true``, else on.

    Example:
        >>> progress_enabled(False)
        False
    """
    if progress is not None:
        return bool(progress)
    if os.environ.get("LABKIT_PROGRESS", "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        return False
    return True


def _bar(total: int | None, desc: str, enabled: bool, unit: str = "batch"):
    """A tqdm bar (widget in Jupyter/Colab, text in a terminal), or None when disabled."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit=unit, dynamic_ncols=True)


# --------------------------------------------------------------------------- memory


def _read_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class PeakMemory:
    """Measure peak memory over a block, resettable, on any device.

    * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``
      (tensor memory, not the caching allocator's reserve).
    * CPU and MPS on Linux: the process's peak resident set size, reset at ``start()``
      through ``/proc/self/clear_refs`` (exact, no polling); where that is refused, a
      thread samples ``/proc/self/statm`` every few milliseconds.
    * Elsewhere (macOS, Windows): the process's lifetime peak RSS, which only grows;
      ``kind`` says so.

    Example:
        >>> with PeakMemory(torch.device("cpu")) as mem:
        ...     x = torch.ones(1000, 1000)
        >>> mem.peak_mb > 0
        True
    """

    def __init__(self, device: str | torch.device = "cpu", *, interval: float = 0.005):
        self.device = resolve_device(device)
        self.interval = interval
        self.kind = ""
        self.peak_bytes = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled = 0

    # context manager sugar
    def __enter__(self) -> "PeakMemory":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / _MB

    def start(self) -> None:
        """Forget the previous peak and start measuring."""
        self.peak_bytes = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM (peak RSS) to the current RSS
            if _read_status_kb("VmHWM") is None:
                raise OSError("no VmHWM")
            self.kind = "rss_peak"
            return
        except OSError:
            pass
        if os.path.exists("/proc/self/statm"):
            self.kind = "rss_peak_sampled"
            self._stop.clear()
            self._sampled = 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
            return
        self.kind = "rss_peak_since_process_start"

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            try:
                with open("/proc/self/statm") as f:
                    rss = int(f.read().split()[1]) * page
                self._sampled = max(self._sampled, rss)
            except (OSError, ValueError):
                return
            if self._stop.wait(self.interval):
                return

    def stop(self) -> float:
        """Stop measuring; return (and keep in ``peak_bytes``) the peak in bytes."""
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self.kind == "rss_peak":
            self.peak_bytes = (_read_status_kb("VmHWM") or 0) * 1024
        elif self.kind == "rss_peak_sampled":
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._thread = None
            self.peak_bytes = self._sampled
        else:
            self.peak_bytes = _ru_maxrss_bytes()
        return self.peak_bytes


# --------------------------------------------------------------------------- History


_COLUMNS = [
    ("epoch", "epoch", "{:d}"),
    ("train_loss", "train loss", "{:.4f}"),
    ("train_acc", "train acc", "{:.3f}"),
    ("val_loss", "val loss", "{:.4f}"),
    ("val_acc", "val acc", "{:.3f}"),
    ("seconds", "seconds", "{:.2f}"),
    ("images_per_sec", "img/s", "{:.1f}"),
    ("peak_mem_mb", "peak MB", "{:.0f}"),
]


@dataclass(repr=False)
class History:
    """What happened in each epoch of :func:`fit`, as a list of dicts (one per epoch).

    Each row has ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` (None
    without validation data), ``seconds`` (training time of the epoch), ``val_seconds``,
    ``images_per_sec``, ``peak_mem_mb`` and ``lr`` (first param group's, at the epoch's
    start). ``meta`` records the device, precision, memory measure and image counts.

    Example:
        >>> h = History([{"epoch": 1, "train_loss": 0.9, "val_acc": 0.5},
        ...              {"epoch": 2, "train_loss": 0.4, "val_acc": 0.8}])
        >>> h["train_loss"], h.best("val_acc")["epoch"]
        ([0.9, 0.4], 2)
    """

    epochs: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, key: str | int):
        """One column by name (``history["val_acc"]``, a list) or one epoch's row by index (a dict)."""
        if isinstance(key, int):
            return self.epochs[key]
        return [row.get(key) for row in self.epochs]

    @property
    def total_seconds(self) -> float:
        """Training seconds summed over epochs (validation excluded)."""
        return float(sum(row.get("seconds") or 0.0 for row in self.epochs))

    def best(self, key: str = "val_acc", *, mode: str | None = None) -> dict:
        """The epoch row with the best ``key`` (max for accuracies, min for losses)."""
        rows = [row for row in self.epochs if row.get(key) is not None]
        if not rows:
            raise ValueError(
                f"best({key!r}): no epoch has a value for {key!r} (columns: "
                f"{', '.join(self.epochs[0]) if self.epochs else 'none, History is empty'}). "
                f"Fix: pass val_loader to fit() for val_* columns, or pick a filled column."
            )
        if mode is None:
            mode = "min" if "loss" in key or key in {"seconds", "peak_mem_mb"} else "max"
        if mode not in {"min", "max"}:
            raise ValueError(f"best(mode=...): expected 'min' or 'max', got {mode!r}.")
        pick = min if mode == "min" else max
        return dict(pick(rows, key=lambda row: row[key]))

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready): ``{"epochs": [...], "meta": {...}}``."""
        return {"epochs": [dict(row) for row in self.epochs], "meta": dict(self.meta)}

    def table(self) -> str:
        """The epochs as an aligned plain-text table."""
        cols = [(k, title, fmt) for k, title, fmt in _COLUMNS if any(r.get(k) is not None for r in self.epochs)]
        if not cols:
            return "History (no epochs)"
        cells = [[title for _, title, _ in cols]]
        for row in self.epochs:
            cells.append(["-" if row.get(k) is None else fmt.format(row[k]) for k, _, fmt in cols])
        widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        where = f" on {self.meta['device']}" if self.meta.get("device") else ""
        return f"History: {len(self.epochs)} epochs{where}\n{self.table()}"

    def plot(self, *, title: str | None = None):
        """Loss and accuracy curves (train and, when present, validation) as a new Figure."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 3.4), layout="constrained")
        ax_loss, ax_acc = fig.subplots(1, 2)
        x = self["epoch"]
        for ax, metric, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
            for split, style in (("train", "-o"), ("val", "--s")):
                y = self[f"{split}_{metric}"]
                if any(v is not None for v in y):
                    ax.plot(x, [math.nan if v is None else v for v in y], style, label=split)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        if x:
            ax_loss.set_xticks(x)
            ax_acc.set_xticks(x)
        ax_acc.set_ylim(-0.02, 1.02)
        if title:
            fig.suptitle(title)
        return fig


# --------------------------------------------------------------------------- input checks


def _unwrap_subset(dataset):
    """(base dataset, indices or None) through any chain of torch Subsets."""
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        idx = list(dataset.indices)
        indices = idx if indices is None else [idx[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def _dataset_labels(dataset) -> torch.Tensor | None:
    """All class labels of a dataset when they are cheap to read (no image loading)."""
    if dataset is None:
        return None
    base, indices = _unwrap_subset(dataset)
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


def _dataset_classes(dataset) -> list | None:
    base, _ = _unwrap_subset(dataset) if dataset is not None else (None, None)
    classes = getattr(base, "classes", None)
    if classes is None:
        return None
    try:
        return list(classes)
    except TypeError:
        return None


def _loader_len(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _split_batch(batch, where: str):
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


def _model_device(model: nn.Module) -> torch.device | None:
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


def _place_model(model: nn.Module, device: str | torch.device, where: str = "fit") -> torch.device:
    """The device to train on. ``"auto"`` moves a CPU model to the best device (in place);
    an explicit device must be where the model already is."""
    current = _model_device(model)
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


def _check_optimizer(model: nn.Module, optimizer, where: str = "fit") -> None:
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


def _output_size(model: nn.Module, x: torch.Tensor, device: torch.device, channels_last: bool) -> int:
    """Number of outputs, by running one image through the model (eval mode, no autograd)."""
    was_training = model.training
    sample = x[:1].to(device)
    if channels_last and sample.dim() == 4:
        sample = sample.contiguous(memory_format=torch.channels_last)
    try:
        model.eval()
        with torch.inference_mode():
            out = _logits(model(sample))
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


def _check_labels(labels: torch.Tensor, n_out: int, where: str, whole: bool) -> None:
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


def _check_data(
    loader, n_out: int | None, model: nn.Module | None, device, channels_last, where: str, *,
    count_classes: bool = False,
):
    """Empty loader, label range and head size vs classes. Returns (n_out, n_images)."""
    n_batches = _loader_len(loader)
    if n_batches == 0:
        size = _loader_len(getattr(loader, "dataset", None) or [])
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
    x, y = _split_batch(first, where)
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if model is not None:
        n_out = _output_size(model, x, device, channels_last)
    assert n_out is not None
    dataset = getattr(loader, "dataset", None)
    classes = _dataset_classes(dataset)
    labels = _dataset_labels(dataset)
    if classes is not None and len(classes) != n_out:
        raise ValueError(
            f"{where}: the model's head has {n_out} outputs but the data has {len(classes)} classes "
            f"({', '.join(map(str, classes[:5]))}{', ...' if len(classes) > 5 else ''}). "
            f"Fix: replace_head(model, {len(classes)})."
        )
    if labels is not None:
        _check_labels(labels, n_out, where, whole=True)
        n_data = int(labels.max()) + 1 if labels.numel() else 0
        # Only when every label 0..n_data-1 occurs are we sure how many classes the data has.
        complete = n_data > 0 and len(torch.unique(labels)) == n_data
        if classes is None and count_classes and complete and n_data != n_out:
            raise ValueError(
                f"{where}: the model's head has {n_out} outputs but the data has {n_data} classes "
                f"(labels 0..{n_data - 1}). Fix: replace_head(model, {n_data})."
            )
    _check_labels(y, n_out, where, whole=False)
    n_images = None
    try:
        n_images = len(dataset) if dataset is not None else None
    except TypeError:
        pass
    return n_out, n_images


# --------------------------------------------------------------------------- loops


class EvalResult(NamedTuple):
    """Mean loss and accuracy over a loader, and how many images that covered."""

    loss: float
    accuracy: float
    n: int


def _logits(out):
    """Class scores from a model's output (GoogLeNet and Inception return a named tuple in training)."""
    return out.logits if hasattr(out, "logits") and not isinstance(out, torch.Tensor) else out


def _to_device(x, y, device, channels_last):
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    return x, y.to(device, non_blocking=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.synchronize()


def _run_eval(model, loader, loss_fn, device, amp: AmpConfig, channels_last, bar_enabled, desc) -> EvalResult:
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float32)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    bar = _bar(_loader_len(loader), desc, bar_enabled)
    try:
        with torch.inference_mode():
            for batch in loader:
                x, y = _to_device(*_split_batch(batch, "evaluate"), device, channels_last)
                with amp.autocast(device):
                    out = _logits(model(x))
                    loss = loss_fn(out.float(), y)
                loss_sum += loss.float() * y.shape[0]
                correct += (out.argmax(1) == y).sum()
                n += int(y.shape[0])
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    if n == 0:
        return EvalResult(math.nan, math.nan, 0)
    return EvalResult(float(loss_sum) / n, int(correct) / n, n)


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
    dev = _place_model(model, device, "evaluate")
    _check_data(loader, None, model, dev, channels_last, "evaluate: loader")
    return _run_eval(
        model, loader, loss_fn or nn.CrossEntropyLoss(), dev, resolve_amp(dev, amp), channels_last,
        progress_enabled(progress), "eval",
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
    progress: bool | None = None,
) -> History:
    """Train ``model`` for ``epochs`` and return a :class:`History` of what each epoch cost.

    Before any training, ``fit`` checks its inputs and stops with a clear message on: an
    empty loader, a head whose output size differs from the number of classes in the data,
    labels outside ``0..outputs-1``, ``epochs < 1``, a model on a different device than
    asked, an optimizer with nothing trainable or holding another model's parameters.

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
        channels_last: convert the model and images to channels-last memory format
            (often faster for convolutions under AMP on recent GPUs).
        progress: draw progress bars (default on, off when ``LABKIT_PROGRESS=0`` or ``CI=true``).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> data = [(torch.randn(16, 3, 2, 2), torch.randint(0, 3, (16,)))]
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> h = fit(model, data, optimizer=opt, epochs=2, device="cpu", progress=False)
        >>> len(h), sorted(h.epochs[0])[:3]
        (2, ['epoch', 'images_per_sec', 'lr'])
    """
    # ---- checks, all before any training
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
    dev = _place_model(model, device)
    _check_optimizer(model, optimizer)
    amp_cfg = resolve_amp(dev, amp)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    n_out, n_train = _check_data(
        train_loader, None, model, dev, channels_last, "fit: train_loader", count_classes=True
    )
    if val_loader is not None:
        _check_data(val_loader, n_out, None, dev, channels_last, "fit: val_loader")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    scaler = _make_scaler() if amp_cfg.use_scaler else None
    bar_on = progress_enabled(progress)
    n_batches = _loader_len(train_loader)

    history = History(meta={
        "device": str(dev),
        "amp": str(amp_cfg.dtype).replace("torch.", "") if amp_cfg.enabled else "off",
        "grad_scaler": scaler is not None,
        "channels_last": bool(channels_last),
        "num_outputs": n_out,
        "train_images": n_train,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "memory_kind": None,
        "torch_threads": torch.get_num_threads(),
    })
    tracker = PeakMemory(dev)
    epoch_bar = _bar(epochs, "epochs", bar_on and epochs > 1, unit="epoch")
    try:
        for epoch in range(1, epochs + 1):
            lr = optimizer.param_groups[0].get("lr")
            tracker.start()
            _sync(dev)
            t0 = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=dev, dtype=torch.float32)
            correct = torch.zeros((), device=dev, dtype=torch.long)
            seen = 0
            bar = _bar(n_batches, f"epoch {epoch}/{epochs}", bar_on)
            for step, batch in enumerate(train_loader):
                x, y = _to_device(*_split_batch(batch, "fit: train_loader"), dev, channels_last)
                with amp_cfg.autocast(dev):
                    out = _logits(model(x))  # auxiliary outputs, if any, are not trained
                    loss = loss_fn(out.float(), y)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                if per_batch:
                    scheduler.step()
                with torch.no_grad():
                    loss_sum += loss.detach().float() * y.shape[0]
                    correct += (out.detach().argmax(1) == y).sum()
                seen += int(y.shape[0])
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0 or step + 1 == n_batches:
                        bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}")
            if bar is not None:
                bar.close()
            _sync(dev)
            seconds = time.perf_counter() - t0
            if seen == 0:
                raise ValueError(
                    f"fit: train_loader yielded no batches in epoch {epoch}. Fix: a loader that can be "
                    f"iterated more than once (a DataLoader, not a generator)."
                )
            train_loss, train_acc = float(loss_sum) / seen, int(correct) / seen
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"fit: training loss became {train_loss} in epoch {epoch}. Fix: lower the learning "
                    f"rate (now {lr}), or check the data for NaNs."
                )
            val = EvalResult(None, None, 0)
            val_seconds = None
            if val_loader is not None:
                v0 = time.perf_counter()
                val = _run_eval(model, val_loader, loss_fn, dev, amp_cfg, channels_last, bar_on, "val")
                _sync(dev)
                val_seconds = time.perf_counter() - v0
            tracker.stop()
            history.meta["memory_kind"] = tracker.kind
            history.epochs.append({
                "epoch": epoch,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val.loss,
                "val_acc": val.accuracy,
                "seconds": seconds,
                "val_seconds": val_seconds,
                "images_per_sec": seen / seconds if seconds > 0 else math.inf,
                "peak_mem_mb": tracker.peak_mb,
                "lr": lr,
            })
            if scheduler is not None and not per_batch:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(val.loss if val.loss is not None else train_loss)
                else:
                    scheduler.step()
            if epoch_bar is not None:
                epoch_bar.update(1)
                shown = val.accuracy if val.accuracy is not None else train_acc
                epoch_bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{shown:.3f}")
    finally:
        if tracker.kind == "rss_peak_sampled":
            tracker.stop()
        if epoch_bar is not None:
            epoch_bar.close()
    return history
