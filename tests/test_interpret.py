"""Known-answer tests of labkit.interpret: Grad-CAM, top losses and the learning-rate finder."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labkit.freeze import freeze_to
from labkit.interpret import (
    LRFind,
    TopLosses,
    default_cam_layer,
    grad_cam,
    lr_find,
    most_confused,
    plot_cam,
    plot_lr_find,
    plot_top_losses,
    suggest_lr,
    top_losses,
)
from labkit.optim import param_groups


# --------------------------------------------------------------------------- small models
class HalfNet(nn.Module):
    """Class 0's logit reads only the left half of its feature map, class 1's only the right half."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU()))
        with torch.no_grad():
            self.features[0][0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))  # bright, dark detectors
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(2))
            self.head.bias.zero_()

    def forward(self, x):
        f = self.features(x)
        w = f.shape[-1] // 2
        pooled = torch.stack([f[:, 0, :, :w].mean((1, 2)), f[:, 1, :, w:].mean((1, 2))], 1)
        return self.head(pooled)


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
            nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU()),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def _hooks(model: nn.Module) -> list:
    return [(name, list(m._forward_hooks), list(m._forward_pre_hooks), list(m._backward_hooks),
             list(getattr(m, "_backward_pre_hooks", {}))) for name, m in model.named_modules()]


def _halves_share(cam: torch.Tensor) -> float:
    """Share of a (h, w) map's mass on the left half (a middle column counts half to each side)."""
    w = cam.shape[-1]
    left = cam[:, : w // 2].sum() + (0.5 * cam[:, w // 2].sum() if w % 2 else 0.0)
    return float(left / cam.sum())


# --------------------------------------------------------------------------- Grad-CAM
def test_grad_cam_puts_each_class_on_the_half_its_logit_reads():
    model = HalfNet()
    x = torch.rand(4, 1, 8, 8) * 0.5
    x[..., :4] += 0.5  # bright left half
    x[..., 4:] -= 1.0  # dark right half
    left, right = grad_cam(model, x, target=0), grad_cam(model, x, target=1)
    assert left.shape == (4, 8, 8)
    for i in range(4):
        assert _halves_share(left[i]) > 0.99
        assert _halves_share(right[i]) < 0.01


def test_grad_cam_equals_the_hand_computation_on_a_tiny_cnn():
    model = TinyCNN().eval()
    x = torch.randn(3, 3, 12, 12)
    store = {}
    handle = model.features[1].register_forward_hook(lambda m, a, out: store.update(act=out))
    logits = model(x)
    target = torch.tensor([0, 3, 4])
    store["act"].retain_grad()
    logits.gather(1, target[:, None]).sum().backward()
    handle.remove()
    act, grad = store["act"].detach(), store["act"].grad
    hand = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1))
    hand = hand / hand.flatten(1).amax(1)[:, None, None]
    model.zero_grad(set_to_none=True)
    cam = grad_cam(model, x, target=target)
    assert default_cam_layer(model, x) == "features.1"
    assert cam.shape == (3, 6, 6)
    torch.testing.assert_close(cam, hand, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad_cam(model, x, target=target, layer="features.1"), hand, atol=1e-6, rtol=1e-5)
    up = grad_cam(model, x, target=target, upsample=True)
    assert up.shape == (3, 12, 12) and float(up.min()) >= 0 and float(up.max()) == pytest.approx(1.0)


def test_grad_cam_default_target_is_the_predicted_class():
    model = TinyCNN().eval()
    x = torch.randn(2, 3, 12, 12)
    predicted = model(x).argmax(1)
    torch.testing.assert_close(grad_cam(model, x), grad_cam(model, x, target=predicted))


@pytest.mark.parametrize("build, layer", [
    (lambda: torchvision.models.resnet18(weights=None), "layer4"),
    (lambda: torchvision.models.efficientnet_b0(weights=None), "features.8"),
    (lambda: pytest.importorskip("timm").create_model("tf_efficientnet_lite0", pretrained=False), "bn2"),
])
def test_grad_cam_finds_the_last_convolutional_stage(build, layer):
    torch.manual_seed(0)
    model = build()
    x = torch.rand(2, 3, 64, 64)
    assert default_cam_layer(model, x) == layer
    cam = grad_cam(model, x)
    assert cam.shape == (2, 2, 2)  # stride 32
    assert float(cam.min()) >= 0 and float(cam.amax()) == pytest.approx(1.0)


def test_grad_cam_on_a_vit_reshapes_the_patch_tokens_of_the_last_blocks_input():
    model = torchvision.models.vit_b_16(weights=None, image_size=64)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    x = torch.rand(1, 3, 64, 64)
    assert default_cam_layer(model, x) == "encoder.layers.encoder_layer_10"
    cam = grad_cam(model, x)
    assert cam.shape == (1, 4, 4) and float(cam.max()) == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="does not depend on layer 'encoder.ln'.*class-token head"):
        empty = grad_cam(model, x, layer="encoder.ln")  # the head reads only the class token
    assert float(empty.abs().sum()) == 0.0


