"""LDAM with deferred re-weighting (LDAM-DRW; Cao et al., NeurIPS 2019, arXiv:1906.07413).

The LDAM loss of :mod:`ltbench.methods.ldam` (``max_m = 0.5``, ``s = 30``, cosine head), unweighted
before ``drw_epoch`` (160 of 200) and weighted from it on by class-balanced weights
(``beta = 0.9999``, sum-to-C) as PyTorch's weighted mean (kaidic/LDAM-DRW : cifar_train.py
``--loss_type LDAM --train_rule DRW``; protocols.md §3.8, §3.9).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..api import DRW_DEFAULTS, DeferredReweighting
from .ldam import LDAM, ldam_loss


class LDAMDRW(LDAM):
    family = "margin"
    summary = "LDAM margins + class-balanced re-weighting deferred to the first lr decay"
    paper = ("Cao, Wei, Gaidon, Arechiga, Ma, NeurIPS 2019, arXiv:1906.07413; "
             "code kaidic/LDAM-DRW : losses.py (LDAMLoss) + cifar_train.py (--train_rule DRW)")
    defaults = {**LDAM.defaults, **DRW_DEFAULTS}

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.deferred_weights = DeferredReweighting(class_counts, hparams)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return ldam_loss(logits, targets, self.margins, self.hparams["s"],
                         weight=self.deferred_weights(epoch))
