"""The training loop of one run or of a pack of runs, following kaidic/LDAM-DRW :
cifar_train.py (protocols.md §2.1).

SGD on all parameters (momentum, weight decay on every parameter, optional Nesterov), the
learning rate set once per epoch by :func:`learning_rate`, a fresh permutation of the training
set every epoch with the last partial batch kept (``drop_last=False`` as the reference), and
the test set evaluated after every ``eval_every``-th epoch and after the last one. Each batch's
loss comes from :meth:`Method.training_loss <ltbench.api.Method.training_loss>`, given a
:class:`~ltbench.api.StepContext`. The reported train loss is the sample-weighted mean
of the batch losses and the train accuracy the plain top-1 over the samples trained on (the
reference's ``AverageMeter``s); the test accuracy is the mean per-class accuracy
(:func:`ltbench.metrics.headline.summarize`).

Random streams are independent and named: the model's initialisation draws from a CPU
generator seeded with ``derive_seed(seed, "init")``, the data order and augmentation from a
generator on the training device seeded with ``derive_seed(seed, "data")``, the meta-set
batches of methods that use one (:class:`MetaBatches`, training augmentation) from their own
generator seeded with ``derive_seed(seed, "meta")``, so they leave the data order untouched;
no global RNG.
How it computes is :class:`~ltbench.engine.steps.Numerics`: by default the forward runs under
bf16 autocast with channels-last tensors on CUDA and on CPUs with native bf16 (the pooled
features, the head and the loss in fp32, architecture.md §6.3), in fp32 elsewhere. On CPU a seed
reproduces bit-identical numbers for a given thread count; on CUDA ``cudnn.benchmark`` picks
kernels by timing unless the numerics are ``deterministic``.

A pack (:func:`train_pack`) runs this same loop for N runs at once: every run draws its own
permutation and augmentation from its own generator, and one step object
(:mod:`ltbench.engine.steps`) trains all N models on their own batches; one run alone is the
plain network, so one run alone (:func:`train_alone`) is a pack of one.

Inside an epoch nothing synchronises with the host: the loss sum and the correct count stay
device tensors and are read once per epoch (and when a checkpoint is saved). A non-finite
epoch loss stops the run with status ``"diverged"``.

With a :class:`~ltbench.engine.checkpoint.ResumeCheckpoint` a run checkpoints at epoch
boundaries (every ``every`` epochs) and within epochs (every ``every_steps`` steps, and after
the current batch on a stop request: SIGTERM, SIGUSR1, Ctrl-C), and a restarted run continues
from the epoch or the batch where it was saved, with the numbers of an uninterrupted run (bit
for bit on CPU): within an epoch the checkpoint keeps the epoch's :class:`PartialEpoch`.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ..api import LTData, Method, StepContext, step_decay
from ..hparams import PACK_SHARED_HPARAMS
from ..metrics.calibration import BINS
from ..metrics.headline import summarize
from ..spec import derive_seed
from ..store.result_store import CURVE_COLUMNS
from .augment import DeviceImages
from .checkpoint import GeneratorState, ResumeCheckpoint, Stateful
from .models import build_backbone
from .progress import RunProgress
from .samplers import EpochSampler
from .sources import CachedImages, image_source
from .steps import EVAL_BATCH_SIZE, GroupedStep, Numerics, Precision, SingleModelStep

#: The values of ``lr_schedule`` (:func:`learning_rate`); absent means ``"step"``.
LR_SCHEDULES = ("step", "cosine")


@dataclass
class TrainResult:
    """Outcome of one run of :func:`train_pack` (or :func:`train_alone`).

    ``per_class_correct``/``per_class_total`` are the test counts at the last evaluated epoch
    (correct counts are zeros when no epoch was evaluated, e.g. a run that diverged first), and
    ``calibration`` that epoch's confidence bins (:class:`~ltbench.engine.steps.Evaluation`).
    ``curves`` has one row per epoch run, the diverged one included: ``epoch``, ``lr``,
    ``train_loss``, ``train_acc`` and ``test_acc`` (percent; NaN where not evaluated), and the
    wall seconds of the epoch's training (``train_s``) and evaluation (``eval_s``).
    ``resumed_wall_s``: the training and evaluation seconds of the epochs restored from a
    resume checkpoint (0 for a run trained in one go), so a run that spans several processes
    can report its whole cost.
    """

    status: str
    error: str | None
    per_class_correct: np.ndarray
    per_class_total: np.ndarray
    best_epoch: int | None
    best_top1_acc: float
    curves: pd.DataFrame
    epochs_completed: int
    model: nn.Module | None = None  # the final model (saved for stage 2, scored on shifted sets)
    resumed_wall_s: float = 0.0
    calibration: np.ndarray = field(default_factory=lambda: np.zeros((BINS, 3)))


def learning_rate(epoch: int, hparams: Mapping[str, Any]) -> float:
    """The learning rate of 0-based ``epoch`` (kaidic/LDAM-DRW : cifar_train.py,
    ``adjust_learning_rate``): ``lr · (epoch + 1) / warmup_epochs`` during the linear warm-up,
    then ``lr · lr_decay ** k`` with k the number of ``lr_milestones`` m with ``epoch >= m``.
    With ``lr_schedule = "cosine"`` the decay after the warm-up is instead
    ``lr · (1 + cos(pi · t / T)) / 2``, t the epochs since the warm-up and T their total: the
    per-epoch ``CosineAnnealingLR(T_max=num_epochs, eta_min=endlr = 0)`` of
    facebookresearch/classifier-balancing : run_networks.py (``coslr``) when there is no
    warm-up, with the first epoch at the full lr (that code steps the scheduler at the start
    of each epoch, the PyTorch < 1.1 convention; on later PyTorch the same calls shift the
    schedule by one epoch, which ltbench does not reproduce)."""
    base = float(hparams["lr"])
    warmup_epochs = int(hparams["warmup_epochs"])
    if epoch < warmup_epochs:
        return base * (epoch + 1) / warmup_epochs
    if hparams.get("lr_schedule", "step") == "cosine":
        decay_epochs = int(hparams["epochs"]) - warmup_epochs
        return base * (1 + math.cos(math.pi * (epoch - warmup_epochs) / decay_epochs)) / 2
    return step_decay(base, hparams["lr_decay"], hparams["lr_milestones"], epoch)


class MetaBatches:
    """Augmented batches of the balanced meta set for :attr:`StepContext.meta_batch`.

    Each call returns ``min(batch_size, len(images))`` images with the training augmentation,
    taken in turn from a permutation of the set; a fresh permutation is drawn whenever fewer
    than a batch remain, so every batch has the same shape. The Jamal and MW-Net references
    draw ``next(iter(validation_loader))`` (a fresh shuffle of the meta set, batch 100) every
    step: the whole CIFAR-10 meta set, or a random 100 of CIFAR-100's 1,000 (protocols.md
    §3.6, §3.7). All draws come from ``generator``.
    """

    def __init__(self, images: DeviceImages, batch_size: int, generator: torch.Generator):
        self.images = images
        self.batch_size = min(batch_size, len(images))
        self.generator = generator
        self._order: torch.Tensor | None = None
        self._next = 0

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._order is None or self._next + self.batch_size > len(self.images):
            self._order = torch.randperm(len(self.images), generator=self.generator,
                                         device=self.generator.device)
            self._next = 0
        index = self._order[self._next:self._next + self.batch_size]
        self._next += self.batch_size
        return self.images.train_batch(index, self.generator)

    def state_dict(self) -> dict[str, Any]:
        """The position in the current permutation and the generator (for resume)."""
        return {"generator": self.generator.get_state(), "order": self._order,
                "next": self._next}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        order = state["order"]
        self._order = None if order is None else order.to(self.generator.device)
        self._next = state["next"]


def _no_meta_set() -> None:
    return None


@dataclass(frozen=True)
class PackMember:
    """One run of a pack: its method instance, resolved hyper-parameters and training seed."""

    method: Method
    hparams: Mapping[str, Any]
    seed: int


def _meta_batches(data: LTData, member: PackMember, device: torch.device,
                  numerics: Numerics) -> Callable[[], tuple[torch.Tensor, torch.Tensor] | None]:
    """The member's meta-set batches, or a function returning None when it uses none."""
    if not (member.method.uses_meta_set and data.meta_images is not None):
        return _no_meta_set
    hparams = member.hparams
    return MetaBatches(
        image_source(data.meta_images, data.meta_labels, hparams, device, augment=True,
                     channels_last=numerics.channels_last),
        int(hparams["meta_batch_size"]),
        torch.Generator(device=device).manual_seed(derive_seed(member.seed, "meta")))


