"""The training loop of one run, following kaidic/LDAM-DRW : cifar_train.py (protocols.md §2.1).

SGD on all parameters (momentum, weight decay on every parameter, optional Nesterov), the
learning rate set once per epoch by :func:`learning_rate`, a fresh permutation of the training
set every epoch with the last partial batch kept (``drop_last=False`` as the reference), and
the test set evaluated after every ``eval_every``-th epoch and after the last one. Each batch's
loss comes from :meth:`Method.training_loss <ltbench.methods.base.Method.training_loss>`, given a
:class:`~ltbench.methods.base.StepContext`. The reported train loss is the sample-weighted mean
of the batch losses and the train accuracy the plain top-1 over the samples trained on (the
reference's ``AverageMeter``s); the test accuracy is the mean per-class accuracy
(:func:`ltbench.evaluate.summarize`).

Random streams are independent and named: the model's initialisation draws from a CPU
generator seeded with ``derive_seed(seed, "init")``, the data order and augmentation from a
generator on the training device seeded with ``derive_seed(seed, "data")``, the meta-set
batches of methods that use one (:class:`MetaBatches`, training augmentation) from their own
generator seeded with ``derive_seed(seed, "meta")``, so they leave the data order untouched;
no global RNG.
On CPU everything runs in fp32 and a seed reproduces bit-identical numbers. On CUDA the
forward runs under bf16 autocast with channels-last tensors (the head and the loss in fp32,
architecture.md §6.3) and ``cudnn.benchmark`` is enabled.

Inside an epoch nothing synchronises with the host: the loss sum and the correct count stay
device tensors and are read once per epoch. A non-finite epoch loss stops the run with
status ``"diverged"``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, ContextManager, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ..datasets.base import LTData
from ..evaluate import summarize
from ..methods.base import Method, StepContext, step_decay
from ..progress import RunProgress
from ..spec import derive_seed
from .augment import DeviceImages
from .checkpoint import GeneratorState, ResumeCheckpoint
from .models import build_backbone

EVAL_BATCH_SIZE = 1000

Precision = Callable[[], ContextManager[Any]]


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    ``per_class_correct``/``per_class_total`` are the test counts at the last evaluated epoch
    (correct counts are zeros when no epoch was evaluated, e.g. a run that diverged first).
    ``curves`` has one row per epoch run, the diverged one included: ``epoch``, ``lr``,
    ``train_loss``, ``train_acc`` and ``test_acc`` (percent; NaN where not evaluated), and the
    wall seconds of the epoch's training (``train_s``) and evaluation (``eval_s``).
    """

    status: str
    error: str | None
    per_class_correct: np.ndarray
    per_class_total: np.ndarray
    best_epoch: int | None
    best_top1_acc: float
    curves: pd.DataFrame
    epochs_completed: int


def learning_rate(epoch: int, hparams: Mapping[str, Any]) -> float:
    """The learning rate of 0-based ``epoch`` (kaidic/LDAM-DRW : cifar_train.py,
    ``adjust_learning_rate``): ``lr · (epoch + 1) / warmup_epochs`` during the linear warm-up,
    then ``lr · lr_decay ** k`` with k the number of ``lr_milestones`` m with ``epoch >= m``."""
    base = float(hparams["lr"])
    warmup_epochs = int(hparams["warmup_epochs"])
    if epoch < warmup_epochs:
        return base * (epoch + 1) / warmup_epochs
    return step_decay(base, hparams["lr_decay"], hparams["lr_milestones"], epoch)


def build_optimizer(model: nn.Module, hparams: Mapping[str, Any]) -> torch.optim.SGD:
    """SGD over all parameters, weight decay included on BN and biases as the reference."""
    return torch.optim.SGD(model.parameters(), lr=float(hparams["lr"]),
                           momentum=float(hparams["momentum"]),
                           weight_decay=float(hparams["weight_decay"]),
                           nesterov=bool(hparams["nesterov"]))


