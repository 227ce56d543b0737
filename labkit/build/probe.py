"""Real-image check of the micro-backbone: a linear probe on scikit-learn's handwritten digits.

The bundled micro-backbone is pretrained on images drawn by labkit's own code, so it is easy
to fool ourselves about what it has learned. This module measures it on images nobody here
drew: scikit-learn's 1,797 handwritten digits (8x8 greyscale), upsampled to 64 px (bilinear)
and copied to 3 channels. For each of several label draws, ``per_class`` labelled images per
class train a logistic-regression probe on frozen pooled features (``avgpool`` output, 512
numbers) and the other images score it. Three arms see the same draws: the pretrained
backbone, the same network at random initialisation, and the raw pixels.

It also checks that ``conv1`` has structure beyond smoothness: labkit's Gabor-likeness of the
real filters against their phase-randomized surrogates (each filter keeps its amplitude
spectrum, its phases are drawn at random) and against blurred white noise.

    python -m labkit.build.probe                        # the bundled weights
    python -m labkit.build.probe --weights-file X.pt    # another weights file

Real images are for evaluation only; they never enter pretraining.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ARMS",
    "ProbeResult",
    "load_digit_images",
    "extract_pooled_features",
    "probe_accuracies",
    "measure_digits_probe",
    "phase_randomize",
    "blurred_noise",
    "measure_filter_controls",
    "format_report",
    "main",
]

#: The three probe arms, in the order they are printed.
ARMS = ("pretrained", "random_init", "raw_pixels")


def _need_sklearn():
    try:
        import sklearn  # noqa: F401
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
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8 (the digits are 8x8), got {size!r}.")
    _need_sklearn()
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return x.repeat(1, 3, 1, 1), d.target.astype(np.int64)


@torch.no_grad()
def extract_pooled_features(model: torch.nn.Module, images: torch.Tensor, *, mean, std,
                            batch_size: int = 256) -> np.ndarray:
    """The model's pooled features (the input of ``fc``) for images in [0, 1], as a numpy array.

    The model is not changed: ``fc`` is bypassed with a forward hook on ``avgpool``.

    Args:
        model: a torchvision ResNet (``avgpool`` and ``fc``), e.g. the micro-backbone.
        images: N x 3 x H x W floats in [0, 1].
        mean, std: the per-channel normalisation the weights were trained with.
        batch_size: images per forward pass.

    Example:
        >>> from labkit.models import build_micro_resnet
        >>> extract_pooled_features(build_micro_resnet(3), torch.rand(2, 3, 64, 64), mean=[.5] * 3, std=[.2] * 3).shape
        (2, 512)
    """
    if not hasattr(model, "avgpool"):
        raise TypeError(f"extract_pooled_features expects a torchvision ResNet (with .avgpool), got {type(model).__name__}.")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be N x 3 x H x W, got shape {tuple(images.shape)}.")
    m = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
    grabbed: list[torch.Tensor] = []
    hook = model.avgpool.register_forward_hook(lambda mod, inp, out: grabbed.append(out.flatten(1)))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            model((images[i:i + batch_size] - m) / s)
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(grabbed).numpy()


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
    """The digits probe: per-seed accuracies of each arm and the two paired differences.

    Fields: ``accuracies`` ({arm: [val accuracy per label draw]}), ``per_class``, ``seeds``,
    ``vs_random`` and ``vs_raw`` (``labkit.stats.PairedDifference``, pretrained minus the arm).
    """

    accuracies: dict
    per_class: int
    seeds: tuple
    vs_random: object = field(repr=False)
    vs_raw: object = field(repr=False)

    def mean(self, arm: str) -> float:
        """Mean val accuracy of one arm over the label draws."""
        return float(np.mean(self.accuracies[arm]))

    def to_dict(self) -> dict:
        return {"per_class": self.per_class, "seeds": list(self.seeds),
                "mean": {a: round(self.mean(a), 4) for a in ARMS},
                "se": {a: round(float(np.std(self.accuracies[a], ddof=1) / np.sqrt(len(self.seeds))), 4)
                       for a in ARMS},
                "pretrained_minus_random": {"diff": round(self.vs_random.mean, 4), "se": round(self.vs_random.se, 4)},
                "pretrained_minus_raw": {"diff": round(self.vs_raw.mean, 4), "se": round(self.vs_raw.se, 4)}}


def _random_init(num_classes: int, seed: int) -> torch.nn.Module:
    from labkit.models import build_micro_resnet

    torch.manual_seed(seed)
    return build_micro_resnet(num_classes)


def measure_digits_probe(weights_file: str | Path | None = None, *, per_class: int = 10,
                         seeds: Iterable[int] = range(10), init_seed: int = 0, C: float = 0.1,
                         images=None) -> ProbeResult:
    """The digits probe for a micro-backbone weights file: pretrained vs random init vs raw pixels.

    Args:
        weights_file: a ``.pt`` written by ``python -m labkit pretrain`` (its ``.json`` beside
            it); default: the bundled weights.
        per_class: labelled images per class for each draw.
        seeds: label draws (the same draws for every arm).
        init_seed: torch seed of the random-init network.
        C: inverse regularisation of the logistic regression.
        images: ``(x, y)`` to use instead of :func:`load_digit_images` (tests pass small ones).

    Example:
        >>> r = measure_digits_probe(seeds=range(3))
        >>> sorted(r.accuracies) == sorted(ARMS)
        True
    """
    from labkit.models import load_backbone
    from labkit.stats import paired_difference

    seeds = tuple(int(s) for s in seeds)
    if len(seeds) < 2:
        raise ValueError(f"measure_digits_probe needs at least 2 label draws for a standard error, got seeds={seeds}.")
    x, y = load_digit_images(size=64) if images is None else images
    bb = load_backbone("micro_resnet", weights_file=weights_file, verbose=False)
    mean, std = bb.meta["mean"], bb.meta["std"]
    feats = {
        "pretrained": extract_pooled_features(bb.model, x, mean=mean, std=std),
        "random_init": extract_pooled_features(_random_init(bb.model.fc.out_features, init_seed), x,
                                               mean=mean, std=std),
        "raw_pixels": x[:, 0].flatten(1).numpy(),
    }
    acc = {arm: probe_accuracies(f, y, per_class=per_class, seeds=seeds, C=C) for arm, f in feats.items()}
    return ProbeResult(
        accuracies=acc, per_class=per_class, seeds=seeds,
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


def blurred_noise(shape=(64, 3, 7, 7), *, sigma: float = 1.5, seed: int = 0) -> torch.Tensor:
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
    """Mean Gabor-likeness of conv1 filters, their phase-randomized surrogates and blurred noise.

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
    """The printed table: mean ± standard error per arm, the paired differences, the conv1 controls."""
    n = len(probe.seeds)
    lines = [title] if title else []
    lines += [f"digits probe: {probe.per_class} labelled images per class, {n} label draws, "
              "logistic regression on frozen pooled features",
              "| features | val accuracy | se |", "|---|---|---|"]
    names = {"pretrained": "micro-backbone, pretrained", "random_init": "same network, random init",
             "raw_pixels": "raw pixels"}
    for arm in ARMS:
        a = probe.accuracies[arm]
        lines.append(f"| {names[arm]} | {np.mean(a):.3f} | {np.std(a, ddof=1) / np.sqrt(n):.3f} |")
    lines += [str(probe.vs_random), str(probe.vs_raw)]
    if controls is not None:
        lines.append(f"conv1 Gabor-likeness: real {controls['real']:.3f}, phase-randomized surrogates "
                     f"{controls['phase_randomized']:.3f} (gap {controls['gap']:+.3f}), blurred white noise "
                     f"{controls['blurred_noise']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.build.probe [--weights-file X.pt] [--per-class 10] [--draws 10]``"""
    p = argparse.ArgumentParser(prog="python -m labkit.build.probe", description=__doc__.splitlines()[0])
    p.add_argument("--weights-file", default=None, help="a micro-backbone .pt (default: the bundled one)")
    p.add_argument("--per-class", type=int, default=10, help="labelled images per class")
    p.add_argument("--draws", type=int, default=10, help="label draws (seeds 0..N-1)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from labkit.models import load_backbone

    probe = measure_digits_probe(a.weights_file, per_class=a.per_class, seeds=range(a.draws))
    weight = load_backbone("micro_resnet", weights_file=a.weights_file, verbose=False).model.conv1.weight
    print(format_report(probe, measure_filter_controls(weight),
                        title=f"weights: {a.weights_file or 'bundled micro_resnet'}"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
