import pytest
import torch
from helpers import build
from torch import nn

from labkit import check_optimizer, freeze, gradual_unfreeze, param_groups, replace_head, unfreeze


def test_resnet50_gets_the_six_reference_learning_rates():
    groups = param_groups(build("resnet50"), base_lr=1e-3, decay=0.3)
    assert [f"{g['lr']:.2e}" for g in groups] == [
        "2.43e-06", "8.10e-06", "2.70e-05", "9.00e-05", "3.00e-04", "1.00e-03"]
    assert [g["name"] for g in groups] == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]


def test_param_groups_hold_every_trainable_parameter_once():
    model = build("resnet18")
    groups = param_groups(model, base_lr=1e-3, decay=0.5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(ids) == len(set(ids))


def test_param_groups_skip_frozen_stages_without_moving_the_other_rates():
    model = replace_head(freeze(build("resnet18")), 5)
    unfreeze(model.layer4)
    groups = param_groups(model, base_lr=1e-3, decay=0.1)
    assert [(g["name"], round(g["lr"], 12)) for g in groups] == [("layer4", 1e-4), ("fc", 1e-3)]
    assert all(p.requires_grad for g in groups for p in g["params"])


def test_weight_decay_skips_biases_and_normalization_weights():
    groups = param_groups(build("resnet18"), base_lr=1e-2, decay=0.5, weight_decay=0.05)
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    plain = [p for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    assert decayed and plain
    assert all(p.ndim > 1 for p in decayed) and all(p.ndim == 1 for p in plain)
    names = [g["name"] for g in groups]
    assert names[:2] == ["stem", "stem (no decay)"]
    assert [g["stage"] for g in groups[:2]] == ["stem", "stem"]  # structured: no parsing of names


@pytest.mark.parametrize("make", [
    lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9),
    lambda g: torch.optim.Adam(g),
    lambda g: torch.optim.AdamW(g, weight_decay=0.01),
])
def test_any_torch_optimizer_accepts_the_groups_and_trains(make):
    model = replace_head(build("resnet18"), 3)
    opt = make(param_groups(model, base_lr=1e-2, decay=0.3, weight_decay=1e-4))
    assert opt.param_groups[-1]["lr"] == pytest.approx(1e-2)
    before = model.conv1.weight.detach().clone()
    out = model(torch.randn(2, 3, 32, 32))
    nn.functional.cross_entropy(out, torch.tensor([0, 2])).backward()
    opt.step()
    assert not torch.equal(before, model.conv1.weight)


def test_verbose_param_groups_print_a_line_per_group(capsys):
    param_groups(build("resnet18"), base_lr=1e-3, decay=0.3, verbose=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:2] == ["group", "lr"] and len(lines) == 7
    assert lines[-1].split()[:2] == ["fc", "1.00e-03"]


@pytest.mark.parametrize("decay", [0, -0.5, 1.5])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\]"):
        param_groups(build("resnet18"), base_lr=1e-3, decay=decay)


def test_a_negative_learning_rate_is_refused():
    with pytest.raises(ValueError, match="base_lr must be a positive learning rate, got -0.001"):
        param_groups(build("resnet18"), base_lr=-1e-3, decay=0.3)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_nan_or_infinite_base_lr_is_refused_before_any_group_is_built(value):
    with pytest.raises(ValueError, match=r"base_lr must be a finite number, got -?(nan|inf).*Fix: .*base_lr=1e-3"):
        param_groups(build("resnet18"), base_lr=value, decay=0.3)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_nan_or_infinite_decay_is_refused(value):
    with pytest.raises(ValueError, match=r"decay must be a finite number, got (nan|inf).*Fix: .*decay=0.3"):
        param_groups(build("resnet18"), base_lr=1e-3, decay=value)


def test_a_nan_weight_decay_is_refused():
    with pytest.raises(ValueError, match=r"weight_decay must be a finite number, got nan"):
        param_groups(build("resnet18"), base_lr=1e-3, decay=0.3, weight_decay=float("nan"))


def test_gradual_unfreeze_refuses_a_nan_rate_too():
    model = replace_head(freeze(build("resnet18")), 3)
    opt = torch.optim.SGD(param_groups(model, base_lr=1e-3, decay=0.3), lr=1e-3)
    with pytest.raises(ValueError, match="base_lr must be a finite number, got nan"):
        gradual_unfreeze(model, opt, 1, base_lr=float("nan"), decay=0.3)


def test_a_fully_frozen_model_says_there_is_nothing_to_optimize():
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(freeze(build("resnet18")), base_lr=1e-3, decay=0.3)


def test_gradual_unfreeze_thaws_from_the_head_back_and_keeps_optimizer_state():
    model = replace_head(freeze(build("resnet18")), 4)
    opt = torch.optim.Adam(param_groups(model, base_lr=1e-3, decay=0.3))
    out = model(torch.randn(2, 3, 32, 32))
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    opt.step()
    head_state = {k: v.clone() for k, v in opt.state[model.fc.weight].items()}

    thawed = [gradual_unfreeze(model, opt, epoch, every=2, base_lr=1e-3, decay=0.3) for epoch in range(6)]
    assert thawed == [[], [], ["layer4"], [], ["layer3"], []]
    assert model.layer3[0].conv1.weight.requires_grad and not model.layer2[0].conv1.weight.requires_grad
    assert [g["name"] for g in opt.param_groups] == ["fc", "layer4", "layer3"]
    assert opt.param_groups[1]["lr"] == pytest.approx(3e-4)
    for key, value in head_state.items():
        assert torch.equal(value, opt.state[model.fc.weight][key])
    assert check_optimizer(opt, model).ok


def test_gradual_unfreeze_rejects_a_negative_epoch():
    model = replace_head(freeze(build("resnet18")), 4)
    opt = torch.optim.SGD(param_groups(model, base_lr=1e-3, decay=0.3))
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        gradual_unfreeze(model, opt, -1, base_lr=1e-3, decay=0.3)


def test_check_optimizer_catches_frozen_parameters_in_the_optimizer():
    model = replace_head(freeze(build("resnet18")), 5)
    report = check_optimizer(torch.optim.SGD(model.parameters(), lr=0.1), model)
    assert not report.ok and len(report.frozen) == 60 and report.missing == []
    assert str(report).startswith("optimizer holds 60 frozen tensors (11,176,512 parameters)")
    assert "requires_grad" in str(report)


def test_check_optimizer_catches_unfrozen_parameters_missing_from_the_optimizer():
    model = replace_head(freeze(build("resnet18")), 5)
    opt = torch.optim.SGD(model.fc.parameters(), lr=0.1)
    assert check_optimizer(opt, model).ok
    unfreeze(model.layer4)
    report = check_optimizer(opt, model)
    assert not report.ok and report.frozen == [] and report.missing[0] == "layer4.0.conv1.weight"
    assert "add_param_group" in str(report)


def test_check_optimizer_wants_the_optimizer_first():
    model = build("resnet18")
    with pytest.raises(TypeError, match=r"check_optimizer\(optimizer, model\)"):
        check_optimizer(model, torch.optim.SGD(model.parameters(), lr=0.1))
