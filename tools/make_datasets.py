"""Regenerate the bundled datasets in ``datasets/`` byte for byte: ``python -m tools.make_datasets``.

``objects`` and ``cells`` come from :mod:`tools.synth`, ``slides`` from :mod:`tools.make_slides`.
With no names, all three are written under ``--root`` (default: the checkout's ``datasets/``).
The same numpy, Pillow and zlib give the same bytes, so regenerating into a temporary folder and
comparing (``diff -r /tmp/ds datasets``) checks the generators::

    python -m tools.make_datasets --root /tmp/ds && diff -r /tmp/ds datasets
"""
from __future__ import annotations

import argparse
import sys

from tools import CHECKOUT_DATASETS, make_slides, synth

__all__ = ["NAMES", "main"]

#: Every bundled dataset, in the order they are written.
NAMES = tuple(synth.DATASETS) + ("slides",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.make_datasets",
                                     description="Regenerate the bundled datasets in datasets/ byte for byte.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"datasets to write (default: all of {', '.join(NAMES)})")
    parser.add_argument("--root", default=str(CHECKOUT_DATASETS),
                        help="folder that holds the datasets (default: the checkout's datasets/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the named bundled datasets (default: all) under ``--root``; return the exit status.

    Args:
        argv: command-line arguments, e.g. ``["--root", "/tmp/ds", "cells"]`` (default: ``sys.argv[1:]``).

    Example:
        >>> main(["--root", "/tmp/ds", "cells"])  # doctest: +SKIP
        wrote /tmp/ds/cells: 240 images, 0.91 MB
        0
    """
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; expected some of {', '.join(NAMES)}")
    root = ["--root", args.root]
    drawn = [n for n in args.names if n != "slides"]
    status = synth.datasets_main(root + drawn) if drawn or not args.names else 0
    if status == 0 and ("slides" in args.names or not args.names):
        status = make_slides.main(root)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