def test_grad_cam_rejects_bad_inputs_with_clear_messages():
    model = TinyCNN(classes=5).eval()
    x = torch.randn(2, 3, 12, 12)
    with pytest.raises(ValueError, match="target 7 is out of range.*5 classes"):
        grad_cam(model, x, target=7)
    with pytest.raises(ValueError, match="target -1 is out of range"):
        grad_cam(model, x, target=torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="one target per image \\(2\\)"):
        grad_cam(model, x, target=[0, 1, 2])
    with pytest.raises(ValueError, match="empty batch"):
        grad_cam(model, x[:0])
    with pytest.raises(ValueError, match="no layer named 'layer4'.*features.1"):
        grad_cam(model, x, layer="layer4")
    with pytest.raises(ValueError, match="convolutional network.*without any nn.Conv2d"):
        grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), torch.randn(1, 1, 3, 4))
    with pytest.raises(ValueError, match="outputs \\(2, 5\\); expected a 4-D feature map"):
        grad_cam(model, x, layer="head")
    with pytest.raises(TypeError, match="integer class indices"):
        grad_cam(model, x, target=torch.tensor([0.0, 1.0]))


def test_grad_cam_leaves_model_and_input_as_found():
    model = torchvision.models.resnet18(weights=None, num_classes=4)
    freeze_to(model, "layer3")  # frozen stages, and freeze's BatchNorm hooks
    model.train()
    model.layer2.eval()
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    hooks = _hooks(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 32, 32)
    x_before = x.clone()
    grad_cam(model, x, target=1, upsample=True)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert _hooks(model) == hooks
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert torch.equal(x, x_before) and not x.requires_grad


def test_grad_cam_on_real_photos_finds_the_cat_and_the_coffee():
    """The offline backbone (ImageNet weights) on a cat beside an espresso: each map on its own photo."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from labkit.models import load_backbone

    backbone = load_backbone("efficientnet_lite0", pretrained=True, verbose=False)
    model = backbone.model
    photos = {name: backbone.eval_transform(Image.fromarray(np.asarray(getattr(skimage_data, name)())[..., :3]))
              for name in ("chelsea", "coffee")}
    cat_classes, espresso = range(281, 286), 967  # tabby .. Egyptian cat; espresso
    with torch.no_grad():
        alone = model(torch.stack([photos["chelsea"], photos["coffee"]])).softmax(1)
    cat = int(alone[0].argmax())
    assert cat in cat_classes and float(alone[0, cat]) > 0.5
    assert int(alone[1].argmax()) == espresso and float(alone[1, espresso]) > 0.5
    shares = {}
    for left, right in (("chelsea", "coffee"), ("coffee", "chelsea")):
        x = torch.cat([photos[left], photos[right]], dim=2)[None]  # side by side: 112 x 224
        for name, target in (("chelsea", cat), ("coffee", espresso)):
            share = _halves_share(grad_cam(model, x, target=target, upsample=True)[0])
            shares[f"{name} ({'left' if name == left else 'right'})"] = share if name == left else 1 - share
    print("Grad-CAM share on the target's half:", {k: round(v, 3) for k, v in shares.items()})
    assert all(v > 0.5 for v in shares.values()), shares


def test_plot_cam_and_plot_top_losses_return_figures_and_leave_inputs_alone():
    image, cam = torch.randn(3, 16, 16), torch.rand(4, 4)
    before = (image.clone(), cam.clone())
    fig = plot_cam(image, cam, mean=[0.5] * 3, std=[0.5] * 3, title="cat")
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "cat"
    assert torch.equal(image, before[0]) and torch.equal(cam, before[1])
    array = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    assert isinstance(plot_cam(array, cam), Figure)
    with pytest.raises(ValueError, match="one map \\(h, w\\)"):
        plot_cam(image, torch.rand(2, 4, 4))


# --------------------------------------------------------------------------- top losses
def _exact_problem():
    """A model and data whose logits are small integers, so losses are exact and duplicated images tie exactly."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (14, 1, 2, 2), generator=g).float()
    x[9], x[11] = x[2], x[2]  # exact ties with example 2
    y = torch.randint(0, 3, (14,), generator=g)
    y[9], y[11] = y[2], y[2]
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.randint(0, 2, (3, 4), generator=g).float())
    return model, TensorDataset(x, y)


