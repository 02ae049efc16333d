"""Logit-adjusted loss (Menon et al., ICLR 2021, arXiv:2007.07314; loss form).

``L = mean_i CE(z_i + log(π**tau + 1e-12), y_i)`` with ``π_j = n_j / sum_k n_k`` the training
label frequencies and ``tau = 1`` (google-research/google-research :
logit_adjustment/utils.py ``build_loss_fn``, ``--mode loss``; protocols.md §3.14). The
``1e-12`` guard is the reference's; with ``tau = 1`` it is negligible for any non-empty class.
Prediction uses the raw logits (the post-hoc variant is a different method).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..api import Method



class LogitAdjustedLoss(Method):
    family = "logit-adjustment"
    summary = "Logit-adjusted cross-entropy: logits + tau * log prior, tau 1"
    paper = ("Menon, Jayasumana, Rawat, Jain, Veit, Kumar, ICLR 2021, arXiv:2007.07314; "
             "code google-research/google-research : logit_adjustment/utils.py (build_loss_fn)")
    defaults = {"tau": 1.0}

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        prior = class_counts.to(torch.float64) / class_counts.sum()
        self.log_prior_offsets = (prior.pow(hparams["tau"]) + 1e-12).log().to(torch.float32)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits + self.log_prior_offsets, targets)
