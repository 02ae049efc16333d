"""The meta-re-weighting family: look-ahead meta-gradients, Jamal / L2RW / MW-Net steps, the
two-stage schedule, meta batches and the ε artifacts (protocols.md §3.4-3.7).

The references here are independent of :mod:`ltbench.methods.lookahead`: a tiny network whose
forward is also written out by hand as a function of its parameters (so no
``functional_call``, no buffer cloning), float64 central finite differences, closed-form
gradients of a linear softmax model computed in NumPy, and re-implementations of the reference
codes' steps with model copies.
"""

from __future__ import annotations

import contextlib
import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import TINY_SYNTHETIC

from ltbench.api import StepContext, class_balanced_weights
from ltbench.datasets.synthetic_lt import SyntheticLT
from ltbench.engine.augment import DeviceImages
from ltbench.engine.train import MetaBatches
from ltbench.hparams import parse_overrides
from ltbench.methods.focal import Focal
from ltbench.methods.jamal import MetaCE, MetaFocal, MetaLDAM, conditional_weights
from ltbench.methods.l2rw import LearningToReweight, l2rw_weights
from ltbench.methods.ldam import LDAM
from ltbench.methods.lookahead import meta_gradient
from ltbench.methods.meta_set_finetune import MetaSetFinetune
from ltbench.methods.mwn import MetaWeightNet, build_weighting_network, normalised
from ltbench.methods.weight_histograms import BINS, WeightHistograms
from ltbench.run import grid
from ltbench.run.runner import run_grid, train_run
from ltbench.spec import derive_seed
from ltbench.store.result_store import ResultStore

CPU = torch.device("cpu")
NO_AUTOCAST = contextlib.nullcontext
BN_EPS = 1e-5


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- a tiny network and its hand-written forward --------------------------------------------------

