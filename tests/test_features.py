"""labkit.features: extract_features once, fit_head on the cached tensors, the disk cache."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from labkit.features import Features, compute_outputs, extract_features, feature_cache_path, fit_head, split_model
from labkit.freeze import freeze, freeze_to
from labkit.heads import replace_head
from labkit.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(n, classes=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    x[torch.arange(n), y % 3] += 1.0
    return x, y


def resnet_backbone():
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()
    return model


class Plain(Dataset):
    """A custom dataset: labkit cannot read its contents without loading every item."""

    def __init__(self, x, y, transform=None):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i]
        return (self.transform(x) if self.transform else x), self.y[i]


def test_extract_features_equals_the_backbone_output_in_eval_mode():
    backbone = resnet_backbone()
    backbone.train()
    x, y = blobs(10, size=16)
    feats, labels = extract_features(backbone, DataLoader(TensorDataset(x, y), batch_size=4), device="cpu")

    assert backbone.training  # mode restored
    backbone.eval()
    with torch.no_grad():
        expected = backbone(x)
    assert feats.shape == (10, 512) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(labels, y)
    # ordinary tensors, not inference tensors: a head can train on them
    nn.Linear(512, 3)(feats).sum().backward()


def test_extract_features_flattens_spatial_outputs():
    backbone = nn.Conv2d(3, 4, 3, stride=8)
    x, y = blobs(6, size=16)
    feats, _ = extract_features(backbone, DataLoader(TensorDataset(x, y), batch_size=4), device="cpu")
    assert feats.shape == (6, 4 * 2 * 2)


def test_fit_head_on_cached_features_matches_the_uncached_frozen_loop():
    # Same model, same head initialisation, same batches in the same order, same optimizer:
    # training the head on cached features must give the frozen loop's head and accuracy.
    model = replace_head(freeze(torchvision.models.resnet18(weights=None)), 3)
    twin = copy.deepcopy(model)
    x, y = blobs(36, size=16)
    train = DataLoader(TensorDataset(x, y), batch_size=12, shuffle=False)

    frozen = fit(model, train, train, optimizer=torch.optim.SGD(model.fc.parameters(), lr=0.05, momentum=0.9),
                 epochs=3, device="cpu")

    head = twin.fc
    twin.fc = nn.Identity()
    cached = extract_features(twin, train, device="cpu")
    head, history = fit_head(cached, cached, head=head, epochs=3, batch_size=12, shuffle=False, device="cpu",
                             optimizer=torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9))

    assert frozen["val_acc"][-1] > 0.6  # it learned something
    assert history["val_acc"] == frozen["val_acc"]
    assert history["train_acc"] == frozen["train_acc"]
    torch.testing.assert_close(head.weight, model.fc.weight, rtol=1e-4, atol=1e-5)


def test_fit_head_reaches_the_frozen_loops_accuracy_with_shuffling():
    backbone = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = freeze(nn.Sequential(backbone, nn.Linear(16, 3)))
    model[1].requires_grad_(True)
    x, y = blobs(90, size=8)
    train = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True)
    evaluation = DataLoader(TensorDataset(x, y), batch_size=90)
    frozen = fit(model, train, evaluation, optimizer=torch.optim.Adam(model[1].parameters(), lr=3e-2),
                 epochs=8, device="cpu")
    feats = extract_features(backbone, evaluation, device="cpu")
    _, history = fit_head(feats, feats, epochs=8, lr=3e-2, batch_size=10, seed=0, device="cpu")
    assert frozen["val_acc"][-1] > 0.6
    assert abs(history["val_acc"][-1] - frozen["val_acc"][-1]) <= 0.1


def test_fit_head_builds_a_linear_or_mlp_head():
    feats = Features(torch.randn(40, 6), torch.arange(40) % 4)
    head, history = fit_head(feats, epochs=2, device="cpu")
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (6, 4)
    assert len(history) == 2 and history.meta["cached_features"] is True
    mlp, _ = fit_head(feats, epochs=1, hidden=16, num_classes=5, device="cpu")
    assert [type(m) for m in mlp] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert mlp[-1].out_features == 5


def test_fit_head_rejects_bad_inputs():
    feats = Features(torch.randn(10, 6), torch.arange(10) % 2)
    with pytest.raises(ValueError, match="10 feature rows but 9 labels"):
        fit_head((feats.features, feats.labels[:9]), epochs=1, device="cpu")
    with pytest.raises(ValueError, match=r"expected shape \(N, D\)"):
        fit_head((torch.randn(10, 2, 3), feats.labels), epochs=1, device="cpu")
    with pytest.raises(ValueError, match="either head=... or hidden=..."):
        fit_head(feats, head=nn.Linear(6, 2), hidden=4, epochs=1, device="cpu")
    with pytest.raises(ValueError, match="epochs"):
        fit_head(feats, epochs=0, device="cpu")
    with pytest.raises(ValueError, match=r"head has 3 outputs but the data has 2 classes"):
        fit_head(feats, head=nn.Linear(6, 3), epochs=1, device="cpu")
    with pytest.raises(ValueError, match="labels out of range"):
        fit_head(feats, Features(torch.randn(4, 6), torch.tensor([0, 1, 2, 1])), epochs=1, device="cpu")


def test_extract_features_rejects_an_empty_loader():
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=2)
    with pytest.raises(ValueError, match="empty"):
        extract_features(nn.Flatten(), empty, device="cpu")


def test_extract_features_cache_hits_only_for_the_same_backbone_and_data(tmp_path):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(48, 5))
    calls = []
    backbone.register_forward_hook(lambda *a: calls.append(1))
    x, y = blobs(10, size=4)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)

    first = extract_features(backbone, loader, device="cpu", cache=tmp_path)
    n_calls = len(calls)
    again = extract_features(backbone, loader, device="cpu", cache=tmp_path)
    assert len(calls) == n_calls  # served from disk, no forward pass
    assert torch.equal(first.features, again.features) and torch.equal(first.labels, again.labels)
    assert len(list(tmp_path.glob("*.pt"))) == 1

    with torch.no_grad():
        backbone[1].weight[0, 0] += 1.0  # new weights: a new key
    changed = extract_features(backbone, loader, device="cpu", cache=tmp_path)
    assert len(calls) > n_calls and not torch.equal(changed.features, first.features)

    other = DataLoader(TensorDataset(x + 1, y), batch_size=4)  # new data: a new key
    assert feature_cache_path(backbone, other, tmp_path) != feature_cache_path(backbone, loader, tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_extract_features_cache_asks_for_a_key_when_the_data_is_opaque(tmp_path):
    x, y = blobs(6, size=4)
    loader = DataLoader(Plain(x, y), batch_size=3)
    with pytest.raises(ValueError, match="pass key="):
        extract_features(nn.Flatten(), loader, device="cpu", cache=tmp_path)
    feats = extract_features(nn.Flatten(), loader, device="cpu", cache=tmp_path, key="blobs-v1")
    assert feats.features.shape == (6, 48)


def test_extract_features_warns_that_random_augmentation_is_frozen():
    x, y = blobs(4, size=8)
    loader = DataLoader(Plain(x, y, transform=torchvision.transforms.RandomHorizontalFlip()), batch_size=2)
    with pytest.warns(UserWarning, match=r"random augmentation \(RandomHorizontalFlip\)"):
        extract_features(nn.Flatten(), loader, device="cpu")


# --------------------------------------------------------------------------- cutting a model at a stage
def _lite0():
    from labkit.models import build_efficientnet_lite0

    torch.manual_seed(0)
    return build_efficientnet_lite0(4).eval()


@pytest.mark.parametrize("builder", [
    lambda: torchvision.models.resnet18(weights=None),
    lambda: __import__("timm").create_model("efficientnet_b0", pretrained=False),
], ids=["torchvision_resnet18", "timm_efficientnet_b0"])
def test_top_of_bottom_is_the_model_at_every_stage(builder):
    from labkit.heads import stages

    torch.manual_seed(0)
    model = builder().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = model(x)
        for at in list(stages(model))[1:]:
            bottom, top = split_model(model, at=at)
            torch.testing.assert_close(top(bottom(x)), whole, rtol=1e-4, atol=1e-4)
    _, top = split_model(model, at=-2)
    assert all(any(m is layer for layer in model.modules()) for m in top.children() if list(m.parameters()))


@pytest.mark.parametrize("builder,at", [
    (lambda: torchvision.models.resnet18(weights=None, num_classes=3), "layer3"),
    (lambda: torchvision.models.resnet18(weights=None, num_classes=3), "fc"),
    (lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=3), -3),
    (_lite0, "blocks.6"),
    (_lite0, "conv_head"),
    (_lite0, "stem"),
])
def test_split_model_halves_compute_the_model_on_resnet_mobilenet_and_efficientnet(builder, at):
    torch.manual_seed(0)
    model = builder().eval()
    x = torch.randn(2, 3, 48, 48)
    bottom, top = split_model(model, at=at)
    torch.testing.assert_close(top(bottom(x)), model(x), rtol=1e-4, atol=1e-4)


def test_split_model_top_shares_the_models_layers_so_training_it_trains_the_model():
    model = _lite0()
    freeze_to(model, "blocks.6")
    bottom, top = split_model(model, at="blocks.6")
    assert top[0] is model.blocks[6] and top[-1] is model.classifier
    assert not any(p.requires_grad for p in bottom.parameters())
    before = model.blocks[6][0].conv_pw.weight.clone()
    opt = torch.optim.SGD([p for p in top.parameters() if p.requires_grad], lr=0.1)
    feats = compute_outputs(bottom, torch.randn(4, 3, 48, 48))
    torch.nn.functional.cross_entropy(top.train()(feats), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    assert not torch.equal(model.blocks[6][0].conv_pw.weight, before)


def test_split_model_refuses_models_whose_forward_is_not_a_sequence():
    with pytest.raises(TypeError, match="bare parameter"):
        split_model(torchvision.models.vit_b_16(weights=None), at=-2)
    with pytest.raises(TypeError, match="does not compute its forward"):
        split_model(torchvision.models.densenet121(weights=None), at=-2)


@pytest.mark.parametrize("at,err,match", [
    ("conv1", ValueError, "at must be one of the stages"),
    (9, ValueError, "out of range"),
    (1.5, TypeError, "stage name or index"),
])
def test_split_model_rejects_a_stage_it_does_not_have(at, err, match):
    with pytest.raises(err, match=match):
        split_model(torchvision.models.resnet18(weights=None), at=at)


def test_compute_outputs_runs_in_eval_and_restores_modes():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.9)).train()
    x = torch.randn(5, 3)
    torch.testing.assert_close(compute_outputs(net, x, batch_size=2), net[0](x).detach())
    assert net.training
    with pytest.raises(ValueError, match="positive int batch_size"):
        compute_outputs(net, x, batch_size=0)
    with pytest.raises(TypeError, match=r"expected an image tensor or a loader of \(images, labels\), got int"):
        compute_outputs(net, 3)


def test_compute_outputs_over_a_loader_keeps_the_shape_and_the_labels():
    torch.manual_seed(0)
    bottom, _ = split_model(torchvision.models.resnet18(weights=None, num_classes=3), at="layer4")
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    outputs, labels = compute_outputs(bottom, DataLoader(TensorDataset(x, y), batch_size=4))
    assert outputs.shape == (6, 256, 2, 2) and torch.equal(labels, y)
    torch.testing.assert_close(outputs, compute_outputs(bottom, x))




def test_split_model_halves_compose_to_the_model_and_share_its_layers():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    for at in ("layer2", "layer4", "fc"):
        bottom, top = split_model(model, at=at)
        torch.testing.assert_close(top(bottom(x)), model(x))
    _, top = split_model(model, at="layer4")
    assert top[0] is model.layer4 and top[-1] is model.fc
    with pytest.raises(ValueError, match="at must be one of the stages"):
        split_model(model, at="conv1")
    with pytest.raises(ValueError, match="stages"):
        split_model(torch.nn.Linear(2, 2), at="fc")
