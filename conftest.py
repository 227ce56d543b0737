"""Settings for every test, the unit tests and the notebooks nbval runs alike.

Set before anything imports labkit, torch or matplotlib; nbval's kernels inherit them.
"""
import os

os.environ.setdefault("LABKIT_OFFLINE", "1")  # the bundled micro-backbone, never a download
os.environ.setdefault("LABKIT_PROGRESS", "0")  # no progress bars in test output
os.environ.setdefault("MPLBACKEND", "Agg")
