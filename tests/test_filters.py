"""labkit.filters: filter grids, Gabor/Sobel banks, Gabor-likeness, matching, drift."""
from __future__ import annotations

import copy
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from labkit.drift import filter_drift, plot_filter_drift
from labkit.filters import (
    colour_separability,
    compare_filters,
    conv_layers,
    find_matches,
    first_conv,
    gabor_bank,
    gabor_likeness,
    gradient_share,
    match_filters,
    plot_filter,
    plot_filters,
    sobel_kernels,
)

# --------------------------------------------------------------------------- fixtures & helpers


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return torchvision.models.vit_b_16(weights=None)


def _gabor(size, theta, wavelength, phase, sigma, dx=0.0, dy=0.0):
    """A Gabor kernel written independently of labkit's bank."""
    r = (size - 1) / 2
    y, x = torch.meshgrid(torch.arange(size) - r - dy, torch.arange(size) - r - dx, indexing="ij")
    across = x * math.cos(theta) + y * math.sin(theta)
    return torch.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2)) * torch.cos(2 * math.pi * across / wavelength + phase)


def _synthetic_gabors(n, size=7, channels=3, seed=0):
    """Off-grid Gabors (random angle, wavelength, phase, width, sub-pixel centre), random colours and offsets."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        theta, phase = float(torch.rand(1, generator=g)) * math.pi, float(torch.rand(1, generator=g)) * 2 * math.pi
        wavelength = 2.5 + float(torch.rand(1, generator=g)) * (size - 2.5)
        sigma = wavelength * (0.35 + 0.3 * float(torch.rand(1, generator=g)))
        dx, dy = (torch.rand(2, generator=g) - 0.5).tolist()
        k = _gabor(size, theta, wavelength, phase, sigma, dx, dy)
        colour, offset = torch.randn(channels, generator=g), 0.2 * torch.randn(channels, generator=g)
        out.append(colour[:, None, None] * k + offset[:, None, None])
    return torch.stack(out)


def _kaiming(n=64, channels=3, size=7):
    return nn.init.kaiming_normal_(torch.empty(n, channels, size, size), mode="fan_out", nonlinearity="relu")


def _images(fig):
    return [im for ax in fig.axes for im in ax.get_images()]


def _grid_shape(fig):
    """(rows, columns) of the filter grid, read from where each image sits."""
    extents = [im.get_extent() for im in _images(fig)]
    return len({round(e[3], 6) for e in extents}), len({round(e[0], 6) for e in extents})


def _titles(fig):
    return [t.get_text() for t in fig.texts]


# --------------------------------------------------------------------------- finding the first conv


@pytest.mark.parametrize("builder, name, shape", [
    (torchvision.models.resnet18, "conv1", (64, 3, 7, 7)),
    (torchvision.models.resnet50, "conv1", (64, 3, 7, 7)),
    (torchvision.models.efficientnet_b0, "features.0.0", (32, 3, 3, 3)),
])
def test_first_conv_is_the_first_registered_conv2d(builder, name, shape):
    found, conv = first_conv(builder(weights=None))
    assert found == name
    assert tuple(conv.weight.shape) == shape


def test_first_conv_of_vit_is_its_patch_embedding(vit):
    name, conv = first_conv(vit)
    assert name == "conv_proj"
    assert tuple(conv.weight.shape) == (768, 3, 16, 16)


def test_conv_layers_lists_dotted_names_in_registration_order(resnet18):
    names = list(conv_layers(resnet18))
    assert names[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert "layer2.0.downsample.0" in names
    assert len(names) == 20


def test_model_without_conv_layer_raises_clear_error():
    with pytest.raises(ValueError, match=r"Sequential has no nn.Conv2d layer.*Expected a CNN"):
        first_conv(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="has no nn.Conv2d layer"):
        plot_filters(nn.Linear(4, 2))


# --------------------------------------------------------------------------- plot_filters


def test_resnet50_conv1_renders_as_8x8_rgb_grid_with_name_and_shape(resnet50):
    fig = plot_filters(resnet50)
    images = _images(fig)
    assert len(images) == 64
    assert _grid_shape(fig) == (8, 8)
    assert len({tuple(im.get_extent()) for im in images}) == 64  # no two filters in one cell
    assert all(im.get_array().shape == (7, 7, 3) for im in images)
    assert all(not ax.axison for ax in fig.axes)  # no ticks, no frames
    assert "conv1" in _titles(fig)[0] and "64\u00d73\u00d77\u00d77" in _titles(fig)[0]
    plt.close(fig)


def test_plot_filters_returns_figure_not_registered_with_pyplot(resnet18):
    before = plt.get_fignums()
    fig = plot_filters(resnet18)
    assert isinstance(fig, plt.Figure)
    assert plt.get_fignums() == before  # shows once in a notebook, nothing to close


def test_plot_filters_never_changes_model_or_tensor(resnet18):
    weight_before = resnet18.conv1.weight.detach().clone()
    plot_filters(resnet18, normalize="global")
    plot_filter(resnet18, 3)
    match_filters(resnet18, max_filters=4)
    assert torch.equal(resnet18.conv1.weight, weight_before)
    assert resnet18.conv1.weight.grad is None

    t = torch.randn(8, 3, 5, 5)
    t_before = t.clone()
    plot_filters(t)
    gabor_likeness(t)
    assert torch.equal(t, t_before)


def test_per_filter_scaling_fills_range_and_global_keeps_relative_strength():
    w = torch.randn(2, 3, 5, 5)
    w[1] *= 0.01  # a weak filter
    per = [im.get_array() for im in _images(plot_filters(w, normalize="per_filter"))]
    glob = [im.get_array() for im in _images(plot_filters(w, normalize="global"))]
    for img in per:
        assert img.min() == pytest.approx(0.0) and img.max() == pytest.approx(1.0)
    assert np.ptp(glob[0]) > 0.9
    assert np.ptp(glob[1]) < 0.05  # the weak filter looks faint on a shared scale


def test_constant_filter_renders_mid_grey_without_nan():
    w = torch.zeros(2, 3, 5, 5)
    w[1] = torch.randn(3, 5, 5)
    img = _images(plot_filters(w))[0].get_array()
    assert np.allclose(img, 0.5)


def test_non_rgb_channel_counts_render_grayscale_per_channel():
    one = _images(plot_filters(torch.randn(4, 1, 5, 5)))
    assert one[0].get_array().shape == (5, 5) and one[0].get_cmap().name.startswith("gray")
    many = _images(plot_filters(torch.randn(4, 16, 3, 3)))  # 16 channels tile 4x4 with 1-pixel gaps
    assert many[0].get_array().shape == (4 * 4 - 1, 4 * 4 - 1)
    assert len(many) == 4


def test_ncols_sets_grid_columns_and_hides_spare_cells():
    fig = plot_filters(torch.randn(10, 3, 5, 5), ncols=4)
    assert _grid_shape(fig) == (3, 4)
    assert len(_images(fig)) == 10  # the two spare cells of the last row stay empty
    assert len(_images(plot_filters(torch.randn(70, 3, 3, 3), max_filters=None, ncols=10))) == 70
    assert len(_images(plot_filters(torch.randn(70, 3, 3, 3), max_filters=20))) == 20


def test_vit_patch_embedding_shows_first_64_of_768(vit):
    fig = plot_filters(vit)
    assert len(_images(fig)) == 64
    assert "conv_proj" in _titles(fig)[0] and "first 64 of 768" in _titles(fig)[0]
    assert _images(fig)[0].get_array().shape == (16, 16, 3)


def test_efficientnet_b0_first_conv_plots_and_scores():
    model = torchvision.models.efficientnet_b0(weights=None)
    fig = plot_filters(model)
    assert len(_images(fig)) == 32 and "features.0.0" in _titles(fig)[0]
    scores = gabor_likeness(model)
    assert scores.shape == (32,) and bool(((scores >= 0) & (scores <= 1)).all())


def test_state_dict_source_uses_first_conv_weight(resnet18):
    fig = plot_filters(resnet18.state_dict())
    assert _titles(fig)[0].startswith("conv1")


@pytest.mark.parametrize("bad, error, pattern", [
    (torch.randn(64, 3, 7), ValueError, r"4-D weight .*got a 3-D tensor of shape \(64, 3, 7\)"),
    (torch.randn(10, 5), ValueError, r"got a 2-D tensor .*model.conv1.weight"),
    ("conv1", TypeError, r"model, a conv layer, a 4-D weight tensor or a state dict; got str"),
])
def test_bad_source_errors_name_what_came_and_what_is_expected(bad, error, pattern):
    with pytest.raises(error, match=pattern):
        plot_filters(bad)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(ncols=0), r"ncols must be a whole number >= 1.*got 0"),
    (dict(ncols=2.5), r"ncols .*got 2.5"),
    (dict(normalize="minmax"), r"normalize must be 'per_filter' .* or 'global' .*got 'minmax'"),
    (dict(max_filters=0), r"max_filters must be .*got 0"),
])
def test_bad_plot_options_raise_clear_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        plot_filters(torch.randn(4, 3, 5, 5), **kwargs)


def test_plot_filter_zooms_into_one_filter_with_channels_and_match():
    w = _synthetic_gabors(4)
    fig = plot_filter(w, 2)
    labels = [ax.get_title() for ax in fig.axes]
    assert labels[:4] == ["RGB", "R", "G", "B"] and labels[4].startswith("best match\n")
    assert "filter 2 of 4" in _titles(fig)[0] and "Gabor-likeness 0.9" in _titles(fig)[0]
    with pytest.raises(IndexError, match=r"0\.\.3 .*got 4"):
        plot_filter(w, 4)


def test_plot_filter_on_1x1_conv_says_score_not_applicable():
    fig = plot_filter(nn.Conv2d(16, 8, 1), 0, name="proj")
    assert "proj" in _titles(fig)[0] and "n/a for 1\u00d71" in _titles(fig)[0]


# --------------------------------------------------------------------------- banks


def test_gabor_bank_is_zero_mean_unit_norm_and_shaped_like_a_conv_weight():
    bank = gabor_bank(7)
    assert bank.shape == (64, 1, 7, 7)  # 8 orientations x 4 wavelengths x 2 phases
    flat = bank.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(64), atol=1e-6)
    assert torch.allclose(flat.norm(dim=1), torch.ones(64), atol=1e-5)


def test_gabor_bank_spans_orientations_wavelengths_phases_widths():
    bank = gabor_bank((9, 7), orientations=4, wavelengths=(3.0, 6.0), phases=3, widths=(0.4, 0.8), shifts=1)
    assert bank.shape == (4 * 2 * 3 * 2 * 9, 1, 9, 7)
    # orientation 0 has vertical stripes (varies along a row), orientation 90 degrees horizontal ones
    pair = gabor_bank(7, orientations=2, wavelengths=(4.0,), phases=1)[:, 0]
    assert bool((pair[0, :, 3] > 0).all()) and bool((pair[0, 3, :] < 0).any())
    assert bool((pair[1, 3, :] > 0).all()) and bool((pair[1, :, 3] < 0).any())


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(size=2), ValueError, r"at least 3 pixels.*got \(2, 2\)"),
    (dict(size="7"), TypeError, r"size must be an int or a pair"),
    (dict(size=7, orientations=0), ValueError, r"orientations must be .*got 0"),
    (dict(size=7, wavelengths=(1.0,)), ValueError, r"wavelengths must be at least 2 pixels"),
    (dict(size=7, widths=(0.0,)), ValueError, r"widths must be positive"),
])
def test_gabor_bank_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        gabor_bank(**kwargs)


def test_sobel_kernels_find_vertical_and_horizontal_edges():
    k = sobel_kernels()
    assert k.shape == (2, 1, 3, 3)
    step = torch.zeros(1, 1, 5, 5)
    step[..., 3:] = 1.0  # a vertical edge: dark left, bright right
    response = torch.nn.functional.conv2d(step, k)
    assert response[0, 0].abs().sum() > 0 and response[0, 1].abs().sum() == 0


# --------------------------------------------------------------------------- Gabor-likeness


def test_bank_gabor_scores_one():
    assert gabor_likeness(gabor_bank(7)).min() > 0.999


def test_off_grid_colour_gabors_score_above_0_9():
    scores = gabor_likeness(_synthetic_gabors(64))
    assert scores.mean() > 0.93
    assert scores.min() > 0.85


def test_kaiming_random_7x7_filters_score_low():
    scores = gabor_likeness(_kaiming())
    assert 0.2 < scores.mean() < 0.45
    assert scores.max() < 0.6


def test_random_resnet18_conv1_scores_low_and_in_unit_interval(resnet18):
    scores = gabor_likeness(resnet18)
    assert scores.shape == (64,)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert scores.mean() < 0.45


def test_colour_opponent_filter_scores_like_its_grey_version():
    pattern = _gabor(7, 0.7, 4.0, 0.3, 2.0)
    grey = pattern.expand(3, 7, 7)[None]
    red_green = torch.stack([pattern, -pattern, 0 * pattern])[None]
    assert gabor_likeness(grey).item() == pytest.approx(gabor_likeness(red_green).item(), abs=1e-5)
    assert gabor_likeness(red_green).item() > 0.9


def test_smooth_colour_blob_scores_high_and_flat_colour_scores_zero():
    r = torch.arange(7) - 3.0
    blob = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.6 ** 2))
    colour_blob = torch.stack([blob, -0.5 * blob, 0.2 * blob]) + torch.tensor([0.3, 0.1, -0.2])[:, None, None]
    flat = torch.ones(3, 7, 7) * torch.tensor([1.0, -1.0, 0.5])[:, None, None]
    scores = gabor_likeness(torch.stack([colour_blob, flat]))
    assert scores[0] > 0.95
    assert scores[1] == 0.0


def test_score_ignores_scale_and_channel_offsets():
    w = _kaiming(8)
    moved = 3.0 * w + torch.randn(1, 3, 1, 1)
    assert torch.allclose(gabor_likeness(w), gabor_likeness(moved), atol=1e-4)


def test_larger_random_kernels_score_lower_and_3x3_is_documented_as_unreliable():
    means = [gabor_likeness(_kaiming(32, 3, k)).mean().item() for k in (3, 7, 16)]
    assert means[0] > means[1] > means[2]


def test_gabor_likeness_on_vit_patch_embedding(vit):
    scores = gabor_likeness(vit)
    assert scores.shape == (768,)
    assert scores.mean() < 0.3


def test_gabor_likeness_rejects_1x1_kernels():
    with pytest.raises(ValueError, match=r"at least 3x3; these filters are 1x1"):
        gabor_likeness(nn.Conv2d(8, 8, 1))


def test_find_matches_names_the_matched_bank_kernel():
    bank = gabor_bank(7)
    m = find_matches(bank[[5, 40]].expand(-1, 3, -1, -1), bank)
    assert m.indices.tolist() == [5, 40]
    assert m.labels == ["bank[5]", "bank[40]"]
    assert torch.allclose(m.kernels, bank[[5, 40], 0], atol=1e-5)
    flipped = find_matches(-bank[[5]], bank)
    assert torch.allclose(flipped.kernels[0], -bank[5, 0], atol=1e-5)  # shown with the filter's polarity


def test_find_matches_default_labels_are_readable():
    m = find_matches(_synthetic_gabors(3))
    assert all(label.startswith(("Gabor", "blob", "centre-surround")) for label in m.labels)


# --------------------------------------------------------------------------- match / compare


def test_match_filters_pairs_each_filter_with_its_match():
    fig = match_filters(_synthetic_gabors(6), ncols=3)
    images = _images(fig)
    assert len(images) == 12
    assert images[0].get_array().shape == (7, 7, 3) and images[1].get_array().shape == (7, 7)
    assert "Gabor/blob bank" in _titles(fig)[0]


def test_match_filters_against_sobel_resizes_the_bank():
    w = sobel_kernels().expand(-1, 3, -1, -1)
    w = torch.nn.functional.interpolate(w, size=(7, 7), mode="bilinear", align_corners=True)
    m = find_matches(w, sobel_kernels())
    assert m.indices.tolist() == [0, 1] and bool((m.scores > 0.99).all())
    fig = match_filters(w, sobel_kernels())
    assert "given bank" in _titles(fig)[0]
    with pytest.raises(ValueError, match="bank must be K x height x width"):
        match_filters(w, torch.randn(3, 3))


def test_compare_filters_titles_carry_mean_gabor_likeness():
    fig = compare_filters({"gabor": _synthetic_gabors(16), "random": _kaiming(16)}, ncols=4)
    heads = [sf._suptitle.get_text().splitlines()[0] for sf in fig.subfigs]
    assert heads[0].startswith("gabor: mean Gabor-likeness 0.9")
    assert heads[1].startswith("random: mean Gabor-likeness 0.")
    values = [float(h.rsplit(" ", 1)[1]) for h in heads]
    assert values[0] > values[1] + 0.4
    assert len(_images(fig)) == 32


def test_compare_filters_bad_input():
    with pytest.raises(TypeError, match=r"non-empty dict \{label: model or weight\}"):
        compare_filters([torch.randn(4, 3, 5, 5)])
    with pytest.raises(ValueError, match=r"sources\['b'\] must be a 4-D weight"):
        compare_filters({"a": torch.randn(4, 3, 5, 5), "b": torch.randn(4, 5)})


# --------------------------------------------------------------------------- drift


def test_filter_drift_is_zero_for_identical_and_relative_per_filter(resnet18):
    assert torch.equal(filter_drift(resnet18, copy.deepcopy(resnet18)), torch.zeros(64))
    before = torch.randn(4, 3, 5, 5)
    after = before.clone()
    after[2] *= 1.5
    drift = filter_drift(before, after)
    assert drift.tolist() == pytest.approx([0.0, 0.0, 0.5, 0.0])


def test_filter_drift_between_models_sees_only_the_trained_filter(resnet18):
    after = copy.deepcopy(resnet18)
    with torch.no_grad():
        after.conv1.weight[7] *= 1.1
    drift = filter_drift(resnet18, after)
    assert drift.argmax().item() == 7 and drift[7] == pytest.approx(0.1, rel=1e-3)
    assert (drift != 0).sum().item() == 1
    assert filter_drift(resnet18.conv1, after.conv1)[7] == pytest.approx(0.1, rel=1e-3)
    assert filter_drift(resnet18.state_dict(), after.state_dict())[7] == pytest.approx(0.1, rel=1e-3)


def test_filter_drift_of_a_named_layer(resnet18):
    after = copy.deepcopy(resnet18)
    with torch.no_grad():
        after.layer4[1].conv2.weight.mul_(2.0)
    assert filter_drift(resnet18, after).abs().max() == 0
    assert torch.allclose(filter_drift(resnet18, after, layer="layer4.1.conv2"), torch.ones(512))
    with pytest.raises(KeyError, match=r"no conv layer named 'layer9'.*conv1, layer1.0.conv1"):
        filter_drift(resnet18, after, layer="layer9")
    with pytest.raises(ValueError, match=r"layer='conv1' only applies to models and state dicts"):
        filter_drift(torch.randn(2, 3, 3, 3), torch.randn(2, 3, 3, 3), layer="conv1")


def test_filter_drift_shape_mismatch_and_zero_filters():
    with pytest.raises(ValueError, match=r"same filter shape; got \(64, 3, 7, 7\) .* and \(768, 3, 16, 16\)"):
        filter_drift(torch.randn(64, 3, 7, 7), torch.randn(768, 3, 16, 16))
    before = torch.zeros(2, 1, 3, 3)
    after = before.clone()
    after[1] += 1
    assert filter_drift(before, after).tolist() == [0.0, math.inf]


def test_plot_filter_drift_draws_one_bar_per_filter_per_run(resnet18):
    a, b = copy.deepcopy(resnet18), copy.deepcopy(resnet18)
    with torch.no_grad():
        a.conv1.weight.mul_(1.01)
        b.conv1.weight.mul_(1.3)
    fig = plot_filter_drift(resnet18, {"discriminative": a, "one lr": b})
    ax = fig.axes[0]
    assert len(ax.patches) == 128
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["discriminative (mean 0.01)", "one lr (mean 0.3)"]
    single = plot_filter_drift(resnet18, a)
    assert len(single.axes[0].patches) == 64


# ------------------------------------------------------------- the offline backbone (EfficientNet-Lite0, ImageNet)


def _offline_models():
    return pytest.importorskip("labkit.models", reason="labkit.models is not importable")


def _live(weight):
    """The filters whose weights are not ~0 (EfficientNet-Lite0's stem has dead ones)."""
    norms = weight.flatten(1).norm(dim=1)
    return weight[norms > 1e-3 * norms.median()]


def test_offline_backbone_stem_is_clearly_more_colour_separable_than_random_init():
    models = _offline_models()
    try:
        pretrained = models.load_backbone("efficientnet_lite0", verbose=False).model
    except models.BackboneUnavailableError as e:
        pytest.skip(f"the offline backbone's weights are not installed: {e}")
    name, conv = first_conv(pretrained)
    assert name == "conv_stem" and tuple(conv.weight.shape) == (32, 3, 3, 3)
    live = _live(conv.weight.detach())
    assert len(live) == 28  # 4 of the 32 stem filters are dead (weights ~0)
    pre = colour_separability(live).mean().item()
    rand = []
    for seed in range(3):
        torch.manual_seed(seed)
        rand.append(colour_separability(models.build_efficientnet_lite0()).mean().item())
    assert max(rand) < 0.65, rand
    assert pre > max(rand) + 0.25, f"pretrained {pre:.3f} vs random init {rand}"


def test_gabor_likeness_cannot_tell_the_offline_stem_from_smooth_noise():
    """Documents why lesson 02 does not lean on Gabor-likeness for 3x3 stems."""
    models = _offline_models()
    try:
        pretrained = models.load_backbone("efficientnet_lite0", verbose=False).model
    except models.BackboneUnavailableError as e:
        pytest.skip(f"the offline backbone's weights are not installed: {e}")
    live = _live(first_conv(pretrained)[1].weight.detach())
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(400, 3, 5, 5, generator=g), 3, stride=1)  # 3x3, smooth
    assert abs(gabor_likeness(live).mean().item() - gabor_likeness(smooth).mean().item()) < 0.1


