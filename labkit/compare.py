"""Train the same model on the same data with several transfer strategies and compare the cost.

:func:`compare_strategies` is the cell behind "freezing the backbone makes training
dramatically cheaper": it runs each named :class:`Arm` (a strategy and its learning rates)
on a fresh copy of the pretrained model and returns a :class:`Comparison` whose table lists
the trainable parameters, seconds per epoch, total seconds, peak memory and validation
accuracy of each, whose ``plot()`` draws them and whose ``paired()`` reads two arms over
seeds. The settings every arm shares (epochs, seeds, device, optimizer, ...) travel as one
:class:`RunSettings`.

The strategies and their rules come from :data:`labkit.strategy.STRATEGY_TABLE`:
``cached_features``, ``feature_extraction``, ``partial_finetune``, ``full_finetune`` and
``discriminative_finetune``. The plain call runs each of them once, at default rates::

    result = compare_strategies(model_fn, train_loader, val_loader)

The comparison is fair by construction: for every arm (and every seed) the model, its
new head and the order of the training data are drawn from the same seed, every arm
trains for the same epochs with the same optimizer and weight decay, thawed pretrained layers
train at a lower rate than the new head, and the reported accuracy is the final epoch's
(``best_val_acc``, the best epoch picked on the validation data, is kept alongside).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from labkit._batches import count_classes, loader_generators
from labkit._env import progress_enabled
from labkit._tables import format_cell, render_table
from labkit.device import resolve_device
from labkit.features import extract_features, fit_head, split_head
from labkit.history import History
from labkit.measure import MB, PeakMemory
from labkit.seed import seed_everything
from labkit.strategy import ALL_STRATEGIES, STRATEGY_TABLE, apply_strategy
from labkit.train import fit

__all__ = ["compare_strategies", "Comparison", "Arm", "RunSettings", "STRATEGIES"]

STRATEGIES = ALL_STRATEGIES  # every strategy, lightest first

_COLUMNS = [
    ("arm", "arm", "{}"),
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
_SUMMARY_KEYS = frozenset(("arm", "strategy", "seed", "trainable_params", "total_params", "trainable_fraction", "lr",
                           *_NUMERIC))
_OLD_NAMES = {"cached": "cached_features", "frozen": "feature_extraction", "partial": "partial_finetune",
              "full": "full_finetune", "discriminative": "discriminative_finetune"}


def _callable_or_none(value, name: str, expected: str, fix: str = "") -> None:
    """Raise a TypeError naming ``name`` when ``value`` is neither None nor callable."""
    if value is not None and not callable(value):
        tail = f" Fix: {fix}." if fix else ""
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}.{tail}")


def _positive(value, name: str, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"Arm: {name} expected a number > 0, got {value!r}. Fix: {fix}.")


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: a strategy of :data:`labkit.strategy.STRATEGY_TABLE` and its rates.

    Attributes:
        strategy: e.g. ``"partial_finetune"``.
        lr: the new head's learning rate.
        thawed_lr_factor: thawed pretrained layers train at ``lr * thawed_lr_factor``
            (``partial_finetune``; ``full_finetune`` trains everything at that one rate, so
            ``thawed_lr_factor=1.0`` trains every layer at exactly ``lr``).
        decay: factor between neighbouring stages (``discriminative_finetune``).
        partial_from: first trainable stage of ``partial_finetune`` (default the last body stage).
        on_epoch_start: called as ``on_epoch_start(model, optimizer, epoch)`` before every epoch
            (epoch from 0), e.g. gradual unfreezing from ``feature_extraction``. Not for
            ``cached_features``, whose epochs never see the model.

    Example:
        >>> Arm("full_finetune", lr=1e-3, thawed_lr_factor=1.0).strategy
        'full_finetune'
    """

    strategy: str
    lr: float = 1e-3
    thawed_lr_factor: float = 0.1
    decay: float = 0.3
    partial_from: str | int | None = None
    on_epoch_start: Callable[[nn.Module, torch.optim.Optimizer, int], object] | None = None

    def __post_init__(self):
        if self.strategy not in STRATEGY_TABLE:
            old = _OLD_NAMES.get(self.strategy)
            renamed = f" ({self.strategy!r} is now {old!r})" if old else ""
            raise ValueError(f"Arm: strategy expected one of {', '.join(STRATEGY_TABLE)}, got {self.strategy!r}"
                             f"{renamed}. Fix: Arm('feature_extraction', lr=1e-3).")
        _positive(self.lr, "lr", "Arm(strategy, lr=1e-3)")
        _positive(self.decay, "decay", "decay=0.3")
        if isinstance(self.thawed_lr_factor, bool) or not isinstance(self.thawed_lr_factor, (int, float)) \
                or not 0 < self.thawed_lr_factor <= 1:
            raise ValueError(f"Arm: thawed_lr_factor expected a number in (0, 1] (thawed layers train no faster "
                             f"than the new head), got {self.thawed_lr_factor!r}. Fix: thawed_lr_factor=0.1.")
        _callable_or_none(self.on_epoch_start, "on_epoch_start", "a function (model, optimizer, epoch)",
                          "on_epoch_start=lambda model, optimizer, epoch: ...")
        if self.on_epoch_start is not None and STRATEGY_TABLE[self.strategy].cached:
            raise ValueError("Arm: on_epoch_start expected a strategy trained on images, got 'cached_features' "
                             "(its epochs only see stored features). Fix: Arm('feature_extraction', ...).")

    def apply(self, model: nn.Module, *, num_classes: int, weight_decay: float = 0.0) -> list[dict]:
        """Set ``model`` up for this arm (in place, :func:`labkit.strategy.apply_strategy`); its param groups.

        Example:
            >>> groups = Arm("partial_finetune", lr=1e-2).apply(resnet18(weights=None), num_classes=5)  # doctest: +SKIP
            >>> [(g["stage"], g["lr"]) for g in groups]                                                 # doctest: +SKIP
            [('layer4', 0.001), ('fc', 0.01)]
        """
        return apply_strategy(model, self.strategy, num_classes=num_classes, lr=self.lr,
                              thawed_lr_factor=self.thawed_lr_factor, decay=self.decay,
                              weight_decay=weight_decay, partial_from=self.partial_from)


