"""Fixture trees of the large datasets, in their exact on-disk formats, with small JPEGs.

Every image is a random-noise-plus-gradient JPEG of its own size (landscape and portrait), so
resizing, cropping and decoding are exercised on realistic variety; the class is encoded in the
mean colour so a network can learn something.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

#: (height, width) cycled over the images: 4:3, 3:4, square, wide.
SIZES = ((30, 40), (44, 33), (36, 36), (28, 52))


def write_jpeg(path: Path, height: int, width: int, label: int, rng: np.random.Generator
               ) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([(ys * 255 // height), (xs * 255 // width),
                     np.full_like(ys, (60 * label) % 256)], axis=-1)
    noise = rng.integers(-40, 41, size=(height, width, 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def _images(root: Path, entries: list[tuple[str, int]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k, (relative, label) in enumerate(entries):
        write_jpeg(root / relative, *SIZES[k % len(SIZES)], label, rng)


def write_split_list(path: Path, entries: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{relative} {label}\n" for relative, label in entries))


def imagenet_lt_tree(root: Path, train_counts: list[int], test_per_class: int) -> Path:
    """``root/ImageNet_LT``: the two lists (ImageNet-LT paths) and their JPEGs."""
    folder = root / "ImageNet_LT"
    train = [(f"train/n{c:08d}/n{c:08d}_{i}.JPEG", c)
             for c, n in enumerate(train_counts) for i in range(n)]
    test = [(f"val/n{c:08d}/ILSVRC2012_val_{c * 100 + i:08d}.JPEG", c)
            for c in range(len(train_counts)) for i in range(test_per_class)]
    write_split_list(folder / "ImageNet_LT_train.txt", train)
    write_split_list(folder / "ImageNet_LT_test.txt", test)
    _images(folder, train + test, seed=0)
    return folder


def places_lt_tree(root: Path, train_counts: list[int], test_per_class: int) -> Path:
    """``root/Places_LT``: the two lists (Places-LT paths) and their JPEGs."""
    folder = root / "Places_LT"
    names = [f"scene{c}" for c in range(len(train_counts))]
    train = [(f"train/{names[c]}/{i:08d}.jpg", c)
             for c, n in enumerate(train_counts) for i in range(n)]
    test = [(f"val/{names[c]}/Places365_val_{c * 100 + i:08d}.jpg", c)
            for c in range(len(train_counts)) for i in range(test_per_class)]
    write_split_list(folder / "Places_LT_train.txt", train)
    write_split_list(folder / "Places_LT_test.txt", test)
    _images(folder, train + test, seed=1)
    return folder


def inat_json_tree(root: Path, year: int, category_ids: list[int], train_counts: list[int],
                   test_per_class: int) -> Path:
    """``root/iNaturalist17|18``: official-style train/val JSON (annotations deliberately in
    another order than images, image ids not positions) and their JPEGs."""
    folder = root / ("iNaturalist18" if year == 2018 else "iNaturalist17")
    prefix = "train_val2018" if year == 2018 else "train_val_images"
    categories = [{"id": cid, "name": f"species {cid}", "supercategory": "Plantae"}
                  for cid in category_ids]
    next_id = 1000
    for split, counts in (("train", train_counts), ("val", [test_per_class] * len(train_counts))):
        images, annotations, entries = [], [], []
        for c, (cid, n) in enumerate(zip(category_ids, counts)):
            for i in range(n):
                name = f"{prefix}/Plantae/{cid}/{split}{i:04d}.jpg"
                images.append({"id": next_id, "file_name": name, "width": 0, "height": 0,
                               "license": 0, "rights_holder": "test"})
                annotations.append({"id": 7 * next_id, "image_id": next_id, "category_id": cid})
                entries.append((name, c))
                next_id += 3
        document = {"info": {"year": year}, "images": images,
                    "annotations": annotations[::-1], "categories": categories[::-1],
                    "licenses": []}
        (folder / f"{split}{year}.json").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}{year}.json").write_text(json.dumps(document))
        _images(folder, entries, seed=year + len(split))
    return folder


def count_device_copies(monkeypatch) -> list[int]:
    """Make every copy of a cached split to the training device append its image count to the
    returned list (the copies themselves still happen)."""
    from ltbench.engine import sources

    copies: list[int] = []
    real_copy = sources._copy_to

    def counted(images, device):
        copies.append(len(images))
        return real_copy(images, device)

    monkeypatch.setattr(sources, "_copy_to", counted)
    return copies
