"""Train the same model on the same data with several transfer strategies and compare the cost.

:func:`compare_strategies` is the cell behind "freezing the backbone makes training
dramatically cheaper": it runs each strategy on a fresh copy of the pretrained model and
returns a :class:`Comparison` whose table lists the trainable parameters, seconds per epoch,
total seconds, peak memory and validation accuracy of each, and whose ``plot()`` draws them.

The strategies and their rules come from :data:`labkit.strategy.STRATEGY_TABLE`:
``cached_features``, ``feature_extraction``, ``partial_finetune``, ``full_finetune`` and
``discriminative_finetune``.

The comparison is fair by construction: for every strategy (and every seed) the model, its
new head and the order of the training data are drawn from the same seed, every strategy
trains for the same epochs with the same optimizer and weight decay, thawed pretrained layers
train at a lower rate than the new head, and the reported accuracy is the final epoch's
(``best_val_acc``, the best epoch picked on the validation data, is kept alongside).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from labkit._batches import count_classes
from labkit._env import progress_enabled
from labkit._tables import format_cell, render_table
from labkit.device import resolve_device
from labkit.features import extract_features, fit_head, split_head
from labkit.history import History
from labkit.measure import MB, PeakMemory
from labkit.seed import seed_everything
from labkit.strategy import ALL_STRATEGIES, STRATEGY_TABLE, apply_strategy
from labkit.train import fit

__all__ = ["compare_strategies", "Comparison", "STRATEGIES"]

STRATEGIES = ALL_STRATEGIES  # every strategy, lightest first

_COLUMNS = [
    ("strategy", "strategy", "{}"),
    ("trainable_params", "trainable", "{:,}"),
    ("trainable_fraction", "trainable %", "{:.1%}"),
    ("setup_s", "setup s", "{:.2f}"),
    ("s_per_epoch", "s/epoch", "{:.2f}"),
    ("total_s", "total s", "{:.2f}"),
    ("peak_mem_mb", "peak MB", "{:.0f}"),
    ("final_val_acc", "final val acc", "{:.3f}"),
    ("best_val_acc", "best val acc", "{:.3f}"),
]
_NUMERIC = ("setup_s", "s_per_epoch", "total_s", "peak_mem_mb", "best_val_acc", "final_val_acc",
            "final_train_acc")
_SUMMARY_KEYS = frozenset(("strategy", "seed", "trainable_params", "total_params", "trainable_fraction", "lr",
                           *_NUMERIC))
_OLD_NAMES = {"cached": "cached_features", "frozen": "feature_extraction", "partial": "partial_finetune",
              "full": "full_finetune", "discriminative": "discriminative_finetune"}


@dataclass(repr=False)
class Comparison:
    """Result of :func:`compare_strategies`: one row (a dict) per strategy, per-seed runs, Histories.

    Row keys: ``strategy``, ``trainable_params``, ``total_params``, ``trainable_fraction``,
    ``setup_s`` (one-off work before the epochs: feature extraction for ``cached_features``),
    ``s_per_epoch`` (mean training seconds per epoch), ``total_s`` (wall clock for the
    whole strategy, validation included), ``peak_mem_mb``, ``final_val_acc`` (the last
    epoch's), ``best_val_acc`` (the best epoch's), ``final_train_acc``, ``lr`` (the head's) and
    ``seeds``. With several seeds, the numbers in a row are means over seeds and ``runs``
    holds one row per (strategy, seed). ``histories`` holds each strategy's History for the
    first seed, ``all_histories`` one per seed, ``models`` the trained models of the first seed
    (with ``return_models=True``; for ``cached_features``, ``nn.Sequential(backbone, head)``).
    """

    rows: list[dict] = field(default_factory=list)
    histories: dict[str, History] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    all_histories: dict[str, list[History]] = field(default_factory=dict)
    models: dict[str, nn.Module] = field(default_factory=dict)

    def __getitem__(self, strategy: str) -> dict:
        for row in self.rows:
            if row["strategy"] == strategy:
                return row
        raise KeyError(f"no strategy {strategy!r} in this comparison; it has {[r['strategy'] for r in self.rows]}")

    def per_seed(self, metric: str = "final_val_acc") -> dict[str, list[float]]:
        """``{strategy: [metric for each seed]}``, in seed order, ready for :func:`labkit.stats.paired_difference`.

        Example:
            >>> result.per_seed("final_val_acc")            # doctest: +SKIP
            {'feature_extraction': [0.61, 0.64, 0.6], 'partial_finetune': [0.83, 0.8, 0.85]}
        """
        if self.runs and metric not in self.runs[0]:
            raise KeyError(f"per_seed: no metric {metric!r}; expected one of {', '.join(_NUMERIC)}.")
        out: dict[str, list[float]] = {}
        for run in self.runs:
            out.setdefault(run["strategy"], []).append(run[metric])
        return out

    def table(self) -> str:
        """The rows as an aligned plain-text table."""
        rows = [[format_cell(row.get(k), fmt) for k, _, fmt in _COLUMNS] for row in self.rows]
        return render_table([title for _, title, _ in _COLUMNS], rows, align="l" + "r" * (len(_COLUMNS) - 1))

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Comparison: {self.meta.get('epochs', '?')} epochs on {self.meta.get('device', '?')}\n{self.table()}"

    def to_dict(self) -> dict:
        """JSON-ready dict: rows, per-seed runs, each strategy's History (first seed), and meta."""
        return {
            "rows": [dict(r) for r in self.rows],
            "runs": [dict(r) for r in self.runs],
            "histories": {k: h.to_dict() for k, h in self.histories.items()},
            "meta": dict(self.meta),
        }

    def plot(self, *, title: str | None = None):
        """Bar charts of seconds per epoch, total seconds and final accuracy, as a new Figure."""
        from matplotlib.figure import Figure

        names = [STRATEGY_TABLE[r["strategy"]].label for r in self.rows]
        has_val = any(r.get("final_val_acc") is not None for r in self.rows)
        acc_key = "final_val_acc" if has_val else "final_train_acc"
        panels = [
            ("s_per_epoch", "seconds per epoch", "{:.2f}"),
            ("total_s", "total seconds (setup + epochs)", "{:.1f}"),
            (acc_key, "final validation accuracy" if has_val else "final training accuracy", "{:.2f}"),
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


def _check_names(strategies: Sequence[str], lrs: dict) -> tuple[str, ...]:
    if isinstance(strategies, str):
        strategies = (strategies,)
    strategies = tuple(strategies)
    unknown = [s for s in strategies if s not in STRATEGY_TABLE]
    if not strategies or unknown or len(set(strategies)) != len(strategies):
        renamed = [f"{s!r} is now {_OLD_NAMES[s]!r}" for s in unknown if s in _OLD_NAMES]
        raise ValueError(
            f"strategies: expected distinct names from {', '.join(STRATEGY_TABLE)}, got {list(strategies)}"
            f"{' (unknown: ' + ', '.join(map(repr, unknown)) + ')' if unknown else ''}"
            f"{'; ' + ', '.join(renamed) if renamed else ''}. "
            f"Fix: strategies=('feature_extraction', 'full_finetune')."
        )
    bad = [k for k in lrs if k not in STRATEGY_TABLE]
    if bad:
        raise ValueError(
            f"lrs: expected keys from {', '.join(STRATEGY_TABLE)}, got {bad}. Fix: lrs={{'full_finetune': 1e-4}}."
        )
    return strategies


def _loader_generators(loader) -> list[torch.Generator]:
    """The random generators that decide a loader's shuffling order (its own and its sampler's)."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                  getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def _reseed(seed: int, generators: list[torch.Generator]) -> None:
    """The same start for every strategy: global RNGs and the loader's own generators from ``seed``."""
    seed_everything(seed)
    for g in generators:
        g.manual_seed(seed)


def _fresh_model(model_fn, previous) -> nn.Module:
    model = model_fn()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_fn: expected it to return an nn.Module, got {type(model).__name__}.")
    if model is previous:
        raise ValueError(
            "model_fn: expected a fresh model on every call, got the same object twice, so strategies "
            "would train on each other's weights. Fix: build the model inside the function, e.g. "
            "lambda: torchvision.models.resnet18(weights='DEFAULT')."
        )
    return model


def _run_cached(model, groups, train_loader, val_loader, *, optimizer_fn, epochs, num_classes, dev, amp,
                seed, progress):
    """Extract features once, then train the head on them.

    Returns (the classifier ``nn.Sequential(backbone, head)``, history, setup seconds, peak MB).
    """
    backbone, head = split_head(model)
    tracker = PeakMemory(dev)
    t0 = time.perf_counter()
    tracker.start()
    feats = extract_features(backbone, train_loader, device=dev, amp=amp, progress=progress)
    val_feats = None
    if val_loader is not None:
        val_feats = extract_features(backbone, val_loader, device=dev, amp=amp, progress=progress)
    setup_peak = tracker.stop() / MB
    setup = time.perf_counter() - t0
    head, history = fit_head(
        feats, val_feats, head=head, num_classes=num_classes, optimizer=optimizer_fn(groups), epochs=epochs,
        batch_size=getattr(train_loader, "batch_size", None) or 32, device=dev, seed=seed, progress=progress,
    )
    return nn.Sequential(backbone, head), history, setup, max([setup_peak] + history["peak_mem_mb"])


def _train(model, name, groups, train_loader, val_loader, *, optimizer_fn, epochs, num_classes, dev, amp, seed,
           progress, on_epoch_start=None):
    """Train one set-up strategy. Returns (trained classifier, history, setup seconds, peak MB)."""
    if STRATEGY_TABLE[name].cached:
        return _run_cached(model, groups, train_loader, val_loader, optimizer_fn=optimizer_fn, epochs=epochs,
                           num_classes=num_classes, dev=dev, amp=amp, seed=seed, progress=progress)
    optimizer = optimizer_fn(groups)
    hook = None if on_epoch_start is None else (lambda epoch: on_epoch_start(model, optimizer, epoch))
    history = fit(model, train_loader, val_loader, optimizer=optimizer, epochs=epochs,
                  device=dev, amp=amp, num_classes=num_classes, on_epoch_start=hook, progress=progress)
    return model, history, 0.0, max(history["peak_mem_mb"])


def _one_line(run: dict) -> str:
    acc = f", final val acc {run['final_val_acc']:.3f}" if run["final_val_acc"] is not None else ""
    return (f"{STRATEGY_TABLE[run['strategy']].label} (seed {run['seed']}): {run['s_per_epoch']:.2f} s/epoch, "
            f"{run['total_s']:.1f} s total{acc}")


def _data_classes(train_loader, num_classes: int | None) -> int:
    if num_classes is not None:
        return num_classes
    found = count_classes(train_loader)
    if found is None:
        raise ValueError(
            f"num_classes: could not read the number of classes from the training data "
            f"({type(getattr(train_loader, 'dataset', train_loader)).__name__} has no .classes, "
            f".targets or label tensor). Fix: pass num_classes=..."
        )
    return found


def _summary(name: str, seed: int, history: History, trainable: int, total_params: int, setup: float,
             total: float, peak: float, lr: float) -> dict:
    val = history["val_acc"]
    return {
        "strategy": name,
        "seed": seed,
        "trainable_params": trainable,
        "total_params": total_params,
        "trainable_fraction": trainable / total_params if total_params else 0.0,
        "setup_s": setup,
        "s_per_epoch": history.total_seconds / len(history),
        "total_s": total,
        "peak_mem_mb": peak,
        "final_val_acc": val[-1],
        "best_val_acc": max((a for a in val if a is not None), default=None),
        "final_train_acc": history["train_acc"][-1],
        "lr": lr,
    }


def _measured(measure: Callable[[nn.Module], dict], model: nn.Module, name: str) -> dict:
    extra = measure(model)
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise TypeError(f"measure must return a dict {{name: number}}, got {extra!r} for {name}.")
    clash = sorted(set(extra) & _SUMMARY_KEYS)
    if clash:
        raise ValueError(f"measure returned {clash}, names compare_strategies already uses; rename them.")
    return {key: float(value) for key, value in extra.items()}


def _mean_row(runs: list[dict]) -> dict:
    row = {k: v for k, v in runs[0].items() if k != "seed"}
    measured = [k for k in runs[0] if k not in _SUMMARY_KEYS]  # the keys `measure` added
    for key in (*_NUMERIC, *measured):
        values = [r[key] for r in runs]
        row[key] = None if any(v is None for v in values) else statistics.fmean(values)
    row["seeds"] = [r["seed"] for r in runs]
    return row


def compare_strategies(
    model_fn: Callable[[], nn.Module],
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    thawed_lr_factor: float = 0.1,
    decay: float = 0.3,
    weight_decay: float = 0.0,
    lrs: dict[str, float] | None = None,
    partial_from: str | int | None = None,
    num_classes: int | None = None,
    strategies: Sequence[str] = STRATEGIES,
    optimizer_fn: Callable[[list], torch.optim.Optimizer] | None = None,
    device: str | torch.device = "auto",
    amp: bool | str = "auto",
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    return_models: bool = False,
    measure: Callable[[nn.Module], dict] | None = None,
    on_epoch_start: Callable[[nn.Module, torch.optim.Optimizer, int], object] | None = None,
    progress: bool | None = None,
) -> Comparison:
    """Run several transfer strategies on the same data and epochs; compare time, memory, accuracy.

    Fair by construction: for each strategy (and seed) the global RNGs and the loader's own
    generators are reseeded, then a fresh model comes from ``model_fn()`` and gets a fresh
    head, so every strategy starts from the same head and sees the data in the same order.
    Every strategy trains for ``epochs`` with the same optimizer type and ``weight_decay``;
    the learning rates follow :data:`labkit.strategy.STRATEGY_TABLE` (the new head at ``lr``,
    thawed pretrained layers at ``lr * thawed_lr_factor``). Strategies run in the order given;
    the default order runs the lightest first, because on CPU memory freed by a heavy run can
    stay with the process and inflate the peak of the next.

    Args:
        model_fn: builds a fresh pretrained classifier, e.g.
            ``lambda: torchvision.models.resnet18(weights="DEFAULT")``.
        train_loader: training batches of ``(images, labels)``.
        val_loader: optional validation batches (for ``final_val_acc`` and ``best_val_acc``).
        epochs: epochs per strategy (>= 1).
        lr: learning rate of the new head.
        thawed_lr_factor: thawed pretrained layers train at ``lr * thawed_lr_factor``
            (``partial_finetune``; ``full_finetune`` trains everything at that one rate).
        decay: factor between neighbouring stages for ``discriminative_finetune``.
        weight_decay: the same for every strategy (biases and norms get none).
        lrs: per-strategy overrides of ``lr``, e.g. ``{"full_finetune": 1e-2}``.
        partial_from: first trainable stage for ``partial_finetune`` (default: the last body
            stage, ``"layer4"`` on a ResNet).
        num_classes: classes in the data (default: from ``dataset.classes`` or the labels).
        strategies: names from :data:`labkit.strategy.STRATEGY_TABLE`.
        optimizer_fn: builds the optimizer from a list of param-group dicts (each with its
            ``lr``); default ``torch.optim.Adam``.
        device, amp: as in :func:`labkit.train.fit`.
        seed: seeds every strategy identically.
        seeds: repeat everything once per seed (then rows hold means and
            :meth:`Comparison.per_seed` the values per seed); overrides ``seed``.
        return_models: keep the trained models in ``Comparison.models`` (first seed).
        measure: called on every trained model; the numbers in the dict it returns join that
            run's metrics (``measure=lambda m: {"drift": ...}`` makes ``per_seed("drift")`` work).
        on_epoch_start: called as ``on_epoch_start(model, optimizer, epoch)`` (epoch from 0)
            before every epoch of the strategies trained on images (not ``cached_features``),
            e.g. gradual unfreezing from ``feature_extraction``:
            ``lambda m, opt, e: gradual_unfreeze(m, opt, e, base_lr=lr, decay=decay)``.
        progress: progress bars and one summary line per strategy.

    Example:
        >>> result = compare_strategies(lambda: torchvision.models.resnet18(weights="DEFAULT"),
        ...                             train_loader, val_loader, epochs=3)   # doctest: +SKIP
        >>> print(result)                                                     # doctest: +SKIP
        strategy            trainable  trainable %  setup s  s/epoch  total s  peak MB  final val acc  best val acc
        ------------------  ---------  -----------  -------  -------  -------  -------  -------------  ------------
        cached_features         5,130         0.0%     4.10     0.01     4.20      540          0.875         0.875
        ...
        >>> fig = result.plot()                                               # doctest: +SKIP
    """
    if not callable(model_fn) or isinstance(model_fn, nn.Module):
        raise TypeError(
            f"model_fn: expected a function that builds a fresh model, got {type(model_fn).__name__}. "
            f"Fix: compare_strategies(lambda: torchvision.models.resnet18(weights='DEFAULT'), ...)."
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}. Fix: epochs=3.")
    if measure is not None and not callable(measure):
        raise TypeError(f"measure: expected a function of the trained model returning {{name: number}}, "
                        f"got {type(measure).__name__}.")
    if on_epoch_start is not None and not callable(on_epoch_start):
        raise TypeError(f"on_epoch_start: expected a function (model, optimizer, epoch), got "
                        f"{type(on_epoch_start).__name__}. Fix: on_epoch_start=lambda model, optimizer, epoch: ...")
    lrs = dict(lrs or {})
    strategies = _check_names(strategies, lrs)
    seeds = [seed] if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: expected at least one seed, got none. Fix: seeds=range(3).")
    num_classes = _data_classes(train_loader, num_classes)
    dev = resolve_device(device)
    if optimizer_fn is None:
        def optimizer_fn(groups):
            return torch.optim.Adam(groups, lr=lr)
    generators = _loader_generators(train_loader)
    result = Comparison(meta={
        "device": str(dev), "epochs": epochs, "num_classes": num_classes, "seed": seeds[0], "seeds": seeds,
        "lr": lr, "thawed_lr_factor": thawed_lr_factor, "decay": decay, "weight_decay": weight_decay,
        "torch_threads": torch.get_num_threads(),
    })
    previous = None
    for run_seed in seeds:
        for name in strategies:
            rate = lrs.get(name, lr)
            _reseed(run_seed, generators)
            model = previous = _fresh_model(model_fn, previous)
            model.to(dev)
            t0 = time.perf_counter()
            groups = apply_strategy(model, name, num_classes=num_classes, lr=rate, thawed_lr_factor=thawed_lr_factor,
                                    decay=decay, weight_decay=weight_decay, partial_from=partial_from)
            model.to(dev)
            _reseed(run_seed, generators)  # the same data order, whatever the surgery drew
            model, history, setup, peak = _train(
                model, name, groups, train_loader, val_loader, optimizer_fn=optimizer_fn, epochs=epochs,
                num_classes=num_classes, dev=dev, amp=amp, seed=run_seed, progress=progress,
                on_epoch_start=on_epoch_start)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            total_params = sum(p.numel() for p in model.parameters())
            run = _summary(name, run_seed, history, trainable, total_params, setup,
                           time.perf_counter() - t0, peak, rate)
            if measure is not None:
                run.update(_measured(measure, model, name))
            result.runs.append(run)
            result.all_histories.setdefault(name, []).append(history)
            result.meta["memory_kind"] = history.meta.get("memory_kind")
            if return_models and run_seed == seeds[0]:
                result.models[name] = model
            if progress_enabled(progress):
                print(_one_line(run))
            del history
    for name in strategies:
        result.rows.append(_mean_row([r for r in result.runs if r["strategy"] == name]))
        result.histories[name] = result.all_histories[name][0]
    return result
