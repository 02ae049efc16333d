"""Meta-learned conditional weights on top of class-balanced weights (Jamal et al., CVPR 2020).

Jamal, Brown, Yang, Wang, Gong, "Rethinking Class-Balanced Methods for Long-Tailed Visual
Recognition from a Domain Adaptation Perspective", CVPR 2020, arXiv:2003.10780; released CIFAR
code abdullahjamal/Longtail_DA : C-LT/main.py (protocols.md §3.7). "Ours with cross-entropy /
focal / LDAM loss" of the paper's CIFAR table are ``meta-ce``, ``meta-focal``, ``meta-ldam``.

Each example gets the weight ``w_{y_i}(1 + ε_i)``: ``w_y`` the class-balanced weight (effective
number, β = 0.9999, normalised to sum to C) and ε_i a conditional correction estimated per batch
on the balanced meta set. Schedule:

* **stage 1** (epochs < ``meta_start_epoch``): the plain, un-weighted base loss (mean over the
  batch) — bit-identical to the ``ce`` / ``focal`` / ``ldam`` methods under the same protocol;
* **stage 2**, every batch: per-example base losses ``ℓ_i(θ)`` from one forward; ε = 0;
  a look-ahead ``θ' = θ − α_meta ∇_θ Σ_i w_i(ε) ℓ_i`` (a sum, plain SGD); the meta loss = the
  base loss (mean) of ``f_θ'`` on one meta batch; ``ε_i = −η_ε ∂L_meta/∂ε_i`` (one step from 0,
  no clipping, no normalisation); the real update is ``mean_i w_i(ε) ℓ_i(θ)``, reusing the
  stage-2 forward (:mod:`ltbench.methods.lookahead`).

Weight forms (``eps_form``): ``multiplicative`` (default), the paper's ``w_i = w_y(1 + ε_i)``;
``additive``, the released code's ``w_i = w_y + ε_i``. They coincide up to ε ↦ ε·w_y, but with
the same fixed step η_ε = 0.01 the effective step differs per class (protocols.md §3.7, §4).

Defaults and their sources (the run record's hparams state every value):

* protocol ``jamal`` (:data:`ltbench.datasets.cifar_protocols.JAMAL_CIFAR`): 200 epochs, batch 100,
  lr 0.1 ×0.01 at epochs 159 and 179, Nesterov momentum 0.9, weight decay 5e-4, reflect padding, the
  reference's normalisation — C-LT/main.py argparse defaults and ``adjust_learning_rate`` (called
  with epoch + 1); 10 meta images per class removed before the 4990 / 490-cap subset —
  C-LT/data_utils.py ``num_meta`` and main.py (datasets.md §2.5);
* ``meta_start_epoch`` 160: main.py (``if epoch < 160: train(...) else: train_meta(...)``);
* ``beta`` 0.9999: main.py ``per_cls_weights``;
* ``meta_lr`` 0.1 (main.py uses ``args.lr``), ``meta_lr_decay`` 0.01 at ``meta_lr_milestones``
  160 and 180 on the 0-based epoch: main.py ``train_meta``
  (``meta_lr = args.lr * 0.01**(epoch >= 160) * 0.01**(epoch >= 180)``);
* ``eps_lr`` 0.01: main.py (``new_eps = eps - 0.01 * grad_eps``); the paper gives no step for
  the multiplicative form, which uses the same 0.01;
* ``eps_form`` ``multiplicative``: the paper and the authors' CVPR 2020 presentation;
  ``additive``: main.py;
* ``meta_batch_size`` 100: main.py (``validation_loader``, ``batch_size=args.batch_size``).

The focal and LDAM variants are not in the released code (protocols.md §5): ltbench uses
LDAM-DRW's softmax focal loss (γ = 1) and LDAM loss (cosine head, s = 30, max margin 0.5) as the
base loss in both stages, per-example in stage 2 and as the meta loss — a design choice; the
released code's meta loss is the plain mean cross-entropy, which ``meta-ce`` uses.

ε and the final weights of every stage-2 example are recorded per epoch and class
(:mod:`ltbench.methods.weight_histograms`; artifacts ``eps`` and ``eps_summary``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..api import Method, StepContext, class_balanced_weights, focal_loss, step_decay
from ..hparams import EpochOf
from .focal import Focal
from .ldam import LDAM, ldam_loss, ldam_margins
from .lookahead import meta_gradient
from .weight_histograms import RecordsWeights, WeightHistograms

EPS_FORMS = ("multiplicative", "additive")

#: The two-stage schedule shared with ``cb-finetune`` and ``meta-set-finetune``.
STAGE2_DEFAULTS = {"meta_start_epoch": EpochOf(160)}


def combined_weights(class_weights: torch.Tensor, eps: torch.Tensor, eps_form: str
                     ) -> torch.Tensor:
    """``w_y(1 + ε)`` (multiplicative) or ``w_y + ε`` (additive), per example."""
    if eps_form == "multiplicative":
        return class_weights * (1.0 + eps)
    return class_weights + eps


def conditional_weights(model: nn.Module, example_losses: torch.Tensor,
                        class_weights: torch.Tensor, eps_form: str, eps_lr: float,
                        step_size: float, meta_inputs: torch.Tensor,
                        meta_loss: Callable[[torch.Tensor], torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ε, w)`` of one batch: ``ε = −eps_lr · ∂L_meta/∂ε`` at ε = 0, where ``L_meta`` is
    ``meta_loss`` after the look-ahead of ``step_size`` on ``Σ_i w_i(ε) ℓ_i``, and
    ``w = combined_weights(class_weights, ε, eps_form)``; both detached."""
    eps = torch.zeros_like(example_losses, requires_grad=True)
    (grad,) = meta_gradient(model, example_losses, combined_weights(class_weights, eps, eps_form),
                            step_size, meta_inputs, meta_loss, (eps,))
    new_eps = -eps_lr * grad
    return new_eps, combined_weights(class_weights, new_eps, eps_form)


