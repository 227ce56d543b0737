"""Pretrain the bundled micro-backbone on images made by labkit's own code: ``python -m labkit pretrain``.

Three kinds of labelled images, chosen by the recipe's ``data`` (``"scenes"``, ``"fractals"``,
``"contours"``, or several joined by ``+``):

* scenes of :func:`labkit.synth.render_scene`: name the glyph class (64 arrangements of
  simple parts), the main part's stripe orientation (6) and its hue (8);
* formula-driven fractals of :mod:`labkit.build.fractals` (FractalDB-style): name the
  iterated function system that drew the fractal, on a dead-leaves backdrop;
* formula-driven contours of :mod:`labkit.build.contours` (Kataoka et al. 2022): name the
  contour class (1-3 smooth strokes) that an image draws at a random width, size, place and tilt.

The committed recipe, ``contours_v7``, is 8,000 scenes and 8,000 contour images (200 classes) for
12 epochs, the first 4 on the contour images alone, with ``conv1`` started from ICA filters and
no mirror images.
One output layer holds every task's outputs; the loss is a weighted sum of the tasks'
cross-entropies, each over the images labelled for that task. Recipe choices, each measured in
benchmarks/results/pretraining_recipes.md:

* ``conv1`` starts as the independent components of 50,000 7x7 patches of the training images
  (``conv1_init="ica"``, :mod:`labkit.build.ica`): localized grey edges and bars and
  colour-opponent gratings, each filter at unit norm (``ica_norm``), then learns at a tenth
  of the rate (``conv1_lr_scale``), which moves it little (a cosine of 0.99 or more with its
  start). Backpropagation alone gave filters whose Gabor-likeness was barely above that of
  their phase-randomized surrogates (a gap of 0.09-0.19); this start keeps 0.22, at the same
  real-digit accuracy. The norm matters: at the small initial norm of the other recipes,
  Adam's steps at a tenth of the rate rewrite the filters (gap 0.13), and frozen at that norm
  (``conv1_lr_scale=0``) they cost a point on real digits;
* a stem phase (a curriculum): the first ``stem_epochs`` see only the contour images, so the
  network learns strokes and outlines before the scenes' glyph, stripe and hue tasks pull on
  it; afterwards the ``stem_layers`` (conv1) learn at ``stem_lr_scale`` times the rate (0
  freezes them, which costs the colour the scene tasks need). Real digits: +2 points over the
  same mix without the phase (1.1 with the ICA start: rows E1 and E3);
* an MLP projector (Linear-BatchNorm-ReLU-Linear) between the pooled features and the task
  outputs during training, dropped afterwards, when a linear ``fc`` is fitted on the frozen
  pooled features (Wang et al., "Revisiting the Transferability of Supervised Pretraining: an
  MLP Projector is All You Need", CVPR 2022). The projector absorbs what is specific to the
  pretraining tasks, so the pooled features transfer better (+2 to +3 points on real digits,
  measured with and without scenes);
* no mirror images (``flip_prob=0``, ``contour_mirror=0``): neither the augmentation nor the
  contour renderer flips an image, so the features are not taught that a shape and its mirror
  image are the same thing. Mirror invariance discards left-right layout, which a linear probe
  cannot recover; without it the real-digit probe gains 1.2 points (0.940 to 0.952) and the
  objects gap loses 3.7 (33.1 to 29.4). The mirrored contours are what matters: without the
  flips alone the probe stays at 0.937;
* a small initial scale for ``conv1`` and stronger weight decay on it, translation and
  greyscale augmentation, a cosine schedule, no label smoothing (it made transfer worse);
* channels-last tensors: the same model, about 1.3x faster CPU convolutions.

Keys that were measured and not adopted, kept so the runs can be repeated: ``fresh_images``
(new images of the same classes every epoch), ``ema_decay`` (the weights replaced by their
moving average at the end), ``contour_jitter`` (the instance variation of a contour class),
``contour_instances`` (k > 1 contours of different classes per image, an even soft target
over the k), ``min_crop_scale`` (scale augmentation), ``low_res_size``/``low_res_epochs`` (progressive resizing).

Deterministic: a fixed seed, ``torch.use_deterministic_algorithms(True)`` and one CPU thread
(single-threaded kernels do their reductions in a fixed order, and the second core of a 2-core
machine stays free), so a fresh clone reproduces the committed figures; the bytes of the
weights file match as long as the torch build matches too.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit._env import peak_rss_mb
from labkit.build import synth
from labkit.models import WEIGHTS_DIR, MicroResNet, sha256_of

__all__ = ["RECIPES", "DEFAULT_RECIPE", "RECIPE", "TASKS", "SCENE_TASKS", "IGNORE", "tasks_for", "render_training_images", "pretrain", "evaluate_tasks", "save_weights", "measure_transfer_gap",
           "measure_gabor_likeness", "main"]

#: The scene tasks and their class names, in the order of the fc outputs.
SCENE_TASKS = {
    "glyph": [f"glyph{k:02d}" for k in range(synth.N_GLYPHS)],
    "orientation": [f"{d}deg" for d in synth.ORIENTATIONS],
    "hue": list(synth.HUES),
}
#: Label of an image that has no label for a task (a fractal has no glyph, a scene no IFS).
IGNORE = -100


def _parts(recipe: dict) -> list[str]:
    """The image kinds of a recipe's ``data``: ``"scenes"``, ``"fractals"``, ``"contours"`` joined by ``+``."""
    data = {"mix": "scenes+fractals"}.get(recipe["data"], recipe["data"])
    parts = str(data).split("+")
    if not parts or any(p not in ("scenes", "fractals", "contours") for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"recipe data must be 'scenes', 'fractals', 'contours' or several joined by '+' "
                         f"(e.g. 'scenes+contours'), got {recipe['data']!r}.")
    return parts


