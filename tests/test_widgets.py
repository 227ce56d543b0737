"""labkit.widgets.filter_browser: built and driven headless, by setting control values."""
from __future__ import annotations

import ipywidgets as widgets
import pytest
import torch
import torchvision
from torch import nn

from labkit.filters import gabor_bank
from labkit.widgets import FilterBrowser, filter_browser


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


def _title(browser: FilterBrowser) -> str:
    return browser.figure.texts[0].get_text()


def test_browser_starts_on_first_conv_with_one_option_per_conv_layer(resnet18):
    browser = filter_browser(resnet18)
    assert isinstance(browser.widget, widgets.VBox)
    values = [value for _, value in browser.layer.options]
    assert values[:2] == ["conv1", "layer1.0.conv1"] and len(values) == 20
    assert browser.layer.options[0][0] == "conv1  (64\u00d73\u00d77\u00d77)"
    assert browser.index.max == 63
    assert _title(browser).startswith("conv1 \u00b7 filter 0 of 64 \u00b7 Gabor-likeness 0.")


def test_moving_the_slider_redraws_the_chosen_filter(resnet18):
    browser = filter_browser(resnet18)
    first = browser.figure
    browser.index.value = 5
    assert browser.figure is not first
    assert "filter 5 of 64" in _title(browser)


def test_choosing_a_layer_redraws_and_fits_the_slider(resnet18):
    browser = filter_browser(resnet18)
    browser.index.value = 40
    browser.layer.value = "layer4.1.conv2"
    assert browser.index.max == 511 and browser.index.value == 40
    assert _title(browser).startswith("layer4.1.conv2 \u00b7 filter 40 of 512")
    browser.view.value = "channel"
    browser.index.value = 300
    browser.layer.value = "conv1"
    assert browser.index.max == 2 and browser.index.value == 2  # clamped to the 3 input channels
    assert _title(browser).startswith("conv1 \u00b7 input channel 2 (B) of 3")


def test_switching_between_filter_and_channel_view_starts_the_slider_at_zero(resnet18):
    browser = filter_browser(resnet18, layer="layer1.0.conv1")
    browser.index.value = 40
    browser.view.value = "channel"
    assert browser.index.value == 0 and "input channel 0 of 64" in _title(browser)
    browser.index.value = 7
    browser.view.value = "filter"
    assert browser.index.value == 0 and _title(browser).startswith("layer1.0.conv1 \u00b7 filter 0 of 64")


def test_channel_view_shows_one_input_channel_of_every_filter(resnet18):
    browser = filter_browser(resnet18, layer="layer1.0.conv1")
    browser.view.value = "channel"
    assert browser.index.description == "channel"
    browser.index.value = 7
    images = [im for ax in browser.figure.axes for im in ax.get_images()]
    assert len(images) == 64 and images[0].get_array().shape == (3, 3)
    assert "input channel 7 of 64" in _title(browser)


def test_each_change_redraws_once(resnet18, monkeypatch):
    import labkit.widgets as module

    calls = []
    real = module.plot_filter
    monkeypatch.setattr(module, "plot_filter", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    browser = filter_browser(resnet18)
    browser.index.value = 60
    browser.layer.value = "layer1.0.conv1"
    assert calls == [0, 60, 60]


def test_browser_reads_current_weights():
    model = torchvision.models.resnet18(weights=None)
    browser = filter_browser(model)
    before = _title(browser)
    with torch.no_grad():  # "train" filter 1 into a red-green Gabor
        model.conv1.weight[1] = gabor_bank(7)[9, 0] * torch.tensor([1.0, -1.0, 0.0])[:, None, None]
    browser.index.value = 1
    assert _title(browser).endswith("Gabor-likeness 1.00") and _title(browser) != before


def test_vit_browser_has_its_patch_embedding_only():
    browser = filter_browser(torchvision.models.vit_b_16(weights=None))
    assert [value for _, value in browser.layer.options] == ["conv_proj"]
    assert browser.index.max == 767


def test_1x1_layer_shows_channels_and_no_score():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1))
    browser = filter_browser(model, layer="1")
    assert "n/a for 1\u00d71" in _title(browser)


def test_browser_bad_input():
    with pytest.raises(ValueError, match="has no nn.Conv2d layer"):
        filter_browser(nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(KeyError, match=r"no conv layer named 'conv9'.*conv1"):
        filter_browser(torchvision.models.resnet18(weights=None), layer="conv9")
    with pytest.raises(TypeError, match=r"expected a model \(an nn.Module with conv layers\), got Tensor"):
        filter_browser(torch.randn(4, 3, 7, 7))