def test_top_losses_equals_a_brute_force_ranking_with_ties_broken_by_index():
    model, data = _exact_problem()
    model.train()
    loader = DataLoader(data, batch_size=5)
    result = top_losses(model, loader, k=6, class_names=["a", "b", "c"])
    assert model.training
    with torch.no_grad():
        losses = [float(F.cross_entropy(model(x[None]), y[None])) for x, y in data]
        probs = [model(x[None]).softmax(1)[0] for x, _ in data]
    ranking = sorted(range(len(data)), key=lambda i: (-losses[i], i))[:6]
    assert isinstance(result, TopLosses)
    assert result.indices.tolist() == ranking
    assert len({losses[i] for i in ranking}) < 6 or 2 not in ranking  # the fixture really has ties
    torch.testing.assert_close(result.losses, torch.tensor([losses[i] for i in ranking]))
    assert result.labels.tolist() == [int(data[i][1]) for i in ranking]
    assert result.predictions.tolist() == [int(probs[i].argmax()) for i in ranking]
    torch.testing.assert_close(result.prob_true, torch.stack([probs[i][int(data[i][1])] for i in ranking]))
    torch.testing.assert_close(result.prob_pred, torch.stack([probs[i].max() for i in ranking]))
    assert "index" in str(result)
    assert len(top_losses(model, loader, k=100).indices) == len(data)
    fig = plot_top_losses(result, data, ncols=4)
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.get_title()]) == 6


def test_top_losses_ties_in_the_fixture_are_real():
    model, data = _exact_problem()
    with torch.no_grad():
        losses = [float(F.cross_entropy(model(x[None]), y[None])) for x, y in data]
    assert losses[2] == losses[9] == losses[11]
    order = top_losses(model, DataLoader(data, batch_size=4), k=len(data)).indices.tolist()
    assert order.index(2) < order.index(9) < order.index(11)
    for loss in set(losses):  # within every group of equal losses, dataset order
        tied = [i for i in order if losses[i] == loss]
        assert tied == sorted(tied)


def test_most_confused_counts_match_brute_force():
    model, data = _exact_problem()
    with torch.no_grad():
        pred = [int(model(x[None]).argmax()) for x, _ in data]
    counts = {}
    for (_, y), p in zip(data, pred):
        if int(y) != p:
            counts[(int(y), p)] = counts.get((int(y), p), 0) + 1
    expected = sorted(((y, p, n) for (y, p), n in counts.items()), key=lambda t: (-t[2], t[0], t[1]))
    assert most_confused(model, DataLoader(data, batch_size=4)) == expected


def test_top_losses_rejects_bad_inputs():
    model, data = _exact_problem()
    with pytest.raises(ValueError, match="shuffles.*shuffle=False"):
        top_losses(model, DataLoader(data, batch_size=4, shuffle=True))
    with pytest.raises(ValueError, match="k must be a positive int"):
        top_losses(model, DataLoader(data), k=0)
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        top_losses(model, [(data.tensors[0][:2], torch.tensor([0, 5]))])


# --------------------------------------------------------------------------- learning-rate finder
def _images(n: int = 16, size: int = 32, classes: int = 3, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))


def _rng_states():
    return (torch.get_rng_state(), np.random.get_state(), random.getstate())


def test_lr_find_restores_weights_buffers_optimizer_rngs_and_mode_exactly(one_torch_thread):
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    freeze_to(model, "layer3")
    optimizer = torch.optim.AdamW(param_groups(model, base_lr=1e-3, decay=0.5))
    data = _images()
    loader = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1))
    model.train()
    F.cross_entropy(model(data.tensors[0][:4]), data.tensors[1][:4]).backward()
    optimizer.step()  # the optimizer has state to keep
    model.layer4.eval()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    modes = {n: m.training for n, m in model.named_modules()}
    opt_state = optimizer.state_dict()
    opt_state = {"state": {k: {s: v.clone() for s, v in st.items()} for k, st in opt_state["state"].items()},
                 "param_groups": [dict(g) for g in opt_state["param_groups"]]}
    rng_before, loader_rng = _rng_states(), loader.generator.get_state()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    moved = []

    def loss_fn(out, y):  # runs at every step: frozen weights must still be where they were
        assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
        moved.append(not torch.equal(model.fc.weight, params["fc.weight"]))
        return F.cross_entropy(out, y)

    result = lr_find(model, loader, optimizer=optimizer, steps=10, end=1.0, loss_fn=loss_fn, verbose=False)
    assert len(result.rates) == 10 and any(moved)  # the head did train during the run
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())  # running stats, num_batches_tracked
    assert all(torch.equal(p.grad, grads[n]) if n in grads else p.grad is None for n, p in model.named_parameters())
    assert {n: m.training for n, m in model.named_modules()} == modes
    after = optimizer.state_dict()
    assert [dict(g) for g in after["param_groups"]] == opt_state["param_groups"]
    assert after["state"].keys() == opt_state["state"].keys()
    assert all(torch.equal(v, opt_state["state"][k][s]) for k, st in after["state"].items() for s, v in st.items())
    rng_after = _rng_states()
    assert torch.equal(rng_after[0], rng_before[0]) and rng_after[2] == rng_before[2]
    assert all(np.array_equal(a, b) for a, b in zip(rng_after[1], rng_before[1]))
    assert torch.equal(loader.generator.get_state(), loader_rng)
    assert all(p.requires_grad == (n not in frozen) for n, p in model.named_parameters())


