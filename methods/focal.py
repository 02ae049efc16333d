"""Softmax focal loss (Lin et al., ICCV 2017, arXiv:1708.02002), LDAM-DRW's form.

``l_i = CE(z_i, y_i)``, ``p_i = exp(-l_i)``, ``L = mean_i (1 - p_i)**gamma * l_i`` with
``gamma = 1`` (kaidic/LDAM-DRW : losses.py ``FocalLoss`` and cifar_train.py; protocols.md §3.2).
This is the softmax form, not the one-vs-all sigmoid form of
richardaecn/class-balanced-loss : src/cifar_main.py.
"""

from __future__ import annotations

import torch

from ..api import Method, focal_loss



class Focal(Method):
    family = "loss"
    summary = "Softmax focal loss, gamma 1 (LDAM-DRW's FocalLoss)"
    paper = ("Lin, Goyal, Girshick, He, Dollar, ICCV 2017, arXiv:1708.02002; "
             "code kaidic/LDAM-DRW : losses.py (FocalLoss)")
    defaults = {"gamma": 1.0}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return focal_loss(logits, targets, self.hparams["gamma"])
