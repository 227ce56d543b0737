"""labkit.train: fit, evaluate, History, device/AMP choice, seeding, progress, peak memory."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from labkit._env import progress_enabled
from labkit.device import loader_kwargs, resolve_amp, resolve_device
from labkit.freeze import freeze, frozen_guard
from labkit.heads import replace_head
from labkit.seed import seed_everything
from labkit.train import History, evaluate, fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(n=96, classes=3, size=8, seed=0):
    """Images whose class shows as a brighter channel: easy, but not trivial for a tiny net."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    x[torch.arange(n), y % 3] += 1.0
    return x, y


def tiny_net(classes=3):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


def loaders(n=96, classes=3, batch_size=16):
    x, y = blobs(n, classes)
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=batch_size, shuffle=True), DataLoader(ds, batch_size=32)


class NamedClasses(Dataset):
    """A dataset with a .classes list and no cheap label array (labels only via items)."""

    def __init__(self, x, y, classes):
        self.x, self.y, self.classes = x, y, classes

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class Unlabelled(Dataset):
    """Labels reachable only by loading items, as with most custom datasets."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


# --------------------------------------------------------------------------- fit


def test_fit_lowers_loss_and_fills_every_history_field():
    train, val = loaders()
    model = tiny_net()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    history = fit(model, train, val, optimizer=opt, epochs=4, device="cpu")

    assert len(history) == 4
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["val_acc"][-1] > 0.6
    for row in history.epochs:
        for key in ("train_loss", "val_loss", "seconds", "val_seconds", "images_per_sec", "peak_mem_mb"):
            assert row[key] > 0, key
        for key in ("train_acc", "val_acc"):
            assert 0.0 <= row[key] <= 1.0
        assert row["lr"] == 0.05
    assert history.meta["device"] == "cpu"
    assert history.meta["amp"] == "off"
    assert history.meta["train_images"] == 96
    assert history.meta["memory_kind"].startswith("rss")
    assert history.total_seconds == pytest.approx(sum(history["seconds"]))


def test_fit_without_validation_leaves_val_columns_empty():
    train, _ = loaders()
    model = tiny_net()
    history = fit(model, train, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu")
    assert history["val_acc"] == [None]
    assert history["val_loss"] == [None]


def test_fit_keeps_frozen_backbone_weights_and_bn_statistics_unchanged():
    model = replace_head(freeze(torchvision.models.resnet18(weights=None)), 3)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    head_before = model.fc.weight.detach().clone()
    x, y = blobs(16, 3, size=32)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)

    with frozen_guard(model):
        fit(model, loader, optimizer=opt, epochs=2, device="cpu")

    after = model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed == []  # weights and BN running stats (and num_batches_tracked) untouched
    assert not torch.equal(model.fc.weight, head_before)  # the head did train


def test_fit_steps_the_scheduler_once_per_epoch():
    train, _ = loaders()
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    history = fit(model, train, optimizer=opt, epochs=3, device="cpu", scheduler=sched)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])


def test_history_records_the_rate_of_every_param_group_by_name():
    train, _ = loaders()
    model = tiny_net()
    body = [p for name, p in model.named_parameters() if not name.startswith(tiny_head_prefix(model))]
    head = [p for name, p in model.named_parameters() if name.startswith(tiny_head_prefix(model))]
    opt = torch.optim.SGD([{"params": body, "lr": 0.01, "name": "body"}, {"params": head, "lr": 0.1}], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    history = fit(model, train, optimizer=opt, epochs=2, device="cpu", scheduler=sched)
    assert history["lrs"] == [{"body": 0.01, "group1": 0.1}, {"body": 0.005, "group1": 0.05}]
    assert history["lr"] == [0.01, 0.005]  # the first group's, as before


def tiny_head_prefix(model):
    last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return last + "."


def test_fit_steps_a_per_batch_scheduler_after_every_optimizer_step():
    train, _ = loaders()  # 96 images, batch 16: 6 steps per epoch
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    history = fit(model, train, optimizer=opt, epochs=2, device="cpu", scheduler=sched, scheduler_interval="batch")
    assert history["lr"] == pytest.approx([0.1, 0.1 * 0.5**6])
    with pytest.raises(ValueError, match="scheduler_interval: expected 'epoch' or 'batch', got 'step'"):
        fit(model, train, optimizer=opt, epochs=1, device="cpu", scheduler=sched, scheduler_interval="step")


def test_fit_auto_device_trains_on_cpu_when_no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    train, _ = loaders()
    model = tiny_net()
    history = fit(model, train, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1)
    assert history.meta["device"] == "cpu"


# --------------------------------------------------------------------------- bad input


def _untouched(model, snapshot):
    return all(torch.equal(v, model.state_dict()[k]) for k, v in snapshot.items())


def test_fit_rejects_an_empty_loader():
    model = tiny_net()
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="empty"):
        fit(model, empty, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu")


def test_fit_rejects_a_loader_that_drops_every_batch():
    model = tiny_net()
    x, y = blobs(6)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, drop_last=True)
    with pytest.raises(ValueError, match="at least one batch"):
        fit(model, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu")


def test_fit_names_both_sizes_when_the_head_does_not_match_dataset_classes():
    model = tiny_net(classes=5)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = blobs(12)
    loader = DataLoader(NamedClasses(x, y, ["cat", "dog", "owl"]), batch_size=4)
    with pytest.raises(ValueError, match=r"head has 5 outputs but the data has 3 classes.*replace_head\(model, 3\)"):
        fit(model, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu")
    assert _untouched(model, snapshot)  # nothing trained


def test_fit_catches_a_forgotten_head_swap_from_the_labels():
    model = tiny_net(classes=1000)  # e.g. the ImageNet head left in place
    x, y = blobs(12)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    with pytest.raises(ValueError, match="head has 1000 outputs but the data has 3 classes"):
        fit(model, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu")


def test_fit_trusts_a_larger_head_when_some_classes_are_absent_from_the_labels():
    model = tiny_net(classes=5)
    x, _ = blobs(12)
    y = torch.tensor([0, 1, 3] * 4)  # classes 2 and 4 have no images here: the count is unknown
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    history = fit(model, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu")
    assert history.meta["num_outputs"] == 5


def test_fit_rejects_labels_out_of_range_before_training():
    model = tiny_net(classes=3)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    x, _ = blobs(8)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])  # 3 is out of range for a 3-way head
    loader = DataLoader(Unlabelled(x, y), batch_size=8)
    with pytest.raises(ValueError, match=r"labels out of range.*0\.\.2.*label 3"):
        fit(model, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu")
    assert _untouched(model, snapshot)


def test_fit_rejects_negative_labels_in_validation_data():
    model = tiny_net(classes=3)
    train, _ = loaders()
    x, _ = blobs(4)
    val = DataLoader(Unlabelled(x, torch.tensor([0, -1, 1, 2])), batch_size=4)
    with pytest.raises(ValueError, match="val_loader: labels out of range.*label -1"):
        fit(model, train, val, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu")


def test_fit_rejects_float_labels():
    model = tiny_net()
    x, y = blobs(8)
    loader = DataLoader(Unlabelled(x, y.float()), batch_size=4)
    with pytest.raises(TypeError, match="integer class labels"):
        fit(model, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu")


@pytest.mark.parametrize("epochs", [0, -2])
def test_fit_rejects_fewer_than_one_epoch(epochs):
    train, _ = loaders()
    model = tiny_net()
    with pytest.raises(ValueError, match=f"epochs: expected an int >= 1, got {epochs}"):
        fit(model, train, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=epochs, device="cpu")


def test_fit_rejects_a_model_on_another_device_than_asked():
    train, _ = loaders()
    model = tiny_net()
    with pytest.raises(ValueError, match=r"fit was asked to run on cuda, but the model is on cpu.*model.to\('cuda'\)"):
        fit(model, train, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cuda")
    meta_model = tiny_net().to("meta")
    with pytest.raises(ValueError, match="asked to run on cpu, but the model is on meta"):
        fit(meta_model, train, optimizer=torch.optim.SGD(meta_model.parameters(), lr=0.1), epochs=1, device="cpu")


def test_fit_rejects_a_model_with_nothing_trainable():
    train, _ = loaders()
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    freeze(model)  # the "swap, then freeze" mistake
    with pytest.raises(ValueError, match=r"got 0 trainable of 6 parameter tensors \(every parameter is frozen\)"):
        fit(model, train, optimizer=opt, epochs=1, device="cpu")


def test_fit_rejects_an_optimizer_built_for_another_model():
    train, _ = loaders()
    model, other = tiny_net(), tiny_net()
    with pytest.raises(ValueError, match="belong to another model"):
        fit(model, train, optimizer=torch.optim.SGD(other.parameters(), lr=0.1), epochs=1, device="cpu")


def test_fit_rejects_a_model_that_does_not_return_class_scores():
    train, _ = loaders()
    model = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match=r"shape \(batch, classes\)"):
        fit(model, train, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu")


# --------------------------------------------------------------------------- evaluate, History


def test_evaluate_matches_a_hand_count_and_restores_train_mode():
    x, y = blobs(40)
    model = tiny_net()
    model.train()
    result = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=16), device="cpu")
    assert model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert result.n == 40
    assert result.accuracy == pytest.approx((out.argmax(1) == y).float().mean().item())
    assert result.loss == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)


def test_history_best_table_plot_and_dict():
    h = History([
        {"epoch": 1, "train_loss": 1.0, "train_acc": 0.4, "val_loss": 0.9, "val_acc": 0.5, "seconds": 2.0},
        {"epoch": 2, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.7, "val_acc": 0.75, "seconds": 1.0},
        {"epoch": 3, "train_loss": 0.3, "train_acc": 0.9, "val_loss": 0.8, "val_acc": 0.7, "seconds": 1.0},
    ])
    assert h.best("val_acc")["epoch"] == 2
    assert h.best("val_loss")["epoch"] == 2
    assert h.best("train_loss")["epoch"] == 3
    assert h.total_seconds == 4.0
    assert h[1]["val_acc"] == 0.75  # an int picks an epoch's row
    assert repr(h).splitlines()[0] == "History: 3 epochs"
    text = str(h)
    header = ["epoch", "train", "loss", "train", "acc", "val", "loss", "val", "acc", "seconds"]
    assert text.splitlines()[0].split() == header
    assert "0.750" in text
    fig = h.plot(title="demo")
    assert isinstance(fig, Figure)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]
    assert len(fig.axes[0].lines) == 2  # train and val
    assert json.loads(json.dumps(h.to_dict()))["epochs"][1]["val_acc"] == 0.75
    with pytest.raises(ValueError, match="no epoch has a value for 'peak_mem_mb'"):
        h.best("peak_mem_mb")


# --------------------------------------------------------------------------- device, AMP, seeding, progress


def test_resolve_device_picks_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="expected 'auto', 'cpu'"):
        resolve_device("gpu please")


def test_resolve_amp_prefers_bf16_and_falls_back_to_fp16_with_a_scaler(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_amp(cpu, "auto").enabled is False
    assert resolve_amp(cpu, True).dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_amp(cuda, "auto") == (True, torch.bfloat16, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_amp(cuda, "auto") == (True, torch.float16, True)
    assert resolve_amp(cuda, False).enabled is False
    with pytest.raises(ValueError, match="amp: expected"):
        resolve_amp(cpu, "fp8")


def test_loader_kwargs_pin_memory_only_for_cuda():
    assert loader_kwargs("cpu") == {"pin_memory": False, "num_workers": 0}
    gpu = loader_kwargs("cuda", num_workers=2)
    assert gpu["pin_memory"] is True and gpu["num_workers"] == 2 and gpu["persistent_workers"] is True


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    import random

    import numpy as np

    def draw():
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first


def test_progress_is_off_in_ci_or_when_asked(monkeypatch):
    monkeypatch.delenv("LABKIT_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert progress_enabled() is True
    assert progress_enabled(False) is False
    monkeypatch.setenv("CI", "true")
    assert progress_enabled() is False
    assert progress_enabled(True) is True
    monkeypatch.delenv("CI")
    monkeypatch.setenv("LABKIT_PROGRESS", "0")
    assert progress_enabled() is False


def test_fit_with_progress_bars_on_still_trains(capsys):
    train, val = loaders()
    model = tiny_net()
    history = fit(model, train, val, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
                  device="cpu", progress=True)
    assert len(history) == 2
    assert "epoch" in capsys.readouterr().err  # tqdm draws on stderr in a terminal


def test_peak_memory_sees_an_allocation_and_forgets_it_after_reset():
    # In a fresh process: deep into a long test session the process's high-water mark already
    # sits far above a 256 MB allocation, which made this check depend on test order.
    code = """
