"""labkit.widgets: the lesson 03 and 04 views, built and driven headless by setting control values."""
from __future__ import annotations

import ipywidgets as widgets
import pytest
import torch
import torchvision

from labkit.freeze import freeze, freeze_to
from labkit.widgets import param_group_explorer, strategy_explorer

REFERENCE_RATES = ["2.43e-06", "8.10e-06", "2.70e-05", "9.00e-05", "3.00e-04", "1.00e-03"]


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None)


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]


# --------------------------------------------------------------------------- param_group_explorer
def test_explorer_starts_with_the_six_reference_rates(resnet50):
    explorer = param_group_explorer(resnet50)
    assert isinstance(explorer.widget, widgets.VBox)
    assert list(explorer.rates) == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert [f"{lr:.2e}" for lr in explorer.rates.values()] == REFERENCE_RATES
    assert "2.43e-06" in explorer.text and "411.5" in explorer.text  # stem: 1 / 0.3**5 times slower
    assert [t for t in _texts(explorer.figure) if "e-" in t][:6] == REFERENCE_RATES


def test_moving_decay_redraws_with_new_rates(resnet50):
    explorer = param_group_explorer(resnet50)
    first = explorer.figure
    explorer.decay.value = 0.5
    assert explorer.figure is not first
    assert explorer.rates["stem"] == pytest.approx(1e-3 * 0.5**5)
    assert explorer.rates["fc"] == pytest.approx(1e-3)
    assert "decay 0.50" in explorer.figure.axes[0].get_title()
    assert "3.12e-05" in explorer.text or "3.13e-05" in explorer.text


def test_decay_one_gives_every_stage_the_base_rate(resnet50):
    explorer = param_group_explorer(resnet50)
    explorer.decay.value = 1.0
    assert list(explorer.rates.values()) == [pytest.approx(1e-3)] * 6
    assert "learns 1x slower" in explorer.figure.axes[0].get_title()


def test_moving_base_lr_scales_every_stage(resnet50):
    explorer = param_group_explorer(resnet50)
    explorer.base_lr.value = 1e-2
    assert explorer.rates["fc"] == pytest.approx(1e-2)
    assert explorer.rates["layer4"] == pytest.approx(3e-3)
    assert "1.00e-02" in explorer.text


def test_frozen_stages_show_as_frozen_and_keep_the_others_rates():
    model = freeze_to(torchvision.models.resnet18(weights=None), "layer4")
    explorer = param_group_explorer(model)
    assert explorer.rates["stem"] is None and explorer.rates["layer3"] is None
    assert explorer.rates["layer4"] == pytest.approx(3e-4)  # still decay * base_lr, not base_lr
    assert "frozen" in explorer.text
    assert "frozen" in _texts(explorer.figure)


def test_default_model_is_a_resnet_with_six_stages():
    explorer = param_group_explorer()
    assert list(explorer.rates) == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]


def test_explorer_bad_input():
    with pytest.raises(TypeError, match="param_group_explorer expects an nn.Module, got Tensor"):
        param_group_explorer(torch.zeros(3))
    with pytest.raises(ValueError, match=r"base_lr must be a number in \[1e-05, 0.1\].*got 0"):
        param_group_explorer(base_lr=0)
    with pytest.raises(ValueError, match=r"decay must be a number in \[0.05, 1\].*got 1.5"):
        param_group_explorer(decay=1.5)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_group_explorer(freeze(torchvision.models.resnet18(weights=None)))


# --------------------------------------------------------------------------- strategy_explorer
def test_strategy_explorer_starts_on_small_distant_data():
    explorer = strategy_explorer()
    assert isinstance(explorer.widget, widgets.VBox)
    assert explorer.n_images == 300  # exactly the count given, though the slider sits at log10 2.5
    assert explorer.count.value == "300 images"
    assert (explorer.advice.strategy, explorer.advice.bn) == ("partial_finetune", "freeze")
    assert explorer.text.startswith("300 images, domain gap 0.80 -> partial_finetune (BatchNorm: freeze)")
    assert any(t.startswith("your data (300 images)") for t in _texts(explorer.figure))


def test_strategy_explorer_label_is_shown_whole_and_the_count_follows_the_slider():
    explorer = strategy_explorer(n_images=1234)
    assert explorer.log_images.description == "images (log10 scale)"
    assert explorer.log_images.style.description_width == "initial"
    assert explorer.domain_gap.style.description_width == "initial"
    assert explorer.count.value == "1,234 images"
    explorer.log_images.value = 4.0
    assert explorer.n_images == 10_000 and explorer.count.value == "10,000 images"
    explorer.log_images.value = 3.1  # log10(1234) rounded to the slider's 0.1 steps
    assert explorer.n_images == 1234  # back on the starting position: the exact count again


def test_more_data_moves_the_point_and_changes_the_advice():
    explorer = strategy_explorer()
    first = explorer.figure
    explorer.log_images.value = 5.0
    assert explorer.figure is not first
    assert explorer.n_images == 100_000
    assert (explorer.advice.strategy, explorer.advice.bn) == ("full_finetune", "update")
    point = explorer.figure.axes[0].lines[-1]
    assert list(point.get_xdata()) == [100_000] and list(point.get_ydata()) == [pytest.approx(0.8)]


def test_small_gap_gives_feature_extraction_and_huge_distant_data_mentions_scratch():
    explorer = strategy_explorer(n_images=500, domain_gap=0.9)
    explorer.domain_gap.value = 0.1
    assert explorer.advice.strategy == "feature_extraction"
    explorer.domain_gap.value = 0.95
    explorer.log_images.value = 6.5
    assert explorer.advice.strategy == "full_finetune" and "from scratch" in explorer.text


def test_strategy_explorer_bad_input():
    with pytest.raises(ValueError, match="n_images must be an int from 10 to 10,000,000.*got 5"):
        strategy_explorer(n_images=5)
    with pytest.raises(ValueError, match=r"n_images must be an int.*got 300.0"):
        strategy_explorer(n_images=300.0)
    with pytest.raises(ValueError, match=r"domain_gap must be a number in \[0, 1\].*got 1.2"):
        strategy_explorer(domain_gap=1.2)
