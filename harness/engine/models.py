"""Backbones: the CIFAR ResNet-32 of kaidic/LDAM-DRW : models/resnet_cifar.py (Idelbayev).

Architecture (He et al., arXiv:1512.03385, Sec. 4.2; protocols.md §2.1): 3x3 conv 3→16 without
bias, BN, ReLU; three stages of five BasicBlocks (16/32/64 channels, strides 1/2/2) whose
shortcut is option A (subsample by 2 and zero-pad ``planes // 4`` channels on each side,
parameter-free) where the shape changes; global average pooling to a 64-d feature; head
``Linear(64, C)`` or LDAM's ``NormedLinear(64, C)`` (cosine similarity, no bias).
464,154 parameters for 10 classes with the linear head (the reference's "0.46M").

Initialisation as the reference: Kaiming-normal (fan_in, gain sqrt(2)) for every Conv2d and
Linear weight, PyTorch's default uniform(±1/sqrt(fan_in)) for the Linear bias, BN weight 1 and
bias 0, NormedLinear weight uniform(-1, 1) with columns renormalised. Every random draw comes
from the ``torch.Generator`` given to :func:`build_backbone`; modules are constructed on the
meta device first so that their default initialisers never touch the global RNG.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS = ("linear", "cosine")


def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] → [B, C] mean over the spatial positions, accumulated and returned in
    fp32: under bf16 autocast the activations are bf16 and ``mean`` has no autocast rule, so a
    plain mean would hand the fp32 head bf16-rounded features."""
    return x.mean(dim=(2, 3), dtype=torch.float32)


class NormedLinear(nn.Module):
    """Cosine classifier: ``normalize(x, dim=1) @ normalize(W, dim=0)`` with ``W`` [in, out].

    kaidic/LDAM-DRW : models/resnet_cifar.py (``NormedLinear``); outputs lie in [-1, 1], the
    LDAM loss applies its scale s = 30 itself.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))

    def reset_parameters(self, generator: torch.Generator) -> None:
        # The reference's renorm_(2, 1, 1e-5).mul_(1e5) rescales every column to norm <= 1.
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0, generator=generator).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1).mm(F.normalize(self.weight, dim=0))


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: ``x[:, :, ::2, ::2]`` zero-padded by ``planes // 4`` channels
    on each side (option A of arXiv:1512.03385; kaidic/LDAM-DRW : models/resnet_cifar.py)."""

    def __init__(self, planes: int):
        super().__init__()
        self.channel_pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.channel_pad, self.channel_pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a ReLU between and after the residual sum."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut = OptionAShortcut(planes) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Idelbayev's CIFAR ResNet: ``features(x)`` is the pooled 64-d vector, ``forward`` the
    logits. The head always runs outside autocast, in its weights' dtype (fp32 in training; fp64
    for the tests' oracle), because LDAM's scaled cosine logits and additive log-prior offsets
    are precision-sensitive (architecture.md §6.3)."""

    def __init__(self, blocks_per_stage: int, num_classes: int, head: str):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for block_stride in [stride] + [1] * (blocks_per_stage - 1):
                blocks.append(BasicBlock(in_planes, planes, block_stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.head = nn.Linear(64, num_classes) if head == "linear" else NormedLinear(64, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return global_average_pool(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.head(features.to(self.head.weight.dtype))


def initialise(model: nn.Module, generator: torch.Generator) -> None:
    """(Re)initialise every parameter and BN buffer of ``model`` as the reference, drawing
    only from ``generator`` (see the module docstring)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, generator=generator)
                if module.bias is not None:
                    bound = 1.0 / math.sqrt(module.weight.shape[1])
                    module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, NormedLinear):
                module.reset_parameters(generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()


#: The CIFAR ResNets (He et al., CVPR 2016, arXiv:1512.03385, Sec. 4.2: 6n + 2 layers) → n,
#: the BasicBlocks per stage: ResNet-32, the protocols' backbone, and ResNet-8 (n = 1, about a
#: sixth of its training FLOPs), which no published protocol uses: for demos and quick trials.
CIFAR_RESNETS = {"resnet32": 5, "resnet8": 1}


def backbone_names() -> tuple[str, ...]:
    """Every backbone :func:`build_backbone` builds: the CIFAR ResNets of
    :data:`CIFAR_RESNETS` and the ImageNet-scale ones of :mod:`ltbench.engine.imagenet_models`."""
    from .imagenet_models import BACKBONES

    return (*CIFAR_RESNETS, *BACKBONES)


def build_backbone(name: str, num_classes: int, head: str,
                   generator: torch.Generator, pretrained: str = "none") -> nn.Module:
    """A freshly initialised backbone on the CPU (move it to a device afterwards).

    ``name``: a CIFAR ResNet (:data:`CIFAR_RESNETS`) or one of the ImageNet-scale backbones of
    :mod:`ltbench.engine.imagenet_models` (which also take ``pretrained``); ``head``:
    ``"linear"`` or ``"cosine"`` (NormedLinear). Raises ``ValueError`` for anything else.
    """
    from .imagenet_models import BACKBONES, build_torchvision_backbone

    if name not in backbone_names():
        raise ValueError(f"unknown backbone {name!r}; known: "
                         f"{', '.join(map(repr, backbone_names()))}")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; known: {', '.join(map(repr, HEADS))}")
    if name in BACKBONES:
        return build_torchvision_backbone(name, num_classes, head, generator, pretrained)
    if pretrained != "none":
        raise ValueError(f"backbone {name!r} has no pretrained weights")
    with torch.device("meta"):
        model = CifarResNet(CIFAR_RESNETS[name], num_classes, head)
    model = model.to_empty(device="cpu")
    initialise(model, generator)
    return model
