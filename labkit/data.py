"""Data for the lessons: preprocessing that matches the weights, image folders, bundled and Colab datasets.

* :func:`get_preprocessing`, :func:`make_eval_transform`, :func:`make_train_transform`: the
  resize / crop / mean / std that belong to a backbone's weights, read from the weights (never
  typed into a lesson).
* :func:`scan_image_folder`, :func:`load_image_folder`: a folder of class sub-folders (your own
  photos) checked before training: hidden files and non-images ignored, unreadable images named
  and skipped, class counts and imbalance reported, an empty folder or a single class refused.
* :func:`make_loaders`: train and val ``DataLoader``s and the class names, from a bundled
  dataset ("objects", "cells"), a folder, or a torchvision dataset ("flowers102", "oxford_pets").
* :func:`load_torchvision_dataset`: the real datasets, downloaded where there is network
  access (Colab); here it fails fast with a message naming the bundled alternative.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.transforms import InterpolationMode

from labkit._env import DOWNLOAD_TIMEOUT_S, is_offline, socket_timeout

__all__ = [
    "resolve_transforms",
    "BUNDLED",
    "TORCHVISION_DATASETS",
    "FolderReport",
    "Loaders",
    "DatasetUnavailableError",
    "get_preprocessing",
    "make_eval_transform",
    "make_train_transform",
    "get_bundled_dataset",
    "scan_image_folder",
    "load_image_folder",
    "load_torchvision_dataset",
    "make_loaders",
]

#: The bundled datasets: name -> one-line description.
BUNDLED = {
    "objects": "8 everyday objects on natural-looking backdrops, 72x72 colour (drawn, not photographed)",
    "cells": "4 kinds of cell in greyscale microscopy-like fields, 72x72 (far from any pretraining)",
    "slides": "4 white blood cell types on stained smears, 72x72, imbalanced, two scanners (lesson 05)",
}
#: torchvision datasets that :func:`load_torchvision_dataset` knows: name -> (class name, split map).
TORCHVISION_DATASETS = {
    "flowers102": ("Flowers102", {"train": "train", "val": "val", "test": "test"}),
    "oxford_pets": ("OxfordIIITPet", {"train": "trainval", "val": "test", "test": "test"}),
}
_ALIASES = {"oxfordiiitpet": "oxford_pets", "oxford_iiit_pet": "oxford_pets", "pets": "oxford_pets",
            "flowers": "flowers102"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be downloaded or found."""


# --------------------------------------------------------------------------- preprocessing
def get_preprocessing(source: Any) -> dict:
    """The preprocessing values that belong to a backbone or its weights.

    Args:
        source: a :class:`labkit.models.Backbone`, torchvision weights (``ResNet18_Weights.DEFAULT``),
            labkit's EfficientNet-Lite0 weights, the preset that ``weights.transforms()`` returns, or a dict with
            ``input_size``/``crop_size``, ``resize_size``, ``mean``, ``std``.

    Returns:
        ``{"crop_size": int, "resize_size": int, "mean": [3 floats], "std": [3 floats], "interpolation": str}``

    Example:
        >>> from torchvision.models import ResNet18_Weights
        >>> get_preprocessing(ResNet18_Weights.DEFAULT)["crop_size"]
        224
    """
    obj = source
    if hasattr(obj, "meta") and hasattr(obj, "eval_transform"):  # a Backbone
        obj = obj.meta
    if hasattr(obj, "transforms") and callable(obj.transforms) and not isinstance(obj, dict):
        obj = obj.meta if isinstance(getattr(obj, "meta", None), dict) and "mean" in obj.meta else obj.transforms()
    if isinstance(obj, dict):
        crop = obj.get("crop_size", obj.get("input_size"))
        missing = [k for k, v in (("input_size", crop), ("resize_size", obj.get("resize_size")),
                                  ("mean", obj.get("mean")), ("std", obj.get("std"))) if v is None]
        if missing:
            raise ValueError(f"get_preprocessing needs {missing} in the dict it was given; got keys {sorted(obj)}.")
        interp = obj.get("interpolation", "bilinear")
        return {"crop_size": int(crop), "resize_size": int(obj["resize_size"]), "mean": [float(v) for v in obj["mean"]],
                "std": [float(v) for v in obj["std"]], "interpolation": str(getattr(interp, "value", interp))}
    if all(hasattr(obj, a) for a in ("crop_size", "resize_size", "mean", "std")):  # ImageClassification preset
        def first(v) -> int:
            return int(v[0] if isinstance(v, (list, tuple)) else v)

        return {"crop_size": first(obj.crop_size), "resize_size": first(obj.resize_size),
                "mean": [float(v) for v in obj.mean], "std": [float(v) for v in obj.std],
                "interpolation": getattr(obj, "interpolation", InterpolationMode.BILINEAR).value}
    raise TypeError(
        "get_preprocessing expected a Backbone, torchvision weights (e.g. ResNet18_Weights.DEFAULT), labkit "
        f"weights, a weights.transforms() preset or a dict; got {type(source).__name__}. Pass the backbone that "
        "load_backbone() returned."
    )


