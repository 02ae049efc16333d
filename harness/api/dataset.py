"""The dataset plugin contract.

A dataset is a class registered in the ``ltbench.datasets`` entry-point group. The harness
instantiates it without arguments and asks it for four things:

* :meth:`Dataset.class_counts` — the long-tailed per-class training counts of a subset (no
  data needed: ``ltbench data describe`` uses it); it raises :class:`~ltbench.errors.BadInput`
  for a subset or meta set that cannot be drawn, so the grid fails before training;
* :meth:`Dataset.check` — raise :class:`~ltbench.errors.BadInput` naming where it looked and how
  to provide the data, before any run starts;
* :meth:`Dataset.split_indices` — the positions of the subset and of the meta set in the full
  training split (``ltbench data indices``); :meth:`Dataset.split_positions` adds the
  validation split's (``--val``);
* :meth:`Dataset.load` — the subset, the meta set and the test set as uint8 image tensors
  (:class:`LTData`).

``protocols`` maps protocol names (``"ldam"``, ``"jamal"``) to the dataset's reference training
protocols merged with its own options (flat dicts, see :mod:`ltbench.hparams`), and
``default_protocol`` names the one a run gets unless its method or ``--set protocol=X`` picks
another; the methods receive the run's resolved hyper-parameters, which include ``"protocol"``.
Randomness comes only from ``split_seed`` through local generators, never global state.
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
    ascending (dataset) order; ``train_images``/``train_labels`` follow the same order. The
    balanced meta set (``meta_per_class`` images of every class, disjoint from the subset) is
    held the same way in the ``meta_*`` fields, which are None when the run has none, and so is
    the balanced validation split (``val_per_class`` images of every class, disjoint from both,
    :func:`~ltbench.datasets.profiles.split_with_validation`) in the ``val_*`` fields.
    """

    # uint8 [N, 3, H, W], or for the split-list datasets a CacheSplit of the decoded-image
    # cache (ltbench.engine.image_cache), which ltbench.engine.sources serves.
    train_images: torch.Tensor
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor   # uint8 [M, 3, H, W], or a CacheSplit as train_images
    test_labels: torch.Tensor   # int64 [M]
    class_counts: list[int]
    train_indices: np.ndarray   # int64 [N]
    meta_images: torch.Tensor | None = None   # uint8 [K, 3, H, W]
    meta_labels: torch.Tensor | None = None   # int64 [K]
    meta_indices: np.ndarray | None = None    # int64 [K]
    val_images: torch.Tensor | None = None    # uint8 [V, 3, H, W]
    val_labels: torch.Tensor | None = None    # int64 [V]
    val_indices: np.ndarray | None = None     # int64 [V]

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)


class Dataset:
    """Base class of every dataset plugin."""

    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    protocols: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    default_protocol: ClassVar[str] = "ldam"
    #: The hyper-parameters that change what :meth:`load` returns (protocol, meta set size,
    #: generator options); runs that agree on them and on (imb, profile, split_seed) share one
    #: loaded copy, and ``ltbench data`` accepts exactly these in ``--set``.
    data_keys: ClassVar[tuple[str, ...]] = ()
    #: The imbalance factor a run gets without ``--imb``: None for datasets built for any
    #: factor (the CLI's default then applies), the split's own for fixed long-tailed splits.
    natural_imb_factor: ClassVar[float | None] = None

    def class_counts(self, imb_factor: float, profile: str,
                     hparams: Mapping[str, Any]) -> list[int]:
        raise NotImplementedError

    def check_subset(self, imb_factor: float, profile: str,
                     hparams: Mapping[str, Any]) -> None:
        """Raise :class:`~ltbench.errors.BadInput` if the subset cannot be drawn; the grid calls
        it before anything runs. By default :meth:`class_counts` decides."""
        self.class_counts(imb_factor, profile, hparams)

    def check(self, root: Path, hparams: Mapping[str, Any],
              subset: tuple[float, str, int] | None = None) -> None:
        """Raise :class:`~ltbench.errors.BadInput` if the data under ``root`` is unusable for
        runs with these hyper-parameters; ``subset`` (imbalance factor, profile, split seed),
        when given, is the subset they train on, for data that serves only some subsets (a
        CIFAR-LT data pack). ``ltbench run`` checks every distinct configuration it will train
        before anything is written."""

    def split_indices(self, root: Path, imb_factor: float, profile: str, split_seed: int,
                      hparams: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Ascending int64 positions (subset, meta set) in the full training split; the meta
        set is empty when the run has none."""
        raise NotImplementedError

    def split_positions(self, root: Path, imb_factor: float, profile: str, split_seed: int,
                        hparams: Mapping[str, Any]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ascending int64 positions (subset, meta set, validation split) in the full training
        split (:func:`~ltbench.datasets.profiles.split_with_validation`); the validation split
        is empty unless ``hparams["val_per_class"]`` is set."""
        raise NotImplementedError

    def load(self, root: Path, imb_factor: float, profile: str, split_seed: int,
             hparams: Mapping[str, Any]) -> LTData:
        raise NotImplementedError
