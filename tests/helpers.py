"""Small shared helpers for the test suite (imported by test modules)."""
from __future__ import annotations

import torch
import torchvision

# One builder per torchvision classification family, with an input size it accepts.
FAMILIES = {
    "resnet18": 64,
    "resnext50_32x4d": 64,
    "wide_resnet50_2": 64,
    "regnet_x_400mf": 64,
    "vgg11_bn": 64,
    "alexnet": 64,
    "efficientnet_b0": 64,
    "mobilenet_v2": 64,
    "mobilenet_v3_small": 64,
    "convnext_tiny": 64,
    "densenet121": 64,
    "mnasnet0_5": 64,
    "maxvit_t": 224,
    "vit_b_16": 32,
    "swin_t": 64,
    "squeezenet1_1": 64,
    "googlenet": 64,
    "inception_v3": 299,
    "shufflenet_v2_x0_5": 64,
}


def build(name: str, *, meta: bool = False, **kwargs) -> torch.nn.Module:
    """A torchvision classification model with random weights (no download).

    ``meta=True`` builds it on PyTorch's meta device: the same modules, names and shapes with
    no storage and no initialisation (a VGG-11 in milliseconds instead of seconds), for tests
    that read only the model's structure. Builders that compute with tensors while they build
    (RegNet) get a normal build.
    """
    if meta:
        try:
            with torch.device("meta"):
                return build(name, **kwargs)
        except NotImplementedError:  # a builder that computes with tensors (RegNet's widths) needs real ones
            pass
    if name == "vit_b_16":
        kwargs.setdefault("image_size", FAMILIES[name])  # same layers, a 2x2 patch grid: fast on CPU
    if name in ("googlenet", "inception_v3"):
        kwargs.setdefault("aux_logits", True)
        kwargs.setdefault("init_weights", False)
    return torchvision.models.get_model(name, weights=None, **kwargs)


def logits(output):
    """GoogLeNet and Inception return a named tuple in training mode."""
    return output.logits if hasattr(output, "logits") else output
