"""The report's statistics: confidence intervals over seeds, tests between table cells, ranks.

* :func:`t_interval`: the two-sided 95 % Student-t interval of a mean over ``n`` seeds,
  ``mean ± t(0.975, n−1) · s / √n``; ltbench shows none for fewer than :data:`MIN_RUNS` runs,
  where it would be wider than the values' range and says little.
* :func:`compare_to_best`: whether each cell of a column differs from the column's best cell.
  Where both cells hold runs with the same (split seed, training seed) — the same subset and
  initialisation — the test is the paired t-test over those pairs (the seed-to-seed variation
  they share cancels); otherwise Welch's unequal-variance t-test. The p-values of one column
  are Holm-corrected (Holm 1979, step-down Bonferroni), which keeps the family-wise error rate
  at α whatever the dependence between the tests.
* :func:`average_ranks` and :func:`critical_difference`: ranks of methods within each block
  (a dataset × imbalance-factor cell), ties sharing their average rank, and the Nemenyi
  critical difference of mean ranks, ``CD = q_α · √(k(k+1) / (6N))`` for ``k`` methods over
  ``N`` blocks, with ``q_α`` the studentized range quantile divided by √2 (Demšar, "Statistical
  comparisons of classifiers over multiple data sets", JMLR 7, 2006, §3.2.2 and Table 5).

This module must not import torch, and imports scipy only when it computes (``scipy.stats``
takes most of a second to import, which ``ltbench status`` and ``check`` need not pay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

#: Fewer runs than this get no confidence interval and no test.
MIN_RUNS = 3
#: The level of every interval and test.
ALPHA = 0.05


def t_interval(values: Sequence[float], alpha: float = ALPHA) -> tuple[float, float]:
    """The ``1 − alpha`` Student-t interval of the mean of ``values``; NaNs when fewer than
    :data:`MIN_RUNS`."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < MIN_RUNS:
        return math.nan, math.nan
    half = stats.t.ppf(1 - alpha / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    mean = float(values.mean())
    return mean - half, mean + half


@dataclass(frozen=True)
class Difference:
    """A cell against its column's best: the test used, its raw and Holm-adjusted p-values,
    and whether the difference is significant at :data:`ALPHA`."""

    test: str
    p: float
    p_holm: float
    significant: bool


def difference_test(best: Mapping[tuple, float], other: Mapping[tuple, float]
                    ) -> tuple[str, float]:
    """The test and two-sided p-value of ``other`` against ``best`` (values by (split seed,
    seed)): paired where at least :data:`MIN_RUNS` seeds pair, else Welch's."""
    from scipy import stats

    paired = sorted(set(best) & set(other))
    if len(paired) >= MIN_RUNS:
        differences = np.array([other[key] - best[key] for key in paired])
        if np.ptp(differences) == 0:  # the same difference for every pair: no variance
            return "paired t-test", 0.0 if differences[0] else 1.0
        return "paired t-test", float(stats.ttest_rel([other[k] for k in paired],
                                                      [best[k] for k in paired]).pvalue)
    a, b = list(other.values()), list(best.values())
    if np.std(a) == 0 and np.std(b) == 0:
        return "Welch's t-test", 1.0 if np.mean(a) == np.mean(b) else 0.0
    return "Welch's t-test", float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (each at most 1, monotone in the sorted order)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for position, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - position) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare_to_best(cells: Mapping[str, Mapping[tuple, float]], best: str,
                    alpha: float = ALPHA) -> dict[str, Difference]:
    """Each cell of ``cells`` (values by (split seed, seed), per row label) against the
    ``best`` one; cells with fewer than :data:`MIN_RUNS` values (and the best, if it has
    fewer) are not tested and left out."""
    if len(cells.get(best, {})) < MIN_RUNS:
        return {}
    tested = {label: difference_test(cells[best], values) for label, values in cells.items()
              if label != best and len(values) >= MIN_RUNS}
    labels = list(tested)
    adjusted = holm([tested[label][1] for label in labels])
    return {label: Difference(tested[label][0], tested[label][1], p, p < alpha)
            for label, p in zip(labels, adjusted)}


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks (1 = best = lowest score) of each column within each row of ``scores`` (blocks ×
    methods), tied scores sharing their average rank."""
    from scipy import stats

    return np.vstack([stats.rankdata(row, method="average") for row in scores])


def critical_difference(methods: int, blocks: int, alpha: float = ALPHA) -> float:
    """The Nemenyi critical difference of mean ranks for ``methods`` over ``blocks``."""
    from scipy import stats

    q = stats.studentized_range.ppf(1 - alpha, methods, math.inf) / math.sqrt(2)
    return float(q * math.sqrt(methods * (methods + 1) / (6 * blocks)))
