"""CIFAR-10-LT and CIFAR-100-LT, the LDAM and Jamal / MW-Net constructions (datasets.md §2).

The data are the official python-format folders (Krizhevsky, 2009) ``<root>/cifar-10-batches-py``
and ``<root>/cifar-100-python``, read and md5-checked by torchvision's ``CIFAR10``/``CIFAR100``
(``pytorch/vision : torchvision/datasets/cifar.py``); CIFAR-100 uses its fine labels. The
long-tailed training subset is the one of ``kaidic/LDAM-DRW : imbalance_cifar.py`` (Cao et al.,
NeurIPS 2019, arXiv:1906.07413): n_max = 50,000 / C (5000 or 500), exp or step counts, per-class
shuffle by a ``RandomState(split_seed)`` (:mod:`ltbench.datasets.profiles`). The ``jamal``
protocol (Jamal et al., CVPR 2020, arXiv:2003.10780; protocols.md §2.1) first removes a balanced
meta set of ``meta_per_class`` (10) images per class, then draws the subset from the rest with
n_max 4990 / 490 (datasets.md §2.4-2.5). The test set is the full balanced official test split.

A data root without the official folder but with data packs (``<root>/*.ltpack``, written by
``ltbench data pack``: :mod:`ltbench.datasets.cifar_pack`) is read from the pack that holds the
run's configuration, with the same tensors; no download is attempted there.

torchvision is imported only when data is touched, so listing or describing datasets stays fast.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from ltbench.api import Dataset, LTData
from ltbench.errors import BadInput
from ltbench.hparams import resolve_run

from . import cifar_pack
from .cifar_protocols import JAMAL_CIFAR, LDAM_CIFAR
from .profiles import protocol_counts, split_with_validation

#: Both CIFARs have 50,000 training images, balanced; LDAM-DRW's ``img_max = len(data) / cls_num``.
_TRAIN_SIZE = 50_000


def _torchvision_class(name: str) -> type:
    import torchvision.datasets

    return getattr(torchvision.datasets, name)


def _official_md5s(torchvision_name: str) -> dict[str, str]:
    """File name → md5 of every file of the official folder, as torchvision checks them."""
    tv_class = _torchvision_class(torchvision_name)
    return dict(tv_class.train_list + tv_class.test_list
                + [[tv_class.meta["filename"], tv_class.meta["md5"]]])


@functools.cache
def _failed_files(torchvision_name: str, folder: str) -> tuple[str, ...]:
    """The files of ``folder`` that are missing or fail torchvision's md5 (empty when intact)."""
    from torchvision.datasets.utils import check_integrity

    failed = []
    for filename, md5 in _official_md5s(torchvision_name).items():
        path = Path(folder) / filename
        if not path.is_file():
            failed.append(f"{filename} missing")
        elif not check_integrity(str(path), md5):
            failed.append(filename)
    return tuple(failed)


