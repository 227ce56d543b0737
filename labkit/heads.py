"""Find, replace and slice the parts of a classification network: its head and its stages.

Every torchvision classification family keeps its head under a known attribute name
(``fc``, ``classifier``, ``heads`` or ``head``) and its body under a known container
(``features``, ``layer1``..``layer4``, ``encoder.layers`` ...). This module finds them by
those names, never by position, so it keeps working when a model is modified.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["get_head", "get_head_name", "replace_head", "stages", "HEAD_NAMES"]

# Attribute names under which torchvision (and most hand-written models) keep the head.
HEAD_NAMES = ("fc", "classifier", "heads", "head")

# Containers whose children are the stages (torchvision's names for a network's body).
_EXPAND = ("features", "trunk_output", "layers", "blocks", "encoder", "encoder.layers")

# Families whose stem is made of several named layers that a generic walk would split.
_STEMS = {
    "GoogLeNet": ("conv1", "conv2", "conv3"),
    "Inception3": ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"),
}
# Auxiliary classifiers that belong with the head (GoogLeNet and Inception v3).
_AUX_HEADS = {"GoogLeNet": ("aux1.fc2", "aux2.fc2"), "Inception3": ("AuxLogits.fc",)}
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def _is_head_layer(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1))


def _find_head_path(model: nn.Module, head: str | None = None) -> str:
    """Dotted name of the layer that produces the class scores."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}. "
                        f"Pass the model itself, e.g. get_head(model).")
    names = dict(model.named_modules())
    if head is not None:
        if head not in names:
            raise ValueError(
                f"{type(model).__name__} has no submodule named {head!r}. "
                f"Pass the dotted name of the final layer, one of: {', '.join(n for n in names if n)[:300]}"
            )
        if not _is_head_layer(names[head]):
            raise ValueError(
                f"{head!r} is a {type(names[head]).__name__}; a head must be an nn.Linear or a 1x1 nn.Conv2d. "
                "Pass the name of the last layer that outputs the class scores."
            )
        return head
    if hasattr(model, "get_classifier") and hasattr(model, "reset_classifier"):  # timm models
        classifier = model.get_classifier()
        for name, module in names.items():
            if module is classifier:
                return name
    for attr in HEAD_NAMES:
        candidate = names.get(attr)
        if candidate is None:
            continue
        if _is_head_layer(candidate):
            return attr
        inner = [n for n, m in candidate.named_modules() if _is_head_layer(m)]
        if inner:
            return f"{attr}.{inner[-1]}"
    raise ValueError(
        f"could not find a classification head on {type(model).__name__}: looked for an nn.Linear or a 1x1 "
        f"nn.Conv2d under the attributes {', '.join(HEAD_NAMES)}. Pass the head's dotted name explicitly, "
        "e.g. replace_head(model, 10, head='decoder.out')."
    )


def get_head(model: nn.Module, *, head: str | None = None) -> nn.Module:
    """Return the layer that produces the class scores (an ``nn.Linear``, or SqueezeNet's 1x1 conv).

    Args:
        model: a classification network (any torchvision classification builder, or a model with
            its head under ``fc``, ``classifier``, ``heads`` or ``head``; timm models via
            ``get_classifier``).
        head: dotted name of the head, for models where it cannot be found by name.

    Example:
        >>> get_head(torchvision.models.resnet18(weights=None))
        Linear(in_features=512, out_features=1000, bias=True)
    """
    return model.get_submodule(_find_head_path(model, head))


def get_head_name(model: nn.Module, *, head: str | None = None) -> str:
    """The dotted name of the layer :func:`get_head` returns (for ``modules_to_save``, optimizers, logs).

    Args:
        model: as for :func:`get_head`.
        head: dotted name of the head, checked and returned, for models where it cannot be found by name.

    Example:
        >>> get_head_name(torchvision.models.vit_b_16(weights=None))
        'heads.head'
    """
    return _find_head_path(model, head)


