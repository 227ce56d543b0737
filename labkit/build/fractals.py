"""Formula-driven pretraining images: IFS fractals (FractalDB-style) on dead-leaves backdrops.

A *fractal class* is an iterated function system (IFS): 2-4 contractive affine maps of the
plane, drawn from a seed with the singular-value ("sigma-factor") rule of Anderson and
Farrell (WACV 2022), so the attractors are neither dust nor blobs. One image of a class is
rendered with the chaos game: the class's maps, jittered a little (the instance variation
of FractalDB), at a random size, place and flip, in one or two random colours, on a
backdrop. The label is the IFS (Kataoka et al., ACCV 2020).

Backdrops are *dead leaves* (Baradad et al., NeurIPS 2021): opaque discs and rectangles of
random colour whose radii follow a power law (density ~ r^-3), stacked until the image is
covered. Their statistics resemble natural images' (a roughly 1/f amplitude spectrum, sharp
occlusion edges, flat colour regions), which is what the first layer learns its edge and
colour-blob detectors from.

Every image is a function of ``(seed, index)``: the same call gives the same pixels.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = [
    "sample_ifs",
    "make_ifs_classes",
    "render_fractal_points",
    "render_dead_leaves",
    "random_colours",
    "random_colour",
    "render_fractal_image",
    "render_fractal_images",
]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([abs(int(k)) for k in key]))


def _rotation(t: float) -> np.ndarray:
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s], [s, c]])


def sample_ifs(rng: np.random.Generator, *, maps: int | None = None) -> np.ndarray:
    """One IFS: ``maps`` x 6 parameters ``(a, b, c, d, e, f)`` of ``x' = [[a, b], [c, d]] x + (e, f)``.

    Singular values follow the sigma-factor rule: ``sum(s1 + 2 * s2)`` over the maps lies in
    ``[(5 + N) / 2, (6 + N) / 2]`` for ``N`` maps, and every ``s1 < 1`` (contractive).

    Example:
        >>> sample_ifs(np.random.default_rng(0), maps=3).shape
        (3, 6)
    """
    n = int(rng.integers(2, 5)) if maps is None else maps
    lo, hi = (5 + n) / 2, (6 + n) / 2
    while True:
        s1 = rng.uniform(0.2, 1.0, n)
        s2 = rng.uniform(0.0, 1.0, n) * s1
        alpha = rng.uniform(lo, hi)
        k = alpha / (s1 + 2 * s2).sum()
        s1, s2 = s1 * k, s2 * k
        if s1.max() < 0.99:
            break
    out = np.empty((n, 6))
    for i in range(n):
        sign = 1.0 if rng.random() < 0.5 else -1.0
        a = _rotation(rng.uniform(0, 2 * math.pi)) @ np.diag([s1[i], sign * s2[i]]) @ _rotation(rng.uniform(0, 2 * math.pi))
        out[i, :4] = a.ravel()
        out[i, 4:] = rng.uniform(-1, 1, 2)
    return out


def render_fractal_points(ifs: np.ndarray, rng: np.random.Generator, *, chains: int = 1024,
                          steps: int = 24, burn: int = 8) -> np.ndarray:
    """Points of the IFS attractor by the chaos game (``chains`` walkers in parallel), K x 2."""
    a = ifs[:, :4].reshape(-1, 2, 2)
    t = ifs[:, 4:]
    det = np.abs(np.linalg.det(a))
    p = (det + 0.02) / (det + 0.02).sum()
    x = rng.uniform(-1, 1, (chains, 2))
    out = np.empty((steps, chains, 2))
    choice = rng.choice(len(ifs), size=(burn + steps, chains), p=p)
    for s in range(burn + steps):
        k = choice[s]
        x = np.einsum("nij,nj->ni", a[k], x) + t[k]
        if s >= burn:
            out[s - burn] = x
    return out.reshape(-1, 2)


def make_ifs_classes(n: int, *, seed: int = 0, min_fill: float = 0.06, size: int = 48) -> list[np.ndarray]:
    """``n`` IFS classes, each kept only if its attractor covers at least ``min_fill`` of its box.

    Example:
        >>> len(make_ifs_classes(3))
        3
    """
    out, i = [], 0
    while len(out) < n:
        rng = _rng(9101, seed, i)
        i += 1
        ifs = sample_ifs(rng)
        pts = render_fractal_points(ifs, rng, chains=512, steps=16)
        if not np.isfinite(pts).all():
            continue
        lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
        span = (hi - lo).max()
        if span < 1e-3:
            continue
        q = np.clip(((pts - lo) / span * (size - 1)).astype(int), 0, size - 1)
        fill = len(np.unique(q[:, 0] * size + q[:, 1])) / size ** 2
        if fill >= min_fill:
            out.append(ifs)
    return out


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB (all in [0, 1]), shape N x 3."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]


def random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random RGB colours in [0, 1] (uniform hue and saturation, value at least 0.15), n x 3."""
    return _hsv_to_rgb(rng.random(n), rng.uniform(0.0, 1.0, n), rng.uniform(0.15, 1.0, n))


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """One random RGB colour, as :func:`random_colours`."""
    return random_colours(rng, 1)[0]