# --------------------------------------------------------------------------- empty input, 3x3 measures


@pytest.mark.parametrize("fn", [plot_filters, gabor_likeness, compare_filters, gradient_share, colour_separability])
def test_empty_weight_raises_one_line_error_naming_shape_and_fix(fn):
    empty = torch.empty(0, 3, 7, 7)
    source = {"empty": empty} if fn is compare_filters else empty
    with pytest.raises(ValueError,
                       match=r"no filters.*shape \(0, 3, 7, 7\); expected N x C x H x W.*Fix: pass a non-empty"):
        fn(source)


def test_gradient_share_is_one_for_ramps_quarter_for_white_noise_and_zero_for_flat():
    ramp = torch.arange(3.0)[None, :].expand(3, 3)
    ramps = torch.stack([torch.stack([ramp, 2 * ramp, -ramp]), torch.stack([ramp.T] * 3)])
    assert torch.allclose(gradient_share(ramps), torch.ones(2), atol=1e-5)
    assert torch.allclose(gradient_share(sobel_kernels()), torch.full((2,), 8 / 9), atol=1e-5)
    torch.manual_seed(0)
    assert abs(gradient_share(torch.randn(4000, 3, 3, 3)).mean().item() - 0.25) < 0.01
    assert gradient_share(torch.ones(1, 3, 3, 3)).item() == 0.0


def test_gradient_share_rejects_1x1_kernels():
    with pytest.raises(ValueError, match=r"at least 2x2; these filters are 1x1"):
        gradient_share(nn.Conv2d(3, 8, 1))


def test_colour_separability_is_one_for_one_pattern_in_any_colours_and_low_for_noise():
    edge = sobel_kernels()[:1]
    assert colour_separability(torch.cat([edge, -edge, 0.5 * edge], dim=1)).item() == pytest.approx(1.0, abs=1e-5)
    two_patterns = torch.cat([edge, sobel_kernels()[1:], torch.zeros_like(edge)], dim=1)
    assert colour_separability(two_patterns).item() == pytest.approx(0.5, abs=1e-5)
    torch.manual_seed(0)
    assert 0.54 < colour_separability(torch.randn(2000, 3, 3, 3)).mean().item() < 0.61
    assert colour_separability(torch.zeros(1, 3, 3, 3)).item() == 0.0


def test_colour_separability_needs_colour_channels():
    with pytest.raises(ValueError, match=r"at least 2 input channels .*these have 1"):
        colour_separability(torch.randn(4, 1, 3, 3))