def check_packable(members: Sequence[PackMember]) -> None:
    """Raise ``ValueError`` unless the runs agree on everything a pack shares
    (:data:`ltbench.hparams.PACK_SHARED_HPARAMS` and the head)."""
    first = members[0]
    for member in members[1:]:
        differing = [key for key in PACK_SHARED_HPARAMS
                     if member.hparams[key] != first.hparams[key]]
        if member.method.head != first.method.head:
            differing.append("head")
        if differing:
            raise ValueError(f"runs of one pack differ in {', '.join(differing)}")


def build_step(models: Sequence[nn.Module], members: Sequence[PackMember],
               device: torch.device, numerics: Numerics) -> SingleModelStep | GroupedStep:
    """The plain network for one run, the grouped network for several."""
    if len(members) == 1:
        return SingleModelStep(models[0], members[0].method, members[0].hparams, device,
                               numerics)
    return GroupedStep(models, [m.method for m in members], [m.hparams for m in members],
                       device, numerics)


@dataclass
class PartialEpoch:
    """How far the runs of a pack are through an epoch: what the rest of the epoch depends on
    besides the states of the loop's parts (networks, optimiser, methods, generators).

    ``orders``: every run's example order of the epoch (int64 [N] on the device), kept as
    drawn rather than drawn again from a saved generator state, so that it is exact whatever
    the sampler; ``batches``: how many of its batches are trained; ``loss_sum`` and
    ``correct``: the device tensors [runs] summed so far (float64 sum over samples of the
    batch loss, int64 correct top-1 count), and ``seen`` the samples they cover, all exact.
    """

    orders: list[torch.Tensor]
    batches: int
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: list[int]

    @classmethod
    def start(cls, orders: list[torch.Tensor]) -> PartialEpoch:
        runs, device = len(orders), orders[0].device
        return cls(orders, 0, torch.zeros(runs, dtype=torch.float64, device=device),
                   torch.zeros(runs, dtype=torch.int64, device=device), [0] * runs)

    def state(self, train_s: float) -> dict[str, Any]:
        """For a resume checkpoint, with the epoch's training seconds so far."""
        return {"orders": self.orders, "batches": self.batches, "loss_sum": self.loss_sum,
                "correct": self.correct, "seen": self.seen, "train_s": train_s}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], device: torch.device
                   ) -> tuple[PartialEpoch, float]:
        """The partial epoch of :meth:`state` on ``device``, and its training seconds."""
        return cls([order.to(device) for order in state["orders"]], state["batches"],
                   state["loss_sum"].to(device), state["correct"].to(device),
                   list(state["seen"])), state["train_s"]


