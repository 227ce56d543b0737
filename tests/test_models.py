"""labkit.models: both backbones offline, torchvision's checkpoint cache, the sha256 check, the transfer gap."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import ResNet, ResNet18_Weights

from labkit.models import (
    BackboneUnavailableError,
    WeightsChecksumError,
    build_micro_resnet,
    cached_checkpoint_path,
    load_backbone,
    micro_weights,
    sha256_of,
)
from labkit.build.pretrain import measure_transfer_gap

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache, so nothing the machine has cached can leak into a test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


# ----------------------------------------------------------------------------- micro-backbone
def test_micro_backbone_loads_offline_with_resnet_module_names():
    bb = load_backbone("micro_resnet", verbose=False)
    m = bb.model
    assert isinstance(m, ResNet)
    assert tuple(m.conv1.weight.shape) == (64, 3, 7, 7)
    names = [n for n, _ in m.named_children()]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    assert m.fc.in_features == 512 and not m.training
    assert bb.meta["source"] == "labkit" and bb.meta["input_size"] == 64
    x = bb.eval_transform(torchvision.transforms.functional.to_pil_image(torch.rand(3, 90, 80)))
    assert m(x[None]).shape == (1, len(bb.meta["categories"]))


def test_micro_backbone_weights_are_the_committed_pretrained_ones():
    bb = load_backbone("micro_resnet", verbose=False)
    w = micro_weights()
    assert str(bb.weights) == "MicroResNet_Weights.CONTOURS_V7"
    sd = w.get_state_dict()
    assert torch.equal(bb.model.conv1.weight, sd["conv1.weight"])
    assert not torch.equal(bb.model.conv1.weight, build_micro_resnet().conv1.weight)


def test_micro_weights_file_is_small_and_matches_its_recorded_sha256():
    w = micro_weights()
    assert w.file.stat().st_size <= 12 * 1024 * 1024
    assert sha256_of(w.file) == w.meta["sha256"]
    for key in ("input_size", "resize_size", "mean", "std", "recipe", "metrics", "categories"):
        assert key in w.meta


def test_describe_names_backbone_and_weights(capsys):
    bb = load_backbone("micro_resnet")
    printed = capsys.readouterr().out.strip()
    assert printed == str(bb) == bb.describe()
    assert printed.startswith("backbone: micro_resnet, weights: MicroResNet_Weights.CONTOURS_V7")


def test_offline_flag_substitutes_the_micro_backbone_loudly():
    with pytest.warns(UserWarning, match="offline mode: using labkit's micro_resnet in place of resnet18"):
        bb = load_backbone("resnet18", offline=True, verbose=False)
    assert isinstance(bb.model, ResNet) and bb.meta["name"] == "micro_resnet"
    assert bb.meta["stand_in_for"] == "resnet18"
    assert "OFFLINE stand-in for resnet18" in bb.describe()


def test_labkit_offline_environment_variable_selects_the_micro_backbone(monkeypatch):
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    with pytest.warns(UserWarning, match="offline mode"):
        bb = load_backbone("resnet18", verbose=False)
    assert bb.meta["source"] == "labkit"


def test_random_init_is_stated_explicitly():
    bb = load_backbone("micro_resnet", pretrained=False, verbose=False)
    assert bb.weights is None
    assert "weights: none (random initialization)" in str(bb)
    assert bb.meta["input_size"] == 64  # preprocessing still comes from the weights' metadata


def test_build_micro_resnet_checks_num_classes():
    assert build_micro_resnet(5).fc.out_features == 5
    with pytest.raises(ValueError, match="positive int, got 0"):
        build_micro_resnet(0)


def test_unknown_backbone_name_is_a_clear_error():
    with pytest.raises(ValueError, match="torchvision classification model name.*got 'resnet7'"):
        load_backbone("resnet7", offline=False, verbose=False)


# ----------------------------------------------------------------------------- sha256 check
def test_corrupted_weights_file_fails_the_sha256_check(tmp_path):
    w = micro_weights()
    copy = tmp_path / "micro_resnet.pt"
    shutil.copy(w.file, copy)
    shutil.copy(w.file.with_suffix(".json"), copy.with_suffix(".json"))
    assert load_backbone("micro_resnet", weights_file=copy, verbose=False).weights.file == copy
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match="sha256 mismatch for .*micro_resnet.pt"):
        load_backbone("micro_resnet", weights_file=copy, verbose=False)


def test_weights_file_without_metadata_is_a_clear_error(tmp_path):
    shutil.copy(micro_weights().file, tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="metadata .*other.json is missing"):
        load_backbone("micro_resnet", weights_file=tmp_path / "other.pt", verbose=False)


# ----------------------------------------------------------------------------- torchvision path, offline
def test_torchvision_path_loads_a_checkpoint_from_the_torch_hub_cache(torch_home):
    weights = ResNet18_Weights.DEFAULT
    reference = torchvision.models.resnet18(weights=None)
    path = torch_home / "hub" / "checkpoints" / Path(weights.url).name
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    assert cached_checkpoint_path(weights) == path

    bb = load_backbone("resnet18", offline=False, verbose=False)
    assert bb.weights is weights and bb.meta["source"] == "torchvision"
    assert torch.equal(bb.model.conv1.weight, reference.conv1.weight)
    assert str(bb).startswith("backbone: resnet18, weights: ResNet18_Weights.IMAGENET1K_V1 (ImageNet-1K")
    assert bb.meta["input_size"] == 224 and bb.meta["mean"] == [0.485, 0.456, 0.406]
    img = torchvision.transforms.functional.to_pil_image(torch.rand(3, 300, 260))
    assert torch.allclose(bb.eval_transform(img), weights.transforms()(img))
    assert bb.train_transform(img).shape == (3, 224, 224)


def test_torchvision_path_without_network_or_cache_names_the_offline_choice(torch_home, monkeypatch):
    monkeypatch.setenv("LABKIT_OFFLINE", "0")  # insisting on torchvision's weights: no fallback

    def no_network(*args, **kwargs):  # the test must not depend on (or wait for) the network
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(BackboneUnavailableError, match="offline=True.*LABKIT_OFFLINE=1.*never switches to random"):
        load_backbone("resnet18", verbose=False, timeout=2)


def test_torchvision_random_init_needs_no_network(torch_home):
    bb = load_backbone("resnet18", pretrained=False, offline=False, verbose=False)
    assert bb.weights is None and "random initialization" in str(bb)
    assert bb.meta["input_size"] == 224
    assert not (torch_home / "hub").exists()


# ----------------------------------------------------------------------------- what pretraining bought
def test_pretrained_conv1_is_more_gabor_like_than_random():
    filters = pytest.importorskip("labkit.filters")
    pretrained = filters.gabor_likeness(load_backbone("micro_resnet", verbose=False).model.conv1.weight.detach())
    random = filters.gabor_likeness(build_micro_resnet().conv1.weight.detach())
    assert pretrained.mean() > random.mean() + 0.2


def test_frozen_pretrained_micro_backbone_beats_training_from_scratch():
    # measured when the weights were committed: frozen 0.66, scratch 0.28 (20 images per class, 6 epochs)
    result = measure_transfer_gap(dataset="objects", per_class=20, epochs=6)
    assert result["frozen"] > 0.5, result
    assert result["frozen"] - result["scratch"] >= 0.20, result


def test_recorded_figures_match_the_metadata():
    meta = json.loads((ROOT / "labkit" / "weights" / "micro_resnet.json").read_text())
    assert meta["transfer"]["frozen"] - meta["transfer"]["scratch"] >= 0.20
    assert meta["conv1_gabor_likeness"]["pretrained"] > meta["conv1_gabor_likeness"]["random"]
