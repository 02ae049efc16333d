"""The method plugin contract, and the loss pieces several methods share.

A method is a class registered in the ``ltbench.methods`` entry-point group. The harness builds
one instance per run, after the data is loaded, and calls :meth:`Method.training_loss` on every
batch, then back-propagates the loss and steps the optimiser::

    method = MethodClass(class_counts, hparams)      # class_counts: float64 tensor, on device
    loss, logits, targets = method.training_loss(model, inputs, targets, epoch, step)
    ...                                               # after training:
    frames = method.artifacts()                       # {name: DataFrame}, stored with the run

The default :meth:`Method.training_loss` is one forward of the model and :meth:`Method.loss`
(fp32 logits [B, C] → a scalar), so a loss-only method overrides nothing else. Meta-learning
methods override :meth:`Method.training_loss` and use the :class:`StepContext` (current learning
rate, precision context, batches of the balanced meta set, the run's seed).

``hparams`` is the run's fully resolved hyper-parameter dict (protocol + the method's own
``defaults`` + overrides). A method needs nothing else: no global state; any randomness it needs
comes from generators seeded from ``StepContext.seed`` through :func:`ltbench.spec.derive_seed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, ContextManager, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..hparams import EpochOf

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class StepContext:
    """What the engine hands to :meth:`Method.training_loss` besides the batch.

    * ``lr``: the main optimiser's learning rate in this epoch;
    * ``precision``: factory of the forward pass's precision context (bf16 autocast where the
      run's numerics are bf16, :class:`~ltbench.engine.steps.Numerics`); a step that
      differentiates through its own forward twice (the meta-learning look-ahead,
      :mod:`ltbench.methods.lookahead`) runs that forward without it, in fp32;
    * ``meta_batch``: returns the next augmented batch ``(inputs, targets)`` of the balanced meta
      set, or None when the run has no meta set (the method does not use one);
    * ``seed``: the run's training seed, for the method's own named random streams.
    """

    lr: float
    precision: Callable[[], ContextManager[Any]]
    meta_batch: Callable[[], tuple[torch.Tensor, torch.Tensor] | None]
    seed: int


class Method:
    """Base class of every method. Plain cross-entropy overrides nothing but :meth:`loss`.

    Class attributes a method sets:

    * ``family``: the method's family, one of :data:`ltbench.families.FAMILIES` (``"loss"``,
      ``"re-weighting"``, ..., ``"label-shift"``) or a plugin's own; stored in every record,
      it orders the rows of result tables;
    * ``summary``: one line for ``ltbench list``;
    * ``paper``: the reference (authors, venue, arXiv id) and the code it follows;
    * ``head``: ``"linear"`` or ``"cosine"`` (LDAM's NormedLinear);
    * ``defaults``: the method's own hyper-parameters with their reference values;
      epoch-valued ones as :class:`~ltbench.hparams.EpochOf` so ``--epochs`` rescales them;
      they override the protocol's values;
    * ``choices``: the allowed values of those of its own hyper-parameters that name one of a
      fixed set, checked when the grid is planned (:func:`ltbench.hparams.check_values`);
    * ``protocol``: the dataset protocol the method's reference used (e.g. ``"jamal"``), or None
      for the dataset's default; ``--set protocol=X`` overrides both;
    * ``uses_meta_set``: True if :meth:`training_loss` draws meta batches (the grid then
      requires ``meta_per_class >= 1``);
    * ``stage1``: the name of the method whose finished run's final model this method starts
      from (two-stage methods, :class:`ltbench.methods.two_stage.TwoStageMethod`), or None;
    * ``selection_rule``: how the reported model was chosen, stored with the run: ``"last"``
      (the final epoch, nothing selected); a method that selects something (τ) sets it on the
      instance, e.g. ``"last,tau=val"`` (on the validation split, never the test set);
    * ``uses_target_prior``: True if the method's prediction rule takes the test label
      distribution: on a shifted test set :mod:`ltbench.metrics.shifted` adds ``log p_target``
      to its logits (PC softmax, LADE; protocols.md §1.4).
    """

    family: ClassVar[str | None] = None
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    head: ClassVar[str] = "linear"
    defaults: ClassVar[Mapping[str, Any]] = {}
    choices: ClassVar[Mapping[str, Sequence[str]]] = {}
    protocol: ClassVar[str | None] = None
    uses_meta_set: ClassVar[bool] = False
    stage1: ClassVar[str | None] = None
    uses_target_prior: ClassVar[bool] = False
    selection_rule: str = "last"

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        self.class_counts = class_counts
        self.hparams = hparams

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      epoch: int, step: StepContext
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss to back-propagate for one training batch, with the logits and targets the
        engine scores the batch's train accuracy on (a method that trains on other examples
        than the batch returns those). Default: one forward under ``step.precision()`` and
        :meth:`loss` on the fp32 logits."""
        with step.precision():
            logits = model(inputs)
        return self.loss(logits.float(), targets, epoch), logits, targets

    @classmethod
    def groupable(cls) -> bool:
        """Whether runs of this method can share a grouped pack (architecture.md §5.1): its
        batch loss is the default forward + :meth:`loss`, and it draws no meta-set batches."""
        return cls.training_loss is Method.training_loss and not cls.uses_meta_set

    def state_dict(self) -> dict[str, Any]:
        """The method's own training state (networks, optimisers, recorded values) after any
        training step, at an epoch boundary or within an epoch, for resume checkpoints:
        tensors and plain Python values only, taken without changing the state. Methods whose
        only state is computed in ``__init__`` from the counts and hparams keep the default."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, on a freshly constructed method."""

    def artifacts(self) -> dict[str, pd.DataFrame]:
        """Per-run tables the method produced (e.g. weight histograms), stored next to the
        run's record as ``<name>/<run_id>.parquet``; called once, after training."""
        return {}


def class_balanced_weights(class_counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Effective-number class weights (Cui et al., CVPR 2019, arXiv:1901.05555, Eq. 3).

    ``w_j = (1 - beta) / (1 - beta**n_j)``, normalised to sum to the number of classes, as in
    richardaecn/class-balanced-loss : src/cifar_main.py and kaidic/LDAM-DRW : cifar_train.py.
    ``beta = 0`` gives all ones. Computed in float64, returned as float32.
    """
    counts = class_counts.to(torch.float64)
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64,
                                                           device=counts.device), counts))
    return (weights / weights.sum() * counts.numel()).to(torch.float32)


class DeferredReweighting:
    """Deferred re-weighting (DRW; Cao et al., NeurIPS 2019, arXiv:1906.07413, Sec. 3.3).

    Calling it with an epoch gives the class weights of that epoch: ``None`` (unweighted)
    before ``hparams["drw_epoch"]``, class-balanced weights with ``hparams["beta"]`` from it on,
    as kaidic/LDAM-DRW : cifar_train.py (``train_rule == 'DRW'``, ``betas = [0, 0.9999]``).
    The weights are computed once, so the per-batch call launches nothing.
    """

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        self.start_epoch = int(hparams["drw_epoch"])
        self.weights = class_balanced_weights(class_counts, hparams["beta"])

    def __call__(self, epoch: int) -> torch.Tensor | None:
        return self.weights if epoch >= self.start_epoch else None


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float,
               weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Softmax focal loss exactly as kaidic/LDAM-DRW : losses.py (``FocalLoss``).

    ``l_i`` is the (optionally class-weighted) per-example cross-entropy, ``p_i = exp(-l_i)``
    and the loss is ``mean_i (1 - p_i)**gamma * l_i`` over the batch (``reduction="none"``:
    the per-example terms). With weights, ``p_i`` is computed from the weighted CE, so it is not
    the model's probability: that is the reference code's behaviour (protocols.md §3.2),
    reproduced on purpose and named here.
    """
    per_example = F.cross_entropy(logits, targets, weight=weight, reduction="none")
    p = torch.exp(-per_example)
    focal = (1.0 - p) ** gamma * per_example
    return focal if reduction == "none" else focal.mean()


def step_decay(base: float, decay: float, milestones: Sequence[int], epoch: int) -> float:
    """``base · decay ** k`` with k the number of ``milestones`` m with ``epoch >= m``."""
    return base * float(decay) ** sum(epoch >= int(milestone) for milestone in milestones)


#: DRW's β and start: epoch 160 of the 200 of the LDAM-DRW CIFAR protocol (protocols.md §3.9),
#: stated as a fraction of the run so that it starts at 80 % of any protocol's length (72 of
#: ImageNet-LT's 90; no reference states DRW for the ImageNet-style protocols).
DRW_DEFAULTS = {"beta": 0.9999, "drw_epoch": EpochOf(160, of=200)}
