"""Turn a tensor or array into an image matplotlib can show (shared by the plotting helpers)."""
from __future__ import annotations

import torch

__all__ = ["displayable"]


def displayable(image, mean=None, std=None):
    """An (H, W, 3) or (H, W) float array in [0, 1] from a tensor (C, H, W) or an array (H, W, C)."""
    import numpy as np

    if isinstance(image, torch.Tensor):
        img = image.detach().cpu().float()
        if img.dim() == 3 and img.shape[0] in (1, 3):
            if mean is not None and std is not None:
                img = img * torch.as_tensor(std).view(-1, 1, 1) + torch.as_tensor(mean).view(-1, 1, 1)
            img = img.permute(1, 2, 0)
        arr = img.numpy()
    else:
        arr = np.asarray(image).astype(np.float64)
        if mean is not None and std is not None:
            arr = arr * np.asarray(std) + np.asarray(mean)
    if arr.ndim not in (2, 3):
        raise ValueError(f"plot_cam: expected an image (C, H, W) tensor or (H, W[, C]) array, got shape {arr.shape}.")
    if arr.max() > 1.5:  # uint8-style values
        arr = arr / 255.0
    return np.clip(arr.squeeze(), 0, 1)
