"""Cross-entropy with deferred re-weighting (CE-DRW; Cao et al., NeurIPS 2019, arXiv:1906.07413).

Before ``drw_epoch`` (160 of 200): plain mean CE. From it on: class-balanced weights
``w_j ∝ (1 - beta) / (1 - beta**n_j)``, ``beta = 0.9999``, sum-to-C, as PyTorch's weighted mean
``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (kaidic/LDAM-DRW : cifar_train.py ``--loss_type CE
--train_rule DRW``; protocols.md §3.9, §3.3).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..api import DRW_DEFAULTS, DeferredReweighting, Method



class CrossEntropyDRW(Method):
    family = "re-weighting"
    summary = "Cross-entropy, class-balanced re-weighting deferred to the first lr decay"
    paper = ("Cao, Wei, Gaidon, Arechiga, Ma, NeurIPS 2019, arXiv:1906.07413; "
             "code kaidic/LDAM-DRW : cifar_train.py (--loss_type CE --train_rule DRW)")
    defaults = DRW_DEFAULTS

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.deferred_weights = DeferredReweighting(class_counts, hparams)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits, targets, weight=self.deferred_weights(epoch))