def render_dead_leaves(rng: np.random.Generator, size: int, *, rmin: float = 3.0, rmax: float | None = None,
                       shapes: int = 160, supersample: int = 2) -> np.ndarray:
    """A dead-leaves image, H x W x 3 floats in [0, 1]: discs and boxes with radius density ~ r^-3.

    Leaves fall one on top of another (the later on top) in random colours, drawn at
    ``supersample`` x the size and box-filtered down, so their edges are sharp but not jagged.

    Example:
        >>> render_dead_leaves(np.random.default_rng(0), 32).shape
        (32, 32, 3)
    """
    from PIL import Image, ImageDraw

    rmax = size / 2.0 if rmax is None else rmax
    k = supersample
    u = rng.random(shapes)
    r = 1.0 / np.sqrt(u / rmax ** 2 + (1 - u) / rmin ** 2)  # inverse CDF of p(r) ~ r^-3
    cx, cy = rng.uniform(0, size, shapes), rng.uniform(0, size, shapes)
    rect = rng.random(shapes) < 0.3
    t = rng.uniform(0, math.pi, shapes)
    aspect = rng.uniform(0.3, 1.0, shapes)
    colours = (random_colours(rng, shapes + 1) * 255 + 0.5).astype(np.uint8)
    im = Image.new("RGB", (size * k, size * k), tuple(int(c) for c in colours[-1]))
    draw = ImageDraw.Draw(im)
    for j in range(shapes):
        x, y, rr, fill = cx[j] * k, cy[j] * k, r[j] * k, tuple(int(c) for c in colours[j])
        if rect[j]:
            c, s_ = math.cos(t[j]), math.sin(t[j])
            pts = [(x + a * rr * c - b * rr * aspect[j] * s_, y + a * rr * s_ + b * rr * aspect[j] * c)
                   for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            draw.polygon(pts, fill=fill)
        else:
            draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=fill)
    if k > 1:
        im = im.resize((size, size), Image.BOX)
    return np.asarray(im, dtype=np.float64) / 255.0


def _splat(pts: np.ndarray, size: int, ss: int = 2) -> np.ndarray:
    """Point density on a size x size grid (supersampled ss x, box-filtered down), in [0, 1]."""
    big = size * ss
    q = np.floor(pts * ss).astype(np.int64)
    ok = (q[:, 0] >= 0) & (q[:, 0] < big) & (q[:, 1] >= 0) & (q[:, 1] < big)
    q = q[ok]
    hist = np.bincount(q[:, 1] * big + q[:, 0], minlength=big * big).reshape(big, big) > 0
    return hist.reshape(size, ss, size, ss).mean(axis=(1, 3))


def render_fractal_image(ifs: np.ndarray, seed: int, *, index: int = 0, size: int = 72, jitter: float = 0.05,
                         backdrop: str = "dead_leaves") -> np.ndarray:
    """One image of an IFS class: jittered maps, random size, place, flip and colours, on a backdrop.

    Returns H x W x 3 uint8.

    Example:
        >>> ifs = make_ifs_classes(1)[0]
        >>> render_fractal_image(ifs, 0).shape
        (72, 72, 3)
    """
    rng = _rng(9202, seed, index)
    params = ifs + rng.normal(0, jitter, ifs.shape) * np.r_[np.ones(4), np.ones(2)]
    pts = render_fractal_points(params, rng)
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) < 16:
        pts = render_fractal_points(ifs, rng)
    lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
    span = max((hi - lo).max(), 1e-6)
    if rng.random() < 0.5:
        pts[:, 0] = -pts[:, 0]
        lo[0], hi[0] = -hi[0], -lo[0]
    extent = rng.uniform(0.45, 0.9) * size
    centre = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
    xy = (pts - (lo + hi) / 2) / span * extent + centre
    if backdrop == "dead_leaves":
        img = render_dead_leaves(rng, size)
        contrast = rng.uniform(0.2, 1.0)  # the fractal stays the most salient thing in the image
        img = contrast * img + (1 - contrast) * img.mean(axis=(0, 1))
    elif backdrop == "flat":
        img = np.empty((size, size, 3))
        img[:] = random_colour(rng)
    else:
        raise ValueError(f"backdrop must be 'dead_leaves' or 'flat', got {backdrop!r}.")
    alpha = _splat(xy, size)[..., None]
    c1, c2 = random_colour(rng), random_colour(rng)
    if rng.random() < 0.5:  # a colour gradient across the fractal
        t = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
        g = np.clip(0.5 + xx * math.cos(t) + yy * math.sin(t), 0, 1)[..., None]
        fg = c1 * (1 - g) + c2 * g
    else:
        fg = np.broadcast_to(c1, (size, size, 3))
    out = img * (1 - alpha) + fg * alpha
    out = out + rng.normal(0, rng.uniform(0.0, 0.03), out.shape)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_fractal_images(n: int, classes: list[np.ndarray], *, seed: int = 0, size: int = 72, start: int = 0,
                          backdrop: str = "dead_leaves", progress: Callable[[int], None] | None = None):
    """Images ``start .. start+n-1`` (class ``index % len(classes)`` shuffled by seed) as uint8 N x 3 x H x W and labels.

    Example:
        >>> x, y = render_fractal_images(4, make_ifs_classes(2))
        >>> tuple(x.shape), y.tolist()
        ((4, 3, 72, 72), [1, 0, 0, 1])
    """
    import torch

    if n < 1:
        raise ValueError(f"render_fractal_images needs n >= 1 images, got n={n}.")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    for i in range(n):
        k = start + i
        labels[i] = int(_rng(9303, seed, k).integers(len(classes)))
        images[i] = render_fractal_image(classes[labels[i]], seed, index=k, size=size, backdrop=backdrop)
        if progress is not None:
            progress(i)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
