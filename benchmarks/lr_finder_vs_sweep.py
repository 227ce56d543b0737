"""Does the learning-rate finder's rate train as well as lesson 03's sweep, at a fraction of the cost?

Lesson 03 picks its single learning rate for full fine-tuning by a sweep of whole training
runs (head rate 1e-2, 1e-3 and 1e-4, every stage at that rate) and keeps the rate with the
best mean final validation accuracy over seeds. This script runs the same sweep on the same
data (the lesson's quick set: 6 images per class for training, every second validation
image), backbone (the offline EfficientNet-Lite0 with ImageNet weights), optimizer (AdamW,
no weight decay) and epochs (3), and for every seed also runs ``labkit.interpret.lr_find``
on a fresh copy of that model and trains once at its suggestion ("valley") and once at
"minimum/10". Reported per seed: the final validation accuracy at the finder's rate and at
the sweep's best rate, the paired difference (mean ± standard error, ``labkit.stats``) with
its verdict, and what each way of choosing cost in seconds.

    python benchmarks/lr_finder_vs_sweep.py                  # 3 seeds, fastai's 100 steps from 1e-7 to 10
    python benchmarks/lr_finder_vs_sweep.py --start 1e-5 --end 1 --steps 40 --sweep-from-lesson --skip-minimum

``--sweep-from-lesson`` takes the sweep's accuracies from lesson 03's committed outputs (the same
runs: same data, seeds, model and optimizer) instead of training the nine runs again, and reruns
one of them (seed 0 at 1e-2) to check that it reproduces; costs are then also counted in
optimizer steps, which do not depend on how loaded the machine is.

Runs are built on ``labkit.strategy.apply_strategy`` and ``labkit.train.fit`` directly (the
same set-up as ``labkit.compare.compare_strategies``: the same seed before the surgery and
again before training, the loader's own generator included).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("LABKIT_OFFLINE", "1")
os.environ.setdefault("LABKIT_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, when run as a script

import torch

from labkit.device import resolve_device
from labkit.interpret import lr_find
from labkit.models import load_backbone
from labkit.photos import load_lesson_data
from labkit.seed import seed_everything
from labkit.stats import format_table, paired_difference
from labkit.strategy import apply_strategy
from labkit.train import fit

ROOT = Path(__file__).resolve().parent.parent
HEAD_LR = 1e-2
SWEEP = (HEAD_LR, HEAD_LR / 10, HEAD_LR / 100)  # lesson 03's SINGLE_RATES
EPOCHS = 3


def _generators(loader) -> list[torch.Generator]:
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def _reseed(seed: int, loader) -> None:
    seed_everything(seed)
    for g in _generators(loader):
        g.manual_seed(seed)


def _setup(backbone, data, seed: int, rate: float):
    """A fresh full fine-tune at ``rate`` (lesson 03's sweep arm): the model and its AdamW optimizer."""
    _reseed(seed, data.train)
    model = copy.deepcopy(backbone.model)
    groups = apply_strategy(model, "full_finetune", num_classes=data.num_classes, lr=rate, thawed_lr_factor=1.0,
                            weight_decay=0.0)
    return model, torch.optim.AdamW(groups, weight_decay=0.0)


def train_at(backbone, data, val, seed: int, rate: float, device) -> tuple[float, float]:
    """(final validation accuracy, seconds) of one full fine-tune at ``rate``."""
    model, optimizer = _setup(backbone, data, seed, rate)
    _reseed(seed, data.train)  # the same data order, whatever the surgery drew
    t0 = time.perf_counter()
    history = fit(model, data.train, val, optimizer=optimizer, epochs=EPOCHS, device=device, progress=False)
    return float(history["val_acc"][-1]), time.perf_counter() - t0


def find_rate(backbone, data, seed: int, args, device):
    """The finder on the same fresh model and optimizer: (LRFind, seconds)."""
    model, optimizer = _setup(backbone, data, seed, 1.0)  # the finder sets the rate itself
    t0 = time.perf_counter()
    result = lr_find(model, data.train, optimizer=optimizer, start=args.start, end=args.end, steps=args.steps,
                     device=device, verbose=False)
    return result, time.perf_counter() - t0


def lesson_sweep(seeds: list[int]) -> dict[float, list[float]]:
    """Final val accuracy per seed of each sweep rate, from lesson 03's committed outputs (seeds 0, 1, 2)."""
    cells = json.loads((ROOT / "solutions" / "03_discriminative_lr.ipynb").read_text(encoding="utf-8"))["cells"]
    text = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))
    out = {}
    for rate in SWEEP:
        row = re.search(rf"^full_finetune {rate:g}\s+((?:[0-9.]+ )+)", text, re.M)
        if row is None:
            raise SystemExit(f"lesson 03's outputs hold no row for full_finetune {rate:g}; "
                             "run without --sweep-from-lesson")
        values = [float(v) for v in row.group(1).split()]  # one per seed, single-spaced (the mean follows apart)
        if max(seeds) >= len(values):
            raise SystemExit(f"lesson 03 ran seeds 0..{len(values) - 1}; pass --seeds within them")
        out[rate] = [values[s] for s in seeds]
    return out


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100, help="finder steps (fastai: 100)")
    parser.add_argument("--start", type=float, default=1e-7, help="finder's first rate (fastai: 1e-7)")
    parser.add_argument("--end", type=float, default=10.0, help="finder's last rate (fastai: 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--sweep-from-lesson", action="store_true",
                        help="take the sweep's accuracies from lesson 03's committed outputs (one run rechecked)")
    parser.add_argument("--skip-minimum", action="store_true", help="report minimum/10 without training at it")
    return parser.parse_args()


