"""What a plan costs before it trains: its training steps, priced by a short calibration.

The calibration times real training steps on the device the plan would use, with the numerics
``ltbench run`` picks there (:meth:`~ltbench.engine.steps.Numerics.for_device`): the method's
loss, backward and SGD step of the run's backbone at the run's batch size, on random inputs of
the run's image size. One step is timed after an untimed one, per distinct cost:

* a plain loss (a :meth:`~ltbench.api.Method.groupable` method) costs what a ``ce`` step of
  the same backbone, batch and image size costs: timed once for all of them;
* any other method (meta-learning look-aheads, meta-set batches) is timed at the first epoch
  of every stage of its schedule (epoch 0 and each epoch-valued hyper-parameter, e.g. the
  start of meta-learning), each stage priced at its own rate;
* a two-stage method's own run trains only its classifier on the frozen stage-1 backbone,
  priced as a third of a ``ce`` step (one forward of the backbone instead of forward and
  backward); its stage-1 run is a run of the plan like any other.

Evaluations, data loading, the first step's compilation and the store's writes are not priced,
so the estimate is a lower bound of the wall time; a pool of workers divides it.
"""

from __future__ import annotations

import math
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
    timed_steps: int
    device: str

    def describe(self) -> str:
        """One line: e.g. ``estimated cost: 12 runs, about 2.1 min of training steps on cpu
        (calibrated here in 3.2 s from 8 timed steps; evaluation and data loading add to
        it)``."""
        return (f"estimated cost: {self.runs} runs, about {format_duration(self.seconds)} of "
                f"training steps on {self.device} (calibrated here in "
                f"{self.calibration_s:.1f} s from {self.timed_steps} timed steps; evaluation "
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
    starts.discard(epochs)
    return sorted(starts)


#: The largest batch timed on a CPU (larger ones are timed on this many images and scaled).
CPU_CALIBRATION_BATCH = 32


class _Calibration:
    """Seconds per training step, measured once per distinct cost (see the module docstring)."""

    def __init__(self, device):
        import torch

        from ..engine.steps import Numerics

        self.device = torch.device(device)
        self.numerics = Numerics.for_device(self.device)
        self.seconds: dict[tuple, float] = {}
        self.timed_steps = 0

    def step_seconds(self, spec: RunSpec, epoch: int, method_name: str) -> float:
        hp = spec.hparams
        key = (method_name, epoch, hp["backbone"], int(hp["batch_size"]),
               int(hp.get("crop_size", 32)))
        if key not in self.seconds:
            self.seconds[key] = self._time(spec, epoch, method_name)
            self.timed_steps += 1
        return self.seconds[key]

    def _time(self, spec: RunSpec, epoch: int, method_name: str) -> float:
        import torch

        from ..api import StepContext
        from ..engine.models import build_backbone
        from ..engine.steps import build_optimizer

        hp = spec.hparams
        counts = registry.load("dataset", spec.dataset)().class_counts(
            spec.imb_factor, spec.profile, hp)
        classes, batch, size = len(counts), int(hp["batch_size"]), int(hp.get("crop_size", 32))
        # A CPU step's time is proportional to its batch, so a large one is timed on a part
        # (an ImageNet-size step takes many seconds there); a GPU's is not.
        timed_batch = min(batch, CPU_CALIBRATION_BATCH) if self.device.type == "cpu" else batch
        generator = torch.Generator().manual_seed(0)
        method = registry.load("method", method_name)(
            torch.tensor(counts, dtype=torch.float64, device=self.device), hp)
        model = build_backbone(hp["backbone"], classes, method.head, generator)
        model = model.to(self.device, memory_format=self.numerics.memory_format)
        optimizer = build_optimizer(model, hp)

        def batch_of(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            inputs = torch.randn(n, 3, size, size, generator=generator).to(
                self.device, memory_format=self.numerics.memory_format)
            return inputs, (torch.arange(n) % classes).to(self.device)

        meta = batch_of(int(hp.get("meta_batch_size", batch)) * timed_batch // batch or 1)
        context = StepContext(lr=float(hp["lr"]), precision=self.numerics.precision(),
                              meta_batch=lambda: meta, seed=0)
        inputs, targets = batch_of(timed_batch)
        model.train()
        elapsed = 0.0
        for timed in (False, True):  # the first step pays for allocations and autotuning
            started = time.perf_counter()
            loss, _, _ = method.training_loss(model, inputs, targets, epoch, context)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - started if timed else elapsed
        return elapsed * batch / timed_batch


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
    total = 0.0
    for start, end in zip(starts, starts[1:] + [epochs]):
        total += (end - start) * steps * calibration.step_seconds(spec, start, spec.method)
    return total


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
                    calibration.timed_steps, calibration.device.type)