def tasks_for(recipe: dict) -> dict[str, list[str]]:
    """The labelled tasks of a recipe and their class names, in the order of the fc outputs."""
    parts = _parts(recipe)
    out = dict(SCENE_TASKS) if "scenes" in parts else {}
    if "fractals" in parts:
        out["fractal"] = [f"ifs{k:03d}" for k in range(int(recipe["fractal_classes"]))]
    if "contours" in parts:
        out["contour"] = [f"contour{k:03d}" for k in range(int(recipe["contour_classes"]))]
    return out


_COMMON = {
    "seed": 0,
    "image_size": 72,
    "crop_size": 64,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 0.002,
    "momentum": 0.9,
    "weight_decay": 0.05,
    "conv1_weight_decay": 0.2,
    "conv1_init_scale": 0.1,
    "loss_weights": "1,1,0.5",
    "threads": 1,
    "deterministic": 1,
    "fractal_weight": 1.0,
    "fractal_backdrop": "dead_leaves",
    "contour_classes": 200,
    "contour_images": 0,
    "contour_weight": 1.0,
    "gray_prob": 0.0,
    "channels_last": 0,
    "low_res_size": 0,
    "low_res_epochs": 0,
    "projector_dim": 0,
    "head_refit_epochs": 20,
    "min_crop_scale": 1.0,
    "stem_epochs": 0,
    "stem_layers": "conv1",
    "stem_lr_scale": 0.0,
    "conv1_init": "kaiming",
    "ica_patches": 50000,
    "ica_norm": 0.0,
    "conv1_lr_scale": 1.0,
    "fresh_images": 0,
    "contour_jitter": 0.07,
    "contour_instances": 1,
    "contour_mirror": 0.5,
    "flip_prob": 0.5,
    "ema_decay": 0.0,
}

#: Named recipes. ``synth_v1``: glyph/orientation/hue scenes only (the weights of issue 3);
#: ``mix_v2``: half scenes, half FractalDB-style fractals on dead leaves, no label smoothing (issue 11);
#: ``contours_v3``: scenes plus formula-driven contour classes, greyscale augmentation (issue 11);
#: ``contours_v4``: fewer images, more epochs, an MLP projector during training;
#: ``contours_v5``: ``contours_v4`` after a stem phase (4 epochs on the contours alone, then conv1 at
#: a tenth of the learning rate);
#: ``contours_v6``: ``contours_v5``'s data and stem phase with conv1 started from ICA filters of the
#: training images at unit norm, learning at a tenth of the rate throughout;
#: ``contours_v7``: ``contours_v6`` without mirror images (no flip augmentation, no mirrored contours):
#: the committed weights.
#: Measured figures of each: benchmarks/results/pretraining_recipes.md.
RECIPES = {
    "synth_v1": dict(_COMMON, train_scenes=14000, val_scenes=2000, epochs=10, label_smoothing=0.1,
                     warmup_epochs=0.3, data="scenes", fractal_classes=200, fractal_images=0),
    "mix_v2": dict(_COMMON, train_scenes=3000, val_scenes=250, epochs=8, label_smoothing=0.0,
                   warmup_epochs=0.5, data="mix", fractal_classes=200, fractal_images=3000),
    "contours_v3": dict(_COMMON, train_scenes=10000, val_scenes=800, epochs=7, label_smoothing=0.0,
                        warmup_epochs=0.5, data="scenes+contours", loss_weights="1,0.5,0.25",
                        contour_classes=300, contour_images=10000, gray_prob=0.25,
                        fractal_classes=200, fractal_images=0),
    "contours_v4": dict(_COMMON, train_scenes=8000, val_scenes=400, epochs=12, label_smoothing=0.0,
                        warmup_epochs=0.5, data="scenes+contours", loss_weights="1,0.5,0.25",
                        contour_classes=200, contour_images=8000, gray_prob=0.25, channels_last=1,
                        projector_dim=1024, fractal_classes=200, fractal_images=0),
    "contours_v5": dict(_COMMON, train_scenes=8000, val_scenes=400, epochs=12, label_smoothing=0.0,
                        warmup_epochs=0.5, data="scenes+contours", loss_weights="1,0.5,0.25",
                        contour_classes=200, contour_images=8000, gray_prob=0.25, channels_last=1,
                        projector_dim=1024, stem_epochs=4, stem_layers="conv1", stem_lr_scale=0.1,
                        fractal_classes=200, fractal_images=0),
    "contours_v6": dict(_COMMON, train_scenes=8000, val_scenes=400, epochs=12, label_smoothing=0.0,
                        warmup_epochs=0.5, data="scenes+contours", loss_weights="1,0.5,0.25",
                        contour_classes=200, contour_images=8000, gray_prob=0.25, channels_last=1,
                        projector_dim=1024, stem_epochs=4, stem_layers="conv1", stem_lr_scale=1.0,
                        conv1_init="ica", ica_norm=1.0, conv1_lr_scale=0.1,
                        fractal_classes=200, fractal_images=0),
    "contours_v7": dict(_COMMON, train_scenes=8000, val_scenes=400, epochs=12, label_smoothing=0.0,
                        warmup_epochs=0.5, data="scenes+contours", loss_weights="1,0.5,0.25",
                        contour_classes=200, contour_images=8000, gray_prob=0.25, channels_last=1,
                        projector_dim=1024, stem_epochs=4, stem_layers="conv1", stem_lr_scale=1.0,
                        conv1_init="ica", ica_norm=1.0, conv1_lr_scale=0.1, flip_prob=0.0, contour_mirror=0.0,
                        fractal_classes=200, fractal_images=0),
}
#: The recipe of the committed weights (what ``python -m labkit pretrain`` runs).
DEFAULT_RECIPE = "contours_v7"
#: The default recipe's values.
RECIPE = dict(RECIPES[DEFAULT_RECIPE])
TASKS = tasks_for(RECIPE)