def test_lr_find_stops_when_the_loss_diverges_and_says_why(capsys):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    images = _images(8, 8)
    conflicting = TensorDataset(images.tensors[0].repeat(2, 1, 1, 1),  # each image twice, two labels: no zero loss
                                torch.cat([images.tensors[1], (images.tensors[1] + 1) % 3]))
    loader = DataLoader(conflicting, batch_size=8, shuffle=True)
    result = lr_find(model, loader, start=1e-4, end=1e8, steps=100, optimizer=torch.optim.SGD(model.parameters()))
    assert isinstance(result, LRFind)
    assert result.stopped_early and len(result.rates) < 100
    assert "stopped at step" in result.reason and ("passed 4x its best" in result.reason or "turned" in result.reason)
    assert 1e-4 <= result.suggestion <= 1e8 and result.rule == "valley"
    assert all(1e-4 <= v <= 1e8 for v in result.suggestions.values())
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "'valley'" in out[0] and f"{result.suggestion:.2e}" in out[0]
    assert isinstance(plot_lr_find(result), Figure) and isinstance(result.plot(), Figure)


def test_lr_find_cycles_a_short_loader_and_keeps_quiet_when_asked(capsys):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    result = lr_find(model, DataLoader(_images(8, 8), batch_size=4), start=1e-6, end=1e-3, steps=12,
                     suggest="minimum", verbose=False)
    assert len(result.rates) == 12 and not result.stopped_early and "all 12 steps ran" in result.reason
    assert result.rates[0] == pytest.approx(1e-6) and result.rates[-1] == pytest.approx(1e-3)
    ratio = result.rates[1] / result.rates[0]
    assert all(b / a == pytest.approx(ratio) for a, b in zip(result.rates, result.rates[1:]))
    assert result.rule == "minimum" and 1e-6 <= result.suggestion <= 1e-3
    assert capsys.readouterr().out == ""


def test_suggest_lr_rules_give_known_answers():
    rates = [10.0 ** (e / 2) for e in range(-12, 2)]  # 14 points, 1e-6 .. 10**0.5
    losses = [2.0, 2.0, 1.9, 1.7, 1.4, 1.0, 0.7, 0.5, 0.4, 0.45, 0.9, 2.0, 5.0, 9.0]
    assert suggest_lr(rates, losses, "minimum") == pytest.approx(rates[8] / 10)
    # steepest fall against log(rate): between points 4 and 5 (-0.4)
    assert suggest_lr(rates, losses, "steepest") == pytest.approx(rates[4])
    # valley over points 1..8 (the first tenth and the last five skipped), all falling: fastai's rule takes
    # start -1 (its own offset), sections 8 / 3, so local index -1 + 2 + 1 = 2, i.e. point 3
    assert suggest_lr(rates, losses, "valley") == pytest.approx(rates[3])
    with pytest.raises(ValueError, match="'valley', 'minimum', 'steepest'"):
        suggest_lr(rates, losses, "median")


def test_lr_find_rejects_bad_inputs_with_clear_messages():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    loader = DataLoader(_images(8, 8), batch_size=4)
    with pytest.raises(ValueError, match="empty one"):
        lr_find(model, [], verbose=False)
    with pytest.raises(ValueError, match="start < end"):
        lr_find(model, loader, start=1.0, end=1e-3, verbose=False)
    with pytest.raises(ValueError, match="steps must be an int >= 5"):
        lr_find(model, loader, steps=3, verbose=False)
    with pytest.raises(ValueError, match="suggest must be one of 'valley', 'minimum', 'steepest'"):
        lr_find(model, loader, suggest="best", verbose=False)
    nan_images = DataLoader(TensorDataset(torch.full((4, 3, 8, 8), float("nan")), torch.zeros(4, dtype=torch.long)))
    weight = model[1].weight.detach().clone()
    with pytest.raises(ValueError, match="very first step.*NaN/inf pixels"):
        lr_find(model, nan_images, verbose=False)
    assert torch.equal(model[1].weight, weight)
    frozen = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).requires_grad_(False)
    with pytest.raises(ValueError, match="trainable parameter"):
        lr_find(frozen, loader, verbose=False)
