"""N CIFAR ResNet-32s written as one grouped network, and the fused SGD step of N models.

Layout (architecture.md §6.2): activations are [B, N·C, H, W] where model n owns the channel
block n·C … (n+1)·C − 1. Every 3x3 convolution is one ``Conv2d(N·C_in, N·C_out, groups=N)``
whose weight is the N models' weights concatenated along the output channels, so model n's
outputs depend only on its own weights and inputs. ``BatchNorm2d(N·C)`` normalises every
channel over its own batch, which is exactly model n's batch statistics and running statistics.
The option-A shortcut subsamples and zero-pads channels within each model's block. The head is
a per-model batched matmul (``Linear`` or LDAM's ``NormedLinear``, kaidic/LDAM-DRW :
models/resnet_cifar.py), in fp32 as :class:`~ltbench.engine.models.CifarResNet`'s. This is what
``torch.func.vmap`` lowers a convolution to (pytorch/pytorch :
aten/src/ATen/functorch/BatchRulesConvolution.cpp folds the model axis into channels and
multiplies ``groups`` by N), written out so BN's running statistics need no patching.

The grouped network's ``state_dict`` has the keys of a single :class:`CifarResNet`; model n's
slice of every entry (:meth:`GroupedResNet.member_state_dict`) is that model's own tensor, so a
pack built from N independently initialised models starts from exactly their parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import CifarResNet, NormedLinear, global_average_pool

#: ``state_dict`` entries whose model axis is a leading dimension of size N (the heads);
#: every other entry concatenates the models along dimension 0.
_STACKED_PREFIX = "head."
_SHARED_SUFFIX = "num_batches_tracked"


class GroupedOptionAShortcut(nn.Module):
    """Option-A shortcut of N models at once: ``x[:, :, ::2, ::2]`` with ``planes // 4`` zero
    channels added on each side of every model's block (arXiv:1512.03385 option A), in the
    input's memory format (contiguous or channels-last)."""

    def __init__(self, planes: int, models: int):
        super().__init__()
        self.channel_pad = planes // 4
        self.models = models

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last):
            # Padded in the [B, H, W, N, C] layout, so the output is channels-last too: the
            # 5-d view below of a channels-last input would be padded into a contiguous one.
            blocks = x.permute(0, 2, 3, 1)[:, ::2, ::2].unflatten(3, (self.models, -1))
            padded = F.pad(blocks, (self.channel_pad, self.channel_pad))
            return padded.flatten(3).permute(0, 3, 1, 2)
        blocks = x[:, :, ::2, ::2].unflatten(1, (self.models, -1))  # [B, N, C, H, W]
        padded = F.pad(blocks, (0, 0, 0, 0, self.channel_pad, self.channel_pad))
        return padded.flatten(1, 2)


