"""Medical images for lesson 05: the MedMNIST loader (Colab), the bundled ``slides``, microscopy augmentation.

* :func:`load_medmnist`: BloodMNIST, PathMNIST or PneumoniaMNIST (CC BY 4.0) from the
  ``medmnist`` package, downloaded once; offline it fails at once and names the bundled
  ``slides`` dataset.
* :func:`load_tensors`: a folder of class folders read once into an image tensor and labels,
  so that many short runs do not decode the same PNGs again.
* :func:`dihedral`, :func:`stain_jitter`: label-preserving augmentations for microscopy
  (rotations by 90 degrees and flips; a random colour cast and contrast per image, like
  slide-to-slide stain variation).

Cutting a model before a stage and caching the frozen half's outputs ("cached activations")
are :func:`labkit.features.split_model` and :func:`labkit.features.compute_outputs`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from labkit._env import is_offline
from labkit.data import DatasetUnavailableError, load_image_folder

__all__ = [
    "MEDMNIST_SETS",
    "load_medmnist",
    "load_tensors",
    "dihedral",
    "stain_jitter",
]

#: MedMNIST sets that :func:`load_medmnist` loads: name -> (medmnist class, classes, licence note).
MEDMNIST_SETS = {
    "bloodmnist": ("BloodMNIST", 8, "CC BY 4.0: blood cell microscopy, 8 cell types"),
    "pathmnist": ("PathMNIST", 9, "CC BY 4.0: colorectal cancer histology tissue, 9 classes"),
    "pneumoniamnist": ("PneumoniaMNIST", 2, "CC BY 4.0: paediatric chest X-rays (greyscale), pneumonia or normal"),
}
_NON_COMMERCIAL = {"dermamnist": "DermaMNIST is derived from HAM10000, licensed CC BY-NC 4.0 (non-commercial only)"}
_SPLITS = {"train": "train", "val": "val", "test": "test"}


def _first_label(y) -> int:
    """MedMNIST labels come as arrays of shape (1,); give a plain int (picklable, module level)."""
    return int(y[0]) if hasattr(y, "__len__") else int(y)


def load_medmnist(name: str, *, split: str = "train", size: int = 64, root: str | Path = "data",
                  transform: Callable | None = None, download: bool = True):
    """A MedMNIST dataset (``medmnist`` package), downloaded on first use; labels as ints.

    Needs network access the first time (Google Colab has it) and ``pip install medmnist``.
    Images are PIL images (greyscale for PneumoniaMNIST: convert with ``.convert("RGB")`` in
    the transform, or see the lesson's greyscale section). Check each set's licence before use:
    these three are CC BY 4.0; DermaMNIST is non-commercial and is refused here.

    Args:
        name: "bloodmnist", "pathmnist" or "pneumoniamnist".
        split: "train", "val" or "test".
        size: image side, 28, 64, 128 or 224.
        root: download folder.
        transform: applied to each PIL image.
        download: allow downloading.

    Raises:
        DatasetUnavailableError: offline, ``medmnist`` missing, or the download failed; the
            message names the bundled alternative ``make_loaders("slides", ...)``.
    """
    key = name.lower().strip() if isinstance(name, str) else name
    if key in _NON_COMMERCIAL:
        raise ValueError(f"load_medmnist does not load {name!r}: {_NON_COMMERCIAL[key]}. Use one of "
                         f"{sorted(MEDMNIST_SETS)} (CC BY 4.0).")
    if key not in MEDMNIST_SETS:
        raise ValueError(f"load_medmnist expected one of {sorted(MEDMNIST_SETS)}, got {name!r}.")
    if split not in _SPLITS:
        raise ValueError(f"load_medmnist expected split in {sorted(_SPLITS)}, got {split!r}.")
    if size not in (28, 64, 128, 224):
        raise ValueError(f"load_medmnist expected size 28, 64, 128 or 224, got {size!r}.")
    alternative = ("Without network, use the bundled medical-like dataset instead: make_loaders('slides', "
                   "backbone=...) (stained blood-smear cells, imbalanced, with a second scanner in "
                   "get_bundled_dataset('slides') / 'scanner_b').")
    cls_name = MEDMNIST_SETS[key][0]
    if is_offline():
        raise DatasetUnavailableError(f"could not get MedMNIST's {cls_name}: offline mode (LABKIT_OFFLINE=1) "
                                      f"allows no download. {alternative}")
    try:
        import medmnist
    except ImportError as e:
        raise DatasetUnavailableError(f"could not load MedMNIST's {cls_name}: the medmnist package is not "
                                      f"installed (pip install medmnist). {alternative}") from e
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        return getattr(medmnist, cls_name)(split=_SPLITS[split], transform=transform, target_transform=_first_label,
                                           download=download, root=str(root), size=size)
    except Exception as e:  # URLError, timeouts, missing file
        raise DatasetUnavailableError(
            f"could not get MedMNIST's {cls_name} into {root} ({type(e).__name__}: {e}). "
            f"It is downloaded on first use, which needs network access. {alternative}") from e


def load_tensors(folder: str | Path, *, transform: Callable) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read a folder of class folders once: ``(images N x C x H x W, labels N, class names)``.

    Example:
        >>> from labkit.data import get_bundled_dataset, make_eval_transform
        >>> x, y, classes = load_tensors(get_bundled_dataset("slides") / "val", transform=make_eval_transform(bb))
        >>> x.shape, classes[0]
        (torch.Size([200, 3, 64, 64]), 'neutrophil')
    """
    if not callable(transform):
        raise TypeError("load_tensors needs transform= (e.g. make_eval_transform(backbone)) to turn images into "
                        "tensors.")
    ds = load_image_folder(folder, transform=transform, verbose=False)
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    return images, torch.tensor(ds.targets, dtype=torch.long), list(ds.classes)


def dihedral(images: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th of the 8 rotations by multiples of 90 degrees, with or without a flip (k = 0..7).

    For microscopy these are label-preserving: a cell has no "up". ``k=0`` is the identity.

    Example:
        >>> x = torch.arange(4.).reshape(1, 1, 2, 2)
        >>> dihedral(x, 1).flatten().tolist()
        [1.0, 3.0, 0.0, 2.0]
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < 8:
        raise ValueError(f"dihedral expected k in 0..7, got {k!r}.")
    out = torch.rot90(images, k % 4, dims=(-2, -1))
    return out.flip(-1) if k >= 4 else out


def stain_jitter(images: torch.Tensor, *, strength: float = 0.15,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A random colour cast and contrast per image, like another stain batch (normalised tensors in, out).

    Each image's channels are scaled by ``1 + U(-strength, strength)`` (contrast, per channel)
    and shifted by ``U(-strength, strength)`` standard deviations (colour cast), independently.
    The input is not changed.

    Example:
        >>> stain_jitter(torch.zeros(2, 3, 4, 4), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 4, 4])
    """
    if images.ndim != 4:
        raise ValueError(f"stain_jitter expected a batch N x C x H x W, got shape {tuple(images.shape)}.")
    if not 0 <= strength < 1:
        raise ValueError(f"stain_jitter expected 0 <= strength < 1, got {strength!r}.")
    n, c = images.shape[:2]
    gain = 1 + (torch.rand(n, c, 1, 1, generator=generator) * 2 - 1) * strength
    shift = (torch.rand(n, c, 1, 1, generator=generator) * 2 - 1) * strength
    return images * gain.to(images) + shift.to(images)
