"""The functional one-step look-ahead shared by the meta-re-weighting methods.

L2RW (Ren et al., ICML 2018, arXiv:1803.09050, Algorithm 1), Meta-Weight-Net (Shu et al.,
NeurIPS 2019, arXiv:1902.07379) and Jamal et al. (CVPR 2020, arXiv:2003.10780) all
differentiate a meta loss on a balanced meta batch through one SGD step of the model taken
under per-example weights ``w``::

    θ' = θ − α ∇_θ Σ_i w_i ℓ_i(θ)        (create_graph: θ' stays a function of w)
    g  = ∂ L_meta(f_θ'(x_meta)) / ∂ (whatever w depends on)

Their reference code copies the model every step into a "Meta" network and updates the copy
(xjtushujun/Meta-weight-net_class-imbalance : meta-weight-net-class-imbalance.py;
abdullahjamal/Longtail_DA : C-LT/main.py ``train_meta``). Here nothing is copied
(architecture.md §6.4): the look-ahead parameters are ordinary tensors fed to the model through
``torch.func.functional_call``, together with **clones** of its BN buffers, so the meta forward
uses the meta batch's statistics (train mode, as the references' copy) and updates only the
clones, which are dropped, as the references drop their copy's running stats. The model's
running statistics are updated exactly once per step, by the forward at θ that produced
``ℓ(θ)``; that forward's graph is kept, so the method's real update back-propagates through it
instead of running a second forward. No ``.item()`` or other host synchronisation.

Precision: everything the meta gradient is differentiated through runs in fp32, as in the
references: the look-ahead forward here and the caller's forward at θ that gives ``ℓ(θ)``
(its graph is what ``create_graph`` differentiates twice). Under bf16 autocast, L2RW's weights
would be the sign of a product of two bf16-rounded gradients and Jamal's ε (the paper's headline
histogram) a bf16 difference of nearly equal numbers, so the meta-learning steps never use
autocast (:attr:`ltbench.api.StepContext.precision` is for their plain stage only).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.func import functional_call


def meta_gradient(model: nn.Module, example_losses: torch.Tensor, example_weights: torch.Tensor,
                  step_size: float, meta_inputs: torch.Tensor,
                  meta_loss: Callable[[torch.Tensor], torch.Tensor],
                  wrt: Sequence[torch.Tensor]
                  ) -> tuple[torch.Tensor, ...]:
    """``∂ L_meta(θ') / ∂ wrt`` with ``θ' = θ − step_size · ∇_θ Σ_i w_i ℓ_i(θ)``.

    * ``example_losses``: ``ℓ(θ)`` [B], computed by a forward of ``model`` whose graph is
      attached to its parameters (it is kept for the caller's real update);
    * ``example_weights``: ``w`` [B], a differentiable function of ``wrt`` (ε for L2RW and
      Jamal; the weighting network's parameters for MW-Net, where ``w`` also depends on ``ℓ``);
      the look-ahead loss is the **sum** ``Σ_i w_i ℓ_i``, as in all three references;
    * ``step_size``: α, a plain SGD step (no momentum, no weight decay), as the references'
      ``update_params``;
    * ``meta_loss``: maps the logits of ``f_θ'(meta_inputs)``, as the model returns them, to
      the scalar ``L_meta``.

    The look-ahead forward runs in fp32 (no autocast); ``example_losses`` must come from an
    fp32 forward too (see the module docstring).
    """
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad((example_weights * example_losses).sum(), params,
                                create_graph=True)
    looked_ahead = {name: param - step_size * grad
                    for name, param, grad in zip(names, params, grads)}
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    meta_logits = functional_call(model, {**looked_ahead, **buffers}, (meta_inputs,))
    # retain_graph: the forward graph at θ is shared with the caller's real update.
    return torch.autograd.grad(meta_loss(meta_logits), tuple(wrt), retain_graph=True)
