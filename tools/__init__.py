"""Course-building tools, for maintainers: not part of what the lessons teach, not in the labkit wheel.

Run each from the checkout's root as ``python -m tools.<name>`` (``--help`` lists its options;
``tools/README.md`` says what each writes and how long it takes):

* :mod:`tools.make_datasets`: regenerate every bundled dataset in ``datasets/`` byte for byte;
  it calls :mod:`tools.synth` (``objects`` and ``cells``, drawn with :mod:`tools._draw`) and
  :mod:`tools.make_slides` (lesson 05's ``slides``).
* :mod:`tools.probe`: the real-image check of the offline backbone's features.
* :mod:`tools.rehearse`: run every solution notebook the Colab way (torchvision, 224 px, no network).
* :mod:`tools.bench`: the frozen-vs-full timing benchmark.

The tools import labkit; nothing in labkit imports them (``tests/test_tools.py`` checks it).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["CHECKOUT", "CHECKOUT_DATASETS", "TOOLS"]

#: The checkout that holds this folder (``tools/`` is never installed, so it is always a checkout).
CHECKOUT = Path(__file__).resolve().parents[1]
#: The checkout's ``datasets/`` folder, where the dataset tools write by default.
CHECKOUT_DATASETS = CHECKOUT / "datasets"
#: Every tool run as ``python -m tools.<name>``, in the order ``tools/README.md`` lists them.
TOOLS = ("make_datasets", "synth", "make_slides", "probe", "rehearse", "bench")
