"""Real-image check of a backbone's features: pretrained vs random init vs raw pixels.

Offline, the course's backbone is EfficientNet-Lite0 with ImageNet weights. This module checks
on images nobody here drew that its features carry over: a linear probe on frozen pooled
features (the input of the classifier head), for three real-image tasks that packages ship:

* ``digits``: scikit-learn's 1,797 handwritten digits (8x8 greyscale), upsampled bilinearly and
  copied to 3 channels;
* ``photo_crops``: which photo a random crop came from, over scikit-image's and scikit-learn's
  sample photographs (one class per photo);
* ``faces``: scikit-image's LFW subset, 100 face and 100 non-face greyscale patches.

For each of several label draws, ``per_class`` labelled images per class train a
logistic-regression probe and the other images score it. Three arms see the same draws: the
pretrained backbone, the same architecture at random initialisation, and the raw pixels.

It also reports the first conv layer's structure against controls: labkit's Gabor-likeness
of the real filters, their phase-randomized surrogates and blurred white noise.

    python -m tools.probe                          # EfficientNet-Lite0, the offline backbone
    python -m tools.probe --backbone resnet18      # torchvision's (needs its weights cached)

Real images are for evaluation only; nothing trains on them but the probe itself.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ARMS",
    "PHOTOS",
    "TASKS",
    "ProbeResult",
    "load_digit_images",
    "load_photo_crops",
    "load_face_patches",
    "extract_pooled_features",
    "probe_accuracies",
    "measure_probe",
    "phase_randomize",
    "blurred_noise",
    "measure_filter_controls",
    "format_report",
    "main",
]

#: The three probe arms, in the order they are printed.
ARMS = ("pretrained", "random_init", "raw_pixels")


def _check_size(size) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8 pixels (the digits are 8x8), got {size!r}.")


def _need_sklearn():
    try:
        import sklearn  # noqa: F401 - imported only to check that it is installed
    except ImportError as e:  # pragma: no cover - scikit-learn is in requirements.txt
        raise ImportError(
            "the digits probe needs scikit-learn (its digits dataset and logistic regression); "
            "install it with `pip install 'scikit-learn>=1.2'`."
        ) from e


def load_digit_images(*, size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """scikit-learn's digits as float images N x 3 x size x size in [0, 1], and their labels.

    The 8x8 images (values 0..16) are scaled to [0, 1], upsampled bilinearly to ``size`` and
    copied to three channels.

    Example:
        >>> x, y = load_digit_images(size=16)
        >>> tuple(x.shape), int(y.max())
        ((1797, 3, 16, 16), 9)
    """
    _check_size(size)
    _need_sklearn()
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return x.repeat(1, 3, 1, 1), d.target.astype(np.int64)


@torch.no_grad()
def extract_pooled_features(model: torch.nn.Module, images: torch.Tensor, *, mean, std,
                            batch_size: int = 128) -> np.ndarray:
    """The model's pooled features (the input of its classifier head) for images in [0, 1], as numpy.

    The model is not changed: a forward pre-hook on the head (found by ``labkit.get_head``)
    records what enters it; the model's training mode is restored afterwards.

    Args:
        model: any classifier labkit can find the head of (torchvision or timm).
        images: N x 3 x H x W floats in [0, 1].
        mean, std: the per-channel normalisation the weights were trained with.
        batch_size: images per forward pass.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18(weights=None)
        >>> extract_pooled_features(m, torch.rand(2, 3, 64, 64), mean=[.5] * 3, std=[.2] * 3).shape
        (2, 512)
    """
    from labkit.heads import get_head

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"extract_pooled_features expects an nn.Module classifier, got {type(model).__name__}.")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be N x 3 x H x W, got shape {tuple(images.shape)}.")
    head = get_head(model)
    m = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
    grabbed: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda mod, inp: grabbed.append(inp[0].flatten(1)))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            model((images[i:i + batch_size] - m) / s)
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(grabbed).numpy()


#: scikit-image's and scikit-learn's sample photographs: one class each in ``photo_crops``.
PHOTOS = ("skimage:astronaut", "skimage:chelsea", "skimage:coffee", "skimage:rocket", "skimage:stereo_motorcycle",
          "skimage:immunohistochemistry", "skimage:hubble_deep_field", "sklearn:china.jpg", "sklearn:flower.jpg")


def _read_photo(name: str) -> np.ndarray:
    source, _, key = name.partition(":")
    if source == "skimage":
        from skimage import data

        image = getattr(data, key)()
        return np.asarray(image[0] if isinstance(image, tuple) else image)[..., :3]  # stereo pairs: the left
    from sklearn.datasets import load_sample_image

    return np.asarray(load_sample_image(key))


def load_photo_crops(*, size: int = 64, per_photo: int = 60, crop: int = 96, seed: int = 0
                     ) -> tuple[torch.Tensor, np.ndarray]:
    """Random ``crop`` x ``crop`` crops of the sample photographs, resized to ``size``; the label is the photo.

    Example:
        >>> x, y = load_photo_crops(size=16, per_photo=3)
        >>> tuple(x.shape), int(y.max())
        ((27, 3, 16, 16), 8)
    """
    _check_size(size)
    _need_sklearn()
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, name in enumerate(PHOTOS):
        img = torch.from_numpy(_read_photo(name).copy()).permute(2, 0, 1).float() / 255.0
        h, w = img.shape[1:]
        for _ in range(per_photo):
            top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
            xs.append(img[:, top:top + crop, left:left + crop])
            ys.append(label)
    x = F.interpolate(torch.stack(xs), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0), np.asarray(ys, dtype=np.int64)


def load_face_patches(*, size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """scikit-image's LFW subset: 100 face and 100 non-face 25x25 greyscale patches; label 1 is a face.

    Example:
        >>> x, y = load_face_patches(size=32)
        >>> tuple(x.shape), int(y.sum())
        ((200, 3, 32, 32), 100)
    """
    _check_size(size)
    from skimage import data

    x = torch.tensor(np.asarray(data.lfw_subset()), dtype=torch.float32)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return x.repeat(1, 3, 1, 1), np.repeat(np.array([1, 0], dtype=np.int64), 100)


#: The probe's real-image tasks: name -> loader(size) -> (images, labels).
TASKS = {"digits": lambda size: load_digit_images(size=size),
         "photo_crops": lambda size: load_photo_crops(size=size),
         "faces": lambda size: load_face_patches(size=size)}


def _draw(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    train = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes])
    return train, np.setdiff1d(np.arange(len(labels)), train)


def probe_accuracies(features: np.ndarray, labels: np.ndarray, *, per_class: int = 10,
                     seeds: Iterable[int] = range(10), C: float = 0.1) -> list[float]:
    """Val accuracy of a logistic-regression probe, one value per label draw (seed).

    Each draw takes ``per_class`` training images per class; the rest are the val set.
    Features are standardized on the training images; the probe is scikit-learn's
    ``LogisticRegression`` with inverse regularisation ``C``.

    Example:
        >>> rng = np.random.default_rng(0); y = np.repeat(np.arange(3), 20)
        >>> f = rng.normal(size=(60, 4)) + 3 * np.eye(4)[y]
        >>> min(probe_accuracies(f, y, per_class=5, seeds=[0, 1])) > 0.9
        True
    """
    _need_sklearn()
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features must be N x D with one label per row; got {features.shape} features "
                         f"and {labels.shape} labels.")
    smallest = int(np.bincount(labels).min())
    if isinstance(per_class, bool) or not isinstance(per_class, int) or not 1 <= per_class < smallest:
        raise ValueError(f"per_class must be an int in 1..{smallest - 1} (the smallest class has {smallest} "
                         f"images and some must be left for val), got {per_class!r}.")
    out = []
    for seed in seeds:
        train, val = _draw(labels, per_class, int(seed))
        scaler = StandardScaler().fit(features[train])
        clf = LogisticRegression(C=C, max_iter=3000).fit(scaler.transform(features[train]), labels[train])
        out.append(float(clf.score(scaler.transform(features[val]), labels[val])))
    if not out:
        raise ValueError("seeds is empty; give at least two label draws, e.g. seeds=range(10).")
    return out


@dataclass(frozen=True)
class ProbeResult:
    """One probe task: per-seed accuracies of each arm and the two paired differences.

    Fields: ``task``, ``accuracies`` ({arm: [val accuracy per label draw]}), ``per_class``, ``seeds``,
    ``vs_random`` and ``vs_raw`` (``labkit.stats.PairedDifference``, pretrained minus the arm).
    """

    task: str
    accuracies: dict
    per_class: int
    seeds: tuple
    vs_random: object = field(repr=False)
    vs_raw: object = field(repr=False)

    def mean(self, arm: str) -> float:
        """Mean val accuracy of one arm over the label draws."""
        return float(np.mean(self.accuracies[arm]))

    def to_dict(self) -> dict:
        return {"task": self.task, "per_class": self.per_class, "seeds": list(self.seeds),
                "mean": {a: round(self.mean(a), 4) for a in ARMS},
                "se": {a: round(float(np.std(self.accuracies[a], ddof=1) / np.sqrt(len(self.seeds))), 4)
                       for a in ARMS},
                "pretrained_minus_random": {"diff": round(self.vs_random.mean, 4), "se": round(self.vs_random.se, 4)},
                "pretrained_minus_raw": {"diff": round(self.vs_raw.mean, 4), "se": round(self.vs_raw.se, 4)}}


def _backbones(name: str, init_seed: int):
    from labkit.models import load_backbone

    pretrained = load_backbone(name, verbose=False)
    torch.manual_seed(init_seed)
    random_init = load_backbone(name, pretrained=False, verbose=False)
    return pretrained, random_init


def measure_probe(backbone: str = "efficientnet_lite0", *, task: str = "digits", per_class: int = 10,
                  seeds: Iterable[int] = range(10), init_seed: int = 0, C: float = 0.1, images=None,
                  models=None) -> ProbeResult:
    """One real-image probe task for a backbone: pretrained vs random init vs raw pixels.

    Args:
        backbone: a name :func:`labkit.models.load_backbone` takes (offline: EfficientNet-Lite0).
        task: a key of :data:`TASKS` (``"digits"``, ``"photo_crops"``).
        per_class: labelled images per class for each draw.
        seeds: label draws (the same draws for every arm).
        init_seed: torch seed of the random-init network.
        C: inverse regularisation of the logistic regression.
        images: ``(x, y)`` to use instead of the task's loader (tests pass small ones).
        models: ``(pretrained, random_init)`` Backbones, to reuse across tasks.

    Example:
        >>> r = measure_probe(seeds=range(3))
        >>> sorted(r.accuracies) == sorted(ARMS)
        True
    """
    from labkit.stats import paired_difference

    if task not in TASKS:
        raise ValueError(f"measure_probe expected task to be one of {sorted(TASKS)}, got {task!r}.")
    seeds = tuple(int(s) for s in seeds)
    if len(seeds) < 2:
        raise ValueError(f"measure_probe needs at least 2 label draws for a standard error, got seeds={seeds}.")
    pretrained, random_init = models if models is not None else _backbones(backbone, init_seed)
    size = pretrained.meta["input_size"]
    x, y = TASKS[task](size) if images is None else images
    mean, std = pretrained.meta["mean"], pretrained.meta["std"]
    feats = {
        "pretrained": extract_pooled_features(pretrained.model, x, mean=mean, std=std),
        "random_init": extract_pooled_features(random_init.model, x, mean=mean, std=std),
        "raw_pixels": F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True).flatten(1).numpy(),
    }
    acc = {arm: probe_accuracies(f, y, per_class=per_class, seeds=seeds, C=C) for arm, f in feats.items()}
    return ProbeResult(
        task=task, accuracies=acc, per_class=per_class, seeds=seeds,
        vs_random=paired_difference(acc["pretrained"], acc["random_init"], names=("pretrained", "random init")),
        vs_raw=paired_difference(acc["pretrained"], acc["raw_pixels"], names=("pretrained", "raw pixels")),
    )


def phase_randomize(weight: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """Surrogate filters: each filter keeps its amplitude spectrum, its phases are drawn at random.

    Every channel of every filter gets its own random phases (those of a white-noise image's
    spectrum, so the result stays real), replacing its own. A surrogate is as smooth as the
    filter it comes from but has no edges, stripes or colour-opponent layout, so what a
    Gabor-likeness score keeps on surrogates is what smoothness alone earns.

    Example:
        >>> w = torch.randn(4, 3, 7, 7)
        >>> s = phase_randomize(w)
        >>> torch.allclose(torch.fft.fft2(s).abs(), torch.fft.fft2(w).abs(), atol=1e-4)
        True
    """
    w = torch.as_tensor(weight).detach().to("cpu", torch.float64)
    if w.dim() != 4:
        raise ValueError(f"phase_randomize expects a 4-D conv weight (out x in x h x w), got shape {tuple(w.shape)}.")
    g = torch.Generator().manual_seed(seed)
    phase = torch.fft.fft2(torch.randn(w.shape, generator=g, dtype=torch.float64)).angle()
    spec = torch.fft.fft2(w)
    phase[..., 0, 0] = spec[..., 0, 0].angle()  # keep each channel's flat average (its sign too)
    return torch.fft.ifft2(spec.abs() * torch.exp(1j * phase)).real.to(torch.float32)


def blurred_noise(shape=(32, 3, 3, 3), *, sigma: float = 1.5, seed: int = 0) -> torch.Tensor:
    """White noise blurred with a Gaussian of ``sigma`` pixels (zero padding): smooth filters with no structure.

    Example:
        >>> tuple(blurred_noise((2, 3, 7, 7)).shape)
        (2, 3, 7, 7)
    """
    n, c, h, w = shape
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 pixels, got {sigma!r}.")
    r = int(np.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g1 = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g1 = g1 / g1.sum()
    kernel = (g1[:, None] * g1[None, :])[None, None]
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n * c, 1, h, w, generator=gen)
    return F.conv2d(noise, kernel, padding=r).reshape(n, c, h, w)


def measure_filter_controls(weight: torch.Tensor, *, seeds: Iterable[int] = range(5), sigma: float = 1.5) -> dict:
    """Mean Gabor-likeness of first-layer filters, their phase-randomized surrogates and blurred noise.

    Surrogates and noise are averaged over ``seeds``. ``gap`` is real minus surrogates.

    Example:
        >>> from labkit.filters import gabor_bank
        >>> measure_filter_controls(gabor_bank(7), seeds=[0])["real"]
        1.0
    """
    from labkit.filters import gabor_likeness

    w = torch.as_tensor(weight).detach().float()
    seeds = list(seeds)
    real = gabor_likeness(w).mean().item()
    surr = float(np.mean([gabor_likeness(phase_randomize(w, seed=s)).mean().item() for s in seeds]))
    noise = float(np.mean([gabor_likeness(blurred_noise(tuple(w.shape), sigma=sigma, seed=s)).mean().item()
                           for s in seeds]))
    return {"real": round(real, 3), "phase_randomized": round(surr, 3), "blurred_noise": round(noise, 3),
            "gap": round(real - surr, 3)}


def format_report(probe: ProbeResult, controls: dict | None = None, *, title: str = "") -> str:
    """The printed table: mean ± standard error per arm, the paired differences, the first-layer controls."""
    n = len(probe.seeds)
    lines = [title] if title else []
    lines += [f"{probe.task} probe: {probe.per_class} labelled images per class, {n} label draws, "
              "logistic regression on frozen pooled features",
              "| features | val accuracy | se |", "|---|---|---|"]
    names = {"pretrained": "pretrained", "random_init": "same network, random init",
             "raw_pixels": "raw pixels (32x32)"}
    for arm in ARMS:
        a = probe.accuracies[arm]
        lines.append(f"| {names[arm]} | {np.mean(a):.3f} | {np.std(a, ddof=1) / np.sqrt(n):.3f} |")
    lines += [str(probe.vs_random), str(probe.vs_raw)]
    if controls is not None:
        lines.append(f"first-layer Gabor-likeness: real {controls['real']:.3f}, phase-randomized surrogates "
                     f"{controls['phase_randomized']:.3f} (gap {controls['gap']:+.3f}), blurred white noise "
                     f"{controls['blurred_noise']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.probe [--backbone efficientnet_lite0] [--per-class 10] [--draws 10]``"""
    p = argparse.ArgumentParser(prog="python -m tools.probe", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="efficientnet_lite0", help="a load_backbone name (default: the offline one)")
    p.add_argument("--per-class", type=int, default=10, help="labelled images per class")
    p.add_argument("--draws", type=int, default=10, help="label draws (seeds 0..N-1)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from labkit.filters import first_conv

    models = _backbones(a.backbone, 0)
    print(models[0].describe())
    for task in TASKS:
        probe = measure_probe(a.backbone, task=task, per_class=a.per_class, seeds=range(a.draws), models=models)
        print(format_report(probe))
        print()
    name, conv = first_conv(models[0].model)
    weight = conv.weight
    print(f"first-layer controls ({name}, {tuple(weight.shape)}): {measure_filter_controls(weight)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
