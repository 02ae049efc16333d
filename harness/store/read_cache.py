"""A per-user cache of what reading a store found, so that the next read skips what it knows.

Reading a store of thousands of runs is dominated by opening its small parquet files one by one:
every record to read it, every record and artifact to verify its page checksums (``ltbench
status``, ``report`` and ``check`` do both). A final file whose stamp — size, modification time
in nanoseconds and inode — is unchanged since a reader found it intact is the same file:
every writer publishes a new file under a temporary name and moves it into place (a new
inode), and a file changed in place gets a new modification time. So the cache keeps, per
store:

* ``verified.parquet``: the stamp of every final file found intact, by folder and name
  (:func:`ltbench.store.integrity.find_damaged` verifies only the others);
* ``records.parquet``: the record of every intact record file, with its file's stamp
  (:meth:`ltbench.store.result_store.ResultStore.read` reads only the others);
* ``artifact-<name>.parquet``: the rows of every intact file of artifact ``name`` read so
  far, with its run id and stamp (:meth:`~ltbench.store.result_store.ResultStore.artifact_table`).

A file whose stamp differs is read and verified again; a file gone drops out; a damaged file is
never cached, so it is found again on every read. Readers never write into the store (a
read-only or shared store works), and the record file stays the commit point: the cache only
remembers what a reader saw. Damage that keeps a file's stamp (a failing disk) is found by
``ltbench status --rescan``, which verifies every file again.

The cache lives in ``$LTBENCH_READ_CACHE``, else ``$XDG_CACHE_HOME/ltbench/stores``, else
``~/.cache/ltbench/stores``: one folder per store, named by the sha-256 of its resolved path.
It is written atomically; one that cannot be read or written is ignored (and rebuilt). This
module must not import torch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .atomicfile import atomic_write

#: A final file's (size, modification time in ns, inode).
Stamp = tuple[int, int, int]

#: The stamp columns of the cached tables.
STAMP_COLUMNS = ("file_size", "file_mtime_ns", "file_inode")
_VERIFIED_SCHEMA = pa.schema([("folder", pa.string()), ("name", pa.string())]
                             + [(name, pa.int64()) for name in STAMP_COLUMNS])


def final_files(folder: Path) -> dict[str, Stamp]:
    """The stamp of every final ``*.parquet`` file in ``folder`` (hidden temporary files and
    subfolders left out), by name; empty when the folder does not exist."""
    stamps = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return {}
    for entry in entries:
        if not entry.name.endswith(".parquet") or entry.name.startswith("."):
            continue
        try:
            if entry.is_file():
                info = entry.stat()
                stamps[entry.name] = (info.st_size, info.st_mtime_ns, info.st_ino)
        except FileNotFoundError:  # removed meanwhile, e.g. by a repair
            continue
    return stamps


def cache_root() -> Path:
    """Where the caches of all stores live (see the module docstring)."""
    if os.environ.get("LTBENCH_READ_CACHE"):
        return Path(os.environ["LTBENCH_READ_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ltbench" / "stores"


class ReadCache:
    """The cache of one store (its root folder)."""

    def __init__(self, store_root: Path):
        key = hashlib.sha256(str(Path(store_root).resolve()).encode()).hexdigest()[:24]
        self.folder = cache_root() / key

    def _load(self, name: str) -> pa.Table | None:
        try:
            return pq.read_table(self.folder / name)
        except (OSError, pa.ArrowException, ValueError):  # absent or damaged: rebuild it
            return None

    def _save(self, name: str, table: pa.Table) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.folder / name) as handle:
                pq.write_table(table, handle, write_page_checksum=True)
        except OSError:  # an unwritable cache only costs the next read its time
            pass

    def verified(self) -> dict[tuple[str, str], Stamp]:
        """The stamps of the files found intact, by (folder, name)."""
        table = self._load("verified.parquet")
        if table is None or table.schema != _VERIFIED_SCHEMA:
            return {}
        rows = table.to_pydict()
        return {(folder, name): tuple(stamp) for folder, name, *stamp in
                zip(rows["folder"], rows["name"], *(rows[c] for c in STAMP_COLUMNS))}

    def save_verified(self, verified: dict[tuple[str, str], Stamp]) -> None:
        keys = sorted(verified)
        columns = [[k[0] for k in keys], [k[1] for k in keys]] + [
            [verified[k][i] for k in keys] for i in range(len(STAMP_COLUMNS))]
        self._save("verified.parquet", pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, _VERIFIED_SCHEMA)],
            schema=_VERIFIED_SCHEMA))

    def records(self, schema: pa.Schema) -> pa.Table | None:
        """The cached records (``schema`` plus ``file_name`` and the stamp columns), or None
        when there are none or they were cached under another record schema."""
        table = self._load("records.parquet")
        if table is None or table.schema != with_stamps(schema):
            return None
        return table

    def save_records(self, table: pa.Table) -> None:
        self._save("records.parquet", table)

    def artifact(self, name: str) -> pa.Table | None:
        """The cached rows of artifact ``name`` (its columns, ``run_id``, ``file_name`` and the
        stamp columns), or None."""
        table = self._load(f"artifact-{name}.parquet")
        if table is None or not {"run_id", "file_name", *STAMP_COLUMNS} <= set(table.column_names):
            return None
        return table

    def save_artifact(self, name: str, table: pa.Table) -> None:
        self._save(f"artifact-{name}.parquet", table)


def with_stamps(schema: pa.Schema) -> pa.Schema:
    """``schema`` plus the columns that name a record's file and its stamp."""
    fields = [pa.field("file_name", pa.string())] + [pa.field(c, pa.int64())
                                                     for c in STAMP_COLUMNS]
    return pa.schema(list(schema) + fields, metadata=schema.metadata)


def stamp_columns(names: list[str], stamps: list[Stamp]) -> list[pa.Array]:
    """The ``file_name`` and stamp columns of files ``names`` with ``stamps``."""
    return [pa.array(names, pa.string())] + [pa.array([s[i] for s in stamps], pa.int64())
                                             for i in range(len(STAMP_COLUMNS))]
