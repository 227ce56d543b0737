"""Benchmark: full fine-tuning vs feature extraction (frozen backbone) vs cached features.

``python -m tools.bench`` trains a torchvision ResNet-18 (random weights: timing does not
depend on weight values) on 256 synthetic 224x224 images, batch 32, for 5 epochs, three ways,
each set up by :func:`labkit.strategy.apply_strategy` from the one strategy table:

* ``full_finetune``: every parameter trains;
* ``feature_extraction``: frozen backbone and a new head, trained on images every epoch (one
  backbone forward per image per epoch, no backward through it);
* ``cached_features``: the frozen backbone runs once (:func:`labkit.features.extract_features`),
  then only the head trains on the stored features (:func:`labkit.features.fit_head`).

Each strategy runs in its own Python process (peak RSS only grows within a process), after
the same one-batch warm-up. It prints a markdown table and writes JSON (default
``benchmarks/results/frozen_vs_full-<device>.json``) with the ratios the course promises:

* seconds per epoch, full_finetune / feature_extraction (target >= 2);
* peak memory, full_finetune / feature_extraction;
* cached_features total for all epochs / one forward pass over the images (target <= 1.2, limit 1.0);
* feature_extraction total / cached_features total (target >= 4);

and the machine, torch version, device and thread count. It is a script that reports
numbers, not a test: on a shared or busy machine the numbers move.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from labkit._tables import markdown_table
from tools import CHECKOUT

__all__ = ["main", "run_strategy", "summarize", "markdown", "BENCH_STRATEGIES"]

BENCH_STRATEGIES = ("full_finetune", "feature_extraction", "cached_features")
_MARK = "LABKIT_BENCH_RESULT "
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class _SyntheticImages(torch.utils.data.Dataset):
    """Random uint8 images kept in memory, converted and normalized per item like decoded photos."""

    def __init__(self, n: int, size: int, num_classes: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        self.classes = [f"class{i}" for i in range(num_classes)]
        self.mean = torch.tensor(_MEAN).view(3, 1, 1)
        self.std = torch.tensor(_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].float().div_(255.0)
        return (x - self.mean) / self.std, self.labels[i]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Time full_finetune vs feature_extraction vs cached_features; print a table and write JSON.",
    )
    p.add_argument("--arch", default="resnet18", help="torchvision classification builder (default resnet18)")
    p.add_argument("--image-size", type=int, default=224, help="square image side in pixels (default 224)")
    p.add_argument("--images", type=int, default=256, help="training images (default 256)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per strategy (default 5)")
    p.add_argument("--classes", type=int, default=10, help="classes in the synthetic data (default 10)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate, momentum 0.9 (default 0.01)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    p.add_argument("--amp", default="auto", help="auto (on for CUDA), on, off, bf16, fp16")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--strategies", default=",".join(BENCH_STRATEGIES),
        help=f"comma-separated subset of {','.join(BENCH_STRATEGIES)} (default all)",
    )
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/frozen_vs_full-<device>.json)")
    p.add_argument("--in-process", action="store_true", help="run strategies in this process (peak RSS less clean)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--strategy", default=None, help=argparse.SUPPRESS)
    return p


def _amp_arg(value: str):
    return {"auto": "auto", "on": True, "true": True, "off": False, "false": False}.get(value.lower(), value)


def _config(args) -> dict:
    return {
        "arch": args.arch, "image_size": args.image_size, "images": args.images,
        "batch_size": args.batch_size, "epochs": args.epochs, "classes": args.classes, "lr": args.lr,
        "device": args.device, "amp": args.amp, "channels_last": bool(args.channels_last),
        "threads": args.threads, "seed": args.seed, "optimizer": "SGD(momentum=0.9)",
        "weights": "random (timing does not depend on weight values)",
    }


def _config_argv(cfg: dict) -> list[str]:
    argv = [
        "--arch", cfg["arch"], "--image-size", str(cfg["image_size"]), "--images", str(cfg["images"]),
        "--batch-size", str(cfg["batch_size"]), "--epochs", str(cfg["epochs"]), "--classes", str(cfg["classes"]),
        "--lr", repr(cfg["lr"]), "--device", cfg["device"], "--amp", str(cfg["amp"]), "--seed", str(cfg["seed"]),
    ]
    if cfg["channels_last"]:
        argv.append("--channels-last")
    if cfg["threads"]:
        argv += ["--threads", str(cfg["threads"])]
    return argv


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


def _forward_seconds(net: nn.Module, loader, dev, amp_cfg, channels_last: bool, batches: int | None = None) -> float:
    """Seconds for one inference pass (eval mode, inference_mode) over the loader."""
    from labkit.measure import Stopwatch

    was_training = net.training
    net.eval()
    with Stopwatch(dev) as clock, torch.inference_mode():
        for i, (x, _) in enumerate(loader):
            if batches is not None and i >= batches:
                break
            x = x.to(dev, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp_cfg.autocast(dev):
                net(x)
    net.train(was_training)
    return clock.seconds


def _time_cached(model, groups, loader, cfg: dict, dev, amp, amp_cfg, channels_last: bool) -> tuple[dict, object]:
    """Extract once, train the head on the features; bracketed by a reference forward pass before and after."""
    from labkit.features import extract_features, fit_head, split_head
    from labkit.measure import MB, PeakMemory

    backbone, head = split_head(model)
    reference_before = _forward_seconds(backbone, loader, dev, amp_cfg, channels_last)
    tracker = PeakMemory(dev)
    tracker.start()
    t0 = time.perf_counter()
    feats = extract_features(backbone, loader, device=dev, amp=amp, channels_last=channels_last, progress=False)
    extract_s = time.perf_counter() - t0
    extract_peak = tracker.stop() / MB
    optimizer = torch.optim.SGD(groups, lr=cfg["lr"], momentum=0.9)
    _, history = fit_head(
        feats, head=head, num_classes=cfg["classes"], optimizer=optimizer, epochs=cfg["epochs"],
        batch_size=cfg["batch_size"], device=dev, progress=False,
    )
    total_s = time.perf_counter() - t0
    # The reference pass runs once before and once after, so that a machine getting busier
    # or quieter during the run does not favour either side of the ratio.
    reference_after = _forward_seconds(backbone, loader, dev, amp_cfg, channels_last)
    return {
        "total_s": total_s,
        "one_forward_pass_s": (reference_before + reference_after) / 2,
        "one_forward_pass_runs_s": [reference_before, reference_after],
        "extract_s": extract_s,
        "head_epochs_s": history.total_seconds,
        "peak_mem_mb": max([extract_peak] + history["peak_mem_mb"]),
        "memory_kind": tracker.kind,
    }, history


def _time_images(model, groups, loader, cfg: dict, dev, amp, channels_last: bool) -> tuple[dict, object]:
    """Train on images with fit; the whole run's seconds and peak memory."""
    from labkit.train import fit

    optimizer = torch.optim.SGD(groups, lr=cfg["lr"], momentum=0.9)
    t0 = time.perf_counter()
    history = fit(model, loader, optimizer=optimizer, epochs=cfg["epochs"], device=dev, amp=amp,
                  channels_last=channels_last, progress=False)
    return {"total_s": time.perf_counter() - t0, "peak_mem_mb": max(history["peak_mem_mb"]),
            "memory_kind": history.meta["memory_kind"]}, history


