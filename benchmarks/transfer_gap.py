"""Does the bundled micro-backbone really transfer? Frozen backbone + new head vs the same net from scratch.

Both runs see the same training images (at most ``--per-class`` per class of a bundled
dataset), the same augmentation and the same number of epochs; both are scored on the
dataset's full val split. Prints both accuracies and the gap in points.

    python benchmarks/transfer_gap.py                      # the figures stored with the weights
    python benchmarks/transfer_gap.py --dataset cells      # the distant domain
"""
from __future__ import annotations

import argparse
import sys

import torch

from labkit.build.pretrain import measure_transfer_gap


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="objects", help="bundled dataset: objects (near) or cells (distant)")
    p.add_argument("--per-class", type=int, default=30, help="training images per class")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1, as the pretraining script measures)")
    p.add_argument("--weights-file", default=None, help="another micro-backbone weights file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    r = measure_transfer_gap(dataset=a.dataset, per_class=a.per_class, epochs=a.epochs, seed=a.seed,
                             weights_file=a.weights_file)
    print(f"dataset {a.dataset}: {a.per_class} training images per class, {a.epochs} epochs, full val split")
    print(f"frozen pretrained micro_resnet + new head: {100 * r['frozen']:5.1f}%  ({r['seconds']['frozen']} s)")
    print(f"same architecture trained from scratch:    {100 * r['scratch']:5.1f}%  ({r['seconds']['scratch']} s)")
    print(f"gap: {r['gap_points']:+.1f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
