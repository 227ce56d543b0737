"""labkit.compare: every strategy on the same data, one table and one chart."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, TensorDataset

from labkit.compare import STRATEGIES, Arm, Comparison, RunSettings, compare_strategies

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def data(n=24, classes=3, size=16):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=8, shuffle=True), DataLoader(ds, batch_size=24)


class CountingBuilder:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return torchvision.models.resnet18(weights=None)


@pytest.fixture(scope="module")
def comparison():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    build = CountingBuilder()
    train, val = data()
    result = compare_strategies(build, train, val, settings=RunSettings(epochs=2, device="cpu", progress=False))
    torch.set_num_threads(before)
    return result, build


def test_compare_strategies_runs_each_strategy_on_a_fresh_model(comparison):
    result, build = comparison
    assert isinstance(result, Comparison)
    assert [r["strategy"] for r in result.rows] == list(STRATEGIES)
    assert build.calls == len(STRATEGIES)
    assert set(result.histories) == set(STRATEGIES)
    assert all(len(h) == 2 for h in result.histories.values())


def test_compare_strategies_counts_trainable_parameters_per_strategy(comparison):
    result, _ = comparison
    resnet = torchvision.models.resnet18(weights=None)
    total = sum(p.numel() for p in resnet.parameters()) - 1000 * 513 + 3 * 513
    head = 3 * 513
    layer4 = sum(p.numel() for p in resnet.layer4.parameters())
    trainable = {r["strategy"]: r["trainable_params"] for r in result.rows}
    assert trainable == {"cached_features": head, "feature_extraction": head, "partial_finetune": layer4 + head,
                         "full_finetune": total, "discriminative_finetune": total}
    assert all(r["total_params"] == total for r in result.rows)
    assert result["feature_extraction"]["trainable_fraction"] == pytest.approx(head / total)


def test_compare_strategies_fills_times_memory_and_accuracy(comparison):
    result, _ = comparison
    for row in result.rows:
        assert row["s_per_epoch"] > 0 and row["peak_mem_mb"] > 0
        assert row["total_s"] >= 2 * row["s_per_epoch"]
        assert 0.0 <= row["final_val_acc"] <= row["best_val_acc"] <= 1.0
        assert (row["setup_s"] > 0) == (row["strategy"] == "cached_features")
    assert result.meta["epochs"] == 2 and result.meta["device"] == "cpu"


def test_comparison_prints_a_table_plots_bars_and_serialises(comparison):
    result, _ = comparison
    assert repr(result).splitlines()[0] == "Comparison: 2 epochs on cpu"
    lines = str(result).splitlines()
    assert lines[0].split()[:3] == ["strategy", "trainable", "trainable"]
    assert [line.split()[0] for line in lines[2:]] == list(STRATEGIES)
    fig = result.plot()
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == [
        "seconds per epoch", "total seconds (setup + epochs)", "final validation accuracy"]
    assert len(fig.axes[0].patches) == len(STRATEGIES)
    doc = json.loads(json.dumps(result.to_dict()))
    assert [r["strategy"] for r in doc["rows"]] == list(STRATEGIES)


def test_compare_strategies_partial_from_an_earlier_stage():
    train, _ = data(n=8)
    result = compare_strategies(lambda: torchvision.models.resnet18(weights=None), train,
                                arms={"partial_finetune": Arm("partial_finetune", partial_from="layer3")},
                                settings=RunSettings(epochs=1, device="cpu", progress=False))
    resnet = torchvision.models.resnet18(weights=None)
    expected = sum(p.numel() for p in resnet.layer3.parameters()) + sum(
        p.numel() for p in resnet.layer4.parameters()) + 3 * 513
    assert result["partial_finetune"]["trainable_params"] == expected
    assert result["partial_finetune"]["best_val_acc"] is None  # no validation data given


def test_compare_strategies_rejects_bad_arguments_before_training():
    train, val = data(n=8)
    build = CountingBuilder()
    with pytest.raises(ValueError, match=r"unknown: 'frozen_head'.*arms=\('feature_extraction', 'full_finetune'\)"):
        compare_strategies(build, train, arms=("frozen_head",))
    with pytest.raises(ValueError, match="'frozen' is now 'feature_extraction'"):
        compare_strategies(build, train, arms=("frozen",))
    with pytest.raises(ValueError, match="epochs: expected an int >= 1, got 0"):
        compare_strategies(build, train, settings=RunSettings(epochs=0))
    with pytest.raises(TypeError, match="function that builds a fresh model"):
        compare_strategies(torchvision.models.resnet18(weights=None), train)
    with pytest.raises(TypeError, match=r"settings: expected a RunSettings, got dict"):
        compare_strategies(build, train, settings={"epochs": 1})
    assert build.calls == 0


def test_compare_strategies_rejects_a_model_fn_that_returns_the_same_model():
    train, _ = data(n=8)
    shared = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match="fresh model on every call, got the same object twice"):
        compare_strategies(lambda: shared, train, arms=("feature_extraction", "full_finetune"),
                           settings=RunSettings(epochs=1, device="cpu", progress=False))


def test_partial_finetune_trains_thawed_layers_slower_than_the_new_head(comparison):
    result, _ = comparison
    rates = result.histories["partial_finetune"][0]["lrs"]
    assert rates == {"layer4": pytest.approx(1e-4), "fc": pytest.approx(1e-3)}
    assert list(result.histories["full_finetune"][0]["lrs"].values()) == pytest.approx([1e-4] * 6)
    assert len(result.histories["discriminative_finetune"][0]["lrs"]) == 6


def test_every_strategy_starts_from_the_same_seed_whatever_ran_before():
    train, val = data(n=16)
    build = lambda: torchvision.models.resnet18(weights=None)  # noqa: E731
    once = RunSettings(epochs=1, device="cpu", progress=False)
    alone = compare_strategies(build, train, val, arms=("feature_extraction",), settings=once)
    after = compare_strategies(build, train, val, arms=("full_finetune", "feature_extraction"), settings=once)
    first, second = alone.histories["feature_extraction"][0], after.histories["feature_extraction"][0]
    assert first["train_loss"] == second["train_loss"] and first["val_loss"] == second["val_loss"]


def test_compare_strategies_repeats_over_seeds_and_hands_back_the_models():
    train, val = data(n=8)
    result = compare_strategies(lambda: torchvision.models.resnet18(weights=None), train, val,
                                arms=("cached_features", "feature_extraction"),
                                settings=RunSettings(epochs=1, seeds=[0, 1], return_models=True, device="cpu",
                                                     progress=False))
    per_seed = result.per_seed("final_val_acc")
    assert list(per_seed) == ["cached_features", "feature_extraction"]
    assert all(len(values) == 2 for values in per_seed.values())
    assert result["feature_extraction"]["final_val_acc"] == pytest.approx(sum(per_seed["feature_extraction"]) / 2)
    assert result["feature_extraction"]["seeds"] == [0, 1]
    assert [r["seed"] for r in result.runs] == [0, 0, 1, 1]
    assert set(result.models) == {"cached_features", "feature_extraction"}
    model = result.models["cached_features"]
    assert isinstance(model, torch.nn.Module) and model(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    with pytest.raises(KeyError, match="no metric 'accuracy'"):
        result.per_seed("accuracy")


def test_measure_adds_a_metric_to_every_run_and_per_seed():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 2, (16,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    calls = []

    def head_norm(model):
        calls.append(model)
        return {"head_norm": model.fc.weight.norm().item()}

    result = compare_strategies(lambda: torchvision.models.resnet18(weights=None, num_classes=2), loader, loader,
                                arms=("feature_extraction",),
                                settings=RunSettings(epochs=1, num_classes=2, seeds=(0, 1), measure=head_norm,
                                                     device="cpu", progress=False))
    values = result.per_seed("head_norm")["feature_extraction"]
    assert len(values) == 2 and len(calls) == 2
    assert values[0] == pytest.approx(calls[0].fc.weight.norm().item())
    assert result["feature_extraction"]["head_norm"] == pytest.approx(sum(values) / 2)


def test_measure_that_reuses_a_built_in_name_is_refused():
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 2, (8,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    with pytest.raises(ValueError, match="already uses"):
        compare_strategies(lambda: torchvision.models.resnet18(weights=None, num_classes=2), loader, loader,
                           arms=("feature_extraction",),
                           settings=RunSettings(epochs=1, num_classes=2, measure=lambda m: {"final_val_acc": 1.0},
                                                device="cpu", progress=False))


def test_on_epoch_start_turns_feature_extraction_into_gradual_unfreezing():
    from labkit import gradual_unfreeze

    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 2, (16,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    epochs_seen = []

    def thaw(model, optimizer, epoch):
        epochs_seen.append(epoch)
        gradual_unfreeze(model, optimizer, epoch, base_lr=1e-3, decay=0.5)

    result = compare_strategies(lambda: torchvision.models.resnet18(weights=None, num_classes=2), loader, loader,
                                arms={"feature_extraction": Arm("feature_extraction", on_epoch_start=thaw)},
                                settings=RunSettings(epochs=3, num_classes=2, seeds=(0,), return_models=True,
                                                     device="cpu", progress=False))
    assert epochs_seen == [0, 1, 2]
    model = result.models["feature_extraction"]
    assert all(p.requires_grad for p in model.layer3.parameters())  # epoch 2 thawed layer3
    assert not any(p.requires_grad for p in model.layer2.parameters())
    rates = result.histories["feature_extraction"]["lrs"][-1]
    assert len(rates) == 3 and max(rates.values()) == pytest.approx(1e-3)


def test_on_epoch_start_must_be_callable():
    with pytest.raises(TypeError, match=r"on_epoch_start: expected a function \(model, optimizer, epoch\)"):
        Arm("feature_extraction", on_epoch_start=3)


def test_a_bad_arm_is_refused_with_the_fix_before_training():
    train, _ = data(n=8)
    build = CountingBuilder()
    with pytest.raises(ValueError, match=r"Arm: strategy expected one of .*got 'frozen' \('frozen' is now "
                                         r"'feature_extraction'\)"):
        Arm("frozen", lr=1e-3)
    with pytest.raises(ValueError, match=r"Arm: lr expected a number > 0, got -0.1"):
        Arm("full_finetune", lr=-0.1)
    with pytest.raises(ValueError, match=r"thawed_lr_factor expected a number in \(0, 1\].*got 2"):
        Arm("partial_finetune", thawed_lr_factor=2)
    with pytest.raises(ValueError, match="on_epoch_start expected a strategy trained on images"):
        Arm("cached_features", on_epoch_start=lambda model, optimizer, epoch: None)
    with pytest.raises(TypeError, match=r"arms: expected a dict \{name: Arm\(...\)\}, got 'fast': str"):
        compare_strategies(build, train, arms={"fast": "full_finetune"})
    with pytest.raises(ValueError, match=r"seeds: expected a non-empty sequence of ints, got \(\)"):
        RunSettings(seeds=())
    assert build.calls == 0


def test_two_arms_of_one_strategy_at_different_rates_are_run_and_named():
    train, val = data(n=16)
    arms = {f"full {lr:g}": Arm("full_finetune", lr=lr, thawed_lr_factor=1.0) for lr in (1e-2, 1e-4)}
    result = compare_strategies(lambda: torchvision.models.resnet18(weights=None), train, val, arms=arms,
                                settings=RunSettings(epochs=1, seeds=(0, 1), device="cpu", progress=False))
    assert [r["arm"] for r in result.rows] == ["full 0.01", "full 0.0001"]
    assert [r["strategy"] for r in result.rows] == ["full_finetune", "full_finetune"]
    assert [(r["arm"], r["seed"]) for r in result.runs] == [
        ("full 0.01", 0), ("full 0.0001", 0), ("full 0.01", 1), ("full 0.0001", 1)]
    assert list(result.histories["full 0.01"][0]["lrs"].values()) == pytest.approx([1e-2] * 6)
    assert list(result.histories["full 0.0001"][0]["lrs"].values()) == pytest.approx([1e-4] * 6)
    assert result.per_seed("final_train_acc").keys() == {"full 0.01", "full 0.0001"}
    assert str(result).splitlines()[0].split()[0] == "arm" and "full 0.01" in str(result)
    d = result.paired("full 0.01", "full 0.0001", metric="final_train_acc")
    assert (d.a_name, d.b_name, len(d.diffs)) == ("full 0.01", "full 0.0001", 2)
    with pytest.raises(KeyError, match="no arm 'full 1'"):
        result.paired("full 1", "full 0.01")
    fig = result.plot()
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["full 0.01", "full 0.0001"]


def test_arms_are_reproducible_across_calls_with_the_same_seed():
    train, val = data(n=16)
    arms = {"head": Arm("feature_extraction", lr=1e-2), "thawed": Arm("partial_finetune", lr=1e-2)}
    settings = RunSettings(epochs=1, seeds=(3,), device="cpu", progress=False)
    build = lambda: torchvision.models.resnet18(weights=None)  # noqa: E731
    first = compare_strategies(build, train, val, arms=arms, settings=settings)
    second = compare_strategies(build, train, val, arms=dict(reversed(arms.items())), settings=settings)
    for name in arms:
        a, b = first.histories[name], second.histories[name]
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    assert [r["arm"] for r in second.rows] == ["thawed", "head"]  # rows in the order the arms were given
