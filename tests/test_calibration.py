"""Expected calibration error (:mod:`ltbench.metrics.calibration`) and the engine's
per-bin accumulation (:func:`ltbench.engine.steps._add_calibration`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ltbench.engine.steps import _add_calibration
from ltbench.metrics.calibration import BINS, expected_calibration_error


def bin_of(confidence) -> np.ndarray:
    """The 0-based bin of each confidence in (0, 1], by the definition: bin b holds
    ((b − 1) / B, b / B]."""
    return np.clip(np.ceil(np.asarray(confidence) * BINS).astype(np.int64), 1, BINS) - 1


def _bins(confidence, correct) -> np.ndarray:
    """The per-bin (count, confidence sum, correct count) of hand-made predictions."""
    bins = np.zeros((BINS, 3))
    for b, c, ok in zip(bin_of(confidence), confidence, correct):
        bins[b] += (1, c, ok)
    return bins


def test_ece_of_hand_made_predictions():
    # one example per bin: |1 − .95| + |0 − .90| + |1 − .55| + |0 − .21| = 1.61 over 4
    assert bin_of(np.array([0.95, 0.9, 0.55, 0.21])).tolist() == [14, 13, 8, 3]
    assert expected_calibration_error(_bins([0.95, 0.9, 0.55, 0.21], [1, 0, 1, 0])) == \
        pytest.approx(40.25)
    # 0.95 and 0.94 share bin 14 (14.25 and 14.1 round up to 15): |1 − 1.89| = 0.89 over 2,
    # where the two alone would give (0.05 + 0.94) / 2
    assert expected_calibration_error(_bins([0.95, 0.94], [1, 0])) == pytest.approx(44.5)
    assert expected_calibration_error(_bins([1.0, 1.0], [1, 1])) == 0.0
    assert math.isnan(expected_calibration_error(np.zeros((BINS, 3))))


def test_device_accumulation_equals_the_reference_per_model():
    """Two models' logits over two chunks, accumulated on the device, equal the bins of the
    softmax confidences computed per model with numpy."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 50, 7, generator=generator) * 3
    targets = torch.randint(0, 7, (50,), generator=generator)
    bins = torch.zeros(2, BINS, 3, dtype=torch.float64)
    for chunk in (slice(0, 30), slice(30, 50)):
        _add_calibration(bins, logits[:, chunk], targets[chunk])
    for model in range(2):
        probabilities = torch.softmax(logits[model].double(), dim=1).numpy()
        reference = _bins(probabilities.max(axis=1),
                          probabilities.argmax(axis=1) == targets.numpy())
        np.testing.assert_allclose(bins[model].numpy(), reference, rtol=1e-6)
    assert bins[:, :, 0].sum().item() == 100
