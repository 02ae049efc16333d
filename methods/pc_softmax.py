"""Post-compensated softmax, PC softmax (Hong et al., CVPR 2021, arXiv:2012.00321;
protocols.md §3.11).

The stage-1 ``ce`` model with the source prior replaced by the target prior at inference:
``p_t(y | x) ∝ exp(z_y − log p_s(y) + log p_t(y))`` (hyperconnect/LADE : LADE_poster.pdf,
run_networks.py ``eval``), p_s the training label frequencies. On the balanced test set the
target is uniform, so the logits are ``z − log p_s`` (the constant ``log 1/C`` dropped); on the
shifted test sets :mod:`ltbench.metrics.shifted` adds each set's true ``log p_t``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..api import LTData
from .two_stage import FrozenBackboneClassifier, OffsetLinear, TwoStageMethod, training_prior


class PCSoftmax(TwoStageMethod):
    family = "label-shift"
    summary = "PC softmax: CE model, test logits - log p_train + log p_target"
    paper = ("Hong, Han, Choi, Chun, Kwak, Kim, Kim, CVPR 2021, arXiv:2012.00321; code "
             "hyperconnect/LADE : run_networks.py (eval)")
    uses_target_prior = True

    def build_classifier(self, backbone: nn.Module, data: LTData, device: torch.device,
                         seed: int) -> nn.Module:
        offsets = -training_prior(self.class_counts).log()
        return FrozenBackboneClassifier(backbone, OffsetLinear(backbone.head, offsets))
