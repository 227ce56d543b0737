"""Seeding: one call so that a lesson reruns the same."""
from __future__ import annotations

import os
import random

import torch

__all__ = ["seed_everything"]


def seed_everything(seed: int = 0, *, deterministic: bool = False) -> int:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) so a lesson reruns the same.

    Args:
        seed: the seed.
        deterministic: also ask PyTorch for deterministic algorithms (slower on GPU;
            operations without a deterministic version warn instead of failing).

    Example:
        >>> seed_everything(0)
        0
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__} {seed!r}. Fix: seed_everything(0).")
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)  # affects child processes only
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed
