"""Nearest class mean classifier (Kang et al., ICLR 2020, arXiv:1910.09217, Sec. 4;
protocols.md §3.10).

On the stage-1 ``ce`` backbone's features, with the reference's default ``feat_type: cl2n``
(facebookresearch/classifier-balancing : models/KNNClassifier.py and ``get_knncentroids`` in
run_networks.py): every feature is centred by the mean training feature and L2-normalised;
class centroid = mean of the class's normalised training features (unaugmented images); score =
negative squared Euclidean distance to each centroid.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..api import LTData
from .two_stage import FrozenBackboneClassifier, TwoStageMethod, image_features


class NearestClassMean(nn.Module):
    """``-‖normalize(x - mean) - c_j‖²`` for centroids ``c`` [C, D] and feature mean [D]."""

    def __init__(self, feature_mean: torch.Tensor, centroids: torch.Tensor):
        super().__init__()
        self.register_buffer("feature_mean", feature_mean)
        self.register_buffer("centroids", centroids)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.normalize(features - self.feature_mean, dim=1)
        # ‖x - c‖² expanded, so no [B, C, D] tensor is formed (C·D is large on ImageNet-LT).
        return -(x.pow(2).sum(1, keepdim=True) - 2.0 * x.mm(self.centroids.t())
                 + self.centroids.pow(2).sum(1))


def class_centroids(features: torch.Tensor, labels: torch.Tensor, num_classes: int
                    ) -> NearestClassMean:
    """The ``cl2n`` nearest-class-mean head of training ``features`` [N, D] with ``labels``."""
    feature_mean = features.mean(dim=0)
    normalised = F.normalize(features - feature_mean, dim=1)
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype,
                       device=features.device).index_add_(0, labels, normalised)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    return NearestClassMean(feature_mean, sums / counts[:, None])


class NearestClassMeanMethod(TwoStageMethod):
    family = "decoupled"
    summary = "NCM: nearest class mean of centred, L2-normalised CE features"
    paper = ("Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, ICLR 2020, arXiv:1910.09217; "
             "code facebookresearch/classifier-balancing : models/KNNClassifier.py")

    def build_classifier(self, backbone: nn.Module, data: LTData, device: torch.device,
                         seed: int) -> nn.Module:
        features, labels = image_features(backbone, data.train_images, data.train_labels,
                                          self.hparams, device)
        return FrozenBackboneClassifier(backbone,
                                        class_centroids(features, labels, data.num_classes))
