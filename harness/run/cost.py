"""What a plan costs before it trains: its training steps, priced by a short calibration.

The calibration times real training steps on the device the plan would use, with the numerics
``ltbench run`` picks there (:meth:`~ltbench.engine.steps.Numerics.for_device`): the method's
loss, backward and SGD step of the run's backbone at the run's batch size, on random inputs of
the run's image size, timed per distinct cost (a few steps, their median) after an untimed
step per network:

* a plain loss (a :meth:`~ltbench.api.Method.groupable` method) costs what a ``ce`` step of
  the same backbone, batch and image size costs: timed once for all of them;
* any other method (meta-learning look-aheads, meta-set batches) is timed in the first and
  the last stage of its schedule (the stages begin at epoch 0 and at each epoch-valued
  hyper-parameter) and, where those differ, bisected for the stage where its cost changes
  (e.g. the start of meta-learning); each stage is priced at its rate;
* a two-stage method's own run trains only its classifier on the frozen stage-1 backbone,
  priced as a third of a ``ce`` step (one forward of the backbone instead of forward and
  backward); its stage-1 run is a run of the plan like any other.

Evaluations, data loading, the first step's compilation and the store's writes are not priced,
so the estimate is a lower bound of the wall time; a pool of workers divides it.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

from .. import registry
from ..spec import RunSpec


@dataclass(frozen=True)
class PlanCost:
    """The estimate of a plan: device seconds of its training steps, and what was measured."""

    runs: int
    seconds: float
    calibration_s: float
    timings: int
    device: str

    def describe(self) -> str:
        """One line: e.g. ``estimated cost: 12 runs, about 2.1 min of training steps on cpu
        (calibrated here in 3.2 s from 8 timings; evaluation and data loading add to
        it)``."""
        runs = f"{self.runs} run{'s' if self.runs != 1 else ''}"
        return (f"estimated cost: {runs}, about {format_duration(self.seconds)} of "
                f"training steps on {self.device} (calibrated here in "
                f"{self.calibration_s:.1f} s from {self.timings} timings; evaluation "
                f"and data loading add to it)")


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"2.1 min"``, ``"3.4 h"``, ``"2.5 days"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _stage_starts(hparams: dict[str, Any], epochs: int) -> list[int]:
    """Epoch 0 and every epoch-valued hyper-parameter inside the run (the integers of the
    ``*epoch*`` and ``*milestones`` keys), ascending: where a method's step may change."""
    starts = {0}
    for key, value in hparams.items():
        if "epoch" in key or key.endswith("milestones"):
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, int) and not isinstance(item, bool) and 0 < item < epochs:
                    starts.add(item)
    return sorted(starts)


#: The largest batch timed on a CPU, where a step's time is proportional to its batch: the
#: CIFAR protocols' batches are timed whole, an ImageNet protocol's on this many images and
#: scaled (a whole 224-pixel batch takes minutes there).
CPU_CALIBRATION_BATCH = 128


#: A stage's timing: steps until they add up to this many seconds, at most this many steps.
TIMED_SECONDS, TIMED_STEPS = 1.0, 5


