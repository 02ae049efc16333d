"""Loss values of the loss-only methods against independent float64 computations.

Every expected value here is computed in plain Python (``math``) from the papers' formulas or
the reference code's semantics (protocols.md §3.1-3.3, 3.8, 3.9, 3.13, 3.14), never with the
modules' own helpers; a few are also pinned to numbers worked out by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from ltbench.api import Method
from ltbench.datasets.cifar_protocols import LDAM_CIFAR
from ltbench.hparams import resolve
from ltbench.methods.balanced_softmax import BalancedSoftmax
from ltbench.methods.cb_ce import ClassBalancedCE
from ltbench.methods.cb_focal import ClassBalancedFocal
from ltbench.methods.ce import CrossEntropy
from ltbench.methods.ce_drw import CrossEntropyDRW
from ltbench.methods.focal import Focal
from ltbench.methods.ldam import LDAM
from ltbench.methods.ldam_drw import LDAMDRW
from ltbench.methods.logit_adjust import LogitAdjustedLoss
from ltbench.registry import plugins

METHODS = {
    "ce": CrossEntropy,
    "focal": Focal,
    "cb-ce": ClassBalancedCE,
    "cb-focal": ClassBalancedFocal,
    "ce-drw": CrossEntropyDRW,
    "ldam": LDAM,
    "ldam-drw": LDAMDRW,
    "balanced-softmax": BalancedSoftmax,
    "logit-adjust": LogitAdjustedLoss,
}

COUNTS = [5000.0, 500.0, 50.0]
LOGITS = [[2.0, -1.0, 0.5],
          [0.3, 0.8, -0.4],
          [-0.2, 0.1, 0.9],
          [1.5, 0.2, -2.0],
          [0.0, -0.7, 0.4]]
TARGETS = [0, 1, 2, 2, 1]
# Cosine logits for LDAM lie in [-1, 1].
COSINE_LOGITS = [[0.9, -0.2, 0.1],
                 [0.2, 0.5, -0.3],
                 [-0.1, 0.3, 0.6],
                 [0.7, 0.1, -0.8],
                 [0.0, -0.4, 0.2]]
BETA = 0.9999


def build(cls: type[Method], counts=COUNTS, overrides=None, epochs=None) -> Method:
    hparams = resolve(LDAM_CIFAR, cls.defaults, overrides or {}, epochs=epochs)
    return cls(torch.tensor(counts, dtype=torch.float64), hparams)


def loss_of(method: Method, logits=LOGITS, targets=TARGETS, epoch: int = 0) -> float:
    return method.loss(torch.tensor(logits, dtype=torch.float32),
                       torch.tensor(targets, dtype=torch.int64), epoch).item()


# ---- independent plain-Python references ------------------------------------------------------

def ce_terms(logits, targets) -> list[float]:
    """Per-example ``-log softmax(z)[y]``."""
    out = []
    for row, y in zip(logits, targets):
        top = max(row)
        log_sum = top + math.log(sum(math.exp(v - top) for v in row))
        out.append(log_sum - row[y])
    return out


def mean(values) -> float:
    return sum(values) / len(values)


def weighted_mean_ce(logits, targets, weights) -> float:
    """PyTorch's ``F.cross_entropy(weight=w)``: ``sum w_y l / sum w_y``."""
    terms = ce_terms(logits, targets)
    return (sum(weights[y] * t for y, t in zip(targets, terms))
            / sum(weights[y] for y in targets))


def cb_weights(counts, beta) -> list[float]:
    """Cui et al. Eq.: ``(1 - beta) / (1 - beta**n)``, normalised to sum to C."""
    raw = [(1.0 - beta) / (1.0 - beta ** n) for n in counts]
    return [w / sum(raw) * len(counts) for w in raw]


def shifted(logits, offsets):
    return [[v + o for v, o in zip(row, offsets)] for row in logits]


def ldam_margins(counts, max_m) -> list[float]:
    quartic = [n ** -0.25 for n in counts]
    return [max_m * q / max(quartic) for q in quartic]


def ldam_logits(logits, targets, margins, s):
    return [[s * (v - (margins[y] if j == y else 0.0)) for j, v in enumerate(row)]
            for row, y in zip(logits, targets)]


# ---- contract ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(METHODS))
def test_registered_class_has_summary_and_paper(name):
    cls = plugins("method")[name].load()
    assert cls is METHODS[name]
    assert issubclass(cls, Method)
    assert cls.summary.strip() and "\n" not in cls.summary
    assert "arXiv:" in cls.paper and " : " in cls.paper


