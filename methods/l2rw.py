"""Learning to Reweight Examples (L2RW; Ren, Zeng, Yang, Urtasun, ICML 2018, arXiv:1803.09050).

Every step, from epoch 0 (Algorithm 1 of the paper; protocols.md §3.5): per-example
cross-entropy ``ℓ_i(θ)`` from one forward; ε = 0; look-ahead ``θ' = θ − α ∇_θ Σ_i ε_i ℓ_i``
with α the main optimiser's current learning rate (plain SGD, second order kept); meta loss =
mean cross-entropy of ``f_θ'`` on one meta batch; ``g = ∂L_meta/∂ε``; ``w̃_i = max(−g_i, 0)``,
``w_i = w̃_i / Σ_j w̃_j`` (left unnormalised when the sum is 0, selected with ``torch.where`` so
nothing synchronises); real update ``Σ_i w_i ℓ_i(θ)``, reusing the forward
(:mod:`ltbench.methods.lookahead`).

L2RW has no released CIFAR-LT code (the official TF code was not read; the step follows the
paper and the port danieltan07/learning-to-reweight-examples); the MW-Net and Jamal tables ran
it in their own protocol, so ltbench uses the ``jamal`` protocol (200 epochs, batch 100, 10 meta
images per class, ``meta_batch_size`` 100).

Recorded per epoch and class (:mod:`ltbench.methods.weight_histograms`): ``weight`` = ``B·w_i``
(the factor of ``ℓ_i`` in a batch-mean form, 1 = plain CE) and ``eps`` = ``−g_i``, the one-step
score before clipping and normalisation (the L2RW analogue of Jamal's ε).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..api import Method, StepContext
from .lookahead import meta_gradient
from .weight_histograms import RecordsWeights, WeightHistograms


def l2rw_weights(meta_grad: torch.Tensor) -> torch.Tensor:
    """``max(−g, 0)`` normalised to sum to 1, or unnormalised (all zero) if its sum is 0."""
    clipped = torch.clamp(-meta_grad, min=0.0)
    total = clipped.sum()
    return clipped / torch.where(total > 0, total, torch.ones_like(total))


class LearningToReweight(RecordsWeights, Method):
    family = "meta-learning"
    summary = "L2RW: per-batch example weights max(-meta-gradient, 0), normalised, from epoch 0"
    paper = ("Ren, Zeng, Yang, Urtasun, ICML 2018, arXiv:1803.09050 (Algorithm 1); "
             "no CIFAR-LT reference code")
    protocol = "jamal"
    uses_meta_set = True
    defaults = {"meta_batch_size": 100}

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.histograms = WeightHistograms(class_counts.numel())

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        """Mean cross-entropy: the meta loss (and the loss every weight being equal)."""
        return F.cross_entropy(logits, targets)

    def training_loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      epoch: int, step: StepContext
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = model(inputs)  # fp32: the meta gradient differentiates through it
        example_losses = F.cross_entropy(logits.float(), targets, reduction="none")
        meta_inputs, meta_targets = step.meta_batch()
        eps = torch.zeros_like(example_losses, requires_grad=True)
        (meta_grad,) = meta_gradient(
            model, example_losses, eps, step.lr, meta_inputs,
            lambda meta_logits: self.loss(meta_logits.float(), meta_targets, epoch), (eps,))
        weights = l2rw_weights(meta_grad)
        self.histograms.record(epoch, targets, eps=-meta_grad,
                               weight=weights * targets.shape[0])
        return (weights * example_losses).sum(), logits, targets
