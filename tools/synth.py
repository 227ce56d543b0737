"""Procedural images: the bundled datasets (and the scenes the retired micro-backbone was pretrained on).

Everything here is drawn from a seed, so the same call gives the same pixels. Three families:

* pretraining scenes (:func:`render_scene`): a smooth, natural-looking background, a few
  distractor shapes, one *glyph* (a fixed arrangement of 2-3 simple parts, 64 classes, a
  synthetic stand-in for ImageNet's object classes) whose main part carries an oriented stripe
  texture, and sometimes an occluder in front. Each scene is labelled by how it was made: the
  glyph class, the stripe orientation and the main part's hue.
* everyday objects (:func:`render_object`), the *near* bundled dataset ``objects``.
* fluorescence-microscopy-like cells (:func:`render_cells`), the *distant* dataset ``cells``.

``python -m tools.make_datasets`` rewrites ``datasets/`` byte for byte (same numpy, Pillow
and zlib); ``python -m tools.synth`` writes ``objects`` and ``cells`` alone.
"""
from __future__ import annotations

import argparse
import colorsys
import math
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tools import CHECKOUT_DATASETS
from tools._draw import blob, grid, keyed_rng, smooth_noise

__all__ = [
    "SHAPES",
    "PARTS",
    "N_GLYPHS",
    "ORIENTATIONS",
    "HUES",
    "OBJECT_CLASSES",
    "CELL_CLASSES",
    "DATASETS",
    "glyph_parts",
    "render_scene",
    "render_scenes",
    "render_object",
    "render_cells",
    "make_dataset",
    "make_datasets",
    "datasets_main",
]

#: Simple shapes (distractors and occluders in every scene).
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "bar")
#: Part shapes the pretraining glyphs are built from.
PARTS = SHAPES + ("ellipse", "dome", "trapezoid")
#: Number of glyph classes of the pretraining task (each a fixed arrangement of 2 or 3 parts).
N_GLYPHS = 64
#: Stripe orientations of the pretraining task, in degrees (each label covers +-15 degrees).
ORIENTATIONS = (0, 30, 60, 90, 120, 150)
#: Hue bins of the pretraining task, by name (centres 0, 45, ..., 315 degrees of HSV hue).
HUES = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "magenta")

#: Classes of the near dataset ``objects``.
OBJECT_CLASSES = ("ball", "car", "fish", "flower", "house", "mug", "mushroom", "tree")
#: Classes of the distant dataset ``cells``.
CELL_CLASSES = ("dividing", "elongated", "fragmented", "round")

_SS = 3  # supersampling factor for anti-aliased shape masks


