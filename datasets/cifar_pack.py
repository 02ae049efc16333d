"""Portable CIFAR-LT data packs: one file holding exactly the images one configuration uses.

GPU nodes are often offline and some accept only small uploads, so ``ltbench data pack`` writes
the training images a (dataset, imbalance factor, profile, split seed, data options)
configuration trains on under every protocol it covers (the LDAM subset; the Jamal subset and
its meta set; the validation split when ``val_per_class`` is set), the whole test set, every
label of both official splits, the md5s of the official files they came from and their
positions in the official arrays. A data root that holds such a file as ``<root>/*.ltpack``
and no official folder trains that configuration with the same tensors; any other
configuration is refused, naming what the packs hold (:func:`find_pack`).

The file is a zip archive:

* ``manifest.json``: ``format`` (``"ltbench-pack"``), ``format_version`` (1),
  ``ltbench_version``, ``dataset``, ``imb_factor``, ``profile``, ``split_seed``,
  ``data_options`` (the ``--set`` values it was made with), ``protocols`` (name → the data
  options a run of that protocol has: :func:`data_options`), ``source_md5`` (official file
  name → md5), ``codec`` and ``splits`` (``train`` / ``test`` → ``{"size": images in the
  official split, "images": images held}``);
* per split ``<split>/labels.npy`` (int64, every label of the official split, in its order),
  ``<split>/positions.npy`` (int64, ascending: the official positions of the images held) and
  ``<split>/images-NNNNN.webp``: the held images in position order, :data:`CHUNK` per file,
  tiled :data:`TILE_COLUMNS` to a row (the last row of the last file padded with black).

Lossless WebP was measured against PNG and raw lzma / zlib on 2,000 CIFAR-10 training images
(Pillow 13, one core): bytes per image 1,698 (WebP, 1,024-image tiles, method 2) / 1,765
(WebP, one file per image) / 2,166 (PNG tiles) / 2,339 (lzma -9) / 2,837 (zlib -9); tiles also
decode faster (0.07 ms per image against 0.12). Every encoded tile is decoded and compared
before it is written, so a pack is lossless or is not written.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ltbench import __version__
from ltbench.errors import BadInput
from ltbench.hparams import OPTIONAL_DEFAULTS
from ltbench.spec import format_imb
from ltbench.store.atomicfile import atomic_write

SUFFIX = ".ltpack"
FORMAT, FORMAT_VERSION = "ltbench-pack", 1
#: Images per WebP file and per tile row: a full file is a 1024 x 1024 RGB image.
CHUNK, TILE_COLUMNS = 1024, 32
IMAGE_SHAPE = (3, 32, 32)
#: libwebp's ``method`` (0 fastest ... 6 smallest) when none is asked for.
DEFAULT_EFFORT = 2
CODEC = "webp-lossless"


def data_options(hparams: Mapping[str, Any], data_keys: Sequence[str]) -> dict[str, Any]:
    """The values of ``data_keys`` in a run's hyper-parameters, optional keys that a run did
    not set taking their meaning when absent (``val_per_class`` 0)."""
    return {key: hparams.get(key, OPTIONAL_DEFAULTS.get(key)) for key in data_keys}


def _settings(options: Mapping[str, Any]) -> str:
    """``protocol=ldam meta_per_class=0 val_per_class=0``"""
    return " ".join(f"{key}={value}" for key, value in options.items())


def _subset(imb_factor: float, profile: str, split_seed: int) -> str:
    return f"imb {format_imb(imb_factor)} profile {profile} split seed {split_seed}"


@dataclass(frozen=True)
class Pack:
    """A pack file under a data root and its manifest."""

    path: Path
    manifest: dict

    def holds(self, dataset: str, options: Mapping[str, Any],
              subset: tuple[float, str, int] | None = None) -> bool:
        """Whether this pack serves runs of ``dataset`` with these data options and, when
        ``subset`` (imbalance factor, profile, split seed) is given, of that subset."""
        manifest = self.manifest
        if manifest["dataset"] != dataset or dict(options) not in manifest["protocols"].values():
            return False
        return subset is None or (float(subset[0]), subset[1], int(subset[2])) == (
            float(manifest["imb_factor"]), manifest["profile"], int(manifest["split_seed"]))

    def describe(self) -> str:
        manifest = self.manifest
        protocols = ", ".join(map(_settings, manifest["protocols"].values()))
        return (f"{self.path.name}: {manifest['dataset']} "
                f"{_subset(manifest['imb_factor'], manifest['profile'], manifest['split_seed'])} "
                f"({protocols})")


def packs_under(root: Path) -> list[Pack]:
    """The packs ``<root>/*.ltpack``, by name; :class:`BadInput` for one that is not readable."""
    packs = []
    for path in sorted(Path(root).glob(f"*{SUFFIX}")):
        try:
            with zipfile.ZipFile(path) as archive:
                manifest = json.loads(archive.read("manifest.json"))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise BadInput(f"{path} is not a readable ltbench data pack ({exc}); remake it "
                           f"with 'ltbench data pack' or remove it") from None
        if (manifest.get("format"), manifest.get("format_version")) != (FORMAT, FORMAT_VERSION):
            raise BadInput(f"{path} is not an ltbench data pack of format {FORMAT} "
                           f"{FORMAT_VERSION}; remake it with this ltbench's 'ltbench data pack'")
        packs.append(Pack(path, manifest))
    return packs


def find_pack(packs: Sequence[Pack], dataset: str, options: Mapping[str, Any],
              subset: tuple[float, str, int] | None = None) -> Pack:
    """The first of ``packs`` that :meth:`Pack.holds` the configuration; :class:`BadInput`
    naming what the packs hold when none does."""
    for pack in packs:
        if pack.holds(dataset, options, subset):
            return pack
    asked = " ".join([dataset, *([_subset(*subset)] if subset is not None else []),
                      _settings(options)])
    folder = packs[0].path.parent
    raise BadInput(f"{dataset}: no official folder under {folder} and no pack there holds "
                   f"{asked}; the packs hold {'; '.join(p.describe() for p in packs)} "
                   f"(make one with 'ltbench data pack', or provide the official folder)")


def _tile(images: np.ndarray) -> np.ndarray:
    """uint8 [n, 3, 32, 32] → one [rows·32, TILE_COLUMNS·32, 3] image, row-major, padded with
    black images."""
    channels, height, width = IMAGE_SHAPE
    rows = -(-len(images) // TILE_COLUMNS)
    padded = np.zeros((rows * TILE_COLUMNS, *IMAGE_SHAPE), dtype=np.uint8)
    padded[:len(images)] = images
    return np.ascontiguousarray(padded.reshape(rows, TILE_COLUMNS, channels, height, width)
                                .transpose(0, 3, 1, 4, 2)
                                .reshape(rows * height, TILE_COLUMNS * width, channels))


def _untile(tiled: np.ndarray, count: int) -> np.ndarray:
    """The inverse of :func:`_tile`: the first ``count`` images, uint8 [count, 3, 32, 32]."""
    channels, height, width = IMAGE_SHAPE
    rows = tiled.shape[0] // height
    images = (tiled.reshape(rows, height, TILE_COLUMNS, width, channels)
              .transpose(0, 2, 4, 1, 3).reshape(rows * TILE_COLUMNS, channels, height, width))
    return np.ascontiguousarray(images[:count])


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _encode(tiled: np.ndarray, effort: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # quality is the lossless mode's compression effort within a method: 50 measured as
    # small as 100 at method 2, faster.
    Image.fromarray(tiled).save(buffer, "WEBP", lossless=True, quality=50, method=effort)
    data = buffer.getvalue()
    if not np.array_equal(_decode(data), tiled):
        raise RuntimeError("this Pillow's lossless WebP did not round-trip a tile exactly")
    return data


def _array_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_pack(out: Path, manifest: Mapping[str, Any],
               splits: Mapping[str, tuple[torch.Tensor, torch.Tensor, np.ndarray]],
               effort: int = DEFAULT_EFFORT) -> None:
    """Write a pack: ``manifest`` (without the ``format``, ``codec`` and ``splits`` fields,
    which are added) and, per split name, (its official images uint8 [N, 3, 32, 32], its
    labels int64 [N], the ascending positions to hold). Written atomically
    (:func:`ltbench.store.atomicfile.atomic_write`), so a failure leaves nothing."""
    document = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "ltbench_version": __version__, **manifest, "codec": CODEC,
                "splits": {name: {"size": len(labels), "images": len(positions)}
                           for name, (_, labels, positions) in splits.items()}}
    with atomic_write(out) as handle, zipfile.ZipFile(handle, "w",
                                                      zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(document, indent=2) + "\n")
        for name, (images, labels, positions) in splits.items():
            archive.writestr(f"{name}/labels.npy", _array_bytes(labels.numpy()))
            archive.writestr(f"{name}/positions.npy", _array_bytes(positions))
            held = images[torch.from_numpy(positions)].numpy()
            for number, start in enumerate(range(0, len(held), CHUNK)):
                # WebP is compressed already: stored, not deflated.
                archive.writestr(f"{name}/images-{number:05d}.webp",
                                 _encode(_tile(held[start:start + CHUNK]), effort),
                                 compress_type=zipfile.ZIP_STORED)


def _decode_split(archive: zipfile.ZipFile, name: str, size: int,
                count: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    labels = np.load(io.BytesIO(archive.read(f"{name}/labels.npy")))
    positions = np.load(io.BytesIO(archive.read(f"{name}/positions.npy")))
    images = np.zeros((size, *IMAGE_SHAPE), dtype=np.uint8)
    for number, start in enumerate(range(0, count, CHUNK)):
        tiled = _decode(archive.read(f"{name}/images-{number:05d}.webp"))
        images[positions[start:start + CHUNK]] = _untile(tiled, min(CHUNK, count - start))
    return torch.from_numpy(images), torch.from_numpy(labels), positions


@functools.cache
def _read_pack(path: str, stamp: tuple[int, int]) -> dict[str, tuple]:
    """Every split of a pack, decoded once per process and file version (``stamp``: mtime
    and size); callers must copy before modifying."""
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        return {name: _decode_split(archive, name, split["size"], split["images"])
                for name, split in manifest["splits"].items()}


def read_splits(pack: Pack) -> dict[str, tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Per split (``train``, ``test``): the official split's images uint8 [N, 3, 32, 32] with
    the held ones in place and every other position zero, its labels int64 [N] and the held
    positions. :class:`BadInput` for a damaged file (zip CRC, missing entry)."""
    stat = pack.path.stat()
    try:
        return _read_pack(str(pack.path), (stat.st_mtime_ns, stat.st_size))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{pack.path} is damaged ({type(exc).__name__}: {exc}); remake it with "
                       f"'ltbench data pack'") from None


def check_held(pack: Pack, positions: np.ndarray, held: np.ndarray) -> None:
    """:class:`BadInput` unless every training position a run needs is held: a pack made by
    an ltbench that drew its subsets differently must not train on the zeros."""
    if not np.isin(positions, held).all():
        raise BadInput(f"{pack.path} lacks training images its configuration needs (made by "
                       f"ltbench {pack.manifest.get('ltbench_version')}, whose subsets differ "
                       f"from this one's); remake it with 'ltbench data pack'")
