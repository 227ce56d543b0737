import matplotlib.pyplot as plt
import pytest

from labkit.strategy import (
    ALL_STRATEGIES,
    STRATEGIES,
    STRATEGY_TABLE,
    advise,
    apply_strategy,
    bn_advice,
    choose_strategy,
    plot_plane,
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


# --------------------------------------------------------------------------- measuring the gap
import torch  # noqa: E402
import torchvision  # noqa: E402

from labkit.strategy import (  # noqa: E402
    DomainGap,
    batchnorm_shift,
    choose_partial_from,
    measure_domain_gap,
    reference_photos,
)


def _lite0():
    from labkit.models import build_efficientnet_lite0

    torch.manual_seed(0)
    return build_efficientnet_lite0(4).eval()


def test_choose_partial_from_thaws_a_quarter_of_the_body_on_any_network():
    assert choose_partial_from(torchvision.models.resnet18(weights=None)) == "layer4"
    assert choose_partial_from(_lite0()) == "blocks.6"
    assert choose_partial_from(_lite0(), share=1.0) == "stem"
    with pytest.raises(ValueError, match=r"share must be a number in \(0, 1\]"):
        choose_partial_from(_lite0(), share=0)


def _bn_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4))
    return net.eval()


def test_batchnorm_shift_is_zero_on_the_stored_statistics_and_grows_with_a_shift():
    net = _bn_net()
    x = torch.randn(64, 3, 8, 8)
    net.train()
    from labkit.adapt import adapt_batchnorm

    adapt_batchnorm(net, [x])  # the stored statistics are now exactly x's
    net.train()
    near = batchnorm_shift(net, x)
    far = batchnorm_shift(net, x * 3 + 2)
    assert list(near) == ["1", "4"] and net.training  # names in order; modes restored
    assert max(near.values()) < 0.05 and min(far.values()) > 1.0


def test_batchnorm_shift_leaves_out_dead_channels_and_changes_nothing():
    net = _bn_net()
    with torch.no_grad():
        net[1].running_var[0] = 0.0
    state = {k: v.clone() for k, v in net.state_dict().items()}
    batchnorm_shift(net, torch.randn(8, 3, 8, 8))
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="no BatchNorm"):
        batchnorm_shift(torch.nn.Conv2d(3, 3, 1), torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="N x C x H x W"):
        batchnorm_shift(net, torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="gave no images"):
        batchnorm_shift(net, [])


def test_measure_domain_gap_reads_the_distance_against_the_reference():
    net = _bn_net()
    x = torch.randn(32, 3, 8, 8)
    result = measure_domain_gap(net, x * 3 + 2, reference=x)
    assert isinstance(result, DomainGap) and 0 < result.gap < 1 and float(result) == result.gap
    assert result.gap == pytest.approx(1 - result.reference / result.distance)
    assert measure_domain_gap(net, x, reference=x).gap == 0.0
    same = measure_domain_gap(net, x * 3 + 2, reference=result.reference)
    assert same.gap == pytest.approx(result.gap) and "domain gap" in str(same)
    with pytest.raises(ValueError, match="positive number"):
        measure_domain_gap(net, x, reference=0.0)
    with pytest.raises(TypeError, match="bool"):
        measure_domain_gap(net, x, reference=True)


def test_reference_photos_are_the_sample_photographs_preprocessed():
    import torchvision.transforms as T

    photos = reference_photos(T.Compose([T.Resize((16, 16)), T.ToTensor()]), crops=1)
    assert photos.shape == (6 * 2 * 2, 3, 16, 16)
    torch.testing.assert_close(photos[1], photos[0].flip(-1), atol=0.02, rtol=0)  # each view also mirrored
    with pytest.raises(ValueError, match="crops must be an int"):
        reference_photos(T.ToTensor(), crops=-1)
