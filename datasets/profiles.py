"""Long-tailed count profiles, the LDAM-DRW subset selection and the balanced meta set.

The imbalance factor (IF, rho) is always the ratio n_max / n_min >= 1; several reference repos
take its inverse on the command line (``--imb_factor 0.01`` means IF 100).

Counts follow ``get_img_num_per_cls`` of ``kaidic/LDAM-DRW : imbalance_cifar.py`` (Cao et al.,
NeurIPS 2019, arXiv:1906.07413):

* ``exp``: ``n_i = int(n_max * (1/IF) ** (i / (C - 1)))`` for i = 0 ... C-1 (class 0 is the head);
* ``step``: the first ``C // 2`` classes get ``int(n_max)``, the others ``int(n_max * (1/IF))``.

The reference multiplies by its ``imb_factor`` argument (= 1/IF), so ltbench does the same; for
odd C the reference's step list is one class short, ltbench gives the extra class the tail count.

A run's protocol decides n_max and where the balanced meta set of ``meta_per_class`` images per
class comes from (:func:`protocol_counts`, :func:`select_split`):

* ``jamal`` (abdullahjamal/Longtail_DA : C-LT/data_utils.py + C-LT/main.py, derived from
  xjtushujun/Meta-weight-net_class-imbalance; datasets.md §2.5): the meta set is removed first,
  then the subset is drawn from the rest with ``n_max = (N - meta_per_class·C) / C``
  (4990 / 490 for CIFAR-10 / 100);
* any other protocol (``ldam``): the subset is the usual one, and the meta set, if any, comes
  from the images the subset did not select.

A balanced validation split of ``val_per_class`` images per class (optional hyper-parameter,
0 = none) is removed from every class first, before the meta set and the subset, and n_max
shrinks by that much (:func:`split_with_validation`): CIFAR-LT's head class keeps all of its
images, so no other construction leaves a balanced split outside the subset. Nothing is ever
selected on the test set (protocols.md §1.3: the reference codes select on it).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ltbench.errors import BadInput
from ltbench.spec import MAX_SPLIT_SEED, check_profile, derive_seed

#: The protocol whose meta set is removed before the subset is drawn.
META_FIRST_PROTOCOL = "jamal"


def class_counts(n_max: float, num_classes: int, imb_factor: float, profile: str) -> list[int]:
    """Per-class training counts, head first (datasets.md §2.2 and §2.4).

    Raises :class:`BadInput` for an IF below 1 or not finite, an unknown profile, fewer than two
    classes, or an IF so large that a class would get no image at all.
    """
    imb = float(imb_factor)
    if not math.isfinite(imb) or imb < 1:
        raise BadInput(f"imbalance factor must be a finite number >= 1 (n_max / n_min), "
                       f"got {imb_factor}")
    check_profile(profile)
    if num_classes < 2:
        raise BadInput(f"a long-tailed dataset needs at least 2 classes, got {num_classes}")
    ratio = 1.0 / imb
    if profile == "exp":
        counts = [int(n_max * ratio ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    else:
        head = num_classes // 2
        counts = [int(n_max)] * head + [int(n_max * ratio)] * (num_classes - head)
    if min(counts) < 1:
        raise BadInput(f"imbalance factor {imb_factor} leaves class {counts.index(min(counts))} "
                       f"without training images (n_max {n_max}, profile {profile})")
    return counts


def select_subset(labels: np.ndarray, counts: list[int], split_seed: int) -> np.ndarray:
    """The LDAM-DRW long-tailed subset of a training split: ascending int64 positions.

    Replays ``IMBALANCECIFAR10.gen_imbalanced_data`` of ``kaidic/LDAM-DRW : imbalance_cifar.py``
    (datasets.md §2.3) with a local ``RandomState(split_seed)`` instead of the reference's global
    ``np.random.seed(rand_number)``: for each class c = 0 ... C-1 in order, its positions
    ``np.where(labels == c)[0]`` are shuffled in place and the first ``counts[c]`` kept. The legacy
    stream is identical, so ``split_seed = rand_number`` picks exactly the reference's images.
    Because every class has the same size, each shuffle consumes the same randomness whatever
    the counts, so subsets for larger IFs are nested in those for smaller IFs.
    """
    if not 0 <= int(split_seed) <= MAX_SPLIT_SEED:
        raise BadInput(f"split seed must be in 0 ... {MAX_SPLIT_SEED}, got {split_seed}")
    rng = np.random.RandomState(int(split_seed))
    kept = []
    for cls, count in enumerate(counts):
        positions = np.where(labels == cls)[0]
        if count > len(positions):
            raise ValueError(f"class {cls} has {len(positions)} images, {count} requested")
        rng.shuffle(positions)
        kept.append(positions[:count])
    return np.sort(np.concatenate(kept)).astype(np.int64)


def protocol_counts(pool_per_class: int, num_classes: int, imb_factor: float, profile: str,
                    hparams: Mapping[str, Any], dataset: str) -> list[int]:
    """Per-class subset counts under the run's protocol, for a training split of
    ``pool_per_class`` images in every class.

    ``jamal`` takes ``n_max = pool_per_class - meta_per_class``; other protocols take
    ``n_max = pool_per_class`` and, when ``meta_per_class > 0``, need that many unselected images
    in every class (CIFAR's head class has none): otherwise :class:`BadInput` pointing to the
    ``jamal`` protocol, raised before any data is read.
    """
    protocol, meta_per_class = hparams["protocol"], int(hparams["meta_per_class"])
    if meta_per_class < 0:
        raise BadInput(f"{dataset}: meta_per_class must be >= 0, got {meta_per_class}")
    val_per_class = validation_size(hparams, dataset)
    if val_per_class >= pool_per_class:
        raise BadInput(f"{dataset}: val_per_class={val_per_class} leaves no training image "
                       f"of the {pool_per_class} per class")
    pool_per_class -= val_per_class
    meta_first = protocol == META_FIRST_PROTOCOL
    n_max = pool_per_class - meta_per_class if meta_first else pool_per_class
    counts = class_counts(float(n_max), num_classes, imb_factor, profile)
    if not meta_first and meta_per_class > 0:
        for cls, count in enumerate(counts):
            if pool_per_class - count < meta_per_class:
                raise BadInput(
                    f"{dataset}: protocol '{protocol}' draws the meta set from the images its "
                    f"subset leaves out, but class {cls} keeps {count} of its {pool_per_class} "
                    f"images, leaving fewer than meta_per_class={meta_per_class}; use --set "
                    f"protocol={META_FIRST_PROTOCOL} (meta set removed first)")
    return counts


def validation_size(hparams: Mapping[str, Any], dataset: str) -> int:
    """The run's ``val_per_class`` (0 when not set); :class:`BadInput` when negative."""
    val_per_class = int(hparams.get("val_per_class", 0))
    if val_per_class < 0:
        raise BadInput(f"{dataset}: val_per_class must be >= 0, got {val_per_class}")
    return val_per_class


def _take_per_class(labels: np.ndarray, num_classes: int, per_class: int,
                    rng: np.random.RandomState) -> np.ndarray:
    """``per_class`` random positions of each class 0 ... C-1 (positions labelled -1 are not
    candidates), class by class: each class's ascending positions shuffled by ``rng``."""
    taken = []
    for cls in range(num_classes):
        positions = np.where(labels == cls)[0]
        if per_class > len(positions):
            raise ValueError(f"class {cls} has {len(positions)} candidates for the meta set, "
                             f"{per_class} requested")
        rng.shuffle(positions)
        taken.append(positions[:per_class])
    return np.concatenate(taken)


def select_split(labels: np.ndarray, counts: list[int], split_seed: int, protocol: str,
                 meta_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """``(subset, meta)``: ascending int64 positions of the long-tailed subset and of the
    balanced meta set (empty when ``meta_per_class`` is 0), disjoint.

    The subset is always :func:`select_subset` with ``RandomState(split_seed)``. The meta set
    draws from its own local ``RandomState(derive_seed(split_seed, "meta") % 2**32)``: for each
    class in order its candidate positions (ascending) are shuffled and the first
    ``meta_per_class`` taken. Under ``jamal`` the candidates are all of the class's images and
    the subset is then drawn from the remaining pool (the reference's order; its RNGs, NumPy 6
    and Python ``random`` 42, are replaced by these local streams); under other protocols the
    candidates are the images the subset did not select. The ``jamal`` meta set therefore does
    not depend on the imbalance factor, and its subsets stay nested across factors.
    """
    if meta_per_class == 0:
        return select_subset(labels, counts, split_seed), np.empty(0, dtype=np.int64)
    rng = np.random.RandomState(derive_seed(int(split_seed), "meta") % 2 ** 32)
    if protocol == META_FIRST_PROTOCOL:
        meta = _take_per_class(labels, len(counts), meta_per_class, rng)
        pool = labels.copy()
        pool[meta] = -1
        subset = select_subset(pool, counts, split_seed)
    else:
        subset = select_subset(labels, counts, split_seed)
        unselected = labels.copy()
        unselected[subset] = -1
        meta = _take_per_class(unselected, len(counts), meta_per_class, rng)
    return subset, np.sort(meta).astype(np.int64)


def split_with_validation(labels: np.ndarray, counts: list[int], split_seed: int,
                          hparams: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(subset, meta, validation)``: ascending int64 positions, pairwise disjoint.

    The validation split takes ``val_per_class`` random images of every class first, from its
    own local ``RandomState(derive_seed(split_seed, "val") % 2**32)`` (each class's ascending
    positions shuffled, the first ones taken); :func:`select_split` then draws the subset and
    the meta set from the remaining images. With ``val_per_class`` 0 (or unset) this is exactly
    :func:`select_split` and the validation split is empty. ``counts`` must come from
    :func:`protocol_counts`, which shrinks n_max by the validation size.
    """
    val_per_class = int(hparams.get("val_per_class", 0))
    protocol, meta_per_class = hparams["protocol"], int(hparams["meta_per_class"])
    if val_per_class == 0:
        subset, meta = select_split(labels, counts, split_seed, protocol, meta_per_class)
        return subset, meta, np.empty(0, dtype=np.int64)
    rng = np.random.RandomState(derive_seed(int(split_seed), "val") % 2 ** 32)
    validation = _take_per_class(labels, len(counts), val_per_class, rng)
    pool = labels.copy()
    pool[validation] = -1
    subset, meta = select_split(pool, counts, split_seed, protocol, meta_per_class)
    return subset, meta, np.sort(validation).astype(np.int64)
