"""Long-tailed count profiles and the LDAM-DRW subset selection.

The imbalance factor (IF, rho) is always the ratio n_max / n_min >= 1; several reference repos
take its inverse on the command line (``--imb_factor 0.01`` means IF 100).

Counts follow ``get_img_num_per_cls`` of ``kaidic/LDAM-DRW : imbalance_cifar.py`` (Cao et al.,
NeurIPS 2019, arXiv:1906.07413):

* ``exp``: ``n_i = int(n_max * (1/IF) ** (i / (C - 1)))`` for i = 0 ... C-1 (class 0 is the head);
* ``step``: the first ``C // 2`` classes get ``int(n_max)``, the others ``int(n_max * (1/IF))``.

The reference multiplies by its ``imb_factor`` argument (= 1/IF), so ltbench does the same; for
odd C the reference's step list is one class short, ltbench gives the extra class the tail count.
"""

from __future__ import annotations

import math

import numpy as np

from ltbench.errors import BadInput

PROFILES = ("exp", "step")


def class_counts(n_max: float, num_classes: int, imb_factor: float, profile: str) -> list[int]:
    """Per-class training counts, head first (datasets.md §2.2 and §2.4).

    Raises :class:`BadInput` for an IF below 1 or not finite, an unknown profile, fewer than two
    classes, or an IF so large that a class would get no image at all.
    """
    imb = float(imb_factor)
    if not math.isfinite(imb) or imb < 1:
        raise BadInput(f"imbalance factor must be a finite number >= 1 (n_max / n_min), "
                       f"got {imb_factor}")
    if profile not in PROFILES:
        raise BadInput(f"unknown imbalance profile '{profile}'; known: {', '.join(PROFILES)}")
    if num_classes < 2:
        raise BadInput(f"a long-tailed dataset needs at least 2 classes, got {num_classes}")
    ratio = 1.0 / imb
    if profile == "exp":
        counts = [int(n_max * ratio ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    else:
        head = num_classes // 2
        counts = [int(n_max)] * head + [int(n_max * ratio)] * (num_classes - head)
    if min(counts) < 1:
        raise BadInput(f"imbalance factor {imb_factor} leaves class {counts.index(min(counts))} "
                       f"without training images (n_max {n_max}, profile {profile})")
    return counts


def select_subset(labels: np.ndarray, counts: list[int], split_seed: int) -> np.ndarray:
    """The LDAM-DRW long-tailed subset of a training split: ascending int64 positions.

    Replays ``IMBALANCECIFAR10.gen_imbalanced_data`` of ``kaidic/LDAM-DRW : imbalance_cifar.py``
    (datasets.md §2.3) with a local ``RandomState(split_seed)`` instead of the reference's global
    ``np.random.seed(rand_number)``: for each class c = 0 ... C-1 in order, its positions
    ``np.where(labels == c)[0]`` are shuffled in place and the first ``counts[c]`` kept. The legacy
    stream is identical, so ``split_seed = rand_number`` picks exactly the reference's images.
    Because every class has the same size, each shuffle consumes the same randomness whatever
    the counts, so subsets for larger IFs are nested in those for smaller IFs.
    """
    if not 0 <= int(split_seed) < 2 ** 32:
        raise BadInput(f"split seed must be in 0 ... 2**32 - 1, got {split_seed}")
    rng = np.random.RandomState(int(split_seed))
    kept = []
    for cls, count in enumerate(counts):
        positions = np.where(labels == cls)[0]
        if count > len(positions):
            raise ValueError(f"class {cls} has {len(positions)} images, {count} requested")
        rng.shuffle(positions)
        kept.append(positions[:count])
    return np.sort(np.concatenate(kept)).astype(np.int64)