class TinyNet(nn.Module):
    """Linear(4, 6) → BatchNorm1d → ReLU → Linear(6, 3): BN couples the examples of a batch."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6, eps=BN_EPS)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.inner(x))))


def tiny_net(dtype: torch.dtype, seed: int = 0) -> TinyNet:
    with torch.device("meta"):
        net = TinyNet()
    net = net.to_empty(device="cpu").to(dtype)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=generator(seed), dtype=dtype))
            seed += 1
        net.bn.weight.add_(1.5)  # keep the BN scale away from zero
        net.bn.reset_running_stats()
    return net.train()


def hand_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """TinyNet in train mode from its parameter list, written out (batch-statistics BN)."""
    w1, b1, gamma, beta, w2, b2 = params
    h = x @ w1.T + b1
    mean, var = h.mean(0), h.var(0, unbiased=False)
    h = F.relu((h - mean) / torch.sqrt(var + BN_EPS) * gamma + beta)
    return h @ w2.T + b2


def hand_meta_loss(params, x, y, weights, step_size, meta_x, meta_y, create_graph=False):
    """``CE(f_θ'(meta_x), meta_y)`` with ``θ' = θ − α ∇ Σ_i w_i CE_i(f_θ(x))``, by hand."""
    losses = F.cross_entropy(hand_forward(params, x), y, reduction="none")
    grads = torch.autograd.grad((weights * losses).sum(), params, create_graph=create_graph)
    looked_ahead = [p - step_size * g for p, g in zip(params, grads)]
    return F.cross_entropy(hand_forward(looked_ahead, meta_x), meta_y)


def batch(seed: int, n: int, dtype=torch.float64):
    g = generator(seed)
    return torch.randn(n, 4, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


# --- the meta-gradient ----------------------------------------------------------------------------

def test_hand_forward_is_the_network():
    net = tiny_net(torch.float64)
    x, _ = batch(1, 7)
    assert torch.allclose(net(x), hand_forward(list(net.parameters()), x), rtol=1e-12,
                          atol=1e-12)


def test_meta_gradient_wrt_eps_matches_float64_finite_differences():
    net = tiny_net(torch.float64)
    x, y = batch(1, 8)
    meta_x, meta_y = batch(2, 5)
    class_weights = torch.tensor([0.4, 1.1, 1.5], dtype=torch.float64)[y]
    step_size = 0.7  # large, so that the second-order term matters
    params = [p.detach().clone() for p in net.parameters()]

    losses = F.cross_entropy(net(x), y, reduction="none")
    running_mean = net.bn.running_mean.clone()
    tracked = net.bn.num_batches_tracked.clone()
    eps = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    (grad,) = meta_gradient(net, losses, class_weights * (1 + eps), step_size, meta_x,
                            lambda logits: F.cross_entropy(logits, meta_y), (eps,))

    h = 1e-5
    finite = torch.zeros(8, dtype=torch.float64)
    for i in range(8):
        for sign in (1, -1):
            shifted = torch.zeros(8, dtype=torch.float64)
            shifted[i] = sign * h
            value = hand_meta_loss([p.clone().requires_grad_() for p in params], x, y,
                                   class_weights * (1 + shifted), step_size, meta_x, meta_y)
            finite[i] += sign * value.item() / (2 * h)
    assert relative_error(grad, finite) < 1e-6
    assert grad.abs().min() > 0  # every example matters

    # The look-ahead's meta forward used cloned BN buffers: the running stats hold exactly the
    # one update of the forward at θ.
    assert torch.equal(net.bn.running_mean, running_mean)
    assert torch.equal(net.bn.num_batches_tracked, tracked)
    # The forward graph at θ is still there for the real update.
    (class_weights * losses).mean().backward()
    own = [p.clone().requires_grad_() for p in params]
    reference = torch.autograd.grad(
        (class_weights * F.cross_entropy(hand_forward(own, x), y, reduction="none")).mean(), own)
    for param, expected in zip(net.parameters(), reference):
        assert torch.allclose(param.grad, expected, rtol=1e-12, atol=1e-14)


def test_meta_gradient_through_a_weighting_network_matches_finite_differences():
    """MW-Net's case: weights V(ℓ)/Σ V(ℓ) depend on the losses and on V's parameters."""
    net = tiny_net(torch.float64, seed=10)
    x, y = batch(3, 8)
    meta_x, meta_y = batch(4, 5)
    weighting = build_weighting_network(generator(5), CPU).double()
    step_size = 0.9
    params = [p.detach().clone() for p in net.parameters()]

    losses = F.cross_entropy(net(x), y, reduction="none")
    weights = normalised(weighting(losses[:, None])[:, 0])
    grads = meta_gradient(net, losses, weights, step_size, meta_x,
                          lambda logits: F.cross_entropy(logits, meta_y),
                          tuple(weighting.parameters()))

    def meta_loss_with(vnet) -> float:
        own = [p.clone().requires_grad_() for p in params]
        own_losses = F.cross_entropy(hand_forward(own, x), y, reduction="none")
        own_weights = normalised(vnet(own_losses[:, None])[:, 0])  # not detached: as MW-Net
        grads_at = torch.autograd.grad((own_weights * own_losses).sum(), own)
        looked_ahead = [p - step_size * g for p, g in zip(own, grads_at)]
        return F.cross_entropy(hand_forward(looked_ahead, meta_x), meta_y).item()

    h = 1e-5
    for index, grad in enumerate(grads):
        finite = torch.zeros_like(grad).flatten()
        # Every entry of the small layers; 12 sampled entries of the 100-wide hidden layer.
        entries = range(grad.numel()) if grad.numel() <= 12 else range(0, grad.numel(), 9)
        for k in entries:
            for sign in (1, -1):
                shifted = copy.deepcopy(weighting)
                with torch.no_grad():
                    list(shifted.parameters())[index].view(-1)[k] += sign * h
                finite[k] += sign * meta_loss_with(shifted) / (2 * h)
        picked = torch.tensor(list(entries))
        assert relative_error(grad.flatten()[picked], finite[picked]) < 1e-6


# --- Jamal et al.: the two weight forms against a hand computation ------------------------------

def test_additive_and_multiplicative_forms_match_the_closed_form():
    """Linear softmax model z = W x + b: ∇_W ℓ_i = (p_i − e_i) x_iᵀ, ∇_b ℓ_i = p_i − e_i, so
    ∂L_meta/∂w_i = −α ⟨∇ℓ_i(θ), ∇L_meta(θ')⟩ with θ' = θ − α Σ_i w_{y_i} ∇ℓ_i(θ)."""
    W = np.array([[0.5, -0.3], [0.1, 0.8], [-0.6, 0.2]])
    b = np.array([0.05, -0.1, 0.2])
    x = np.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -1.2], [2.0, 0.1]])
    y = np.array([0, 1, 2, 1])
    meta_x, meta_y = np.array([[0.7, -0.4], [-1.5, 1.0], [0.2, 0.9]]), np.array([2, 0, 1])
    class_w = np.array([0.25, 1.0, 1.75])
    alpha, eta = 0.3, 0.01

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    residual = softmax(x @ W.T + b) - np.eye(3)[y]                 # p_i − e_i
    w_i = class_w[y]
    W2 = W - alpha * np.einsum("i,ic,id->cd", w_i, residual, x)
    b2 = b - alpha * (w_i[:, None] * residual).sum(0)
    meta_residual = softmax(meta_x @ W2.T + b2) - np.eye(3)[meta_y]
    v_W, v_b = meta_residual.T @ meta_x / 3, meta_residual.mean(0)  # ∇L_meta(θ')
    score = np.einsum("ic,cd,id->i", residual, v_W, x) + residual @ v_b  # ⟨∇ℓ_i, v⟩
    eps_additive = -eta * (-alpha * score)                           # ∂w/∂ε = 1
    eps_multiplicative = -eta * (-alpha * w_i * score)               # ∂w/∂ε = w_y

    model = nn.Linear(2, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(W))
        model.bias.copy_(torch.from_numpy(b))
    targets = torch.from_numpy(y)
    results = {}
    for form in ("additive", "multiplicative"):
        losses = F.cross_entropy(model(torch.from_numpy(x)), targets, reduction="none")
        results[form] = conditional_weights(
            model, losses, torch.from_numpy(w_i), form, eta, alpha,
            torch.from_numpy(meta_x), lambda z: F.cross_entropy(z, torch.from_numpy(meta_y)))
    eps, weights = results["additive"]
    np.testing.assert_allclose(eps.numpy(), eps_additive, rtol=1e-10, atol=0)
    np.testing.assert_allclose(weights.numpy(), w_i + eps_additive, rtol=1e-12)
    eps, weights = results["multiplicative"]
    np.testing.assert_allclose(eps.numpy(), eps_multiplicative, rtol=1e-10, atol=0)
    np.testing.assert_allclose(weights.numpy(), w_i * (1 + eps_multiplicative), rtol=1e-12)
    # w_y(1 + ε_mult) = w_y + w_y² ε_add: the forms agree only where w_y = 1 (class 1).
    differ = ~np.isclose(results["additive"][1].numpy(), results["multiplicative"][1].numpy(),
                         rtol=1e-9, atol=0)
    assert differ.tolist() == (y != 1).tolist()


def test_meta_variants_share_their_base_losses():
    counts = torch.tensor([50.0, 20.0, 5.0], dtype=torch.float64)
    logits = torch.randn(6, 3, generator=generator(0)).clamp(-1, 1)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    for meta_cls, plain_cls in ((MetaCE, None), (MetaFocal, Focal), (MetaLDAM, LDAM)):
        (spec,) = grid.expand([{MetaCE: "meta-ce", MetaFocal: "meta-focal",
                                MetaLDAM: "meta-ldam"}[meta_cls]], ["synthetic-lt"], [10.0], [0])
        method = meta_cls(counts, spec.hparams)
        plain = (F.cross_entropy(logits, targets) if plain_cls is None
                 else plain_cls(counts, spec.hparams).loss(logits, targets, 0))
        assert torch.equal(method.loss(logits, targets, 0), plain)
        per_example = method.base_loss(logits, targets, "none")
        assert per_example.shape == (6,) and torch.equal(per_example.mean(), plain)
    assert MetaLDAM.head == "cosine" and MetaCE.head == "linear"


# --- one full training step of each method against the reference's copy-the-model step ---------

def fixed_step(meta_x, meta_y, lr: float = 0.1) -> StepContext:
    return StepContext(lr=lr, precision=NO_AUTOCAST, meta_batch=lambda: (meta_x, meta_y), seed=3)


def step_hparams(method: str, **overrides) -> dict:
    (spec,) = grid.expand([method], ["synthetic-lt"], [10.0], [0],
                          overrides={k: str(v) for k, v in overrides.items()})
    return spec.hparams


def reference_gradients(params, x, y, weights, scale) -> list[torch.Tensor]:
    losses = F.cross_entropy(hand_forward(params, x), y, reduction="none")
    return list(torch.autograd.grad(scale * (weights * losses).sum(), params))


@pytest.mark.parametrize("eps_form", ["additive", "multiplicative"])
def test_jamal_stage2_step_equals_the_released_code_step(eps_form):
    """C-LT/main.py ``train_meta``: copy, look-ahead on Σ (w_y + ε) ℓ with α_meta, meta CE,
    ε = −0.01 g, real update mean(w ℓ) — here with the meta model as the hand forward."""
    net = tiny_net(torch.float32, seed=20)
    x, y = batch(5, 10, torch.float32)
    meta_x, meta_y = batch(6, 6, torch.float32)
    counts = torch.tensor([40.0, 12.0, 3.0], dtype=torch.float64)
    hparams = step_hparams("meta-ce", eps_form=eps_form, meta_start_epoch=0)
    method = MetaCE(counts, hparams)
    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    epoch = 0  # α_meta = 0.1

    loss, logits, scored = method.training_loss(net, x, y, epoch, fixed_step(meta_x, meta_y))
    loss.backward()

    class_w = class_balanced_weights(counts, 0.9999)[y]
    eps = torch.zeros(10, requires_grad=True)
    weight_of = (lambda e: class_w + e) if eps_form == "additive" else \
        (lambda e: class_w * (1 + e))
    (g,) = torch.autograd.grad(hand_meta_loss(params, x, y, weight_of(eps), 0.1, meta_x, meta_y,
                                              create_graph=True), eps)
    weights = weight_of(-0.01 * g).detach()
    assert torch.equal(scored, y) and logits.shape == (10, 3)
    assert loss.item() == pytest.approx(
        (weights * F.cross_entropy(hand_forward(params, x), y, reduction="none")).mean().item(),
        rel=1e-6)
    for param, expected in zip(net.parameters(), reference_gradients(params, x, y, weights,
                                                                     1 / 10)):
        assert torch.allclose(param.grad, expected, rtol=1e-4, atol=1e-7)
    recorded = method.artifacts()["eps_summary"].set_index(["quantity", "class"])
    for cls in range(3):
        own = y == cls
        assert recorded.loc[("eps", cls), "n"] == own.sum().item()
        assert recorded.loc[("eps", cls), "mean"] == pytest.approx(
            (-0.01 * g)[own].mean().item(), rel=1e-4, abs=1e-12)
        assert recorded.loc[("weight", cls), "mean"] == pytest.approx(
            weights[own].mean().item(), rel=1e-6)


def test_l2rw_step_equals_algorithm_1():
    net = tiny_net(torch.float32, seed=30)
    x, y = batch(7, 10, torch.float32)
    meta_x, meta_y = batch(8, 6, torch.float32)
    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    method = LearningToReweight(torch.tensor([40.0, 12.0, 3.0], dtype=torch.float64),
                                step_hparams("l2rw"))
    loss, _, _ = method.training_loss(net, x, y, 0, fixed_step(meta_x, meta_y, lr=0.5))
    loss.backward()

    eps = torch.zeros(10, requires_grad=True)
    (g,) = torch.autograd.grad(hand_meta_loss(params, x, y, eps, 0.5, meta_x, meta_y,
                                              create_graph=True), eps)
    clipped = torch.clamp(-g, min=0)
    weights = clipped / clipped.sum()
    assert 0 < (weights > 0).sum() < 10  # some examples are dropped, some kept
    for param, expected in zip(net.parameters(), reference_gradients(params, x, y, weights, 1)):
        assert torch.allclose(param.grad, expected, rtol=1e-4, atol=1e-7)
    summary = method.artifacts()["eps_summary"].set_index(["quantity", "class"])
    for cls in range(3):
        own = y == cls
        assert summary.loc[("weight", cls), "mean"] == pytest.approx(
            (10 * weights[own]).mean().item(), rel=1e-4)
        assert summary.loc[("eps", cls), "mean"] == pytest.approx((-g[own]).mean().item(),
                                                                  rel=1e-4)


def test_meta_set_finetune_trains_on_the_meta_batch_in_stage_2():
    net = tiny_net(torch.float32, seed=50)
    x, y = batch(11, 10, torch.float32)
    meta_x, meta_y = batch(12, 6, torch.float32)
    method = MetaSetFinetune(torch.tensor([40.0, 12.0, 3.0], dtype=torch.float64),
                             step_hparams("meta-set-finetune", meta_start_epoch=1))
    step = fixed_step(meta_x, meta_y)
    expected = F.cross_entropy(copy.deepcopy(net)(meta_x), meta_y)
    loss, logits, scored = method.training_loss(net, x, y, 1, step)
    assert torch.equal(scored, meta_y) and logits.shape == (6, 3)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    _, logits, scored = method.training_loss(net, x, y, 0, step)  # stage 1: the batch itself
    assert torch.equal(scored, y) and logits.shape == (10, 3)


def test_l2rw_weights_hand_values():
    g = torch.tensor([-1.0, 2.0, -3.0, 0.0])
    assert l2rw_weights(g).tolist() == [0.25, 0.0, 0.75, 0.0]
    assert l2rw_weights(torch.tensor([1.0, 0.0, 2.0])).tolist() == [0.0, 0.0, 0.0]
    assert normalised(torch.tensor([1.0, 3.0])).tolist() == [0.25, 0.75]
    assert normalised(torch.tensor([0.0, 0.0])).tolist() == [0.0, 0.0]


def test_mwn_step_equals_the_reference_step():
    """meta-weight-net-class-imbalance.py ``train``: look-ahead with V(ℓ)/ΣV(ℓ) (V's input not
    detached), α_meta, meta CE, one step of V's SGD, then weights from the updated V without
    gradient and the real update Σ w ℓ from a second forward."""
    net = tiny_net(torch.float32, seed=40)
    x, y = batch(9, 10, torch.float32)
    meta_x, meta_y = batch(10, 6, torch.float32)
    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    hparams = step_hparams("mwn")
    method = MetaWeightNet(torch.tensor([40.0, 12.0, 3.0], dtype=torch.float64), hparams)
    epoch = 85  # α_meta = 0.1 · 0.1 (epoch >= 80)
    loss, _, _ = method.training_loss(net, x, y, epoch, fixed_step(meta_x, meta_y))
    loss.backward()

    vnet = build_weighting_network(generator(derive_seed(3, "vnet")), CPU)
    optimizer = torch.optim.SGD(vnet.parameters(), lr=1e-5, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    losses = F.cross_entropy(hand_forward(params, x), y, reduction="none")
    weights = normalised(vnet(losses[:, None])[:, 0])
    grads = torch.autograd.grad((weights * losses).sum(), params, create_graph=True)
    looked_ahead = [p - 0.01 * g for p, g in zip(params, grads)]
    optimizer.zero_grad()
    F.cross_entropy(hand_forward(looked_ahead, meta_x), meta_y).backward()
    optimizer.step()
    with torch.no_grad():
        final = normalised(vnet(losses.detach()[:, None])[:, 0])
    for ours, theirs in zip(method.weighting.parameters(), vnet.parameters()):
        assert theirs.grad.abs().max() > 0
        assert torch.allclose(ours.grad, theirs.grad, rtol=1e-4,
                              atol=1e-4 * theirs.grad.abs().max())
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-9)
    for param, expected in zip(net.parameters(), reference_gradients(params, x, y, final, 1)):
        assert torch.allclose(param.grad, expected, rtol=1e-4, atol=1e-7)
    summary = method.artifacts()["eps_summary"]
    assert set(summary["quantity"]) == {"weight"}  # MW-Net has no ε


def test_weighting_network_initialisation_uses_only_its_generator():
    state = torch.random.get_rng_state()
    first = build_weighting_network(generator(1), CPU)
    assert torch.equal(state, torch.random.get_rng_state())
    again, other = build_weighting_network(generator(1), CPU), build_weighting_network(
        generator(2), CPU)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))
    assert not torch.equal(first.hidden.weight, other.hidden.weight)
    assert first.hidden.weight.abs().max() <= 1.0 and first.output.weight.abs().max() <= 0.1
    assert tuple(first.hidden.weight.shape) == (100, 1)


# --- meta batches ---------------------------------------------------------------------------------

def test_meta_batches_walk_fresh_permutations_from_their_own_generator():
    images = torch.randint(1, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=generator(0))
    labels = torch.arange(10)
    device_images = DeviceImages(images, labels, (0.5,) * 3, (0.25,) * 3, 2, "reflect", CPU,
                                 channels_last=False)
    batches = MetaBatches(device_images, 4, generator(derive_seed(0, "meta")))
    drawn = [batches()[1] for _ in range(5)]
    assert [len(t) for t in drawn] == [4] * 5
    first_pass = torch.cat(drawn[:2])
    assert len(set(first_pass.tolist())) == 8            # no repeat within a pass
    assert len(set(torch.cat(drawn[2:4]).tolist())) == 8  # a new pass after 8 of 10
    replay = MetaBatches(device_images, 4, generator(derive_seed(0, "meta")))
    assert all(torch.equal(replay()[1], t) for t in drawn)
    whole = MetaBatches(device_images, 100, generator(1))
    inputs, targets = whole()
    assert inputs.shape == (10, 3, 8, 8) and sorted(targets.tolist()) == list(range(10))


# --- histograms of ε and weights --------------------------------------------------------------

def test_weight_histograms_are_exact_per_epoch_and_class():
    histograms = WeightHistograms(num_classes=3)
    targets = torch.tensor([0, 0, 1, 1, 1, 0])
    eps = torch.tensor([0.13, -0.3, 0.5, 0.21, math.nan, 0.04])
    histograms.record(4, targets[:3], eps=eps[:3], weight=torch.ones(3))
    histograms.record(4, targets[3:], eps=eps[3:], weight=torch.full((3,), 2.0))
    histograms.record(5, torch.tensor([2, 2]), eps=torch.tensor([1.0, 3.0]))
    frames = histograms.frames()
    bins = frames["eps"]
    assert list(bins.columns) == ["quantity", "epoch", "class", "bin", "lo", "hi", "count"]
    assert bins["count"].dtype == np.int64 and bins["bin"].between(0, BINS - 1).all()
    assert len(bins) == 3 * 3 * BINS  # (eps, 4), (weight, 4), (eps, 5)
    eps4 = bins[(bins["quantity"] == "eps") & (bins["epoch"] == 4)]
    edges = np.linspace(-0.3, 0.5, BINS + 1)
    assert np.allclose(eps4["lo"].to_numpy()[:BINS], edges[:-1])
    assert np.allclose(eps4["hi"].to_numpy()[:BINS], edges[1:])
    per_class = eps4.groupby("class")["count"].sum().tolist()
    assert per_class == [3, 2, 0]  # the NaN is left out
    # 64 bins of width 0.8 / 64 from -0.3: 0.13 → bin 34 (34.4), 0.04 → 27 (27.2), 0.21 → 40.
    class0 = eps4[eps4["class"] == 0].set_index("bin")["count"]
    assert class0[class0 > 0].index.tolist() == [0, 27, 34]
    class1 = eps4[eps4["class"] == 1].set_index("bin")["count"]
    assert class1[class1 > 0].index.tolist() == [40, BINS - 1]  # the maximum: last bin
    weight4 = bins[(bins["quantity"] == "weight") & (bins["epoch"] == 4)]
    assert weight4["lo"].iloc[0] == 1.0 and weight4["hi"].iloc[-1] == 2.0
    summary = frames["eps_summary"]
    assert list(summary.columns) == ["quantity", "epoch", "class", "n", "mean", "std", "q05",
                                     "q25", "q50", "q75", "q95"]
    row = summary.set_index(["quantity", "epoch", "class"]).loc[("eps", 4, 0)]
    values = np.array([0.13, -0.3, 0.04], dtype=np.float32).astype(np.float64)
    assert row["n"] == 3 and row["mean"] == pytest.approx(values.mean())
    assert row["std"] == pytest.approx(values.std())
    assert row["q50"] == values[2] and row["q05"] == pytest.approx(
        -0.3 + 0.1 * (0.04 + 0.3), rel=1e-6)  # linear interpolation, NumPy's default
    empty = summary.set_index(["quantity", "epoch", "class"]).loc[("eps", 4, 2)]
    assert empty["n"] == 0 and math.isnan(empty["mean"])
    single = summary.set_index(["quantity", "epoch", "class"]).loc[("eps", 5, 2)]
    assert (single["mean"], single["q25"]) == (2.0, 1.5)
    assert WeightHistograms(3).frames() == {}


# --- the two-stage schedule through the engine ------------------------------------------------

def tiny_specs(methods: list[str], **overrides):
    items = list(TINY_SYNTHETIC) + [f"{k}={v}" for k, v in overrides.items()]
    return grid.expand(methods, ["synthetic-lt"], [4.0], [0], overrides=parse_overrides(items),
                       epochs=2)


@pytest.mark.slow
def test_stage_1_is_bit_identical_to_ce():
    specs = tiny_specs(["ce", "meta-ce", "cb-finetune", "meta-set-finetune"], protocol="jamal",
                       meta_start_epoch=5)
    data = SyntheticLT().load(None, 4.0, "exp", 0, specs[0].hparams)
    assert data.meta_images is not None and data.class_counts == [14, 8, 5, 3]
    numbers = ["epoch", "lr", "train_loss", "train_acc", "test_acc"]
    ce_fields, ce_artifacts, *_ = train_run(specs[0], data, CPU)
    for spec in specs[1:]:
        fields, artifacts, *_ = train_run(spec, data, CPU)
        pd.testing.assert_frame_equal(artifacts["curves"][numbers],
                                      ce_artifacts["curves"][numbers], check_exact=True)
        assert fields["per_class_acc"] == ce_fields["per_class_acc"]
        # No stage 2: nothing published with the record beyond every run's curves (the
        # shifted-test evaluations are stored after it).
        assert set(artifacts) == {"curves"}


@pytest.mark.slow
def test_stage_2_runs_publish_eps_artifacts(tmp_path):
    methods = ["meta-ce", "meta-focal", "meta-ldam", "l2rw", "mwn", "cb-finetune",
               "meta-set-finetune"]
    specs = tiny_specs(methods, meta_start_epoch=1)
    specs += tiny_specs(["meta-ce"], meta_start_epoch=1, eps_form="additive")
    store = ResultStore(tmp_path)
    records = run_grid(specs, store, tmp_path, CPU)
    assert [r["status"] for r in records] == ["ok"] * len(specs), [r["error"] for r in records]
    counts = np.array([14, 8, 5, 3])  # jamal: n_max 24 - 10 meta images per class
    for spec, record in zip(specs, records):
        assert record["train_class_counts"] == counts.tolist()
        bins = store.artifact("eps", spec.run_id)
        summary = store.artifact("eps_summary", spec.run_id)
        if spec.method in ("cb-finetune", "meta-set-finetune"):
            assert bins is None and summary is None
            continue
        stage2_epochs = [0, 1] if spec.method in ("l2rw", "mwn") else [1]
        quantities = {"weight"} if spec.method == "mwn" else {"eps", "weight"}
        assert list(bins.columns) == ["quantity", "epoch", "class", "bin", "lo", "hi", "count"]
        assert set(bins["quantity"]) == quantities
        assert sorted(set(bins["epoch"])) == stage2_epochs
        totals = bins.groupby(["quantity", "epoch", "class"])["count"].sum()
        for quantity in quantities:
            for epoch in stage2_epochs:
                assert totals.loc[quantity, epoch].tolist() == counts.tolist()
        assert bins["count"].sum() == len(quantities) * len(stage2_epochs) * counts.sum()
        assert (bins["lo"] < bins["hi"]).all()
        assert len(summary) == len(quantities) * len(stage2_epochs) * 4
        assert summary.groupby("class")["n"].sum().tolist() == \
            (counts * len(quantities) * len(stage2_epochs)).tolist()
        assert (summary["q05"] <= summary["q50"]).all() and (summary["q50"] <= summary["q95"]).all()
