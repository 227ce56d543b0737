"""Which input size for the offline EfficientNet-Lite0? Cost per batch against what the frozen features know.

For each size: the median seconds of a frozen forward pass and of a full forward and backward pass
(batch 32, one thread), and the val accuracy of a logistic-regression head on frozen pooled
features of each bundled dataset (all training images, eval transforms at that size).

    python benchmarks/offline_input_size.py                 # sizes 64 96 112 128 160 224
    python benchmarks/offline_input_size.py --sizes 96 112
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout, for tools.probe (run as `python benchmarks/offline_input_size.py`)


def _median_seconds(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cost(model: torch.nn.Module, size: int) -> tuple[float, float]:
    x = torch.randn(32, 3, size, size)

    def frozen():
        with torch.no_grad():
            model.eval()(x)

    def full():
        model.train()
        model.zero_grad(set_to_none=True)
        model(x).logsumexp(1).sum().backward()

    return _median_seconds(frozen), _median_seconds(full)


def _head_accuracy(backbone, dataset: str) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from labkit.data import get_bundled_dataset, load_image_folder
    from tools.probe import extract_pooled_features

    def arrays(split):
        ds = load_image_folder(get_bundled_dataset(dataset) / split, transform=backbone.eval_transform, verbose=False)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        y = np.array([ds[i][1] for i in range(len(ds))])
        return extract_pooled_features(backbone.model, x, mean=[0.0] * 3, std=[1.0] * 3), y  # x is normalized

    (ftr, ytr), (fva, yva) = arrays("train"), arrays("val")
    scaler = StandardScaler().fit(ftr)
    clf = LogisticRegression(C=0.1, max_iter=3000).fit(scaler.transform(ftr), ytr)
    return float(clf.score(scaler.transform(fva), yva))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 112, 128, 160, 224])
    p.add_argument("--datasets", nargs="+", default=["objects", "cells"])
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from labkit.models import load_backbone

    print("| input px | frozen forward s/batch | full fwd+bwd s/batch | " + " | ".join(
        f"{d} frozen-feature head acc" for d in a.datasets) + " |")
    print("|---:|---:|---:|" + "---:|" * len(a.datasets))
    for size in a.sizes:
        bb = load_backbone("efficientnet_lite0", input_size=size, verbose=False)
        frozen, full = _cost(bb.model, size)
        accs = [_head_accuracy(bb, d) for d in a.datasets]
        print(f"| {size} | {frozen:.3f} | {full:.3f} | " + " | ".join(f"{v:.3f}" for v in accs) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
