"""Damaged result files: found, reported, excluded from resume decisions, moved aside.

A killed writer never leaves a partial *final* file (the store writes a temporary name and
renames it), but a full disk, a failing device, a bad copy or a stray file can still leave a
final ``<folder>/<run_id>.parquet`` that cannot be trusted: unreadable, failing its page
checksums, a foreign or misnamed record, curves without their columns (the store's
:class:`~ltbench.store.result_store.DamagedFile`). Readers of the store skip such files
(:mod:`ltbench.store.result_store`); this module names them:

* :func:`find_damaged` reads every record and every artifact in full (so every page checksum
  is verified), except the files found intact before and unchanged since
  (:mod:`ltbench.store.read_cache`; ``rescan`` reads those too), and returns one
  :class:`Damage` per damaged file;
* :func:`usable_statuses` is the store's ``run_id → status`` without the runs that have a
  damaged file, so ``ltbench run`` trains them again (a run whose curves are damaged is not a
  complete result);
* :func:`repair` moves every file of a damaged run (its record and all its artifacts) to
  ``<results>/corrupt/<folder>/``, where nothing reads them, so the run is missing and is
  re-run, and the bytes stay available for inspection.

A compacted part (:mod:`ltbench.store.compaction`) is checked like a run's files: a damaged
record or artifact part makes every run read from it incomplete (:func:`damaged_runs`), and
repair moves all of that part's files aside.

:func:`check_free_space` refuses to start a grid on a nearly full disk: a run that cannot
publish its record at the end wastes its whole training time.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput
from .read_cache import ReadCache, Stamp, final_files
from .result_store import COMPACTED_DIR, DamagedFile, ResultStore

#: Folders of a store that hold no per-run parquet files of their own.
NOT_ARTIFACTS = {"runs", "corrupt", "claims", "resume", "launch", "slurm", "published",
                 "reference", COMPACTED_DIR}
CORRUPT_DIR = "corrupt"


@dataclass(frozen=True)
class Damage:
    """A damaged final file: ``name`` is its run's id, or its compacted part's name."""

    name: str
    path: Path
    reason: str


def artifact_dirs(store: ResultStore) -> list[Path]:
    """The store's artifact folders, in name order."""
    if not store.root.is_dir():
        return []
    return sorted(p for p in store.root.iterdir() if p.is_dir() and p.name not in NOT_ARTIFACTS
                  and not p.name.startswith("."))


def part_dirs(store: ResultStore) -> list[Path]:
    """The folders of compacted parts: records, then each artifact's in name order."""
    if not store.compacted_dir.is_dir():
        return []
    return sorted((p for p in store.compacted_dir.iterdir() if p.is_dir()
                   and not p.name.startswith(".")), key=lambda p: (p.name != "runs", p.name))


def _folders(store: ResultStore) -> list[Path]:
    """Every folder of final files: runs, artifacts, then the parts'."""
    return [store.runs_dir, *artifact_dirs(store), *part_dirs(store)]


def file_stamps(store: ResultStore) -> dict[str, dict[str, Stamp]]:
    """A snapshot of the stamp of every final file of the store, by folder (its path under the
    root: ``runs``, each artifact's, then ``compacted/...``) and file name."""
    return {folder.relative_to(store.root).as_posix(): final_files(folder)
            for folder in _folders(store)}


def _damage(store: ResultStore, path: Path) -> str | None:
    """Why the final file ``path`` of ``store`` is damaged, or None (intact, or gone)."""
    try:
        if path.parent == store.runs_dir:
            store.read_record_file(path)
        elif path.parent == store.compacted_dir / "runs":
            store.read_part_file(path)
        else:
            store.read_artifact_file(path.parent.name, path)
    except FileNotFoundError:
        return None
    except DamagedFile as exc:
        return str(exc)
    return None


def find_damaged(store: ResultStore, rescan: bool = False) -> list[Damage]:
    """Every damaged final file of the store, records first, in path order; files found
    intact by an earlier call and unchanged since are not read again unless ``rescan``."""
    cache = ReadCache(store.root)
    known = {} if rescan else cache.verified()
    verified, found = {}, []
    for folder in _folders(store):
        stamps = final_files(folder)
        where = folder.relative_to(store.root).as_posix()
        for name in sorted(stamps):
            key = (where, name)
            if known.get(key) != stamps[key[1]]:
                reason = _damage(store, folder / name)
                if reason is not None:
                    found.append(Damage(name[:-len(".parquet")], folder / name, reason))
                    continue
            verified[key] = stamps[name]
    if verified != known:
        cache.save_verified(verified)
    return found


def _is_part(store: ResultStore, damage: Damage) -> bool:
    return damage.path.parent.parent == store.compacted_dir


def damaged_runs(store: ResultStore, damaged: list[Damage]) -> set[str]:
    """The runs that ``damaged`` leaves incomplete: those with a damaged file of their own, and
    those read from a damaged part."""
    parts = {d.name for d in damaged if _is_part(store, d)}
    from_parts = {run_id for run_id, part in store.part_runs().items() if part in parts}
    return {d.name for d in damaged if not _is_part(store, d)} | from_parts


def usable_statuses(store: ResultStore) -> dict[str, str]:
    """``store.statuses()`` less every run with a damaged record or artifact."""
    damaged = damaged_runs(store, find_damaged(store))
    return {run_id: s for run_id, s in store.statuses().items() if run_id not in damaged}


def repair(store: ResultStore, damaged: list[Damage]) -> list[tuple[Path, Path]]:
    """Move every file of each damaged run (or compacted part) into
    ``<results>/corrupt/<folder>/``; returns the ``(from, to)`` moves. A name already taken
    there gets a numeric suffix (never overwritten)."""
    moves = []
    for folders, names in (([store.runs_dir, *artifact_dirs(store)],
                            {d.name for d in damaged if not _is_part(store, d)}),
                           (part_dirs(store), {d.name for d in damaged if _is_part(store, d)})):
        moves += _move_aside(store, folders, names)
    return moves


def _move_aside(store: ResultStore, folders: list[Path], names: set[str]
                ) -> list[tuple[Path, Path]]:
    moves = []
    for folder in folders:
        for name in sorted(names):
            source = folder / f"{name}.parquet"
            if not source.exists():
                continue
            target_dir = store.root / CORRUPT_DIR / folder.relative_to(store.root)
            target_dir.mkdir(parents=True, exist_ok=True)
            target, n = target_dir / source.name, 1
            while target.exists():
                target, n = target_dir / f"{source.name}.{n}", n + 1
            os.replace(source, target)
            moves.append((source, target))
    return moves


def check_free_space(folder: Path, min_free_gb: float) -> None:
    """:class:`BadInput` if the file system of ``folder`` (or of its nearest existing
    ancestor, when it is still to be created) has less than ``min_free_gb`` GB (10^9 bytes)
    free."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < min_free_gb * 1e9:
        raise BadInput(f"results folder {folder} has {free / 1e9:.2f} GB free, less than "
                       f"--min-free-gb {min_free_gb:g}: free some space or lower the threshold")
