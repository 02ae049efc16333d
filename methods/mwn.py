"""Meta-Weight-Net (MW-Net; Shu, Xie, Yi, Zhao, Zhou, Xu, Meng, NeurIPS 2019, arXiv:1902.07379).

A weighting network ``V`` (MLP 1 → 100 → ReLU → 1 → sigmoid) maps each example's loss to its
weight. Every step, from epoch 0, as xjtushujun/Meta-weight-net_class-imbalance :
meta-weight-net-class-imbalance.py ``train`` (protocols.md §3.6):

1. per-example cross-entropy ``ℓ_i(θ)`` from one forward; ``v_i = V(ℓ_i)`` (not detached, so
   the look-ahead gradient also flows through ``V``'s input, as the reference);
   ``v̂ = v / Σ v`` (left unnormalised if the sum is 0);
2. look-ahead ``θ' = θ − α_meta ∇_θ Σ_i v̂_i ℓ_i`` (plain SGD, second order kept) with
   ``α_meta = 0.1 · 0.1^[epoch ≥ 80] · 0.1^[epoch ≥ 90]`` on the 0-based epoch;
3. meta loss = mean cross-entropy of ``f_θ'`` on one meta batch; one step of ``V``'s optimiser:
   SGD lr ``vnet_lr`` 1e-5 with the main momentum (0.9), Nesterov and weight decay (5e-4);
4. ``w = V(ℓ) / Σ V(ℓ)`` with the updated ``V``, without gradient; the real update is
   ``Σ_i w_i ℓ_i(θ)``, reusing the forward of step 1 (the reference runs a second forward of the
   same model on the same batch, which gives the same ``ℓ``; :mod:`ltbench.methods.lookahead`).

``V`` is built on the first step with PyTorch's default ``nn.Linear`` initialisation (the
reference's ``MetaLinear`` copies a fresh ``nn.Linear``): weights and biases uniform
±1/sqrt(fan_in), drawn from a generator seeded with ``derive_seed(seed, "vnet")``.

Defaults (the reference's argparse defaults and ``adjust_learning_rate``): the ``jamal``
protocol's data, batch 100, lr 0.1, Nesterov, weight decay 5e-4 and 10 meta images per class,
with 100 epochs and the main lr ×0.1 at 0-based epochs 79 and 89 (the reference calls
``adjust_learning_rate(optimizer_a, epoch + 1)`` and decays at e >= 80 / 90; the meta step size
uses the 0-based epoch, hence 80 / 90 there); ``meta_batch_size`` 100. The reference seeds
neither NumPy nor ``random``, so its subset and meta set change per run; ltbench's come from
``split_seed`` (datasets.md §2.5).

Recorded per epoch and class (:mod:`ltbench.methods.weight_histograms`): ``weight`` = ``B·w_i``
(the factor of ``ℓ_i`` in a batch-mean form, 1 = plain CE); MW-Net has no ε.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..api import Method, StepContext, step_decay
from ..hparams import EpochOf
from ..spec import derive_seed
from .lookahead import meta_gradient
from .weight_histograms import RecordsWeights, WeightHistograms

HIDDEN = 100


class WeightingNetwork(nn.Module):
    """``V(ℓ) = sigmoid(W2 relu(W1 ℓ + b1) + b2)`` for losses ``ℓ`` [B, 1] → weights [B, 1]."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(1, HIDDEN)
        self.output = nn.Linear(HIDDEN, 1)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.output(F.relu(self.hidden(losses))))


def build_weighting_network(generator: torch.Generator, device: torch.device
                            ) -> WeightingNetwork:
    """A :class:`WeightingNetwork` with nn.Linear's default distributions, drawn only from
    ``generator`` (built on the meta device first, so nn.Linear's own initialiser never touches
    the global RNG)."""
    with torch.device("meta"):
        network = WeightingNetwork()
    network = network.to_empty(device="cpu")
    with torch.no_grad():
        for layer in (network.hidden, network.output):
            bound = 1.0 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
    return network.to(device)


def normalised(weights: torch.Tensor) -> torch.Tensor:
    """``weights / Σ weights``, or ``weights`` unchanged if the sum is 0 (no host sync)."""
    total = weights.sum()
    return weights / torch.where(total != 0, total, torch.ones_like(total))


class MetaWeightNet(RecordsWeights, Method):
    family = "meta-learning"
    summary = "Meta-Weight-Net: a 1-100-1 MLP maps each loss to its weight, meta-learned online"
    paper = ("Shu, Xie, Yi, Zhao, Zhou, Xu, Meng, NeurIPS 2019, arXiv:1902.07379; code "
             "xjtushujun/Meta-weight-net_class-imbalance : meta-weight-net-class-imbalance.py")
    protocol = "jamal"
    uses_meta_set = True
    defaults = {
        "epochs": 100,
        "lr_milestones": (EpochOf(79), EpochOf(89)),
        "lr_decay": 0.1,
        "meta_lr": 0.1,
        "meta_lr_decay": 0.1,
        "meta_lr_milestones": (EpochOf(80), EpochOf(90)),
        "vnet_lr": 1e-5,
        "meta_batch_size": 100,
    }

    def __init__(self, class_counts: torch.Tensor, hparams: Mapping[str, Any]):
        super().__init__(class_counts, hparams)
        self.device = class_counts.device
        self.weighting: WeightingNetwork | None = None
        self.weighting_optimizer: torch.optim.SGD | None = None
        self.histograms = WeightHistograms(class_counts.numel())

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        """Mean cross-entropy: the meta loss (and the loss every weight being equal)."""
        return F.cross_entropy(logits, targets)

    def _build_weighting(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(derive_seed(seed, "vnet"))
        self.weighting = build_weighting_network(generator, self.device)
        hp = self.hparams
        self.weighting_optimizer = torch.optim.SGD(
            self.weighting.parameters(), lr=float(hp["vnet_lr"]), momentum=float(hp["momentum"]),
            nesterov=bool(hp["nesterov"]), weight_decay=float(hp["weight_decay"]))

    def training_loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      epoch: int, step: StepContext
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.weighting is None:
            self._build_weighting(step.seed)
        weighting, hp = self.weighting, self.hparams
        logits = model(inputs)  # fp32: the meta gradient differentiates through it
        example_losses = F.cross_entropy(logits.float(), targets, reduction="none")
        meta_inputs, meta_targets = step.meta_batch()
        step_size = step_decay(hp["meta_lr"], hp["meta_lr_decay"], hp["meta_lr_milestones"], epoch)
        parameters = tuple(weighting.parameters())
        grads = meta_gradient(
            model, example_losses, normalised(weighting(example_losses[:, None])[:, 0]),
            step_size, meta_inputs,
            lambda meta_logits: self.loss(meta_logits.float(), meta_targets, epoch), parameters)
        for parameter, grad in zip(parameters, grads):
            parameter.grad = grad
        self.weighting_optimizer.step()
        with torch.no_grad():
            weights = normalised(weighting(example_losses.detach()[:, None])[:, 0])
        self.histograms.record(epoch, targets, weight=weights * targets.shape[0])
        return (weights * example_losses).sum(), logits, targets

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.weighting is not None:
            state["weighting"] = self.weighting.state_dict()
            state["weighting_optimizer"] = self.weighting_optimizer.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "weighting" in state:
            # The seed only fills the network before its saved weights overwrite them.
            self._build_weighting(seed=0)
            self.weighting.load_state_dict(state["weighting"])
            self.weighting_optimizer.load_state_dict(state["weighting_optimizer"])
        else:  # the state of a method before its first step (built there)
            self.weighting = self.weighting_optimizer = None
