import matplotlib.pyplot as plt
import pytest

from labkit.strategy import (
    ALL_STRATEGIES, STRATEGIES, STRATEGY_TABLE, advise, apply_strategy, bn_advice, choose_strategy, plot_plane,
    strategy_table,
)


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


def test_the_strategy_table_names_every_strategy_and_the_advice_reads_its_batchnorm_policy():
    assert ALL_STRATEGIES == ("cached_features", "feature_extraction", "partial_finetune", "full_finetune",
                              "discriminative_finetune")
    assert set(STRATEGIES) <= set(STRATEGY_TABLE)
    for n, gap in ((300, 0.1), (300, 0.9), (50_000, 0.9)):
        assert bn_advice(n, gap) == STRATEGY_TABLE[choose_strategy(n, gap)].batchnorm
    assert [line.split()[0] for line in strategy_table().splitlines()[2:]] == list(ALL_STRATEGIES)


@pytest.mark.parametrize("name,trainable_stages,rates", [
    ("feature_extraction", ["fc"], [1e-2]),
    ("cached_features", ["fc"], [1e-2]),
    ("partial_finetune", ["layer4", "fc"], [1e-3, 1e-2]),
    ("full_finetune", ["stem", "layer1", "layer2", "layer3", "layer4", "fc"], [1e-3] * 6),
    ("discriminative_finetune", ["stem", "layer1", "layer2", "layer3", "layer4", "fc"],
     [1e-2 * 0.5 ** k for k in (5, 4, 3, 2, 1, 0)]),
])
def test_apply_strategy_freezes_replaces_the_head_and_sets_the_rates(name, trainable_stages, rates):
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    groups = apply_strategy(model, name, num_classes=4, lr=1e-2, decay=0.5, weight_decay=1e-4)
    assert model.fc.out_features == 4
    decayed = [g for g in groups if g["weight_decay"] > 0]
    assert [g["stage"] for g in decayed] == trainable_stages
    assert [g["lr"] for g in decayed] == pytest.approx(rates)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}


def test_apply_strategy_rejects_unknown_names_and_a_faster_thawed_rate():
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match="apply_strategy: expected one of cached_features, .*got 'frozen'"):
        apply_strategy(model, "frozen", num_classes=2, lr=1e-2)
    with pytest.raises(ValueError, match=r"thawed_lr_factor: expected a number in \(0, 1\]"):
        apply_strategy(model, "partial_finetune", num_classes=2, lr=1e-2, thawed_lr_factor=2.0)
