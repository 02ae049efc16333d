"""The large long-tailed benchmarks whose split is fixed by files: the shared implementation.

ImageNet-LT, Places-LT (:mod:`.imagenet_lt`, :mod:`.places_lt`) and iNaturalist 2017 / 2018
(:mod:`.inat`) are not drawn from a balanced set: their training split *is* long-tailed, given
by a list of images, and their test split is a second list (datasets.md §1, §3). So, unlike
CIFAR-LT:

* the imbalance factor is a property of the split (``natural_imb_factor``, e.g. 256 for
  ImageNet-LT): ``ltbench run`` without ``--imb`` uses it, any other value is
  :class:`~ltbench.errors.BadInput` (a run stored under another factor would be mislabelled),
  and only the ``exp`` profile name is accepted (the profile does not apply);
* the subset is the whole training list (``split_indices``: all positions, no meta set), so
  ``split_seed`` changes nothing;
* the per-class counts come from the training list (many / medium / few and the shifted test
  sets use them as for CIFAR); :meth:`class_counts`, which has no data, returns the counts of
  the canonical list where ltbench ships them (:mod:`.reference_counts`);
* classes are the labels ``0 … C-1`` of the training list, C = 1 + its largest label; every
  class needs a training image and every test label must be below C.

On-disk layout: everything of a dataset lives in ``<data root>/<folder>/`` (e.g.
``data/ImageNet_LT/``): the split files named as in the public releases and the images at the
relative paths the lists give (for ImageNet-LT ``train/<wnid>/…`` and ``val/<wnid>/…``, which can
be symlinks to an ImageNet-2012 tree). Split lists are ``<relative path> <label>`` per line,
split on the last space (datasets.md §3.1). A list whose sha256 differs from the canonical file
(datasets.md §3.2–3.3) is used, with a :class:`SplitFileMismatch` warning.

Images are read from the decoded cache that ``ltbench data prepare <dataset>`` writes
(:mod:`ltbench.engine.image_cache`), in ``<data root>/<folder>/ltbench-cache/`` or under
``$LTBENCH_CACHE/<dataset>/`` when that is set; :class:`~ltbench.api.LTData` then
holds :class:`~ltbench.engine.image_cache.CacheSplit` objects instead of image tensors, which
the training loop serves with the ImageNet augmentation (:mod:`ltbench.engine.sources`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Mapping, TextIO

import numpy as np
import torch

from ltbench.api import Dataset, LTData
from ltbench.engine.image_cache import (CacheSplit, ImageList, missing_images, open_split,
                                        prepare_split)
from ltbench.errors import BadInput
from ltbench.integers import parse_int


#: The splits a run uses: the training list and the list evaluated as the test set.
SPLITS = ("train", "test")


class SplitFileMismatch(UserWarning):
    """A split file differs from the canonical release (other sha256 or line count)."""


@dataclass(frozen=True)
class KnownFile:
    """A canonical split file: its name in the dataset folder, line count and sha256."""

    filename: str
    lines: int
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def outside_folder(relative: str) -> bool:
    """Whether an image path of a split file could name a file outside the dataset folder:
    absolute, or climbing with ``..``. Decided on the text, not by resolving symlinks: the
    image folders of a dataset may legitimately be symlinks into another tree (ImageNet-LT's
    ``train/`` into an ImageNet-2012 copy)."""
    return PurePosixPath(relative).is_absolute() or ".." in PurePosixPath(relative).parts


def parse_split_list(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """``(paths, labels)`` of a ``<relative path> <label>`` list (split on the last space,
    blank lines skipped); :class:`BadInput` naming the first malformed line, or the first path
    that leaves the dataset folder (:func:`outside_folder`)."""
    paths, labels = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            relative, _, label = line.rpartition(" ")
            try:
                value = parse_int(label, "label", least=0)
            except BadInput:
                value = None
            if not relative or value is None:
                raise BadInput(f"{path}, line {number}: expected '<relative path> <label>' "
                               f"with a label >= 0, got {line[:120]!r}")
            if outside_folder(relative):
                raise BadInput(f"{path}, line {number}: image path {relative[:120]!r} leaves "
                               f"the dataset folder (absolute or with '..')")
            paths.append(relative)
            labels.append(value)
    return tuple(paths), np.asarray(labels, dtype=np.int64)


@functools.cache
def _read_list(path: Path, size: int, mtime_ns: int, known: KnownFile | None
               ) -> tuple[tuple[str, ...], np.ndarray]:
    """A split list read and checked once per process and file version."""
    paths, labels = parse_split_list(path)
    if known is not None:
        digest = _sha256(path)
        if digest != known.sha256:
            warnings.warn(f"{path} is not the canonical {known.filename} ({len(paths)} lines, "
                          f"sha256 {digest[:12]}…; the public release has {known.lines} lines, "
                          f"sha256 {known.sha256[:12]}…): results may not be comparable",
                          SplitFileMismatch, stacklevel=2)
    return paths, labels


def read_split_list(path: Path, known: KnownFile | None = None
                    ) -> tuple[tuple[str, ...], np.ndarray]:
    """:func:`parse_split_list`, warning (:class:`SplitFileMismatch`) when ``known`` is given
    and the file is not that canonical file."""
    stat = Path(path).stat()
    return _read_list(Path(path).resolve(), stat.st_size, stat.st_mtime_ns, known)


class FixedSplitDataset(Dataset):
    """Base class of the datasets whose long-tailed split is given by files (module
    docstring). Subclasses set the class attributes and, for other formats than split lists,
    override :meth:`split_sources` and :meth:`read_source`."""

    name: ClassVar[str]
    folder: ClassVar[str]
    natural_imb_factor: ClassVar[float]
    #: Split → its canonical list in ``folder`` (the file ``read_source`` is given).
    lists: ClassVar[Mapping[str, KnownFile]]
    #: The canonical training list's per-class counts, or None when ltbench has none.
    reference_counts: ClassVar[tuple[int, ...] | None] = None
    data_keys = ("resize_size",)

    # -- the split files ------------------------------------------------------------------

    def layout(self, root: Path) -> str:
        """The expected layout, for error messages."""
        files = ", ".join(known.filename for known in self.lists.values())
        return (f"expected {Path(root) / self.folder}/ holding {files} and the images at the "
                f"relative paths they list")

    def split_sources(self, root: Path) -> dict[str, Path]:
        """Split → the file it is read from; :class:`BadInput` naming the layout when one is
        missing."""
        folder = Path(root).expanduser() / self.folder
        sources = {split: folder / known.filename for split, known in self.lists.items()}
        missing = [str(path) for path in sources.values() if not path.is_file()]
        if missing:
            raise BadInput(f"{self.name}: missing {', '.join(missing)} ({self.layout(root)})")
        return sources

    def read_source(self, split: str, path: Path) -> tuple[tuple[str, ...], np.ndarray]:
        """``(relative paths, labels)`` of ``split`` from its file ``path``."""
        return read_split_list(path, self.lists[split])

    def images(self, root: Path) -> dict[str, ImageList]:
        """The training and test images (labels validated, see the module docstring)."""
        folder = Path(root).expanduser().resolve() / self.folder
        read = {split: self.read_source(split, path)
                for split, path in self.split_sources(root).items()}
        train_labels, test_labels = read["train"][1], read["test"][1]
        if len(train_labels) == 0 or len(test_labels) == 0:
            raise BadInput(f"{self.name}: an empty training or test list ({self.layout(root)})")
        classes = int(train_labels.max()) + 1
        counts = np.bincount(train_labels, minlength=classes)
        if (counts == 0).any():
            raise BadInput(f"{self.name}: the training list has no image of class "
                           f"{int(np.flatnonzero(counts == 0)[0])} (labels must be 0 … C-1)")
        if int(test_labels.max()) >= classes:
            raise BadInput(f"{self.name}: test label {int(test_labels.max())} is not a class of "
                           f"the training list (0 … {classes - 1})")
        return {split: ImageList(folder, *read[split]) for split in SPLITS}

    # -- the cache ------------------------------------------------------------------------

    def cache_folder(self, root: Path, split: str, short_side: int,
                     cache: Path | None = None) -> Path:
        """Where the cache of ``split`` is: ``<cache>/<dataset>/<split>-s<short side>``,
        ``cache`` defaulting to ``$LTBENCH_CACHE``, else ``<root>/<folder>/ltbench-cache/``."""
        cache = cache or os.environ.get("LTBENCH_CACHE")
        parent = (Path(cache).expanduser() / self.name if cache
                  else Path(root).expanduser().resolve() / self.folder / "ltbench-cache")
        return parent / f"{split}-s{short_side}"

    def prepare(self, root: Path, hparams: Mapping[str, Any], *, jobs: int,
                cache: Path | None = None, stream: TextIO | None = None) -> None:
        """``ltbench data prepare``: cache both splits (see :func:`prepare_split`); a missing
        image is :class:`BadInput` before anything is written."""
        images = self.images(root)
        for split in SPLITS:
            missing = missing_images(images[split])
            if missing:
                raise BadInput(f"{self.name}: {len(missing)} images of the {split} list are "
                               f"missing, e.g. {', '.join(missing[:3])} ({self.layout(root)})")
        short_side = int(hparams["resize_size"])
        for split in SPLITS:
            prepare_split(images[split], self.cache_folder(root, split, short_side, cache),
                          short_side=short_side, jobs=jobs, label=f"{self.name} {split}",
                          stream=stream)

    def open_caches(self, root: Path, hparams: Mapping[str, Any]
                    ) -> tuple[dict[str, ImageList], dict[str, CacheSplit]]:
        short_side = int(hparams["resize_size"])
        images = self.images(root)
        hint = (f"'ltbench data prepare {self.name} --data-root {root}"
                f"{'' if short_side == 256 else f' --set resize_size={short_side}'}'")
        caches = {split: open_split(images[split], self.cache_folder(root, split, short_side),
                                    short_side, hint) for split in SPLITS}
        return images, caches

    # -- the Dataset contract -------------------------------------------------------------

    def check_subset(self, imb_factor: float, profile: str, hparams: Mapping[str, Any]) -> None:
        """Only the split's own imbalance factor and the ``exp`` profile name denote it."""
        if not np.isclose(float(imb_factor), self.natural_imb_factor):
            raise BadInput(f"{self.name}: the imbalance factor is fixed by its split lists "
                           f"({self.natural_imb_factor:g}); omit --imb or pass "
                           f"--imb {self.natural_imb_factor:g}, not {imb_factor:g}")
        if profile != "exp":
            raise BadInput(f"{self.name}: the count profile is fixed by its split lists; omit "
                           f"--profile (got '{profile}')")

    def class_counts(self, imb_factor: float, profile: str,
                     hparams: Mapping[str, Any]) -> list[int]:
        """The canonical training list's counts (see the module docstring)."""
        self.check_subset(imb_factor, profile, hparams)
        if self.reference_counts is None:
            raise BadInput(f"{self.name}: its per-class counts are read from the training list "
                           f"at training time; ltbench ships no copy of them")
        return list(self.reference_counts)

    def check(self, root: Path, hparams: Mapping[str, Any],
              subset: tuple[float, str, int] | None = None) -> None:
        """The pretrained weights must be usable (first: they need no data), the lists, their
        labels and a complete cache of both splits present (the split is the subset: there is
        no other to check)."""
        if hparams["pretrained"] != "none":
            from ltbench.engine.imagenet_models import pretrained_state

            pretrained_state(hparams["backbone"], hparams["pretrained"])
        self.open_caches(root, hparams)
        if int(hparams["crop_size"]) > int(hparams["resize_size"]):
            raise BadInput(f"{self.name}: crop_size {hparams['crop_size']} exceeds "
                           f"resize_size {hparams['resize_size']}")

    def split_indices(self, root: Path, imb_factor: float, profile: str, split_seed: int,
                      hparams: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Every position of the training list, and no meta set."""
        self.check_subset(imb_factor, profile, hparams)
        count = len(self.images(root)["train"])
        return np.arange(count, dtype=np.int64), np.zeros(0, dtype=np.int64)

    def load(self, root: Path, imb_factor: float, profile: str, split_seed: int,
             hparams: Mapping[str, Any]) -> LTData:
        self.check_subset(imb_factor, profile, hparams)
        images, caches = self.open_caches(root, hparams)
        train_labels = images["train"].labels
        classes = int(train_labels.max()) + 1
        return LTData(
            train_images=caches["train"],
            train_labels=torch.from_numpy(train_labels),
            test_images=caches["test"],
            test_labels=torch.from_numpy(images["test"].labels),
            class_counts=np.bincount(train_labels, minlength=classes).tolist(),
            train_indices=np.arange(len(train_labels), dtype=np.int64),
        )


def imagenet_protocol(**values: Any) -> dict[str, Any]:
    """A protocol of the ImageNet-style pipeline: the training-loop keys every such protocol
    shares (SGD momentum 0.9 without Nesterov, no warm-up, cosine to 0, ``RandomResizedCrop``
    at ``crop_size`` from images resized to ``resize_size``, evaluated every ``eval_every``
    epochs, no meta set), then ``values``."""
    return {
        "momentum": 0.9,
        "nesterov": False,
        "warmup_epochs": 0,
        "lr_schedule": "cosine",
        "lr_milestones": (),
        "lr_decay": 0.1,
        "crop_size": 224,
        "resize_size": 256,
        "pretrained": "none",
        "eval_every": 5,
        "meta_per_class": 0,
        **values,
    }
