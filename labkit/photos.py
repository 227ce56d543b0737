"""A lesson's dataset from one choice: the bundled images offline, a few hundred real photos in Colab.

``load_lesson_data(DATA, backbone=backbone)`` is the one call a lesson makes, with ``DATA``
set once at the top of the notebook:

* ``"bundled"`` (or ``"objects"`` / ``"cells"``): the procedural 72 px images that ship with
  the course (no download).
* ``"pets"``: a few breeds of the Oxford-IIIT Pet photos (torchvision's ``OxfordIIITPet``).
* ``"flowers"``: a few species of the Oxford Flowers-102 photos (torchvision's ``Flowers102``).
* ``"auto"`` (the default): ``$LABKIT_DATA`` when set; else in Google Colab (with network)
  the flowers; else the bundled images. If the download fails under ``"auto"``, the lesson
  carries on with the bundled images and says so; an explicit ``"pets"``/``"flowers"`` fails
  loudly instead.

The real sets are downloaded once, through torchvision (which checks each archive's md5),
into ``root`` (default ``$LABKIT_PHOTOS`` or ``./data``; in Colab ``/content/data``, kept for
the session). What is
downloaded is the whole archive, though a lesson uses only a few hundred of its images:

=========  ================================================  ==========================
choice     files (from www.robots.ox.ac.uk, via torchvision)  download
=========  ================================================  ==========================
flowers    102flowers.tgz + imagelabels.mat + setid.mat      345 MB (328.9 MiB), 8,189 photos
pets       images.tar.gz + annotations.tar.gz                811 MB (773.5 MiB), 7,390 photos
=========  ================================================  ==========================

The images are then read straight from torchvision's on-disk layout
(``flowers-102/jpg/image_NNNNN.jpg`` with ``imagelabels.mat``; ``oxford-iiit-pet/images/*.jpg``
with ``annotations/trainval.txt`` and ``test.txt``), pooled over the official splits, and split
again, stratified and seeded, into ``per_class`` training and ``val_per_class`` validation
images per class. Reading the Flowers-102 labels needs scipy (Colab has it).
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from labkit._env import is_offline, socket_timeout
from labkit.data import BUNDLED, DatasetUnavailableError, Loaders, make_loaders, resolve_transforms

__all__ = [
    "CHOICES",
    "PHOTO_SETS",
    "PhotoSet",
    "resolve_choice",
    "describe_download",
    "download_photos",
    "list_photos",
    "load_lesson_data",
]

CHOICES = ("auto", "bundled", "objects", "cells", "pets", "flowers")
_ALIASES = {"oxford_pets": "pets", "oxfordiiitpet": "pets", "flowers102": "flowers", "flowers-102": "flowers"}
#: What "auto" picks in Colab: the smaller download.
COLAB_DEFAULT = "flowers"
# Assumed range of download speeds from the Oxford server to Colab (MB/s), for the estimate only:
# the real time is measured and printed after the download.
_SPEED_MB_S = (5.0, 25.0)
_UNPACK_S_PER_1000_FILES = 2.0


@dataclass(frozen=True)
class PhotoSet:
    """A real photo dataset: its torchvision class, folder, download size and the classes a lesson uses."""

    key: str
    title: str
    torchvision_class: str
    folder: str
    download_mb: float
    files: str
    n_photos: int
    default_classes: tuple


PHOTO_SETS = {
    "flowers": PhotoSet("flowers", "Oxford Flowers-102", "Flowers102", "flowers-102", 344.9,
                        "102flowers.tgz (344.9 MB) + imagelabels.mat + setid.mat (15 kB)", 8189,
                        ("sunflower", "rose", "water lily", "passion flower", "bishop of llandaff")),
    "pets": PhotoSet("pets", "Oxford-IIIT Pet", "OxfordIIITPet", "oxford-iiit-pet", 811.1,
                     "images.tar.gz (791.9 MB) + annotations.tar.gz (19.2 MB)", 7390,
                     ("Abyssinian", "Bombay", "Persian", "Pug", "Samoyed")),
}


def _in_colab() -> bool:
    return "google.colab" in sys.modules




def _normalise(choice: Any) -> str:
    if not isinstance(choice, str):
        raise TypeError(f"the data choice must be a string, one of {', '.join(CHOICES)}; got {type(choice).__name__}.")
    key = _ALIASES.get(choice.strip().lower(), choice.strip().lower())
    if key not in CHOICES:
        raise ValueError(f"unknown data choice {choice!r}: expected one of {', '.join(CHOICES)} "
                         "(\"auto\": bundled images offline, real photos in Colab).")
    return key


def resolve_choice(choice: str = "auto") -> str:
    """What a data choice means here: "objects", "cells", "pets" or "flowers".

    ``"bundled"`` is ``"objects"``. ``"auto"`` is ``$LABKIT_DATA`` when set, else
    ``"flowers"`` in Colab (unless ``LABKIT_OFFLINE=1``), else ``"objects"``.

    Example:
        >>> resolve_choice("bundled"), resolve_choice("pets")
        ('objects', 'pets')
    """
    key = _normalise(choice)
    if key == "auto":
        forced = os.environ.get("LABKIT_DATA", "").strip()
        if forced:
            key = _normalise(forced)
            if key == "auto":
                raise ValueError("LABKIT_DATA=auto would loop; set it to bundled, objects, cells, pets or flowers.")
        elif _in_colab() and not is_offline():
            key = COLAB_DEFAULT
        else:
            key = "bundled"
    return "objects" if key == "bundled" else key


def describe_download(choice: str) -> str:
    """One line: what downloading a real set fetches and about how long it takes.

    The time is a range for download speeds of 5-25 MB/s plus unpacking; the actual time
    is measured and printed when the download happens.

    Example:
        >>> describe_download("flowers")[:47]
        'Oxford Flowers-102: 345 MB to download once (10'
    """
    key = _normalise(choice)
    if key not in PHOTO_SETS:
        raise ValueError(f"describe_download expected 'pets' or 'flowers', got {choice!r}.")
    spec = PHOTO_SETS[key]
    unpack = spec.n_photos / 1000 * _UNPACK_S_PER_1000_FILES
    low, high = spec.download_mb / _SPEED_MB_S[1] + unpack, spec.download_mb / _SPEED_MB_S[0] + unpack
    return (f"{spec.title}: {spec.download_mb:.0f} MB to download once ({spec.files}), about "
            f"{_round_time(low)} to {_round_time(high)} at {_SPEED_MB_S[0]:.0f}-{_SPEED_MB_S[1]:.0f} MB/s "
            "including unpacking")


def _round_time(seconds: float) -> str:
    if seconds < 60:
        return f"{max(10, round(seconds / 10) * 10):.0f} s"
    return f"{round(seconds / 30) / 2:g} min"


# --------------------------------------------------------------------------- torchvision's on-disk layout
def _present(key: str, root: Path) -> bool:
    base = root / PHOTO_SETS[key].folder
    if key == "flowers":
        return (base / "jpg").is_dir() and (base / "imagelabels.mat").is_file()
    return (base / "images").is_dir() and (base / "annotations" / "trainval.txt").is_file()


def download_photos(choice: str, *, root: str | Path = "data", timeout: float = 60.0, verbose: bool = True) -> Path:
    """Download a real set once through torchvision (md5-checked); a copy already under ``root`` is reused.

    Args:
        choice: "pets" or "flowers".
        root: the download folder.
        timeout: seconds before a stalled connection is given up.
        verbose: print what is downloaded, the estimate before and the measured time after.

    Returns:
        the dataset's folder (``root/flowers-102`` or ``root/oxford-iiit-pet``).

    Raises:
        DatasetUnavailableError: no copy under ``root`` and the download failed (no network,
            ``LABKIT_OFFLINE=1``); the message names the bundled alternative.
    """
    import torchvision.datasets as tvd

    key = _normalise(choice)
    if key not in PHOTO_SETS:
        raise ValueError(f"download_photos expected 'pets' or 'flowers', got {choice!r}.")
    spec, root = PHOTO_SETS[key], Path(root)
    if _present(key, root):
        if verbose:
            print(f"{spec.title}: using the copy in {root / spec.folder} (no download)")
        return root / spec.folder
    if is_offline():
        raise DatasetUnavailableError(
            f"{spec.title} is not in {root / spec.folder} and LABKIT_OFFLINE=1 allows no download. Use the bundled "
            "images (DATA = \"bundled\"), or unset LABKIT_OFFLINE where there is network access (Colab has it)."
        )
    if verbose:
        print(f"downloading {describe_download(key)} into {root}/ ...", flush=True)
    start = time.perf_counter()
    kwargs = {"download": True}
    if key == "pets":
        kwargs["target_types"] = "category"
    try:
        with socket_timeout(timeout):
            getattr(tvd, spec.torchvision_class)(str(root), **kwargs)
    except Exception as e:  # URLError, timeouts, HTTP errors, md5 mismatch, a missing scipy
        raise DatasetUnavailableError(
            f"could not download {spec.title} into {root} ({type(e).__name__}: {e}). It needs network access once "
            "(Google Colab has it) and, for Flowers-102, scipy. Without them use the bundled images: "
            "DATA = \"bundled\"."
        ) from e
    if verbose:
        print(f"{spec.title}: downloaded and unpacked in {time.perf_counter() - start:.0f} s; later runs reuse it")
    return root / spec.folder


def list_photos(choice: str, *, root: str | Path = "data") -> tuple[list, list]:
    """Every photo of a real set in torchvision's layout under ``root``, all official splits pooled.

    Returns:
        ``(samples, class_names)``: ``samples`` is a list of ``(path, class index)``.

    Example:
        >>> samples, names = list_photos("pets", root="data")  # doctest: +SKIP
        >>> len(names)
        37
    """
    key = _normalise(choice)
    if key not in PHOTO_SETS:
        raise ValueError(f"list_photos expected 'pets' or 'flowers', got {choice!r}.")
    root = Path(root)
    base = root / PHOTO_SETS[key].folder
    if not _present(key, root):
        raise FileNotFoundError(f"no {PHOTO_SETS[key].title} under {base}: expected torchvision's layout there; "
                                f"download it with download_photos({key!r}, root={str(root)!r}).")
    if key == "flowers":
        import torchvision.datasets as tvd
        from scipy.io import loadmat

        labels = loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"]
        labels = [int(v) - 1 for v in (labels.tolist() if hasattr(labels, "tolist") else [labels])]
        names = list(getattr(tvd.Flowers102, "classes", [])) or [f"flower {i + 1:03d}" for i in range(102)]
        samples = [(base / "jpg" / f"image_{i:05d}.jpg", c) for i, c in enumerate(labels, 1)]
        return [(p, c) for p, c in samples if p.is_file()], names
    ids: dict[str, int] = {}
    for split in ("trainval", "test"):
        path = base / "annotations" / f"{split}.txt"
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and not line.startswith("#"):
                    ids[parts[0]] = int(parts[1]) - 1
    raw = {}
    for image_id, c in ids.items():
        raw.setdefault(c, image_id.rsplit("_", 1)[0])
    dense = {c: i for i, c in enumerate(sorted(raw))}  # torchvision's order: by label
    names = [" ".join(part.title() for part in raw[c].split("_")) for c in sorted(raw)]
    samples = [(base / "images" / f"{image_id}.jpg", dense[c]) for image_id, c in sorted(ids.items())]
    return [(p, c) for p, c in samples if p.is_file()], names


class _Photos(Dataset):
    """(path, label) pairs as (transformed RGB image, label); JPEGs decoded at reduced size when that is enough."""

    def __init__(self, samples: list, classes: list, transform: Callable | None, draft: int | None):
        self.samples, self.classes, self.transform, self.draft = samples, classes, transform, draft
        self.targets = [c for _, c in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        with Image.open(path) as im:
            if self.draft:
                im.draft("RGB", (self.draft, self.draft))  # JPEG only: decode at >= this size, faster
            image = im.convert("RGB")
        return (self.transform(image) if self.transform else image), label


def _pick_classes(names: list, wanted: Sequence[str | int] | None, default: tuple) -> list[int]:
    wanted = list(default if wanted is None else wanted)
    if len(wanted) < 2:
        raise ValueError(f"need at least 2 classes to classify, got {wanted!r}.")
    lowered = {n.lower(): i for i, n in enumerate(names)}
    picked = []
    for w in wanted:
        if isinstance(w, int) and not isinstance(w, bool) and 0 <= w < len(names):
            picked.append(w)
        elif isinstance(w, str) and w.lower() in lowered:
            picked.append(lowered[w.lower()])
        else:
            raise ValueError(f"class {w!r} is not in this dataset; expected a name or index among "
                             f"{len(names)} classes, e.g. {', '.join(names[:6])}.")
    return picked


def _draft_size(transform: Callable | None) -> int | None:
    sizes = []
    for step in getattr(transform, "transforms", []):
        size = getattr(step, "size", None)
        if isinstance(size, int):
            sizes.append(size)
        elif isinstance(size, (tuple, list)) and size:
            sizes.append(int(max(size)))
    return 2 * max(sizes) if sizes else None


def _real_loaders(key: str, *, train_transform, eval_transform, classes, per_class: int, val_per_class: int,
                  batch_size: int, root: Path, seed: int, num_workers: int, pin: bool, download: bool,
                  verbose: bool) -> Loaders:
    spec = PHOTO_SETS[key]
    if download:  # always said, even with verbose=False: the learner should know what is downloaded and how long
        download_photos(key, root=root, verbose=True)
    samples, names = list_photos(key, root=root)
    chosen = _pick_classes(names, classes, spec.default_classes)
    g = torch.Generator().manual_seed(seed)
    train, val, short = [], [], []
    for new, old in enumerate(chosen):
        paths = [p for p, c in samples if c == old]
        if len(paths) < 2:
            raise ValueError(f"class {names[old]!r} has {len(paths)} photo(s) under {root / spec.folder}; "
                             f"need at least 2.")
        order = torch.randperm(len(paths), generator=g).tolist()
        n_val = min(val_per_class, max(1, len(paths) // 3))
        n_train = min(per_class, len(paths) - n_val)
        if n_train < per_class or n_val < val_per_class:
            short.append(f"{names[old]} ({len(paths)})")
        val += [(paths[j], new) for j in order[:n_val]]
        train += [(paths[j], new) for j in order[n_val:n_val + n_train]]
    if short:
        warnings.warn(f"fewer photos than asked for in: {', '.join(short)}; using what there is.", stacklevel=3)
    class_names = [names[i] for i in chosen]
    common = {"batch_size": batch_size, "num_workers": num_workers, "pin_memory": pin,
              "persistent_workers": num_workers > 0}
    train_ds = _Photos(train, class_names, train_transform, _draft_size(train_transform))
    val_ds = _Photos(val, class_names, eval_transform, _draft_size(eval_transform))
    loaders = Loaders(DataLoader(train_ds, shuffle=True, generator=torch.Generator().manual_seed(seed), **common),
                      DataLoader(val_ds, shuffle=False, **common), class_names)
    if verbose:
        print(f"data: {spec.title}, {len(class_names)} classes ({', '.join(class_names)}): "
              f"{len(train)} training and {len(val)} validation photos")
    return loaders


def load_lesson_data(choice: str = "auto", *, backbone: Any = None, train_transform: Callable | None = None,
                     eval_transform: Callable | None = None, classes: Sequence[str | int] | None = None,
                     per_class: int = 30, val_per_class: int = 20, batch_size: int = 32, root: str | Path | None = None,
                     seed: int = 0, num_workers: int | None = None, pin_memory: bool | None = None,
                     download: bool = True, verbose: bool = True) -> Loaders:
    """Train and val loaders for a lesson, from one choice: bundled images, pets or flowers.

    Args:
        choice: "auto", "bundled" ("objects"), "cells", "pets" or "flowers"; see the module docstring.
        backbone: what :func:`labkit.models.load_backbone` returned; gives the preprocessing
            (224 px for torchvision weights, 112 px for the offline EfficientNet-Lite0).
        train_transform, eval_transform: explicit preprocessing instead of the backbone's.
        classes: for a real set, class names or indices (default: 5 distinct ones).
        per_class: training images per class (bundled: at most this many).
        val_per_class: validation images per class for a real set (the bundled sets have their own val/).
        batch_size: images per batch.
        root: download folder for the real sets; default ``$LABKIT_PHOTOS`` or ``./data``.
        seed: fixes the subset, the split and the shuffling.
        num_workers: DataLoader workers; default 2 for real photos on CUDA (JPEG decoding), else 0.
        pin_memory: default: True when CUDA is available.
        download: allow downloading a real set that is not under ``root`` yet.
        verbose: say what was loaded. A download always says its size, the time it should take
            and the time it took.

    Returns:
        :class:`labkit.data.Loaders` ``(train, val, classes)``.

    Raises:
        DatasetUnavailableError: an explicitly chosen real set could not be downloaded or found.

    Example:
        >>> from labkit.models import load_backbone
        >>> bb = load_backbone("efficientnet_lite0", input_size=64, verbose=False)
        >>> data = load_lesson_data("bundled", backbone=bb, verbose=False)
        >>> data.num_classes, len(data.train.dataset)
        (8, 240)
    """
    asked = _normalise(choice)
    key = resolve_choice(asked)
    for name, value in (("per_class", per_class), ("val_per_class", val_per_class), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    train_transform, eval_transform = resolve_transforms(backbone, train_transform, eval_transform,
                                                         where="load_lesson_data")
    root = Path(os.environ.get("LABKIT_PHOTOS", "data") if root is None else root)
    cuda = torch.cuda.is_available()
    pin = cuda if pin_memory is None else pin_memory
    if key in PHOTO_SETS:
        workers = (2 if cuda else 0) if num_workers is None else num_workers
        try:
            return _real_loaders(key, train_transform=train_transform, eval_transform=eval_transform, classes=classes,
                                 per_class=per_class, val_per_class=val_per_class, batch_size=batch_size,
                                 root=root, seed=seed, num_workers=workers, pin=pin, download=download,
                                 verbose=verbose)
        except DatasetUnavailableError as e:
            if asked != "auto":
                raise
            print(f"NOTE: {e}\n-> carrying on with the bundled images (DATA = \"bundled\"); set DATA = {key!r} "
                  "to insist on the real photos.")
            key = "objects"
    if key not in BUNDLED:  # pragma: no cover - CHOICES and BUNDLED agree
        raise ValueError(f"unknown bundled dataset {key!r}")
    loaders = make_loaders(key, train_transform=train_transform, eval_transform=eval_transform, batch_size=batch_size,
                           max_per_class=per_class, seed=seed, num_workers=num_workers or 0, pin_memory=pin,
                           verbose=False)
    if verbose:
        print(f"data: bundled {key!r} ({BUNDLED[key]}): {len(loaders.train.dataset)} training and "
              f"{len(loaders.val.dataset)} validation images")
    return loaders
