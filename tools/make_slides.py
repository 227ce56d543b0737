"""The bundled medical-like dataset ``slides``: stained blood-smear cells under two scanners.

Each image is one white blood cell among red cells on a stained smear, made the way a
brightfield microscope makes it: stain *densities* (haematoxylin on nuclei, eosin on
cytoplasm, granules and red cells) are drawn first, then turned into colour with
Beer-Lambert absorption (``I = I0 * exp(-sum density * optical density of the stain)``). A
"scanner" is everything after the densities: the stains' colours, the lamp, the focus, the
contrast and the sensor noise. Scanner A is the labelled training domain; scanner B renders
the same four classes with another stain batch (bluer haematoxylin, paler eosin), a yellow
lamp cast, lower contrast, defocus blur and more noise: a measurable domain shift.

Nothing here looks like ImageNet's photographs (no glyphs, stripes, hard
edges or saturated hues). Classes are imbalanced in ``train/`` as in a real differential
count (neutrophils common, eosinophils rare); ``val/`` is balanced so per-class recall is
measured on equal footing.

``python -m tools.make_slides [--root DIR]`` (or ``python -m tools.make_datasets slides``) rewrites
``datasets/slides`` byte for byte (same numpy, Pillow and zlib). Lesson 05's helpers are
``labkit.medical``; this module only draws the dataset.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter

from tools import CHECKOUT_DATASETS
from tools._draw import blob, grid, keyed_rng, smooth_noise

__all__ = [
    "SLIDE_CLASSES",
    "SCANNERS",
    "SLIDES_COUNTS",
    "Scanner",
    "render_slide",
    "make_slides",
    "main",
]

#: Classes of ``slides``, most common first (as in a blood differential count).
SLIDE_CLASSES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil")
#: Images per class in each split of the bundled dataset.
SLIDES_COUNTS = {
    "train": {"neutrophil": 200, "lymphocyte": 100, "monocyte": 50, "eosinophil": 50},
    "val": {c: 50 for c in SLIDE_CLASSES},
    "scanner_b/unlabelled": {c: 25 for c in SLIDE_CLASSES},
    "scanner_b/val": {c: 50 for c in SLIDE_CLASSES},
}
_SIZE = 72
_COLOURS = 128  # PNG palette size: keeps the repository small (mean error about 1-2 of 255 levels)


class Scanner(NamedTuple):
    """What turns stain densities into pixels."""

    haematoxylin: tuple[float, float, float]  # optical density per RGB channel
    eosin: tuple[float, float, float]
    lamp: tuple[float, float, float]  # background (unstained) brightness per channel
    contrast: float  # gamma on the absorbance: <1 flattens the image
    blur: float  # Gaussian defocus radius in pixels
    noise: float  # sensor noise, std in [0, 1] units


#: The two scanners: ``"A"`` (training domain) and ``"B"`` (shifted domain).
SCANNERS = {
    "A": Scanner((0.65, 0.85, 0.35), (0.07, 0.55, 0.25), (0.96, 0.94, 0.95), 1.0, 0.5, 0.008),
    "B": Scanner((0.85, 0.70, 0.20), (0.05, 0.32, 0.20), (0.98, 0.90, 0.72), 0.7, 1.3, 0.02),
}
_SPLIT_SEED = {"train": 0, "val": 1, "scanner_b/unlabelled": 2, "scanner_b/val": 3}
_SCANNER_OF = {"train": "A", "val": "A", "scanner_b/unlabelled": "B", "scanner_b/val": "B"}


def _lobes(rng, xx, yy, cx, cy, r, n, spread, size_frac):
    """A nucleus made of ``n`` round lobes on a curved chain (n=1: one round nucleus)."""
    out = np.zeros_like(xx)
    a0 = rng.uniform(0, 2 * math.pi)
    bend = rng.uniform(-0.9, 0.9)
    for k in range(n):
        t = (k - (n - 1) / 2) * spread
        ang = a0 + bend * t
        px, py = cx + r * t * math.cos(ang) * 0.55, cy + r * t * math.sin(ang) * 0.55 + bend * r * 0.15 * t * t
        lr = r * size_frac * rng.uniform(0.85, 1.15)
        out = np.maximum(out, blob(xx, yy, px, py, lr, lr * rng.uniform(0.75, 1.0), rng.uniform(0, math.pi),
                                    rng.uniform(0, 0.05, 3), rng.uniform(0, 6.3, 3), 5))
    return out


def _densities(kind: str, rng: np.random.Generator, size: int):
    """Haematoxylin and eosin density maps (HxW each) of one field with one white cell of ``kind``."""
    xx, yy = grid(size)
    hema = np.zeros((size, size), np.float32)
    eos = 0.06 + 0.03 * smooth_noise(rng, size, 5, 1)[:, :, 0]  # stained plasma/background
    # red cells: pale eosin discs with a central pallor, some cut by the border
    for _ in range(int(rng.integers(5, 10))):
        cx, cy = rng.uniform(-0.1, 1.1, size=2) * size
        r = rng.uniform(7.0, 9.0)
        disc = blob(xx, yy, cx, cy, r, r * rng.uniform(0.85, 1.0), rng.uniform(0, 3.1), rng.uniform(0, 0.04, 3),
                     rng.uniform(0, 6.3, 3), 4)
        pallor = blob(xx, yy, cx, cy, 0.45 * r, 0.45 * r, 0.0, [0, 0, 0], [0, 0, 0], 3)
        eos = eos + disc * (0.55 - 0.3 * pallor) * rng.uniform(0.8, 1.1)
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08, size=2) * size
    a = rng.uniform(0, math.pi)
    wob, ph = rng.uniform(0, 0.06, 3), rng.uniform(0, 6.3, 3)
    tex = smooth_noise(rng, size, 16, 1)[:, :, 0]
    if kind == "neutrophil":  # pale lilac cytoplasm, 3-5 dark lobes
        r = rng.uniform(12.5, 15.0)
        cyto = blob(xx, yy, cx, cy, r, r * rng.uniform(0.88, 1.0), a, wob, ph, 5)
        cyto_e, cyto_h = rng.uniform(0.25, 0.4), rng.uniform(0.05, 0.12)
        nuc = _lobes(rng, xx, yy, cx, cy, r, int(rng.integers(3, 6)), rng.uniform(0.75, 0.95), 0.3)
        gran = np.zeros_like(xx)
    elif kind == "lymphocyte":  # small, a large round dark nucleus with a thin blue rim
        r = rng.uniform(9.0, 11.5)
        cyto = blob(xx, yy, cx, cy, r, r * rng.uniform(0.88, 1.0), a, wob, ph, 5)
        cyto_e, cyto_h = rng.uniform(0.05, 0.12), rng.uniform(0.25, 0.4)
        off = rng.uniform(0, 0.15) * r
        nuc = blob(xx, yy, cx + off * math.cos(a), cy + off * math.sin(a), 0.78 * r, 0.74 * r, a, wob, ph, 5)
        gran = np.zeros_like(xx)
    elif kind == "monocyte":  # large, grey-blue cytoplasm, a kidney-shaped (indented) nucleus
        r = rng.uniform(14.5, 17.0)
        cyto = blob(xx, yy, cx, cy, r, r * rng.uniform(0.85, 1.0), a, wob, ph, 5)
        cyto_e, cyto_h = rng.uniform(0.1, 0.2), rng.uniform(0.15, 0.25)
        nuc = blob(xx, yy, cx, cy, 0.62 * r, 0.48 * r, a, wob, ph, 5)
        bite = blob(xx, yy, cx + 0.5 * r * math.cos(a + math.pi / 2), cy + 0.5 * r * math.sin(a + math.pi / 2),
                     0.32 * r, 0.28 * r, a, [0, 0, 0], [0, 0, 0], 5)
        nuc = nuc * (1 - bite)
        gran = np.zeros_like(xx)
    elif kind == "eosinophil":  # orange-red granular cytoplasm, two lobes
        r = rng.uniform(12.5, 15.0)
        cyto = blob(xx, yy, cx, cy, r, r * rng.uniform(0.88, 1.0), a, wob, ph, 5)
        cyto_e, cyto_h = rng.uniform(0.35, 0.5), rng.uniform(0.03, 0.08)
        nuc = _lobes(rng, xx, yy, cx, cy, r, 2, rng.uniform(0.9, 1.2), 0.33)
        spots = smooth_noise(rng, size, 24, 1)[:, :, 0]
        gran = np.clip(spots - 0.4, 0, None) * cyto
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    nuc = nuc * cyto if kind != "lymphocyte" else nuc
    eos = eos * (1 - cyto) + cyto * cyto_e * (1 + 0.15 * tex) + 0.5 * gran
    hema = hema + cyto * cyto_h * (1 + 0.2 * tex) + nuc * rng.uniform(0.75, 1.0) * (1 + 0.12 * tex)
    return np.clip(hema, 0, None), np.clip(eos, 0, None)


def render_slide(kind: str, seed: int, *, scanner: str = "A", size: int = _SIZE) -> np.ndarray:
    """Render one stained smear field with one white blood cell of ``kind`` (uint8 HxWx3).

    The same ``(kind, seed)`` gives the same cell under either scanner, so ``scanner`` alone
    changes the colours, contrast, focus and noise.

    Args:
        kind: one of :data:`SLIDE_CLASSES`.
        seed: which cell.
        scanner: ``"A"`` (training domain) or ``"B"`` (shifted domain), see :data:`SCANNERS`.
        size: side of the square image in pixels.

    Example:
        >>> render_slide("monocyte", 0).shape
        (72, 72, 3)
    """
    if kind not in SLIDE_CLASSES:
        raise ValueError(f"render_slide expected one of {SLIDE_CLASSES}, got {kind!r}.")
    if scanner not in SCANNERS:
        raise ValueError(f"render_slide expected scanner 'A' or 'B', got {scanner!r}.")
    rng = keyed_rng(7005, SLIDE_CLASSES.index(kind), seed)
    hema, eos = _densities(kind, rng, size)
    sc = SCANNERS[scanner]
    stain = rng.uniform(0.85, 1.15, size=2)  # slide-to-slide staining strength
    od = (hema[:, :, None] * stain[0] * np.array(sc.haematoxylin, np.float32)
          + eos[:, :, None] * stain[1] * np.array(sc.eosin, np.float32))
    img = np.array(sc.lamp, np.float32) * np.exp(-(od ** sc.contrast) * 1.6)
    if sc.contrast != 1.0:  # a flatter tone curve: lift the darks towards the lamp
        img = img * 0.8 + 0.2 * np.array(sc.lamp, np.float32) * img.mean()
    pil = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).filter(ImageFilter.GaussianBlur(sc.blur))
    img = np.asarray(pil, np.float32) / 255.0
    noise = keyed_rng(7006, SLIDE_CLASSES.index(kind), seed, ord(scanner))
    img = img + noise.standard_normal(img.shape).astype(np.float32) * sc.noise
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _readme() -> str:
    rows = "\n".join(f"| {c} | " + " | ".join(str(SLIDES_COUNTS[s][c]) for s in SLIDES_COUNTS) + " |"
                     for c in SLIDE_CLASSES)
    totals = " | ".join(str(sum(SLIDES_COUNTS[s].values())) for s in SLIDES_COUNTS)
    return f"""# slides: stained blood-smear cells under two scanners, far from ImageNet

