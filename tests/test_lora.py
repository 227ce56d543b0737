"""labkit.lora: LoRA target layers by kind and stage, head names, counts, frozen BatchNorm held in eval (with peft)."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from labkit import stages
from labkit.lora import (
    count_lora_parameters,
    head_name,
    hold_frozen_batchnorm,
    lora_targets,
)

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402 - only after the skip above


def _tiny_vit(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=num_classes)
    nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero: no gradient would reach LoRA
    return vit


def _mobilenet(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=num_classes)


def _wrap(model: nn.Module, r: int = 2, **kw) -> nn.Module:
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=lora_targets(model, **kw),
                        modules_to_save=[head_name(model)])
    return get_peft_model(model, config)


def test_targets_on_a_cnn_are_pointwise_convs_and_never_the_head():
    model = _mobilenet()
    names = lora_targets(model)
    layers = dict(model.named_modules())
    assert names and all(isinstance(layers[n], nn.Conv2d) and layers[n].kernel_size == (1, 1) and layers[n].groups == 1
                         for n in names)
    assert not any(n.startswith("classifier") for n in names)
    every_pointwise = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                       and m.groups == 1]
    assert names == every_pointwise  # all of them live in the body stages, in registration order


def test_targets_on_efficientnet_lite0_are_its_31_pointwise_convs_and_conv_head():
    timm = pytest.importorskip("timm")
    names = lora_targets(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=5))
    assert len(names) == 32 and names[-1] == "conv_head"
    assert sum(n.endswith((".conv_pw", ".conv_pwl")) for n in names) == 31


def test_targets_on_a_vit_are_attention_blocks_and_mlp_linears_never_out_proj():
    model = _tiny_vit()
    names = lora_targets(model)
    assert [n.rsplit(".", 1)[-1] for n in names[:3]] == ["self_attention", "0", "3"]
    assert len(names) == 6
    assert not any(n.endswith("out_proj") or n.startswith("heads") for n in names)
    assert lora_targets(model, kinds=("linear",)) == [n for n in names if ".mlp." in n]
    assert lora_targets(model, kinds="attention") == [n for n in names if n.endswith("self_attention")]


def test_first_and_last_stage_restrict_the_targets():
    model = _mobilenet()
    body = list(stages(model))[:-1]
    late = lora_targets(model, first_stage=body[-3])
    early = lora_targets(model, last_stage=body[-4])
    assert late and early and sorted(late + early) == sorted(lora_targets(model))
    assert all(n.startswith(tuple(f"{s}." for s in body[-3:])) for n in late)


@pytest.mark.parametrize("kwargs,match", [
    ({"kinds": ("conv3x3",)}, "kinds to be a non-empty tuple"),
    ({"kinds": ()}, "kinds to be a non-empty tuple"),
    ({"first_stage": "layer9"}, "no such stage"),
    ({"first_stage": "classifier"}, "head's stage"),
    ({"first_stage": "features.10", "last_stage": "features.2"}, "swap them"),
    ({"kinds": ("attention",)}, "found no layer of kinds"),
])
def test_lora_targets_bad_input_names_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lora_targets(_mobilenet(), **kwargs)


def test_lora_targets_refuses_a_non_module():
    with pytest.raises(TypeError, match="expects an nn.Module"):
        lora_targets("resnet18")


def test_head_name_finds_the_head_and_refuses_a_wrapped_model():
    assert head_name(_tiny_vit()) == "heads.head"
    assert head_name(torchvision.models.resnet18(weights=None)) == "fc"
    assert head_name(_mobilenet()) == "classifier.3"
    with pytest.raises(ValueError, match="before get_peft_model"):
        head_name(_wrap(_mobilenet()))


def test_count_matches_r_times_in_plus_out_per_layer_and_peft():
    model = _mobilenet()
    layers = dict(model.named_modules())
    r = 3
    want = sum(r * (layers[n].in_channels + layers[n].out_channels) for n in lora_targets(model))
    head = sum(p.numel() for p in model.classifier[3].parameters())
    pm = _wrap(model, r=r)
    count = count_lora_parameters(pm)
    assert (count.lora, count.saved) == (want, head)
    assert (count.trainable, count.total) == tuple(pm.get_nb_trainable_parameters())
    assert count.fraction == pytest.approx(count.trainable / count.total)
    assert "LoRA matrices" in str(count)


def test_count_refuses_a_model_without_lora():
    with pytest.raises(ValueError, match="wrapped by peft"):
        count_lora_parameters(_mobilenet())


def test_held_batchnorm_keeps_its_statistics_while_lora_trains():
    pm = hold_frozen_batchnorm(_wrap(_mobilenet()))
    bns = [m for m in pm.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [b.running_mean.clone() for b in bns]
    pm.train()
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        loss = pm(torch.randn(4, 3, 32, 32) * 3 + 1).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, bns))
    assert all(not b.training for b in bns)


def test_batchnorm_with_a_trainable_parameter_is_left_alone():
    model = _mobilenet()
    bn_name = next(n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    pm = get_peft_model(model, LoraConfig(r=2, target_modules=lora_targets(model),
                                          modules_to_save=[bn_name, "classifier.3"]))
    hold_frozen_batchnorm(pm)
    pm.train()
    saved = next(m for n, m in pm.named_modules() if n.endswith(f"{bn_name}.modules_to_save.default"))
    before = saved.running_mean.clone()
    pm(torch.randn(4, 3, 32, 32) + 2)
    assert not torch.equal(before, saved.running_mean)


def _train_a_little(pm: nn.Module) -> None:
    torch.manual_seed(1)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    pm.train()
    for _ in range(3):
        x, y = torch.randn(8, 3, 32, 32) * 2 + 0.5, torch.randint(0, 4, (8,))
        loss = nn.functional.cross_entropy(pm(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pm.eval()


def test_a_fresh_backbone_plus_the_saved_adapter_reproduces_the_model_only_with_held_batchnorm(tmp_path):
    base = _mobilenet()
    x = torch.randn(6, 3, 32, 32)
    diffs = {}
    for held in (True, False):
        pm = _wrap(copy.deepcopy(base))
        if held:
            hold_frozen_batchnorm(pm)
        _train_a_little(pm)
        pm.save_pretrained(tmp_path / str(held))
        reloaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / str(held)).eval()
        with torch.no_grad():
            diffs[held] = (pm(x) - reloaded(x)).abs().max().item()
    assert diffs[True] == 0.0
    assert diffs[False] > 1e-4


def test_lora_on_a_vit_attention_block_trains_and_merges():
    model = _tiny_vit()
    pm = _wrap(model, kinds=("attention",))
    _x = torch.randn(2, 3, 32, 32)
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.5)
    loss = pm(_x).square().mean()
    loss.backward()
    grads = [p.grad for n, p in pm.named_parameters() if "lora_B" in n]  # A's gradient is 0 while B is 0
    assert len(grads) == 4 and all(g is not None and g.abs().sum() > 0 for g in grads)  # in_proj, out_proj x 2 blocks
    opt.step()
    for n, p in pm.named_parameters():  # B starts at zero; one step makes the update non-zero
        if "lora_B" in n:
            assert p.abs().sum() > 0
    pm.eval()
    with torch.no_grad():
        unmerged = pm(_x)
        merged = pm.merge_and_unload()(_x)
    assert torch.allclose(unmerged, merged, atol=1e-5)
