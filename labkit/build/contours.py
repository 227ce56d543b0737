"""Formula-driven contour images: each class is a fixed set of smooth strokes (outlines, no fill).

Kataoka et al. (CVPR 2022, "Replacing labeled real-image datasets with auto-generated
contours") found that what makes formula-driven pretraining work is object *contours*. Here a
*contour class* is 1-3 strokes, each a chain of cubic Bezier segments through control points
drawn from a seed (some strokes closed into loops). One image of a class jitters every control
point a little (the instance variation), then draws the strokes at a random width, size,
place, tilt and shear, in one colour that contrasts with a backdrop (a flat colour, a smooth
gradient, or a faint dead-leaves field).

Every image is a function of ``(seed, index)``: the same call gives the same pixels.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from labkit.build.fractals import random_colour, render_dead_leaves

__all__ = ["make_contour_classes", "render_contour_image", "render_contour_set_image", "render_contour_images"]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([abs(int(k)) for k in key]))


def make_contour_classes(n: int, *, seed: int = 0) -> list[list[tuple[np.ndarray, bool]]]:
    """``n`` contour classes; each is a list of strokes ``(control points K x 2 in [-1, 1], closed)``.

    Example:
        >>> classes = make_contour_classes(2)
        >>> len(classes), classes[0][0][0].shape[1]
        (2, 2)
    """
    if n < 1:
        raise ValueError(f"make_contour_classes needs n >= 1 classes, got n={n}.")
    out = []
    for k in range(n):
        rng = _rng(9401, seed, k)
        strokes = []
        for _ in range(int(rng.integers(1, 4))):
            closed = bool(rng.random() < 0.35)
            points = int(rng.integers(3, 6))
            if closed:  # a wobbly loop around a random centre
                centre = rng.uniform(-0.4, 0.4, 2)
                angles = np.sort(rng.uniform(0, 2 * math.pi, points))
                radii = rng.uniform(0.2, 0.6, points)
                pts = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
            else:  # an open stroke: a random walk with bounded turns
                pts = [rng.uniform(-0.7, 0.7, 2)]
                heading = rng.uniform(0, 2 * math.pi)
                for _ in range(points - 1):
                    heading += rng.uniform(-2.2, 2.2)
                    step = rng.uniform(0.3, 0.8)
                    pts.append(np.clip(pts[-1] + step * np.array([math.cos(heading), math.sin(heading)]), -1, 1))
                pts = np.array(pts)
            strokes.append((pts, closed))
        every = np.concatenate([pts for pts, _ in strokes])
        middle = (every.max(0) + every.min(0)) / 2
        half = max(float((every.max(0) - every.min(0)).max()) / 2, 1e-3)
        out.append([((pts - middle) / half, closed) for pts, closed in strokes])  # each class spans [-1, 1]
    return out


def _smooth_path(pts: np.ndarray, closed: bool, samples: int = 12) -> np.ndarray:
    """A Catmull-Rom spline through ``pts`` (a smooth curve), ``samples`` points per segment."""
    p = np.concatenate([pts[-1:], pts, pts[:2]]) if closed else np.concatenate([pts[:1], pts, pts[-1:]])
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    segments = len(pts) if closed else len(pts) - 1
    out = []
    for i in range(segments):
        p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append((pts[:1] if closed else pts[-1:]))
    return np.concatenate(out)


def _pose(rng: np.random.Generator, size: int, *, scale: tuple[float, float] = (0.28, 0.46),
          middle: np.ndarray | None = None, spread: float = 0.1, mirror: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A random tilt, shear, size, place and mirror: the affine map and centre of one stroke set."""
    tilt = rng.uniform(-0.5, 0.5)
    shear = rng.uniform(-0.25, 0.25)
    scale = rng.uniform(*scale) * size * rng.uniform(0.85, 1.15, 2)
    c, s = math.cos(tilt), math.sin(tilt)
    affine = np.array([[c, -s], [s, c]]) @ np.array([[1, shear], [0, 1]]) * scale[None, :]
    centre = (size / 2 if middle is None else middle) + rng.uniform(-spread, spread, 2) * size
    if rng.random() < mirror:  # drawn at any probability: the random stream stays the same
        affine[:, 0] = -affine[:, 0]  # mirror
    return affine, centre


def _backdrop_and_ink(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A backdrop (flat, a smooth gradient or a faint dead-leaves field) and an ink colour that contrasts with it."""
    kind = rng.random()
    if kind < 0.45:  # flat
        back = np.empty((size, size, 3))
        back[:] = random_colour(rng)
    elif kind < 0.75:  # a smooth gradient between two colours
        t = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
        g = np.clip(0.5 + xx * math.cos(t) + yy * math.sin(t), 0, 1)[..., None]
        back = random_colour(rng) * (1 - g) + random_colour(rng) * g
    else:  # a faint dead-leaves field
        back = render_dead_leaves(rng, size)
        back = 0.3 * back + 0.7 * back.mean(axis=(0, 1))
    ink = random_colour(rng)
    if abs(ink.mean() - back.mean()) < 0.3:  # keep the strokes visible: push the ink away from the backdrop
        ink = np.clip(ink + (0.45 if back.mean() < 0.5 else -0.45), 0, 1)
    return back, ink


_SUPERSAMPLING = 2


def _draw_strokes(draw, strokes: list, rng: np.random.Generator, affine: np.ndarray, centre: np.ndarray,
                  size: int, jitter: float, thickness: float = 1.0) -> None:
    """Jitter a stroke set's control points and draw it (random width, round caps) on a supersampled mask."""
    k = _SUPERSAMPLING
    width = rng.uniform(0.05, 0.12) * size * k * thickness
    for pts, closed in strokes:
        p = pts + rng.normal(0, jitter, pts.shape)
        path = _smooth_path(p, closed) @ affine.T + centre
        xy = [(float(x) * k, float(y) * k) for x, y in path]
        draw.line(xy, fill=255, width=max(1, int(round(width))), joint="curve")
        r = width / 2
        for x, y in (xy[0], xy[-1]):  # round caps
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)