def make_eval_transform(source: Any) -> Callable:
    """Evaluation preprocessing: resize, centre crop, to tensor, normalize (values from the weights).

    Gives the same tensors as torchvision's ``weights.transforms()`` for PIL images.

    Example:
        >>> from torchvision.models import ResNet18_Weights
        >>> make_eval_transform(ResNet18_Weights.DEFAULT).transforms[1]
        CenterCrop(size=(224, 224))
    """
    p = get_preprocessing(source)
    return T.Compose([
        T.Resize(p["resize_size"], interpolation=InterpolationMode(p["interpolation"]), antialias=True),
        T.CenterCrop(p["crop_size"]),
        T.ToTensor(),
        T.Normalize(p["mean"], p["std"]),
    ])


def make_train_transform(source: Any, *, scale: tuple[float, float] = (0.5, 1.0), flip: bool = True) -> Callable:
    """Training preprocessing: random resized crop, horizontal flip, to tensor, normalize.

    Args:
        source: as for :func:`get_preprocessing`.
        scale: area range of the random crop (small datasets of centred objects like (0.5, 1)).
        flip: add a random horizontal flip.

    Example:
        >>> from torchvision.models import ResNet18_Weights
        >>> make_train_transform(ResNet18_Weights.DEFAULT).transforms[0].size
        (224, 224)
    """
    p = get_preprocessing(source)
    steps = [T.RandomResizedCrop(p["crop_size"], scale=scale, interpolation=InterpolationMode(p["interpolation"]),
                                 antialias=True)]
    if flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(p["mean"], p["std"])]
    return T.Compose(steps)


# --------------------------------------------------------------------------- bundled datasets
def _dataset_roots() -> list[Path]:
    roots = []
    if os.environ.get("LABKIT_DATASETS"):
        roots.append(Path(os.environ["LABKIT_DATASETS"]))
    roots.append(Path(__file__).resolve().parent.parent / "datasets")
    roots.append(Path.cwd() / "datasets")
    return roots


def get_bundled_dataset(name: str) -> Path:
    """The folder of a bundled dataset ("objects" or "cells"), with ``train/`` and ``val/`` inside.

    Looked up in ``$LABKIT_DATASETS``, the checkout's ``datasets/``, then ``./datasets``.

    Example:
        >>> get_bundled_dataset("objects").name
        'objects'
    """
    if name not in BUNDLED:
        raise ValueError(f"get_bundled_dataset expected one of {sorted(BUNDLED)}, got {name!r}.")
    for root in _dataset_roots():
        if (root / name / "train").is_dir():
            return root / name
    raise FileNotFoundError(
        f"bundled dataset {name!r} not found in {[str(r) for r in _dataset_roots()]}. It ships with the git "
        f"checkout (datasets/{name}); regenerate it from a checkout with "
        "`python -m tools.make_datasets --root DIR` and set "
        "LABKIT_DATASETS=DIR if labkit was installed without the checkout."
    )


