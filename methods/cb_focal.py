"""Class-balanced focal loss, softmax form as in kaidic/LDAM-DRW.

``l_i = w_{y_i} CE(z_i, y_i)`` with the class-balanced weights of Cui et al. (CVPR 2019,
arXiv:1901.05555; ``beta = 0.9999``, sum-to-C), ``p_i = exp(-l_i)`` and
``L = mean_i (1 - p_i)**gamma * l_i``, ``gamma = 1`` (kaidic/LDAM-DRW : losses.py ``FocalLoss``
with cifar_train.py's ``Reweight`` weights; protocols.md §3.2, §3.3).

Reference quirk, kept on purpose: ``p_i`` comes from the *weighted* CE, so it is not the model's
probability of the true class. The batch reduction is a plain mean (not divided by the weights),
and this is not Cui et al.'s own CB focal, which is one-vs-all sigmoid focal with
``alpha = w_{y_i}`` (richardaecn/class-balanced-loss : src/cifar_main.py).
"""

from __future__ import annotations

import torch

from ..api import focal_loss
from .cb_ce import ClassBalancedCE
from .focal import Focal


class ClassBalancedFocal(ClassBalancedCE):
    family = "re-weighting"
    summary = "Softmax focal loss (gamma 1) with class-balanced weights, beta 0.9999"
    paper = ("Cui, Jia, Lin, Song, Belongie, CVPR 2019, arXiv:1901.05555; "
             "code kaidic/LDAM-DRW : losses.py (FocalLoss) + cifar_train.py (Reweight)")
    defaults = {**Focal.defaults, **ClassBalancedCE.defaults}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return focal_loss(logits, targets, self.hparams["gamma"], weight=self.class_weights)