@functools.cache
def _read_split(torchvision_name: str, root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole official split as uint8 [N, 3, 32, 32] images and int64 labels, decoded once per
    process; callers must copy before modifying."""
    split = _torchvision_class(torchvision_name)(root, train=train, download=False)
    images = np.ascontiguousarray(split.data.transpose(0, 3, 1, 2))  # torchvision keeps HWC
    return torch.from_numpy(images), torch.tensor(split.targets, dtype=torch.int64)


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _CifarLT(Dataset):
    """The shared implementation; subclasses name the CIFAR variant."""

    name: ClassVar[str]
    title: ClassVar[str]
    torchvision_name: ClassVar[str]
    num_classes: ClassVar[int]
    paper = ("Cao et al., Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss, "
             "NeurIPS 2019, arXiv:1906.07413 (long-tailed construction); Krizhevsky, Learning "
             "Multiple Layers of Features from Tiny Images, 2009 (CIFAR)")
    protocols = {"ldam": LDAM_CIFAR, "jamal": JAMAL_CIFAR}
    data_keys = ("protocol", "meta_per_class", "val_per_class")

    def class_counts(self, imb_factor: float, profile: str,
                     hparams: Mapping[str, Any]) -> list[int]:
        return protocol_counts(_TRAIN_SIZE // self.num_classes, self.num_classes, imb_factor,
                               profile, hparams, self.name)

    def check(self, root: Path, hparams: Mapping[str, Any],
              subset: tuple[float, str, int] | None = None) -> None:
        """Accept an intact official folder under ``root``; where there is none but ``root``
        holds data packs, one of them holding this dataset with the run's data options (and
        ``subset``, when given; else it is checked when it is read); otherwise download the
        official folder.

        The download goes to a fresh temporary directory and is moved into ``root`` only once
        torchvision has verified it, so a failed attempt writes nothing there. A folder that is
        present but fails the md5 check is reported, never replaced: it may be the user's.
        """
        packs = self._packs(root)
        if packs:
            cifar_pack.find_pack(packs, self.name,
                                 cifar_pack.data_options(hparams, self.data_keys), subset)
        else:
            self._check_official(root)

    def _folder(self, root: Path) -> Path:
        return (Path(root).expanduser().resolve()
                / _torchvision_class(self.torchvision_name).base_folder)

    def _packs(self, root: Path) -> list[cifar_pack.Pack]:
        """The data packs under ``root`` when it has no official folder (else none)."""
        if self._folder(root).exists():
            return []
        return cifar_pack.packs_under(Path(root).expanduser().resolve())

    def _check_official(self, root: Path) -> None:
        folder = self._folder(root)
        if not folder.exists():
            self._download(folder.parent, folder)
        failed = _failed_files(self.torchvision_name, str(folder))
        if failed:
            raise BadInput(f"{self.name}: {folder} failed the md5 check ({', '.join(failed)}); "
                           f"replace it with the official python-format {self.title} folder, "
                           f"or delete it to let ltbench download one")

    def _download(self, root: Path, folder: Path) -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="ltbench-cifar-") as scratch:
                _torchvision_class(self.torchvision_name)(scratch, train=False, download=True)
                root.mkdir(parents=True, exist_ok=True)
                shutil.move(str(Path(scratch) / folder.name), str(folder))
        # Network, archive checksum and disk errors all mean the same to the user: no data.
        except Exception as exc:
            raise BadInput(f"{self.name}: no {self.title} data under {root} (looked for {folder}) "
                           f"and the download failed ({_one_line(exc)}); put the official "
                           f"python-format folder there, or pass --data-root DIR / set "
                           f"LTBENCH_DATA_ROOT") from None

    def _split(self, root: Path, hparams: Mapping[str, Any],
               train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(root, hparams)
        return _read_split(self.torchvision_name, str(Path(root).expanduser().resolve()), train)

    def _read(self, root: Path, imb_factor: float, profile: str, split_seed: int,
              hparams: Mapping[str, Any]) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray],
                                                   tuple[torch.Tensor, torch.Tensor],
                                                   tuple[torch.Tensor, torch.Tensor]]:
        """The run's (subset, meta, validation) positions
        (:func:`~ltbench.datasets.profiles.split_with_validation`) and the official training
        and test splits as (images, labels), from the official folder or else from the pack
        holding this configuration (:meth:`_packs`), whose training images at the positions it
        does not hold are zero."""
        counts = self.class_counts(imb_factor, profile, hparams)
        packs = self._packs(root)
        if packs:
            pack = cifar_pack.find_pack(packs, self.name,
                                        cifar_pack.data_options(hparams, self.data_keys),
                                        (imb_factor, profile, split_seed))
            splits = cifar_pack.read_splits(pack)
            train, test = splits["train"][:2], splits["test"][:2]
        else:
            train, test = self._split(root, hparams, True), self._split(root, hparams, False)
        positions = split_with_validation(train[1].numpy(), counts, split_seed, hparams)
        if packs:
            cifar_pack.check_held(pack, np.concatenate(positions), splits["train"][2])
        return positions, train, test

    def split_indices(self, root: Path, imb_factor: float, profile: str, split_seed: int,
                      hparams: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Ascending int64 positions of the subset and the meta set in the official training
        split (:func:`~ltbench.datasets.profiles.split_with_validation`)."""
        return self.split_positions(root, imb_factor, profile, split_seed, hparams)[:2]

    def split_positions(self, root: Path, imb_factor: float, profile: str, split_seed: int,
                        hparams: Mapping[str, Any]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._read(root, imb_factor, profile, split_seed, hparams)[0]

    def load(self, root: Path, imb_factor: float, profile: str, split_seed: int,
             hparams: Mapping[str, Any]) -> LTData:
        (indices, meta, val), (train_images, train_labels), (test_images, test_labels) = \
            self._read(root, imb_factor, profile, split_seed, hparams)
        picked, meta_picked = torch.from_numpy(indices), torch.from_numpy(meta)
        val_picked = torch.from_numpy(val)
        has_meta, has_val = len(meta) > 0, len(val) > 0
        return LTData(
            train_images=train_images[picked],
            train_labels=train_labels[picked],
            test_images=test_images.clone(),
            test_labels=test_labels.clone(),
            class_counts=self.class_counts(imb_factor, profile, hparams),
            train_indices=indices,
            meta_images=train_images[meta_picked] if has_meta else None,
            meta_labels=train_labels[meta_picked] if has_meta else None,
            meta_indices=meta if has_meta else None,
            val_images=train_images[val_picked] if has_val else None,
            val_labels=train_labels[val_picked] if has_val else None,
            val_indices=val if has_val else None,
        )

    def pack(self, root: Path, imb_factor: float, profile: str, split_seed: int,
             overrides: Mapping[str, str], out: Path,
             effort: int = cifar_pack.DEFAULT_EFFORT) -> list[str]:
        """Write the data pack of a configuration (:mod:`ltbench.datasets.cifar_pack`) from the
        official folder under ``root`` to ``out``; return the protocols it covers.

        It covers the protocol ``overrides`` names, else every protocol of the dataset, each
        with the data options of ``overrides`` (``meta_per_class``, ``val_per_class``); a
        subset one of them cannot draw is :class:`BadInput` before any data is read.
        """
        names = [overrides["protocol"]] if "protocol" in overrides else list(self.protocols)
        covered = {name: resolve_run(self, None, {**overrides, "protocol": name})
                   for name in names}
        for hparams in covered.values():
            self.class_counts(imb_factor, profile, hparams)
        self._check_official(root)  # packs are made from the official files only
        train, test = self._split(root, hparams, True), self._split(root, hparams, False)
        held = np.unique(np.concatenate([
            position for hparams in covered.values()
            for position in split_with_validation(
                train[1].numpy(), self.class_counts(imb_factor, profile, hparams), split_seed,
                hparams)]))
        manifest = {
            "dataset": self.name, "imb_factor": float(imb_factor), "profile": profile,
            "split_seed": int(split_seed),
            "data_options": {key: value for key, value in covered[names[0]].items()
                             if key in overrides and key != "protocol"},
            "protocols": {name: cifar_pack.data_options(hparams, self.data_keys)
                          for name, hparams in covered.items()},
            "source_md5": _official_md5s(self.torchvision_name),
        }
        cifar_pack.write_pack(out, manifest, {
            "train": (*train, held.astype(np.int64)),
            "test": (*test, np.arange(len(test[1]), dtype=np.int64))}, effort)
        return names


class Cifar10LT(_CifarLT):
    name = "cifar10-lt"
    title = "CIFAR-10"
    torchvision_name = "CIFAR10"
    num_classes = 10
    summary = "CIFAR-10-LT: 10 classes, 32x32, LDAM construction (n_max 5000), balanced test 10,000"


class Cifar100LT(_CifarLT):
    name = "cifar100-lt"
    title = "CIFAR-100"
    torchvision_name = "CIFAR100"
    num_classes = 100
    summary = ("CIFAR-100-LT: 100 fine classes, 32x32, LDAM construction (n_max 500), "
               "balanced test 10,000")
