"""Train the same model on the same data with several transfer strategies and compare the cost.

:func:`compare_strategies` is the cell behind "freezing the backbone makes training
dramatically cheaper": it runs each strategy on a fresh copy of the pretrained model, with
the same data, epochs and seed, and returns a :class:`Comparison` whose table lists the
trainable parameters, seconds per epoch, total seconds, peak memory and best validation
accuracy of each, and whose ``plot()`` draws them as bar charts.

The strategies:

* ``cached``: frozen backbone run once over the data (:func:`labkit.features.extract_features`),
  then only the head trains on the stored features (:func:`labkit.features.fit_head`).
* ``frozen``: frozen backbone, new head, trained on images every epoch (feature extraction).
* ``partial``: the last body stage and the head train, earlier stages frozen.
* ``full``: everything trains at one learning rate.
* ``discriminative``: everything trains, each stage at ``decay`` times the rate of the next
  (:func:`labkit.optim.param_groups`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from labkit.features import _split_head, extract_features, fit_head
from labkit.freeze import freeze, freeze_to, unfreeze
from labkit.heads import replace_head, stages
from labkit.optim import param_groups
from labkit.train import (
    History,
    PeakMemory,
    _dataset_classes,
    _dataset_labels,
    fit,
    progress_enabled,
    resolve_device,
    seed_everything,
)

__all__ = ["compare_strategies", "Comparison", "STRATEGIES"]

STRATEGIES = ("cached", "frozen", "partial", "full", "discriminative")

_LABELS = {
    "cached": "cached features",
    "frozen": "frozen backbone",
    "partial": "partial fine-tune",
    "full": "full fine-tune",
    "discriminative": "full, discriminative LRs",
}

_COLUMNS = [
    ("strategy", "strategy", "{}"),
    ("trainable_params", "trainable", "{:,}"),
    ("trainable_fraction", "trainable %", "{:.1%}"),
    ("setup_s", "setup s", "{:.2f}"),
    ("s_per_epoch", "s/epoch", "{:.2f}"),
    ("total_s", "total s", "{:.2f}"),
    ("peak_mem_mb", "peak MB", "{:.0f}"),
    ("best_val_acc", "best val acc", "{:.3f}"),
]


@dataclass(repr=False)
class Comparison:
    """Result of :func:`compare_strategies`: one row (a dict) per strategy, plus each History.

    Row keys: ``strategy``, ``trainable_params``, ``total_params``, ``trainable_fraction``,
    ``setup_s`` (one-off work before the epochs: feature extraction for ``cached``),
    ``s_per_epoch`` (mean training seconds per epoch), ``total_s`` (wall clock for the
    whole strategy, validation included), ``peak_mem_mb``, ``best_val_acc`` and
    ``final_train_acc``. ``meta`` holds the device, epochs and memory measure.
    """

    rows: list[dict] = field(default_factory=list)
    histories: dict[str, History] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __getitem__(self, strategy: str) -> dict:
        for row in self.rows:
            if row["strategy"] == strategy:
                return row
        raise KeyError(f"no strategy {strategy!r} in this comparison; it has {[r['strategy'] for r in self.rows]}")

    def table(self) -> str:
        """The rows as an aligned plain-text table."""
        cells = [[title for _, title, _ in _COLUMNS]]
        for row in self.rows:
            cells.append(["-" if row.get(k) is None else fmt.format(row[k]) for k, _, fmt in _COLUMNS])
        widths = [max(len(r[i]) for r in cells) for i in range(len(_COLUMNS))]
        lines = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in cells
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Comparison: {self.meta.get('epochs', '?')} epochs on {self.meta.get('device', '?')}\n{self.table()}"

    def to_dict(self) -> dict:
        """JSON-ready dict: rows, each strategy's History, and meta."""
        return {
            "rows": [dict(r) for r in self.rows],
            "histories": {k: h.to_dict() for k, h in self.histories.items()},
            "meta": dict(self.meta),
        }

    def plot(self, *, title: str | None = None):
        """Bar charts of seconds per epoch, total seconds and best accuracy, as a new Figure."""
        from matplotlib.figure import Figure

        names = [_LABELS.get(r["strategy"], r["strategy"]) for r in self.rows]
        has_val = any(r.get("best_val_acc") is not None for r in self.rows)
        acc_key = "best_val_acc" if has_val else "final_train_acc"
        panels = [
            ("s_per_epoch", "seconds per epoch", "{:.2f}"),
            ("total_s", "total seconds (setup + epochs)", "{:.1f}"),
            (acc_key, "best validation accuracy" if has_val else "final training accuracy", "{:.2f}"),
        ]
        fig = Figure(figsize=(12, 0.55 * len(names) + 1.8), layout="constrained")
        axes = fig.subplots(1, len(panels), sharey=True)
        y = list(range(len(names)))
        colors = [f"C{i}" for i in range(len(names))]
        for ax, (key, label, fmt) in zip(axes, panels):
            values = [r.get(key) for r in self.rows]
            vals = [math.nan if v is None else v for v in values]
            bars = ax.barh(y, [0 if math.isnan(v) else v for v in vals], color=colors)
            if key == "total_s":
                setup = [r.get("setup_s") or 0.0 for r in self.rows]
                ax.barh(y, setup, color="white", alpha=0.45, hatch="//", edgecolor="grey", label="setup")
                if any(setup):
                    ax.legend(loc="lower right", fontsize="small")
            texts = ["-" if math.isnan(v) else fmt.format(v) for v in vals]
            ax.bar_label(bars, labels=texts, padding=3, fontsize="small")
            ax.set_title(label, fontsize="medium")
            ax.margins(x=0.25)
            ax.grid(axis="x", alpha=0.3)
            if key == acc_key:
                ax.set_xlim(0, 1.15)
        axes[0].set_yticks(y, names)
        axes[0].invert_yaxis()
        fig.suptitle(title or f"{self.meta.get('epochs', '?')} epochs on {self.meta.get('device', '?')}")
        return fig


