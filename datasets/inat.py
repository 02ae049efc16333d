"""iNaturalist 2017 and 2018 (Van Horn et al., The iNaturalist Species Classification and
Detection Dataset, CVPR 2018, arXiv:1707.06642): 5,089 and 8,142 species, long-tailed training
sets of 579,184 and 437,513 images; the official validation set is the test set
(datasets.md §1, §4).

Two on-disk formats, both read as published:

* the official COCO-style JSON annotations (``visipedia/inat_comp : 2017/README.md``,
  ``2018/README.md``): ``images`` [{id, file_name, …}], ``annotations`` [{image_id,
  category_id, …}], ``categories`` [{id, …}]. ltbench joins annotations to images on
  ``image_id`` (the reference loader ``macaodha/inat_comp_2018 : inat2018_loader.py`` pairs them
  by position, which silently mislabels a reordered file) and numbers classes by ascending
  category id (for 2018 the label equals the category id, 0 … 8141);
* for 2018 also the LT split lists of ``facebookresearch/classifier-balancing``
  (``iNaturalist18_train.txt``, ``iNaturalist18_val.txt``, sha256-checked as datasets.md §3.2).

Layout: ``<data root>/iNaturalist18/`` with the two lists, or ``train2018.json`` and
``val2018.json`` (the lists win when both are there), and the images at the paths they name
(``train_val2018/<supercategory>/<id>/<hash>.jpg``); ``<data root>/iNaturalist17/`` with
``train2017.json``, ``val2017.json`` and ``train_val_images/…``. See :mod:`.split_lists`.

Protocols (protocols.md §2.4; augmentation of ``facebookresearch/classifier-balancing :
data/dataloader.py`` for iNat 2018: RandomResizedCrop 224 + flip, **no** ColorJitter,
normalisation (0.466, 0.471, 0.380) / (0.195, 0.194, 0.192)):

* ``decoupling`` (default; Kang et al., arXiv:1910.09217, stage 1): ResNet-50, 90 epochs,
  batch 512, SGD lr 0.2, momentum 0.9, weight decay 1e-4, cosine to 0;
* ``lade`` (``hyperconnect/LADE : config/iNaturalist18/lade.yaml``): 200 epochs, batch 256,
  lr 0.1, the rest as above.

iNat 2017 has no reference PyTorch protocol (Cui et al.'s TF/TPU scripts only, protocols.md
§2.5): ltbench gives it the iNat 2018 protocols and normalisation, an ltbench choice.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from ltbench.errors import BadInput

from .split_lists import (FixedSplitDataset, KnownFile, imagenet_protocol, outside_folder,
                          read_split_list)

INAT_MEAN = (0.466, 0.471, 0.380)
INAT_STD = (0.195, 0.194, 0.192)

_DECOUPLING = imagenet_protocol(
    backbone="resnet50", epochs=90, batch_size=512, lr=0.2, weight_decay=1e-4,
    color_jitter=0.0, mean=INAT_MEAN, std=INAT_STD)
_PROTOCOLS = {
    "decoupling": _DECOUPLING,
    "lade": {**_DECOUPLING, "epochs": 200, "batch_size": 256, "lr": 0.1},
}


def read_coco_json(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """``(file names, labels)`` of an iNat annotation file, in ``images`` order: each image's
    annotation found by ``image_id``, its label the rank of its ``category_id`` among the
    file's categories. :class:`BadInput` for a malformed file, an image without exactly one
    annotation or an unknown category. Read once per process and file version (the 2017 /
    2018 training files are hundreds of megabytes)."""
    stat = Path(path).stat()
    return _read_coco_json(Path(path).resolve(), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _read_coco_json(path: Path, size: int, mtime_ns: int) -> tuple[tuple[str, ...], np.ndarray]:
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        categories = sorted(int(category["id"]) for category in document["categories"])
        category_of: dict[int, int] = {}
        for annotation in document["annotations"]:
            image_id = int(annotation["image_id"])
            if image_id in category_of:
                raise BadInput(f"{path}: image {image_id} has more than one annotation")
            category_of[image_id] = int(annotation["category_id"])
        images = [(int(image["id"]), str(image["file_name"])) for image in document["images"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{path}: not an iNaturalist annotation file ({type(exc).__name__}: "
                       f"{exc})") from None
    rank = {category: label for label, category in enumerate(categories)}
    labels = []
    for image_id, name in images:
        if outside_folder(name):
            raise BadInput(f"{path}: image {image_id}'s file_name {name[:120]!r} leaves the "
                           f"dataset folder (absolute or with '..')")
        if image_id not in category_of:
            raise BadInput(f"{path}: image {image_id} has no annotation")
        if category_of[image_id] not in rank:
            raise BadInput(f"{path}: image {image_id} has unknown category "
                           f"{category_of[image_id]}")
        labels.append(rank[category_of[image_id]])
    return tuple(name for _, name in images), np.asarray(labels, dtype=np.int64)


class _INaturalist(FixedSplitDataset):
    """The shared iNat implementation: the JSON pair, and split lists where there are some."""

    json_files: ClassVar[dict[str, str]]
    paper = ("Van Horn et al., The iNaturalist Species Classification and Detection Dataset, "
             "CVPR 2018, arXiv:1707.06642")
    default_protocol = "decoupling"
    protocols = _PROTOCOLS

    def layout(self, root: Path) -> str:
        folder = Path(root) / self.folder
        formats = [" and ".join(self.json_files.values())]
        if self.lists:
            formats.insert(0, " and ".join(known.filename for known in self.lists.values()))
        return (f"expected {folder}/ holding {' or '.join(formats)} and the images at the "
                f"relative paths they name")

    def split_sources(self, root: Path) -> dict[str, Path]:
        folder = Path(root).expanduser() / self.folder
        for names in ({split: known.filename for split, known in self.lists.items()},
                      self.json_files):
            sources = {split: folder / name for split, name in names.items()}
            if names and all(path.is_file() for path in sources.values()):
                return sources
        raise BadInput(f"{self.name}: no annotation files in {folder} ({self.layout(root)})")

    def read_source(self, split: str, path: Path) -> tuple[tuple[str, ...], np.ndarray]:
        if path.suffix == ".json":
            return read_coco_json(path)
        return read_split_list(path, self.lists[split])


class INaturalist2018(_INaturalist):
    name = "inat2018"
    folder = "iNaturalist18"
    summary = ("iNaturalist 2018: 8,142 species, 437,513 training images (1,000 ... 2), test = "
               "official val 24,426 (3/class); JSON or LT lists, decoded cache ('data prepare')")
    natural_imb_factor = 500.0
    lists = {
        "train": KnownFile("iNaturalist18_train.txt", 437_513,
                           "158fa2dca040e6e95b06c68c7cdff40fe696f202793b2aa0e8b854321ffe1adf"),
        "test": KnownFile("iNaturalist18_val.txt", 24_426,
                          "efaeff65f80641b60864470e6f255aa69453406ef5717eec8c6681748f3a61f3"),
    }
    json_files = {"train": "train2018.json", "test": "val2018.json"}


class INaturalist2017(_INaturalist):
    name = "inat2017"
    folder = "iNaturalist17"
    summary = ("iNaturalist 2017: 5,089 species, 579,184 training images, test = official val "
               "95,986; official JSON, decoded cache ('data prepare')")
    #: IF 435.4 from the literature (datasets.md §1, footnote 1).
    natural_imb_factor = 435.4
    lists: ClassVar[dict[str, KnownFile]] = {}
    json_files = {"train": "train2017.json", "test": "val2017.json"}
