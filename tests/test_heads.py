import pytest
import torch
from helpers import FAMILIES, build, logits
from torch import nn

from labkit import freeze, get_head, replace_head, stages
from labkit.freeze import frozen_guard


@pytest.mark.parametrize("name", FAMILIES)
def test_get_head_finds_the_1000_class_layer_of_every_family(name):
    head = get_head(build(name, meta=True))
    out = head.out_features if isinstance(head, nn.Linear) else head.out_channels
    assert out == 1000


@pytest.mark.parametrize("name", FAMILIES)
def test_head_swap_on_frozen_model_trains_only_the_head(name):
    model = replace_head(freeze(build(name)), 7)
    head = get_head(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    head_ids = {id(p) for p in head.parameters()}
    assert head_ids <= trainable
    aux = {id(p) for n, m in model.named_modules() if n.startswith(("aux", "AuxLogits")) for p in m.parameters()}
    assert trainable - head_ids <= aux  # only the auxiliary heads may train besides the head

    size = FAMILIES[name]
    model.train()
    x, y = torch.randn(2, 3, size, size), torch.tensor([0, 6])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    before = [p.detach().clone() for p in head.parameters()]
    with frozen_guard(model):
        out = logits(model(x))
        assert out.shape == (2, 7)
        nn.functional.cross_entropy(out, y).backward()
        opt.step()
    # (random EfficientNet features are ~0 in eval mode, so judge the head by all its tensors)
    assert any(not torch.equal(b, p) for b, p in zip(before, head.parameters()))


def test_replace_head_keeps_in_features_dtype_and_returns_the_model():
    model = build("resnet18").double()
    returned = replace_head(model, 3)
    assert returned is model
    assert model.fc.in_features == 512 and model.fc.out_features == 3
    assert model.fc.weight.dtype == torch.float64
    assert model.fc.weight.device == model.conv1.weight.device


def test_replace_head_swaps_squeezenet_conv_classifier():
    model = replace_head(build("squeezenet1_1"), 4)
    assert isinstance(model.classifier[1], nn.Conv2d)
    assert model.classifier[1].out_channels == 4 and model.classifier[1].in_channels == 512
    assert model.num_classes == 4
    model.eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)


@pytest.mark.parametrize("name,aux", [("googlenet", ["aux1.fc2", "aux2.fc2"]), ("inception_v3", ["AuxLogits.fc"])])
def test_replace_head_replaces_auxiliary_heads(name, aux):
    model = replace_head(build(name), 5)
    for path in aux:
        assert model.get_submodule(path).out_features == 5
    model.train()
    out = model(torch.randn(2, 3, FAMILIES[name], FAMILIES[name]))
    assert out.logits.shape == (2, 5)


def test_replace_head_without_aux_heads_still_works():
    model = replace_head(build("googlenet", aux_logits=False), 5)
    assert model.fc.out_features == 5 and model.aux1 is None


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10", None])
def test_replace_head_rejects_a_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        replace_head(build("resnet18"), bad)


class Unusual(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.decoder = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 10))

    def forward(self, x):
        return self.decoder(self.body(x))


def test_missing_head_error_says_what_was_looked_for_and_how_to_pass_it():
    with pytest.raises(ValueError, match=r"looked for .* fc, classifier, heads, head.*head="):
        replace_head(Unusual(), 3)


def test_replace_head_accepts_an_explicit_head_name():
    model = replace_head(Unusual(), 3, head="decoder.2")
    assert model.decoder[2].out_features == 3 and model.decoder[2].in_features == 4
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 3)


def test_explicit_head_name_must_exist_and_be_a_linear_layer():
    with pytest.raises(ValueError, match="no submodule named 'decoder.9'"):
        replace_head(Unusual(), 3, head="decoder.9")
    with pytest.raises(ValueError, match="is a ReLU"):
        replace_head(Unusual(), 3, head="decoder.1")


class TimmLike(nn.Module):
    """Mimics timm's classifier API without needing timm installed."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1000))

    def get_classifier(self):
        return self.head[2]

    def reset_classifier(self, num_classes):
        self.head[2] = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.stem(x))


def test_timm_style_models_use_their_reset_classifier():
    model = replace_head(freeze(TimmLike()), 6)
    assert get_head(model).out_features == 6
    assert all(p.requires_grad for p in model.head[2].parameters())


def test_resnet_stages_are_stem_layers_and_fc():
    parts = stages(build("resnet18"))
    assert list(parts) == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert [n for n, _ in parts["stem"].named_parameters()] == ["conv1.weight", "bn1.weight", "bn1.bias"]


@pytest.mark.parametrize("name", FAMILIES)
def test_stages_cover_every_parameter_exactly_once_and_end_with_the_head(name):
    model = build(name, meta=True)
    parts = stages(model)
    ids = [id(p) for part in parts.values() for p in part.parameters()]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert len(ids) == len(set(ids))
    last = list(parts.values())[-1]
    assert any(m is get_head(model) for m in last.modules())


def test_stages_hold_the_model_layers_not_copies():
    model = build("resnet18")
    freeze(stages(model)["stem"])
    assert not model.conv1.weight.requires_grad and not model.bn1.weight.requires_grad
    assert model.layer1[0].conv1.weight.requires_grad


@pytest.mark.parametrize(
    "name,expected",
    [
        ("vgg11_bn", ["block1", "block2", "block3", "block4", "block5", "classifier"]),
        ("regnet_x_400mf", ["stem", "trunk_output.block1", "trunk_output.block2", "trunk_output.block3",
                            "trunk_output.block4", "fc"]),
        ("shufflenet_v2_x0_5", ["conv1", "stage2", "stage3", "stage4", "conv5", "fc"]),
    ],
)
def test_stages_follow_each_family_names(name, expected):
    assert list(stages(build(name, meta=True))) == expected


def test_generic_fallback_uses_top_level_children():
    assert list(stages(Unusual())) == ["body", "decoder"]


def test_get_head_name_names_the_layer_get_head_returns():
    import torchvision

    from labkit.heads import get_head_name

    vit = torchvision.models.vit_b_16(weights=None)
    assert get_head_name(vit) == "heads.head" and vit.get_submodule(get_head_name(vit)) is get_head(vit)
    with pytest.raises(ValueError, match="has no submodule named 'head9'"):
        get_head_name(vit, head="head9")
