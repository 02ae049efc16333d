"""Test sets with shifted label distributions, and a run's accuracy on each (LADE protocol).

From hyperconnect/LADE : notebooks/cifar100-shift-calib.ipynb (Hong et al., CVPR 2021,
arXiv:2012.00321, Sec. 5; protocols.md §1.4): classes are ranked by training frequency (rank 0
= most frequent; ties by class index). For a test imbalance ratio ρ the class of rank r keeps
``int(m · (1/ρ) ** (r / (C − 1)))`` test examples (**forward-ρ**, the training order), or the
count of rank ``C − 1 − r`` (**backward-ρ**, tail classes keep the most); **uniform** keeps
``m`` per class, ``m`` the smallest per-class test count (100 for CIFAR-100). ρ ∈ {50, 25, 10,
5, 2} in both directions plus uniform: 11 sets, named F50 … F2, U1, B2 … B50 as in
``published.csv``. An example is kept by walking the test list in file order while its class's
budget lasts (the notebooks' ``get_mask``), so the sets are deterministic.

Accuracy on a shifted set is the plain top-1 accuracy over its examples (the set itself is
imbalanced; the notebooks' metric). Methods with ``uses_target_prior`` (PC softmax, LADE) add
the set's true ``log p_t`` to their logits (the notebooks' rule: the target prior is known);
the others use their plain prediction. This module imports torch only inside
:func:`shifted_accuracies`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

SHIFT_RATIOS = (50, 25, 10, 5, 2)

#: The 11 shifted sets in display order: (name, direction, ρ).
SHIFTED_SETS = ([(f"F{rho}", "forward", rho) for rho in SHIFT_RATIOS] + [("U1", "uniform", 1)]
                + [(f"B{rho}", "backward", rho) for rho in reversed(SHIFT_RATIOS)])

EVAL_COLUMNS = ["run_id", "eval_set", "direction", "rho", "n_test", "top1_acc"]


def class_budgets(train_counts: Sequence[int], per_class: int, direction: str,
                  rho: float) -> np.ndarray:
    """Per-class test budgets (int64 [C], in class order) of one shifted set."""
    counts = np.asarray(train_counts)
    num_classes = len(counts)
    if direction == "uniform":
        return np.full(num_classes, per_class, dtype=np.int64)
    by_rank = np.array([int(per_class * (1.0 / rho) ** (r / (num_classes - 1.0)))
                        for r in range(num_classes)], dtype=np.int64)
    if direction == "backward":
        by_rank = by_rank[::-1]
    elif direction != "forward":
        raise ValueError(f"unknown direction {direction!r}")
    ranks = np.argsort(-counts, kind="stable")  # ranks[r] = the class of rank r
    budgets = np.empty(num_classes, dtype=np.int64)
    budgets[ranks] = by_rank
    return budgets


def shifted_mask(test_labels: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """Boolean mask of the test examples kept: each in file order while its class budget
    lasts (``get_mask`` of the LADE notebooks)."""
    labels = np.asarray(test_labels)
    # The k-th occurrence (0-based) of its class is kept iff k < budget.
    occurrence = np.empty(len(labels), dtype=np.int64)
    seen = np.zeros(len(budgets), dtype=np.int64)
    for position, label in enumerate(labels):
        occurrence[position] = seen[label]
        seen[label] += 1
    return occurrence < budgets[labels]


def shifted_accuracies(run_id: str, logits, test_labels, train_counts: Sequence[int],
                       uses_target_prior: bool) -> pd.DataFrame:
    """One row per shifted set (:data:`EVAL_COLUMNS`) for a run's test ``logits`` [M, C]
    (torch, any device) and ``test_labels`` [M]."""
    import torch

    labels = test_labels.cpu().numpy()
    per_class = int(np.bincount(labels, minlength=len(train_counts)).min())
    rows = []
    for name, direction, rho in SHIFTED_SETS:
        budgets = class_budgets(train_counts, per_class, direction, rho)
        mask = torch.from_numpy(shifted_mask(labels, budgets)).to(logits.device)
        scores = logits[mask]
        if uses_target_prior:
            target = torch.as_tensor(budgets / budgets.sum(), dtype=torch.float32,
                                     device=logits.device)
            scores = scores + target.log()  # a class absent from the set gets -inf
        hits = scores.argmax(dim=1) == test_labels.to(logits.device)[mask]
        rows.append({"run_id": run_id, "eval_set": name, "direction": direction, "rho": rho,
                     "n_test": int(mask.sum()),
                     "top1_acc": 100.0 * float(hits.float().mean())})
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)


def evaluate_shifted(run_id: str, model, data, hparams, uses_target_prior: bool,
                     device, precision) -> pd.DataFrame:
    """:func:`shifted_accuracies` of ``model`` on ``data``'s test set (one inference pass,
    unaugmented, normalised with ``hparams``' constants, under ``precision``: the run's, as its
    per-epoch test evaluation)."""
    from ..engine.train import predict_logits, unaugmented_images

    test = unaugmented_images(data.test_images, data.test_labels, hparams, device)
    logits = predict_logits(model, test, precision)
    return shifted_accuracies(run_id, logits, test.labels, data.class_counts,
                              uses_target_prior)
