"""The results store: one parquet file per finished run, published atomically.

Layout under the store root::

    runs/<run_id>.parquet      one row, schema :data:`RECORD_SCHEMA` (the result record)
    curves/<run_id>.parquet    per-epoch curves of that run (free-form columns)
    <name>/<run_id>.parquet    other per-run artifacts a method produces (free-form columns)
    evals/<run_id>.parquet     its accuracies on the shifted test sets (:mod:`ltbench.shifted`)
    models/<run_id>.pt         the final model of a stage-1 run (a torch ``state_dict``)

A run exists only once its record file exists (architecture.md §8 pitfall 1: DomainBed's
``load_records`` counted partial runs). Every file is written to a hidden temporary name in the
same folder, flushed, fsynced and moved into place with ``os.replace``, so a reader never sees a
partial parquet file (pitfall 20: parquet-mr #446, arrow-rs #1717, polars #17358, SPARK-8406),
and readers only ever open final ``<run_id>.parquet`` names. Artifacts (curves included) are
published before the record: the record's appearance is the commit point, and artifacts whose
record is missing are treated as absent. A run's optional artifacts (its ``evals``, its model)
are published after its record, so a failure producing them never loses the trained run; the
record's ``artifact_error`` then says what is missing (:mod:`ltbench.runner`).

A file that cannot be read all the same (truncated or damaged by a crash, a full disk, a bad
copy) is skipped by every reader, as if the run were missing, so it is re-run; it is found,
reported and moved aside by :mod:`ltbench.integrity` (``ltbench status [--repair]``).

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
from typing import Any, BinaryIO, Callable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import BadInput
from .evaluate import FEW_THRESHOLD, MANY_THRESHOLD

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
                 "pack_size": None}

_SORT_KEYS = ["dataset", "method", "imb_factor", "seed", "run_id"]
# Run ids become file names: no separators, no leading dot (hidden names are temp files).
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_ARTIFACT_NAME = re.compile(r"[a-z][a-z0-9_]*")


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


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable across a crash (POSIX: fsync the directory)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    _publish_with(lambda handle: pq.write_table(table, handle), final)


def _publish_with(write: Callable[[BinaryIO], None], final: Path) -> None:
    """Write ``final`` with ``write(handle)`` so that readers see nothing or the whole file."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)


class ResultStore:
    """The results folder: publishes run records and curves, and reads them back."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.curves_dir = self.root / "curves"

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

    def _record_files(self) -> list[Path]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(path for path in self.runs_dir.iterdir()
                      if path.name.endswith(".parquet") and not path.name.startswith("."))

    def _read_file(self, path: Path, columns: list[str] | None) -> pa.Table | None:
        """The record table, or None if the file is gone or damaged (see the module doc)."""
        try:
            table = pq.read_table(path, columns=columns)
        except FileNotFoundError:
            return None  # removed (e.g. by a concurrent clean) between listing and reading
        except (pa.ArrowException, OSError):
            return None
        version = (table.schema.metadata or {}).get(_VERSION_KEY, b"?").decode()
        if version != STORE_SCHEMA_VERSION:
            raise BadInput(f"{path} has store schema version {version}; this ltbench reads "
                           f"version {STORE_SCHEMA_VERSION} (re-run or move the old results)")
        return table

    def read(self) -> pd.DataFrame:
        """All published records, one row per run, sorted by (dataset, method, imb_factor, seed).

        Columns and dtypes follow :data:`RECORD_SCHEMA` even when the store is empty: integer
        columns are pandas ``Int64`` (null stays ``<NA>``), list columns hold numpy arrays,
        timestamps are ``datetime64[us, UTC]``.
        """
        tables = [table for path in self._record_files()
                  if (table := self._read_file(path, None)) is not None]
        if not tables:
            return _to_pandas(RECORD_SCHEMA.empty_table())
        tables = [_with_added_columns(table).select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA)
                  for table in tables]
        frame = _to_pandas(pa.concat_tables(tables))
        return frame.sort_values(_SORT_KEYS, kind="stable").reset_index(drop=True)

    def statuses(self) -> dict[str, str]:
        """``run_id -> status`` of every published run, reading only those two columns."""
        result = {}
        for path in self._record_files():
            table = self._read_file(path, ["run_id", "status"])
            if table is not None:
                result.update(zip(table.column("run_id").to_pylist(),
                                  table.column("status").to_pylist()))
        return result

    def status(self, run_id: str) -> str | None:
        """The status of run ``run_id``, or None when it is not published."""
        table = self._read_file(self.runs_dir / f"{run_id}.parquet", ["status"])
        return None if table is None else table.column("status")[0].as_py()

    def artifact(self, name: str, run_id: str) -> pd.DataFrame | None:
        """Artifact ``name`` of a published run, or None (no such artifact, or run unpublished)."""
        path = self.root / name / f"{run_id}.parquet"
        if not (self.runs_dir / f"{run_id}.parquet").exists() or not path.exists():
            return None
        try:
            return pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError):  # damaged: reported by ltbench status
            return None

    def published_since(self, run_id: str, timestamp: float) -> bool:
        """Whether the record of ``run_id`` was published at or after ``timestamp`` (seconds
        since the epoch, as ``time.time()``): by another process, when this one is about to
        train it."""
        try:
            return (self.runs_dir / f"{run_id}.parquet").stat().st_mtime >= timestamp
        except FileNotFoundError:
            return False

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
        _publish_with(lambda handle: torch.save(state, handle), final)
        return final

    def has_model(self, run_id: str) -> bool:
        """Whether run ``run_id`` is published with its final model."""
        return ((self.runs_dir / f"{run_id}.parquet").exists()
                and self.model_path(run_id).exists())

    def load_model(self, run_id: str, model):
        """Load run ``run_id``'s saved ``state_dict`` into ``model`` (same architecture) and
        return it; the tensors are read onto the CPU."""
        import torch

        state = torch.load(self.model_path(run_id), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model
