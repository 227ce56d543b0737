"""The torchvision model zoo as data: accuracy, size and cost of every classification weight, and speed measured here.

torchvision ships, with each classification weight, its ImageNet-1K accuracy
(``weights.meta["_metrics"]``), its cost in GFLOPS (``"_ops"``), its file size in MB
(``"_file_size"``) and its parameter count (``"num_params"``). :func:`weights_table` reads
them all (no download, works offline) into a list of plain dicts, one per weight;
:func:`plot_zoo` draws accuracy against GFLOPS with the ResNet, EfficientNet and ViT families
highlighted; :func:`measure_latency` times a model's forward pass per image at batch 1 and at
a larger batch on the current device and records the peak memory the forward pass needed;
:func:`rank_disagreements` lists the pairs of models that FLOPs and wall time order differently.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from matplotlib.figure import Figure
from torch import nn

__all__ = [
    "FAMILIES",
    "HIGHLIGHT",
    "Latency",
    "family_of",
    "weights_table",
    "format_zoo",
    "plot_zoo",
    "preprocessing_table",
    "measure_latency",
    "rank_disagreements",
]

# Family names by builder prefix, most specific first (wide_resnet before resnet ...).
FAMILIES: tuple[tuple[str, str], ...] = (
    ("wide_resnet", "Wide ResNet"),
    ("resnext", "ResNeXt"),
    ("resnet", "ResNet"),
    ("efficientnet", "EfficientNet"),
    ("vit_", "ViT"),
    ("swin", "Swin"),
    ("maxvit", "MaxViT"),
    ("convnext", "ConvNeXt"),
    ("mobilenet", "MobileNet"),
    ("regnet", "RegNet"),
    ("densenet", "DenseNet"),
    ("vgg", "VGG"),
    ("mnasnet", "MnasNet"),
    ("shufflenet", "ShuffleNet"),
    ("squeezenet", "SqueezeNet"),
    ("inception", "Inception"),
    ("googlenet", "GoogLeNet"),
    ("alexnet", "AlexNet"),
)
HIGHLIGHT = ("ResNet", "EfficientNet", "ViT")
_COLORS = {"ResNet": "tab:blue", "EfficientNet": "tab:green", "ViT": "tab:red"}
_MB = 1024 * 1024


def family_of(builder: str) -> str:
    """The family a torchvision builder belongs to ("resnet50" -> "ResNet"; unknown -> "other").

    Example:
        >>> family_of("efficientnet_v2_s"), family_of("vit_b_16"), family_of("wide_resnet50_2")
        ('EfficientNet', 'ViT', 'Wide ResNet')
    """
    if not isinstance(builder, str):
        raise TypeError(f"family_of expected a builder name such as 'resnet50', got {type(builder).__name__}.")
    for prefix, family in FAMILIES:
        if builder.startswith(prefix):
            return family
    return "other"


def _first(v) -> int:
    return int(v[0] if isinstance(v, (list, tuple)) else v)


def weights_table(*, builders: Iterable[str] | None = None, dataset: str = "ImageNet-1K") -> list[dict]:
    """Every classification weight torchvision ships, with the figures it ships with (offline).

    Args:
        builders: restrict to these builder names (default: all of
            ``torchvision.models.list_models(module=torchvision.models)``).
        dataset: whose ``_metrics`` to read (torchvision's classification weights report ImageNet-1K).

    Returns:
        one dict per weight that reports an accuracy, ordered by builder name then weight, with keys ``weights``
        ("ResNet50_Weights.IMAGENET1K_V2"), ``builder``, ``family``, ``default`` (is it
        ``.DEFAULT``), ``acc@1`` and ``acc@5`` (%), ``params_m`` (millions), ``gflops``,
        ``file_mb``, ``crop`` and ``resize`` (pixels).

    Example:
        >>> rows = weights_table(builders=["resnet50"])
        >>> [(r["weights"], r["acc@1"], r["default"]) for r in rows]
        [('ResNet50_Weights.IMAGENET1K_V1', 76.13, False), ('ResNet50_Weights.IMAGENET1K_V2', 80.858, True)]
    """
    import torchvision
    from torchvision.models import get_model_weights, list_models

    known = list_models(module=torchvision.models)
    if builders is None:
        names = sorted(known)
    else:
        if isinstance(builders, str):
            raise TypeError(f"builders expected a list of names, got the string {builders!r}; "
                            f"use builders=[{builders!r}].")
        names = list(builders)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"weights_table: {unknown} are not torchvision classification builders; "
                             f"expected names from torchvision.models.list_models(module=torchvision.models), "
                             f"e.g. 'resnet50'.")
    rows = []
    for name in names:
        enum = get_model_weights(name)
        default = enum.DEFAULT
        for w in enum:
            metrics = w.meta.get("_metrics", {}).get(dataset)
            if metrics is None or not math.isfinite(float(metrics.get("acc@1", math.nan))):
                continue  # e.g. VGG16_Weights.IMAGENET1K_FEATURES: a feature extractor with no accuracy
            preset = w.transforms()
            rows.append({
                "weights": str(w),
                "builder": name,
                "family": family_of(name),
                "default": w == default,
                "acc@1": float(metrics["acc@1"]),
                "acc@5": float(metrics["acc@5"]),
                "params_m": w.meta["num_params"] / 1e6,
                "gflops": float(w.meta["_ops"]),
                "file_mb": float(w.meta["_file_size"]),
                "crop": _first(preset.crop_size),
                "resize": _first(preset.resize_size),
            })
    return rows


_FORMATS = {"acc@1": "{:.1f}", "acc@5": "{:.1f}", "params_m": "{:.1f}", "gflops": "{:.2f}", "file_mb": "{:.1f}",
            "ms_per_image": "{:.1f}", "peak_mb": "{:.0f}"}


def format_zoo(rows: Sequence[dict], *, columns: Sequence[str] | None = None, sort_by: str | None = None,
                 descending: bool = True, limit: int | None = None) -> str:
    """Rows of dicts as an aligned plain-text table (nothing is changed).

    Args:
        rows: dicts such as :func:`weights_table` returns.
        columns: which keys to show, in order (default: the first row's keys).
        sort_by: a key to sort on (``descending`` by default); None keeps the given order.
        limit: show at most this many rows.

    Example:
        >>> print(format_zoo([{"name": "a", "gflops": 1.5}], columns=["name", "gflops"]))
        name  gflops
        ----  ------
           a    1.50
    """
    rows = list(rows)
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns is not None else list(rows[0])
    missing = [c for c in cols if c not in rows[0]]
    if missing:
        raise KeyError(f"format_zoo: columns {missing} are not in the rows; they have {list(rows[0])}.")
    if sort_by is not None:
        if sort_by not in rows[0]:
            raise KeyError(f"format_zoo: sort_by={sort_by!r} is not a column; pick one of {list(rows[0])}.")
        rows = sorted(rows, key=lambda r: (r[sort_by] is None, r[sort_by]), reverse=descending)
    if limit is not None:
        rows = rows[:limit]

    def cell(key, value):
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else ""
        if isinstance(value, float):
            if key in _FORMATS:
                return _FORMATS[key].format(value)
            size = abs(value)
            return f"{value:.0f}" if size >= 100 else f"{value:.1f}" if size >= 10 else f"{value:.2f}"
        return str(value)

    cells = [cols] + [[cell(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_zoo(rows: Sequence[dict], *, x: str = "gflops", y: str = "acc@1", highlight: Sequence[str] = HIGHLIGHT,
             log_x: bool = True, labels: Sequence[str] = ("resnet18", "resnet50", "efficientnet_b0", "vit_b_16"),
             title: str | None = None) -> Figure:
    """Accuracy against cost for every weight, the highlighted families in colour.

    Args:
        rows: dicts such as :func:`weights_table` returns.
        x, y: the keys to plot (e.g. ``x="file_mb"``).
        highlight: families drawn in colour and labelled; every other weight is a grey dot.
        log_x: logarithmic x axis (GFLOPS span three orders of magnitude).
        labels: builders whose ``DEFAULT`` weight gets its name written beside its point.

    Example:
        >>> fig = plot_zoo(weights_table())
        >>> fig.axes[0].get_xlabel()
        'GFLOPS per image (log scale)'
    """
    rows = list(rows)
    if not rows:
        raise ValueError("plot_zoo got no rows; pass weights_table() (or a non-empty part of it).")
    for key in (x, y):
        if key not in rows[0]:
            raise KeyError(f"plot_zoo: {key!r} is not a column of the rows; they have {list(rows[0])}.")
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    others = [r for r in rows if r.get("family") not in highlight]
    ax.scatter([r[x] for r in others], [r[y] for r in others], s=14, color="0.7", label="other families")
    palette = iter(["tab:purple", "tab:orange", "tab:brown", "tab:pink"])
    for family in highlight:
        mine = [r for r in rows if r.get("family") == family]
        if not mine:
            continue
        color = _COLORS.get(family) or next(palette, "black")
        ax.scatter([r[x] for r in mine], [r[y] for r in mine], s=30, color=color, label=family, zorder=3)
        for r in mine:
            if r.get("default") and r.get("builder") in labels:
                ax.annotate(r["builder"], (r[x], r[y]), xytext=(5, -3), textcoords="offset points",
                            fontsize=8, color=color)
    if log_x:
        ax.set_xscale("log")
    names = {"gflops": "GFLOPS per image", "file_mb": "weights file (MB)", "params_m": "parameters (millions)",
             "acc@1": "ImageNet-1K top-1 accuracy (%)", "acc@5": "ImageNet-1K top-5 accuracy (%)"}
    ax.set_xlabel(names.get(x, x) + (" (log scale)" if log_x else ""))
    ax.set_ylabel(names.get(y, y))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    ax.set_title(title or f"{len(rows)} torchvision classification weights (figures shipped with torchvision)")
    return fig


def preprocessing_table(weights: Iterable) -> list[dict]:
    """What each set of weights expects as input: resize, crop, interpolation, mean, std.

    Args:
        weights: torchvision weights enum members (``ViT_B_16_Weights.DEFAULT`` ...), or the offline
            backbone's ``labkit.models.lite0_weights()`` (anything ``labkit.data.get_preprocessing`` reads).

    Example:
        >>> from torchvision.models import EfficientNet_B0_Weights
        >>> row = preprocessing_table([EfficientNet_B0_Weights.DEFAULT])[0]
        >>> row["resize"], row["crop"], row["interpolation"]
        (256, 224, 'bicubic')
    """
    from labkit.data import get_preprocessing

    rows = []
    for w in weights:
        p = get_preprocessing(w)
        rows.append({"weights": str(w), "resize": p["resize_size"], "crop": p["crop_size"],
                     "interpolation": p["interpolation"],
                     "mean": ", ".join(f"{v:.3f}" for v in p["mean"]), "std": ", ".join(f"{v:.3f}" for v in p["std"])})
    return rows


# --------------------------------------------------------------------------- latency and memory
@dataclass(frozen=True)
class Latency:
    """One timing: a model's forward pass at one batch size on one device.

    ``ms_per_image`` is the median over the timed iterations of (batch time / batch size);
    ``peak_mb`` is the memory the forward passes needed on top of what was in use before
    them (activations and workspace; the weights were already there), or None where the
    device gives no resettable peak.
    """

    name: str
    device: str
    batch_size: int
    ms_per_image: float
    ms_per_batch: float
    peak_mb: float | None
    weights_mb: float
    iters: int
    threads: int
    memory_kind: str

    def to_dict(self) -> dict:
        return asdict(self)


def _release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc), so the next RSS peak is the next block's own."""
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _current_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_latency(model: nn.Module | str, *, batch_sizes: Sequence[int] = (1, 8), image_size: int = 224,
                    device: str | torch.device = "auto", warmup: int = 1, iters: int = 3,
                    threads: int | None = None, name: str | None = None) -> list[Latency]:
    """Time a model's inference forward pass per image, and its peak memory, at each batch size.

    The model runs in eval mode under ``torch.inference_mode()`` on random inputs (speed does
    not depend on weight values, so ``weights=None`` models time the same as pretrained ones).
    Each batch size gets ``warmup`` untimed passes, then ``iters`` timed ones; the device is
    synchronised around each. The model is moved to ``device`` (and stays there).

    Args:
        model: an ``nn.Module``, or a torchvision builder name (built with ``weights=None``).
        batch_sizes: batch sizes to time (positive ints).
        image_size: square input side in pixels.
        device: "auto" (CUDA, then MPS, then CPU), or a device.
        warmup, iters: untimed and timed passes per batch size (iters >= 1).
        threads: CPU threads for the measurement (restored afterwards); None keeps torch's setting.
        name: label for the rows (default: the builder name or the class name).

    Example:
        >>> rows = measure_latency("resnet18", batch_sizes=(1,), image_size=64, device="cpu", iters=1)
        >>> rows[0].batch_size, rows[0].device, rows[0].ms_per_image > 0
        (1, 'cpu', True)
    """
    from labkit.device import resolve_device
    from labkit.measure import PeakMemory

    bad = [b for b in batch_sizes if isinstance(b, bool) or not isinstance(b, int) or b < 1]
    if not batch_sizes or bad:
        raise ValueError(f"measure_latency expected batch_sizes to be positive ints such as (1, 8), "
                         f"got {tuple(batch_sizes)!r}.")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"measure_latency expected iters >= 1 (timed passes per batch size), got {iters!r}.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"measure_latency expected warmup >= 0, got {warmup!r}.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"measure_latency expected image_size to be a positive int, got {image_size!r}.")
    if isinstance(model, str):
        import torchvision

        label = name or model
        model = torchvision.models.get_model(model, weights=None)
    elif isinstance(model, nn.Module):
        label = name or type(model).__name__
    else:
        raise TypeError(f"measure_latency expected an nn.Module or a torchvision builder name such as 'resnet50', "
                        f"got {type(model).__name__}.")
    dev = resolve_device(device)
    before_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model = model.to(dev).eval()
        weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / _MB
        results = []
        for bs in batch_sizes:
            x = torch.randn(bs, 3, image_size, image_size, device=dev)
            with torch.inference_mode():
                for _ in range(warmup):
                    model(x)
                _sync(dev)
                _release_freed_memory()
                base = _current_bytes(dev)
                times = []
                with PeakMemory(dev) as mem:
                    for _ in range(iters):
                        start = time.perf_counter()
                        model(x)
                        _sync(dev)
                        times.append(time.perf_counter() - start)
            resettable = mem.kind in ("cuda_max_allocated", "rss_peak", "rss_peak_sampled") and base is not None
            peak = max(0.0, (mem.peak_bytes - base) / _MB) if resettable else None
            med = sorted(times)[len(times) // 2]
            results.append(Latency(label, str(dev), bs, 1000 * med / bs, 1000 * med, peak, weights_mb, iters,
                                   torch.get_num_threads(), mem.kind))
            del x
        return results
    finally:
        torch.set_num_threads(before_threads)


def rank_disagreements(values_a: dict[str, float], values_b: dict[str, float]) -> list[tuple[str, str]]:
    """Pairs (p, q) that ``values_a`` orders p < q but ``values_b`` orders p > q.

    Use it with GFLOPS as ``values_a`` and measured ms per image as ``values_b``: each pair
    is a model that costs fewer FLOPs yet runs slower on this machine.

    Example:
        >>> rank_disagreements({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 5.0, "b": 1.0, "c": 9.0})
        [('a', 'b')]
    """
    common = [k for k in values_a if k in values_b]
    out = []
    for p in common:
        for q in common:
            if values_a[p] < values_a[q] and values_b[p] > values_b[q]:
                out.append((p, q))
    return sorted(out, key=lambda pq: (values_a[pq[0]], values_a[pq[1]]))