Four kinds of white blood cell (neutrophil, lymphocyte, monocyte, eosinophil), one per image, among
red cells on a stained smear, rendered like a brightfield micrograph: stain densities
(haematoxylin on nuclei, eosin on cytoplasm, granules and red cells) turned into colour by
Beer-Lambert absorption. The classes differ in cell size, nucleus shape (lobed, round,
kidney-shaped, bilobed) and cytoplasm colour and texture. Lesson 04 measured its gap from
ImageNet at 0.53 on the offline EfficientNet-Lite0 (the farthest of the bundled datasets): it is
the *distant*, medical-like dataset of lesson 05.

* `train/` and `val/`: **scanner A**, the labelled domain. `train/` is imbalanced as a real
  differential count is (neutrophils common, eosinophils rare); `val/` is balanced.
* `scanner_b/`: the same four classes on **scanner B**: another stain batch (bluer
  haematoxylin, paler eosin), a yellow lamp cast, lower contrast, defocus blur and more sensor
  noise. `scanner_b/unlabelled/` is for label-free adaptation (its class folders exist only so
  that standard folder loaders read it; an adaptation method must not use them);
  `scanner_b/val/` measures accuracy after the shift.

## Layout

ImageFolder layout, {_SIZE}x{_SIZE} colour PNG ({_COLOURS}-colour palette per image, to keep the
repository small; loaders convert them to RGB), {len(SLIDE_CLASSES)} classes:

