"""labkit.build.pretrain: the projector recipe, progressive resizing and channels-last, on tiny runs."""
from __future__ import annotations

import json

import torch

from labkit.build.pretrain import pretrain, save_weights
from labkit.models import MicroResNet, load_backbone

TINY = {"data": "contours", "train_scenes": 96, "val_scenes": 32, "contour_images": 96, "contour_classes": 4,
        "epochs": 2, "batch_size": 32, "threads": 1, "head_refit_epochs": 2, "stem_epochs": 0,
        "ica_patches": 2000}  # the default recipe starts conv1 from ICA; a small sample keeps tiny runs fast


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


def _snapshot_run(monkeypatch, recipe: dict, *, when, what: str):
    """A tiny run; returns the model and (conv1, layer1 conv) as they were when a log line matched ``when``."""
    import labkit.build.pretrain as pt

    built, snapshots = [], []

    class Recording(MicroResNet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    def log(line):
        if when(line):
            snapshots.append((built[0].conv1.weight.detach().clone(), built[0].layer1[0].conv1.weight.detach().clone()))

    monkeypatch.setattr(pt, "MicroResNet", Recording)
    model, _ = pretrain(recipe, log=log)
    assert len(snapshots) == 1, f"{what} should happen (and say so) exactly once"
    return model, snapshots[0]


def _stem_run(monkeypatch, **recipe):
    """A tiny stem-phase run; returns the model and (conv1, layer1 conv) as they were when the stem phase ended."""
    return _snapshot_run(monkeypatch, dict(TINY, data="scenes+contours", stem_epochs=1, epochs=3, **recipe),
                         when=lambda line: line.startswith("conv1") and "after 1 epochs on the contour images" in line,
                         what="the end of the stem phase")


def test_stem_phase_trains_conv1_on_contours_then_freezes_it(monkeypatch):
    model, (conv1, layer1) = _stem_run(monkeypatch, stem_lr_scale=0.0)
    assert torch.equal(model.conv1.weight, conv1), "conv1 changed after the stem phase"
    assert not torch.equal(model.layer1[0].conv1.weight, layer1), "the rest of the network should keep training"
    assert model.conv1.weight.requires_grad, "the returned model should be trainable again"


def test_stem_lr_scale_lets_the_stem_layers_keep_learning_after_the_stem_phase(monkeypatch):
    model, (conv1, _) = _stem_run(monkeypatch, stem_lr_scale=0.5)
    assert not torch.equal(model.conv1.weight, conv1)


def test_stem_layers_can_freeze_more_than_conv1(monkeypatch):
    model, (conv1, layer1) = _stem_run(monkeypatch, stem_layers="conv1,layer1", stem_lr_scale=0.0)
    assert torch.equal(model.conv1.weight, conv1) and torch.equal(model.layer1[0].conv1.weight, layer1)
    assert all(p.requires_grad for p in model.parameters())


def test_stem_layers_must_name_modules_of_the_model():
    import pytest

    with pytest.raises(ValueError, match="stem_layers must name top-level modules .* got 'conv1,layer9'"):
        pretrain(dict(TINY, stem_epochs=1, stem_layers="conv1,layer9"), log=lambda *a: None)


def test_stem_epochs_without_contour_images_is_refused():
    import pytest

    with pytest.raises(ValueError, match="stem_epochs=1 .* has none; add 'contours'"):
        pretrain(dict(TINY, data="scenes", stem_epochs=1), log=lambda *a: None)


def test_scale_augmentation_zooms_in_and_plain_crops_do_not():
    from labkit.build.pretrain import _augment

    ramp = torch.arange(72, dtype=torch.uint8).expand(8, 3, 72, 72).contiguous()  # value = column index
    y = {"contour": torch.zeros(8, dtype=torch.long)}
    plain, _ = _augment(ramp, y, 64, torch.Generator().manual_seed(0))
    zoomed, _ = _augment(ramp, y, 64, torch.Generator().manual_seed(0), min_scale=0.25)
    spread = lambda x: (x.amax((1, 2, 3)).float() - x.amin((1, 2, 3)).float())
    assert torch.all(spread(plain) == 63), "a plain crop keeps 64 consecutive columns"
    assert zoomed.shape == plain.shape and zoomed.dtype == torch.uint8
    assert torch.all(spread(zoomed) <= 71) and (spread(zoomed) < 60).any(), "some crops should cover fewer columns"
    again, _ = _augment(ramp, y, 64, torch.Generator().manual_seed(0), min_scale=0.25)
    assert torch.equal(zoomed, again)


def _ica_run(monkeypatch, **recipe):
    """A tiny run whose conv1 starts from ICA filters; returns the model and (conv1, layer1 conv) before training."""
    return _snapshot_run(monkeypatch, dict(TINY, conv1_init="ica", ica_patches=3000, **recipe),
                         when=lambda line: line.startswith("conv1: 64 filters by ICA"), what="the ICA step")


def test_ica_conv1_with_zero_rate_stays_exactly_as_ica_learned_it_while_the_rest_trains(monkeypatch):
    from labkit.build.probe import measure_filter_controls

    model, (ica, layer1) = _ica_run(monkeypatch, conv1_lr_scale=0.0, ica_norm=0.0)
    assert torch.equal(model.conv1.weight, ica), "conv1 changed although conv1_lr_scale=0"
    assert model.conv1.weight.requires_grad, "the returned model should be trainable again"
    kaiming = MicroResNet(num_classes=4).conv1.weight.detach() * 0.1
    assert torch.allclose(ica.flatten(1).norm(dim=1).mean(), kaiming.flatten(1).norm(dim=1).mean(), rtol=0.1), \
        "with ica_norm=0 the ICA filters should take the norms of the initial filters they replace"
    assert measure_filter_controls(ica, seeds=[0])["gap"] > measure_filter_controls(kaiming, seeds=[0])["gap"] + 0.1
    assert not torch.equal(model.layer1[0].conv1.weight, layer1), "the rest of the network should train"


def test_ica_conv1_starts_at_the_norm_asked_for_and_keeps_learning_at_a_nonzero_rate(monkeypatch):
    model, (ica, _) = _ica_run(monkeypatch, conv1_lr_scale=0.5, ica_norm=1.0)
    assert torch.allclose(ica.flatten(1).norm(dim=1), torch.ones(64), atol=1e-5)
    assert not torch.equal(model.conv1.weight, ica)


def test_conv1_init_and_conv1_lr_scale_are_checked():
    import pytest

    with pytest.raises(ValueError, match="conv1_init must be 'kaiming' or 'ica', got 'gabor'"):
        pretrain(dict(TINY, conv1_init="gabor"), log=lambda *a: None)
    with pytest.raises(ValueError, match=r"conv1_lr_scale must be >= 0 \(0 freezes conv1\), got -1.0"):
        pretrain(dict(TINY, conv1_lr_scale=-1), log=lambda *a: None)


def test_fresh_images_gives_new_images_of_the_same_classes_and_epoch_zero_is_the_fixed_set():
    from labkit.build.pretrain import RECIPE, render_training_images

    r = dict(RECIPE, **TINY)
    x0, y0 = render_training_images(r)
    again, _ = render_training_images(r, epoch=0)
    x1, y1 = render_training_images(r, epoch=1)
    assert torch.equal(x0, again)  # recipes without fresh_images see exactly the images they always saw
    assert x1.shape == x0.shape and set(y1["contour"].tolist()) <= set(range(4))
    flat0, flat1 = x0.flatten(1), x1.flatten(1)
    assert not any(torch.equal(a, b) for a in flat1 for b in flat0)  # no image comes back


def test_fresh_images_run_is_deterministic_and_learns_something_else_than_fixed_images():
    fresh = dict(TINY, fresh_images=1)
    m1, meta = pretrain(fresh, log=lambda *a: None)
    m2, _ = pretrain(fresh, log=lambda *a: None)
    fixed, _ = pretrain(TINY, log=lambda *a: None)
    assert torch.equal(m1.layer1[0].conv1.weight, m2.layer1[0].conv1.weight)
    assert not torch.equal(m1.layer1[0].conv1.weight, fixed.layer1[0].conv1.weight)
    assert meta["recipe"]["fresh_images"] == 1


def test_weight_average_replaces_the_weights_by_their_moving_average():
    plain, _ = pretrain(TINY, log=lambda *a: None)
    near_zero, meta = pretrain(dict(TINY, ema_decay=1e-9), log=lambda *a: None)  # the average is the last step
    slow, _ = pretrain(dict(TINY, ema_decay=0.9), log=lambda *a: None)
    for name in ("conv1.weight", "layer2.0.conv1.weight", "layer4.0.bn1.running_var"):
        a, b, c = (dict(m.state_dict())[name] for m in (plain, near_zero, slow))
        assert torch.allclose(a, b, atol=1e-6), name
        assert not torch.allclose(a, c, atol=1e-4), name
    assert "weight average" in [h["epoch"] for h in meta["history"]]


def test_ema_decay_must_be_below_one():
    import pytest

    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        pretrain(dict(TINY, ema_decay=1.0), log=lambda *a: None)


def test_multi_instance_contours_train_on_both_labels_and_score_a_hit_on_either():
    import torch.nn.functional as F

    from labkit.build.pretrain import _loss, evaluate_tasks

    model, meta = pretrain(dict(TINY, contour_instances=2), log=lambda *a: None)
    assert model.fc.out_features == 4 and meta["recipe"]["contour_instances"] == 2
    logits = torch.randn(5, 4)
    y = {"contour": torch.tensor([[0, 1], [2, 3], [1, 0], [3, 2], [0, 2]])}
    both = _loss(logits, y, 0.0, [1.0], {"contour": list("abcd")})
    expected = (F.cross_entropy(logits, y["contour"][:, 0]) + F.cross_entropy(logits, y["contour"][:, 1])) / 2
    assert torch.allclose(both, expected)

    class Fixed(torch.nn.Module):  # always answers class 1
        def forward(self, x):
            return torch.tensor([[0.0, 1.0, 0.0, 0.0]]).expand(len(x), -1)

    acc = evaluate_tasks(Fixed(), torch.zeros(5, 3, 64, 64, dtype=torch.uint8), y, mean=torch.zeros(3),
                         std=torch.ones(3), tasks={"contour": list("abcd")})
    assert acc == {"contour": 0.4}  # rows 0 and 2 hold class 1


def test_flip_prob_zero_never_mirrors_and_keeps_the_crops_of_the_default():
    from labkit.build.pretrain import _augment

    x = torch.arange(8 * 3 * 72 * 72, dtype=torch.float32).reshape(8, 3, 72, 72).remainder(251).to(torch.uint8)
    y = {"orientation": torch.zeros(8, dtype=torch.long)}
    never, y_never = _augment(x, y, 64, torch.Generator().manual_seed(3), flip_prob=0.0)
    always, _ = _augment(x, y, 64, torch.Generator().manual_seed(3), flip_prob=1.0)
    assert torch.equal(always, never.flip(-1))  # the same crops, only mirrored
    assert torch.equal(y_never["orientation"], y["orientation"])
    default, _ = _augment(x, y, 64, torch.Generator().manual_seed(3))
    same = [torch.equal(d, n) for d, n in zip(default, never)]
    assert all(s or torch.equal(d, a) for s, d, a in zip(same, default, always)) and 0 < sum(same) < 8
