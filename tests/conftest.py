"""Test-wide settings: offline, headless, quiet, single-threaded enough for 2 cores."""
import os

# Set before anything imports labkit, torch or matplotlib. nbval kernels inherit them.
os.environ.setdefault("LABKIT_OFFLINE", "1")
os.environ.setdefault("LABKIT_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