import torch
from labkit.measure import PeakMemory
tracker = PeakMemory("cpu")
tracker.start()
big = torch.ones(64 * 2**20 // 4 * 4)  # 256 MB
big += 1
del big
with_alloc = tracker.stop()
tracker.start()
torch.zeros(10).sum()
without = tracker.stop()
print(with_alloc - without)
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(float(done.stdout.split()[-1])) > 128 * 2**20


def test_the_grad_scaler_is_off_without_fp16_cuda_and_then_steps_like_the_plain_optimizer():
    from labkit.device import grad_scaler

    scaler = grad_scaler(resolve_amp(torch.device("cpu"), "bf16"))
    assert not scaler.is_enabled()
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    scaler.scale(model(torch.ones(1, 2)).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.allclose(model.weight, before - 0.1)  # d(sum)/dw = 1 for each weight


def test_stopwatch_times_a_block_on_the_device():
    from labkit.measure import Stopwatch

    with Stopwatch("cpu") as clock:
        torch.ones(100, 100).sum()
    assert clock.seconds > 0


def test_fit_calls_on_epoch_start_before_each_epoch_and_records_the_groups_it_adds():
    train, _ = loaders()
    model = tiny_net()
    first, *rest = list(model.parameters())
    for p in rest:
        p.requires_grad_(False)
    opt = torch.optim.SGD([first], lr=0.1)
    seen = []

    def thaw(epoch):
        seen.append(epoch)
        if epoch == 1:
            for p in rest:
                p.requires_grad_(True)
            opt.add_param_group({"params": rest, "lr": 0.01})

    history = fit(model, train, optimizer=opt, epochs=3, device="cpu", on_epoch_start=thaw, progress=False)
    assert seen == [0, 1, 2]
    assert [len(row["lrs"]) for row in history.epochs] == [1, 2, 2]


def test_fit_refuses_an_on_epoch_start_that_is_not_callable():
    train, _ = loaders()
    model = tiny_net()
    with pytest.raises(TypeError, match="on_epoch_start: expected a function of the epoch"):
        fit(model, train, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, device="cpu",
            on_epoch_start="thaw")