class ConditionalReweighting(RecordsWeights, Method):
    """The shared two-stage method; subclasses give the base loss (see the module docstring)."""

    family = "meta-learning"
    protocol = "jamal"
    uses_meta_set = True
    choices = {"eps_form": EPS_FORMS}
    defaults = {
        **STAGE2_DEFAULTS,
        "beta": 0.9999,
        "eps_form": "multiplicative",
        "eps_lr": 0.01,
        "meta_lr": 0.1,
        "meta_lr_decay": 0.01,
        "meta_lr_milestones": (EpochOf(160), EpochOf(180)),
        "meta_batch_size": 100,
    }

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.meta_start_epoch = int(hparams["meta_start_epoch"])
        self.class_weights = class_balanced_weights(class_counts, hparams["beta"])
        self.histograms = WeightHistograms(class_counts.numel())

    def base_loss(self, logits: torch.Tensor, targets: torch.Tensor,
                  reduction: str) -> torch.Tensor:
        """The base loss, ``reduction`` ``"mean"`` or ``"none"`` (per example)."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        """The un-weighted base loss (stage 1, and the meta loss)."""
        return self.base_loss(logits, targets, "mean")

    def meta_step_size(self, epoch: int) -> float:
        """α_meta of the 0-based ``epoch``."""
        hp = self.hparams
        return step_decay(hp["meta_lr"], hp["meta_lr_decay"], hp["meta_lr_milestones"], epoch)

    def training_loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      epoch: int, step: StepContext
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if epoch < self.meta_start_epoch:
            return super().training_loss(model, inputs, targets, epoch, step)
        logits = model(inputs)  # fp32: the meta gradient differentiates through it
        example_losses = self.base_loss(logits.float(), targets, "none")
        meta_inputs, meta_targets = step.meta_batch()
        eps, weights = conditional_weights(
            model, example_losses, self.class_weights[targets], self.hparams["eps_form"],
            self.hparams["eps_lr"], self.meta_step_size(epoch), meta_inputs,
            lambda meta_logits: self.loss(meta_logits.float(), meta_targets, epoch))
        self.histograms.record(epoch, targets, eps=eps, weight=weights)
        return (weights * example_losses).mean(), logits, targets


class MetaCE(ConditionalReweighting):
    summary = ("Jamal et al.: CE pre-training, then CB weights x (1 + meta-learned eps) "
               "on a balanced meta set")
    paper = ("Jamal, Brown, Yang, Wang, Gong, CVPR 2020, arXiv:2003.10780; "
             "code abdullahjamal/Longtail_DA : C-LT/main.py (train_meta)")

    def base_loss(self, logits: torch.Tensor, targets: torch.Tensor,
                  reduction: str) -> torch.Tensor:
        return F.cross_entropy(logits, targets, reduction=reduction)


class MetaFocal(ConditionalReweighting):
    summary = "Jamal et al. with softmax focal loss (gamma 1) as the base loss"
    paper = ("Jamal, Brown, Yang, Wang, Gong, CVPR 2020, arXiv:2003.10780; focal variant not "
             "in the released code; focal loss of kaidic/LDAM-DRW : losses.py")
    defaults = {**ConditionalReweighting.defaults, **Focal.defaults}

    def base_loss(self, logits: torch.Tensor, targets: torch.Tensor,
                  reduction: str) -> torch.Tensor:
        return focal_loss(logits, targets, self.hparams["gamma"], reduction=reduction)


class MetaLDAM(ConditionalReweighting):
    summary = "Jamal et al. with the LDAM loss (cosine head, s 30) as the base loss"
    paper = ("Jamal, Brown, Yang, Wang, Gong, CVPR 2020, arXiv:2003.10780; LDAM variant not "
             "in the released code; LDAM loss of kaidic/LDAM-DRW : losses.py")
    head = "cosine"
    defaults = {**ConditionalReweighting.defaults, **LDAM.defaults}

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.margins = ldam_margins(class_counts, hparams["max_m"])

    def base_loss(self, logits: torch.Tensor, targets: torch.Tensor,
                  reduction: str) -> torch.Tensor:
        return ldam_loss(logits, targets, self.margins, self.hparams["s"], reduction=reduction)