def run_strategy(strategy: str, cfg: dict) -> dict:
    """Time one strategy in this process and return its measurements (a JSON-ready dict)."""
    import torchvision

    from labkit._env import peak_rss_mb
    from labkit.device import loader_kwargs, resolve_amp, resolve_device
    from labkit.seed import seed_everything
    from labkit.strategy import apply_strategy

    if strategy not in BENCH_STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(BENCH_STRATEGIES)}, got {strategy!r}.")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    seed_everything(cfg["seed"])
    dev = resolve_device(cfg["device"])
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    amp = _amp_arg(str(cfg["amp"]))
    amp_cfg = resolve_amp(dev, amp)
    channels_last = bool(cfg["channels_last"])

    data = _SyntheticImages(cfg["images"], cfg["image_size"], cfg["classes"], cfg["seed"])
    loader = torch.utils.data.DataLoader(data, batch_size=cfg["batch_size"], shuffle=True, **loader_kwargs(dev))
    model = torchvision.models.get_model(cfg["arch"], weights=None)
    groups = apply_strategy(model, strategy, num_classes=cfg["classes"], lr=cfg["lr"])
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    result: dict = {
        "strategy": strategy,
        # the same one-off start-up cost, excluded for every strategy
        "warmup_s": _forward_seconds(model, loader, dev, amp_cfg, channels_last, batches=1),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "rss_before_mb": _rss_mb(),
    }
    if strategy == "cached_features":
        measured, history = _time_cached(model, groups, loader, cfg, dev, amp, amp_cfg, channels_last)
    else:
        measured, history = _time_images(model, groups, loader, cfg, dev, amp, channels_last)
    result.update(measured)
    seconds = history["seconds"]
    result.update({
        "epoch_seconds": seconds,
        "s_per_epoch": sum(seconds) / len(seconds),
        "images_per_sec": cfg["images"] * len(seconds) / sum(seconds),
        "final_train_loss": history["train_loss"][-1],
        "process_peak_rss_mb": peak_rss_mb(),
        "device": str(dev),
        "amp": str(amp_cfg.dtype).replace("torch.", "") if amp_cfg.enabled else "off",
        "torch_threads": torch.get_num_threads(),
    })
    if dev.type == "cuda":
        result["cuda_device"] = torch.cuda.get_device_name(dev)
    return result