def _new_head(old: nn.Module, num_classes: int) -> nn.Module:
    device, dtype = old.weight.device, old.weight.dtype
    if isinstance(old, nn.Linear):
        return nn.Linear(old.in_features, num_classes, bias=old.bias is not None, device=device, dtype=dtype)
    return nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size, stride=old.stride,
                     padding=old.padding, bias=old.bias is not None, device=device, dtype=dtype)


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def replace_head(model: nn.Module, num_classes: int, *, head: str | None = None) -> nn.Module:
    """Replace the classification head with a fresh, trainable layer for ``num_classes`` classes.

    Works in place and returns the model. The new layer has the old one's ``in_features``
    (or ``in_channels``), bias setting, device and dtype, and is trainable even when the
    model was frozen before the swap. GoogLeNet's and Inception v3's auxiliary heads, when
    the model has them (``aux_logits=True``), are replaced too so that their training loss
    keeps working; with ``aux_logits=False`` there is nothing to replace.

    Args:
        model: the network to modify.
        num_classes: number of classes of the new task (a positive int).
        head: dotted name of the head, for models where it cannot be found by name.

    Example:
        >>> model = replace_head(torchvision.models.resnet50(weights=None), 37)
        >>> model.fc
        Linear(in_features=2048, out_features=37, bias=True)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive int, got {num_classes!r} ({type(num_classes).__name__}). "
            "Pass the number of classes in your data, e.g. len(train_set.classes)."
        )
    if head is None and hasattr(model, "reset_classifier") and hasattr(model, "get_classifier"):
        model.reset_classifier(num_classes)  # timm: knows its own pooling and head layout
        for p in model.get_classifier().parameters():
            p.requires_grad_(True)
        return model
    path = _find_head_path(model, head)
    _set_submodule(model, path, _new_head(model.get_submodule(path), num_classes))
    for aux in _AUX_HEADS.get(type(model).__name__, ()):
        try:
            old = model.get_submodule(aux)
        except AttributeError:  # aux_logits=False: the auxiliary head is None
            continue
        _set_submodule(model, aux, _new_head(old, num_classes))
    if isinstance(getattr(model, "num_classes", None), int):
        model.num_classes = num_classes  # SqueezeNet keeps it as an attribute
    return model


class _StageGroup(nn.Module):
    """Several layers of one model seen as one stage. Holds references, not copies."""

    def __init__(self, members: list[tuple[str, nn.Module | nn.Parameter]]):
        super().__init__()
        for name, member in members:
            key = name.replace(".", "_")
            if isinstance(member, nn.Parameter):
                self.register_parameter(key, member)
            else:
                self.add_module(key, member)

    def forward(self, *args, **kwargs):
        raise RuntimeError("a stage group is a view on a model's layers for freezing and param groups; call the model")


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_leaf_layer(module: nn.Module) -> bool:
    return not any(True for _ in module.children())


def _units(model: nn.Module) -> list[tuple[str, nn.Module | nn.Parameter]]:
    """Walk the model in registration order, opening the body containers."""
    out: list[tuple[str, nn.Module | nn.Parameter]] = []
    keep_closed = {"features"} if type(model).__name__ in ("VGG", "AlexNet") else set()

    def walk(module: nn.Module, prefix: str) -> None:
        for name, param in module.named_parameters(recurse=False):
            out.append((prefix + name, param))
        for name, child in module.named_children():
            path = prefix + name
            if child is None:
                continue
            if path in _EXPAND and path not in keep_closed and not _is_head_layer(child):
                walk(child, path + ".")
            elif _has_params(child):
                out.append((path, child))

    walk(model, "")
    return out


def _split_at_pools(prefix: str, features: nn.Sequential) -> list[tuple[str, list]]:
    """VGG and AlexNet: one stage per block of convolutions, a block ending at a pooling layer."""
    blocks: list[tuple[str, list]] = []
    current: list = []
    for name, layer in features.named_children():
        if _has_params(layer):
            current.append((f"{prefix}.{name}", layer))
        if isinstance(layer, _POOLS) and current:
            blocks.append((f"block{len(blocks) + 1}", current))
            current = []
    if current:
        blocks.append((f"block{len(blocks) + 1}", current))
    return blocks


def stages(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    """The model's stages in order from stem to head, found by name.

    Each value is a module of the model (or a small container holding references to several
    of its layers, e.g. ResNet's stem ``conv1`` + ``bn1``), so ``freeze(stages(model)["layer1"])``
    freezes the real layers. Every parameter belongs to exactly one stage; the last stage
    holds the head.

    How stages are found: walk the model's children in registration order, opening the body
    containers torchvision uses (``features``, ``trunk_output``, ``layers``, ``blocks``,
    ``encoder.layers``); leading single layers (conv, norm, the ViT class token and position
    embedding) form the ``stem``; a lone normalization layer joins the stage before it
    (DenseNet's ``norm5``, ViT's ``encoder.ln``, Swin's ``norm``); VGG and AlexNet split
    ``features`` at pooling layers into ``block1``, ``block2`` ...; GoogLeNet's and Inception's
    auxiliary heads join the head stage. Any other model gets the same generic walk over its
    top-level children, which is the documented fallback.

    Example:
        >>> list(stages(torchvision.models.resnet18(weights=None)))
        ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'fc']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"stages expects an nn.Module, got {type(model).__name__}.")
    family = type(model).__name__
    try:
        head_path = _find_head_path(model)
    except ValueError:
        head_path = None

    groups: list[tuple[str, list]] = []
    stem_names = _STEMS.get(family, ())
    aux_names = {aux.split(".")[0] for aux in _AUX_HEADS.get(family, ())}
    in_stem = True
    for path, unit in _units(model):
        if family in ("VGG", "AlexNet") and path == "features":
            groups.extend(_split_at_pools(path, unit))
            in_stem = False
            continue
        is_layer = isinstance(unit, nn.Parameter) or _is_leaf_layer(unit)
        holds_head = head_path is not None and (head_path == path or head_path.startswith(path + "."))
        if in_stem and (path in stem_names or (is_layer and not holds_head)):
            if not groups:
                groups.append(("stem", []))
            groups[-1][1].append((path, unit))
            continue
        in_stem = False
        if path in aux_names:
            groups.append(("__aux__", [(path, unit)]))
        elif groups and isinstance(unit, _NORMS) and not holds_head:
            groups[-1][1].append((path, unit))  # a lone norm joins the stage before it
        else:
            groups.append((path, [(path, unit)]))

    # Auxiliary heads move to the end, into the head's stage.
    aux = [m for name, members in groups if name == "__aux__" for m in members]
    groups = [g for g in groups if g[0] != "__aux__"]
    if aux and groups:
        groups[-1] = (groups[-1][0], groups[-1][1] + aux)

    result: "OrderedDict[str, nn.Module]" = OrderedDict()
    for name, members in groups:
        if len(members) == 1 and not isinstance(members[0][1], nn.Parameter):
            result[name] = members[0][1]
        else:
            result[name] = _StageGroup(members)
    return result
