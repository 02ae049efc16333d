"""Two-stage methods: a new classifier (or prediction rule) on a finished stage-1 run's model.

Decoupling (Kang et al., ICLR 2020, arXiv:1910.09217; protocols.md §3.10) and the post-hoc
label-shift corrections (PC softmax, Hong et al., CVPR 2021, arXiv:2012.00321, §3.11; post-hoc
logit adjustment, Menon et al., ICLR 2021, arXiv:2007.07314, §3.14) all start from a model
trained end to end with plain cross-entropy. A :class:`TwoStageMethod` names that run's method
in ``stage1``; the harness (:mod:`ltbench.run.stages`) trains the stage-1 run once (or reuses it),
keeps its final model in the store, and hands it to :meth:`TwoStageMethod.build_classifier`,
which returns the stage-2 model: the stage-1 backbone, frozen (parameters fixed and BatchNorm
in eval mode, so its running statistics never move), under a new head. The engine then trains
that model for ``stage2_hparams()["epochs"]`` epochs (cRT, LWS) or, with 0 epochs (τ-norm, NCM,
PC softmax, post-hoc LA), only evaluates it.

A method's own ``defaults`` are its stage-2 hyper-parameters: every other key of the run's
hyper-parameters belongs to stage 1 (:func:`ltbench.run.stages.stage1_spec`), so the stage-2 keys
are named ``stage2_*`` and never shadow the protocol's.

Selections (τ) use only the balanced validation split (``--set val_per_class=N``,
:func:`ltbench.datasets.profiles.split_with_validation`); without one τ keeps its default and
the run's ``selection_rule`` says so. Nothing is ever chosen on the test set.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..api import LTData, Method
from ..engine.train import predict_logits, unaugmented_images
from ..metrics.headline import summarize

#: The stage-2 training schedule of cRT and LWS on CIFAR-LT. Decoupling has no CIFAR setting
#: (protocols.md §5), so this is ltbench's choice: the ImageNet-LT stage-2 configs
#: (facebookresearch/classifier-balancing : config/ImageNet_LT/cls_crt.yaml; protocols.md §2.2:
#: batch 512, lr 0.2, momentum 0.9, weight decay 5e-4, cosine to 0, class-balanced sampling)
#: with the learning rate scaled linearly to the CIFAR protocol's batch of 128 (0.05). The
#: epochs (cRT 10, LWS 5) are set by each method.
STAGE2_TRAINING = {
    "stage2_lr": 0.05,
    "stage2_batch_size": 128,
    "stage2_weight_decay": 5e-4,
    "stage2_sampler": "class-balanced",
}

#: τ grid of the τ search: ``np.linspace(0, 2, 21)`` (classifier-balancing : tau_norm.py).
TAU_GRID = tuple(round(0.1 * k, 1) for k in range(21))


class Features(nn.Module):
    """The pooled features of ``backbone`` (its ``features(x)``) as a module's output."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)


class FrozenBackboneClassifier(nn.Module):
    """``head(backbone.features(x))`` with the backbone frozen: no gradients reach it and
    ``train()`` leaves it in eval mode. The head runs in fp32, as the backbones' own heads."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.head = head

    def train(self, mode: bool = True) -> FrozenBackboneClassifier:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone.features(x)
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.head(features.float())


class OffsetLinear(nn.Module):
    """A frozen linear layer plus fixed per-class logit offsets: ``x · Wᵀ + b + offsets``."""

    def __init__(self, linear: nn.Linear, offsets: torch.Tensor):
        super().__init__()
        self.linear = linear.requires_grad_(False)
        self.register_buffer("offsets", offsets.to(torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features) + self.offsets


def training_prior(class_counts: torch.Tensor) -> torch.Tensor:
    """``π_j = n_j / Σ n`` (float64) of the training subset."""
    counts = class_counts.to(torch.float64)
    return counts / counts.sum()


def image_features(backbone: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   hparams: Mapping[str, Any], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 features [N, D] of the unaugmented uint8 ``images`` (normalised as the test set)
    and their labels, on ``device``. The forward runs in fp32 whatever the run's precision:
    these features set class means (NCM) and choose τ, and one pass costs little."""
    images = unaugmented_images(images, labels, hparams, device)
    return predict_logits(Features(backbone), images, contextlib.nullcontext), images.labels


