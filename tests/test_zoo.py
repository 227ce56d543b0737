"""labkit.zoo: the weights metadata table, its chart, preprocessing side by side, latency and memory."""
import math

import pytest
import torch
import torchvision
from matplotlib.figure import Figure
from torchvision.models import EfficientNet_B0_Weights, ResNet50_Weights

from labkit.zoo import (
    HIGHLIGHT,
    Latency,
    family_of,
    format_zoo,
    measure_latency,
    plot_zoo,
    preprocessing_table,
    rank_disagreements,
    weights_table,
)


def test_weights_table_reads_torchvisions_own_figures_for_a_builder():
    rows = weights_table(builders=["resnet50"])
    assert [r["weights"] for r in rows] == [str(w) for w in ResNet50_Weights]
    v2 = rows[1]
    meta = ResNet50_Weights.IMAGENET1K_V2.meta
    assert v2["default"] is True and rows[0]["default"] is False
    assert v2["acc@1"] == meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert v2["gflops"] == meta["_ops"] and v2["file_mb"] == meta["_file_size"]
    assert v2["params_m"] == pytest.approx(meta["num_params"] / 1e6)
    assert (v2["family"], v2["crop"], v2["resize"]) == ("ResNet", 224, 232)


def test_weights_table_covers_every_builder_and_only_weights_with_an_accuracy():
    rows = weights_table()
    builders = set(torchvision.models.list_models(module=torchvision.models))
    assert {r["builder"] for r in rows} == builders
    assert all(math.isfinite(r["acc@1"]) for r in rows)
    assert "VGG16_Weights.IMAGENET1K_FEATURES" not in {r["weights"] for r in rows}
    assert sum(r["default"] for r in rows) == len(builders)
    assert {"ResNet", "EfficientNet", "ViT"} <= {r["family"] for r in rows}


def test_weights_table_rejects_unknown_builders_and_a_bare_string():
    with pytest.raises(ValueError, match="not torchvision classification builders"):
        weights_table(builders=["resnet5000"])
    with pytest.raises(TypeError, match="list of names"):
        weights_table(builders="resnet50")


def test_family_of_names_the_family_most_specific_prefix_first():
    assert family_of("resnet18") == "ResNet"
    assert family_of("wide_resnet50_2") == "Wide ResNet"
    assert family_of("efficientnet_v2_s") == "EfficientNet"
    assert family_of("vit_b_16") == "ViT"
    assert family_of("my_net") == "other"
    with pytest.raises(TypeError, match="builder name"):
        family_of(3)


def test_format_zoo_sorts_limits_and_picks_columns():
    rows = [{"name": "a", "acc@1": 70.0, "n": 1}, {"name": "b", "acc@1": 80.25, "n": 2},
            {"name": "c", "acc@1": 75.0, "n": 3}]
    text = format_zoo(rows, columns=["name", "acc@1"], sort_by="acc@1", limit=2)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "acc@1"]
    assert [line.split()[0] for line in lines[2:]] == ["b", "c"]
    assert "80.2" in lines[2] or "80.3" in lines[2]
    assert [r["name"] for r in rows] == ["a", "b", "c"]  # input untouched
    with pytest.raises(KeyError, match="not in the rows"):
        format_zoo(rows, columns=["nope"])
    with pytest.raises(KeyError, match="sort_by"):
        format_zoo(rows, sort_by="nope")
    assert format_zoo([]) == "(no rows)"


def test_plot_zoo_highlights_the_three_families_and_leaves_rows_unchanged():
    rows = weights_table()
    before = [dict(r) for r in rows]
    fig = plot_zoo(rows)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["other families", *HIGHLIGHT]
    assert ax.get_xscale() == "log"
    assert {t.get_text() for t in ax.texts} == {"resnet18", "resnet50", "efficientnet_b0", "vit_b_16"}
    assert rows == before


def test_plot_zoo_says_what_it_needs():
    with pytest.raises(ValueError, match="no rows"):
        plot_zoo([])
    with pytest.raises(KeyError, match="not a column"):
        plot_zoo(weights_table(builders=["resnet18"]), x="latency")


def test_preprocessing_table_shows_what_differs_between_checkpoints():
    rows = preprocessing_table([ResNet50_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2,
                                EfficientNet_B0_Weights.DEFAULT])
    assert [(r["resize"], r["crop"], r["interpolation"]) for r in rows] == [
        (256, 224, "bilinear"), (232, 224, "bilinear"), (256, 224, "bicubic")]
    assert rows[0]["mean"] == "0.485, 0.456, 0.406"


def test_preprocessing_table_reads_the_offline_backbones_weights():
    models = pytest.importorskip("labkit.models")
    try:
        native, small = models.lite0_weights(), models.lite0_weights(input_size=112)
    except models.BackboneUnavailableError as e:
        pytest.skip(f"the offline backbone's weights are not installed: {e}")
    rows = preprocessing_table([native, small])
    assert [r["weights"] for r in rows] == ["EfficientNetLite0_Weights.IMAGENET1K_TF"] * 2
    assert [(r["resize"], r["crop"], r["interpolation"]) for r in rows] == [
        (256, 224, "bicubic"), (128, 112, "bicubic")]
    assert rows[0]["mean"] == rows[0]["std"] == "0.500, 0.500, 0.500"


def test_measure_latency_times_each_batch_size_and_restores_threads(one_torch_thread):
    model = torchvision.models.resnet18(weights=None).train()
    before = torch.get_num_threads()
    rows = measure_latency(model, batch_sizes=(1, 2), image_size=32, device="cpu", warmup=0, iters=1, threads=1,
                           name="r18")
    assert [r.batch_size for r in rows] == [1, 2]
    assert all(isinstance(r, Latency) and r.name == "r18" and r.device == "cpu" for r in rows)
    assert all(r.ms_per_image > 0 and r.ms_per_batch == pytest.approx(r.ms_per_image * r.batch_size) for r in rows)
    assert all(r.peak_mb is None or r.peak_mb >= 0 for r in rows)
    assert rows[0].weights_mb == pytest.approx(sum(p.numel() for p in model.parameters()) * 4 / 2**20)
    assert not model.training
    assert torch.get_num_threads() == before
    assert rows[0].to_dict()["batch_size"] == 1


def test_measure_latency_builds_a_builder_by_name(one_torch_thread):
    rows = measure_latency("mobilenet_v3_small", batch_sizes=(1,), image_size=32, device="cpu", warmup=0, iters=1)
    assert rows[0].name == "mobilenet_v3_small"


def test_measure_latency_checks_its_inputs():
    with pytest.raises(ValueError, match="batch_sizes"):
        measure_latency("resnet18", batch_sizes=(0,))
    with pytest.raises(ValueError, match="batch_sizes"):
        measure_latency("resnet18", batch_sizes=())
    with pytest.raises(ValueError, match="iters"):
        measure_latency("resnet18", iters=0)
    with pytest.raises(ValueError, match="image_size"):
        measure_latency("resnet18", image_size=0)
    with pytest.raises(TypeError, match="nn.Module or a torchvision builder name"):
        measure_latency(42)


def test_rank_disagreements_lists_pairs_ordered_differently():
    assert rank_disagreements({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 5.0, "b": 1.0, "c": 9.0}) == [("a", "b")]
    assert rank_disagreements({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}) == []
    assert rank_disagreements({"a": 1.0, "z": 2.0}, {"a": 3.0}) == []
