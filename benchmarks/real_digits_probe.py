"""Do the micro-backbone's features carry over to real images? A linear probe on scikit-learn's digits.

For each weights file: scikit-learn's 1,797 handwritten digits upsampled to 64 px, 10 labelled
images per class (10 label draws), a logistic-regression probe on frozen pooled features of
the pretrained network, of the same network at random init, and on the raw pixels; then
conv1's Gabor-likeness against its phase-randomized surrogates and blurred white noise.

    python benchmarks/real_digits_probe.py                              # the bundled weights
    python benchmarks/real_digits_probe.py --weights-file a.pt b.pt     # compare files
"""
from __future__ import annotations

import argparse
import sys

import torch

from labkit.build.probe import format_report, measure_digits_probe, measure_filter_controls
from labkit.models import load_backbone


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights-file", nargs="*", default=[None], help="micro-backbone .pt files (default: bundled)")
    p.add_argument("--per-class", type=int, default=10, help="labelled images per class")
    p.add_argument("--draws", type=int, default=10, help="label draws (seeds 0..N-1)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    for f in a.weights_file:
        probe = measure_digits_probe(f, per_class=a.per_class, seeds=range(a.draws))
        weight = load_backbone("micro_resnet", weights_file=f, verbose=False).model.conv1.weight
        print(format_report(probe, measure_filter_controls(weight), title=f"weights: {f or 'bundled micro_resnet'}"))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