# --------------------------------------------------------------------------- basics
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A natural-looking backdrop: soft colour field, sometimes a horizon, 1/f-like detail."""
    base = _hsv(rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.35, 0.9))
    img = np.broadcast_to(base, (size, size, 3)).copy()
    if rng.random() < 0.5:  # ground and sky
        ground = _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.7))
        yy = np.arange(size, dtype=np.float32)[:, None]
        horizon = rng.uniform(0.35, 0.8) * size + rng.uniform(-0.3, 0.3) * (np.arange(size) - size / 2)
        w = 1.0 / (1.0 + np.exp(-(yy - horizon[None, :]) / rng.uniform(0.7, 3.0)))
        img = img * (1 - w[:, :, None]) + ground * w[:, :, None]
    amp = rng.uniform(0.03, 0.12)
    for cells, a in ((3, 1.0), (6, 0.5), (12, 0.25), (24, 0.12)):
        n = smooth_noise(rng, size, cells, 1)
        tint = smooth_noise(rng, size, cells, 3) * 0.3
        img += amp * a * (n + tint)
    return img


def _polygon(n: int, radius: float, angle: float, inner: float | None = None) -> list[tuple[float, float]]:
    pts = []
    k = 2 * n if inner else n
    for i in range(k):
        r = radius * (inner if inner and i % 2 else 1.0)
        t = angle + 2 * math.pi * i / k
        pts.append((r * math.cos(t), r * math.sin(t)))
    return pts


def _rotate(pts, angle: float):
    c, s = math.cos(angle), math.sin(angle)
    return [(x * c - y * s, x * s + y * c) for x, y in pts]


class _Canvas:
    """A supersampled greyscale mask that shapes are drawn into, read back anti-aliased."""

    def __init__(self, size: int):
        self.size = size
        self.im = Image.new("L", (size * _SS, size * _SS), 0)
        self.draw = ImageDraw.Draw(self.im)

    def _xy(self, pts, cx, cy):
        return [((cx + x) * _SS, (cy + y) * _SS) for x, y in pts]

    def poly(self, pts, cx, cy, fill=255):
        self.draw.polygon(self._xy(pts, cx, cy), fill=fill)

    def ellipse(self, cx, cy, rx, ry, fill=255, angle=0.0):
        if angle == 0.0:
            self.draw.ellipse([(cx - rx) * _SS, (cy - ry) * _SS, (cx + rx) * _SS, (cy + ry) * _SS], fill=fill)
        else:
            pts = [(rx * math.cos(t), ry * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 40, endpoint=False)]
            self.poly(_rotate(pts, angle), cx, cy, fill)

    def line(self, pts, cx, cy, width, fill=255):
        self.draw.line(self._xy(pts, cx, cy), fill=fill, width=max(1, int(round(width * _SS))))

    def mask(self) -> np.ndarray:
        small = self.im.resize((self.size, self.size), Image.BOX)
        return np.asarray(small, dtype=np.float32)[:, :, None] / 255.0


def _shape_mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    cv = _Canvas(size)
    if kind == "circle":
        cv.ellipse(cx, cy, r, r)
    elif kind == "square":
        cv.poly(_polygon(4, r * 1.1, angle), cx, cy)
    elif kind == "triangle":
        cv.poly(_polygon(3, r * 1.15, angle), cx, cy)
    elif kind == "star":
        cv.poly(_polygon(5, r * 1.2, angle, inner=0.45), cx, cy)
    elif kind == "cross":
        a, b = r, r * 0.36
        pts = [(b, -b), (b, -a), (-b, -a), (-b, -b), (-a, -b), (-a, b),
               (-b, b), (-b, a), (b, a), (b, b), (a, b), (a, -b)]
        cv.poly(_rotate(pts, angle), cx, cy)
    elif kind == "ring":
        cv.ellipse(cx, cy, r, r)
        cv.ellipse(cx, cy, r * 0.55, r * 0.55, fill=0)
    elif kind == "crescent":
        cv.ellipse(cx, cy, r, r)
        cv.ellipse(cx + 0.5 * r * math.cos(angle), cy + 0.5 * r * math.sin(angle), r * 0.85, r * 0.85, fill=0)
    elif kind == "bar":
        pts = [(-r * 1.2, -r * 0.3), (r * 1.2, -r * 0.3), (r * 1.2, r * 0.3), (-r * 1.2, r * 0.3)]
        cv.poly(_rotate(pts, angle), cx, cy)
    elif kind == "ellipse":
        cv.ellipse(cx, cy, r * 1.2, r * 0.6, angle=angle)
    elif kind == "dome":
        pts = [(r * math.cos(t), -r * math.sin(t) + 0.4 * r) for t in np.linspace(0, math.pi, 24)]
        cv.poly(_rotate(pts, angle), cx, cy)
    elif kind == "trapezoid":
        pts = [(-r, 0.55 * r), (r, 0.55 * r), (0.5 * r, -0.55 * r), (-0.5 * r, -0.55 * r)]
        cv.poly(_rotate(pts, angle), cx, cy)
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    return cv.mask()


def _texture(rng: np.random.Generator, size: int, colour: np.ndarray, kind: str,
             orientation_deg: float = 0.0, period: tuple[float, float] = (4.0, 10.0)) -> np.ndarray:
    """A colour layer: flat, oriented stripes, checks, spots or mottled, with soft lighting."""
    xx, yy = grid(size)
    light = (1.0 + rng.uniform(-0.25, 0.25) * ((xx - size / 2) / size)
             + rng.uniform(-0.25, 0.25) * ((yy - size / 2) / size))
    layer = colour[None, None, :] * light[:, :, None]
    if kind == "stripes":
        t = math.radians(orientation_deg)
        period = rng.uniform(*period)
        u = xx * math.cos(t) + yy * math.sin(t)
        wave = np.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi))
        if rng.random() < 0.5:  # square-ish stripes
            wave = np.tanh(3.0 * wave)
        contrast = rng.uniform(0.3, 0.7)
        dark = colour * rng.uniform(0.15, 0.6)
        w = (0.5 + 0.5 * wave)[:, :, None]
        layer = layer * (1 - contrast * w) + dark[None, None, :] * contrast * w
    elif kind == "checks":
        p = rng.uniform(4.0, 9.0)
        t = rng.uniform(0, math.pi)
        u = xx * math.cos(t) + yy * math.sin(t)
        v = -xx * math.sin(t) + yy * math.cos(t)
        chk = (np.floor(u / p) + np.floor(v / p)) % 2
        layer = layer * (1 - 0.35 * chk[:, :, None])
    elif kind == "spots":
        n = smooth_noise(rng, size, 10, 1)[:, :, 0]
        layer = layer * (1 - 0.4 * (n > 0.6)[:, :, None])
    elif kind == "mottled":
        layer = layer * (1 + 0.25 * smooth_noise(rng, size, 8, 1))
    return layer


def _paste(img: np.ndarray, layer: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return img * (1 - mask) + layer * mask


def _finish(rng: np.random.Generator, img: np.ndarray, *, noise: float = 0.02) -> np.ndarray:
    """Camera-ish finish: global gain, pixel noise, clip and quantize to uint8 HxWx3."""
    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05)
    img = img + rng.standard_normal(img.shape).astype(np.float32) * noise
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.3, 1.0))


def _distractor(rng: np.random.Generator, img: np.ndarray, size: int, scale: float) -> np.ndarray:
    kind = SHAPES[rng.integers(len(SHAPES))]
    r = rng.uniform(0.08, 0.2) * size * scale
    cx, cy = rng.uniform(-0.05, 1.05, size=2) * size
    mask = _shape_mask(kind, size, cx, cy, r, rng.uniform(0, 2 * math.pi))
    tex = ("flat", "flat", "stripes", "checks", "spots", "mottled")[rng.integers(6)]
    layer = _texture(rng, size, _random_colour(rng), tex, rng.uniform(0, 180))
    return _paste(img, layer, mask)


# --------------------------------------------------------------------------- pretraining scenes
class Scene(NamedTuple):
    image: np.ndarray  # uint8 HxWx3
    glyph: int  # which of the N_GLYPHS part arrangements
    orientation: int  # index into ORIENTATIONS
    hue: int  # index into HUES


def glyph_parts(glyph: int) -> list[tuple[str, float, float, float, float, int]]:
    """The fixed recipe of a glyph class: (part, dx, dy, scale, angle, colour role) for each part.

    Offsets and scales are in units of the main part's radius; part 0 is the main part (colour
    role 0, which carries the labelled hue and stripes).

    Example:
        >>> [p[0] for p in glyph_parts(0)] == [p[0] for p in glyph_parts(0)]
        True
    """
    if not 0 <= glyph < N_GLYPHS:
        raise ValueError(f"glyph_parts expected 0 <= glyph < {N_GLYPHS}, got {glyph!r}.")
    rng = keyed_rng(7004, glyph)
    parts = [(PARTS[rng.integers(len(PARTS))], 0.0, 0.0, 1.0, float(rng.uniform(0, 2 * math.pi)), 0)]
    for _ in range(1 + int(rng.integers(2))):
        a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0.75, 1.35)
        parts.append((PARTS[rng.integers(len(PARTS))], d * math.cos(a), d * math.sin(a),
                      float(rng.uniform(0.35, 0.75)), float(rng.uniform(0, 2 * math.pi)), int(rng.integers(2))))
    return parts


def render_scene(seed: int, *, size: int = 72, index: int = 0) -> Scene:
    """Render one labelled pretraining scene.

    A glyph (a fixed arrangement of 2-3 parts, one of ``N_GLYPHS`` classes) at a random size,
    place and tilt, its main part striped at a labelled orientation and coloured in a labelled
    hue, its other parts in another random colour and texture; distractor shapes behind it and
    sometimes an occluder in front, on a natural-looking backdrop.

    Args:
        seed: base seed of the set of scenes.
        size: side of the square image in pixels.
        index: which scene of the set; ``(seed, index)`` fixes every pixel.

    Example:
        >>> s = render_scene(0, index=3)
        >>> s.image.shape, 0 <= s.glyph < N_GLYPHS
        ((72, 72, 3), True)
    """
    rng = keyed_rng(7001, seed, index)
    glyph, orient, hue = int(rng.integers(N_GLYPHS)), int(rng.integers(len(ORIENTATIONS))), int(rng.integers(len(HUES)))
    img = _background(rng, size)
    for _ in range(rng.integers(0, 3)):
        img = _distractor(rng, img, size, 0.8)
    r = rng.uniform(0.14, 0.22) * size
    cx, cy = size / 2 + rng.uniform(-0.1, 0.1, size=2) * size
    tilt = math.radians(rng.uniform(-40, 40))
    colours = [_hsv(hue / len(HUES) + rng.uniform(-15, 15) / 360.0, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0)),
               _random_colour(rng)]
    stripes = ORIENTATIONS[orient] + rng.uniform(-12, 12)
    other_tex = ("flat", "flat", "checks", "spots", "mottled")[rng.integers(5)]
    c, s_ = math.cos(tilt), math.sin(tilt)
    parts = glyph_parts(glyph)
    for i in reversed(range(len(parts))):  # the main part (index 0) is drawn last, on top
        part, dx, dy, scale, angle, role = parts[i]
        px, py = cx + r * (dx * c - dy * s_), cy + r * (dx * s_ + dy * c)
        mask = _shape_mask(part, size, px, py, r * scale, angle + tilt)
        tex = "stripes" if i == 0 else ("flat" if role == 0 else other_tex)
        img = _paste(img, _texture(rng, size, colours[role], tex, stripes, period=(3.0, 6.5)), mask)
    if rng.random() < 0.35:  # a small occluder in front
        img = _distractor(rng, img, size, 0.7)
    if rng.random() < 0.2:
        pil = Image.fromarray(_finish(rng, img, noise=0.0)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
        img = np.asarray(pil, dtype=np.float32) / 255.0
    return Scene(_finish(rng, img, noise=rng.uniform(0.004, 0.03)), glyph, orient, hue)


def render_scenes(n: int, *, seed: int = 0, size: int = 72, start: int = 0,
                  progress: Callable[[int], None] | None = None):
    """Render scenes ``start .. start+n-1`` as a uint8 tensor Nx3xHxW and a dict of label tensors.

    Example:
        >>> x, y = render_scenes(4, seed=1)
        >>> tuple(x.shape), sorted(y)
        ((4, 3, 72, 72), ['glyph', 'hue', 'orientation'])
    """
    import torch

    if n < 1:
        raise ValueError(f"render_scenes needs n >= 1 scenes, got n={n}.")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = {k: np.empty(n, dtype=np.int64) for k in ("glyph", "orientation", "hue")}
    for i in range(n):
        s = render_scene(seed, size=size, index=start + i)
        images[i] = s.image
        labels["glyph"][i], labels["orientation"][i], labels["hue"][i] = s.glyph, s.orientation, s.hue
        if progress is not None:
            progress(i)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return x, {k: torch.from_numpy(v) for k, v in labels.items()}


# --------------------------------------------------------------------------- everyday objects
def _natural_or_random(rng: np.random.Generator, natural: np.ndarray) -> np.ndarray:
    return natural if rng.random() < 0.5 else _random_colour(rng)


class _Layer:
    """A transparent layer that an object's parts are painted onto in order (premultiplied colour, alpha)."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng, self.size = rng, size
        self.img = np.zeros((size, size, 3), dtype=np.float32)
        self.alpha = np.zeros((size, size, 1), dtype=np.float32)

    def put(self, shape: Callable[[_Canvas], object], colour: np.ndarray, tex: str = "flat") -> None:
        """Draw ``shape`` into a fresh mask and paint it with ``colour`` in texture ``tex`` (random orientation)."""
        cv = _Canvas(self.size)
        shape(cv)
        m = cv.mask()
        self.img = _paste(self.img, _texture(self.rng, self.size, colour, tex, self.rng.uniform(0, 180)), m)
        self.alpha = self.alpha + m * (1 - self.alpha)


