"""The record of a training run: one row per epoch, as plain dicts, with a table and a plot."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from labkit._tables import format_cell, render_table

__all__ = ["History"]


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
    ``images_per_sec``, ``peak_mem_mb``, ``lrs`` (every param group's learning rate at the
    epoch's start, by group name: a group's ``"name"`` key, else ``"group<i>"``) and ``lr``
    (the first group's rate, the only one for a single-group optimizer). ``meta`` records the
    device, precision, memory measure and image counts.

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
        rows = [[format_cell(row.get(k), fmt) for k, _, fmt in cols] for row in self.epochs]
        return render_table([title for _, title, _ in cols], rows)

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
