"""Class-balanced softmax cross-entropy (Cui et al., CVPR 2019, arXiv:1901.05555).

Class weights ``w_j = (1 - beta) / (1 - beta**n_j)`` normalised to ``sum_j w_j = C``
(``beta = 0.9999``; protocols.md §3.3). The loss is PyTorch's weighted mean
``L = sum_i w_{y_i} l_i / sum_i w_{y_i}`` (``F.cross_entropy(weight=w)``), which is
kaidic/LDAM-DRW : cifar_train.py's ``Reweight`` rule (protocols.md §3.9); the TensorFlow code of
Cui et al. divides by the batch size instead, a different scale (protocols.md §3.3).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..api import Method, class_balanced_weights



class ClassBalancedCE(Method):
    family = "re-weighting"
    summary = "Cross-entropy weighted by inverse effective number, beta 0.9999 (weighted mean)"
    paper = ("Cui, Jia, Lin, Song, Belongie, CVPR 2019, arXiv:1901.05555; "
             "code kaidic/LDAM-DRW : cifar_train.py (--train_rule Reweight)")
    defaults = {"beta": 0.9999}

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.class_weights = class_balanced_weights(class_counts, hparams["beta"])

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits, targets, weight=self.class_weights)
