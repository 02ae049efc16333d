"""LADE: label-distribution-disentangling loss (Hong et al., CVPR 2021, arXiv:2012.00321;
protocols.md §3.12).

``L = L_LADE-CE + α · L_LADER`` on the logits z [N, C] of a batch of N examples:

* LADE-CE (hyperconnect/LADE : loss/PriorCELoss.py): ``CE(z + log p_s, y)``, p_s the training
  label frequencies;
* LADER (loss/LADELoss.py), a regularised Donsker–Varadhan bound per class c:
  ``first_c`` = mean of ``z_{i,c}`` over the batch's examples of class c (0 when none),
  ``second_c = logsumexp_i(z_{i,c} − log p_s(c) + log(1/C)) − log N`` over the whole batch,
  ``bound_c = first_c − second_c − λ · second_c²`` and ``L_LADER = −Σ_c p_s(c) · bound_c``.
  The code subtracts the prior of the column class c where the paper weights each example by
  the ratio of its own label's priors; ltbench follows the code (protocols.md §3.12, §4).

CIFAR-100-LT defaults α = 0.1 and λ = 0.01 (hyperconnect/LADE : README.md, IF 100 command).
Inference adds ``log p_t`` of the target label distribution (run_networks.py ``eval``): on the
balanced test set a constant, so the logits are used as they are; on the shifted test sets
:mod:`ltbench.metrics.shifted` adds each set's true ``log p_t``. The training protocol is the
dataset's (LDAM CIFAR protocol), not LADE's own CIFAR schedule (protocols.md §2.1 LADE row).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..api import Method



def lader_loss(logits: torch.Tensor, targets: torch.Tensor, log_prior: torch.Tensor,
               remine_lambda: float) -> torch.Tensor:
    """The LADER regulariser of the module docstring (fp32 logits [N, C], log p_s [C])."""
    n, num_classes = logits.shape
    one_hot = F.one_hot(targets, num_classes).to(logits.dtype)           # [N, C]
    per_class = one_hot.sum(dim=0)
    first = (logits * one_hot).sum(dim=0) / (per_class + 1e-8)
    second = (torch.logsumexp(logits - log_prior - math.log(num_classes), dim=0)
              - math.log(n))
    bound = first - second - remine_lambda * second.pow(2)
    return -(log_prior.exp() * bound).sum()


class LADE(Method):
    family = "label-shift"
    summary = "LADE: CE on logits + log prior, plus alpha * LADER; test logits + log p_target"
    paper = ("Hong, Han, Choi, Chun, Kwak, Kim, Kim, CVPR 2021, arXiv:2012.00321; code "
             "hyperconnect/LADE : loss/PriorCELoss.py, loss/LADELoss.py")
    defaults = {"lade_alpha": 0.1, "lade_lambda": 0.01}
    uses_target_prior = True

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        counts = class_counts.to(torch.float64)
        self.log_prior = (counts / counts.sum()).log().to(torch.float32)
        self.alpha = float(hparams["lade_alpha"])
        self.remine_lambda = float(hparams["lade_lambda"])

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        prior_ce = F.cross_entropy(logits + self.log_prior, targets)
        return prior_ce + self.alpha * lader_loss(logits, targets, self.log_prior,
                                                  self.remine_lambda)