def test_defaults_hold_reference_values():
    assert Focal.defaults == {"gamma": 1.0}
    assert ClassBalancedCE.defaults == {"beta": 0.9999}
    assert ClassBalancedFocal.defaults == {"gamma": 1.0, "beta": 0.9999}
    assert LDAM.defaults == {"max_m": 0.5, "s": 30.0}
    assert LogitAdjustedLoss.defaults == {"tau": 1.0}
    for cls in (CrossEntropyDRW, LDAMDRW):
        resolved = resolve(LDAM_CIFAR, cls.defaults, {})
        assert resolved["beta"] == 0.9999 and resolved["drw_epoch"] == 160
    assert LDAMDRW.defaults["max_m"] == 0.5 and LDAMDRW.defaults["s"] == 30.0
    assert LDAM.head == "cosine" and LDAMDRW.head == "cosine"
    assert all(METHODS[n].head == "linear" for n in METHODS if n not in ("ldam", "ldam-drw"))


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("epoch", [0, 199])
def test_loss_is_scalar_with_finite_gradient(name, epoch):
    method = build(METHODS[name])
    logits = torch.tensor(LOGITS, dtype=torch.float32, requires_grad=True)
    loss = method.loss(logits, torch.tensor(TARGETS), epoch)
    loss.backward()
    assert loss.shape == () and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---- values -----------------------------------------------------------------------------------

def test_ce_is_mean_cross_entropy():
    assert loss_of(build(CrossEntropy)) == pytest.approx(mean(ce_terms(LOGITS, TARGETS)),
                                                         rel=1e-6)
    # Uniform logits over 3 classes: log 3 for every example.
    assert loss_of(build(CrossEntropy), logits=[[0.0] * 3] * 5) == pytest.approx(math.log(3),
                                                                                rel=1e-6)


def test_focal_gamma_one():
    expected = mean([(1 - math.exp(-t)) * t for t in ce_terms(LOGITS, TARGETS)])
    assert loss_of(build(Focal)) == pytest.approx(expected, rel=1e-6)
    # Uniform logits: p = 1/3, loss = (2/3) log 3.
    assert loss_of(build(Focal), logits=[[0.0] * 3] * 5) == pytest.approx(2 / 3 * math.log(3),
                                                                         rel=1e-6)


def test_focal_gamma_is_read_from_hparams():
    expected = mean([(1 - math.exp(-t)) ** 2 * t for t in ce_terms(LOGITS, TARGETS)])
    assert loss_of(build(Focal, overrides={"gamma": "2"})) == pytest.approx(expected, rel=1e-6)


def test_class_balanced_weights_formula_and_hand_values():
    weights = cb_weights(COUNTS, BETA)
    assert sum(weights) == pytest.approx(3.0)
    # By hand: 1 - 0.9999**n = 1 - exp(-1.00005e-4 n) = 0.393485, 0.0487730, 0.00498777;
    # inverses 2.5414, 20.503, 200.49 (sum 223.53), times 3 / sum.
    assert weights == pytest.approx([0.0341, 0.2752, 2.6907], abs=1e-4)
    method = build(ClassBalancedCE)
    assert method.class_weights.tolist() == pytest.approx(weights, rel=1e-6)


def test_cb_ce_is_weighted_mean():
    expected = weighted_mean_ce(LOGITS, TARGETS, cb_weights(COUNTS, BETA))
    assert loss_of(build(ClassBalancedCE)) == pytest.approx(expected, rel=1e-6)
    # The weighted mean divides by sum w_y, not the batch size: that would differ.
    batch_mean = mean([cb_weights(COUNTS, BETA)[y] * t
                       for y, t in zip(TARGETS, ce_terms(LOGITS, TARGETS))])
    assert abs(expected - batch_mean) > 1e-2


def test_cb_focal_takes_p_from_the_weighted_ce():
    weights = cb_weights(COUNTS, BETA)
    weighted_terms = [weights[y] * t for y, t in zip(TARGETS, ce_terms(LOGITS, TARGETS))]
    expected = mean([(1 - math.exp(-t)) * t for t in weighted_terms])
    assert loss_of(build(ClassBalancedFocal)) == pytest.approx(expected, rel=1e-6)
    # With the model's own probability instead the value would differ (the reference quirk).
    model_p = mean([weights[y] * (1 - math.exp(-t)) * t
                    for y, t in zip(TARGETS, ce_terms(LOGITS, TARGETS))])
    assert abs(expected - model_p) > 1e-2


def test_ce_drw_switches_to_class_balanced_weights_at_drw_epoch():
    method = build(CrossEntropyDRW)
    assert method.hparams["drw_epoch"] == 160
    plain = mean(ce_terms(LOGITS, TARGETS))
    weighted = weighted_mean_ce(LOGITS, TARGETS, cb_weights(COUNTS, BETA))
    assert loss_of(method, epoch=0) == pytest.approx(plain, rel=1e-6)
    assert loss_of(method, epoch=159) == pytest.approx(plain, rel=1e-6)
    assert loss_of(method, epoch=160) == pytest.approx(weighted, rel=1e-6)
    assert loss_of(method, epoch=199) == pytest.approx(weighted, rel=1e-6)


