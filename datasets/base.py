"""The dataset plugin contract.

A dataset is a class registered in the ``ltbench.datasets`` entry-point group. The harness
instantiates it without arguments and asks it for three things:

* :meth:`Dataset.class_counts` — the long-tailed per-class training counts of a subset (no
  data needed: ``ltbench data describe`` uses it);
* :meth:`Dataset.check` — raise :class:`~ltbench.errors.BadInput` naming where it looked and how
  to provide the data, before any run starts;
* :meth:`Dataset.load` — the subset and the test set as uint8 image tensors (:class:`LTData`).

``defaults`` holds the dataset's reference training protocol and its own options (a flat dict,
see :mod:`ltbench.hparams`); ``load`` receives the run's resolved hyper-parameters.
Randomness comes only from ``split_seed`` through a local generator, never global state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch


@dataclass
class LTData:
    """A long-tailed training subset and its balanced test set, held in memory as uint8.

    ``train_indices`` are the subset's positions in the dataset's full training split, in
    ascending (dataset) order; ``train_images``/``train_labels`` follow the same order.
    """

    train_images: torch.Tensor  # uint8 [N, 3, H, W]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor   # uint8 [M, 3, H, W]
    test_labels: torch.Tensor   # int64 [M]
    class_counts: list[int]
    train_indices: np.ndarray   # int64 [N]

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)


class Dataset:
    """Base class of every dataset plugin."""

    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: The keys of ``defaults`` that change what :meth:`load` returns (generator options);
    #: runs that agree on them and on (imb, profile, split_seed) share one loaded copy.
    data_keys: ClassVar[tuple[str, ...]] = ()

    def class_counts(self, imb_factor: float, profile: str,
                     hparams: Mapping[str, Any]) -> list[int]:
        raise NotImplementedError

    def check(self, root: Path, hparams: Mapping[str, Any]) -> None:
        """Raise :class:`~ltbench.errors.BadInput` if the data under ``root`` is unusable."""

    def load(self, root: Path, imb_factor: float, profile: str, split_seed: int,
             hparams: Mapping[str, Any]) -> LTData:
        raise NotImplementedError