@dataclass(frozen=True)
class RunSettings:
    """What every arm of a comparison shares.

    Attributes:
        epochs: epochs per arm (>= 1).
        seeds: repeat every arm once per seed (rows then hold means, :meth:`Comparison.per_seed`
            the values per seed, :meth:`Comparison.paired` the paired differences).
        weight_decay: the same for every arm (biases and norms get none).
        optimizer_fn: builds the optimizer from a list of param-group dicts (each with its
            ``lr``); default ``torch.optim.Adam``.
        device, amp: as in :func:`labkit.train.fit`.
        num_classes: classes in the data (default: from ``dataset.classes`` or the labels).
        measure: called on every trained model; the numbers in the dict it returns join that
            run's metrics (``measure=lambda m: {"drift": ...}`` makes ``per_seed("drift")`` work).
        return_models: keep the first seed's trained models in ``Comparison.models``.
        progress: progress bars and one summary line per arm.

    Example:
        >>> RunSettings(epochs=3, seeds=(0, 1, 2)).seeds
        (0, 1, 2)
    """

    epochs: int = 3
    seeds: Sequence[int] = (0,)
    weight_decay: float = 0.0
    optimizer_fn: Callable[[list], torch.optim.Optimizer] | None = None
    device: str | torch.device = "auto"
    amp: bool | str = "auto"
    num_classes: int | None = None
    measure: Callable[[nn.Module], dict] | None = None
    return_models: bool = False
    progress: bool | None = None

    def __post_init__(self):
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs: expected an int >= 1, got {self.epochs!r}. Fix: RunSettings(epochs=3).")
        if isinstance(self.seeds, (int, str)) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                         for s in self.seeds) or not len(self.seeds):
            raise ValueError(f"seeds: expected a non-empty sequence of ints, got {self.seeds!r}. "
                             f"Fix: RunSettings(seeds=(0, 1, 2)).")
        object.__setattr__(self, "seeds", tuple(self.seeds))
        _callable_or_none(self.measure, "measure", "a function of the trained model returning {name: number}")
        _callable_or_none(self.optimizer_fn, "optimizer_fn", "a function of the param groups",
                          "optimizer_fn=lambda groups: torch.optim.AdamW(groups)")