def _slices(tasks: dict) -> dict[str, slice]:
    out, start = {}, 0
    for task, names in tasks.items():
        out[task] = slice(start, start + len(names))
        start += len(names)
    return out


_FLIP_ORIENT = torch.tensor([(len(synth.ORIENTATIONS) - k) % len(synth.ORIENTATIONS) for k in range(len(synth.ORIENTATIONS))])


def _augment(x: torch.Tensor, y: dict, crop: int, g: torch.Generator, gray_prob: float = 0.0,
             min_scale: float = 1.0, flip_prob: float = 0.5):
    """Random crop (translation), horizontal flip and (with ``gray_prob``) greyscale.

    With ``min_scale`` below 1 each crop is a random square covering ``min_scale`` to all of the
    image's area, resized to ``crop`` (scale augmentation). A flip mirrors the stripe orientation
    label; a greyscale image has no hue label.
    """
    n, _, h, w = x.shape
    if min_scale < 1:  # the plain branch draws exactly as before, so older recipes keep their random stream
        area = min_scale + (1 - min_scale) * torch.rand(n, generator=g)
        sides = (area.sqrt() * min(h, w)).round().long().clamp(max=min(h, w))
        ox = (torch.rand(n, generator=g) * (w - sides + 1)).long()
        oy = (torch.rand(n, generator=g) * (h - sides + 1)).long()
    else:
        sides = torch.full((n,), crop)
        ox = torch.randint(0, w - crop + 1, (n,), generator=g)
        oy = torch.randint(0, h - crop + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < flip_prob  # drawn at any probability: the random stream stays the same
    out = torch.empty((n, x.shape[1], crop, crop), dtype=x.dtype)
    for i in range(n):
        side = int(sides[i])
        patch = x[i, :, oy[i]:oy[i] + side, ox[i]:ox[i] + side]
        if side != crop:
            patch = F.interpolate(patch[None].float(), size=crop, mode="bilinear", antialias=True,
                                  align_corners=False)[0].round().clamp(0, 255).to(x.dtype)
        out[i] = patch.flip(-1) if flip[i] else patch
    y = dict(y)
    if "orientation" in y:
        o = y["orientation"]
        mirrored = _FLIP_ORIENT[o.clamp_min(0)]
        y["orientation"] = torch.where(flip & (o >= 0), mirrored, o)
    if gray_prob > 0:  # no draw at all otherwise, so older recipes keep their random stream
        gray = torch.rand(n, generator=g) < gray_prob
        if gray.any():
            out[gray] = out[gray].float().mean(1, keepdim=True).round().to(out.dtype).expand(-1, out.shape[1], -1, -1)
        if "hue" in y:
            y["hue"] = torch.where(gray, torch.full_like(y["hue"], IGNORE), y["hue"])
    return out, y


def _centre(x: torch.Tensor, crop: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    t, l = (h - crop) // 2, (w - crop) // 2
    return x[..., t:t + crop, l:l + crop]


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - mean[:, None, None]) / std[:, None, None]


def _channel_stats(x: torch.Tensor, chunk: int = 2048):
    """Per-channel mean and std of uint8 images, rounded to 3 decimals (as stored in the metadata)."""
    s1 = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        v = x[i:i + chunk].double() / 255.0
        s1 += v.sum((0, 2, 3))
        s2 += (v * v).sum((0, 2, 3))
    n = x.numel() / 3
    mean = s1 / n
    std = (s2 / n - mean * mean).sqrt()
    return mean.round(decimals=3).float(), std.round(decimals=3).float()


def _labelled(labels: torch.Tensor) -> torch.Tensor:
    """Which images carry a label: one label per image, or k per image (multi-instance contours, N x k)."""
    return (labels if labels.dim() == 1 else labels[:, 0]) != IGNORE


def _loss(logits: torch.Tensor, y: dict, smoothing: float, weights, tasks: dict) -> torch.Tensor:
    """Weighted sum of each task's cross-entropy over the images labelled for that task.

    An image with k labels (N x k) has the k classes as an even soft target: the mean of the k
    cross-entropies.
    """
    total = logits.new_zeros(())
    for w, (t, sl) in zip(weights, _slices(tasks).items()):
        keep = _labelled(y[t])
        if y[t].dim() == 2:
            if keep.any():
                kept = logits[keep, sl]
                total = total + w * torch.stack([F.cross_entropy(kept, y[t][keep, j], label_smoothing=smoothing)
                                                 for j in range(y[t].shape[1])]).mean()
        elif keep.all():  # scenes-only batches: exactly the synth_v1 computation
            total = total + w * F.cross_entropy(logits[:, sl], y[t], label_smoothing=smoothing)
        elif keep.any():
            total = total + w * F.cross_entropy(logits[keep, sl], y[t][keep], label_smoothing=smoothing)
    return total


@torch.no_grad()
def evaluate_tasks(model: torch.nn.Module, x: torch.Tensor, y: dict, *, mean, std, crop: int = 64,
                   batch_size: int = 256, tasks: dict | None = None) -> dict[str, float]:
    """Accuracy per pretraining task on uint8 images ``x`` (centre crop), over the images labelled for it.

    An image with k labels (multi-instance contours) counts as right when the top class is one of them.
    """
    tasks = TASKS if tasks is None else tasks
    model.eval()
    correct = {t: 0 for t in tasks}
    for i in range(0, len(x), batch_size):
        logits = model(_normalize(_centre(x[i:i + batch_size], crop), mean, std))
        for t, sl in _slices(tasks).items():
            yt = y[t][i:i + batch_size]
            hit = logits[:, sl].argmax(1)[:, None] == (yt[:, None] if yt.dim() == 1 else yt)  # any of an image's labels
            correct[t] += (hit.any(1) & _labelled(yt)).sum().item()
    return {t: round(c / max(1, int(_labelled(y[t]).sum())), 4) for t, c in correct.items()}


def _unlabelled(n: int, task: str, r: dict) -> torch.Tensor:
    """IGNORE labels for n images that a task does not label (N x k for multi-instance contours)."""
    k = int(r["contour_instances"]) if task == "contour" else 1
    return torch.full((n,) if k == 1 else (n, k), IGNORE)


def render_training_images(r: dict, *, val: bool = False, epoch: int = 0, log=print):
    """The uint8 images and per-task labels of a recipe (train or val split); unlabelled tasks get IGNORE.

    ``epoch`` > 0 gives the next set of new images of the same classes (for ``fresh_images``):
    each kind's images ``epoch * n .. (epoch + 1) * n - 1`` of the same seed.
    """
    from labkit.build import contours, fractals

    tasks = tasks_for(r)
    scale = r["val_scenes"] / r["train_scenes"] if val else 1.0
    seed = r["seed"] + (1 if val else 0)
    xs, ys = [], []
    parts = _parts(r)
    if "scenes" in parts:
        n = r["val_scenes"] if val else r["train_scenes"]
        x, y = synth.render_scenes(n, seed=seed, size=r["image_size"], start=epoch * n)
        xs.append(x)
        ys.append({t: (y[t] if t in y else _unlabelled(len(x), t, r)) for t in tasks})
    if "fractals" in parts:
        classes = fractals.make_ifs_classes(int(r["fractal_classes"]), seed=r["seed"])
        n = max(1, round(r["fractal_images"] * scale))
        x, y = fractals.render_fractal_images(n, classes, seed=seed, size=r["image_size"],
                                              backdrop=r["fractal_backdrop"], start=epoch * n)
        xs.append(x)
        ys.append({t: (y if t == "fractal" else _unlabelled(n, t, r)) for t in tasks})
    if "contours" in parts:
        classes = contours.make_contour_classes(int(r["contour_classes"]), seed=r["seed"])
        n = max(1, round(r["contour_images"] * scale))
        x, y = contours.render_contour_images(n, classes, seed=seed, size=r["image_size"], start=epoch * n,
                                              jitter=float(r["contour_jitter"]),
                                              instances=int(r["contour_instances"]),
                                              mirror=float(r["contour_mirror"]))
        xs.append(x)
        ys.append({t: (y if t == "contour" else _unlabelled(n, t, r)) for t in tasks})
    return torch.cat(xs), {t: torch.cat([y[t] for y in ys]) for t in tasks}


def pretrain(recipe: dict | None = None, *, base: str = DEFAULT_RECIPE, log=print):
    """Run a pretraining recipe; return ``(model, meta)`` with the measured figures in ``meta``.

    Args:
        recipe: overrides for the base recipe (for example ``{"train_scenes": 2000, "epochs": 1}``).
        base: a name in :data:`RECIPES`.
        log: where progress lines go.
    """
    if base not in RECIPES:
        raise ValueError(f"pretrain got base={base!r}; expected one of {sorted(RECIPES)}.")
    r = dict(RECIPES[base], **(recipe or {}))
    unknown = set(r) - set(RECIPE)
    if unknown:
        raise ValueError(f"pretrain got unknown recipe keys {sorted(unknown)}; expected some of {sorted(RECIPE)}.")
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(int(r["threads"]))
    torch.use_deterministic_algorithms(bool(r["deterministic"]))
    try:
        return _pretrain(r, log, name=base)
    finally:  # leave the process as it was (tests, notebooks)
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


def _pretrain(r: dict, log, *, name: str):
    torch.manual_seed(r["seed"])
    g = torch.Generator().manual_seed(r["seed"])
    t0, c0 = time.time(), time.process_time()

    tasks = tasks_for(r)
    stem_epochs = int(r["stem_epochs"])
    if stem_epochs and "contour" not in tasks:
        raise ValueError(f"recipe stem_epochs={stem_epochs} trains the first epochs on the contour images only, "
                         f"but data={r['data']!r} has none; add 'contours' to data or set stem_epochs=0.")
    if r["conv1_init"] not in ("kaiming", "ica"):
        raise ValueError(f"recipe conv1_init must be 'kaiming' or 'ica', got {r['conv1_init']!r}.")
    conv1_scale = float(r["conv1_lr_scale"])
    if conv1_scale < 0:
        raise ValueError(f"recipe conv1_lr_scale must be >= 0 (0 freezes conv1), got {conv1_scale!r}.")
    ema_decay = float(r["ema_decay"])
    if not 0 <= ema_decay < 1:
        raise ValueError(f"recipe ema_decay must be in [0, 1) (0: no weight average), got {ema_decay!r}.")
    log(f"rendering the training and validation images ({r['data']}) ...")
    xtr, ytr = render_training_images(r, log=log)
    xva, yva = render_training_images(r, val=True, log=log)
    mean, std = _channel_stats(xtr)
    log(f"  done in {time.time() - t0:.0f}s; mean {mean.tolist()} std {std.tolist()}")

    n_out = sum(len(v) for v in tasks.values())
    model = MicroResNet(num_classes=n_out)
    with torch.no_grad():
        model.conv1.weight.mul_(r["conv1_init_scale"])
    if r["conv1_init"] == "ica":  # conv1 learned by ICA on patches of the training images (labkit.build.ica)
        from labkit.build.ica import learn_ica_filters

        t1 = time.time()
        w = model.conv1.weight
        filters, its = learn_ica_filters(xtr, tuple(w.shape), patches=int(r["ica_patches"]), mean=mean, std=std,
                                         generator=torch.Generator().manual_seed(r["seed"]),
                                         norm=float(r["ica_norm"]) or w.detach().flatten(1).norm(dim=1))
        with torch.no_grad():
            w.copy_(filters)
        log(f"conv1: {w.shape[0]} filters by ICA of {int(r['ica_patches'])} patches ({its} FastICA iterations, "
            f"{time.time() - t1:.0f}s)")
    projector = int(r["projector_dim"])
    if projector:  # an MLP projector between the pooled features and the task outputs, dropped after training
        model.fc = torch.nn.Sequential(torch.nn.Linear(model.fc.in_features, projector),
                                       torch.nn.BatchNorm1d(projector), torch.nn.ReLU(inplace=True),
                                       torch.nn.Linear(projector, n_out))
    if r["channels_last"]:  # the faster CPU convolution layout; the weights are saved contiguous
        model = model.to(memory_format=torch.channels_last)
    stem_layers = [m for m in str(r["stem_layers"]).split(",") if m] if stem_epochs else []
    children = [n for n, _ in model.named_children()]
    if any(m not in children for m in stem_layers):
        raise ValueError(f"recipe stem_layers must name top-level modules of the model ({', '.join(children)}), "
                         f"joined by ','; got {r['stem_layers']!r}.")
    slow = lambda n: n.split(".")[0] in stem_layers  # slowed (or frozen) after the stem phase
    named = list(model.named_parameters())
    kinds = [([(n, p) for n, p in named if n == "conv1.weight"], r["conv1_weight_decay"]),
             ([(n, p) for n, p in named if p.ndim > 1 and n != "conv1.weight"], r["weight_decay"]),
             ([(n, p) for n, p in named if p.ndim <= 1], 0.0)]
    groups = [{"params": [p for n, p in params if slow(n) == s], "weight_decay": wd, "slow": s,
               "scale": conv1_scale if k == 0 else 1.0}
              for k, (params, wd) in enumerate(kinds) for s in (False, True)]
    groups = [group for group in groups if group["params"]]
    if r["optimizer"] == "sgd":
        opt = torch.optim.SGD(groups, lr=r["lr"], momentum=r["momentum"], nesterov=True)
    elif r["optimizer"] == "adamw":
        opt = torch.optim.AdamW(groups, lr=r["lr"], betas=(r["momentum"], 0.999))
    else:
        raise ValueError(f"recipe optimizer must be 'sgd' or 'adamw', got {r['optimizer']!r}.")
    weights = [float(v) for v in str(r["loss_weights"]).split(",")][:3 if "glyph" in tasks else 0]
    if "fractal" in tasks:
        weights.append(float(r["fractal_weight"]))
    if "contour" in tasks:
        weights.append(float(r["contour_weight"]))
    stem_rows = torch.nonzero(_labelled(ytr["contour"])).flatten() if stem_epochs else None
    steps_per_epoch = len(xtr) // r["batch_size"]
    epoch_steps = [(len(stem_rows) if e < stem_epochs else len(xtr)) // r["batch_size"] for e in range(r["epochs"])]
    total = sum(epoch_steps)
    warm = max(1, int(r["warmup_epochs"] * steps_per_epoch))

    def lr_at(step: int) -> float:
        if step < warm:
            return r["lr"] * (step + 1) / warm
        return r["lr"] * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    if conv1_scale == 0:  # no gradient for conv1 at all (and no backward pass through it)
        model.conv1.weight.requires_grad_(False)
        log("conv1 frozen for the whole run")
    elif conv1_scale != 1:
        log(f"conv1 at learning rate x{conv1_scale:g} for the whole run")
    fresh = bool(int(r["fresh_images"]))
    if fresh:
        log("fresh_images: every epoch renders new images of the same classes")
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if ema_decay else None
    history = []
    step = 0
    for epoch in range(r["epochs"]):
        model.train()
        if fresh and epoch > 0:  # new images of the same classes (dynamically generated data)
            t1 = time.time()
            xtr, ytr = render_training_images(r, epoch=epoch, log=log)
            if stem_epochs:
                stem_rows = torch.nonzero(_labelled(ytr["contour"])).flatten()
            log(f"  epoch {epoch + 1}: {len(xtr)} new images rendered in {time.time() - t1:.0f}s")
        if stem_epochs and epoch < stem_epochs:  # the stem phase: contour images only
            order = stem_rows[torch.randperm(len(stem_rows), generator=g)]
        else:
            order = torch.randperm(len(xtr), generator=g)
        slow_scale = float(r["stem_lr_scale"]) if stem_epochs and epoch >= stem_epochs else 1.0
        if stem_epochs and epoch == stem_epochs and slow_scale == 0:  # they keep what the contours taught them
            for n, p in named:
                p.requires_grad_(not slow(n) and not (conv1_scale == 0 and n == "conv1.weight"))
            log(f"{', '.join(stem_layers)} frozen after {stem_epochs} epochs on the contour images")
        elif stem_epochs and epoch == stem_epochs:
            log(f"{', '.join(stem_layers)} at learning rate x{slow_scale:g} after {stem_epochs} epochs on the contour images"
                + (f" (conv1: x{conv1_scale * slow_scale:g} in all, with conv1_lr_scale={conv1_scale:g})"
                   if conv1_scale != 1 and "conv1" in stem_layers else ""))
        running, seen = 0.0, 0
        for b in range(epoch_steps[epoch]):
            idx = order[b * r["batch_size"]:(b + 1) * r["batch_size"]]
            xb, yb = _augment(xtr[idx], {k: v[idx] for k, v in ytr.items()}, r["crop_size"], g, float(r["gray_prob"]),
                              float(r["min_crop_scale"]), float(r["flip_prob"]))
            for group in opt.param_groups:
                group["lr"] = lr_at(step) * group["scale"] * (slow_scale if group["slow"] else 1.0)
            xb = _normalize(xb, mean, std)
            if epoch < int(r["low_res_epochs"]) and int(r["low_res_size"]) > 0:  # progressive resizing
                xb = F.interpolate(xb, size=int(r["low_res_size"]), mode="bilinear", antialias=True, align_corners=False)
            if r["channels_last"]:
                xb = xb.contiguous(memory_format=torch.channels_last)
            loss = _loss(model(xb), yb, r["label_smoothing"], weights, tasks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:  # an exponential moving average of the weights and BatchNorm statistics
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if v.is_floating_point():
                            ema[k].mul_(ema_decay).add_(v, alpha=1 - ema_decay)
                        else:
                            ema[k].copy_(v)
            running += loss.item() * len(idx)
            seen += len(idx)
            step += 1
        acc = evaluate_tasks(model, xva, yva, mean=mean, std=std, crop=r["crop_size"], tasks=tasks)
        history.append({"epoch": epoch + 1, "train_loss": round(running / seen, 4), "val_accuracy": acc})
        log(f"epoch {epoch + 1}/{r['epochs']}: loss {running / seen:.3f}, val acc {acc}, "
            f"{time.time() - t0:.0f}s wall, {time.process_time() - c0:.0f}s cpu")

    if ema is not None:
        model.load_state_dict(ema)
        acc = evaluate_tasks(model, xva, yva, mean=mean, std=std, crop=r["crop_size"], tasks=tasks)
        history.append({"epoch": "weight average", "val_accuracy": acc})
        log(f"weights replaced by their moving average (decay {ema_decay:g}): val acc {acc}")
    for p in model.parameters():  # a plain model again, whatever the stem phase froze
        p.requires_grad_(True)
    if projector:  # back to a plain ResNet: a linear fc fitted on the frozen pooled features
        model.fc = _refit_linear_head(model, xtr, ytr, mean=mean, std=std, crop=r["crop_size"], tasks=tasks,
                                      weights=weights, epochs=int(r["head_refit_epochs"]), g=g)
        acc = evaluate_tasks(model, xva, yva, mean=mean, std=std, crop=r["crop_size"], tasks=tasks)
        history.append({"epoch": "linear head", "val_accuracy": acc})
        log(f"linear head refitted on the frozen features: val acc {acc}, {time.time() - t0:.0f}s wall")

    meta = {
        "name": "micro_resnet",
        "weights": f"MicroResNet_Weights.{name.upper()}",
        "architecture": "torchvision ResNet, BasicBlock x [1, 1, 1, 1], widths 64-128-256-512",
        "input_size": r["crop_size"],
        "resize_size": r["image_size"],
        "mean": [round(v, 3) for v in mean.tolist()],
        "std": [round(v, 3) for v in std.tolist()],
        "interpolation": "bilinear",
        "categories": [f"{t}:{c}" for t, names in tasks.items() for c in names],
        "tasks": {t: {"outputs": [sl.start, sl.stop], "classes": tasks[t]} for t, sl in _slices(tasks).items()},
        "num_params": sum(p.numel() for p in model.parameters()),
        "recipe": r,
        "metrics": {"val_accuracy": history[-1]["val_accuracy"],
                    "final_train_loss": history[r["epochs"] - 1]["train_loss"]},
        "history": history,
        "cost": {"wall_s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                 "peak_rss_mb": round(peak_rss_mb() or 0, 1)},
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "threads": torch.get_num_threads()},
    }
    return model.eval(), meta


@torch.no_grad()
def _pooled(model: torch.nn.Module, x: torch.Tensor, *, mean, std, crop: int, batch_size: int = 256) -> torch.Tensor:
    """Pooled features (the input of ``fc``) of uint8 images, centre crop, eval mode."""
    model.eval()
    body = torch.nn.Sequential(*[m for n, m in model.named_children() if n != "fc"])
    return torch.cat([body(_normalize(_centre(x[i:i + batch_size], crop), mean, std)).flatten(1)
                      for i in range(0, len(x), batch_size)])


def _refit_linear_head(model, x, y, *, mean, std, crop, tasks, weights, epochs, g, batch_size=256, lr=3e-3):
    """A new linear ``fc`` for every task, trained on the frozen pooled features of the training images."""
    feats = _pooled(model, x, mean=mean, std=std, crop=crop)
    head = torch.nn.Linear(feats.shape[1], sum(len(v) for v in tasks.values()))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(feats) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=g)
        for i in range(0, len(feats), batch_size):
            idx = order[i:i + batch_size]
            loss = _loss(head(feats[idx]), {k: v[idx] for k, v in y.items()}, 0.0, weights, tasks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head


def save_weights(model: torch.nn.Module, meta: dict, out_dir: str | Path, *, stem: str = "micro_resnet") -> Path:
    """Write ``stem.pt`` (half-precision state_dict) and ``stem.json`` (metadata with its sha256)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.pt"
    state = {k: (v.half().contiguous() if v.is_floating_point() else v.contiguous()) for k, v in model.state_dict().items()}
    torch.save(state, path)
    meta = dict(meta, file=path.name, dtype="float16", sha256=sha256_of(path), bytes=path.stat().st_size)
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def _fit(model: torch.nn.Module, params, loaders, *, epochs: int, lr: float, frozen_backbone: bool) -> float:
    """Train ``params`` with AdamW and a one-cycle schedule; return val accuracy."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loaders.train))
    for _ in range(epochs):
        model.train()
        if frozen_backbone:  # frozen BatchNorm keeps its pretrained running statistics
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for x, y in loaders.train:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loaders.val:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def measure_transfer_gap(*, dataset: str = "objects", per_class: int = 30, epochs: int = 15, batch_size: int = 32,
                         seed: int = 0, head_lr: float = 1e-2, scratch_lr: float = 2e-3,
                         weights_file: str | Path | None = None) -> dict:
    """Val accuracy of a frozen pretrained micro-backbone + new linear head vs the same net trained from scratch.

    Both see the same training images (at most ``per_class`` per class of a bundled dataset), the
    same augmentation and the same number of epochs, and are scored on the full val split.

    Returns:
        ``{"dataset", "per_class", "epochs", "frozen", "scratch", "gap_points", "seconds"}``.
    """
    from labkit.data import make_loaders
    from labkit.models import build_micro_resnet, load_backbone

    backbone = load_backbone("micro_resnet", weights_file=weights_file, verbose=False)
    result = {"dataset": dataset, "per_class": per_class, "epochs": epochs, "seconds": {}}

    def loaders():
        torch.manual_seed(seed)  # same shuffling and same augmentation draws for both runs
        return make_loaders(dataset, backbone=backbone, batch_size=batch_size, max_per_class=per_class,
                            seed=seed, verbose=False)

    dl = loaders()
    model = backbone.model
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    model.fc = torch.nn.Linear(model.fc.in_features, dl.num_classes)
    t = time.time()
    result["frozen"] = round(_fit(model, model.fc.parameters(), dl, epochs=epochs, lr=head_lr, frozen_backbone=True), 4)
    result["seconds"]["frozen"] = round(time.time() - t, 1)

    dl = loaders()
    scratch = build_micro_resnet(dl.num_classes)
    t = time.time()
    result["scratch"] = round(_fit(scratch, scratch.parameters(), dl, epochs=epochs, lr=scratch_lr,
                                   frozen_backbone=False), 4)
    result["seconds"]["scratch"] = round(time.time() - t, 1)
    result["gap_points"] = round(100 * (result["frozen"] - result["scratch"]), 1)
    return result


def measure_gabor_likeness(weight: torch.Tensor, *, seed: int = 0) -> dict | None:
    """Mean Gabor-likeness of ``weight`` (conv1) and of a randomly initialised conv1; None without labkit.filters."""
    try:
        from labkit.filters import gabor_likeness
    except ImportError:
        return None
    from labkit.models import build_micro_resnet

    torch.manual_seed(seed)
    rand = build_micro_resnet().conv1.weight.detach()
    return {"pretrained": round(gabor_likeness(weight.detach().float()).mean().item(), 3),
            "random": round(gabor_likeness(rand).mean().item(), 3)}


def main(argv: list[str]) -> int:
    """``python -m labkit pretrain [--out DIR] [--epochs N] [--scenes N] ...``"""
    p = argparse.ArgumentParser(prog="python -m labkit pretrain",
                                description="Pretrain the micro-backbone on images made by labkit's own code and write its weights.")
    p.add_argument("--out", default=str(WEIGHTS_DIR), help=f"output folder (default: {WEIGHTS_DIR})")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES),
                   help=f"named recipe (default: {DEFAULT_RECIPE}, the committed weights)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--scenes", type=int, default=None, help="training scenes")
    p.add_argument("--val-scenes", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=RECIPE["threads"],
                   help="CPU threads (keep 1 to reproduce the committed file byte for byte)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override another recipe value; keys: {', '.join(RECIPE)}")
    p.add_argument("--no-eval", action="store_true", help="skip the Gabor-likeness and transfer-gap measurements")
    a = p.parse_args(argv)
    given = {"epochs": a.epochs, "train_scenes": a.scenes, "val_scenes": a.val_scenes, "seed": a.seed,
             "threads": a.threads}
    recipe = {k: v for k, v in given.items() if v is not None}
    for item in a.set:
        key, _, value = item.partition("=")
        if key not in RECIPE or not value:
            p.error(f"--set expects KEY=VALUE with KEY one of {', '.join(RECIPE)}, got {item!r}")
        recipe[key] = type(RECIPE[key])(value)
    model, meta = pretrain(recipe, base=a.recipe)
    path = save_weights(model, meta, a.out)
    meta_path = path.with_suffix(".json")
    saved = json.loads(meta_path.read_text())
    print(f"wrote {path} ({saved['bytes'] / 1e6:.2f} MB, sha256 {saved['sha256'][:16]}...)")
    print(f"pretraining val accuracy: {saved['metrics']['val_accuracy']}; cost: {saved['cost']}")
    if a.no_eval:
        return 0
    torch.set_num_threads(a.threads)  # as benchmarks/transfer_gap.py does, so its figures match these
    gabor = measure_gabor_likeness(model.conv1.weight, seed=meta["recipe"]["seed"])
    if gabor is not None:
        saved["conv1_gabor_likeness"] = gabor
        print(f"conv1 Gabor-likeness (mean of 64 filters): pretrained {gabor['pretrained']:.3f}, "
              f"random init {gabor['random']:.3f}")
    gap = measure_transfer_gap(weights_file=path, seed=meta["recipe"]["seed"])
    saved["transfer"] = gap
    print(f"transfer on {gap['dataset']} ({gap['per_class']} train images per class, {gap['epochs']} epochs): "
          f"frozen + new head {100 * gap['frozen']:.1f}%, from scratch {100 * gap['scratch']:.1f}%, "
          f"gap {gap['gap_points']:+.1f} points")
    try:
        from labkit.build.probe import format_report, measure_digits_probe, measure_filter_controls
    except ImportError:  # scikit-learn missing: the weights are written, the real-image figures are not
        probe = None
    else:
        probe = measure_digits_probe(path, seeds=range(10))
        controls = measure_filter_controls(model.conv1.weight)
        saved["digits_probe"] = probe.to_dict()
        saved["conv1_controls"] = controls
        print(format_report(probe, controls, title="real images (scikit-learn digits):"))
    meta_path.write_text(json.dumps(saved, indent=1) + "\n")  # the figures; the .pt (and its sha256) is unchanged
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