# --------------------------------------------------------------------------- image folders
class FolderReport(NamedTuple):
    """What :func:`scan_image_folder` found. ``str(report)`` is a small table of class counts."""

    root: Path
    classes: list
    counts: dict
    samples: list  # (path, class index) of every readable image
    skipped: list  # (path, reason) of unreadable images
    ignored: int  # hidden files, non-image files, files outside class folders

    @property
    def imbalance(self) -> float:
        """Largest class count divided by the smallest."""
        return max(self.counts.values()) / min(self.counts.values())

    def __str__(self) -> str:
        width = max(len(c) for c in self.classes)
        top = max(self.counts.values())
        lines = [f"{self.root}: {len(self.samples)} images in {len(self.classes)} classes"]
        for c in self.classes:
            n = self.counts[c]
            lines.append(f"  {c.ljust(width)} {n:5d} {'#' * max(1, round(20 * n / top))}")
        lines.append(f"  imbalance (largest/smallest): {self.imbalance:.1f}x"
                     + ("  <- consider a weighted loss or sampler" if self.imbalance >= 2 else ""))
        if self.skipped:
            shown = ", ".join(Path(p).name for p, _ in self.skipped[:5])
            lines.append(f"  skipped {len(self.skipped)} unreadable: " + shown
                         + (" ..." if len(self.skipped) > 5 else ""))
        if self.ignored:
            lines.append(f"  ignored {self.ignored} hidden or non-image files")
        return "\n".join(lines)