def _log(msg: str, t_start: float) -> None:
    print(f"[{time.perf_counter() - t_start:6.0f} s] {msg}", flush=True)


def _sweep(backbone, data, val, seeds, args, device, out, t_start) -> None:
    """The sweep's accuracies and seconds: trained here, or from lesson 03 with one run rechecked."""
    if args.sweep_from_lesson:
        out["sweep"] = lesson_sweep(seeds)
        acc, secs = train_at(backbone, data, val, seeds[0], SWEEP[0], device)
        out["run_s"].append(secs)
        recorded = out["sweep"][SWEEP[0]][0]
        _log(f"recheck: seed {seeds[0]}, sweep rate {SWEEP[0]:g}: final val acc {acc:.3f} here, {recorded:.3f} in "
             f"lesson 03's outputs ({'reproduced' if round(acc, 3) == recorded else 'DIFFERENT'}; {secs:.0f} s)",
             t_start)
        return
    for seed in seeds:
        for rate in SWEEP:
            acc, secs = train_at(backbone, data, val, seed, rate, device)
            out["sweep"].setdefault(rate, []).append(acc)
            out["sweep_s"].setdefault(rate, []).append(secs)
            out["run_s"].append(secs)
            _log(f"seed {seed}: sweep rate {rate:g}: final val acc {acc:.3f} ({secs:.0f} s)", t_start)


def run(seeds: list[int], args) -> dict:
    """The sweep, then for every seed the finder and training at its suggestions."""
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    backbone = load_backbone("resnet18", verbose=False)  # offline: EfficientNet-Lite0, as lesson 03
    data = load_lesson_data("auto", backbone=backbone, per_class=6, batch_size=8, verbose=False)
    val = torch.utils.data.DataLoader(torch.utils.data.Subset(data.val.dataset, range(0, len(data.val.dataset), 2)),
                                      batch_size=64)
    print(f"{backbone}\ndevice {device}, torch threads {torch.get_num_threads()}; {len(data.train.dataset)} training "
          f"images ({len(data.train)} batches of 8), {len(val.dataset)} validation images, {EPOCHS} epochs, "
          f"seeds {seeds}; finder {args.steps} steps from {args.start:g} to {args.end:g}; sweep "
          f"{'from lesson 03' if args.sweep_from_lesson else 'trained here'}", flush=True)
    out = {"sweep": {}, "sweep_s": {}, "run_s": [], "finder": [], "finder_s": [], "valley": [], "minimum": [],
           "steps_per_run": EPOCHS * len(data.train)}
    _sweep(backbone, data, val, seeds, args, device, out, t_start)
    for seed in seeds:
        found, secs = find_rate(backbone, data, seed, args, device)
        out["finder"].append(found)
        out["finder_s"].append(secs)
        _log(f"seed {seed}: {found} ({secs:.0f} s)", t_start)
        for rule in ("valley",) if args.skip_minimum else ("valley", "minimum"):
            acc, secs = train_at(backbone, data, val, seed, found.suggestions[rule], device)
            out[rule].append(acc)
            out["run_s"].append(secs)
            _log(f"seed {seed}: finder rate ({rule}) {found.suggestions[rule]:.2e}: final val acc {acc:.3f} "
                 f"({secs:.0f} s)", t_start)
    out["total_s"] = time.perf_counter() - t_start
    return out


