"""``ltbench report --bundle FILE.zip``: a report to share — the static site, the records and
the commands that rerun every cell.

The zip holds ``site/`` (the report, as written), ``records.parquet`` with
``records.curves.parquet`` and ``records.evals.parquet`` (:func:`ltbench.store.export.export`),
and ``commands.sh``, the ``ltbench run`` lines that plan every record's run again
(:func:`ltbench.run.commands.rerun_commands`). This module must not import torch.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from ..errors import BadInput
from ..store.atomicfile import atomic_write
from ..store.export import export
from ..store.result_store import ResultStore


def check_bundle_path(out: Path) -> None:
    """:class:`BadInput` unless ``out`` is a ``.zip`` file in an existing folder."""
    if out.suffix != ".zip":
        raise BadInput(f"--bundle {out}: the file must end in .zip")
    if not out.parent.is_dir():
        raise BadInput(f"--bundle {out}: folder {out.parent} does not exist")


def write_bundle(store: ResultStore, site: Path, commands: Sequence[str], out: Path) -> Path:
    """Zip the report folder ``site``, the store's records (with curves and evals) and the
    rerun ``commands`` into ``out`` (:func:`check_bundle_path`), atomically."""
    out = Path(out)
    check_bundle_path(out)
    artifacts = [name for name in ("curves", "evals") if store.has_artifact(name)]
    script = ("# Rerun every cell of this report (ltbench run skips the runs already in "
              "--results).\n" + "\n".join(commands) + "\n")
    with tempfile.TemporaryDirectory() as scratch:
        exported = export(store, Path(scratch) / "records.parquet", artifacts)
        with atomic_write(out) as handle, zipfile.ZipFile(handle, "w",
                                                          zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(p for p in Path(site).rglob("*") if p.is_file()
                               and not p.name.startswith(".") and p != out):
                archive.write(path, f"site/{path.relative_to(site).as_posix()}")
            for path in exported:
                archive.write(path, path.name)
            archive.writestr("commands.sh", script)
    return out
