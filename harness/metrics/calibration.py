"""Expected calibration error of a run's final test predictions.

ECE (Naeini, Cooper and Hauskrecht, AAAI 2015; in this form Guo, Pleiss, Sun and Weinberger,
"On calibration of modern neural networks", ICML 2017, eq. 3): the test examples are put in
:data:`BINS` equal-width bins by their confidence, the top softmax probability of the logits
the method predicts with, bin ``b`` holding the confidences in ``((b − 1) / B, b / B]``; then

    ECE = Σ_b (n_b / n) · |acc_b − conf_b| = Σ_b |correct_b − confidence sum_b| / n

with ``acc_b`` the fraction of bin ``b``'s ``n_b`` examples predicted right and ``conf_b``
their mean confidence. ltbench reports it in percent, over the test set a run is scored on
(class-balanced for every standard long-tailed benchmark). The engine accumulates, per bin,
the example count, the confidence sum and the correct count while it evaluates
(:meth:`ltbench.engine.steps.Step.evaluate`); :func:`expected_calibration_error` turns them
into the number.
"""

from __future__ import annotations

import math

import numpy as np

#: Equal-width confidence bins, the usual choice (Guo et al. 2017).
BINS = 15


def expected_calibration_error(bins: np.ndarray) -> float:
    """ECE in percent of the per-bin (count, confidence sum, correct count) ``bins``
    [BINS, 3]; NaN without examples."""
    bins = np.asarray(bins, dtype=np.float64)
    total = bins[:, 0].sum()
    if total <= 0:
        return math.nan
    return float(100.0 * np.abs(bins[:, 2] - bins[:, 1]).sum() / total)