def _sometimes_stripes(rng: np.random.Generator, p: float) -> str:
    return "stripes" if rng.random() < p else "flat"


def _ball(lay: _Layer, cx: float, cy: float, s: float, flip: float, tilt: float) -> None:
    rng = lay.rng
    base = _random_colour(rng)
    lay.put(lambda c: c.ellipse(cx, cy, s, s), base)
    if rng.random() < 0.6:  # a seam band
        band = _random_colour(rng)

        def seam(c):
            c.ellipse(cx, cy, s, s * 0.35, angle=tilt)
            c.ellipse(cx, cy, s * 1.1, s * 0.18, fill=0, angle=tilt)
        lay.put(seam, band)
    xx, yy = grid(lay.size)
    hl = np.exp(-((xx - cx + 0.35 * s) ** 2 + (yy - cy + 0.35 * s) ** 2) / (2 * (0.3 * s) ** 2))[:, :, None]
    ball = _shape_mask("circle", lay.size, cx, cy, s * 0.97, 0)
    lay.img = lay.img + 0.35 * hl * ball


def _car(lay: _Layer, cx: float, cy: float, s: float, flip: float, tilt: float) -> None:
    rng = lay.rng
    body = _random_colour(rng)
    w, h = 1.25 * s, 0.36 * s
    lay.put(lambda c: c.poly([(-w, -h), (w, -h), (w, h), (-w, h)], cx, cy), body)
    roof = -h - 0.8 * s * 0.62
    top = [(-0.65 * w * flip, -h), (0.45 * w * flip, -h), (0.25 * w * flip, roof), (-0.45 * w * flip, roof)]
    lay.put(lambda c: c.poly(top, cx, cy), body * 0.9)
    win = [(x * 0.8, (y + h) * 0.7 - h) for x, y in top]
    lay.put(lambda c: c.poly(win, cx, cy - 0.05 * s), _hsv(0.58, rng.uniform(0.1, 0.4), rng.uniform(0.6, 0.95)))
    for dx in (-0.62 * w, 0.62 * w):
        lay.put(lambda c, dx=dx: c.ellipse(cx + dx, cy + h, 0.32 * s, 0.32 * s), _hsv(0, 0, rng.uniform(0.05, 0.2)))
        lay.put(lambda c, dx=dx: c.ellipse(cx + dx, cy + h, 0.13 * s, 0.13 * s), _hsv(0, 0, rng.uniform(0.5, 0.8)))