class _StepTimer:
    """One method's training step on the run's backbone, batch and image size, set up once (its
    first step untimed: allocations, autotuning) and then timed at any epoch."""

    def __init__(self, spec: RunSpec, method_name: str, device, numerics):
        import torch

        from ..api import StepContext
        from ..engine.models import build_backbone
        from ..engine.steps import build_optimizer

        hp = spec.hparams
        counts = registry.load("dataset", spec.dataset)().class_counts(
            spec.imb_factor, spec.profile, hp)
        classes, batch, size = len(counts), int(hp["batch_size"]), int(hp.get("crop_size", 32))
        timed_batch = min(batch, CPU_CALIBRATION_BATCH) if device.type == "cpu" else batch
        self.scale = batch / timed_batch
        self.device = device
        generator = torch.Generator().manual_seed(0)
        self.method = registry.load("method", method_name)(
            torch.tensor(counts, dtype=torch.float64, device=device), hp)
        self.model = build_backbone(hp["backbone"], classes, self.method.head, generator).to(
            device, memory_format=numerics.memory_format)
        self.optimizer = build_optimizer(self.model, hp)

        def batch_of(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            inputs = torch.randn(n, 3, size, size, generator=generator).to(
                device, memory_format=numerics.memory_format)
            return inputs, (torch.arange(n) % classes).to(device)

        meta = batch_of(max(int(hp.get("meta_batch_size", batch)) * timed_batch // batch, 1))
        self.context = StepContext(lr=float(hp["lr"]), precision=numerics.precision(),
                                   meta_batch=lambda: meta, seed=0)
        self.inputs, self.targets = batch_of(timed_batch)
        self.model.train()
        self._step(int(hp["epochs"]) - 1)  # untimed: the costliest stage warms up the most

    def seconds(self, epoch: int) -> float:
        """Seconds of a step at ``epoch``, scaled to the run's batch: the median of steps timed
        until they add up to :data:`TIMED_SECONDS` (at most :data:`TIMED_STEPS` of them), so a
        quick step is not judged by one noisy timing and a slow one costs one step."""
        times = [self._step(epoch)]
        while sum(times) < TIMED_SECONDS and len(times) < TIMED_STEPS:
            times.append(self._step(epoch))
        return statistics.median(times) * self.scale

    def _step(self, epoch: int) -> float:
        import torch

        started = time.perf_counter()
        loss, _, _ = self.method.training_loss(self.model, self.inputs, self.targets, epoch,
                                               self.context)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started


class _Calibration:
    """Seconds per training step, measured once per distinct cost (see the module docstring):
    methods that share their training step's code (``training_loss``, e.g. meta-ce, meta-focal
    and meta-ldam) share its timings."""

    def __init__(self, device):
        import torch

        from ..engine.steps import Numerics

        self.device = torch.device(device)
        self.numerics = Numerics.for_device(self.device)
        self.seconds: dict[tuple, float] = {}
        self.timings = 0
        self._timer: tuple[tuple, _StepTimer] | None = None  # the latest: a method's stages
        # are timed one after the other, and only one network is held at a time

    def step_seconds(self, spec: RunSpec, epoch: int, method_name: str) -> float:
        hp = spec.hparams
        setup = (registry.load("method", method_name).training_loss, hp["backbone"],
                 int(hp["batch_size"]), int(hp.get("crop_size", 32)))
        if (*setup, epoch) not in self.seconds:
            if self._timer is None or self._timer[0] != setup:
                self._timer = None  # free the previous network first
                self._timer = (setup, _StepTimer(spec, method_name, self.device, self.numerics))
            self.seconds[(*setup, epoch)] = self._timer[1].seconds(epoch)
            self.timings += 1
        return self.seconds[(*setup, epoch)]


def _run_seconds(spec: RunSpec, calibration: _Calibration) -> float:
    method_cls = registry.load("method", spec.method)
    hp = spec.hparams
    images = sum(registry.load("dataset", spec.dataset)().class_counts(
        spec.imb_factor, spec.profile, hp))
    if method_cls.stage1 is not None:
        forward_per_image = calibration.step_seconds(spec, 0, "ce") / 3 / int(hp["batch_size"])
        return int(hp.get("stage2_epochs", 0)) * images * forward_per_image
    epochs = int(hp["epochs"])
    steps = math.ceil(images / int(hp["batch_size"]))
    if method_cls.groupable():
        return epochs * steps * calibration.step_seconds(spec, 0, "ce")
    starts = _stage_starts(hp, epochs)
    per_stage = _stage_step_seconds(starts, lambda epoch: calibration.step_seconds(
        spec, epoch, spec.method))
    return sum((end - start) * steps * seconds
               for start, end, seconds in zip(starts, starts[1:] + [epochs], per_stage))


#: Two timings of a step closer than this ratio are taken as one cost (timing noise).
SAME_COST = 1.5


def _stage_step_seconds(starts: list[int], time_at) -> list[float]:
    """Seconds per step of each stage beginning at ``starts``, from as few timings as the
    schedule allows: the first and the last stage, and where they differ (a method that turns
    meta-learning on), a bisection for the first stage that costs what the last one does; the
    stages before it cost what the first does."""
    first, last = time_at(starts[0]), time_at(starts[-1])
    if max(first, last) < SAME_COST * min(first, last):
        return [(first + last) / 2] * len(starts)
    cheap, costly = 0, len(starts) - 1
    while costly - cheap > 1:
        middle = (cheap + costly) // 2
        seconds = time_at(starts[middle])
        if abs(seconds - last) < abs(seconds - first):
            costly = middle
        else:
            cheap = middle
    return [first] * costly + [last] * (len(starts) - costly)


def estimate(specs: list[RunSpec], device) -> PlanCost:
    """The estimated device seconds of the training steps of ``specs`` on ``device`` (a
    ``torch.device`` or its name), one run at a time; see the module docstring."""
    started = time.perf_counter()
    calibration = _Calibration(device)
    seconds = sum(_run_seconds(spec, calibration) for spec in specs)
    if calibration.device.type == "cuda":  # the training that follows gets the memory back
        import torch

        torch.cuda.empty_cache()
    return PlanCost(len(specs), seconds, time.perf_counter() - started,
                    calibration.timings, calibration.device.type)