@dataclass(repr=False)
class Comparison:
    """Result of :func:`compare_strategies`: one row (a dict) per arm, in the arms' order; per-seed runs.

    Row keys: ``arm`` (its name), ``strategy``, ``trainable_params``, ``total_params``, ``trainable_fraction``,
    ``setup_s`` (one-off work before the epochs: feature extraction for ``cached_features``),
    ``s_per_epoch`` (mean training seconds per epoch), ``total_s`` (wall clock for the
    whole strategy, validation included), ``peak_mem_mb``, ``final_val_acc`` (the last
    epoch's), ``best_val_acc`` (the best epoch's), ``final_train_acc``, ``lr`` (the head's) and
    ``seeds``. With several seeds, the numbers in a row are means over seeds and ``runs``
    holds one row per (arm, seed). ``histories`` holds each arm's History for the
    first seed, ``all_histories`` one per seed, ``models`` the trained models of the first seed
    (with ``return_models=True``; for ``cached_features``, ``nn.Sequential(backbone, head)``).
    Everything is keyed by arm name.
    """

    rows: list[dict] = field(default_factory=list)
    histories: dict[str, History] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    all_histories: dict[str, list[History]] = field(default_factory=dict)
    models: dict[str, nn.Module] = field(default_factory=dict)

    def __getitem__(self, arm: str) -> dict:
        for row in self.rows:
            if row["arm"] == arm:
                return row
        raise KeyError(f"no arm {arm!r} in this comparison; it has {[r['arm'] for r in self.rows]}")

    def per_seed(self, metric: str = "final_val_acc") -> dict[str, list[float]]:
        """``{arm: [metric for each seed]}``, in arm and seed order, ready for :func:`labkit.stats.paired_difference`.

        Example:
            >>> result.per_seed("final_val_acc")            # doctest: +SKIP
            {'feature_extraction': [0.61, 0.64, 0.6], 'partial_finetune': [0.83, 0.8, 0.85]}
        """
        if self.runs and metric not in self.runs[0]:
            raise KeyError(f"per_seed: no metric {metric!r}; expected one of {', '.join(_NUMERIC)}.")
        out: dict[str, list[float]] = {row["arm"]: [] for row in self.rows}
        for run in self.runs:
            out.setdefault(run["arm"], []).append(run[metric])
        return out

    def paired(self, a: str, b: str, *, metric: str = "final_val_acc", expect: str = "greater", **options):
        """Arm ``a`` minus arm ``b`` on ``metric``, seed by seed: a :class:`labkit.stats.PairedDifference`.

        Args:
            a, b: arm names.
            metric: a row key such as ``"final_val_acc"``, ``"s_per_epoch"`` or a ``measure`` name.
            expect, options: as in :func:`labkit.stats.paired_difference` (``names`` defaults to the arms').

        Example:
            >>> print(result.paired("partial_finetune", "feature_extraction"))    # doctest: +SKIP
            partial_finetune - feature_extraction: +0.040 ± 0.012 over 3 seeds (3 of 3 up) -> holds
        """
        from labkit.stats import paired_difference

        values = self.per_seed(metric)
        for name in (a, b):
            if name not in values:
                raise KeyError(f"paired: no arm {name!r} in this comparison; it has {list(values)}.")
        options.setdefault("names", (a, b))
        return paired_difference(values[a], values[b], expect=expect, **options)

    def _label(self, row: dict) -> str:
        return STRATEGY_TABLE[row["strategy"]].label if row["arm"] == row["strategy"] else row["arm"]

    def table(self) -> str:
        """The rows as an aligned plain-text table (first column ``strategy`` when every arm is named after one)."""
        rows = [[format_cell(row.get(k), fmt) for k, _, fmt in _COLUMNS] for row in self.rows]
        titles = [title for _, title, _ in _COLUMNS]
        if all(row["arm"] == row["strategy"] for row in self.rows):
            titles[0] = "strategy"
        return render_table(titles, rows, align="l" + "r" * (len(_COLUMNS) - 1))

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

        names = [self._label(r) for r in self.rows]
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


def _check_arms(arms) -> dict[str, Arm]:
    """``{name: Arm}`` from a mapping of arms, a sequence of strategy names, or None (every strategy)."""
    if arms is None:
        arms = STRATEGIES
    if isinstance(arms, str):
        arms = (arms,)
    if not isinstance(arms, Mapping):
        names = list(arms)
        unknown = [s for s in names if not isinstance(s, str) or s not in STRATEGY_TABLE]
        if not names or unknown or len(set(names)) != len(names):
            renamed = [f"{s!r} is now {_OLD_NAMES[s]!r}" for s in unknown if s in _OLD_NAMES]
            raise ValueError(
                f"arms: expected distinct strategy names from {', '.join(STRATEGY_TABLE)} or a dict of Arms, "
                f"got {names}{' (unknown: ' + ', '.join(map(repr, unknown)) + ')' if unknown else ''}"
                f"{'; ' + ', '.join(renamed) if renamed else ''}. "
                f"Fix: arms=('feature_extraction', 'full_finetune') or arms={{'fast': Arm('full_finetune', lr=1e-2)}}."
            )
        return {name: Arm(name) for name in names}
    bad = {name: arm for name, arm in arms.items() if not isinstance(name, str) or not isinstance(arm, Arm)}
    if not arms or bad:
        got = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in bad.items()) or "an empty dict"
        raise TypeError(f"arms: expected a dict {{name: Arm(...)}}, got {got}. "
                        f"Fix: arms={{'full 1e-3': Arm('full_finetune', lr=1e-3)}}.")
    return dict(arms)


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


