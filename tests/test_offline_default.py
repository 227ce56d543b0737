"""The offline default: no network and no insisting -> EfficientNet-Lite0 (ImageNet weights) with a banner.

Insisting on a torchvision download offline fails loudly.
"""
from __future__ import annotations

import pytest
import torch

import labkit.models as models
from labkit.models import BackboneUnavailableError, load_backbone
from tools.rehearse import write_stand_in_checkpoint


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """An empty torch hub cache and every download refused at once (a closed loopback proxy)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(models, "_FETCH_FAILURES", {})
    return tmp_path / "torch"


def test_without_network_lessons_carry_on_with_lite0_and_say_so(no_network, monkeypatch, capsys):
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    bb = load_backbone("resnet18", verbose=False, timeout=5)
    assert bb.meta["name"] == "efficientnet_lite0" and bb.meta["stand_in_for"] == "resnet18"
    assert "OFFLINE stand-in for resnet18" in str(bb)
    out = capsys.readouterr().out
    assert "could not fetch ResNet18_Weights.IMAGENET1K_V1" in out
    assert "LABKIT_OFFLINE=0" in out and "LABKIT_OFFLINE=1" in out
    assert bb.meta["fallback_reason"]


def test_the_banner_is_shown_once_and_the_failed_fetch_is_not_retried(no_network, monkeypatch, capsys):
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    load_backbone("resnet18", verbose=False, timeout=5)
    capsys.readouterr()
    write_stand_in_checkpoint(no_network)  # even with a checkpoint now, the session stays on the fallback
    again = load_backbone("resnet18", verbose=False, timeout=5)
    assert again.meta["name"] == "efficientnet_lite0"
    assert "could not fetch" not in capsys.readouterr().out


def test_insisting_with_labkit_offline_0_fails_loudly(no_network, monkeypatch):
    monkeypatch.setenv("LABKIT_OFFLINE", "0")
    with pytest.raises(BackboneUnavailableError, match="could not load the pretrained weights"):
        load_backbone("resnet18", verbose=False, timeout=5)


def test_insisting_with_offline_false_fails_loudly(no_network, monkeypatch):
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    with pytest.raises(BackboneUnavailableError, match="offline=True.*falls back to it with a banner"):
        load_backbone("resnet18", offline=False, verbose=False, timeout=5)


def test_insisting_retries_after_an_earlier_fallback(no_network, monkeypatch):
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    load_backbone("resnet18", verbose=False, timeout=5)
    write_stand_in_checkpoint(no_network)
    monkeypatch.setenv("LABKIT_OFFLINE", "0")
    bb = load_backbone("resnet18", verbose=False, timeout=5)
    assert bb.meta["source"] == "torchvision" and bb.meta["input_size"] == 224


def test_a_cached_checkpoint_is_used_without_any_fallback(no_network, monkeypatch, capsys):
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    write_stand_in_checkpoint(no_network)
    bb = load_backbone("resnet18", verbose=False, timeout=5)
    assert bb.meta["source"] == "torchvision"
    assert "could not fetch" not in capsys.readouterr().out


def test_random_initialisation_is_never_a_fallback(no_network, monkeypatch):
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    bb = load_backbone("resnet18", pretrained=False, verbose=False)
    assert bb.meta["name"] == "resnet18" and bb.weights is None
    assert torch.is_tensor(bb.model.conv1.weight)
