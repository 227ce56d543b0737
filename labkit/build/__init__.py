"""Course-building tools, for maintainers: not part of what the lessons teach.

* :mod:`labkit.build.synth`: the procedural images of the bundled ``objects`` and ``cells``
  datasets (``python -m labkit make-datasets``).
* :mod:`labkit.build.medical`: the bundled ``slides`` dataset of lesson 05.
* :mod:`labkit.build.probe`: the real-image check of the offline backbone's features
  (``python -m labkit probe``).
* :mod:`labkit.build.rehearse`: the Colab rehearsal (``python -m labkit rehearse``).
* :mod:`labkit.build.bench`: the frozen-vs-full timing benchmark (``python -m labkit bench``).

Nothing here is imported by ``import labkit``.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["CHECKOUT_DATASETS", "make_datasets_main"]

#: The checkout's ``datasets/`` folder, where ``python -m labkit make-datasets`` writes by default.
CHECKOUT_DATASETS = Path(__file__).resolve().parents[2] / "datasets"


def make_datasets_main(argv: list[str]) -> int:
    """``python -m labkit make-datasets [--root DIR] [NAME ...]``: regenerate the bundled datasets.

    ``objects`` and ``cells`` come from :mod:`labkit.build.synth`, ``slides`` from
    :mod:`labkit.build.medical`; with no names, all three are written under ``--root``
    (default: the checkout's ``datasets/``).
    """
    from labkit.build import medical, synth

    argv = list(argv)
    if {"-h", "--help"} & set(argv):
        return synth.datasets_main(argv)
    root: list[str] = []
    rest = []
    it = iter(argv)
    for a in it:
        if a == "--root":
            root = ["--root", next(it, "")]
        elif a.startswith("--root="):
            root = ["--root", a.split("=", 1)[1]]
        else:
            rest.append(a)
    root = root or ["--root", str(CHECKOUT_DATASETS)]
    slides = "slides" in rest or not rest
    names = [n for n in rest if n != "slides"]
    status = synth.datasets_main(root + names) if names or not rest else 0
    if status == 0 and slides:
        status = medical.main(root)
    return status
