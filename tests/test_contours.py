"""Formula-driven contour images: classes, determinism, visible strokes."""
from __future__ import annotations

import numpy as np
import pytest

from labkit.build.contours import make_contour_classes, render_contour_image, render_contour_images


def test_every_class_spans_the_unit_box():
    for strokes in make_contour_classes(20, seed=3):
        every = np.concatenate([pts for pts, _ in strokes])
        assert np.isclose(np.abs(every).max(), 1.0, atol=1e-6) or np.isclose((every.max(0) - every.min(0)).max(), 2.0)
        assert 1 <= len(strokes) <= 3


def test_same_seed_and_index_give_the_same_pixels_and_others_differ():
    strokes = make_contour_classes(1)[0]
    a = render_contour_image(strokes, 0, index=5)
    assert np.array_equal(a, render_contour_image(strokes, 0, index=5))
    assert not np.array_equal(a, render_contour_image(strokes, 0, index=6))


def test_strokes_stand_out_from_the_backdrop():
    x, _ = render_contour_images(16, make_contour_classes(4), seed=1)
    spread = x.float().flatten(2).std(2).mean(1)  # per image
    assert (spread > 8).all(), spread  # a flat image (no visible stroke) has a spread near the noise level


def test_render_contour_images_rejects_an_empty_request():
    with pytest.raises(ValueError, match="needs n >= 1 images, got n=0"):
        render_contour_images(0, make_contour_classes(1))
    with pytest.raises(ValueError, match="needs n >= 1 classes, got n=0"):
        make_contour_classes(0)
