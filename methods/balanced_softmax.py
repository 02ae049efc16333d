"""Balanced Softmax (Ren et al., NeurIPS 2020, arXiv:2007.10740).

``L = mean_i CE(z_i + log n, y_i)``: every logit is shifted by the log of its class's training
count (jiawei-ren/BalancedMetaSoftmax-Classification : loss/BalancedSoftmaxLoss.py;
protocols.md §3.13). Prediction uses the raw logits. Because ``log n_j = log π_j + log N``
differs from the log-prior by a constant, this equals logit-adjusted CE with ``tau = 1``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..api import Method



class BalancedSoftmax(Method):
    family = "logit-adjustment"
    summary = "Balanced Softmax: cross-entropy on logits + log class counts"
    paper = ("Ren, Yu, Sheng, Ma, Zhao, Yi, Li, NeurIPS 2020, arXiv:2007.10740; code "
             "jiawei-ren/BalancedMetaSoftmax-Classification : loss/BalancedSoftmaxLoss.py")

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.log_counts = class_counts.to(torch.float64).log().to(torch.float32)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits + self.log_counts, targets)
