"""Post-hoc logit adjustment (Menon et al., ICLR 2021, arXiv:2007.07314; protocols.md §3.14).

The stage-1 ``ce`` model predicts ``argmax_y z_y − τ log π_y``, computed as the reference
subtracts ``log(π**τ + 1e-12)`` (google-research/google-research : logit_adjustment/main.py,
``--mode posthoc``), π the training label frequencies. τ is chosen over ``0, 0.1, …, 2.0``
(which holds the reference's default 1) on the balanced validation split
(``--set val_per_class=N``); without one τ stays at ``tau`` (default 1). The curve is the
``tau_curve`` artifact.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..api import LTData
from .two_stage import FrozenBackboneClassifier, OffsetLinear, TwoStageMethod, training_prior


class PosthocLogitAdjustment(TwoStageMethod):
    family = "label-shift"
    summary = "Post-hoc logit adjustment: CE model, logits - tau * log prior, tau on validation"
    paper = ("Menon, Jayasumana, Rawat, Jain, Veit, Kumar, ICLR 2021, arXiv:2007.07314; code "
             "google-research/google-research : logit_adjustment/main.py (posthoc)")
    defaults = {"tau": 1.0}

    def build_classifier(self, backbone: nn.Module, data: LTData, device: torch.device,
                         seed: int) -> nn.Module:
        prior = training_prior(self.class_counts)

        def head_for(tau: float) -> OffsetLinear:
            return OffsetLinear(backbone.head, -(prior.pow(tau) + 1e-12).log())

        tau = self.select_tau(head_for, backbone, data, device)
        return FrozenBackboneClassifier(backbone, head_for(tau))