def _machine(device: str) -> dict:
    import torchvision

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    info = {
        "platform": platform.platform(),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gb": round(mem_gb, 1) if mem_gb else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def summarize(results: dict[str, dict], cfg: dict, machine: dict, *, isolation: str) -> dict:
    """The JSON document: config, machine, per-strategy results and the ratios against their targets."""
    full, frozen, cached = (results.get(k) for k in BENCH_STRATEGIES)
    ratios = {}

    def add(name, value, target=None, met=None, **extra):
        if value is not None:
            ratios[name] = {"value": value, "target": target, "met": met, **extra}

    if full and frozen:
        r = _ratio(full["s_per_epoch"], frozen["s_per_epoch"])
        add("full_over_frozen_s_per_epoch", r, ">= 2", r >= 2)
        add("full_over_frozen_peak_mem", _ratio(full["peak_mem_mb"], frozen["peak_mem_mb"]),
            memory_kind=full.get("memory_kind"))
        baselines = full.get("rss_before_mb") is not None and frozen.get("rss_before_mb") is not None
        if baselines and full.get("memory_kind", "").startswith("rss"):
            add("full_over_frozen_peak_mem_above_baseline", _ratio(
                full["peak_mem_mb"] - full["rss_before_mb"], frozen["peak_mem_mb"] - frozen["rss_before_mb"]))
    if cached:
        r = _ratio(cached["total_s"], cached.get("one_forward_pass_s"))
        add("cached_total_over_one_forward_pass", r, "<= 1.2", r <= 1.2, limit=1.0)
    if frozen and cached:
        r = _ratio(frozen["total_s"], cached["total_s"])
        add("frozen_total_over_cached_total", r, ">= 4", r >= 4)
    return {
        "benchmark": "frozen_vs_full",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg,
        "machine": machine,
        "isolation": isolation,
        "strategies": results,
        "ratios": ratios,
        "targets_met": all(v["met"] for v in ratios.values() if v.get("met") is not None),
    }


def markdown(doc: dict) -> str:
    """The benchmark document as two markdown tables (strategies, then ratios vs targets)."""
    cfg, m = doc["config"], doc["machine"]
    lines = [
        f"{cfg['arch']} {cfg['image_size']}x{cfg['image_size']}, {cfg['images']} images, batch "
        f"{cfg['batch_size']}, {cfg['epochs']} epochs on {m['device']}"
        f"{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, {m['torch_threads']} threads; "
        f"{m['cpu']}, {m['usable_cpus']} usable CPUs; torch {m['torch']}",
        "",
    ]
    rows = []
    for name, r in doc["strategies"].items():
        total = f"{r['total_s']:.2f}"
        if name == "cached_features":
            total += f" (extract {r['extract_s']:.2f} + head {r['head_epochs_s']:.2f})"
        rows.append([name, f"{r['trainable_params']:,}", f"{r['s_per_epoch']:.3f}", total,
                     f"{r['peak_mem_mb']:.0f}", f"{r['images_per_sec']:.1f}"])
    lines.append(markdown_table(
        ["strategy", "trainable params", "s/epoch", "total s", "peak memory MB", "images/s"], rows))
    if "cached_features" in doc["strategies"]:
        cached = doc["strategies"]["cached_features"]
        runs = cached.get("one_forward_pass_runs_s") or []
        how = f" (mean of {runs[0]:.2f} s before and {runs[1]:.2f} s after the cached run)" if len(runs) == 2 else ""
        lines.append(f"\nOne forward pass over the images (inference mode): {cached['one_forward_pass_s']:.2f} s{how}.")
    titles = {
        "full_over_frozen_s_per_epoch": "seconds per epoch, full_finetune / feature_extraction",
        "full_over_frozen_peak_mem": "peak memory, full_finetune / feature_extraction",
        "full_over_frozen_peak_mem_above_baseline":
            "peak memory above the pre-training RSS, full_finetune / feature_extraction",
        "cached_total_over_one_forward_pass": "cached_features total / one forward pass (limit 1.0)",
        "frozen_total_over_cached_total": "feature_extraction total / cached_features total",
    }
    rows = [[titles.get(key, key), f"{r['value']:.2f}x", r["target"] or "",
             "" if r["met"] is None else ("yes" if r["met"] else "no")] for key, r in doc["ratios"].items()]
    lines += ["", markdown_table(["measure", "value", "target", "met"], rows, align="lrrc")]
    return "\n".join(lines)


def _run_worker_process(strategy: str, cfg: dict) -> dict:
    cmd = [sys.executable, "-m", "tools.bench", "--worker", "--strategy", strategy] + _config_argv(cfg)
    root = str(CHECKOUT)  # the checkout holding tools/ (and labkit, unless labkit is installed)
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, LABKIT_PROGRESS="0", PYTHONPATH=root + (os.pathsep + path if path else ""))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"bench: the {strategy!r} worker failed (exit {proc.returncode}); its output:\n{proc.stdout[-2000:]}"
        )
    return json.loads(lines[-1][len(_MARK):])


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.bench``; returns the exit status."""
    args = _parser().parse_args(argv)
    for name in ("image_size", "images", "batch_size", "epochs", "classes"):
        if getattr(args, name) < 1:
            print(f"bench: --{name.replace('_', '-')} expected >= 1, got {getattr(args, name)}.", file=sys.stderr)
            return 2
    cfg = _config(args)
    if args.worker:
        print(_MARK + json.dumps(run_strategy(args.strategy, cfg)), flush=True)
        return 0
    threads_before, cudnn_before = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        return _run(args, cfg)
    finally:  # --in-process must not leave the caller's settings changed
        torch.set_num_threads(threads_before)
        torch.backends.cudnn.benchmark = cudnn_before


def _run(args, cfg: dict) -> int:
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in BENCH_STRATEGIES]
    if not strategies or unknown:
        print(f"bench: --strategies expected names from {','.join(BENCH_STRATEGIES)}, got {args.strategies!r}.",
              file=sys.stderr)
        return 2
    from labkit.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    machine = _machine(device)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    say(f"bench: {cfg['arch']} {cfg['image_size']}px, {cfg['images']} images, batch {cfg['batch_size']}, "
        f"{cfg['epochs']} epochs on {device} ({'one process' if args.in_process else 'one process per strategy'})")
    results: dict[str, dict] = {}
    for s in strategies:
        t0 = time.perf_counter()
        results[s] = run_strategy(s, cfg) if args.in_process else _run_worker_process(s, cfg)
        say(f"  {s}: {results[s]['s_per_epoch']:.2f} s/epoch, {results[s]['total_s']:.2f} s total "
            f"({time.perf_counter() - t0:.0f} s with start-up)")
    machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    doc = summarize(results, cfg, machine, isolation="in-process" if args.in_process else "subprocess per strategy")
    out = Path(args.out) if args.out else Path("benchmarks") / "results" / f"frozen_vs_full-{device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    say("")
    say(markdown(doc))
    say(f"\nwrote {out}")
    if args.check and not doc["targets_met"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
