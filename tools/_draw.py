"""Drawing primitives shared by the procedural image generators (``tools.synth``, ``tools.make_slides``)."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

__all__ = ["keyed_rng", "smooth_noise", "grid", "blob"]


def keyed_rng(*key: int) -> np.random.Generator:
    """A numpy generator keyed by integers: the same key gives the same stream."""
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Noise that varies over ``cells`` blobs across the image (bicubic upsampling), about N(0,1)."""
    out = np.empty((size, size, channels), dtype=np.float32)
    coarse = rng.standard_normal((cells, cells, channels)).astype(np.float32)
    for c in range(channels):
        im = Image.fromarray(coarse[:, :, c], mode="F").resize((size, size), Image.BICUBIC)
        out[:, :, c] = np.asarray(im, dtype=np.float32)
    return out


def grid(size: int):
    """Pixel-centre coordinate grids ``(xx, yy)`` of a size x size image, float32."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


def blob(xx, yy, cx, cy, rx, ry, angle, wobble, phase, sharp):
    """A soft-edged wobbly ellipse in [0, 1] on the grid ``(xx, yy)``: a cell body or a nucleus."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    rho = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    theta = np.arctan2(v, u)
    edge = 1.0 + sum(w * np.cos((k + 2) * theta + p) for k, (w, p) in enumerate(zip(wobble, phase)))
    return 1.0 / (1.0 + np.exp((rho - edge) * sharp))
