"""``ltbench export``: a store as single files, to share a leaderboard or attach it to a paper.

:func:`export` writes every published record (:meth:`ResultStore.read`, damaged files skipped)
to one Parquet or CSV file, and each artifact asked for (``curves``, ``evals``, ``eps``, ...)
to one file beside it, ``<stem>.<artifact>.<suffix>``, with the run's ``run_id`` as its first
column so it joins the records. Parquet keeps the record schema; CSV writes list columns
(``per_class_acc``, ``train_class_counts``) as JSON arrays and timestamps in ISO 8601. Every
file is written atomically. This module must not import torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import BadInput
from .atomicfile import atomic_write
from .result_store import ResultStore

SUFFIXES = (".parquet", ".csv")


def _json_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every list-valued column as JSON text, for CSV."""
    def as_json(value) -> str:
        return json.dumps(None if value is None else [getattr(x, "item", lambda: x)()
                                                      for x in value])

    lists = [column for column in frame.columns if frame[column].map(
        lambda value: hasattr(value, "__len__") and not isinstance(value, str)).any()]
    return frame.assign(**{column: frame[column].map(as_json) for column in lists})


def _write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        with atomic_write(path) as handle:
            frame.to_parquet(handle, index=False)
    else:
        with atomic_write(path, text=True) as handle:
            _json_lists(frame).to_csv(handle, index=False)


def export(store: ResultStore, out: Path, artifacts: Sequence[str] = ()) -> list[Path]:
    """Write the records of ``store`` to ``out`` (``.parquet`` or ``.csv``) and each of
    ``artifacts`` beside it; returns the files written. :class:`BadInput` for an unknown
    suffix, a missing folder or an artifact the store does not hold, before writing."""
    out = Path(out)
    if out.suffix not in SUFFIXES:
        raise BadInput(f"--out {out}: the file must end in {' or '.join(SUFFIXES)}")
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: folder {out.parent} does not exist")
    missing = [name for name in artifacts if not store.has_artifact(name)]
    if missing:
        raise BadInput(f"--artifacts: the store holds no '{missing[0]}' artifact")
    records = store.read()
    files = {out: records}
    for name in artifacts:
        files[out.with_name(f"{out.stem}.{name}{out.suffix}")] = store.artifact_table(
            name, list(records["run_id"]))
    for path, frame in files.items():
        _write(frame, path)
    return list(files)
