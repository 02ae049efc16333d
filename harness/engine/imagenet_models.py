"""The ImageNet-scale backbones: torchvision ResNets behind ltbench's head (protocols.md §2.2–2.4).

* ``resnet10``: the OLTR / Decoupling ResNet-10 (Liu et al., CVPR 2019, arXiv:1904.05160;
  ``facebookresearch/classifier-balancing : models/ResNet10Feature.py``: BasicBlock, one block
  per stage, 512-d feature), built here from torchvision's ``ResNet(BasicBlock, [1, 1, 1, 1])``;
* ``resnet50``, ``resnext50_32x4d``, ``resnet152``: torchvision's (He et al., arXiv:1512.03385;
  Xie et al., arXiv:1611.05431), 2048-d features.

The torchvision classifier ``fc`` is replaced by the method's head (``Linear`` or LDAM's
``NormedLinear``), run in fp32 like the CIFAR ResNet's. Random initialisation follows
``pytorch/vision : torchvision/models/resnet.py``: Kaiming-normal (fan_out, ReLU gain) for every
convolution, BN weight 1 and bias 0; the linear head gets PyTorch's default
``U(±1/sqrt(fan_in))`` for weight and bias. Every draw comes from the given generator (modules
are built on the meta device first, so their own initialisers never touch the global RNG).

``pretrained`` (``--set pretrained=...``): ``"none"``, ``"imagenet"`` for torchvision's
ImageNet-1k weights (``IMAGENET1K_V1``: the model-zoo weights Decoupling fine-tunes for
Places-LT, protocols.md §2.3), or the path of a saved ``state_dict`` of the torchvision model;
the head is always freshly initialised. Weights that cannot be downloaded or read are
:class:`~ltbench.errors.BadInput` (:func:`pretrained_state`, which the datasets call before any
run starts).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import BadInput
from .models import NormedLinear, global_average_pool

#: Backbone name → (torchvision builder name, or None for ResNet-10; feature width).
BACKBONES = {
    "resnet10": (None, 512),
    "resnet50": ("resnet50", 2048),
    "resnext50_32x4d": ("resnext50_32x4d", 2048),
    "resnet152": ("resnet152", 2048),
}


class FP32GlobalPool(nn.Module):
    """torchvision's ``AdaptiveAvgPool2d(1)`` as :func:`global_average_pool`: fp32 output
    under autocast (keeps the [B, C, 1, 1] shape the trunk flattens)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_average_pool(x)[:, :, None, None]


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet trunk (``fc`` removed, pooling in fp32) and ltbench's head:
    ``features(x)`` is the pooled feature vector, ``forward`` the logits, the head in fp32
    (architecture.md §6.3)."""

    def __init__(self, trunk: nn.Module, feature_dim: int, num_classes: int, head: str):
        super().__init__()
        trunk.fc = nn.Identity()
        trunk.avgpool = FP32GlobalPool()
        self.trunk = trunk
        self.head = (nn.Linear(feature_dim, num_classes) if head == "linear"
                     else NormedLinear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.head(features.float())


def _trunk(name: str) -> nn.Module:
    import torchvision.models as models
    from torchvision.models.resnet import BasicBlock, ResNet

    builder, _ = BACKBONES[name]
    return ResNet(BasicBlock, [1, 1, 1, 1]) if builder is None else getattr(models, builder)()


def _initialise(model: TorchvisionResNet, generator: torch.Generator) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu",
                                        generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.weight.shape[1])
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, NormedLinear):
                module.reset_parameters(generator)


@functools.cache
def pretrained_state(name: str, pretrained: str) -> dict[str, torch.Tensor]:
    """The trunk weights ``pretrained`` names for backbone ``name`` (module docstring), read
    once per process, checked to fit the trunk; :class:`BadInput` when they cannot be had."""
    if name not in BACKBONES or BACKBONES[name][0] is None:
        raise BadInput(f"--set pretrained: no pretrained weights for backbone '{name}' "
                       f"(available for: resnet50, resnext50_32x4d, resnet152)")
    if pretrained == "imagenet":
        import torchvision.models as models

        weights = models.get_model_weights(BACKBONES[name][0])["IMAGENET1K_V1"]
        try:
            return weights.get_state_dict(progress=False)
        except Exception as exc:  # network, proxy and hub-cache errors all mean: no weights
            raise BadInput(f"cannot download torchvision's ImageNet weights for {name} "
                           f"({weights.url}: {type(exc).__name__}: {exc}); download the file "
                           f"yourself and pass --set pretrained=PATH") from None
    path = Path(pretrained).expanduser()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(state, dict)
                and all(isinstance(value, torch.Tensor) for value in state.values())):
            raise TypeError(f"it holds a {type(state).__name__}, not a dict of tensors")
    except Exception as exc:  # not a file, not a torch file, a damaged one: all the same here
        raise BadInput(f"--set pretrained={pretrained}: cannot read a state_dict from {path} "
                       f"({type(exc).__name__}); expected 'imagenet' or the path of a saved "
                       f"torchvision {name} state_dict") from None
    trunk_state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    _check_fits(name, pretrained, trunk_state)
    return trunk_state


def _check_fits(name: str, pretrained: str, state: dict[str, torch.Tensor]) -> None:
    """:class:`BadInput` unless ``state`` has exactly the tensor names and shapes of backbone
    ``name``'s trunk (compared on the meta device: nothing is allocated)."""
    with torch.device("meta"):
        trunk = _trunk(name)
    expected = {key: tuple(value.shape) for key, value in trunk.state_dict().items()
                if not key.startswith("fc.")}
    problems = [f"missing {key}" for key in sorted(expected.keys() - state.keys())]
    problems += [f"unexpected {key}" for key in sorted(state.keys() - expected.keys())]
    problems += [f"{key} has shape {list(state[key].shape)}, not {list(expected[key])}"
                 for key in sorted(expected.keys() & state.keys())
                 if tuple(state[key].shape) != expected[key]]
    if problems:
        raise BadInput(f"--set pretrained={pretrained}: the weights do not fit {name} "
                       f"({len(problems)} problems, e.g. {'; '.join(problems[:2])})")


def build_torchvision_backbone(name: str, num_classes: int, head: str,
                               generator: torch.Generator, pretrained: str = "none") -> nn.Module:
    """A freshly initialised :class:`TorchvisionResNet` on the CPU, its trunk loaded with
    ``pretrained`` weights when given."""
    with torch.device("meta"):
        model = TorchvisionResNet(_trunk(name), BACKBONES[name][1], num_classes, head)
    model = model.to_empty(device="cpu")
    _initialise(model, generator)
    if pretrained != "none":
        model.trunk.load_state_dict(pretrained_state(name, pretrained))
    return model