def test_drw_epoch_follows_a_shorter_schedule():
    method = build(CrossEntropyDRW, epochs=20)
    assert method.hparams["drw_epoch"] == 16
    assert loss_of(method, epoch=15) == pytest.approx(mean(ce_terms(LOGITS, TARGETS)), rel=1e-6)
    assert loss_of(method, epoch=16) == pytest.approx(
        weighted_mean_ce(LOGITS, TARGETS, cb_weights(COUNTS, BETA)), rel=1e-6)


LDAM_COUNTS = [5000.0, 2997.0, 50.0]


def test_ldam_margins():
    method = build(LDAM, counts=LDAM_COUNTS)
    # By hand: rarest gets max_m; 5000 = 100 x 50 gets 0.5 / 100**0.25 = 0.5 / sqrt(10).
    assert method.margins.tolist() == pytest.approx(
        [0.5 / math.sqrt(10), 0.5 * (50 / 2997) ** 0.25, 0.5], rel=1e-6)
    assert method.margins.tolist() == pytest.approx(ldam_margins(LDAM_COUNTS, 0.5), rel=1e-6)
    # By hand: 50 / 2997 = 0.0166834, two square roots give 0.359394, halved 0.179697.
    assert method.margins[1].item() == pytest.approx(0.179697, abs=1e-6)


def test_ldam_loss_value():
    margins = ldam_margins(LDAM_COUNTS, 0.5)
    expected = mean(ce_terms(ldam_logits(COSINE_LOGITS, TARGETS, margins, 30.0), TARGETS))
    assert loss_of(build(LDAM, counts=LDAM_COUNTS), logits=COSINE_LOGITS) == pytest.approx(
        expected, rel=1e-6)
    # Zero cosines: the true logit becomes -30 Δ_y, so l = 30 Δ_y + log(2 + exp(-30 Δ_y)).
    zero = [[0.0] * 3] * 5
    by_hand = mean([30 * margins[y] + math.log(2 + math.exp(-30 * margins[y])) for y in TARGETS])
    assert loss_of(build(LDAM, counts=LDAM_COUNTS), logits=zero) == pytest.approx(by_hand,
                                                                                  rel=1e-6)


def test_ldam_hparams_are_used():
    margins = ldam_margins(LDAM_COUNTS, 0.3)
    expected = mean(ce_terms(ldam_logits(COSINE_LOGITS, TARGETS, margins, 16.0), TARGETS))
    method = build(LDAM, counts=LDAM_COUNTS, overrides={"max_m": "0.3", "s": "16"})
    assert loss_of(method, logits=COSINE_LOGITS) == pytest.approx(expected, rel=1e-6)


def test_ldam_drw_switches_to_weighted_ldam_at_drw_epoch():
    margins = ldam_margins(LDAM_COUNTS, 0.5)
    adjusted = ldam_logits(COSINE_LOGITS, TARGETS, margins, 30.0)
    plain = mean(ce_terms(adjusted, TARGETS))
    weighted = weighted_mean_ce(adjusted, TARGETS, cb_weights(LDAM_COUNTS, BETA))
    method = build(LDAMDRW, counts=LDAM_COUNTS)
    assert method.hparams["drw_epoch"] == 160
    assert loss_of(method, logits=COSINE_LOGITS, epoch=159) == pytest.approx(plain, rel=1e-6)
    assert loss_of(method, logits=COSINE_LOGITS, epoch=160) == pytest.approx(weighted, rel=1e-6)
    assert loss_of(build(LDAM, counts=LDAM_COUNTS), logits=COSINE_LOGITS,
                   epoch=160) == pytest.approx(plain, rel=1e-6)


def test_balanced_softmax_is_ce_on_logits_plus_log_counts():
    expected = mean(ce_terms(shifted(LOGITS, [math.log(n) for n in COUNTS]), TARGETS))
    assert loss_of(build(BalancedSoftmax)) == pytest.approx(expected, rel=1e-6)


def test_logit_adjust_with_tau_one_equals_balanced_softmax():
    assert loss_of(build(LogitAdjustedLoss)) == pytest.approx(loss_of(build(BalancedSoftmax)),
                                                              rel=1e-6)


def test_logit_adjust_uses_tau():
    prior = [n / sum(COUNTS) for n in COUNTS]
    expected = mean(ce_terms(shifted(LOGITS, [0.5 * math.log(p) for p in prior]), TARGETS))
    method = build(LogitAdjustedLoss, overrides={"tau": "0.5"})
    assert loss_of(method) == pytest.approx(expected, rel=1e-6)