def choose_on_validation(taus: Sequence[float], head_for: Callable[[float], nn.Module],
                         features: torch.Tensor | None, labels: torch.Tensor | None,
                         class_counts: Sequence[int], default: float
                         ) -> tuple[float, pd.DataFrame]:
    """``(τ, curve)``: the τ of ``taus`` whose head ``head_for(τ)`` has the highest mean
    per-class accuracy on the validation ``features``/``labels`` (the first on ties), and the
    curve ``tau``, ``val_acc``, ``chosen`` over the grid. Without a validation split
    (``features`` None) τ is ``default`` and the curve is that one row with ``val_acc`` NaN."""
    if features is None:
        return default, pd.DataFrame({"tau": [default], "val_acc": [np.nan], "chosen": [True]})
    num_classes = len(class_counts)
    total = torch.bincount(labels, minlength=num_classes).cpu().numpy()
    accuracies = []
    with torch.no_grad():
        for tau in taus:
            hits = (head_for(tau)(features).argmax(dim=1) == labels).long()
            correct = torch.zeros(num_classes, dtype=torch.int64, device=labels.device)
            correct.index_add_(0, labels, hits)
            accuracies.append(summarize(correct.cpu().numpy(), total, class_counts)["top1_acc"])
    best = int(np.argmax(accuracies))
    return float(taus[best]), pd.DataFrame({"tau": list(taus), "val_acc": accuracies,
                                            "chosen": [k == best for k in range(len(taus))]})


class TwoStageMethod(Method):
    """Base of the methods that start from the final model of a ``ce`` run.

    Subclasses implement :meth:`build_classifier` and, when they train, set ``stage2_epochs``
    in their defaults (with :data:`STAGE2_TRAINING`). The training loss is plain
    cross-entropy (stage 2 of cRT and LWS; the contract's loss for the post-hoc methods).
    """

    stage1: ClassVar[str | None] = "ce"

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.selection_artifacts: dict[str, pd.DataFrame] = {}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    def stage2_hparams(self) -> dict[str, Any]:
        """The hyper-parameters the engine trains the stage-2 model with: the run's, with the
        ``stage2_*`` schedule (cosine, no warm-up) in place of the protocol's; ``epochs`` 0
        (evaluation only) for a method without ``stage2_epochs``."""
        hparams = dict(self.hparams)
        if "stage2_epochs" not in hparams:
            return {**hparams, "epochs": 0}
        return {**hparams, "epochs": hparams["stage2_epochs"], "lr": hparams["stage2_lr"],
                "batch_size": hparams["stage2_batch_size"],
                "weight_decay": hparams["stage2_weight_decay"],
                "sampler": hparams["stage2_sampler"], "warmup_epochs": 0, "lr_milestones": [],
                "lr_schedule": "cosine"}

    def build_classifier(self, backbone: nn.Module, data: LTData, device: torch.device,
                         seed: int) -> nn.Module:
        """The stage-2 model on ``backbone`` (the stage-1 model, on ``device``); ``seed`` is
        the run's, for any random initialisation."""
        raise NotImplementedError

    def artifacts(self) -> dict[str, pd.DataFrame]:
        return dict(self.selection_artifacts)

    def select_tau(self, head_for: Callable[[float], nn.Module], backbone: nn.Module,
                   data: LTData, device: torch.device) -> float:
        """Choose τ over :data:`TAU_GRID` on the validation split (else ``hparams["tau"]``),
        keep the curve as the ``tau_curve`` artifact and set :attr:`selection_rule`."""
        features, labels = None, None
        if data.val_images is not None:
            features, labels = image_features(backbone, data.val_images, data.val_labels,
                                              self.hparams, device)
        tau, curve = choose_on_validation(TAU_GRID, head_for, features, labels,
                                          data.class_counts, float(self.hparams["tau"]))
        self.selection_artifacts["tau_curve"] = curve
        self.selection_rule = "last,tau=val" if features is not None else "last,tau=fixed"
        return tau

