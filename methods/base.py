"""The method plugin contract, and the loss pieces several methods share.

A method is a class registered in the ``ltbench.methods`` entry-point group. The harness builds
one instance per run, after the data is loaded, and calls :meth:`Method.loss` on every batch::

    method = MethodClass(class_counts, hparams)      # class_counts: float64 tensor, on device
    loss = method.loss(logits, targets, epoch)        # logits: fp32 [B, C]; returns a scalar

``hparams`` is the run's fully resolved hyper-parameter dict (protocol + the method's own
``defaults`` + overrides). A method needs nothing else: no global state, no randomness.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F

from ..hparams import EpochOf


class Method:
    """Base class of every method. Plain cross-entropy overrides nothing but :meth:`loss`.

    Class attributes a method sets:

    * ``summary``: one line for ``ltbench list``;
    * ``paper``: the reference (authors, venue, arXiv id) and the code it follows;
    * ``head``: ``"linear"`` or ``"cosine"`` (LDAM's NormedLinear);
    * ``defaults``: the method's own hyper-parameters with their reference values;
      epoch-valued ones as :class:`~ltbench.hparams.EpochOf` so ``--epochs`` rescales them.
    """

    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    head: ClassVar[str] = "linear"
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        self.class_counts = class_counts
        self.hparams = hparams

    @classmethod
    def supports(cls, dataset: str) -> bool:
        """Whether the method applies to ``dataset``; ``--methods all`` skips it otherwise."""
        return True

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        raise NotImplementedError


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
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax focal loss exactly as kaidic/LDAM-DRW : losses.py (``FocalLoss``).

    ``l_i`` is the (optionally class-weighted) per-example cross-entropy, ``p_i = exp(-l_i)``
    and the loss is ``mean_i (1 - p_i)**gamma * l_i`` over the batch. With weights, ``p_i`` is
    computed from the weighted CE, so it is not the model's probability: that is the reference
    code's behaviour (protocols.md §3.2), reproduced on purpose and named here.
    """
    per_example = F.cross_entropy(logits, targets, weight=weight, reduction="none")
    p = torch.exp(-per_example)
    return ((1.0 - p) ** gamma * per_example).mean()


DRW_DEFAULTS = {"beta": 0.9999, "drw_epoch": EpochOf(160)}
