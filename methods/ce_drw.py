"""Cross-entropy with deferred re-weighting (CE-DRW; Cao et al., NeurIPS 2019, arXiv:1906.07413).

Before ``drw_epoch`` (160 of 200): plain mean CE. From it on: class-balanced weights
``w_j ∝ (1 - beta) / (1 - beta**n_j)``, ``beta = 0.9999``, sum-to-C, as PyTorch's weighted mean
``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (kaidic/LDAM-DRW : cifar_train.py ``--loss_type CE
--train_rule DRW``; protocols.md §3.9, §3.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import DRW_DEFAULTS, Method, deferred_weights


class CrossEntropyDRW(Method):
    summary = "Cross-entropy, class-balanced re-weighting deferred to the first lr decay"
    paper = ("Cao, Wei, Gaidon, Arechiga, Ma, NeurIPS 2019, arXiv:1906.07413; "
             "code kaidic/LDAM-DRW : cifar_train.py (--loss_type CE --train_rule DRW)")
    defaults = DRW_DEFAULTS

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        weights = deferred_weights(self.class_counts, self.hparams["beta"],
                                   self.hparams["drw_epoch"], epoch)
        return F.cross_entropy(logits, targets, weight=weights)
