"""τ-normalised classifier (Kang et al., ICLR 2020, arXiv:1910.09217, Sec. 4; protocols.md §3.10).

The stage-1 ``ce`` classifier without its bias, each class vector rescaled:
``w̃_j = w_j / ‖w_j‖^τ``, logits ``x · w̃_j`` (facebookresearch/classifier-balancing :
tau_norm.py). τ = 0 is the raw classifier (bias dropped), τ = 1 full normalisation. τ is chosen
over ``np.linspace(0, 2, 21)`` on the balanced validation split (``--set val_per_class=N``),
as the paper prescribes; the whole curve is stored as the ``tau_curve`` artifact. Without a
validation split τ stays at ``tau`` (default 1) and ``selection_rule`` is ``last,tau=fixed``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..api import LTData
from .two_stage import FrozenBackboneClassifier, TwoStageMethod


class TauNormalisedLinear(nn.Module):
    """``x · w̃ᵀ`` with ``w̃_j = w_j / ‖w_j‖^τ`` (``weight`` [C, D]; no bias)."""

    def __init__(self, weight: torch.Tensor, tau: float):
        super().__init__()
        norms = weight.detach().norm(dim=1, keepdim=True)
        self.register_buffer("weight", weight.detach() / norms.pow(tau))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mm(self.weight.t())


class TauNormalisation(TwoStageMethod):
    family = "decoupled"
    summary = "tau-norm: CE classifier rows divided by norm**tau, tau chosen on validation"
    paper = ("Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, ICLR 2020, arXiv:1910.09217; "
             "code facebookresearch/classifier-balancing : tau_norm.py")
    defaults = {"tau": 1.0}

    def build_classifier(self, backbone: nn.Module, data: LTData, device: torch.device,
                         seed: int) -> nn.Module:
        weight = backbone.head.weight
        tau = self.select_tau(lambda t: TauNormalisedLinear(weight, t), backbone, data, device)
        return FrozenBackboneClassifier(backbone, TauNormalisedLinear(weight, tau))