def _table(out: dict, seeds: list[int]) -> None:
    print("\n| seed | valley rate | min/10 rate | finder steps | acc valley | acc min/10 | "
          + " | ".join(f"acc {r:g}" for r in SWEEP) + " | finder s |")
    print("|---:|---:|---:|---:|---:|---:|" + "---:|" * len(SWEEP) + "---:|")
    for i, seed in enumerate(seeds):
        found = out["finder"][i]
        minimum = f"{out['minimum'][i]:.3f}" if out["minimum"] else "not trained"
        print(f"| {seed} | {found.suggestions['valley']:.2e} | {found.suggestions['minimum']:.2e} | "
              f"{len(found.rates)} | {out['valley'][i]:.3f} | {minimum} | "
              + " | ".join(f"{out['sweep'][r][i]:.3f}" for r in SWEEP) + f" | {out['finder_s'][i]:.0f} |")


def report(out: dict, seeds: list[int]) -> None:
    """The per-seed table, the paired claims with verdicts, and the costs."""
    best = max(SWEEP, key=lambda r: statistics.mean(out["sweep"][r]))
    print(f"\nsweep's best single rate (best mean over seeds, as lesson 03 picks it): {best:g}")
    _table(out, seeds)
    claims = {"the finder's rate (valley) trains as well as the sweep's best": paired_difference(
        out["valley"], out["sweep"][best], names=("finder valley", f"sweep {best:g}"))}
    if out["minimum"]:
        claims["the finder's rate (minimum/10) trains as well as the sweep's best"] = paired_difference(
            out["minimum"], out["sweep"][best], names=("finder min/10", f"sweep {best:g}"))
    print("\n" + format_table(claims))
    valley = claims["the finder's rate (valley) trains as well as the sweep's best"]
    words = {"holds": "the finder's valley rate beat the sweep's best rate",
             "too close to call": "the finder's valley rate and the sweep's best rate differ by less than these "
                                  "seeds resolve",
             "contradicts": "the finder LOSES: training at its valley rate ended clearly below the sweep's best rate"}
    print(f"\nverdict (valley vs the sweep's best): {valley.verdict} -> {words[valley.verdict]} "
          f"({valley.mean:+.3f} ± {valley.se:.3f}, {valley.wins}/{valley.n} seeds ahead).")
    run_s = statistics.mean(out["run_s"])
    finder_steps = statistics.mean(len(f.rates) for f in out["finder"])
    steps = out["steps_per_run"]
    sweep_s = ([sum(out["sweep_s"][r][i] for r in SWEEP) for i in range(len(seeds))] if out["sweep_s"]
               else [len(SWEEP) * run_s] * len(seeds))
    print(f"cost per seed, in optimizer steps: finder {finder_steps:.0f} + one run {steps} = {finder_steps + steps:.0f}"
          f" against the sweep's {len(SWEEP)} runs x {steps} = {len(SWEEP) * steps} "
          f"({(finder_steps + steps) / (len(SWEEP) * steps):.0%}; the runs also evaluate each epoch).")
    print(f"cost per seed, in seconds on this machine: finder {statistics.mean(out['finder_s']):.0f} s + one run "
          f"{run_s:.0f} s = {statistics.mean(out['finder_s']) + run_s:.0f} s against the sweep's "
          f"{statistics.mean(sweep_s):.0f} s" + ("" if out["sweep_s"] else f" ({len(SWEEP)} x the mean run timed "
                                                 "here)") + f". Whole script: {out['total_s']:.0f} s.")


def main() -> None:
    args = _parse()
    out = run(args.seeds, args)
    report(out, args.seeds)


if __name__ == "__main__":
    main()