def _readable(path: Path) -> str | None:
    """None if PIL can decode the image, else the reason it cannot."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEG: decode at reduced size, still reads every byte
            im.load()
        return None
    except Exception as e:  # PIL raises many types: UnidentifiedImageError, OSError, SyntaxError...
        return f"{type(e).__name__}: {e}"


def scan_image_folder(root: str | Path, *, min_classes: int = 2, check_images: bool = True) -> FolderReport:
    """Check a folder of class sub-folders and report what a training run would see.

    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) and non-image files are
    ignored; images that cannot be decoded are named in a warning and skipped; class folders
    left with no images are dropped with a warning.

    Args:
        root: a folder with one sub-folder of images per class.
        min_classes: fewest classes accepted (a classifier needs 2).
        check_images: decode every image to find unreadable ones (slower on large folders).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: no images, or fewer than ``min_classes`` classes with images.

    Example:
        >>> r = scan_image_folder(get_bundled_dataset("cells") / "train")
        >>> r.classes, r.imbalance
        (['dividing', 'elongated', 'fragmented', 'round'], 1.0)
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (or is not a folder). Expected a folder with "
                                "one sub-folder of images per class, e.g. photos/cats/*.jpg and photos/dogs/*.jpg.")
    ignored = 0
    samples_by_class: dict[str, list[str]] = {}
    skipped: list[tuple[str, str]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            ignored += 1 if entry.is_file() else 0
            continue
        if not entry.is_dir():
            ignored += 1
            continue
        good = []
        for dirpath, dirnames, filenames in os.walk(entry, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                path = Path(dirpath) / fn
                if fn.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                    ignored += 1
                    continue
                reason = _readable(path) if check_images else None
                if reason is None:
                    good.append(str(path))
                else:
                    skipped.append((str(path), reason))
        samples_by_class[entry.name] = good
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {root}: "
                      + "; ".join(f"{p} ({why})" for p, why in skipped[:10]) + (" ..." if len(skipped) > 10 else ""),
                      stacklevel=2)
    empty = [c for c, files in samples_by_class.items() if not files]
    if empty and len(empty) < len(samples_by_class):
        warnings.warn(f"class folder(s) {empty} in {root} hold no readable images and are left out.", stacklevel=2)
    classes = [c for c, files in samples_by_class.items() if files]
    if not classes:
        raise ValueError(
            f"no images found in {root}: expected one sub-folder per class holding image files "
            f"({', '.join(IMAGE_EXTENSIONS)}), e.g. {root}/cats/1.jpg, {root}/dogs/1.jpg; found "
            f"{len(samples_by_class)} sub-folder(s) and {ignored} ignored file(s)."
        )
    if len(classes) < min_classes:
        raise ValueError(
            f"found {len(classes)} class ({classes[0]!r}) in {root}, need at least {min_classes}: a classifier "
            f"learns to tell classes apart. Add a sub-folder of images for each other class, e.g. {root}/other/."
        )
    samples = [(p, i) for i, c in enumerate(classes) for p in samples_by_class[c]]
    counts = {c: len(samples_by_class[c]) for c in classes}
    return FolderReport(root, classes, counts, samples, skipped, ignored)


class _CheckedImageFolder(ImageFolder):
    """An ImageFolder over exactly the images a :class:`FolderReport` accepted."""

    def __init__(self, report: FolderReport, transform: Callable | None):
        self.report = report
        super().__init__(str(report.root), transform=transform)

    def find_classes(self, directory):
        return list(self.report.classes), {c: i for i, c in enumerate(self.report.classes)}

    def make_dataset(self, directory, class_to_idx, *args, **kwargs):
        return list(self.report.samples)


def load_image_folder(root: str | Path, *, transform: Callable | None = None, verbose: bool = True,
                      check_images: bool = True) -> ImageFolder:
    """A checked ``torchvision.datasets.ImageFolder`` over a folder of class sub-folders.

    Runs :func:`scan_image_folder` first (same warnings and errors), prints its report when
    ``verbose``, and keeps it as ``dataset.report``. Images are loaded as RGB (greyscale ones too).

    Example:
        >>> ds = load_image_folder(get_bundled_dataset("objects") / "val", verbose=False)
        >>> len(ds), len(ds.classes)
        (160, 8)
    """
    report = scan_image_folder(root, check_images=check_images)
    if report.imbalance >= 2:
        warnings.warn(f"classes in {report.root} are imbalanced: largest/smallest = {report.imbalance:.1f} "
                      f"({report.counts}). Accuracy alone will flatter the model; look at per-class results.",
                      stacklevel=2)
    if verbose:
        print(report)
    return _CheckedImageFolder(report, transform)


# --------------------------------------------------------------------------- torchvision datasets
def load_torchvision_dataset(name: str, *, root: str | Path = "data", split: str = "train",
                             transform: Callable | None = None, download: bool = True,
                             timeout: float = DOWNLOAD_TIMEOUT_S) -> Dataset:
    """A real dataset from torchvision ("flowers102" or "oxford_pets"), downloaded on first use.

    Needs network access the first time (Google Colab has it). Offline (``LABKIT_OFFLINE=1``)
    nothing is downloaded: a copy already under ``root`` is used, otherwise the error names the
    bundled alternative.

    Args:
        name: "flowers102" or "oxford_pets".
        root: download / cache folder.
        split: "train", "val" or "test" (Oxford pets has no val split: "val" gives "test").
        transform: applied to each PIL image.
        download: allow downloading.
        timeout: seconds before a stalled connection is given up.

    Raises:
        DatasetUnavailableError: it could not be downloaded or found; the message names the bundled dataset.
    """
    import torchvision.datasets as tvd

    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else name
    if key not in TORCHVISION_DATASETS:
        raise ValueError(f"load_torchvision_dataset expected one of {sorted(TORCHVISION_DATASETS)}, got {name!r}.")
    cls_name, splits = TORCHVISION_DATASETS[key]
    if split not in splits:
        raise ValueError(f"load_torchvision_dataset expected split in {sorted(splits)}, got {split!r}.")
    offline = is_offline()
    kwargs = {"split": splits[split], "transform": transform, "download": download and not offline}
    if key == "oxford_pets":
        kwargs["target_types"] = "category"
    try:
        with socket_timeout(timeout):
            ds = getattr(tvd, cls_name)(str(root), **kwargs)
    except Exception as e:  # URLError, timeouts, HTTP errors, "Dataset not found or corrupted"
        why = "offline mode (LABKIT_OFFLINE=1) allows no download" if offline else f"{type(e).__name__}: {e}"
        raise DatasetUnavailableError(
            f"could not get torchvision's {cls_name} into {root} ({why}). It is downloaded on first use, which "
            f"needs network access (Google Colab has it). Without network, use a bundled dataset instead: "
            f"make_loaders('objects', backbone=...) (everyday objects, drawn) or "
            f"make_loaders('cells', backbone=...) (microscopy-like, a distant domain)."
        ) from e
    if not hasattr(ds, "classes"):
        ds.classes = [str(i) for i in range(102)] if key == "flowers102" else sorted(set(map(str, ds._labels)))
    return ds


# --------------------------------------------------------------------------- loaders
class Loaders(NamedTuple):
    """Train and val loaders and the class names. ``num_classes`` is what ``replace_head`` needs."""

    train: DataLoader
    val: DataLoader
    classes: list

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _targets(ds) -> list[int]:
    if hasattr(ds, "targets"):
        return list(ds.targets)
    if hasattr(ds, "_labels"):
        return list(ds._labels)
    return [int(ds[i][1]) for i in range(len(ds))]


def _limit_per_class(ds, max_per_class: int | None, seed: int):
    """A deterministic subset with at most ``max_per_class`` items of each class (in file order)."""
    if max_per_class is None:
        return ds
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be a positive int or None, got {max_per_class!r}.")
    targets = _targets(ds)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in sorted(set(targets)):
        idx = [i for i, t in enumerate(targets) if t == c]
        perm = torch.randperm(len(idx), generator=g).tolist()
        keep += sorted(idx[j] for j in perm[:max_per_class])
    return Subset(ds, sorted(keep))


def _split(root: Path, val_fraction: float, seed: int, tf_train, tf_eval, verbose: bool):
    """One folder of classes, split stratified into train/val views with their own transforms."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction!r}.")
    train_full = load_image_folder(root, transform=tf_train, verbose=verbose)
    val_full = _CheckedImageFolder(train_full.report, tf_eval)
    g = torch.Generator().manual_seed(seed)
    tr, va = [], []
    for c in range(len(train_full.classes)):
        idx = [i for i, t in enumerate(train_full.targets) if t == c]
        perm = torch.randperm(len(idx), generator=g).tolist()
        n_val = max(1, math.floor(len(idx) * val_fraction)) if len(idx) > 1 else 0
        va += [idx[j] for j in perm[:n_val]]
        tr += [idx[j] for j in perm[n_val:]]
    return Subset(train_full, sorted(tr)), Subset(val_full, sorted(va)), train_full.classes



def resolve_transforms(backbone, train_transform, eval_transform, *, where: str):
    """The (train, eval) preprocessing: given ones win, else the backbone's own; refuse neither.

    Example:
        >>> resolve_transforms(None, None, None, where="make_loaders")   # doctest: +SKIP
        ValueError: make_loaders needs the preprocessing of the backbone you will train: ...
    """
    if backbone is not None:
        train_transform = train_transform or make_train_transform(backbone)
        eval_transform = eval_transform or make_eval_transform(backbone)
    if train_transform is None or eval_transform is None:
        raise ValueError(f"{where} needs the preprocessing of the backbone you will train: pass backbone=<what "
                         "load_backbone returned>, or both train_transform= and eval_transform=.")
    return train_transform, eval_transform

def make_loaders(source: str | Path, *, backbone: Any = None, train_transform: Callable | None = None,
                 eval_transform: Callable | None = None, batch_size: int = 32, max_per_class: int | None = None,
                 val_fraction: float = 0.2, seed: int = 0, num_workers: int = 0, pin_memory: bool | None = None,
                 data_root: str | Path = "data", verbose: bool = True) -> Loaders:
    """Train and val DataLoaders, with preprocessing that matches the backbone, and the class names.

    Args:
        source: a bundled dataset ("objects", "cells"), a torchvision one ("flowers102", "oxford_pets";
            downloads), or a folder: either with ``train/`` and ``val/`` class folders, or just class
            folders (then split, stratified, by ``val_fraction``).
        backbone: what :func:`labkit.models.load_backbone` returned (or its weights); gives both transforms.
        train_transform, eval_transform: explicit transforms instead of (or overriding) the backbone's.
        batch_size: images per batch.
        max_per_class: keep at most this many training images per class (deterministic, by ``seed``).
        val_fraction: share of each class held out when the folder has no val/ split.
        seed: fixes the shuffling, the subset and the split.
        num_workers: DataLoader worker processes.
        pin_memory: default: True when CUDA is available.
        data_root: download folder for torchvision datasets.
        verbose: print the class-count report.

    Example:
        >>> from labkit.models import load_backbone
        >>> bb = load_backbone("efficientnet_lite0", input_size=64, verbose=False)
        >>> dl = make_loaders("objects", backbone=bb, max_per_class=30, verbose=False)
        >>> dl.num_classes, len(dl.train.dataset), len(dl.val.dataset)
        (8, 240, 160)
    """
    train_transform, eval_transform = resolve_transforms(backbone, train_transform, eval_transform,
                                                         where="make_loaders")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    key = source.lower() if isinstance(source, str) else None
    key = _ALIASES.get(key, key)
    if key in BUNDLED:
        root = get_bundled_dataset(key)
        train_ds = load_image_folder(root / "train", transform=train_transform, verbose=verbose)
        val_ds = load_image_folder(root / "val", transform=eval_transform, verbose=verbose)
        classes = train_ds.classes
    elif key in TORCHVISION_DATASETS:
        train_ds = load_torchvision_dataset(key, root=data_root, split="train", transform=train_transform)
        val_ds = load_torchvision_dataset(key, root=data_root, split="val", transform=eval_transform)
        classes = list(train_ds.classes)
    else:
        root = Path(source)
        if not root.exists():
            raise FileNotFoundError(
                f"make_loaders got {source!r}: not a bundled dataset ({', '.join(BUNDLED)}), not a torchvision one "
                f"({', '.join(TORCHVISION_DATASETS)}) and not an existing folder."
            )
        if (root / "train").is_dir() and (root / "val").is_dir():
            train_ds = load_image_folder(root / "train", transform=train_transform, verbose=verbose)
            val_ds = load_image_folder(root / "val", transform=eval_transform, verbose=verbose)
            if val_ds.classes != train_ds.classes:
                raise ValueError(f"train/ and val/ in {root} have different classes: {train_ds.classes} vs "
                                 f"{val_ds.classes}. Give both the same class sub-folders.")
            classes = train_ds.classes
        else:
            train_ds, val_ds, classes = _split(root, val_fraction, seed, train_transform, eval_transform, verbose)
    train_ds = _limit_per_class(train_ds, max_per_class, seed)
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    g = torch.Generator().manual_seed(seed)
    common = {"batch_size": batch_size, "num_workers": num_workers, "pin_memory": pin,
              "persistent_workers": num_workers > 0}
    train = DataLoader(train_ds, shuffle=True, generator=g, **common)
    val = DataLoader(val_ds, shuffle=False, **common)
    return Loaders(train, val, list(classes))