def train_epoch(step: SingleModelStep | GroupedStep, images: DeviceImages | CachedImages,
                epoch: int, batch_size: int, generators: Sequence[torch.Generator],
                samplers: Sequence[EpochSampler], contexts: Sequence[StepContext],
                progress: RunProgress | None = None, partial: PartialEpoch | None = None,
                after_batch: Callable[[PartialEpoch], None] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """One pass of every run over its own order of ``images`` for the epoch (``samplers[n]``;
    the instance-balanced one: a fresh permutation), the order and augmentation of run n
    drawn from ``generators[n]`` exactly as a lone run draws them; returns the device
    tensors [N] (sum over samples of the batch loss, number of correct top-1 predictions) and
    the number of samples each covers (the epoch's size, unless the method trains on other
    examples). The runs share the set and the batch size, so their batches line up, the last
    partial one included.

    ``partial``: continue that partial epoch (restored from a checkpoint, with the generators
    as they were after its last batch) at its next batch instead of drawing the orders.
    ``after_batch`` is called with the epoch's progress after every batch. A cached split is
    told the batches still to come (:meth:`CachedImages.announce`: a streamed one gathers
    each next batch ahead) and, when the epoch ends or stops on an exception, to settle
    (:meth:`CachedImages.settle`), so no gather outlives it."""
    if partial is None:
        partial = PartialEpoch.start([sampler.order(epoch, g)
                                      for sampler, g in zip(samplers, generators)])
    rest = [order[partial.batches * batch_size:] for order in partial.orders]
    if isinstance(images, CachedImages):  # a lone run (packs train on tensors)
        images.announce(rest[0], batch_size)
    try:
        _train_batches(step, images, epoch, batch_size, generators, contexts, progress,
                       partial, after_batch, rest)
    finally:
        if isinstance(images, CachedImages):
            images.settle()
    return partial.loss_sum, partial.correct, partial.seen


def _train_batches(step: SingleModelStep | GroupedStep, images: DeviceImages | CachedImages,
                   epoch: int, batch_size: int, generators: Sequence[torch.Generator],
                   contexts: Sequence[StepContext], progress: RunProgress | None,
                   partial: PartialEpoch, after_batch: Callable[[PartialEpoch], None] | None,
                   rest: list[torch.Tensor]) -> None:
    """:func:`train_epoch`'s batches: those of ``rest``, each run's order still to train."""
    runs = len(generators)
    for indices in zip(*(order.split(batch_size) for order in rest)):
        if runs == 1:  # any image source; packs are CIFAR-style DeviceImages
            inputs, targets = images.train_batch(indices[0], generators[0])
        else:
            draws = [images.draw_augmentation(index.shape[0], generator)
                     for index, generator in zip(indices, generators)]
            inputs, targets = images.augmented_batch(
                torch.cat(indices), *(torch.cat(parts) for parts in zip(*draws)))
        step_loss, step_correct, scored = step.train_step(inputs, targets.view(runs, -1),
                                                          epoch, contexts)
        partial.loss_sum += step_loss
        partial.correct += step_correct
        partial.seen = [total + count for total, count in zip(partial.seen, scored)]
        partial.batches += 1
        if progress is not None:
            progress.advance()
        if after_batch is not None:
            after_batch(partial)


def unaugmented_images(images, labels: torch.Tensor, hparams: Mapping[str, Any],
                       device: torch.device) -> DeviceImages | CachedImages:
    """``images`` (uint8 tensor or cached split) served as the test set is: no augmentation,
    the run's normalisation."""
    return image_source(images, labels, hparams, device, augment=False,
                        channels_last=device.type == "cuda")


def predict_logits(model: nn.Module, images: DeviceImages, precision: Precision) -> torch.Tensor:
    """fp32 logits [N, C] of ``model`` in eval mode on the unaugmented ``images``, in order."""
    model.eval()
    with torch.inference_mode():
        chunks = []
        for inputs, _ in images.eval_batches(EVAL_BATCH_SIZE):
            with precision():
                chunks.append(model(inputs).float())
    return torch.cat(chunks)


def is_evaluation_epoch(epoch: int, epochs: int, eval_every: int) -> bool:
    return (epoch + 1) % eval_every == 0 or epoch == epochs - 1


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def train_alone(data: LTData, method: Method, hparams: Mapping[str, Any], seed: int,
                device: torch.device, progress: RunProgress | None = None,
                model: nn.Module | None = None, checkpoint: ResumeCheckpoint | None = None,
                numerics: Numerics | None = None) -> TrainResult:
    """Train one run, ``hparams["backbone"]`` with ``method``'s head and loss on ``data`` (see
    the module docstring for the protocol): :func:`train_pack` of one member.

    ``model``: train this model (e.g. a stage-2 classifier on a frozen stage-1 backbone)
    instead of a fresh backbone; with ``hparams["epochs"]`` 0 it is only evaluated.
    ``hparams["sampler"]`` (optional) picks the epoch order (:mod:`.samplers`). With
    ``checkpoint``, the run continues from its saved state, if any, and saves its state at
    epoch boundaries and within epochs (:mod:`ltbench.engine.checkpoint`)."""
    return train_pack(data, [PackMember(method, hparams, seed)], device, progress, numerics,
                      models=None if model is None else [model], checkpoint=checkpoint)[0]


@dataclass
class MemberState:
    """How far one run of a pack has come: its curve rows so far, its status (``ok`` while it
    trains, ``diverged``) and error, the epochs it completed and evaluated, and its per-class
    correct test counts and confidence bins at the last evaluated epoch."""

    per_class_correct: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"
    error: str | None = None
    epochs_completed: int = 0
    calibration: np.ndarray = field(default_factory=lambda: np.zeros((BINS, 3)))


#: What a pack's resume checkpoint keeps besides its parts (see :meth:`ResumeCheckpoint.save`):
#: the members' states, one list per field, as :func:`_saved_states` writes them.
_RESUMED = ("curves", "statuses", "errors", "epochs_completed", "per_class_correct")
#: What it keeps besides those within an epoch: the :meth:`PartialEpoch.state`.
_WITHIN_EPOCH = "within_epoch"
#: The members' confidence bins, absent from checkpoints written before ltbench kept them.
_CALIBRATION = "calibration"


def _saved_states(states: Sequence[MemberState]) -> dict[str, Any]:
    """The checkpoint's values of :data:`_RESUMED`, as of the last epoch's end."""
    return {"curves": [s.rows for s in states], "statuses": [s.status for s in states],
            "errors": [s.error for s in states],
            "epochs_completed": [s.epochs_completed for s in states],
            "per_class_correct": torch.from_numpy(np.stack([s.per_class_correct
                                                            for s in states])),
            _CALIBRATION: torch.from_numpy(np.stack([s.calibration for s in states]))}


def _restored_states(saved: Mapping[str, Any]) -> list[MemberState]:
    """The member states :func:`_saved_states` wrote into ``saved``."""
    runs = len(saved["statuses"])
    calibration = saved[_CALIBRATION].numpy() if _CALIBRATION in saved else \
        np.zeros((runs, BINS, 3))
    return [MemberState(correct, rows, status, error, completed, bins)
            for correct, rows, status, error, completed, bins in zip(
                saved["per_class_correct"].numpy(), saved["curves"], saved["statuses"],
                saved["errors"], saved["epochs_completed"], calibration)]


@dataclass
class _Pack:
    """What the epochs of a pack work with: the step (networks and optimiser), every run's
    data-order generator, sampler and meta-set batches, and the image sources."""

    members: Sequence[PackMember]
    step: SingleModelStep | GroupedStep
    generators: list[torch.Generator]
    samplers: list[EpochSampler]
    meta_batches: list[Callable[[], tuple[torch.Tensor, torch.Tensor] | None]]
    train_images: DeviceImages | CachedImages
    test_images: DeviceImages | CachedImages
    per_class_total: np.ndarray  # the test images of every class
    numerics: Numerics

    @classmethod
    def build(cls, data: LTData, members: Sequence[PackMember], device: torch.device,
              numerics: Numerics, models: Sequence[nn.Module] | None) -> _Pack:
        shared = members[0].hparams
        if models is None:
            models = [build_backbone(shared["backbone"], data.num_classes, m.method.head,
                                     torch.Generator().manual_seed(derive_seed(m.seed, "init")),
                                     pretrained=shared.get("pretrained", "none"))
                      for m in members]
        step = build_step(models, members, device, numerics)
        generators = [torch.Generator(device=device).manual_seed(derive_seed(m.seed, "data"))
                      for m in members]
        train_images = image_source(data.train_images, data.train_labels, shared, device,
                                    augment=True, channels_last=numerics.channels_last)
        test_images = image_source(data.test_images, data.test_labels, shared, device,
                                   augment=False, channels_last=numerics.channels_last)
        meta_batches = [_meta_batches(data, m, device, numerics) for m in members]
        samplers = [EpochSampler(m.hparams.get("sampler", "instance-balanced"),
                                 train_images.labels, data.num_classes, int(shared["epochs"]))
                    for m in members]
        return cls(members, step, generators, samplers, meta_batches, train_images,
                   test_images, np.bincount(data.test_labels.numpy(), minlength=data.num_classes),
                   numerics)

    def resumable(self) -> dict[str, Stateful]:
        """The parts a resume checkpoint saves and restores, by name."""
        parts: dict[str, Stateful] = {"model": self.step.model,
                                      "optimizer": self.step.optimizer}
        for k, member in enumerate(self.members):
            parts[f"method{k}"] = member.method
            parts[f"data_order{k}"] = GeneratorState(self.generators[k])
            if isinstance(self.meta_batches[k], MetaBatches):
                parts[f"meta_batches{k}"] = self.meta_batches[k]
        return parts

    def set_active(self, states: Sequence[MemberState]) -> None:
        """Train only the runs still ``ok`` (a pack of one has nothing to switch off)."""
        if len(states) > 1:
            self.step.set_active([state.status == "ok" for state in states])


@dataclass(frozen=True)
class _Start:
    """Where a pack's training starts: its first epoch, the partial epoch to continue (and
    that epoch's training seconds so far) and the seconds of the restored epochs."""

    first_epoch: int = 0
    partial: PartialEpoch | None = None
    partial_train_s: float = 0.0
    resumed_wall_s: float = 0.0


def _resume(pack: _Pack, states: list[MemberState], checkpoint: ResumeCheckpoint | None,
            resumable: Mapping[str, Stateful], device: torch.device,
            progress: RunProgress | None, batches_per_epoch: int) -> _Start:
    """Restore the pack's parts and ``states`` (in place) from ``checkpoint``, if it holds a
    saved state; where training starts."""
    if checkpoint is None or (saved := checkpoint.load(resumable, _RESUMED,
                                                       (_WITHIN_EPOCH, _CALIBRATION))) is None:
        return _Start()
    states[:] = _restored_states(saved)
    partial, partial_train_s = None, 0.0
    if _WITHIN_EPOCH in saved:
        partial, partial_train_s = PartialEpoch.from_state(saved[_WITHIN_EPOCH], device)
    pack.set_active(states)
    first_epoch = saved["epoch"] + 1
    if progress is not None:
        batches_done = 0 if partial is None else partial.batches
        progress.resumed(first_epoch, first_epoch * batches_per_epoch + batches_done,
                         batches_done)
    return _Start(first_epoch, partial, partial_train_s,
                  max(_seconds(state.rows) for state in states) + partial_train_s)


def _run_epoch(pack: _Pack, states: list[MemberState], data: LTData, epoch: int,
               progress: RunProgress | None, start: _Start,
               after_batch: Callable[[float], Callable[[PartialEpoch], None] | None]) -> bool:
    """Train the runs still ``ok`` for ``epoch``, evaluate them when it is an evaluation
    epoch, and append their curve rows; return whether any run goes on. ``start``: the
    partial epoch to continue, if this is the resumed one; ``after_batch(started)``: the
    per-batch checkpoint hook of an epoch whose training clock started at ``started``."""
    members, shared = pack.members, pack.members[0].hparams
    runs, epochs, num_classes = len(members), int(shared["epochs"]), data.num_classes
    running = [k for k in range(runs) if states[k].status == "ok"]
    lrs = [learning_rate(epoch, m.hparams) if k in running else 0.0
           for k, m in enumerate(members)]
    pack.step.set_learning_rates(lrs)
    contexts = [StepContext(lr=lr, precision=pack.numerics.precision(), meta_batch=meta,
                            seed=m.seed)
                for lr, meta, m in zip(lrs, pack.meta_batches, members)]
    # A resumed epoch's training seconds include those before its checkpoint.
    started = time.perf_counter() - start.partial_train_s
    loss_sum, correct, seen = train_epoch(pack.step, pack.train_images, epoch,
                                          int(shared["batch_size"]), pack.generators,
                                          pack.samplers, contexts, progress, start.partial,
                                          after_batch(started))
    totals = torch.cat((loss_sum, correct.double())).tolist()  # the epoch's one host sync
    train_s = time.perf_counter() - started
    train_losses = [totals[k] / seen[k] for k in range(runs)]
    for k in running:
        if not math.isfinite(train_losses[k]):
            states[k].status = "diverged"
            states[k].error = f"non-finite training loss in epoch {epoch}"
    test_acc, eval_s = [math.nan] * runs, math.nan
    evaluated = [k for k in running if states[k].status == "ok"]
    if evaluated and is_evaluation_epoch(epoch, epochs, int(shared["eval_every"])):
        started = time.perf_counter()
        evaluation = pack.step.evaluate(pack.test_images, num_classes)
        eval_s = time.perf_counter() - started
        for k in evaluated:
            states[k].per_class_correct = evaluation.correct[k]
            states[k].calibration = evaluation.calibration[k]
            test_acc[k] = summarize(evaluation.correct[k], pack.per_class_total,
                                    data.class_counts)["top1_acc"]
    for k in running:
        states[k].rows.append({"epoch": epoch, "lr": lrs[k], "train_loss": train_losses[k],
                               "train_acc": 100.0 * totals[runs + k] / seen[k],
                               "test_acc": test_acc[k], "train_s": train_s, "eval_s": eval_s})
    if progress is not None:
        accuracies = [test_acc[k] for k in evaluated if not math.isnan(test_acc[k])]
        progress.epoch_done(epoch, epochs, _mean([train_losses[k] for k in running]),
                            _mean(accuracies) if accuracies else None)
    for k in evaluated:
        states[k].epochs_completed = epoch + 1
    if evaluated and len(evaluated) < len(running):
        pack.set_active(states)
    return bool(evaluated)


def train_pack(data: LTData, members: Sequence[PackMember], device: torch.device,
               progress: RunProgress | None = None, numerics: Numerics | None = None,
               models: Sequence[nn.Module] | None = None,
               checkpoint: ResumeCheckpoint | None = None) -> list[TrainResult]:
    """Train the runs ``members`` together on ``data``, one :class:`TrainResult` each, equal
    (up to floating-point rounding) to training each alone with :func:`train_alone`.

    One run trains the plain network; several train one grouped network
    (:class:`~ltbench.engine.steps.GroupedStep`; only methods without their own
    ``training_loss``). Each run keeps its own initialisation, data order (its ``sampler``),
    augmentation, optimiser state, BN statistics, learning-rate schedule and divergence: a run
    whose epoch loss is non-finite stops with ``"diverged"`` while the others go on.
    ``train_s`` and ``eval_s`` in the curves are the pack's wall seconds. ``progress`` shows
    the mean over the runs still training. ``numerics`` defaults to
    :meth:`Numerics.for_device`; ``models`` replaces the fresh backbones (see
    :func:`train_alone`). ``checkpoint`` (one for the whole pack) holds the networks, the
    optimiser state, every run's method state, random streams and :class:`MemberState`, and
    within an epoch the :class:`PartialEpoch`: a restarted pack continues from it, at the next
    epoch or the next batch. Every result carries its trained model.
    """
    check_packable(members)
    numerics = numerics if numerics is not None else Numerics.for_device(device)
    pack = _Pack.build(data, members, device, numerics, models)
    epochs = int(members[0].hparams["epochs"])
    batches_per_epoch = math.ceil(len(pack.train_images) / int(members[0].hparams["batch_size"]))
    states = [MemberState(np.zeros(data.num_classes, dtype=np.int64)) for _ in members]
    if progress is not None:
        progress.begin(epochs * batches_per_epoch)
    resumable = pack.resumable()
    start = _resume(pack, states, checkpoint, resumable, device, progress, batches_per_epoch)
    resumed_wall_s = start.resumed_wall_s

    def after_batch(epoch: int, started: float) -> Callable[[PartialEpoch], None] | None:
        return None if checkpoint is None else functools.partial(
            _checkpoint_batch, checkpoint, epoch, batches_per_epoch, resumable,
            lambda: _saved_states(states), started)

    for epoch in range(start.first_epoch, epochs):
        if not _run_epoch(pack, states, data, epoch, progress, start,
                          functools.partial(after_batch, epoch)):
            break
        start = _Start()  # only the first epoch continues a partial one
        if checkpoint is not None:
            checkpoint.epoch_done(epoch, epochs, resumable, **_saved_states(states))
    if epochs == 0:  # a post-hoc classifier: nothing to train, score it as given
        evaluation = pack.step.evaluate(pack.test_images, data.num_classes)
        for state, counts, bins in zip(states, evaluation.correct, evaluation.calibration):
            state.per_class_correct, state.calibration = counts, bins
    return [_result(state, pack.per_class_total, model, resumed_wall_s)
            for state, model in zip(states, pack.step.trained_models())]


def _checkpoint_batch(checkpoint: ResumeCheckpoint, epoch: int, batches_per_epoch: int,
                      parts: Mapping[str, Stateful], curves_so_far: Callable[[], dict[str, Any]],
                      started: float, partial: PartialEpoch) -> None:
    """:meth:`ResumeCheckpoint.batch_done` after a batch of ``epoch`` (whose training clock
    started at ``started``): the checkpoint, when one is due, holds the epoch's progress."""
    checkpoint.batch_done(epoch, partial.batches, batches_per_epoch, parts, lambda: {
        **curves_so_far(), _WITHIN_EPOCH: partial.state(time.perf_counter() - started)})


def _seconds(rows: list[dict[str, Any]]) -> float:
    """The training and evaluation seconds of curve ``rows`` (the pack's, so any member's
    rows up to where it stopped)."""
    return sum(row["train_s"] + (0.0 if math.isnan(row["eval_s"]) else row["eval_s"])
               for row in rows)


def _result(state: MemberState, per_class_total: np.ndarray, model: nn.Module,
            resumed_wall_s: float) -> TrainResult:
    curves = pd.DataFrame(state.rows, columns=list(CURVE_COLUMNS))
    evaluated = curves.dropna(subset=["test_acc"])
    if len(evaluated):
        best = evaluated["test_acc"].idxmax()  # first maximum: the reference's strict '>'
        best_epoch = int(curves.at[best, "epoch"])
        best_top1_acc = float(curves.at[best, "test_acc"])
    else:
        best_epoch, best_top1_acc = None, math.nan
    return TrainResult(status=state.status, error=state.error,
                       per_class_correct=state.per_class_correct.astype(np.int64),
                       per_class_total=per_class_total.astype(np.int64),
                       best_epoch=best_epoch, best_top1_acc=best_top1_acc, curves=curves,
                       epochs_completed=state.epochs_completed, model=model,
                       resumed_wall_s=resumed_wall_s, calibration=state.calibration)