def _fish(lay: _Layer, cx: float, cy: float, s: float, flip: float, tilt: float) -> None:
    rng = lay.rng
    body = _random_colour(rng)
    tail = _rotate([(flip * 0.8 * s, 0), (flip * 1.45 * s, -0.55 * s), (flip * 1.45 * s, 0.55 * s)], tilt)
    lay.put(lambda c: c.poly(tail, cx, cy), body * 0.85)
    lay.put(lambda c: c.ellipse(cx, cy, 1.05 * s, 0.55 * s, angle=tilt), body, _sometimes_stripes(rng, 0.4))
    ex, ey = cx - flip * 0.6 * s * math.cos(tilt), cy - flip * 0.6 * s * math.sin(tilt) - 0.12 * s
    lay.put(lambda c: c.ellipse(ex, ey, 0.14 * s, 0.14 * s), _hsv(0, 0, 0.95))
    lay.put(lambda c: c.ellipse(ex, ey, 0.07 * s, 0.07 * s), _hsv(0, 0, 0.05))


def _flower(lay: _Layer, cx: float, cy: float, s: float, flip: float, tilt: float) -> None:
    rng = lay.rng
    stem = _hsv(rng.uniform(0.22, 0.4), rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.6))
    lay.put(lambda c: c.line([(0, 0.2 * s), (0.1 * s * flip, 1.6 * s)], cx, cy, 0.14 * s), stem)
    lay.put(lambda c: c.ellipse(cx + 0.3 * s * flip, cy + 1.0 * s, 0.35 * s, 0.14 * s, angle=0.5 * flip), stem)
    petal = _random_colour(rng)
    n = int(rng.integers(5, 9))
    a0 = rng.uniform(0, 2 * math.pi)
    for i in range(n):
        t = a0 + 2 * math.pi * i / n
        px, py = cx + 0.55 * s * math.cos(t), cy + 0.55 * s * math.sin(t)
        lay.put(lambda c, px=px, py=py, t=t: c.ellipse(px, py, 0.48 * s, 0.22 * s, angle=t), petal)
    heart = _natural_or_random(rng, _hsv(rng.uniform(0.05, 0.16), 0.8, rng.uniform(0.4, 0.9)))
    lay.put(lambda c: c.ellipse(cx, cy, 0.3 * s, 0.3 * s), heart)