class GroupedBasicBlock(nn.Module):
    """:class:`~ltbench.engine.models.BasicBlock` of N models (same parameter names)."""

    def __init__(self, in_planes: int, planes: int, stride: int, models: int):
        super().__init__()
        n = models
        self.conv1 = nn.Conv2d(n * in_planes, n * planes, 3, stride=stride, padding=1,
                               bias=False, groups=n)
        self.bn1 = nn.BatchNorm2d(n * planes)
        self.conv2 = nn.Conv2d(n * planes, n * planes, 3, stride=1, padding=1, bias=False,
                               groups=n)
        self.bn2 = nn.BatchNorm2d(n * planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut = GroupedOptionAShortcut(planes, n) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class GroupedLinear(nn.Module):
    """N linear heads: ``logits[n] = features[n] @ weight[n].T + bias[n]``."""

    def __init__(self, models: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(models, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(models, out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), features, self.weight.transpose(1, 2))


class GroupedNormedLinear(nn.Module):
    """N cosine heads (:class:`~ltbench.engine.models.NormedLinear`), weight [N, in, out]."""

    def __init__(self, models: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(models, in_features, out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=2).bmm(F.normalize(self.weight, dim=1))


class GroupedResNet(nn.Module):
    """N CIFAR ResNets as one network: input [B, N·3, H, W] (model n's batch in channels
    3n … 3n+2), output logits [N, B, classes] in fp32."""

    def __init__(self, models: int, blocks_per_stage: int, num_classes: int, head: str):
        super().__init__()
        n = models
        self.models = n
        self.conv1 = nn.Conv2d(n * 3, n * 16, 3, stride=1, padding=1, bias=False, groups=n)
        self.bn1 = nn.BatchNorm2d(n * 16)
        stages = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for block_stride in [stride] + [1] * (blocks_per_stage - 1):
                blocks.append(GroupedBasicBlock(in_planes, planes, block_stride, n))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.head = (GroupedLinear(n, 64, num_classes) if head == "linear"
                     else GroupedNormedLinear(n, 64, num_classes))

    @classmethod
    def from_models(cls, models: Sequence[CifarResNet]) -> GroupedResNet:
        """The grouped network of ``models`` (same depth, classes and head kind), on their
        device and in their dtype, holding copies of their parameters and BN buffers."""
        first = models[0]
        head = "cosine" if isinstance(first.head, NormedLinear) else "linear"
        num_classes = first.head.weight.shape[1 if head == "cosine" else 0]
        like = first.conv1.weight
        with torch.device("meta"):
            grouped = cls(len(models), len(first.layer1), num_classes, head)
        grouped = grouped.to_empty(device=like.device).to(like.dtype)
        states = [model.state_dict() for model in models]
        stacked = {}
        for key in states[0]:
            if key.endswith(_SHARED_SUFFIX):
                stacked[key] = states[0][key].clone()
            elif key.startswith(_STACKED_PREFIX):
                stacked[key] = torch.stack([state[key] for state in states])
            else:
                stacked[key] = torch.cat([state[key] for state in states])
        grouped.load_state_dict(stacked)
        return grouped

    def member_state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Model ``member``'s parameters and buffers under :class:`CifarResNet`'s keys (views)."""
        return {key: value if key.endswith(_SHARED_SUFFIX)
                else member_view(key, value, self.models)[member]
                for key, value in self.state_dict().items()}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [N, B, 64]."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return global_average_pool(out).unflatten(1, (self.models, -1)).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.head(features.to(self.head.weight.dtype))


def member_view(name: str, tensor: torch.Tensor, models: int) -> torch.Tensor:
    """The grouped network's entry ``name`` (or its gradient) with the model axis as
    dimension 0, as a view in any memory format: [N·C, ...] → [N, C, ...]; the heads are
    [N, ...] already."""
    return tensor if name.startswith(_STACKED_PREFIX) else tensor.unflatten(0, (models, -1))


class PackSGD:
    """SGD of N models over the grouped network's stacked parameters, with per-model learning
    rate, momentum and weight decay (``torch.optim.SGD``'s update, dampening 0).

    Per parameter: ``g = grad + wd · p``; momentum buffer ``b = g`` on the first step, then
    ``b = momentum · b + g``; the direction is ``b`` or, with Nesterov, ``g + momentum · b``;
    ``p -= lr · direction`` (pytorch/pytorch : torch/optim/sgd.py, ``_single_tensor_sgd``).

    Every update is a multi-tensor ``torch._foreach_*`` call over all parameters, and every
    tensor list it takes matches the first one index by index in shape, strides, dtype and
    device (dense, non-overlapping): the condition for CUDA's fused multi-tensor kernels
    (aten/src/ATen/native/ForeachUtils.h, ``check_fast_path_restrictions``); one broadcast
    operand sends the whole call down the one-kernel-per-tensor path. So each per-model value
    is a :class:`_PerModel` tensor laid out as the parameter, not an [N, 1, …] view, and a
    learning-rate change refills it in place (no re-capture of a CUDA graph).
    """

    def __init__(self, model: GroupedResNet, lr: Sequence[float], momentum: Sequence[float],
                 weight_decay: Sequence[float], nesterov: bool):
        named = list(model.named_parameters())
        self.params = [param for _, param in named]
        self._names = [name for name, _ in named]
        self.models = model.models
        self.nesterov = nesterov
        self._views = [member_view(name, p, self.models) for name, p in named]
        self._lr = _PerModel(self._views, lr)
        self._momentum = _PerModel(self._views, momentum)
        self._weight_decay = _PerModel(self._views, weight_decay)
        self._buffers: list[torch.Tensor] | None = None

    def set_learning_rates(self, lr: Sequence[float]) -> None:
        self._lr.fill(lr)

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        """The momentum buffers (none before the first step), for resume checkpoints."""
        return {"momentum_buffers": list(self._buffers or [])}

    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        # Laid out as the parameters whatever layout they were saved in (a CPU checkpoint
        # resumed on CUDA is contiguous, the parameters channels-last): the fused kernels'
        # condition.
        buffers = state["momentum_buffers"]
        self._buffers = [torch.empty_like(view).copy_(buffer)
                         for buffer, view in zip(buffers, self._views)] if buffers else None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = [member_view(name, p.grad, self.models)
                 for name, p in zip(self._names, self.params)]
        directions = torch._foreach_addcmul(grads, self._views, self._weight_decay.tensors)
        if self._buffers is None:
            self._buffers = directions  # new tensors, which torch.optim.SGD gets by a clone
        else:
            torch._foreach_mul_(self._buffers, self._momentum.tensors)
            torch._foreach_add_(self._buffers, directions)
        if self.nesterov:
            directions = torch._foreach_addcmul(directions, self._buffers,
                                                self._momentum.tensors)
        else:
            directions = self._buffers
        torch._foreach_addcmul_(self._views, directions, self._lr.tensors, value=-1)


class _PerModel:
    """One value per model, laid out as every parameter: ``tensors[i]`` has the shape and
    strides of parameter view i ([N, …]) and holds ``values[n]`` throughout slice n.
    Parameters of one layout share a tensor, so the memory is that of the distinct layouts
    (for ResNet-32, 11 layouts holding 16 % as many numbers as the parameters)."""

    def __init__(self, views: Sequence[torch.Tensor], values: Sequence[float]):
        by_layout: dict[tuple[torch.Size, tuple[int, ...]], torch.Tensor] = {}
        for view in views:
            layout = (view.shape, view.stride())
            if layout not in by_layout:
                by_layout[layout] = torch.empty_like(view)  # same strides: view is dense
        self.tensors = [by_layout[(view.shape, view.stride())] for view in views]
        self._distinct = list(by_layout.values())
        self.fill(values)

    def fill(self, values: Sequence[float]) -> None:
        """Set model n's value to ``values[n]``, in place."""
        like = self._distinct[0]
        per_model = torch.tensor(list(values), dtype=like.dtype).to(like.device)
        for tensor in self._distinct:
            tensor.copy_(per_model.view((-1,) + (1,) * (tensor.dim() - 1)))
