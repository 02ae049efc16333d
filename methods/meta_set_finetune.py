"""Fine-tuning the cross-entropy model on the balanced meta set (the MW-Net paper's baseline).

The "fine-tuning" row of the Meta-Weight-Net and Jamal et al. CIFAR-LT tables is believed to
fine-tune the CE model on the small balanced meta set (Shu et al., NeurIPS 2019,
arXiv:1902.07379; protocols.md §3.4), but no reference code or schedule exists (§5). ltbench's
protocol choice: the ``jamal`` protocol and stage boundary — stage 1 (epochs <
``meta_start_epoch``, 160 of 200) plain mean cross-entropy on the long-tailed subset; stage 2
the same number of steps per epoch and the same learning-rate schedule (1e-3, then 1e-5 from
epoch 179), every step a mean cross-entropy step on a meta batch (``meta_batch_size`` 100: the
whole CIFAR-10 meta set, 100 of CIFAR-100's 1,000) with the training augmentation. In stage 2
the curves' train loss and accuracy are those of the meta batches.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..api import Method, StepContext
from .jamal import STAGE2_DEFAULTS


class MetaSetFinetune(Method):
    family = "fine-tuning"
    summary = "CE, then from epoch 160 fine-tuning on the balanced meta set only (10 per class)"
    paper = ("Baseline of Shu et al., NeurIPS 2019, arXiv:1902.07379 and Jamal et al., CVPR "
             "2020, arXiv:2003.10780; no reference code, schedule is ltbench's choice")
    protocol = "jamal"
    uses_meta_set = True
    defaults = {**STAGE2_DEFAULTS, "meta_batch_size": 100}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    def training_loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      epoch: int, step: StepContext
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if epoch >= int(self.hparams["meta_start_epoch"]):
            inputs, targets = step.meta_batch()
        return super().training_loss(model, inputs, targets, epoch, step)