def _box(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    """The corners of an axis-aligned rectangle, clockwise from (x0, y0)."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _house(lay: _Layer, cx: float, cy: float, s: float, flip: float, tilt: float) -> None:
    rng = lay.rng
    wall = _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.55, 0.95))
    roof_hue = rng.choice([0.0, 0.03, 0.07, 0.6])
    roof = _natural_or_random(rng, _hsv(roof_hue, rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.6)))
    w, h = 0.9 * s, 0.75 * s
    lay.put(lambda c: c.poly(_box(-w, -0.1 * s, w, h + 0.1 * s), cx, cy), wall)
    lay.put(lambda c: c.poly([(-1.2 * w, 0), (1.2 * w, 0), (0, -1.1 * s)], cx, cy), roof, _sometimes_stripes(rng, 0.3))
    door = _box(-0.18 * s, 0.3 * s, 0.18 * s, h + 0.1 * s)
    lay.put(lambda c: c.poly(door, cx + 0.4 * s * flip, cy), roof * 0.6)
    window = _box(-0.2 * s, -0.2 * s, 0.2 * s, 0.2 * s)
    lay.put(lambda c: c.poly(window, cx - 0.45 * s * flip, cy + 0.35 * s), _hsv(0.55, 0.3, 0.9))


def _mug(lay: _Layer, cx: float, cy: float, s: float, flip: float, tilt: float) -> None:
    rng = lay.rng
    body = _random_colour(rng)
    w, h = 0.7 * s, 0.85 * s

    def handle(c):
        c.ellipse(cx + flip * w, cy, 0.5 * s, 0.45 * s)
        c.ellipse(cx + flip * w, cy, 0.3 * s, 0.26 * s, fill=0)

    def cup(c):
        c.poly(_box(-w, -h, w, h), cx, cy)
        c.ellipse(cx, cy + h, w, 0.2 * s)
    lay.put(handle, body * 0.85)
    lay.put(cup, body, _sometimes_stripes(rng, 0.3))
    lay.put(lambda c: c.ellipse(cx, cy - h, w, 0.2 * s), body * 0.45)


def _mushroom(lay: _Layer, cx: float, cy: float, s: float, flip: float, tilt: float) -> None:
    rng = lay.rng
    cap_hue = rng.choice([0.0, 0.02, 0.06, 0.09])
    cap = _natural_or_random(rng, _hsv(cap_hue, rng.uniform(0.5, 0.95), rng.uniform(0.45, 0.95)))
    stem = _hsv(0.1, rng.uniform(0.05, 0.25), rng.uniform(0.75, 0.95))
    lay.put(lambda c: c.poly([(-0.3 * s, -0.1 * s), (0.3 * s, -0.1 * s), (0.38 * s, 1.0 * s), (-0.38 * s, 1.0 * s)],
                             cx, cy), stem)

    def dome(c):
        c.ellipse(cx, cy, 1.1 * s, 0.85 * s)
        c.poly(_box(-1.3 * s, 0.0, 1.3 * s, s), cx, cy, fill=0)
        c.ellipse(cx, cy - 0.02 * s, 1.1 * s, 0.2 * s)
    lay.put(dome, cap)
    if rng.random() < 0.6:
        spots = [(rng.uniform(-0.7, 0.7) * s, rng.uniform(-0.65, -0.15) * s) for _ in range(int(rng.integers(3, 7)))]
        lay.put(lambda c: [c.ellipse(cx + x, cy + y, 0.12 * s, 0.1 * s) for x, y in spots], _hsv(0, 0, 0.95))


def _tree(lay: _Layer, cx: float, cy: float, s: float, flip: float, tilt: float) -> None:
    rng = lay.rng
    trunk = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.2, 0.45))
    leaf_hue = rng.uniform(0.2, 0.42) if rng.random() < 0.8 else rng.uniform(0.03, 0.12)
    leaf = _natural_or_random(rng, _hsv(leaf_hue, rng.uniform(0.45, 0.9), rng.uniform(0.3, 0.75)))
    lay.put(lambda c: c.poly([(-0.16 * s, 0), (0.16 * s, 0), (0.22 * s, 1.4 * s), (-0.22 * s, 1.4 * s)], cx, cy), trunk)
    if rng.random() < 0.5:  # broadleaf: a cluster of blobs
        blobs = [(rng.uniform(-0.55, 0.55) * s, rng.uniform(-0.9, -0.1) * s, rng.uniform(0.45, 0.7) * s)
                 for _ in range(int(rng.integers(4, 7)))]
        lay.put(lambda c: [c.ellipse(cx + x, cy + y, r, r) for x, y, r in blobs], leaf, "mottled")
    else:  # conifer: stacked triangles
        tiers = ((0.95, 0.2), (0.8, -0.25), (0.6, -0.7))
        lay.put(lambda c: [c.poly([(-w * s, y * s), (w * s, y * s), (0, (y - 0.9) * s)], cx, cy) for w, y in tiers],
                leaf, "mottled")


#: How each class of ``objects`` is drawn, in the order of OBJECT_CLASSES.
_DRAWERS = {"ball": _ball, "car": _car, "fish": _fish, "flower": _flower, "house": _house, "mug": _mug,
            "mushroom": _mushroom, "tree": _tree}


def _draw_object(kind: str, rng: np.random.Generator, size: int, cx: float, cy: float, s: float):
    """Draw one object on a transparent layer; return (premultiplied colour HxWx3, alpha HxWx1)."""
    flip = -1.0 if rng.random() < 0.5 else 1.0
    tilt = rng.uniform(-0.25, 0.25)
    if kind not in _DRAWERS:  # pragma: no cover - internal
        raise ValueError(kind)
    lay = _Layer(rng, size)
    _DRAWERS[kind](lay, cx, cy, s, flip, tilt)
    return lay.img, lay.alpha


def _rotate_layers(arr: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    out = np.empty(arr.shape, dtype=np.float32)
    for c in range(arr.shape[2]):
        im = Image.fromarray(np.ascontiguousarray(arr[:, :, c], dtype=np.float32), mode="F")
        out[:, :, c] = np.asarray(im.rotate(angle, resample=Image.BILINEAR, center=centre), dtype=np.float32)
    return out


def render_object(kind: str, seed: int, *, size: int = 72) -> np.ndarray:
    """Render one everyday object on a cluttered natural-looking backdrop (uint8 HxWx3).

    Example:
        >>> render_object("mug", 5).shape
        (72, 72, 3)
    """
    if kind not in OBJECT_CLASSES:
        raise ValueError(f"render_object expected one of {OBJECT_CLASSES}, got {kind!r}.")
    rng = keyed_rng(7002, OBJECT_CLASSES.index(kind), seed)
    img = _background(rng, size)
    for _ in range(rng.integers(1, 5)):
        img = _distractor(rng, img, size, 1.0)
    s = rng.uniform(0.15, 0.27) * size
    cx, cy = size / 2 + rng.uniform(-0.14, 0.14, size=2) * size
    obj, alpha = _draw_object(kind, rng, size, cx, cy, s)
    both = _rotate_layers(np.concatenate([obj, alpha], axis=2), rng.uniform(-35, 35), (cx, cy))
    img = img * (1 - both[:, :, 3:]) + both[:, :, :3]
    if rng.random() < 0.35:
        img = _distractor(rng, img, size, 0.7)
    return _finish(rng, img, noise=0.006)


# --------------------------------------------------------------------------- microscopy-like cells
def render_cells(kind: str, seed: int, *, size: int = 72) -> np.ndarray:
    """Render a greyscale fluorescence-like field of cells of one kind (uint8 HxW).

    Example:
        >>> render_cells("round", 0).shape
        (72, 72)
    """
    if kind not in CELL_CLASSES:
        raise ValueError(f"render_cells expected one of {CELL_CLASSES}, got {kind!r}.")
    rng = keyed_rng(7003, CELL_CLASSES.index(kind), seed)
    xx, yy = grid(size)
    img = rng.uniform(0.03, 0.1) + 0.03 * smooth_noise(rng, size, 4, 1)[:, :, 0]
    n = int(rng.integers(1, 4))
    centres = []
    for _ in range(n):
        for _try in range(20):
            c = rng.uniform(0.2, 0.8, size=2) * size
            if all(np.hypot(*(c - d)) > 0.36 * size for d in centres):
                break
        centres.append(c)
    texture = smooth_noise(rng, size, 14, 1)[:, :, 0]
    for cx, cy in centres:
        a = rng.uniform(0, math.pi)
        r = rng.uniform(9.0, 12.5)
        wob = rng.uniform(0, 0.06, size=3)
        ph = rng.uniform(0, 2 * math.pi, size=3)
        cyto_i, nuc_i = rng.uniform(0.22, 0.38), rng.uniform(0.6, 0.95)
        if kind == "round":
            cyto = blob(xx, yy, cx, cy, r, r * rng.uniform(0.85, 1.0), a, wob, ph, 6)
            nuc = blob(xx, yy, cx, cy, 0.5 * r, 0.5 * r * rng.uniform(0.8, 1.0), a, wob, ph, 5)
        elif kind == "elongated":
            cyto = blob(xx, yy, cx, cy, 1.7 * r, 0.5 * r, a, wob, ph, 5)
            nuc = blob(xx, yy, cx, cy, 0.65 * r, 0.3 * r, a, wob, ph, 5)
        elif kind == "dividing":
            d = 0.75 * r
            ox, oy = d * math.cos(a), d * math.sin(a)
            cyto = np.maximum(blob(xx, yy, cx - ox, cy - oy, 0.8 * r, 0.75 * r, a, wob, ph, 6),
                              blob(xx, yy, cx + ox, cy + oy, 0.8 * r, 0.75 * r, a, wob, ph, 6))
            nuc = np.maximum(blob(xx, yy, cx - ox, cy - oy, 0.35 * r, 0.35 * r, a, wob, ph, 5),
                             blob(xx, yy, cx + ox, cy + oy, 0.35 * r, 0.35 * r, a, wob, ph, 5))
        else:  # fragmented: ragged outline, nucleus broken into bright bits
            wob = rng.uniform(0.08, 0.2, size=3)
            cyto = blob(xx, yy, cx, cy, r, r * rng.uniform(0.8, 1.0), a, wob, ph, 4) * 0.7
            nuc = np.zeros_like(img)
            for _ in range(int(rng.integers(4, 8))):
                fx, fy = cx + rng.uniform(-0.6, 0.6) * r, cy + rng.uniform(-0.6, 0.6) * r
                fr = rng.uniform(0.1, 0.2) * r
                nuc = np.maximum(nuc, blob(xx, yy, fx, fy, fr, fr, 0, [0, 0, 0], [0, 0, 0], 4))
        img = img + cyto * cyto_i * (1 + 0.3 * texture) + nuc * (nuc_i - cyto_i) * (1 + 0.2 * texture)
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="L").filter(ImageFilter.GaussianBlur(0.7))
    img = np.asarray(pil, dtype=np.float32) / 255.0
    img = img + rng.standard_normal(img.shape).astype(np.float32) * np.sqrt(0.0004 + 0.004 * img)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- bundled datasets
class _Spec(NamedTuple):
    classes: tuple
    render: Callable[[str, int], np.ndarray]
    train: int
    val: int
    size: int
    title: str
    description: str


DATASETS: dict[str, _Spec] = {
    "objects": _Spec(
        OBJECT_CLASSES, render_object, 40, 20, 72,
        "objects: everyday things, drawn (the nearest of the three to ImageNet, but not photo-like)",
        "Eight kinds of everyday object (ball, car, fish, flower, house, mug, mushroom, tree), drawn "
        "procedurally from simple parts in random colours (half of the time, natural ones), sizes, "
        "positions, tilts and facing, among clutter shapes on natural-looking backdrops (soft colour "
        "fields, horizons). They are drawings, not photographs. Lesson 04 measures how far each bundled "
        "dataset sits from ImageNet on the offline EfficientNet-Lite0 (the shift of its BatchNorm "
        "statistics, against real photos): objects measured 0.24, the nearest of the three, yet its "
        "first layers sit about twice as far from ImageNet's statistics as photos do, and with 30 "
        "images per class thawing the last stages still beat a frozen backbone.",
    ),
    "cells": _Spec(
        CELL_CLASSES, render_cells, 40, 20, 72,
        "cells: greyscale microscopy-like fields, far from ImageNet",
        "Four kinds of cell (dividing, elongated, fragmented, round) in a dark greyscale field with "
        "out-of-focus blur and shot noise, like a fluorescence micrograph of stained nuclei. No colour, "
        "no hard edges: lesson 04 measured its gap from ImageNet at 0.51 on the offline "
        "EfficientNet-Lite0, and uses it as the *distant* dataset of the domain-gap lesson. Images are stored "
        "as single-channel PNG; the loaders convert them to 3-channel RGB.",
    ),
}

_SPLIT_ID = {"train": 0, "val": 1}


def _readme(name: str, spec: _Spec) -> str:
    per_class = f"{spec.train} train + {spec.val} val"
    rows = "\n".join(f"| {c} | {spec.train} | {spec.val} |" for c in spec.classes)
    total = len(spec.classes) * (spec.train + spec.val)
    return f"""# {spec.title}

{spec.description}

## Layout

ImageFolder layout, {spec.size}x{spec.size} PNG, {len(spec.classes)} classes, {per_class} images per class
({total} in all):

```
datasets/{name}/train/<class>/<nnn>.png
datasets/{name}/val/<class>/<nnn>.png
```

| class | train | val |
|---|---|---|
{rows}

## How it was made

Generated by `tools/synth.py` (`python -m tools.make_datasets`), which rewrites this folder,
this README included, byte for byte. Image `i` of class `c` in split `s` is drawn from its own
random stream seeded by (dataset, class, split, i), so any single image can be regenerated
alone. Train and val images come from disjoint seeds.

## Licence

Procedurally generated by the labkit project; no third-party images. Same licence as labkit
(MIT).
"""


def make_dataset(name: str, root: str | Path = "datasets", *, train: int | None = None,
                 val: int | None = None) -> Path:
    """Write the bundled dataset ``name`` (ImageFolder layout and README) under ``root``.

    Args:
        name: one of ``DATASETS`` ("objects", "cells").
        root: the folder that will hold ``root/name``.
        train, val: images per class (default: the bundled counts).

    Example:
        >>> make_dataset("cells", "/tmp/ds", train=2, val=1)
        PosixPath('/tmp/ds/cells')
    """
    if name not in DATASETS:
        raise ValueError(f"make_dataset expected one of {sorted(DATASETS)}, got {name!r}.")
    spec = DATASETS[name]
    counts = {"train": spec.train if train is None else train, "val": spec.val if val is None else val}
    out = Path(root) / name
    for split, n in counts.items():
        for cls in spec.classes:
            folder = out / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.png"):
                old.unlink()
            for i in range(n):
                # seeds: split and class pick disjoint streams; render adds the class again itself
                arr = spec.render(cls, 100_000 * _SPLIT_ID[split] + i, size=spec.size)
                Image.fromarray(arr).save(folder / f"{i:03d}.png", format="PNG", optimize=True)
    if train is None and val is None:
        (out / "README.md").write_text(_readme(name, spec))
    return out


def make_datasets(root: str | Path = "datasets", *, names: list[str] | None = None) -> list[Path]:
    """Write every bundled dataset (or those in ``names``) under ``root``; return their folders."""
    return [make_dataset(n, root) for n in (names or list(DATASETS))]


def datasets_main(argv: list[str]) -> int:
    """``python -m tools.synth [--root DIR] [NAME ...]``: regenerate the bundled ``objects`` and ``cells``."""
    parser = argparse.ArgumentParser(prog="python -m tools.synth", description=datasets_main.__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"datasets to write (default: all of {', '.join(DATASETS)})")
    parser.add_argument("--root", default=str(CHECKOUT_DATASETS),
                        help="folder that holds the datasets (default: the checkout's datasets/)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; expected some of {', '.join(DATASETS)}")
    for path in make_datasets(args.root, names=args.names or None):
        n = sum(1 for _ in path.rglob("*.png"))
        mb = sum(p.stat().st_size for p in path.rglob("*")) / 1e6
        print(f"wrote {path}: {n} images, {mb:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(datasets_main(sys.argv[1:]))