def _run_cached(model, groups, train_loader, val_loader, *, settings: RunSettings, optimizer_fn, num_classes, dev,
                seed):
    """Extract features once, then train the head on them.

    Returns (the classifier ``nn.Sequential(backbone, head)``, history, setup seconds, peak MB).
    """
    backbone, head = split_head(model)
    amp, progress = settings.amp, settings.progress
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
        feats, val_feats, head=head, num_classes=num_classes, optimizer=optimizer_fn(groups), epochs=settings.epochs,
        batch_size=getattr(train_loader, "batch_size", None) or 32, device=dev, seed=seed, progress=progress,
    )
    return nn.Sequential(backbone, head), history, setup, max([setup_peak] + history["peak_mem_mb"])


def _train(model, arm: Arm, groups, train_loader, val_loader, *, settings: RunSettings, optimizer_fn, num_classes,
           dev, seed):
    """Train one set-up arm. Returns (trained classifier, history, setup seconds, peak MB)."""
    if STRATEGY_TABLE[arm.strategy].cached:
        return _run_cached(model, groups, train_loader, val_loader, settings=settings, optimizer_fn=optimizer_fn,
                           num_classes=num_classes, dev=dev, seed=seed)
    optimizer = optimizer_fn(groups)
    hook = None if arm.on_epoch_start is None else (lambda epoch: arm.on_epoch_start(model, optimizer, epoch))
    history = fit(model, train_loader, val_loader, optimizer=optimizer, epochs=settings.epochs, device=dev,
                  amp=settings.amp, num_classes=num_classes, on_epoch_start=hook, progress=settings.progress)
    return model, history, 0.0, max(history["peak_mem_mb"])


def _one_line(run: dict) -> str:
    acc = f", final val acc {run['final_val_acc']:.3f}" if run["final_val_acc"] is not None else ""
    return (f"{run['arm']} (seed {run['seed']}): {run['s_per_epoch']:.2f} s/epoch, "
            f"{run['total_s']:.1f} s total{acc}")


def _data_classes(train_loader, num_classes: int | None) -> int:
    if num_classes is not None:
        return num_classes
    found = count_classes(train_loader)
    if found is None:
        raise ValueError(
            f"num_classes: could not read the number of classes from the training data "
            f"({type(getattr(train_loader, 'dataset', train_loader)).__name__} has no .classes, "
            f".targets or label tensor). Fix: RunSettings(num_classes=...)."
        )
    return found


