"""The decoded-image cache of the large datasets: ``ltbench data prepare`` writes it, training
reads it (architecture.md §6.6).

Decoding JPEGs with PIL for every sample of every epoch cannot feed a GPU, so every listed image
is decoded once, converted to RGB and resized so that its shorter side is ``short_side`` (256:
the test pipeline's ``Resize(256)``), keeping its aspect ratio, exactly as torchvision's
``Resize(short_side)`` on a PIL image does (output size: ``pytorch/vision :
torchvision/transforms/functional.py``, ``_compute_resized_output_size``: the longer side becomes
``int(short_side · long / short)``; filter: PIL bilinear). Images keep their own sizes (no padded
canvas, so nothing is cropped and no byte is wasted) and are packed row-major (HWC) one after
the other in one flat file; training gathers crops from it directly
(:mod:`ltbench.engine.crops`).

Layout of one split's cache folder::

    index.npz      fingerprint, short_side, starts, heights, widths (one entry per listed image)
    pixels.u8      the packed uint8 pixels (sum of h · w · 3 bytes)
    done/NNNNN     one empty marker per finished chunk of CHUNK_IMAGES images
    complete.json  written last: the cache is usable

Resumable: ``pixels.u8`` is allocated at full size first and every chunk is written at its own
offsets by a worker process, then marked done (markers and ``index.npz`` are written to a
temporary name and renamed), so an interrupted prepare redoes only unfinished chunks. The
``fingerprint`` (sha256 of the list's ``path label`` lines) ties a cache to the exact list it
was made from; a cache made from another list is rebuilt by ``prepare`` and refused by training.

This module does not import torch, so the decoding workers start fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TextIO

import numpy as np

from ..errors import BadInput
from ..store.atomicfile import atomic_write, write_bytes, write_text
from .progress import RunProgress

SHORT_SIDE = 256
CHUNK_IMAGES = 256
#: How many missing or unreadable images an error message names.
NAMED_PROBLEMS = 3


@dataclass(frozen=True)
class ImageList:
    """The images of one split: ``paths`` relative to ``root`` and their 0-based ``labels``."""

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def fingerprint(self) -> str:
        """sha256 of the ``path label`` lines: what a cache was made from."""
        digest = hashlib.sha256()
        for path, label in zip(self.paths, self.labels.tolist()):
            digest.update(f"{path} {label}\n".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class CacheSplit:
    """A complete cache opened for reading: ``pixels`` is a copy-on-write memory map (uint8
    ``[P, 3]``, nothing is read until used), ``starts``/``heights``/``widths`` int64 ``[N]``.

    ``device_copies`` holds the split's packed images copied to a training device, one per
    device (:class:`~ltbench.engine.sources.CachedImages`): every run of a loaded subset
    shares one copy, freed with the split when the subset is dropped."""

    folder: Path
    short_side: int
    pixels: np.ndarray
    starts: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    device_copies: dict = field(default_factory=dict, compare=False, repr=False)


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(h, w)`` after torchvision's ``Resize(short_side)``: the shorter side becomes
    ``short_side``, the longer ``int(short_side · long / short)`` (module docstring)."""
    short, long = (height, width) if height <= width else (width, height)
    new_long = int(short_side * long / short)
    return (short_side, new_long) if height <= width else (new_long, short_side)


def decode_resized(path: Path, height: int, width: int) -> np.ndarray:
    """uint8 ``[height, width, 3]``: the image at ``path`` as RGB (torchvision's PIL loader:
    ``Image.open(f).convert("RGB")``), resized with PIL's bilinear filter."""
    from PIL import Image

    with open(path, "rb") as handle:
        image = Image.open(handle).convert("RGB")
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def _read_sizes(paths: list[str]) -> list[tuple[int, int] | str]:
    """``(height, width)`` from each file's header, or the problem as text."""
    from PIL import Image

    sizes: list[tuple[int, int] | str] = []
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
            sizes.append((height, width))
        except FileNotFoundError:
            sizes.append(f"{path} (missing)")
        except OSError as exc:
            sizes.append(f"{path} (unreadable: {type(exc).__name__})")
    return sizes


def _write_chunk(pixels_path: str, paths: list[str], starts: list[int], heights: list[int],
                 widths: list[int]) -> int:
    """Decode ``paths`` and write them at byte offsets ``3 · starts``; returns the count."""
    descriptor = os.open(pixels_path, os.O_WRONLY)
    try:
        for path, start, height, width in zip(paths, starts, heights, widths):
            os.pwrite(descriptor, decode_resized(Path(path), height, width).tobytes(), 3 * start)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return len(paths)


def _chunks(count: int) -> Iterator[tuple[int, slice]]:
    for number, start in enumerate(range(0, count, CHUNK_IMAGES)):
        yield number, slice(start, min(start + CHUNK_IMAGES, count))


def _parallel_map(function, argument_lists: Iterable[tuple], jobs: int) -> Iterator:
    """``function(*args)`` for each tuple, in a pool of ``jobs`` processes (inline for 1),
    results as they finish."""
    if jobs <= 1:
        for arguments in argument_lists:
            yield function(*arguments)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(function, *arguments) for arguments in argument_lists]
        for future in futures:
            yield future.result()


