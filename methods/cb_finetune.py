"""Class-balanced fine-tuning of the cross-entropy model: Jamal et al.'s schedule with ε ≡ 0.

Stage 1 (epochs < ``meta_start_epoch``, 160 of 200): plain mean cross-entropy. Stage 2: every
example weighted by its class-balanced weight ``w_y = (1 - β) / (1 - β^{n_y})`` (β = 0.9999,
normalised to sum to C), ``L = mean_i w_{y_i} ℓ_i`` — the real update of
abdullahjamal/Longtail_DA : C-LT/main.py ``train_meta`` with ``new_eps = 0`` (a plain batch mean,
not PyTorch's weighted mean ÷ Σ w used by ``cb-ce`` / ``ce-drw``). It isolates the contribution
of the meta-learned ε in ``meta-ce`` (Jamal et al., CVPR 2020, arXiv:2003.10780; the "class-
balanced fine-tuning" idea of Cui et al., CVPR 2018, arXiv:1806.06193; protocols.md §3.4).
Protocol ``jamal`` (the same subset, schedule and stage boundary as ``meta-ce``); no meta set is
used, but the ``jamal`` construction still removes it from the training split.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..api import Method, class_balanced_weights
from .jamal import STAGE2_DEFAULTS


class ClassBalancedFinetune(Method):
    family = "fine-tuning"
    summary = "CE, then class-balanced weights (beta 0.9999) from epoch 160: meta-ce with eps = 0"
    paper = ("Jamal, Brown, Yang, Wang, Gong, CVPR 2020, arXiv:2003.10780 (baseline); code "
             "abdullahjamal/Longtail_DA : C-LT/main.py (train_meta with eps = 0)")
    protocol = "jamal"
    defaults = {**STAGE2_DEFAULTS, "beta": 0.9999}

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.meta_start_epoch = int(hparams["meta_start_epoch"])
        self.class_weights = class_balanced_weights(class_counts, hparams["beta"])

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        if epoch < self.meta_start_epoch:
            return F.cross_entropy(logits, targets)
        example_losses = F.cross_entropy(logits, targets, reduction="none")
        return (self.class_weights[targets] * example_losses).mean()
