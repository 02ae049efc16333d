"""One training step and one evaluation of the models of a pack, the same interface for one model
(:class:`SingleModelStep`, the plain network) and for N models (:class:`GroupedStep`, the grouped
network of :mod:`ltbench.engine.grouped`); the epoch loop (:mod:`ltbench.engine.train`) drives
either.

Both take the batches of the N runs stacked run-major, ``inputs`` [N·B, 3, H, W] and
``targets`` [N, B], and return device tensors only (no host synchronisation):
``(loss_sums [N] float64, correct [N] int64, scored)`` where ``loss_sums[n]`` is run n's batch
loss times the number of examples it scored, ``correct[n]`` its top-1 hits on them and
``scored[n]`` that number (a Python int).

:class:`Numerics` says how a step computes: its precision (``auto``: bf16 autocast on CUDA and
on CPUs that compute bf16 natively — AMX-BF16 or AVX512-BF16 —, fp32 elsewhere; the head and the
loss always in fp32, architecture.md §6.3), its memory format (channels-last wherever the network
runs in bf16 or on CUDA: measured faster on both) and optionally ``torch.compile`` of the network
(``compile_mode``, e.g. ``"max-autotune-no-cudagraphs"``, or ``"reduce-overhead"`` for
CUDA-graph replay; one graph per batch shape: the full batch and the epoch's last partial
batch). fp32 means IEEE fp32 on CUDA too: TF32 is switched off for cuDNN convolutions and cuBLAS
matmuls (:func:`use_ieee_fp32`), since torch's default lets cuDNN use TF32 on Ampere and later.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, ContextManager, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..api import Method, StepContext
from ..metrics.calibration import BINS
from .augment import DeviceImages
from .grouped import GroupedResNet, PackSGD

EVAL_BATCH_SIZE = 1000
#: Model-images per grouped evaluation forward (8 models at EVAL_BATCH_SIZE).
GROUPED_EVAL_IMAGES = 8000

Precision = Callable[[], ContextManager[Any]]

#: ``--precision`` values: ``auto`` resolves per device (:meth:`Numerics.for_device`).
PRECISIONS = ("auto", "bf16", "fp32")
#: ``torch.compile`` modes a run may use (``ltbench run --compile``); None: eager.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (the ``amx_bf16`` or ``avx512_bf16``
    flags of Linux's /proc/cpuinfo), where bf16 autocast pays: measured on a 2-core AMX Xeon,
    ResNet-32 training runs at 666 img/s in bf16 against 386 in fp32 (784 / 466 channels-last).
    False where the flags cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line.split(":", 1)[1].split() for line in info
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_ieee_fp32() -> None:
    """Make fp32 convolutions and matmuls on CUDA true IEEE fp32 (no TF32), process-wide.

    torch ≥ 2.9 has per-backend ``fp32_precision`` settings (and reading the legacy
    ``allow_tf32`` flags after setting them raises); older releases only the legacy flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def use_deterministic_algorithms() -> None:
    """Deterministic cuDNN/cuBLAS kernels, process-wide, for checks that need bit-exact CUDA
    runs (e.g. resume): no cuDNN autotuning (``benchmark`` picks kernels by timing, so two
    processes may pick different ones), deterministic algorithms where torch has them (a
    warning where it has none), and cuBLAS's fixed workspace (effective when set before the
    first cuBLAS call)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass(frozen=True)
class Numerics:
    """Precision, memory format and compilation of a step (see the module docstring).

    ``deterministic``: deterministic kernels (:func:`use_deterministic_algorithms`) instead of
    cuDNN's autotuned ones; CUDA runs are otherwise not bit-exact across processes (e.g.
    across a resume), CPU runs always are for a given thread count."""

    device_type: str
    bf16: bool
    channels_last: bool
    compile_mode: str | None = None
    deterministic: bool = False

    @classmethod
    def for_device(cls, device: torch.device, precision: str = "auto",
                   deterministic: bool = False, compile_mode: str | None = None) -> Numerics:
        """The numerics of ``precision`` (:data:`PRECISIONS`) on ``device``, compiled with
        ``compile_mode`` (:data:`COMPILE_MODES`) when given."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {precision!r}")
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, "
                             f"got {compile_mode!r}")
        on_cuda = device.type == "cuda"
        bf16 = (on_cuda or cpu_has_native_bf16()) if precision == "auto" else precision == "bf16"
        return cls(device.type, bf16=bf16, channels_last=on_cuda or bf16,
                   compile_mode=compile_mode, deterministic=deterministic)

    @property
    def precision_name(self) -> str:
        """``"bf16"`` (autocast forward, fp32 head and loss) or ``"fp32"``, as recorded."""
        return "bf16" if self.bf16 else "fp32"

    @property
    def memory_format_name(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    def precision(self) -> Precision:
        """A factory of the forward pass's precision context."""
        if self.bf16:
            return partial(torch.autocast, device_type=self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def begin_step(self) -> None:
        """Mark a new iteration for CUDA-graph replay (``reduce-overhead``), so buffers the
        previous replay returned may be reused (torch.compiler.cudagraph_mark_step_begin)."""
        if self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    def apply_backend_flags(self) -> None:
        """The process-wide CUDA settings these numerics need: IEEE fp32 always (ltbench
        never uses TF32), and cuDNN autotuning (static shapes: two batch shapes per run) or
        deterministic kernels. Nothing on CPU."""
        if self.device_type != "cuda":
            return
        use_ieee_fp32()
        if self.deterministic:
            use_deterministic_algorithms()
        else:
            torch.backends.cudnn.benchmark = True

    def prepare(self, model: nn.Module, device: torch.device) -> tuple[nn.Module, nn.Module]:
        """``model`` moved to ``device`` in the memory format, and the callable to run it
        (the compiled module when ``compile_mode`` is set, else the model itself)."""
        model = model.to(device, memory_format=self.memory_format)
        self.apply_backend_flags()
        if self.compile_mode is None:
            return model, model
        return model, torch.compile(model, mode=self.compile_mode, dynamic=False)


@dataclass(frozen=True)
class Evaluation:
    """One test pass of every model of a step: per-class correct top-1 counts, int64 [N, C],
    and per confidence bin the example count, confidence sum and correct count, float64
    [N, BINS, 3] (:mod:`ltbench.metrics.calibration`)."""

    correct: np.ndarray
    calibration: np.ndarray


def _add_calibration(bins: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Add the predictions ``logits`` [N, n, C] of labels ``targets`` [n] to ``bins`` [N,
    BINS, 3] (:class:`Evaluation`), on the device."""
    confidence, predicted = logits.float().softmax(dim=-1).max(dim=-1)  # [N, n]
    index = (confidence * BINS).ceil().long().clamp(1, BINS) - 1  # bin b holds ((b-1)/B, b/B]
    index = index + torch.arange(len(bins), device=index.device)[:, None] * BINS
    stats = torch.stack((torch.ones_like(confidence), confidence,
                         (predicted == targets).float()), dim=-1)
    bins.view(-1, 3).index_add_(0, index.reshape(-1), stats.reshape(-1, 3).to(bins.dtype))


def build_optimizer(model: nn.Module, hparams: Mapping[str, Any]) -> torch.optim.SGD:
    """SGD over all parameters, weight decay included on BN and biases as the reference.

    ``backbone_lr_factor`` (where the protocol has one, else 1) puts every parameter outside
    ``model.head`` in a group whose ``lr_factor`` scales the epoch's learning rate: LADE's
    Places-LT fine-tuning trains the backbone at 0.001 and the classifier at 0.1
    (hyperconnect/LADE : config/Places_LT/ce.yaml)."""
    factor = float(hparams.get("backbone_lr_factor", 1.0))
    params: Any = model.parameters()
    if factor != 1.0:
        head = {id(p) for p in model.head.parameters()}
        params = [{"params": [p for p in model.parameters() if id(p) not in head],
                   "lr_factor": factor},
                  {"params": list(model.head.parameters()), "lr_factor": 1.0}]
    return torch.optim.SGD(params, lr=float(hparams["lr"]),
                           momentum=float(hparams["momentum"]),
                           weight_decay=float(hparams["weight_decay"]),
                           nesterov=bool(hparams["nesterov"]))


class SingleModelStep:
    """One run on the plain network with ``torch.optim.SGD`` and the method's own
    :meth:`Method.training_loss`, so every method (meta-learning ones included) trains here."""

    def __init__(self, model: nn.Module, method: Method, hparams: Mapping[str, Any],
                 device: torch.device, numerics: Numerics):
        self.model, forward = numerics.prepare(model, device)
        # A method with its own training_loss may address the parameters by name
        # (functional_call), which a compiled wrapper renames: it gets the plain model.
        self._forward = forward if type(method).groupable() else self.model
        self.method = method
        self.optimizer = build_optimizer(self.model, hparams)
        self.numerics = numerics

    def set_learning_rates(self, lr: Sequence[float]) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr[0] * group.get("lr_factor", 1.0)

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, epoch: int,
                   contexts: Sequence[StepContext]
                   ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        self.model.train()
        # Released before the forward, as in GroupedStep: a CUDA-graphed forward never runs
        # while the previous step's gradient buffers are referenced. No number changes: no
        # method's training_loss reads or writes the model's .grad (torch.autograd.grad).
        self.optimizer.zero_grad(set_to_none=True)
        self.numerics.begin_step()
        loss, logits, scored = self.method.training_loss(self._forward, inputs, targets[0],
                                                         epoch, contexts[0])
        loss.backward()
        self.optimizer.step()
        loss_sum = loss.detach().double().reshape(1) * scored.shape[0]
        correct = (logits.detach().argmax(dim=1) == scored).sum().reshape(1)
        return loss_sum, correct, [scored.shape[0]]

    def evaluate(self, images: DeviceImages, num_classes: int) -> Evaluation:
        """The :class:`Evaluation` of the model ([1, ...]), in eval mode."""
        self.model.eval()
        device = images.labels.device
        correct = torch.zeros(num_classes, dtype=torch.int64, device=device)
        bins = torch.zeros(1, BINS, 3, dtype=torch.float64, device=device)
        precision = self.numerics.precision()
        with torch.inference_mode():
            for inputs, targets in images.eval_batches(EVAL_BATCH_SIZE):
                self.numerics.begin_step()
                with precision():
                    logits = self._forward(inputs)
                correct.index_add_(0, targets, (logits.argmax(dim=1) == targets).long())
                _add_calibration(bins, logits[None], targets)
        return Evaluation(correct.cpu().numpy()[None], bins.cpu().numpy())

    def trained_models(self) -> list[nn.Module]:
        """The run's model, as trained."""
        return [self.model]


def grouped_input(per_run: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """Per-run images [N, B, 3, H, W] (any strides, e.g. one batch expanded N times) → the
    grouped network's input [B, N·3, H, W] in ``memory_format``, with one copy."""
    if memory_format == torch.channels_last:  # [B, H, W, N·3] in memory
        return per_run.permute(1, 3, 4, 0, 2).flatten(3).permute(0, 3, 1, 2)
    return per_run.transpose(0, 1).flatten(1, 2)


class GroupedStep:
    """N runs on one grouped network (:class:`GroupedResNet`) with :class:`PackSGD`: one
    forward gives every run's logits, each run's own :meth:`Method.loss` scores them, and the
    backward of the sum of the losses gives every model exactly its own gradient.

    Only methods for which :meth:`ltbench.api.Method.groupable` holds can be grouped.
    :meth:`set_active` masks runs that have stopped (diverged): their loss leaves the sum and
    the caller sets their learning rate to zero, so their parameters stay as they were.
    """

    def __init__(self, models: Sequence[nn.Module], methods: Sequence[Method],
                 hparams: Sequence[Mapping[str, Any]], device: torch.device,
                 numerics: Numerics):
        blocked = [type(m).__name__ for m in methods if not type(m).groupable()]
        if blocked:
            raise ValueError(f"methods with their own training_loss train alone: {blocked}")
        if len({bool(h["nesterov"]) for h in hparams}) != 1:
            raise ValueError("the runs of a pack must agree on Nesterov momentum")
        grouped = GroupedResNet.from_models(models)
        self._members = list(models)
        self.model, self._forward = numerics.prepare(grouped, device)
        self.methods = list(methods)
        self.numerics = numerics
        self._active = torch.ones(len(methods), dtype=torch.bool, device=device)
        self.optimizer = PackSGD(self.model, [float(h["lr"]) for h in hparams],
                                 [float(h["momentum"]) for h in hparams],
                                 [float(h["weight_decay"]) for h in hparams],
                                 bool(hparams[0]["nesterov"]))

    def set_learning_rates(self, lr: Sequence[float]) -> None:
        self.optimizer.set_learning_rates(lr)

    def trained_models(self) -> list[nn.Module]:
        """Every run's own plain network holding its trained parameters and BN statistics
        (the models the pack was built from, updated in place)."""
        device = next(self.model.parameters()).device
        for member, model in enumerate(self._members):
            model.to(device).load_state_dict(self.model.member_state_dict(member))
        return self._members

    def set_active(self, active: Sequence[bool]) -> None:
        self._active.copy_(torch.tensor(list(active), dtype=torch.bool))

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, epoch: int,
                   contexts: Sequence[StepContext]
                   ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        self.model.train()
        models = len(self.methods)
        # Gradients are released before the forward, so a CUDA-graphed forward never runs
        # while the previous step's gradient buffers are still referenced.
        self.optimizer.zero_grad()
        self.numerics.begin_step()
        x = grouped_input(inputs.unflatten(0, (models, -1)), self.numerics.memory_format)
        with self.numerics.precision()():
            logits = self._forward(x)  # fp32 [N, B, C]: the head runs outside autocast
        losses = torch.stack([method.loss(logits[n], targets[n], epoch)
                              for n, method in enumerate(self.methods)])
        torch.where(self._active, losses, 0.0).sum().backward()
        self.optimizer.step()
        batch = targets.shape[1]
        correct = (logits.detach().argmax(dim=2) == targets).sum(dim=1)
        return losses.detach().double() * batch, correct, [batch] * models

    def evaluate(self, images: DeviceImages, num_classes: int) -> Evaluation:
        """The :class:`Evaluation` of every model: one grouped forward per test chunk (every
        model sees the same chunk); chunks hold about ``GROUPED_EVAL_IMAGES`` model-images,
        which bounds the activation memory."""
        self.model.eval()
        models = len(self.methods)
        device = images.labels.device
        correct = torch.zeros(models, num_classes, dtype=torch.int64, device=device)
        bins = torch.zeros(models, BINS, 3, dtype=torch.float64, device=device)
        precision = self.numerics.precision()
        chunk = max(1, min(EVAL_BATCH_SIZE, GROUPED_EVAL_IMAGES // models))
        with torch.inference_mode():
            for inputs, targets in images.eval_batches(chunk):
                x = grouped_input(inputs.expand(models, *inputs.shape),
                                  self.numerics.memory_format)
                self.numerics.begin_step()
                with precision():
                    logits = self._forward(x)
                hits = (logits.argmax(dim=2) == targets).long()
                correct.index_add_(1, targets, hits)
                _add_calibration(bins, logits, targets)
        return Evaluation(correct.cpu().numpy(), bins.cpu().numpy())
