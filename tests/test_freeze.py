import copy
import io

import pytest
import torch
from helpers import build
from torch import nn

from labkit import freeze, freeze_to, replace_head, trainable_report, unfreeze
from labkit.freeze import frozen_guard, snapshot_frozen, verify_frozen


def _train_steps(model, steps=3, lr=0.1):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9) if params else None
    for _ in range(steps):
        x, y = torch.randn(4, 3, 32, 32) * 3 + 1, torch.randint(0, 5, (4,))
        out = model(x)
        if opt:
            opt.zero_grad()
            nn.functional.cross_entropy(out, y).backward()
            opt.step()


def test_freeze_works_in_place_and_stops_every_gradient():
    model = build("resnet18")
    assert freeze(model) is model
    assert not any(p.requires_grad for p in model.parameters())


def test_frozen_batchnorm_keeps_running_stats_after_train_and_optimizer_steps():
    model = replace_head(freeze(build("resnet18")), 5)
    stats = {n: b.clone() for n, b in model.named_buffers()}
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("fc.")}
    model.train()  # the call that silently re-enables BN updates in plain PyTorch
    _train_steps(model)
    for name, before in stats.items():
        assert torch.equal(before, dict(model.named_buffers())[name]), name
    for name, before in weights.items():
        assert torch.equal(before, dict(model.named_parameters())[name]), name
    assert model.training  # the model itself still reports training mode


def test_requires_grad_alone_does_not_protect_batchnorm_statistics():
    """The pitfall freeze() exists for: plain requires_grad=False leaves BN stats moving."""
    model = build("resnet18")
    for p in model.parameters():
        p.requires_grad = False
    model.fc = nn.Linear(512, 5)
    before = model.bn1.running_mean.clone()
    _train_steps(model, steps=1)
    assert not torch.equal(before, model.bn1.running_mean)


def test_frozen_batchnorm_output_does_not_depend_on_the_batch():
    model = freeze(build("resnet18")).train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        together = model(x)
        alone = model(x[:1])
    torch.testing.assert_close(together[:1], alone, rtol=1e-4, atol=1e-5)


def test_train_bn_keeps_batchnorm_trainable_and_updating():
    model = replace_head(freeze(build("resnet18"), train_bn=True), 5)
    assert model.bn1.weight.requires_grad and not model.conv1.weight.requires_grad
    before = model.bn1.running_mean.clone()
    _train_steps(model, steps=1)
    assert not torch.equal(before, model.bn1.running_mean)


def test_unfreeze_makes_everything_train_again_including_bn_statistics():
    model = unfreeze(freeze(build("resnet18")))
    assert all(p.requires_grad for p in model.parameters())
    before = model.bn1.running_mean.clone()
    _train_steps(model, steps=1)
    assert not torch.equal(before, model.bn1.running_mean)


def test_frozen_model_survives_deepcopy_and_torch_save():
    model = freeze(build("resnet18"))
    twin = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for m in (twin, loaded):
        before = m.bn1.running_mean.clone()
        _train_steps(m, steps=1)
        assert torch.equal(before, m.bn1.running_mean)


def test_freeze_to_freezes_stages_before_the_named_one():
    model = freeze_to(build("resnet18"), "layer3")
    assert not model.conv1.weight.requires_grad and not model.layer2[0].conv1.weight.requires_grad
    assert model.layer3[0].conv1.weight.requires_grad and model.fc.weight.requires_grad


def test_freeze_to_accepts_an_index_and_can_thaw_again():
    model = freeze_to(build("resnet18"), -1)  # only the head trains
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    freeze_to(model, 0)
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_to_unknown_stage_lists_the_valid_ones():
    with pytest.raises(KeyError, match=r"unknown stage 'layer9'.*'stem', 'layer1'"):
        freeze_to(build("resnet18"), "layer9")
    with pytest.raises(IndexError, match="out of range for 6 stages"):
        freeze_to(build("resnet18"), 6)


@pytest.mark.parametrize("verb", [freeze, unfreeze])
def test_freezing_something_that_is_not_a_module_is_refused(verb):
    model = build("resnet18")
    with pytest.raises(TypeError, match=r"expects an nn.Module, got generator"):
        verb(model.parameters())


def test_trainable_report_matches_the_reference_resnet50_figures():
    report = trainable_report(replace_head(freeze(build("resnet50")), 37))
    assert (report.trainable, report.total) == (75_813, 23_583_845)
    assert "trainable 75,813 of 23,583,845" in str(report)
    assert [r[0] for r in report.rows] == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert report.rows[-1] == ("fc", 75_813, 75_813)
    assert report.fraction == pytest.approx(75_813 / 23_583_845)


def test_frozen_guard_passes_when_only_the_head_trains():
    model = replace_head(freeze(build("resnet18")), 5)
    with frozen_guard(model) as snapshot:
        _train_steps(model)
    assert "bn1.running_mean" in snapshot and "conv1.weight" in snapshot and "fc.weight" not in snapshot


def test_frozen_guard_names_what_changed():
    model = replace_head(freeze(build("resnet18")), 5)
    with pytest.raises(AssertionError, match=r"1 frozen tensor\(s\) changed: layer2.0.conv1.weight \(max \|change\| 1"):
        with frozen_guard(model):
            with torch.no_grad():
                model.layer2[0].conv1.weight[0, 0, 0, 0] += 1.0


def test_verify_frozen_catches_batchnorm_statistics_that_moved():
    model = freeze(build("resnet18"))
    snapshot = snapshot_frozen(model)
    unfreeze(model.bn1)
    _train_steps(model, steps=1)
    freeze(model.bn1)
    with pytest.raises(AssertionError, match="bn1.running_mean"):
        verify_frozen(model, snapshot)
