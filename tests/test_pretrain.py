"""labkit.build.pretrain: the projector recipe, progressive resizing and channels-last, on tiny runs."""
from __future__ import annotations

import json

import torch

from labkit.build.pretrain import pretrain, save_weights
from labkit.models import MicroResNet, load_backbone

TINY = {"data": "contours", "train_scenes": 96, "val_scenes": 32, "contour_images": 96, "contour_classes": 4,
        "epochs": 2, "batch_size": 32, "threads": 1, "head_refit_epochs": 2}


def test_projector_is_dropped_and_a_plain_linear_fc_saved_that_loads_into_micro_resnet(tmp_path):
    model, meta = pretrain(dict(TINY, projector_dim=32), log=lambda *a: None)
    assert isinstance(model.fc, torch.nn.Linear) and model.fc.in_features == 512 and model.fc.out_features == 4
    assert meta["history"][-1]["epoch"] == "linear head"
    assert meta["metrics"]["final_train_loss"] == meta["history"][1]["train_loss"]
    path = save_weights(model, meta, tmp_path)
    bb = load_backbone("micro_resnet", weights_file=path, verbose=False)
    assert isinstance(bb.model, MicroResNet) and len(json.loads(path.with_suffix(".json").read_text())["categories"]) == 4
    assert torch.allclose(bb.model.fc.weight, model.fc.weight.half().float())


def test_projector_progressive_resizing_and_channels_last_stay_deterministic():
    recipe = dict(TINY, projector_dim=16, low_res_size=40, low_res_epochs=1, channels_last=1)
    m1, _ = pretrain(recipe, log=lambda *a: None)
    m2, _ = pretrain(recipe, log=lambda *a: None)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k


def test_low_resolution_epochs_change_what_is_learned():
    plain, _ = pretrain(TINY, log=lambda *a: None)
    low, _ = pretrain(dict(TINY, low_res_size=40, low_res_epochs=1), log=lambda *a: None)
    assert not torch.equal(plain.conv1.weight, low.conv1.weight)


def test_saved_weights_are_contiguous_after_channels_last_training(tmp_path):
    model, meta = pretrain(dict(TINY, epochs=1, channels_last=1), log=lambda *a: None)
    path = save_weights(model, meta, tmp_path)
    state = torch.load(path)
    assert all(v.is_contiguous() for v in state.values())
