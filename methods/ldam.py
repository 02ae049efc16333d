"""Label-distribution-aware margin loss (LDAM; Cao et al., NeurIPS 2019, arXiv:1906.07413).

Per-class margins ``Δ_j = max_m · n_j^{-1/4} / max_k n_k^{-1/4}`` (the rarest class
gets ``max_m = 0.5``) and ``L = CE(s · (z - Δ_y · onehot(y)), y)`` with ``s = 30``,
where ``z`` are the cosine logits of the NormedLinear head; optional class weights make it
PyTorch's weighted mean (kaidic/LDAM-DRW : losses.py ``LDAMLoss``; protocols.md §3.8).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..api import Method



def ldam_margins(class_counts: torch.Tensor, max_m: float) -> torch.Tensor:
    """``Δ_j = max_m · n_j^{-1/4} / max_k n_k^{-1/4}``, computed in float64, returned float32."""
    inverse_quartic_root = class_counts.to(torch.float64).pow(-0.25)
    return (inverse_quartic_root * (max_m / inverse_quartic_root.max())).to(torch.float32)


def ldam_loss(logits: torch.Tensor, targets: torch.Tensor, margins: torch.Tensor, scale: float,
              weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """``CE(scale · (z - Δ_y · onehot(y)), y, weight)``: only the true-class logit is lowered.
    ``reduction="none"`` gives the per-example terms (the ``reduce_`` switch of
    abdullahjamal/Longtail_DA : C-LT/losses.py)."""
    target_margin = F.one_hot(targets, logits.shape[1]).to(logits.dtype) * margins[targets, None]
    return F.cross_entropy(scale * (logits - target_margin), targets, weight=weight,
                           reduction=reduction)


class LDAM(Method):
    family = "margin"
    summary = "LDAM: cosine logits, true-class margin 0.5 * (n_min/n)^(1/4), scale 30"
    paper = ("Cao, Wei, Gaidon, Arechiga, Ma, NeurIPS 2019, arXiv:1906.07413; "
             "code kaidic/LDAM-DRW : losses.py (LDAMLoss), --train_rule None")
    head = "cosine"
    defaults = {"max_m": 0.5, "s": 30.0}

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.margins = ldam_margins(class_counts, hparams["max_m"])

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return ldam_loss(logits, targets, self.margins, self.hparams["s"])
