"""``ltbench compact``: a store's per-run files merged into a few partitioned files, safely.

A leaderboard store holds thousands of small files per folder (one record, one curves file, one
evals file ... per run); a reader without a warm cache (a fresh clone, a colleague, DuckDB)
opens every one. :func:`compact` merges the published per-run files into *parts*, one per
dataset and at most :data:`PART_RUNS` runs each (so a damaged part costs a bounded number of
runs), under ``<results>/compacted/``::

    compacted/runs/<part>.parquet     the part's records (the record schema), its commit point
    compacted/<name>/<part>.parquet   those runs' artifact <name>: ``run_id`` first, one row
                                      group per run, the run ids in row-group order in the
                                      schema metadata (``ltbench.part_run_ids``)

and then removes the per-run files it merged. Every reader reads both forms, by the rules of
:mod:`ltbench.store.result_store` (a run's own file, where there is one, wins over a part).
Part names start with the UTC time of the compaction, so they sort oldest first.

Why writers may keep running during a compaction:

* writers never touch ``compacted/``; compaction never writes a per-run folder: it reads the
  per-run files and, at the end, removes some;
* a part is published like a run: its artifact parts first, its record part last, each
  atomically (:mod:`ltbench.store.atomicfile`); until the record part exists its artifact parts
  count for nothing, and every per-run file is still in place;
* a per-run file is removed only while it is still the file that was merged: it is renamed to a
  hidden name (which no reader opens) and its stamp (size, modification time, inode) compared
  with the one merged; a file published again meanwhile (a run trained again) is linked back
  under its name, which never replaces a file published later still;
* a run's artifact files are removed only when its record file was, so a run trained again, or
  one whose optional artifacts (evals, model) arrive after its record, keeps its own files,
  which readers prefer to the part;
* a run with a damaged file is left as it is, with all its files, for ``ltbench status`` to
  report and repair.

Two compactions at once merge the same runs twice; readers take the newer part, which holds the
same rows. This module must not import torch.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .atomicfile import atomic_write
from .integrity import artifact_dirs, damaged_runs, find_damaged
from .read_cache import STAMP_COLUMNS, Stamp, final_files
from .result_store import PART_RUN_IDS_KEY, RECORD_SCHEMA, DamagedFile, ResultStore

#: The most runs one part holds.
PART_RUNS = 1000


@dataclass
class Compaction:
    """What :func:`compact` did: the parts it published, the runs they hold, the per-run files
    it removed, and the runs it left as they were (damaged, or published again meanwhile)."""

    parts: list[str] = field(default_factory=list)
    runs: int = 0
    files_removed: int = 0
    runs_left: list[str] = field(default_factory=list)


def _part_names(count: int) -> list[str]:
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    token = secrets.token_hex(4)
    return [f"{now}-{token}-{index:04d}" for index in range(count)]


def _artifact_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """The union of the artifact files' ``schemas``, after a leading ``run_id``."""
    union = pa.unify_schemas(schemas, promote_options="permissive")
    return pa.schema([pa.field("run_id", pa.string())]
                     + [f for f in union if f.name != "run_id"])


def _as_part_rows(table: pa.Table, run_id: str, schema: pa.Schema) -> pa.Table:
    """``table`` (one run's artifact) in the part's ``schema``: its ``run_id``, absent columns
    null."""
    rows = table.num_rows
    columns = [pa.array([run_id] * rows, pa.string())] + [
        table.column(f.name).cast(f.type) if f.name in table.column_names
        else pa.nulls(rows, f.type) for f in list(schema)[1:]]
    return pa.Table.from_arrays(columns, schema=schema)


