"""Learnable weight scaling, LWS (Kang et al., ICLR 2020, arXiv:1910.09217, Sec. 4;
protocols.md §3.10).

The stage-1 ``ce`` backbone, classifier weights and bias stay frozen; only one scale per class
``f_j`` (initialised to 1) is learnt: logits ``f_j · (w_j · x + b_j)``
(facebookresearch/classifier-balancing : models/TauNormClassifier.py, config/*/cls_lws.yaml),
with class-balanced sampling. CIFAR defaults (ltbench's choice, see
:data:`~ltbench.methods.two_stage.STAGE2_TRAINING`): 5 epochs as the reference configs, batch
128, lr 0.05, weight decay 5e-4, cosine to 0.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..api import LTData
from .two_stage import STAGE2_TRAINING, FrozenBackboneClassifier, TwoStageMethod


class ScaledLinear(nn.Module):
    """``scales * linear(x)`` with ``linear`` frozen and ``scales`` [C] learnable, all ones."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear.requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(linear.out_features,
                                              device=linear.weight.device))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scales * self.linear(features)


class LearnableWeightScaling(TwoStageMethod):
    family = "decoupled"
    summary = "LWS: frozen CE backbone and classifier, one learnt scale per class, class-balanced"
    paper = ("Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, ICLR 2020, arXiv:1910.09217; "
             "code facebookresearch/classifier-balancing : config/*/cls_lws.yaml")
    defaults = {**STAGE2_TRAINING, "stage2_epochs": 5}

    def build_classifier(self, backbone: nn.Module, data: LTData, device: torch.device,
                         seed: int) -> nn.Module:
        return FrozenBackboneClassifier(backbone, ScaledLinear(backbone.head))