```
datasets/slides/train/<class>/<nnn>.png
datasets/slides/val/<class>/<nnn>.png
datasets/slides/scanner_b/unlabelled/<class>/<nnn>.png
datasets/slides/scanner_b/val/<class>/<nnn>.png
```

| class | {' | '.join(SLIDES_COUNTS)} |
|---|{'---|' * len(SLIDES_COUNTS)}
{rows}
| total | {totals} |

## How it was made

Generated by `tools/make_slides.py` (`python -m tools.make_datasets slides`), which rewrites this
folder, this README included, byte for byte. Image `i` of class `c` in split `s` is drawn from
its own random stream seeded by (dataset, class, split, i), so any single image can be
regenerated alone; the splits use disjoint seeds, so no cell appears in two splits.

## Licence

Procedurally generated by the labkit project; no third-party images. Same licence as labkit
(MIT).
"""


def make_slides(root: str | Path = "datasets", *, scale: float = 1.0) -> Path:
    """Write ``root/slides`` (every split and the README); return the folder.

    Args:
        root: the folder that will hold ``root/slides``.
        scale: multiply every image count by this (at least one image per class and split);
            the README is written only at ``scale=1``.

    Example:
        >>> make_slides("/tmp/ds", scale=0.02).name
        'slides'
    """
    if not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise ValueError(f"make_slides expected 0 < scale <= 1, got {scale!r}.")
    out = Path(root) / "slides"
    for split, counts in SLIDES_COUNTS.items():
        for cls in SLIDE_CLASSES:
            folder = out / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.png"):
                old.unlink()
            for i in range(max(1, round(counts[cls] * scale))):
                arr = render_slide(cls, 100_000 * _SPLIT_SEED[split] + i, scanner=_SCANNER_OF[split])
                im = Image.fromarray(arr).quantize(_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
                im.save(folder / f"{i:03d}.png", format="PNG", optimize=True)
    if scale == 1:
        (out / "README.md").write_text(_readme())
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.make_slides [--root DIR]``: regenerate the bundled ``slides`` dataset."""
    parser = argparse.ArgumentParser(prog="python -m tools.make_slides", description=main.__doc__)
    parser.add_argument("--root", default=str(CHECKOUT_DATASETS),
                        help="folder that holds the datasets (default: the checkout's datasets/)")
    args = parser.parse_args(argv)
    path = make_slides(args.root)
    n = sum(1 for _ in path.rglob("*.png"))
    mb = sum(p.stat().st_size for p in path.rglob("*")) / 1e6
    print(f"wrote {path}: {n} images, {mb:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