def _summary(name: str, arm: Arm, seed: int, history: History, model: nn.Module, setup: float, total: float,
             peak: float) -> dict:
    val = history["val_acc"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())
    return {
        "arm": name,
        "strategy": arm.strategy,
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
        "lr": arm.lr,
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


class _Run:
    """What one comparison holds fixed: data, settings, device, the loader's generators, the last model built."""

    def __init__(self, model_fn, train_loader, val_loader, settings: RunSettings):
        self.model_fn, self.train_loader, self.val_loader, self.settings = model_fn, train_loader, val_loader, settings
        self.num_classes = _data_classes(train_loader, settings.num_classes)
        self.dev = resolve_device(settings.device)
        self.generators = loader_generators(train_loader)
        self.previous = None

    def optimizer_fn(self, arm: Arm):
        if self.settings.optimizer_fn is not None:
            return self.settings.optimizer_fn
        return lambda groups: torch.optim.Adam(groups, lr=arm.lr)

    def arm(self, name: str, arm: Arm, seed: int) -> tuple[dict, History, nn.Module]:
        """Train ``arm`` from a fresh model on ``seed``: (its run row, its History, the trained model)."""
        _reseed(seed, self.generators)
        model = self.previous = _fresh_model(self.model_fn, self.previous)
        model.to(self.dev)
        t0 = time.perf_counter()
        groups = arm.apply(model, num_classes=self.num_classes, weight_decay=self.settings.weight_decay)
        model.to(self.dev)
        _reseed(seed, self.generators)  # the same data order, whatever the surgery drew
        model, history, setup, peak = _train(
            model, arm, groups, self.train_loader, self.val_loader, settings=self.settings,
            optimizer_fn=self.optimizer_fn(arm), num_classes=self.num_classes, dev=self.dev, seed=seed)
        run = _summary(name, arm, seed, history, model, setup, time.perf_counter() - t0, peak)
        if self.settings.measure is not None:
            run.update(_measured(self.settings.measure, model, name))
        return run, history, model


def compare_strategies(
    model_fn: Callable[[], nn.Module],
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    arms: Mapping[str, Arm] | Sequence[str] | None = None,
    settings: RunSettings | None = None,
) -> Comparison:
    """Run named arms (a strategy and its rates each) on the same data and seeds; compare time, memory, accuracy.

    Fair by construction: for each arm (and seed) the global RNGs and the loader's own
    generators are reseeded, then a fresh model comes from ``model_fn()`` and gets a fresh
    head, so every arm starts from the same head and sees the data in the same order. Every
    arm trains for the same epochs with the same optimizer type and weight decay
    (``settings``); its learning rates follow :data:`labkit.strategy.STRATEGY_TABLE` and its
    :class:`Arm`. Arms run, and rows come back, in the order given; the default order runs the
    lightest first, because on CPU memory freed by a heavy run can stay with the process and
    inflate the peak of the next.

    Args:
        model_fn: builds a fresh pretrained classifier, e.g.
            ``lambda: torchvision.models.resnet18(weights="DEFAULT")``.
        train_loader: training batches of ``(images, labels)``.
        val_loader: optional validation batches (for ``final_val_acc`` and ``best_val_acc``).
        arms: ``{name: Arm(...)}``; or strategy names, each an arm of that name at default
            rates; default every strategy of the table, lightest first.
        settings: what every arm shares (:class:`RunSettings`: epochs, seeds, device, amp,
            weight decay, optimizer, ``measure``, ``return_models``, progress).

    Example:
        >>> result = compare_strategies(lambda: torchvision.models.resnet18(weights="DEFAULT"),
        ...                             train_loader, val_loader)                      # doctest: +SKIP
        >>> print(result)                                                              # doctest: +SKIP
        strategy            trainable  trainable %  setup s  s/epoch  total s  peak MB  final val acc  best val acc
        ------------------  ---------  -----------  -------  -------  -------  -------  -------------  ------------
        cached_features         5,130         0.0%     4.10     0.01     4.20      540          0.875         0.875
        ...
        >>> sweep = compare_strategies(model_fn, train_loader, val_loader, arms={
        ...     f"full {lr:g}": Arm("full_finetune", lr=lr, thawed_lr_factor=1.0) for lr in (1e-2, 1e-3)},
        ...     settings=RunSettings(epochs=3, seeds=(0, 1, 2)))                        # doctest: +SKIP
        >>> print(sweep.paired("full 0.001", "full 0.01"))                             # doctest: +SKIP
    """
    if not callable(model_fn) or isinstance(model_fn, nn.Module):
        raise TypeError(
            f"model_fn: expected a function that builds a fresh model, got {type(model_fn).__name__}. "
            f"Fix: compare_strategies(lambda: torchvision.models.resnet18(weights='DEFAULT'), ...)."
        )
    arms = _check_arms(arms)
    settings = RunSettings() if settings is None else settings
    if not isinstance(settings, RunSettings):
        raise TypeError(f"settings: expected a RunSettings, got {type(settings).__name__}. "
                        f"Fix: settings=RunSettings(epochs=3, seeds=(0, 1, 2)).")
    run = _Run(model_fn, train_loader, val_loader, settings)
    result = Comparison(meta={
        "device": str(run.dev), "epochs": settings.epochs, "num_classes": run.num_classes,
        "seed": settings.seeds[0], "seeds": list(settings.seeds), "weight_decay": settings.weight_decay,
        "arms": {name: {"strategy": a.strategy, "lr": a.lr, "thawed_lr_factor": a.thawed_lr_factor,
                        "decay": a.decay} for name, a in arms.items()},
        "torch_threads": torch.get_num_threads(),
    })
    for seed in settings.seeds:
        for name, arm in arms.items():
            summary, history, model = run.arm(name, arm, seed)
            result.runs.append(summary)
            result.all_histories.setdefault(name, []).append(history)
            result.meta["memory_kind"] = history.meta.get("memory_kind")
            if settings.return_models and seed == settings.seeds[0]:
                result.models[name] = model
            if progress_enabled(settings.progress):
                print(_one_line(summary))
    for name in arms:
        result.rows.append(_mean_row([r for r in result.runs if r["arm"] == name]))
        result.histories[name] = result.all_histories[name][0]
    return result
