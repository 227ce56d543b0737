"""Settings for every test, the unit tests and the notebooks nbval runs alike.

Set before anything imports labkit, torch or matplotlib; nbval's kernels inherit them.
"""
import os

os.environ.setdefault("LABKIT_OFFLINE", "1")  # the bundled micro-backbone, never a download
os.environ.setdefault("LABKIT_PROGRESS", "0")  # no progress bars in test output
os.environ.setdefault("MPLBACKEND", "Agg")
# The suite runs as two pytest-xdist workers on a 2-core machine (see the README's test command):
# one OpenMP thread each keeps the workers from spinning against each other, and small models
# train faster on one thread anyway. A learner's own runs are not affected.
os.environ.setdefault("OMP_NUM_THREADS", "1")