def _ink_on_backdrop(mask, back: np.ndarray, ink: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Downsample the mask (sometimes blurred), paint the ink through it, add a little noise: H x W x 3 uint8."""
    from PIL import Image, ImageFilter

    mask = mask.resize((size, size), Image.BOX)
    if rng.random() < 0.4:
        mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    alpha = np.asarray(mask, dtype=np.float64)[..., None] / 255.0
    out = back * (1 - alpha) + ink * alpha
    out = out + rng.normal(0, rng.uniform(0.0, 0.03), out.shape)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_contour_image(strokes: list, seed: int, *, index: int = 0, size: int = 72, jitter: float = 0.07,
                         mirror: float = 0.5) -> np.ndarray:
    """One image of a contour class: jittered strokes at a random width, size, place and tilt. H x W x 3 uint8.

    Example:
        >>> render_contour_image(make_contour_classes(1)[0], 0).shape
        (72, 72, 3)
    """
    from PIL import Image, ImageDraw

    rng = _rng(9402, seed, index)
    affine, centre = _pose(rng, size, mirror=mirror)
    back, ink = _backdrop_and_ink(rng, size)
    mask = Image.new("L", (size * _SUPERSAMPLING, size * _SUPERSAMPLING), 0)
    _draw_strokes(ImageDraw.Draw(mask), strokes, rng, affine, centre, size, jitter)
    return _ink_on_backdrop(mask, back, ink, rng, size)


def render_contour_set_image(stroke_sets: list, seed: int, *, index: int = 0, size: int = 72,
                             jitter: float = 0.07, mirror: float = 0.5) -> np.ndarray:
    """One image of several contour classes side by side (multi-instance), each smaller. H x W x 3 uint8.

    The k classes sit at k points evenly spaced on a circle around the centre (a random turn),
    each with its own tilt, size, mirror and width, in one ink on one backdrop.

    Example:
        >>> render_contour_set_image(make_contour_classes(2), 0).shape
        (72, 72, 3)
    """
    from PIL import Image, ImageDraw

    if len(stroke_sets) < 2:
        raise ValueError(f"render_contour_set_image draws 2 or more contour classes, got {len(stroke_sets)}; "
                         f"use render_contour_image for one.")
    rng = _rng(9404, seed, index)
    back, ink = _backdrop_and_ink(rng, size)
    mask = Image.new("L", (size * _SUPERSAMPLING, size * _SUPERSAMPLING), 0)
    draw = ImageDraw.Draw(mask)
    turn = rng.uniform(0, 2 * math.pi)
    for i, strokes in enumerate(stroke_sets):
        a = turn + 2 * math.pi * i / len(stroke_sets)
        middle = size / 2 + 0.24 * size * np.array([math.cos(a), math.sin(a)])
        affine, centre = _pose(rng, size, scale=(0.14, 0.22), middle=middle, spread=0.03, mirror=mirror)
        _draw_strokes(draw, strokes, rng, affine, centre, size, jitter, thickness=0.6)  # thinner, as they are smaller
    return _ink_on_backdrop(mask, back, ink, rng, size)


def render_contour_images(n: int, classes: list, *, seed: int = 0, size: int = 72, start: int = 0,
                          jitter: float = 0.07, instances: int = 1, mirror: float = 0.5,
                          progress: Callable[[int], None] | None = None):
    """Images ``start .. start+n-1`` (class drawn by seed) as uint8 N x 3 x H x W and their labels.

    With ``instances`` k > 1 each image shows k different classes (:func:`render_contour_set_image`)
    and the labels are N x k.

    Example:
        >>> x, y = render_contour_images(3, make_contour_classes(2))
        >>> tuple(x.shape), len(y)
        ((3, 3, 72, 72), 3)
    """
    import torch

    if n < 1:
        raise ValueError(f"render_contour_images needs n >= 1 images, got n={n}.")
    if isinstance(instances, bool) or not isinstance(instances, int) or not 1 <= instances <= len(classes):
        raise ValueError(f"instances must be an int from 1 to the number of classes ({len(classes)}), got {instances!r}.")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty(n if instances == 1 else (n, instances), dtype=np.int64)
    for i in range(n):
        j = start + i
        if instances == 1:
            labels[i] = int(_rng(9403, seed, j).integers(len(classes)))
            images[i] = render_contour_image(classes[labels[i]], seed, index=j, size=size, jitter=jitter, mirror=mirror)
        else:
            labels[i] = _rng(9405, seed, j).choice(len(classes), instances, replace=False)
            images[i] = render_contour_set_image([classes[c] for c in labels[i]], seed, index=j, size=size,
                                                 jitter=jitter, mirror=mirror)
        if progress is not None:
            progress(i)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
