"""Training samplers: the order of the examples of one epoch, chosen by the ``sampler`` hparam.

Decoupling (Kang et al., ICLR 2020, arXiv:1910.09217, Sec. 3; protocols.md §3.10) samples class
j with probability ``p_j = n_j**q / sum_i n_i**q``:

* ``instance-balanced`` (q = 1): the engine's plain shuffle, a fresh permutation of the
  training set every epoch (every image exactly once, as ``sampler: null`` in
  facebookresearch/classifier-balancing);
* ``class-balanced`` (q = 0), ``square-root`` (q = 1/2);
* ``progressively-balanced``: ``p_j(t) = (1 - λ_t) p_j^{IB} + λ_t p_j^{CB}`` with
  ``λ_t = linspace(0, 1, epochs)[t]`` (classifier-balancing : data/ClassPrioritySampler.py).

ltbench's draws for the non-instance samplers: an epoch has as many examples as the training
set (so epochs keep their length and cost), each example's class drawn independently from
``p`` and then one of that class's images uniformly, with replacement. The reference
``ClassAwareSampler`` instead cycles through reshuffled class and image lists, 4 images per
class pick, for ``max_j n_j · C`` examples per epoch; that structure is not reproduced. All
draws come from the caller's generator.
"""

from __future__ import annotations

import torch

from ..hparams import SAMPLERS

_EXPONENTS = {"class-balanced": 0.0, "square-root": 0.5}


def class_probabilities(sampler: str, class_counts: torch.Tensor, epoch: int,
                        epochs: int) -> torch.Tensor:
    """``p_j`` (float64 [C], sums to 1) of ``sampler`` in 0-based ``epoch`` of ``epochs``."""
    counts = class_counts.to(torch.float64)
    if sampler == "instance-balanced":
        return counts / counts.sum()
    if sampler in _EXPONENTS:
        weights = counts.pow(_EXPONENTS[sampler])
        return weights / weights.sum()
    if sampler == "progressively-balanced":
        progress = epoch / (epochs - 1) if epochs > 1 else 0.0  # linspace(0, 1, epochs)[epoch]
        return ((1.0 - progress) * class_probabilities("instance-balanced", counts, 0, 1)
                + progress * class_probabilities("class-balanced", counts, 0, 1))
    raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")


class EpochSampler:
    """The example order of each epoch for ``labels`` (int64 [N] on the training device)."""

    def __init__(self, sampler: str, labels: torch.Tensor, num_classes: int, epochs: int):
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
        self.sampler = sampler
        self.labels = labels
        self.epochs = epochs
        self.class_counts = torch.bincount(labels, minlength=num_classes)
        # Positions of each class's images, grouped: class j's are by_class[starts[j]:+n_j].
        self.by_class = torch.argsort(labels, stable=True)
        self.starts = torch.cumsum(self.class_counts, 0) - self.class_counts

    def order(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """int64 [N] positions of ``epoch``'s examples, drawn from ``generator``."""
        n = self.labels.shape[0]
        device = generator.device
        if self.sampler == "instance-balanced":
            return torch.randperm(n, generator=generator, device=device)
        probabilities = class_probabilities(self.sampler, self.class_counts.cpu(), epoch,
                                            self.epochs).to(device=device, dtype=torch.float32)
        classes = torch.multinomial(probabilities, n, replacement=True, generator=generator)
        within = torch.rand(n, generator=generator, device=device)
        counts = self.class_counts[classes]
        offset = torch.minimum((within * counts).long(), counts - 1)
        return self.by_class[self.starts[classes] + offset]
