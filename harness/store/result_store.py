"""The results store: one parquet file per finished run, published atomically.

Layout under the store root::

    runs/<run_id>.parquet      one row, schema :data:`RECORD_SCHEMA` (the result record)
    curves/<run_id>.parquet    per-epoch curves of that run (:data:`CURVE_COLUMNS`, and any others)
    <name>/<run_id>.parquet    other per-run artifacts a method produces (free-form columns)
    evals/<run_id>.parquet     its accuracies on the shifted test sets
                               (:mod:`ltbench.metrics.shifted`)
    models/<run_id>.pt         the final model of a stage-1 run (a torch ``state_dict``,
                               verified before use: :mod:`ltbench.store.torchfiles`)
    compacted/runs/<part>.parquet    the records of many runs, merged by ``ltbench compact``
    compacted/<name>/<part>.parquet  their artifact ``name``, one row group per run, run_id first

A run exists only once its record file exists (architecture.md §8 pitfall 1: DomainBed's
``load_records`` counted partial runs). Every file is written by
:func:`ltbench.store.atomicfile.atomic_write` (a fresh hidden name in the same folder, fsynced,
moved into place with ``os.replace``), so a reader never sees a partial parquet file (pitfall 20:
parquet-mr #446, arrow-rs #1717, polars #17358, SPARK-8406), and readers only ever open final
``<run_id>.parquet`` names. Artifacts (curves included) are published before the record: the
record's appearance is the commit point, and artifacts whose record is missing are treated as
absent. A run's optional artifacts (its ``evals``, its model) are published after its record, so
a failure producing them never loses the trained run; the record's ``artifact_error`` then says
what is missing (:mod:`ltbench.run.runner`).

Every parquet file is written with page checksums (CRC-32 of each page) and read verifying
them, so a flipped bit in a value is an error rather than another number; files written before
carry none and read unverified. A file that cannot be trusted all the same is *damaged*
(:class:`DamagedFile`): unreadable (truncated or damaged by a crash, a full disk, a bad copy),
failing its checksums, a record that is not one row of :data:`RECORD_SCHEMA` named after its
``run_id`` (a foreign file, a copy under another name), curves without :data:`CURVE_COLUMNS`.
Every reader skips a damaged file, as if the run were missing, so it is re-run; it is found,
reported and moved aside by :mod:`ltbench.store.integrity` (``ltbench status [--repair]``).

A compacted part (:mod:`ltbench.store.compaction`) is published like a run: its artifact files
first, its record file last, and an artifact part counts only for the runs of the record part
of the same name. Every reader reads both forms, and a run found in both is read from its own
record file (published after the part: a run trained again), else from the newest part holding
it; its artifacts come from its own files where they exist, else from the part its record
came from.

The store schema version and the shot-group thresholds live in the parquet schema metadata, as
in benchopt/benchopt : benchopt/results/parquet.py. This module must not import torch: the
CLI's ``status`` and ``report`` commands read the store and must start fast.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import BadInput
from ..metrics.headline import FEW_THRESHOLD, MANY_THRESHOLD
from . import torchfiles
from .atomicfile import atomic_write
from .read_cache import STAMP_COLUMNS, ReadCache, Stamp, final_files, stamp_columns, with_stamps

STORE_SCHEMA_VERSION = "1"
_VERSION_KEY = b"ltbench.store_schema_version"

#: Values of the ``status`` column.
STATUSES = ("ok", "failed", "diverged")

_UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

#: The result-record contract. Non-nullable fields are known for every run, failed or not;
#: metric columns of a failed run hold NaN (float) or null (integer, list).
RECORD_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("method", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("imb_factor", pa.float64(), nullable=False),
        pa.field("profile", pa.string(), nullable=False),
        pa.field("split_seed", pa.int64(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("epochs", pa.int64(), nullable=False),
        pa.field("hparams", pa.string(), nullable=False),
        pa.field("harness_version", pa.string(), nullable=False),
        pa.field("top1_acc", pa.float64()),
        pa.field("top1_err", pa.float64()),
        pa.field("top1_err_best_epoch", pa.float64()),
        pa.field("best_epoch", pa.int64()),
        # The reference codes (kaidic/LDAM-DRW : cifar_train.py) pick the best epoch on the
        # test set; the column says so, and reports never show those numbers as results.
        pa.field("best_epoch_selected_on", pa.string()),
        pa.field("many_acc", pa.float64()),
        pa.field("medium_acc", pa.float64()),
        pa.field("few_acc", pa.float64()),
        pa.field("n_many", pa.int64()),
        pa.field("n_medium", pa.int64()),
        pa.field("n_few", pa.int64()),
        pa.field("per_class_acc", pa.list_(pa.float64())),
        pa.field("train_class_counts", pa.list_(pa.int64())),
        pa.field("wall_s", pa.float64()),
        pa.field("device", pa.string()),
        pa.field("torch_version", pa.string()),
        pa.field("git_commit", pa.string()),
        pa.field("started_utc", _UTC_TIMESTAMP, nullable=False),
        pa.field("finished_utc", _UTC_TIMESTAMP, nullable=False),
        # How the reported model was chosen (protocols.md §1.3): "last" epoch, plus what was
        # selected on the validation split (e.g. "last,tau=val"); never the test set.
        pa.field("selection_rule", pa.string()),
        # The run whose final model a two-stage method started from.
        pa.field("stage1_run_id", pa.string()),
        # How the run computed (ltbench.engine.steps.Numerics): "bf16" = training and test
        # forwards under bf16 autocast (pooled features, head and loss in fp32), "fp32" = IEEE
        # fp32 throughout; the activations' memory format; deterministic CUDA kernels. Null
        # in records written before these columns existed.
        pa.field("precision", pa.string()),
        pa.field("memory_format", pa.string()),
        pa.field("deterministic", pa.bool_()),
        # Why an optional artifact of a published run (its shifted-test evals, its final
        # model) is missing; null when every artifact was stored. Never fails the run.
        pa.field("artifact_error", pa.string()),
        # How many runs trained together in its pack; ``wall_s`` is the pack's time, so the
        # run's share of the device is wall_s / pack_size. Null in records written before.
        pa.field("pack_size", pa.int64()),
        # The method's family (ltbench.families), which orders report rows without loading
        # the plugin. Null in records written before, and for a method that names none.
        pa.field("method_family", pa.string()),
        # The torch.compile mode of the network's forward (ltbench run --compile); null for
        # eager runs and in records written before the column existed.
        pa.field("compile_mode", pa.string()),
        # Expected calibration error (%) of the final test predictions, 15 equal-width bins
        # (ltbench.metrics.calibration); NaN for failed runs, null in records written before.
        pa.field("ece", pa.float64()),
    ],
    metadata={
        _VERSION_KEY: STORE_SCHEMA_VERSION.encode(),
        b"ltbench.many_threshold": str(MANY_THRESHOLD).encode(),
        b"ltbench.few_threshold": str(FEW_THRESHOLD).encode(),
    },
)

#: Columns added after the first store version: their values in records written without them.
ADDED_COLUMNS = {"selection_rule": "last", "stage1_run_id": None, "artifact_error": None,
                 "precision": None, "memory_format": None, "deterministic": None,
                 "pack_size": None, "method_family": None,
                 "compile_mode": None, "ece": None}

#: The per-epoch curve columns the engine writes (:mod:`ltbench.engine.train`) and readers use.
CURVE_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_acc", "train_s", "eval_s")

#: The folder of compacted parts (:mod:`ltbench.store.compaction`), inside the store root.
COMPACTED_DIR = "compacted"
#: The schema-metadata key of an artifact part: its run ids (JSON), one per row group, in order.
PART_RUN_IDS_KEY = b"ltbench.part_run_ids"

_SORT_KEYS = ["dataset", "method", "imb_factor", "seed", "run_id"]
# Run ids become file names: no separators, no leading dot (hidden names are temp files).
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_ARTIFACT_NAME = re.compile(r"[a-z][a-z0-9_]*")


class DamagedFile(Exception):
    """A store file that cannot be trusted (see the module doc); the message says why."""


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    # Nullable Int64 keeps integer columns integer when a failed run leaves them null.
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def _record_table(record: Mapping[str, Any]) -> pa.Table:
    """``record`` as a one-row :data:`RECORD_SCHEMA` table; ``ValueError`` if it does not fit.
    Columns of :data:`ADDED_COLUMNS` may be left out and take their default."""
    record = {**ADDED_COLUMNS, **record}
    missing = [name for name in RECORD_SCHEMA.names if name not in record]
    unknown = sorted(set(record) - set(RECORD_SCHEMA.names))
    if missing or unknown:
        raise ValueError(f"result record does not match the store schema: "
                         f"missing columns {missing}, unknown columns {unknown}")
    if record["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {record['status']!r}")
    if not isinstance(record["run_id"], str) or not _SAFE_RUN_ID.fullmatch(record["run_id"]):
        raise ValueError(f"run_id {record['run_id']!r} is not a safe file name")
    try:
        hparams = json.loads(record["hparams"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column hparams must be JSON text: {exc}") from exc
    if not isinstance(hparams, dict):
        raise ValueError("column hparams must encode a JSON object")
    columns = []
    for field in RECORD_SCHEMA:
        value = record[field.name]
        if pa.types.is_integer(field.type) and isinstance(value, float) and math.isnan(value):
            value = None
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError(f"column {field.name}: timestamps must be timezone-aware (UTC)")
        if value is None and not field.nullable:
            raise ValueError(f"column {field.name} may not be null")
        try:
            columns.append(pa.array([value], type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise ValueError(f"column {field.name}: {exc}") from exc
    return pa.Table.from_arrays(columns, schema=RECORD_SCHEMA)


def _check_artifact_name(name: str) -> None:
    if name == "runs" or not _ARTIFACT_NAME.fullmatch(name):
        raise ValueError(f"artifact name {name!r} is not allowed")


def _with_added_columns(table: pa.Table) -> pa.Table:
    """``table`` with every missing :data:`ADDED_COLUMNS` column filled with its default."""
    for name, default in ADDED_COLUMNS.items():
        if name not in table.column_names:
            field = RECORD_SCHEMA.field(name)
            table = table.append_column(field, pa.array([default] * table.num_rows,
                                                        type=field.type))
    return table


def _publish(table: pa.Table, final: Path) -> None:
    """Write ``table`` to ``final`` so that readers see either nothing or the whole file."""
    with atomic_write(final) as handle:
        pq.write_table(table, handle, write_page_checksum=True)


def _read_verified(path: Path, columns: list[str] | None = None,
                   check_schema: Callable[[Path, pa.Schema, int], str | None] | None = None
                   ) -> pa.Table:
    """``columns`` (None: all) of parquet file ``path``, its page checksums verified, once
    ``check_schema(path, schema, rows)`` found nothing wrong with the file's schema and row
    count.

    :class:`DamagedFile` when the file is unreadable, fails a checksum or its check;
    ``FileNotFoundError`` when it is gone (e.g. removed by a concurrent clean or repair).
    """
    try:
        with pq.ParquetFile(path, page_checksum_verification=True) as file:
            problem = None if check_schema is None else \
                check_schema(path, file.schema_arrow, file.metadata.num_rows)
            if problem is not None:
                raise DamagedFile(problem)
            return file.read(columns=columns)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:  # a damaged name: UnicodeError
        lines = str(exc).splitlines()
        raise DamagedFile(f"{type(exc).__name__}: {lines[0] if lines else ''}") from exc


def _record_schema_problem(path: Path, schema: pa.Schema, rows: int) -> str | None:
    """What makes file ``path`` with ``schema`` and ``rows`` rows no record of this store, or
    None.

    Columns of :data:`ADDED_COLUMNS` may be missing and any other column may follow (a later
    version's); :class:`BadInput` for a record of another store schema version, which is not
    damaged but must not be mixed in.
    """
    problem = _records_schema_problem(path, schema)
    return problem or (None if rows == 1 else f"{rows} rows, not one")


def _part_schema_problem(path: Path, schema: pa.Schema, rows: int) -> str | None:
    """As :func:`_record_schema_problem`, for a compacted record part: any number of rows."""
    return _records_schema_problem(path, schema) or (None if rows else "no rows")


def _records_schema_problem(path: Path, schema: pa.Schema) -> str | None:
    metadata = schema.metadata or {}
    if _VERSION_KEY not in metadata:
        return "not an ltbench record (no store schema version in its metadata)"
    version = metadata[_VERSION_KEY].decode(errors="replace")
    if version != STORE_SCHEMA_VERSION:
        raise BadInput(f"{path} has store schema version {version}; this ltbench reads "
                       f"version {STORE_SCHEMA_VERSION} (re-run or move the old results)")
    for field in RECORD_SCHEMA:
        if field.name not in schema.names:
            if field.name not in ADDED_COLUMNS:
                return f"column {field.name} is missing"
        elif schema.field(field.name).type != field.type:
            return f"column {field.name} is {schema.field(field.name).type}, not {field.type}"
    # An older record lacks columns added since, a later one has columns added since, never
    # both: that is a column name damaged in the footer (parquet does not checksum it).
    unknown = [name for name in schema.names if name not in RECORD_SCHEMA.names]
    absent = [name for name in ADDED_COLUMNS if name not in schema.names]
    if unknown and absent:
        return f"column(s) {', '.join(unknown)} instead of {', '.join(absent)}"
    return None


def _curves_schema_problem(path: Path, schema: pa.Schema, rows: int) -> str | None:
    missing = [name for name in CURVE_COLUMNS if name not in schema.names]
    return f"curves without column(s) {', '.join(missing)}" if missing else None


def _one_record_per_run(table: pa.Table) -> pa.Table:
    """The rows of ``table`` (records with their ``file_name`` under the store root) that a
    reader reads: a run's own record file, else the newest compacted part holding it (part
    names sort by creation time)."""
    names = table.column("file_name").to_pylist()
    if all(name.startswith("runs/") for name in names):
        return table
    order = sorted(range(len(names)), key=names.__getitem__, reverse=True)
    order.sort(key=lambda i: names[i].startswith(COMPACTED_DIR))
    row_of_run: dict[str, int] = {}
    for i, run_id in zip(order, table.column("run_id").take(pa.array(order)).to_pylist()):
        row_of_run.setdefault(run_id, i)
    return table.take(pa.array(sorted(row_of_run.values()), pa.int64()))


class ResultStore:
    """The results folder: publishes run records and curves, and reads them back."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.curves_dir = self.root / "curves"
        self.compacted_dir = self.root / COMPACTED_DIR
        # A part is never changed once published: its index holds while its stamp does.
        self._part_indexes: dict[tuple[str, Stamp], dict[str, tuple[str, datetime]]] = {}
        self._index_of_parts: tuple[list, dict[str, tuple[str, str, datetime]]] = ([], {})

    def ensure_writable(self) -> None:
        """Create ``runs/`` and ``curves/`` and prove a file can be written in each.

        Raises :class:`~ltbench.errors.BadInput` with a one-line message otherwise, so that a
        bad ``--results`` folder fails before any training starts.
        """
        for folder in (self.root, self.runs_dir, self.curves_dir):
            if folder.exists() and not folder.is_dir():
                raise BadInput(f"results folder {folder} is a file")
        for folder in (self.runs_dir, self.curves_dir):
            probe = folder / f".probe-{os.getpid()}-{uuid.uuid4().hex}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise BadInput(f"results folder {folder} is not writable: {reason}") from exc

    def write(self, record: Mapping[str, Any],
              artifacts: Mapping[str, pd.DataFrame] | None = None) -> Path:
        """Publish one run: its artifacts first (e.g. ``{"curves": frame}``), then its record.

        Each artifact goes to ``<root>/<name>/<run_id>.parquet``. Returns the record path.
        ``record`` must have exactly the :data:`RECORD_SCHEMA` columns and artifact names must
        be plain lower-case names other than ``runs`` (``ValueError`` otherwise, before anything
        is written).
        """
        table = _record_table(record)
        artifacts = dict(artifacts or {})
        for name in artifacts:
            _check_artifact_name(name)
        run_id = record["run_id"]
        for name, frame in artifacts.items():
            self.write_artifact(name, run_id, frame)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        final = self.runs_dir / f"{run_id}.parquet"
        _publish(table, final)
        return final

    def write_artifact(self, name: str, run_id: str, frame: pd.DataFrame) -> Path:
        """Publish one artifact of run ``run_id`` as ``<root>/<name>/<run_id>.parquet``,
        atomically (names as for :meth:`write`); returns its path."""
        _check_artifact_name(name)
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{run_id}.parquet"
        _publish(pa.Table.from_pandas(frame, preserve_index=False), final)
        return final

    def read_record_file(self, path: Path, columns: list[str] | None = None) -> pa.Table:
        """``columns`` (None: all) of the record file ``path``; :class:`DamagedFile` if it is
        damaged (module doc), ``FileNotFoundError`` if it is gone."""
        columns = None if columns is None else ["run_id", *(c for c in columns if c != "run_id")]
        table = _read_verified(path, columns, _record_schema_problem)
        run_id = table.column("run_id")[0].as_py()
        if f"{run_id}.parquet" != path.name:
            raise DamagedFile(f"its run_id is {run_id!r}, not its file name")
        return table

    def read_part_file(self, path: Path, columns: list[str] | None = None) -> pa.Table:
        """``columns`` (None: all) of the compacted record part ``path``; :class:`DamagedFile`
        if it is damaged (as a record file, or a run id repeated), ``FileNotFoundError`` if it
        is gone."""
        columns = None if columns is None else ["run_id", *(c for c in columns if c != "run_id")]
        table = _read_verified(path, columns, _part_schema_problem)
        if len(pc.unique(table.column("run_id"))) != table.num_rows:
            raise DamagedFile("a run id appears twice")
        return table

    def read_artifact_file(self, name: str, path: Path) -> pa.Table:
        """The artifact file (or compacted artifact part) ``path`` of artifact ``name``;
        :class:`DamagedFile` if it is damaged (module doc), ``FileNotFoundError`` if it is
        gone."""
        return _read_verified(path, check_schema=_curves_schema_problem if name == "curves"
                              else None)

    def _read_file(self, path: Path, columns: list[str] | None) -> pa.Table | None:
        """The record table, or None if the file is gone or damaged (see the module doc)."""
        try:
            return self.read_record_file(path, columns)
        except (FileNotFoundError, DamagedFile):
            return None

    def _record_stamps(self) -> dict[str, Stamp]:
        """The stamp of every final record file and record part, by path under the root."""
        return {**{f"runs/{name}": stamp for name, stamp in final_files(self.runs_dir).items()},
                **{f"{COMPACTED_DIR}/runs/{name}": stamp for name, stamp
                   in final_files(self.compacted_dir / "runs").items()}}

    def _part_index(self) -> dict[str, tuple[str, str, datetime]]:
        """``run_id -> (part, status, finished_utc)`` of every run whose record is in a
        compacted part, from the newest part holding it; damaged parts left out."""
        files = sorted(final_files(self.compacted_dir / "runs").items())
        if files == self._index_of_parts[0]:
            return self._index_of_parts[1]
        index: dict[str, tuple[str, str, datetime]] = {}
        for file, stamp in files:
            key = (file, stamp)
            if key not in self._part_indexes:
                try:
                    table = self.read_part_file(self.compacted_dir / "runs" / file,
                                                ["status", "finished_utc"])
                except (FileNotFoundError, DamagedFile):  # reported by ltbench status
                    continue
                self._part_indexes[key] = {
                    run_id: (status, finished) for run_id, status, finished
                    in zip(*(table.column(c).to_pylist()
                             for c in ("run_id", "status", "finished_utc")))}
            part = file[:-len(".parquet")]
            index.update({run_id: (part, *entry)
                          for run_id, entry in self._part_indexes[key].items()})
        self._index_of_parts = (files, index)
        return index

    def part_of(self, run_id: str) -> str | None:
        """The compacted part run ``run_id``'s record is read from, or None: it has its own
        record file, or it is not published."""
        if (self.runs_dir / f"{run_id}.parquet").exists():
            return None
        entry = self._part_index().get(run_id)
        return None if entry is None else entry[0]

    def part_runs(self) -> dict[str, str]:
        """``run_id -> part`` of every run whose record is read from a compacted part."""
        own = final_files(self.runs_dir)
        return {run_id: entry[0] for run_id, entry in self._part_index().items()
                if f"{run_id}.parquet" not in own}

    def _published(self, run_id: str) -> bool:
        return (self.runs_dir / f"{run_id}.parquet").exists() or self.part_of(run_id) is not None

    def read(self) -> pd.DataFrame:
        """All published records, one row per run, sorted by (dataset, method, imb_factor, seed).

        Columns and dtypes follow :data:`RECORD_SCHEMA` even when the store is empty: integer
        columns are pandas ``Int64`` (null stays ``<NA>``), list columns hold numpy arrays,
        timestamps are ``datetime64[us, UTC]``. Record files unchanged since the last read
        come from the reader's cache (:mod:`ltbench.store.read_cache`), the others are read
        and verified. A run in a compacted part and in its own file is read from its file (the
        module doc).
        """
        frame = _to_pandas(_one_record_per_run(self.record_rows()).select(RECORD_SCHEMA.names))
        return frame.sort_values(_SORT_KEYS, kind="stable").reset_index(drop=True)

    def record_rows(self) -> pa.Table:
        """Every intact record file's and record part's rows (:data:`RECORD_SCHEMA`, then
        ``file_name``, the file's path under the root, and its stamp: :func:`with_stamps`); a
        run in several of them appears once per file. :meth:`read` is what readers want."""
        stamps = self._record_stamps()
        cache = ReadCache(self.root)
        cached = cache.records(RECORD_SCHEMA)
        kept = with_stamps(RECORD_SCHEMA).empty_table()
        if cached is not None:
            names = cached.column("file_name").to_pylist()
            cached_stamps = zip(*(cached.column(c).to_pylist() for c in STAMP_COLUMNS))
            kept = cached.take(pa.array([i for i, (name, stamp)
                                         in enumerate(zip(names, cached_stamps))
                                         if stamps.get(name) == stamp], pa.int64()))
        known = set(kept.column("file_name").to_pylist())
        fresh, fresh_names = [], []
        for name in sorted(set(stamps) - known):
            try:
                table = (self.read_record_file if name.startswith("runs/")
                         else self.read_part_file)(self.root / name)
            except (FileNotFoundError, DamagedFile):  # damaged: reported by ltbench status
                continue
            fresh.append(_with_added_columns(table).select(RECORD_SCHEMA.names)
                         .cast(RECORD_SCHEMA))
            fresh_names += [name] * table.num_rows
        table = kept
        if fresh:
            new = pa.concat_tables(fresh)
            for field, column in zip(list(with_stamps(RECORD_SCHEMA))[len(RECORD_SCHEMA):],
                                     stamp_columns(fresh_names,
                                                   [stamps[n] for n in fresh_names])):
                new = new.append_column(field, column)
            table = pa.concat_tables([kept, new])
        if fresh or cached is None or len(kept) < len(cached):
            cache.save_records(table)
        return table

    def statuses(self) -> dict[str, str]:
        """``run_id -> status`` of every published run."""
        records = self.read()
        return dict(zip(records["run_id"], records["status"]))

    def status(self, run_id: str) -> str | None:
        """The status of run ``run_id``, or None when it is not published."""
        table = self._read_file(self.runs_dir / f"{run_id}.parquet", ["status"])
        if table is not None:
            return table.column("status")[0].as_py()
        entry = self._part_index().get(run_id)
        return None if entry is None else entry[1]

    def artifact(self, name: str, run_id: str) -> pd.DataFrame | None:
        """Artifact ``name`` of a published run, or None (no such artifact, or run unpublished).
        Read from a compacted part, it starts with a ``run_id`` column."""
        path = self.root / name / f"{run_id}.parquet"
        part = self.part_of(run_id)
        if part is None and not (self.runs_dir / f"{run_id}.parquet").exists():
            return None
        try:
            if path.exists():
                table = self.read_artifact_file(name, path)
            elif part is not None:
                table = self._part_artifact(name, part, run_id)
            else:
                return None
        except (FileNotFoundError, DamagedFile):  # damaged: reported by ltbench status
            return None
        # Artifacts are plain columns: the pandas metadata (JSON in the footer, which parquet
        # does not checksum) adds nothing, and a damaged one would fail or rename columns.
        return table.replace_schema_metadata(None).to_pandas()

    def published_since(self, run_id: str, timestamp: float) -> bool:
        """Whether the record of ``run_id`` was published at or after ``timestamp`` (seconds
        since the epoch, as ``time.time()``): by another process, when this one is about to
        train it. A run compacted since counts from its ``finished_utc``."""
        try:
            return (self.runs_dir / f"{run_id}.parquet").stat().st_mtime >= timestamp
        except FileNotFoundError:
            entry = self._part_index().get(run_id)
            return entry is not None and entry[2].timestamp() >= timestamp

    def _part_artifact(self, name: str, part: str, run_id: str) -> pa.Table:
        """The rows of run ``run_id`` in part ``part`` of artifact ``name``: its row group.
        :class:`DamagedFile` if the part is damaged, ``FileNotFoundError`` if it is absent
        (the run had no such artifact)."""
        path = self.compacted_dir / name / f"{part}.parquet"
        try:
            with pq.ParquetFile(path, page_checksum_verification=True) as file:
                run_ids = json.loads((file.schema_arrow.metadata or {})[PART_RUN_IDS_KEY])
                if run_id not in run_ids:
                    raise FileNotFoundError(path)
                table = file.read_row_group(run_ids.index(run_id))
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            raise DamagedFile(f"{type(exc).__name__}: {exc}") from exc
        if table.column("run_id").to_pylist() != [run_id] * table.num_rows:
            raise DamagedFile(f"{path}: its row groups do not match its run ids")
        return table

    def artifact_table(self, name: str, run_ids: Sequence[str]) -> pd.DataFrame:
        """Artifact ``name`` of those of the published runs ``run_ids`` that have one (an
        intact one), in one frame: ``run_id`` first, then the union of the files' columns
        (missing values null). Files unchanged since an earlier call come from the read cache
        (:mod:`ltbench.store.read_cache`), the others are read and verified."""
        _check_artifact_name(name)
        folder = self.root / name
        own = final_files(folder)
        parts = {f"{COMPACTED_DIR}/{file}": stamp
                 for file, stamp in final_files(self.compacted_dir / name).items()}
        stamps = {**own, **parts}
        cache = ReadCache(self.root)
        cached = cache.artifact(name)
        kept = None
        known: set[str] = set()
        if cached is not None:  # an artifact has many rows per file: compare once per file
            files = cached.group_by("file_name").aggregate(
                [(column, "min") for column in STAMP_COLUMNS]).to_pydict()
            known = {name for name, *stamp in zip(files["file_name"],
                                                  *(files[f"{c}_min"] for c in STAMP_COLUMNS))
                     if stamps.get(name) == tuple(stamp)}
            kept = cached.filter(pc.is_in(cached.column("file_name"),
                                          value_set=pa.array(sorted(known), pa.string())))
        source = self._artifact_sources(own, parts, run_ids)
        fresh = []
        for file in dict.fromkeys(source.values()):
            if file in known:
                continue
            path = (self.compacted_dir / name / file[len(COMPACTED_DIR) + 1:] if file in parts
                    else folder / file)
            try:
                table = self.read_artifact_file(name, path).replace_schema_metadata(None)
            except (FileNotFoundError, DamagedFile):  # damaged: reported by ltbench status
                continue
            rows = table.num_rows
            if file in own:  # a part has its run_id column; a run's own file may not
                if "run_id" in table.column_names:
                    table = table.drop_columns(["run_id"])
                table = table.append_column("run_id", pa.array([file[:-len(".parquet")]] * rows,
                                                               pa.string()))
            table = table.append_column("file_name", pa.array([file] * rows, pa.string()))
            for i, column_name in enumerate(STAMP_COLUMNS):
                table = table.append_column(column_name,
                                            pa.array([stamps[file][i]] * rows, pa.int64()))
            fresh.append(table)
        parts = ([] if kept is None else [kept]) + fresh
        if not parts:
            return pd.DataFrame({"run_id": pd.Series(dtype=object)})
        table = pa.concat_tables(parts, promote_options="permissive")
        if fresh or (cached is not None and len(kept) < len(cached)):
            cache.save_artifact(name, table)
        # each run's rows from the file its source names: a part may hold older copies
        keys = pc.binary_join_element_wise(table.column("run_id"), table.column("file_name"),
                                           "/")
        table = table.filter(pc.is_in(keys, value_set=pa.array(
            [f"{run_id}/{file}" for run_id, file in source.items()], pa.string())))
        columns = ["run_id"] + [c for c in table.column_names
                                if c not in ("run_id", "file_name", *STAMP_COLUMNS)]
        return table.select(columns).to_pandas()

    def _artifact_sources(self, own: dict[str, Stamp], parts: dict[str, Stamp],
                          run_ids: Sequence[str]) -> dict[str, str]:
        """``run_id -> file`` (under the artifact's folder) to read each of the published
        ``run_ids``' artifact from, given the artifact's own files and parts: its own file,
        else the part its record is read from (module doc); runs without either left out."""
        published = final_files(self.runs_dir)
        part_of = self.part_runs() if self.compacted_dir.is_dir() else {}
        source = {}
        for run_id in dict.fromkeys(run_ids):
            file = f"{run_id}.parquet"
            if file in own and (file in published or run_id in part_of):
                source[run_id] = file
            elif run_id in part_of and f"{COMPACTED_DIR}/{part_of[run_id]}.parquet" in parts:
                source[run_id] = f"{COMPACTED_DIR}/{part_of[run_id]}.parquet"
        return source

    def has_artifact(self, name: str) -> bool:
        """Whether the store holds a folder of artifact ``name`` (some run may have one)."""
        return (self.root / name).is_dir() or (self.compacted_dir / name).is_dir()

    def curves(self, run_id: str) -> pd.DataFrame | None:
        """The per-epoch curves of a published run, or None."""
        return self.artifact("curves", run_id)

    def model_path(self, run_id: str) -> Path:
        return self.root / "models" / f"{run_id}.pt"

    def save_model(self, run_id: str, model) -> Path:
        """Publish the final ``model``'s ``state_dict`` (moved to the CPU) as
        ``models/<run_id>.pt``, atomically; a run's model is published after its record, so
        :meth:`has_model` only counts once both are there."""
        import torch

        state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
        final = self.model_path(run_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(final) as handle:
            torch.save(state, handle)
        return final

    def has_model(self, run_id: str) -> bool:
        """Whether run ``run_id`` is published with its final model, intact (a damaged model
        file is as good as none: :mod:`ltbench.store.torchfiles`)."""
        try:
            return (self._published(run_id)
                    and torchfiles.damage(self.model_path(run_id)) is None)
        except FileNotFoundError:
            return False

    def load_model(self, run_id: str, model):
        """Load run ``run_id``'s saved ``state_dict`` into ``model`` (same architecture) and
        return it; the tensors are read onto the CPU. Raises
        :class:`~ltbench.store.torchfiles.DamagedTorchFile` for a damaged file."""
        model.load_state_dict(torchfiles.load(self.model_path(run_id)))
        return model
