"""Cross-entropy (CE / ERM), the long-tailed baseline.

``L = mean_i -log softmax(z_i)[y_i]``: uniform sampling, no class weights (protocols.md §3.1;
kaidic/LDAM-DRW : cifar_train.py with ``--loss_type CE --train_rule None``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..api import Method



class CrossEntropy(Method):
    family = "loss"
    summary = "Softmax cross-entropy, no re-weighting (ERM baseline)"
    paper = ("ERM baseline as run by Cao et al., NeurIPS 2019, arXiv:1906.07413; "
             "code kaidic/LDAM-DRW : cifar_train.py (--loss_type CE --train_rule None)")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits, targets)