def _num_classes(loader) -> int | None:
    dataset = getattr(loader, "dataset", None)
    classes = _dataset_classes(dataset)
    if classes is not None:
        return len(classes)
    labels = _dataset_labels(dataset)
    if labels is not None and labels.numel():
        return int(labels.max()) + 1
    return None


def compare_strategies(
    model_fn: Callable[[], nn.Module],
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    decay: float = 0.3,
    lrs: dict[str, float] | None = None,
    partial_from: str | int | None = None,
    num_classes: int | None = None,
    strategies: Sequence[str] = STRATEGIES,
    optimizer_fn: Callable[[list], torch.optim.Optimizer] | None = None,
    device: str | torch.device = "auto",
    amp: bool | str = "auto",
    seed: int = 0,
    progress: bool | None = None,
) -> Comparison:
    """Run several transfer strategies on the same data and epochs; compare time, memory, accuracy.

    Each strategy gets a fresh model from ``model_fn()`` (so no strategy sees another's
    updates), a fresh head for ``num_classes`` classes (the same initial head for all, from
    ``seed``), and the same optimizer type. Strategies run in the order given; the default
    order runs the lightest first, because on CPU memory freed by a heavy run can stay with
    the process and inflate the peak of the next.

    Args:
        model_fn: builds a fresh pretrained classifier, e.g.
            ``lambda: torchvision.models.resnet18(weights="DEFAULT")``.
        train_loader: training batches of ``(images, labels)``.
        val_loader: optional validation batches (for ``best_val_acc``).
        epochs: epochs per strategy (>= 1).
        lr: learning rate of every strategy (the head's rate for ``discriminative``).
        decay: factor between neighbouring stages for ``discriminative``.
        lrs: per-strategy overrides, e.g. ``{"full": 1e-4}``.
        partial_from: first trainable stage for ``partial`` (default: the last body stage,
            ``"layer4"`` on a ResNet).
        num_classes: classes in the data (default: from ``dataset.classes`` or the labels).
        strategies: any of ``"cached"``, ``"frozen"``, ``"partial"``, ``"full"``, ``"discriminative"``.
        optimizer_fn: builds the optimizer from a list of param-group dicts (each with its
            ``lr``); default ``torch.optim.Adam``.
        device, amp: as in :func:`labkit.train.fit`.
        seed: seeds every strategy identically.
        progress: progress bars and one summary line per strategy.

    Example:
        >>> result = compare_strategies(lambda: torchvision.models.resnet18(weights="DEFAULT"),
        ...                             train_loader, val_loader, epochs=3)   # doctest: +SKIP
        >>> print(result)                                                     # doctest: +SKIP
        strategy        trainable  trainable %  setup s  s/epoch  total s  peak MB  best val acc
        --------------  ---------  -----------  -------  -------  -------  -------  ------------
        cached              5,130         0.0%     4.10     0.01     4.20      540         0.875
        ...
        >>> fig = result.plot()                                               # doctest: +SKIP
    """
    # ---- checks first
    if not callable(model_fn) or isinstance(model_fn, nn.Module):
        raise TypeError(
            f"model_fn: expected a function that builds a fresh model, got {type(model_fn).__name__}. "
            f"Fix: compare_strategies(lambda: torchvision.models.resnet18(weights='DEFAULT'), ...)."
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}. Fix: epochs=3.")
    if isinstance(strategies, str):
        strategies = (strategies,)
    strategies = tuple(strategies)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if not strategies or unknown or len(set(strategies)) != len(strategies):
        raise ValueError(
            f"strategies: expected distinct names from {', '.join(STRATEGIES)}, got {list(strategies)}"
            f"{' (unknown: ' + ', '.join(map(repr, unknown)) + ')' if unknown else ''}. "
            f"Fix: strategies=('frozen', 'full')."
        )
    lrs = dict(lrs or {})
    bad = [k for k in lrs if k not in STRATEGIES]
    if bad:
        raise ValueError(f"lrs: expected keys from {', '.join(STRATEGIES)}, got {bad}. Fix: lrs={{'full': 1e-4}}.")
    if num_classes is None:
        num_classes = _num_classes(train_loader)
        if num_classes is None:
            raise ValueError(
                f"num_classes: could not read the number of classes from the training data "
                f"({type(getattr(train_loader, 'dataset', train_loader)).__name__} has no .classes, "
                f".targets or label tensor). Fix: pass num_classes=..."
            )
    dev = resolve_device(device)
    if optimizer_fn is None:
        def optimizer_fn(groups):
            return torch.optim.Adam(groups, lr=lr)
    show = progress_enabled(progress)
    batch_size = getattr(train_loader, "batch_size", None) or 32

    result = Comparison(meta={
        "device": str(dev), "epochs": epochs, "num_classes": num_classes, "seed": seed,
        "lr": lr, "decay": decay, "torch_threads": torch.get_num_threads(),
    })
    previous = None
    for name in strategies:
        rate = lrs.get(name, lr)
        seed_everything(seed)
        model = model_fn()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model_fn: expected it to return an nn.Module, got {type(model).__name__}.")
        if model is previous:
            raise ValueError(
                "model_fn: expected a fresh model on every call, got the same object twice, so strategies "
                "would train on each other's weights. Fix: build the model inside the function, e.g. "
                "lambda: torchvision.models.resnet18(weights='DEFAULT')."
            )
        previous = model
        model.to(dev)
        tracker = PeakMemory(dev)
        t0 = time.perf_counter()
        setup = 0.0

        if name == "cached":
            freeze(model)
            replace_head(model, num_classes)
            backbone, head = _split_head(model)
            tracker.start()
            feats = extract_features(backbone, train_loader, device=dev, amp=amp, progress=progress)
            val_feats = None
            if val_loader is not None:
                val_feats = extract_features(backbone, val_loader, device=dev, amp=amp, progress=progress)
            setup_peak = tracker.stop() / 2**20
            setup = time.perf_counter() - t0
            optimizer = optimizer_fn([{"params": list(head.parameters()), "lr": rate}])
            head, history = fit_head(
                feats, val_feats, head=head, num_classes=num_classes, optimizer=optimizer, epochs=epochs,
                batch_size=batch_size,
                device=dev, progress=progress,
            )
            trainable = sum(p.numel() for p in head.parameters())
            peak = max([setup_peak] + history["peak_mem_mb"])
            total_params = sum(p.numel() for p in backbone.parameters()) + trainable
        else:
            if name == "frozen":
                freeze(model)
                replace_head(model, num_classes)
            else:
                replace_head(model, num_classes)
                if name == "partial":
                    stage = partial_from if partial_from is not None else list(stages(model))[-2]
                    freeze_to(model, stage)
                else:
                    unfreeze(model)
            model.to(dev)
            if name == "discriminative":
                groups = param_groups(model, base_lr=rate, decay=decay)
            else:
                groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": rate}]
            optimizer = optimizer_fn(groups)
            history = fit(
                model, train_loader, val_loader, optimizer=optimizer, epochs=epochs, device=dev,
                amp=amp, progress=progress,
            )
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            total_params = sum(p.numel() for p in model.parameters())
            peak = max(history["peak_mem_mb"])
        total = time.perf_counter() - t0
        best_val = max((a for a in history["val_acc"] if a is not None), default=None)
        row = {
            "strategy": name,
            "trainable_params": trainable,
            "total_params": total_params,
            "trainable_fraction": trainable / total_params if total_params else 0.0,
            "setup_s": setup,
            "s_per_epoch": history.total_seconds / len(history),
            "total_s": total,
            "peak_mem_mb": peak,
            "best_val_acc": best_val,
            "final_train_acc": history["train_acc"][-1],
            "lr": rate,
        }
        result.rows.append(row)
        result.histories[name] = history
        result.meta["memory_kind"] = history.meta.get("memory_kind")
        if show:
            acc = f", best val acc {best_val:.3f}" if best_val is not None else ""
            print(f"{_LABELS[name]}: {row['s_per_epoch']:.2f} s/epoch, {total:.1f} s total{acc}")
        del model, optimizer, history
    return result
