import matplotlib.pyplot as plt
import pytest

from labkit.strategy import STRATEGIES, advise, bn_advice, choose_strategy, plot_plane


@pytest.mark.parametrize("n,gap,expected", [
    (500, 0.1, "feature_extraction"),
    (300, 0.9, "partial_finetune"),
    (2_000, 0.7, "partial_finetune"),
    (50_000, 0.1, "full_finetune"),
    (5_000_000, 0.2, "full_finetune"),
    (9_999, 0.49, "feature_extraction"),
    (10_000, 0.5, "full_finetune"),
])
def test_choose_strategy_follows_the_quadrants(n, gap, expected):
    assert choose_strategy(n, gap) == expected
    assert expected in STRATEGIES


def test_batchnorm_stays_frozen_with_little_data_and_updates_with_plenty():
    assert bn_advice(300, 0.9) == "freeze"
    assert bn_advice(50_000, 0.9) == "update"


def test_advice_mentions_scratch_only_for_huge_very_distant_data():
    assert "scratch" in advise(5_000_000, 0.9).reason
    assert "scratch" not in advise(50_000, 0.9).reason
    assert str(advise(300, 0.9)).startswith("partial_finetune (BatchNorm: freeze): ")


@pytest.mark.parametrize("n,gap,match", [
    (0, 0.5, "n_images must be a positive int"),
    (10.5, 0.5, "n_images must be a positive int"),
    (100, 1.5, r"domain_gap must be a number in \[0, 1\]"),
    (100, "far", r"domain_gap must be a number in \[0, 1\]"),
])
def test_bad_inputs_are_refused(n, gap, match):
    with pytest.raises(ValueError, match=match):
        choose_strategy(n, gap)


def test_plane_marks_the_given_points():
    fig = plot_plane({"cells": (300, 0.9), "pets": (3_000, 0.1)})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.texts if t.get_text() in ("cells", "pets")] == ["cells", "pets"]
    plt.close(fig)
