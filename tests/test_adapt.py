"""labkit.adapt: BatchNorm statistics re-estimated on a new domain (AdaBN), nothing else touched."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from labkit.adapt import adapt_batchnorm, batchnorm_layers
from labkit.freeze import freeze


def _small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.Flatten(), nn.LazyLinear(2))


def _batches(n=3, size=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 3, 8, 8, generator=g) * 2 + 1 for _ in range(n)]


def _resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    with torch.no_grad():  # give the statistics non-default values, as after pretraining
        for _, bn in batchnorm_layers(model):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.num_batches_tracked.fill_(1234)
    return model.eval()


def test_statistics_are_the_average_over_batches_with_earlier_layers_adapted():
    net = _small_net()
    batches = _batches()
    net(batches[0])  # materialise the lazy layer
    adapt_batchnorm(net, batches)
    means1, vars1, means2, vars2 = [], [], [], []
    for x in batches:  # by hand: each layer normalises with its batch statistics during the pass
        h = net[0](x)
        means1.append(h.mean((0, 2, 3)))
        vars1.append(h.var((0, 2, 3), unbiased=True))
        h = F.relu(F.batch_norm(h, None, None, net[1].weight, net[1].bias, training=True, eps=net[1].eps))
        h = net[3](h)
        means2.append(h.mean((0, 2, 3)))
        vars2.append(h.var((0, 2, 3), unbiased=True))
    torch.testing.assert_close(net[1].running_mean, torch.stack(means1).mean(0))
    torch.testing.assert_close(net[1].running_var, torch.stack(vars1).mean(0))
    torch.testing.assert_close(net[4].running_mean, torch.stack(means2).mean(0))
    torch.testing.assert_close(net[4].running_var, torch.stack(vars2).mean(0))


def test_weights_other_buffers_momentum_and_modes_are_left_exactly_as_they_were():
    model = _resnet()
    model.train()
    model.layer2.eval()  # a mixed state, to see that each module's own mode comes back
    model.layer3[0].bn1.momentum = 0.3
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    counts = {n: b.clone() for n, b in model.named_buffers() if n.endswith("num_batches_tracked")}
    modes = {n: m.training for n, m in model.named_modules()}
    momenta = {n: m.momentum for n, m in batchnorm_layers(model)}
    before = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
    adapt_batchnorm(model, [torch.randn(8, 3, 32, 32) for _ in range(2)])
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert all(torch.equal(b, counts[n]) for n, b in model.named_buffers() if n in counts)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: m.momentum for n, m in batchnorm_layers(model)} == momenta
    changed = [n for n, b in model.named_buffers() if n in before and not torch.equal(b, before[n])]
    assert len(changed) == len(before) == 20


def test_labels_in_the_batches_are_ignored():
    images = _batches()
    a, b = _small_net(), _small_net()
    a(images[0]), b(images[0])
    adapt_batchnorm(a, images)
    adapt_batchnorm(b, [(x, torch.zeros(len(x), dtype=torch.long)) for x in images])
    assert torch.equal(a[1].running_var, b[1].running_var) and torch.equal(a[4].running_mean, b[4].running_mean)


def test_dropout_is_off_during_the_pass():
    images = _batches()
    plain = _small_net()
    with_dropout = _small_net()
    with_dropout.insert(3, nn.Dropout(0.5))
    plain(images[0]), with_dropout(images[0])
    with_dropout.train()
    adapt_batchnorm(plain, images)
    adapt_batchnorm(with_dropout, images)
    assert torch.equal(plain[4].running_mean, with_dropout[5].running_mean)
    assert with_dropout.training


def test_layers_frozen_by_labkit_are_adapted_and_stay_held_afterwards():
    model = freeze(_resnet())
    stats = model.layer1[0].bn1.running_mean.clone()
    adapt_batchnorm(model, [torch.randn(8, 3, 32, 32)])
    adapted = model.layer1[0].bn1.running_mean.clone()
    assert not torch.equal(adapted, stats)
    model.train()  # a training loop afterwards must not move the frozen statistics again
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
    assert torch.equal(model.layer1[0].bn1.running_mean, adapted)


def test_max_batches_stops_early():
    images = _batches(n=4)
    a, b = _small_net(), _small_net()
    a(images[0]), b(images[0])
    adapt_batchnorm(a, images, max_batches=2)
    adapt_batchnorm(b, images[:2])
    assert torch.equal(a[1].running_mean, b[1].running_mean)


def test_an_empty_loader_is_an_error_and_leaves_the_statistics_alone():
    model = _resnet()
    before = model.bn1.running_var.clone()
    with pytest.raises(ValueError, match="gave no batches"):
        adapt_batchnorm(model, [])
    assert torch.equal(model.bn1.running_var, before) and model.bn1.momentum == 0.1
    assert int(model.bn1.num_batches_tracked) == 1234


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        adapt_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1), nn.GroupNorm(1, 3)), [torch.randn(2, 3, 4, 4)])
    with pytest.raises(TypeError, match="iterable of image batches"):
        adapt_batchnorm(_resnet(), torch.randn(2, 3, 8, 8))
    with pytest.raises(TypeError, match="expected an nn.Module"):
        adapt_batchnorm("resnet18", [torch.randn(2, 3, 8, 8)])
    with pytest.raises(ValueError, match="max_batches must be a positive int"):
        adapt_batchnorm(_resnet(), [torch.randn(2, 3, 8, 8)], max_batches=0)
    with pytest.raises(TypeError, match="image tensors"):
        adapt_batchnorm(_resnet(), [["not", "images"]])
