"""Formula-driven contour images: classes, determinism, visible strokes."""
from __future__ import annotations

import numpy as np
import pytest

from labkit.build.contours import make_contour_classes, render_contour_image, render_contour_images, render_contour_set_image


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


def test_multi_instance_images_name_distinct_classes_and_draw_each_in_its_own_place():
    classes = make_contour_classes(6, seed=2)
    x, y = render_contour_images(12, classes, seed=4, instances=2)
    assert x.shape == (12, 3, 72, 72) and y.shape == (12, 2)
    assert (y[:, 0] != y[:, 1]).all() and int(y.max()) < 6
    again, _ = render_contour_images(12, classes, seed=4, instances=2)
    assert np.array_equal(x.numpy(), again.numpy())
    single, _ = render_contour_images(12, classes, seed=4)
    assert not np.array_equal(x.numpy(), single.numpy())
    spread = x.float().flatten(2).std(2).mean(1)  # the strokes stand out, as in one-class images
    assert (spread > 8).all(), spread


def test_jitter_is_the_instance_variation_of_a_class():
    strokes = make_contour_classes(1)[0]
    calm = [render_contour_image(strokes, 0, index=i, jitter=0.0) for i in range(2)]
    wild = [render_contour_image(strokes, 0, index=i, jitter=0.3) for i in range(2)]
    assert not np.array_equal(calm[0], wild[0])  # same pose, backdrop and ink; only the control points moved
    x, _ = render_contour_images(2, [strokes], seed=0, jitter=0.0)
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), calm[0])


def test_multi_instance_requests_are_checked():
    with pytest.raises(ValueError, match=r"instances must be an int from 1 to the number of classes \(3\), got 4"):
        render_contour_images(2, make_contour_classes(3), instances=4)
    with pytest.raises(ValueError, match="draws 2 or more contour classes, got 1; use render_contour_image"):
        render_contour_set_image(make_contour_classes(1), 0)


def test_mirror_is_the_chance_that_a_class_is_drawn_mirrored():
    strokes = make_contour_classes(1, seed=5)[0]
    plain = [render_contour_image(strokes, 0, index=i, mirror=0.0) for i in range(6)]
    mirrored = [render_contour_image(strokes, 0, index=i, mirror=1.0) for i in range(6)]
    either = [render_contour_image(strokes, 0, index=i) for i in range(6)]
    assert all(not np.array_equal(a, b) for a, b in zip(plain, mirrored))
    picks = [np.array_equal(e, a) for e, a in zip(either, plain)]  # each default image is one of the two
    assert all(p or np.array_equal(e, b) for p, e, b in zip(picks, either, mirrored))
    assert 0 < sum(picks) < 6  # at the default 0.5, some of each
