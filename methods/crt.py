"""Classifier re-training, cRT (Kang et al., ICLR 2020, arXiv:1910.09217, Sec. 4;
protocols.md §3.10).

The stage-1 ``ce`` backbone is frozen, the classifier re-initialised randomly
(``stage1_weights: false`` in facebookresearch/classifier-balancing : config/*/cls_crt.yaml) and
retrained with cross-entropy under class-balanced sampling. CIFAR defaults (ltbench's choice,
Decoupling has no CIFAR setting; :data:`~ltbench.methods.two_stage.STAGE2_TRAINING`): 10
epochs as ImageNet-LT's cRT, batch 128, lr 0.05 (0.2 at batch 512 scaled linearly), weight
decay 5e-4, cosine to 0, class-balanced sampler (:mod:`ltbench.engine.samplers`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..api import LTData
from ..engine.models import initialise
from ..spec import derive_seed
from .two_stage import STAGE2_TRAINING, FrozenBackboneClassifier, TwoStageMethod


class ClassifierRetraining(TwoStageMethod):
    family = "decoupled"
    summary = "cRT: frozen CE backbone, classifier re-initialised and retrained class-balanced"
    paper = ("Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, ICLR 2020, arXiv:1910.09217; "
             "code facebookresearch/classifier-balancing : config/*/cls_crt.yaml")
    defaults = {**STAGE2_TRAINING, "stage2_epochs": 10}

    def build_classifier(self, backbone: nn.Module, data: LTData, device: torch.device,
                         seed: int) -> nn.Module:
        """The frozen backbone under a fresh linear head, initialised as the backbone's own
        (:func:`~ltbench.engine.models.initialise`) from the run's ``"stage2-init"`` stream."""
        generator = torch.Generator().manual_seed(derive_seed(seed, "stage2-init"))
        with torch.device("meta"):
            head = nn.Linear(backbone.head.weight.shape[1], data.num_classes)
        head = head.to_empty(device="cpu")
        initialise(head, generator)
        return FrozenBackboneClassifier(backbone, head.to(device))