def _write_artifact_part(store: ResultStore, folder: Path, part: str, run_ids: list[str],
                         stamps: dict[str, Stamp]) -> dict[str, Stamp]:
    """Artifact part ``part`` of ``folder`` for those of ``run_ids`` that have a file there;
    returns the stamps of the files merged, by run id. A run whose file cannot be read leaves
    an empty row group and is left out of the returned stamps."""
    schemas = {}
    for run_id in run_ids:
        if f"{run_id}.parquet" not in stamps:
            continue
        try:
            schemas[run_id] = pq.read_schema(folder / f"{run_id}.parquet").remove_metadata()
        except (OSError, pa.ArrowException):  # gone or damaged since the scan: left as it is
            continue
    if not schemas:
        return {}
    readable = list(schemas)
    schema = _artifact_schema(list(schemas.values()))
    schema = schema.with_metadata({PART_RUN_IDS_KEY: json.dumps(readable).encode()})
    merged = {}
    target = store.compacted_dir / folder.name / f"{part}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as handle, pq.ParquetWriter(
            handle, schema, write_page_checksum=True, write_statistics=["run_id"]) as writer:
        for run_id in readable:
            try:
                table = store.read_artifact_file(folder.name, folder / f"{run_id}.parquet")
                rows = _as_part_rows(table, run_id, schema)
                merged[run_id] = stamps[f"{run_id}.parquet"]
            except (FileNotFoundError, DamagedFile, pa.ArrowException):
                rows = schema.empty_table()  # keeps row groups and run ids aligned
            writer.write_table(rows, row_group_size=max(rows.num_rows, 1))
    return merged


def _remove_if_unchanged(path: Path, stamp: Stamp) -> bool:
    """Remove ``path`` if it is still the file with ``stamp``; whether it was removed."""
    aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}.compacting")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    info = os.stat(aside)
    if (info.st_size, info.st_mtime_ns, info.st_ino) == stamp:
        os.unlink(aside)
        return True
    try:  # published again since it was merged: put it back, unless a later one is there
        os.link(aside, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        if not path.exists():
            os.rename(aside, path)
            return False
    aside.unlink(missing_ok=True)
    return False


def compact(store: ResultStore, progress: Callable[[str], None] = lambda line: None
            ) -> Compaction:
    """Merge the store's published per-run files into parts and remove them (module doc);
    ``progress`` gets a line per part."""
    done = Compaction()
    left_alone = damaged_runs(store, find_damaged(store))
    rows = store.record_rows()
    own = rows.filter(pc.starts_with(rows.column("file_name"), "runs/"))
    stamp_of = dict(zip(own.column("run_id").to_pylist(),
                        zip(*(own.column(c).to_pylist() for c in STAMP_COLUMNS))))
    done.runs_left = sorted(left_alone & set(stamp_of))
    own = own.filter(pc.invert(pc.is_in(own.column("run_id"),
                                        value_set=pa.array(done.runs_left, pa.string()))))
    chunks = []
    for dataset in sorted(set(own.column("dataset").to_pylist())):
        run_ids = sorted(own.filter(pc.equal(own.column("dataset"), dataset))
                         .column("run_id").to_pylist())
        chunks += [(dataset, run_ids[i:i + PART_RUNS]) for i in range(0, len(run_ids), PART_RUNS)]
    folders = artifact_dirs(store)
    for part, (dataset, run_ids) in zip(_part_names(len(chunks)), chunks):
        merged = {folder: _write_artifact_part(store, folder, part, run_ids, final_files(folder))
                  for folder in folders}
        records = own.filter(pc.is_in(own.column("run_id"), value_set=pa.array(run_ids)))
        records = records.select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA)
        target = store.compacted_dir / "runs" / f"{part}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as handle:
            pq.write_table(records, handle, write_page_checksum=True)
        done.parts.append(part)
        done.runs += len(run_ids)
        for run_id in run_ids:
            if not _remove_if_unchanged(store.runs_dir / f"{run_id}.parquet", stamp_of[run_id]):
                done.runs_left.append(run_id)
                continue
            done.files_removed += 1
            for folder, stamps in merged.items():
                if run_id in stamps and _remove_if_unchanged(folder / f"{run_id}.parquet",
                                                             stamps[run_id]):
                    done.files_removed += 1
        progress(f"part {part}: {len(run_ids)} runs of {dataset}")
    return done