def _scan(images: ImageList, jobs: int, progress: RunProgress) -> tuple[np.ndarray, np.ndarray]:
    """Original heights and widths of every image, read from the file headers; :class:`BadInput`
    naming the first missing or unreadable ones (nothing has been written yet)."""
    full_paths = [str(images.root / path) for path in images.paths]
    batches = [(full_paths[part],) for _, part in _chunks(len(full_paths))]
    sizes = []
    progress.begin(len(full_paths))
    for batch in _parallel_map(_read_sizes, batches, jobs):
        sizes.extend(batch)
        progress.advance(len(batch))
    progress.end(f"read {len(sizes)} image headers")
    problems = [size for size in sizes if isinstance(size, str)]
    if problems:
        raise BadInput(f"{len(problems)} of {len(sizes)} listed images under {images.root} are "
                       f"missing or unreadable, e.g. {'; '.join(problems[:NAMED_PROBLEMS])}")
    array = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    return array[:, 0], array[:, 1]


def missing_images(images: ImageList) -> list[str]:
    """The listed files that do not exist, as full paths."""
    return [str(images.root / path) for path in images.paths
            if not (images.root / path).is_file()]


def _load_index(folder: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(folder / "index.npz") as index:
            return {key: index[key] for key in index.files}
    except (OSError, ValueError, KeyError):
        return None


def _index_matches(index: dict[str, np.ndarray] | None, images: ImageList,
                   short_side: int) -> bool:
    return (index is not None and str(index["fingerprint"]) == images.fingerprint
            and int(index["short_side"]) == short_side)


def prepare_split(images: ImageList, folder: Path, *, short_side: int = SHORT_SIDE,
                  jobs: int = 1, label: str = "prepare", stream: TextIO | None = None) -> bool:
    """Make ``folder`` a complete cache of ``images`` (module docstring); returns False when it
    already was one. Raises :class:`BadInput` for missing or unreadable images before writing."""
    folder = Path(folder)
    index = _load_index(folder)
    pixels_path = folder / "pixels.u8"
    if _index_matches(index, images, short_side) and (folder / "complete.json").is_file():
        (stream if stream is not None else sys.stderr).write(
            f"{label} already cached in {folder}\n")
        return False
    if not (_index_matches(index, images, short_side) and pixels_path.is_file()
            and pixels_path.stat().st_size == 3 * int(index["total"])):
        heights, widths = _scan(images, jobs, RunProgress(f"{label}: reading sizes", stream))
        resized = np.array([resized_size(h, w, short_side) for h, w in zip(heights, widths)],
                           dtype=np.int64).reshape(-1, 2)
        areas = resized[:, 0] * resized[:, 1]
        starts = np.concatenate(([0], np.cumsum(areas)[:-1])).astype(np.int64)
        if folder.exists():
            shutil.rmtree(folder)  # another list's or a broken cache: start again
        (folder / "done").mkdir(parents=True)
        with open(pixels_path, "wb") as handle:
            handle.truncate(3 * int(areas.sum()))
        index = {"fingerprint": np.array(images.fingerprint), "short_side": np.array(short_side),
                 "starts": starts, "heights": resized[:, 0], "widths": resized[:, 1],
                 "total": np.array(int(areas.sum()))}
        with atomic_write(folder / "index.npz") as handle:
            np.savez(handle, **index)
    todo = [(number, part) for number, part in _chunks(len(images))
            if not (folder / "done" / f"{number:05d}").exists()]
    progress = RunProgress(label, stream)
    progress.begin(len(images))
    progress.advance(len(images) - sum(part.stop - part.start for _, part in todo))
    work = [(str(pixels_path), [str(images.root / p) for p in images.paths[part]],
             index["starts"][part].tolist(), index["heights"][part].tolist(),
             index["widths"][part].tolist()) for _, part in todo]
    for (number, _), written in zip(todo, _parallel_map(_write_chunk, work, jobs)):
        write_bytes(folder / "done" / f"{number:05d}", b"")
        progress.advance(written)
    write_text(folder / "complete.json", json.dumps(
        {"images": len(images), "short_side": short_side, "fingerprint": images.fingerprint,
         "bytes": 3 * int(index["total"])}))
    progress.end(f"cached {len(images)} images in {folder}")
    return True


def open_split(images: ImageList, folder: Path, short_side: int, prepare_hint: str
               ) -> CacheSplit:
    """The complete cache of ``images`` in ``folder``; :class:`BadInput` ending with
    ``prepare_hint`` (the command to run) when it is missing, unfinished or made from another
    list or short side."""
    folder = Path(folder)
    index = _load_index(folder)
    if index is None or not (folder / "complete.json").is_file():
        raise BadInput(f"no complete image cache at {folder}: run {prepare_hint}")
    if not _index_matches(index, images, short_side):
        raise BadInput(f"the image cache at {folder} was made from another list or short side "
                       f"(cache {int(index['short_side'])}, run {short_side}): run {prepare_hint}")
    pixels = np.memmap(folder / "pixels.u8", dtype=np.uint8, mode="c").reshape(-1, 3)
    return CacheSplit(folder=folder, short_side=short_side, pixels=pixels,
                      starts=index["starts"].astype(np.int64),
                      heights=index["heights"].astype(np.int64),
                      widths=index["widths"].astype(np.int64))
