"""Headline metrics from per-class test accuracy.

Conventions (protocols.md §1): every standard long-tailed test set is class-balanced, so top-1
accuracy is the mean per-class accuracy. Many / medium / few-shot groups are defined on the
*training* counts: many ``n > 100``, medium ``20 <= n <= 100``, few ``n < 20``
(facebookresearch/classifier-balancing : utils.py, ``shot_acc``). An empty group's accuracy is
NaN, never 0 (``shot_acc`` appends 0, which reads as a real result on CIFAR-10-LT).
All accuracies are in percent.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MANY_THRESHOLD = 100
FEW_THRESHOLD = 20


def shot_groups(train_counts: Sequence[int], many_thr: int = MANY_THRESHOLD,
                few_thr: int = FEW_THRESHOLD) -> dict[str, np.ndarray]:
    """Boolean class masks of the many / medium / few groups."""
    counts = np.asarray(train_counts)
    return {"many": counts > many_thr,
            "medium": (counts >= few_thr) & (counts <= many_thr),
            "few": counts < few_thr}


def shot_group_of_classes(train_counts: Sequence[int]) -> np.ndarray:
    """The many / medium / few group name of every class, from its training count."""
    names = np.empty(len(train_counts), dtype=object)
    for group, mask in shot_groups(train_counts).items():
        names[mask] = group
    return names


def summarize(per_class_correct: Sequence[int], per_class_total: Sequence[int],
              train_counts: Sequence[int]) -> dict[str, float | int | list[float]]:
    """``top1_acc``, ``top1_err``, ``many/medium/few_acc``, ``n_many/...`` and ``per_class_acc``.

    ``top1_acc`` is the mean of the per-class accuracies (equal to the plain accuracy on a
    balanced test set, and the standard "All" column on any test set).
    """
    correct = np.asarray(per_class_correct, dtype=np.float64)
    total = np.asarray(per_class_total, dtype=np.float64)
    if np.any(total <= 0):
        raise ValueError("every class needs at least one test example")
    per_class = 100.0 * correct / total
    top1 = float(per_class.mean())
    out: dict[str, float | int | list[float]] = {
        "top1_acc": top1,
        "top1_err": 100.0 - top1,
        "per_class_acc": per_class.tolist(),
    }
    for group, mask in shot_groups(train_counts).items():
        out[f"{group}_acc"] = float(per_class[mask].mean()) if mask.any() else math.nan
        out[f"n_{group}"] = int(mask.sum())
    return out