def mixed_precision(device: torch.device) -> Precision:
    """A factory of the forward pass's precision context: bf16 autocast on CUDA, none on CPU."""
    if device.type == "cuda":
        return partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


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


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, images: DeviceImages,
                method: Method, epoch: int, batch_size: int, generator: torch.Generator,
                step: StepContext, progress: RunProgress | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One pass over a fresh permutation of ``images``; returns the device tensors (sum over
    samples of the batch loss, number of correct top-1 predictions) and the number of samples
    they cover (the epoch's size, unless the method trains on other examples)."""
    model.train()
    order = torch.randperm(len(images), generator=generator, device=generator.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=generator.device)
    correct = torch.zeros((), dtype=torch.int64, device=generator.device)
    seen = 0
    for index in order.split(batch_size):
        inputs, targets = images.train_batch(index, generator)
        loss, logits, scored = method.training_loss(model, inputs, targets, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().double() * scored.shape[0]
        correct += (logits.detach().argmax(dim=1) == scored).sum()
        seen += scored.shape[0]
        if progress is not None:
            progress.advance()
    return loss_sum, correct, seen


def evaluate(model: nn.Module, images: DeviceImages, num_classes: int,
             precision: Precision) -> np.ndarray:
    """Per-class correct top-1 counts (int64 [C]) of ``model`` in eval mode on ``images``."""
    model.eval()
    device = images.labels.device
    correct = torch.zeros(num_classes, dtype=torch.int64, device=device)
    with torch.inference_mode():
        for inputs, targets in images.eval_batches(EVAL_BATCH_SIZE):
            with precision():
                logits = model(inputs)
            correct.index_add_(0, targets, (logits.argmax(dim=1) == targets).long())
    return correct.cpu().numpy()


def is_evaluation_epoch(epoch: int, epochs: int, eval_every: int) -> bool:
    return (epoch + 1) % eval_every == 0 or epoch == epochs - 1


def train(data: LTData, method: Method, hparams: Mapping[str, Any], seed: int,
          device: torch.device, progress: RunProgress | None = None,
          checkpoint: ResumeCheckpoint | None = None) -> TrainResult:
    """Train ``hparams["backbone"]`` with ``method``'s head and loss on ``data`` (see the
    module docstring for the protocol); ``progress`` gets ``begin``/``advance``/``epoch_done``.
    With ``checkpoint``, the run continues from its saved state, if any, and saves its state
    at epoch boundaries (:mod:`ltbench.engine.checkpoint`)."""
    on_cuda = device.type == "cuda"
    num_classes = data.num_classes
    epochs = int(hparams["epochs"])
    batch_size = int(hparams["batch_size"])

    init_generator = torch.Generator().manual_seed(derive_seed(seed, "init"))
    model = build_backbone(hparams["backbone"], num_classes, method.head, init_generator)
    if on_cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(device, memory_format=torch.channels_last)
    else:
        model = model.to(device)
    optimizer = build_optimizer(model, hparams)
    precision = mixed_precision(device)
    data_generator = torch.Generator(device=device).manual_seed(derive_seed(seed, "data"))

    train_images = DeviceImages(data.train_images, data.train_labels, hparams["mean"],
                                hparams["std"], int(hparams["pad"]), hparams["pad_mode"],
                                device, channels_last=on_cuda)
    test_images = DeviceImages(data.test_images, data.test_labels, hparams["mean"],
                               hparams["std"], 0, "zero", device, channels_last=on_cuda)
    meta_batch = _no_meta_set
    if method.uses_meta_set and data.meta_images is not None:
        meta_batch = MetaBatches(
            DeviceImages(data.meta_images, data.meta_labels, hparams["mean"], hparams["std"],
                         int(hparams["pad"]), hparams["pad_mode"], device,
                         channels_last=on_cuda),
            int(hparams["meta_batch_size"]),
            torch.Generator(device=device).manual_seed(derive_seed(seed, "meta")))
    num_train = len(train_images)
    per_class_total = np.bincount(data.test_labels.numpy(), minlength=num_classes)
    per_class_correct = np.zeros(num_classes, dtype=np.int64)

    if progress is not None:
        progress.begin(epochs * math.ceil(num_train / batch_size))
    rows = []
    status, error, epochs_completed = "ok", None, 0
    resumable = {"model": model, "optimizer": optimizer, "method": method,
                 "data_order": GeneratorState(data_generator)}
    if isinstance(meta_batch, MetaBatches):
        resumable["meta_batches"] = meta_batch
    if checkpoint is not None and (saved := checkpoint.load(resumable)) is not None:
        epochs_completed, rows = saved["epoch"] + 1, saved["curves"]
        per_class_correct = saved["per_class_correct"].numpy()
        if progress is not None:
            progress.resumed(epochs_completed,
                             epochs_completed * math.ceil(num_train / batch_size))
    for epoch in range(epochs_completed, epochs):
        lr = learning_rate(epoch, hparams)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step = StepContext(lr=lr, precision=precision, meta_batch=meta_batch, seed=seed)
        started = time.perf_counter()
        loss_sum, correct, seen = train_epoch(model, optimizer, train_images, method, epoch,
                                              batch_size, data_generator, step, progress)
        loss_total, correct_total = torch.stack((loss_sum, correct.double())).tolist()
        train_s = time.perf_counter() - started
        train_loss = loss_total / seen
        test_acc, eval_s = math.nan, math.nan
        if not math.isfinite(train_loss):
            status, error = "diverged", f"non-finite training loss in epoch {epoch}"
        elif is_evaluation_epoch(epoch, epochs, int(hparams["eval_every"])):
            started = time.perf_counter()
            per_class_correct = evaluate(model, test_images, num_classes, precision)
            eval_s = time.perf_counter() - started
            test_acc = summarize(per_class_correct, per_class_total,
                                 data.class_counts)["top1_acc"]
        rows.append({"epoch": epoch, "lr": lr, "train_loss": train_loss,
                     "train_acc": 100.0 * correct_total / seen, "test_acc": test_acc,
                     "train_s": train_s, "eval_s": eval_s})
        if progress is not None:
            progress.epoch_done(epoch, epochs, train_loss,
                                None if math.isnan(test_acc) else test_acc)
        if status != "ok":
            break
        epochs_completed = epoch + 1
        if checkpoint is not None:
            checkpoint.epoch_done(epoch, epochs, resumable, curves=rows,
                                  per_class_correct=torch.from_numpy(per_class_correct))

    curves = pd.DataFrame(rows, columns=["epoch", "lr", "train_loss", "train_acc", "test_acc",
                                         "train_s", "eval_s"])
    evaluated = curves.dropna(subset=["test_acc"])
    if len(evaluated):
        best = evaluated["test_acc"].idxmax()  # first maximum: the reference's strict '>'
        best_epoch = int(curves.at[best, "epoch"])
        best_top1_acc = float(curves.at[best, "test_acc"])
    else:
        best_epoch, best_top1_acc = None, math.nan
    return TrainResult(status=status, error=error,
                       per_class_correct=per_class_correct.astype(np.int64),
                       per_class_total=per_class_total.astype(np.int64),
                       best_epoch=best_epoch, best_top1_acc=best_top1_acc, curves=curves,
                       epochs_completed=epochs_completed)
