"""labkit.build.fractals: seeded IFS fractals on dead-leaves backdrops, and pretraining on them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from labkit.build import fractals as fr
from labkit.build.pretrain import IGNORE, pretrain, render_training_images, tasks_for, RECIPE


def test_sampled_ifs_maps_are_contractive():
    for seed in range(5):
        ifs = fr.sample_ifs(np.random.default_rng(seed))
        a = ifs[:, :4].reshape(-1, 2, 2)
        assert 2 <= len(ifs) <= 4 and np.linalg.svd(a, compute_uv=False).max() < 1.0


def test_fractal_images_are_a_function_of_seed_and_index():
    classes = fr.make_ifs_classes(3, seed=1)
    x1, y1 = fr.render_fractal_images(4, classes, seed=2, size=32)
    x2, y2 = fr.render_fractal_images(2, classes, seed=2, size=32, start=2)
    assert x1.dtype == torch.uint8 and tuple(x1.shape) == (4, 3, 32, 32)
    assert torch.equal(x1[2:], x2) and torch.equal(y1[2:], y2) and set(y1.tolist()) <= {0, 1, 2}
    x3, _ = fr.render_fractal_images(4, classes, seed=3, size=32)
    assert not torch.equal(x1, x3)


def test_dead_leaves_have_sharp_regions_and_a_falling_spectrum():
    img = fr.render_dead_leaves(np.random.default_rng(0), 64).mean(axis=2)
    spec = np.abs(np.fft.fft2(img - img.mean()))
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64)))
    low, high = spec[(f > 0.02) & (f < 0.08)].mean(), spec[(f > 0.3)].mean()
    assert low > 4 * high  # power falls with frequency, as in natural images
    assert len(np.unique(img)) < 400  # flat-coloured leaves, not noise


def test_mixed_recipe_labels_each_image_for_its_own_tasks_only():
    r = dict(RECIPE, data="mix", train_scenes=6, val_scenes=2, fractal_images=6, fractal_classes=3)
    x, y = render_training_images(r)
    assert len(x) == 12 and sorted(y) == sorted(tasks_for(r))
    assert (y["glyph"][:6] >= 0).all() and (y["glyph"][6:] == IGNORE).all()
    assert (y["fractal"][:6] == IGNORE).all() and (y["fractal"][6:] >= 0).all()


def test_tasks_for_rejects_unknown_data():
    with pytest.raises(ValueError, match="recipe data must be 'scenes', 'fractals', 'contours' or several joined by"):
        tasks_for(dict(RECIPE, data="noise"))
    with pytest.raises(ValueError, match="got 'scenes\\+scenes'"):
        tasks_for(dict(RECIPE, data="scenes+scenes"))


def test_tasks_for_joins_the_image_kinds_in_order():
    tasks = tasks_for(dict(RECIPE, data="scenes+contours", contour_classes=5))
    assert list(tasks) == ["glyph", "orientation", "hue", "contour"] and len(tasks["contour"]) == 5
    assert list(tasks_for(dict(RECIPE, data="mix", fractal_classes=3))) == ["glyph", "orientation", "hue", "fractal"]


def test_tiny_fractal_pretraining_is_deterministic():
    recipe = {"data": "fractals", "train_scenes": 64, "val_scenes": 16, "fractal_images": 64, "fractal_classes": 4,
              "epochs": 1, "batch_size": 32, "threads": 1, "stem_epochs": 0, "ica_patches": 2000}
    m1, meta = pretrain(recipe, log=lambda *a: None)
    m2, _ = pretrain(recipe, log=lambda *a: None)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert meta["tasks"]["fractal"]["outputs"][1] - meta["tasks"]["fractal"]["outputs"][0] == 4


def test_pretrain_rejects_unknown_base_recipes():
    with pytest.raises(ValueError, match="expected one of \\['contours_v3', 'contours_v4', 'contours_v5', 'contours_v6', 'contours_v7', 'mix_v2', 'synth_v1'\\]"):
        pretrain({}, base="imagenet")
