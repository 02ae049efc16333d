"""Published numbers: loading ``results/published/*.csv`` and matching rows to store results.

One row per (paper, table, method, dataset, imbalance factor, split, metric): the shared
reference table's columns (``value``, ``source``, ``provenance``, ``note``, ...) plus ltbench's
(``ltbench_method``, ``ltbench_dataset``, ``ltbench_profile``, ``ltbench_protocol``,
``protocol_epochs``, ``selection``, ``selection_source``, ``mapping_note``; see
``tools/make_published.py`` for how each was decided).

Matching rules, shared by ``ltbench check`` and the report:

* a row compares with a store configuration of its ``ltbench_method`` on its
  ``ltbench_dataset`` and imbalance factor only when the configuration was trained for the
  published protocol's length (``epochs == protocol_epochs``) and, where the row names them,
  with its count profile and ltbench protocol preset (the ``protocol`` hyper-parameter; a
  configuration without one never matches a row that names one). A 1-epoch smoke
  configuration, or any row whose protocol length is unknown, is never compared;
* the store number compared follows the row's ``selection``: ``final_epoch`` → the final-epoch
  metric; ``best_test_epoch`` → the best-test-epoch error the reference codes print
  (``top1_err_best_epoch``, kaidic/LDAM-DRW : cifar_train.py), stored only for the whole test
  set; ``unknown`` → no comparison;
* accuracies and errors are both in percent on a class-balanced test set, so
  error = 100 − accuracy (protocols.md §1.1); top-1 *error* is better when lower, accuracy
  when higher;
* shifted test splits (LADE protocol, protocols.md §1.4: F50 … U1 … B50) are stored in each
  run's ``evals`` artifact and shown by the report, but not compared here yet (the comparison
  reads only the records).

This module must not import torch.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import registry
from ..errors import BadInput
from ..integers import parse_int
from ..spec import PROFILES
from .tables import Configuration

ORIGINAL_COLUMNS = ("paper", "table", "method", "dataset", "imbalance_factor", "split",
                    "metric", "value", "source", "provenance", "note")
LTBENCH_COLUMNS = ("ltbench_method", "ltbench_dataset", "ltbench_profile", "ltbench_protocol",
                   "protocol_epochs", "selection", "selection_source", "mapping_note")

#: The columns a file of one's own numbers needs (docs/published.md); the others default as in
#: :func:`_with_defaults`.
MINIMAL_COLUMNS = ("ltbench_method", "ltbench_dataset", "imbalance_factor", "protocol_epochs",
                   "value")

SELECTIONS = ("best_test_epoch", "final_epoch", "unknown")
SELECTION_TEXT = {"best_test_epoch": "best test epoch", "final_epoch": "final epoch",
                  "unknown": "unknown"}
METRICS = ("top1_err", "top1_acc")
SHOT_SPLITS = ("many", "medium", "few")
SHIFTED_SPLITS = ("F50", "F25", "F10", "F5", "F2", "U1", "B2", "B5", "B10", "B25", "B50")
SPLITS = ("all",) + SHOT_SPLITS + SHIFTED_SPLITS
# A protocol preset's name (Dataset.protocols). Which ones a dataset has is known only by
# loading it (and torch); a row naming one no run was trained under is "not run" in the check.
_PROTOCOL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class PublishedRow:
    """One published number and how ltbench compares with it."""

    paper: str
    table: str
    method: str
    dataset: str
    imb_factor: float
    split: str
    metric: str
    value: float
    source: str
    provenance: str
    note: str
    ltbench_method: str
    ltbench_dataset: str
    ltbench_profile: str
    ltbench_protocol: str
    protocol_epochs: int | None
    selection: str
    selection_source: str
    mapping_note: str
    where: str  # file:line, for messages

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "top1_err"

    @property
    def as_error(self) -> float:
        """The value as a top-1 error (%)."""
        return self.value if self.metric == "top1_err" else 100.0 - self.value

    def label(self) -> str:
        return f"{self.paper} {self.table}"


def default_published_dir() -> Path:
    """``results/published`` of the source checkout ltbench is installed from."""
    return Path(__file__).resolve().parents[2] / "results" / "published"


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{where}: {what} '{text}' is not a number") from None
    if not math.isfinite(value):
        raise BadInput(f"{where}: {what} '{text}' is not finite")
    return value


def _choice(value: str, allowed: Sequence[str], what: str, where: str) -> str:
    if value not in allowed:
        raise BadInput(f"{where}: {what} '{value}' is not one of {', '.join(allowed)}")
    return value


def _with_defaults(row: dict[str, str], file: Path, line: int) -> dict[str, str]:
    """``row`` with every column it lacks at its default: a final-epoch top-1 error on the
    whole test set, credited to the file (docs/published.md)."""
    defaults = {"paper": file.stem, "table": "", "method": row.get("ltbench_method", ""),
                "dataset": row.get("ltbench_dataset", ""), "split": "all",
                "metric": "top1_err", "source": f"{file.name}:{line}", "provenance": "user",
                "note": "", "ltbench_profile": "", "ltbench_protocol": "",
                "selection": "final_epoch", "selection_source": "given with the number",
                "mapping_note": ""}
    return {**defaults, **row}


def _parse(row: dict[str, str], where: str) -> PublishedRow:
    imb = _number(row["imbalance_factor"], "imbalance_factor", where)
    if imb < 1:
        raise BadInput(f"{where}: imbalance_factor must be >= 1 (n_max / n_min), got {imb}")
    epochs = row["protocol_epochs"].strip()
    method = row["ltbench_method"]
    if method:
        _choice(method, list(registry.plugins("method")), "ltbench_method", where)
    protocol = row["ltbench_protocol"]
    if protocol and not _PROTOCOL_NAME.fullmatch(protocol):
        raise BadInput(f"{where}: ltbench_protocol '{protocol}' is not a protocol name "
                       f"(lower-case letters, digits, '-' and '_')")
    return PublishedRow(
        paper=row["paper"], table=row["table"], method=row["method"], dataset=row["dataset"],
        imb_factor=imb, split=_choice(row["split"], SPLITS, "split", where),
        metric=_choice(row["metric"], METRICS, "metric", where),
        value=_number(row["value"], "value", where), source=row["source"],
        provenance=row["provenance"], note=row["note"], ltbench_method=method,
        ltbench_dataset=_choice(row["ltbench_dataset"], list(registry.plugins("dataset")),
                                "ltbench_dataset", where),
        ltbench_profile=_choice(row["ltbench_profile"], PROFILES + ("",), "ltbench_profile",
                                where),
        ltbench_protocol=protocol,
        protocol_epochs=parse_int(epochs, f"{where}: protocol_epochs", least=1) if epochs
        else None,
        selection=_choice(row["selection"], SELECTIONS, "selection", where),
        selection_source=row["selection_source"], mapping_note=row["mapping_note"],
        where=where)


def load_published(path: Path) -> list[PublishedRow]:
    """Every row of ``path`` (a CSV file, or a folder whose ``*.csv`` files are read in order).

    A file has either all of :data:`ORIGINAL_COLUMNS` and :data:`LTBENCH_COLUMNS`, or at
    least :data:`MINIMAL_COLUMNS`, the others then taking their defaults (docs/published.md).
    ``ltbench_method`` must be empty or a registered method, ``ltbench_dataset`` a registered
    dataset (:mod:`ltbench.registry`: built-in or a plugin's). Raises
    :class:`~ltbench.errors.BadInput` naming the file and line of the first bad row.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise BadInput(f"no published-numbers file (*.csv) in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise BadInput(f"published numbers not found: {path} does not exist")
    rows = []
    for file in files:
        try:
            with open(file, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                missing = [c for c in MINIMAL_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise BadInput(f"{file}: missing columns {', '.join(missing)} (a file needs "
                                   f"at least {', '.join(MINIMAL_COLUMNS)}: docs/published.md)")
                for line, row in enumerate(reader, start=2):
                    if None in row or any(value is None for value in row.values()):
                        raise BadInput(f"{file}:{line}: wrong number of fields")
                    rows.append(_parse(_with_defaults(row, file, line), f"{file}:{line}"))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise BadInput(f"{file} is not a readable CSV file: {exc}") from exc
    return rows


def skip_reason(row: PublishedRow) -> str | None:
    """Why ``row`` (of an ltbench method) is never compared with a store result, or None."""
    if row.split in SHIFTED_SPLITS:
        return "shifted test split (in the report, not compared yet)"
    if row.selection == "unknown":
        return "model selection unknown"
    if row.selection == "best_test_epoch" and row.split != "all":
        return "best-epoch numbers are stored for the whole test set only"
    if row.protocol_epochs is None:
        return "published protocol length unknown"
    return None


def setting(row: PublishedRow) -> str:
    """The training setting a comparable configuration needs, e.g. ``epochs=200, profile=exp``."""
    return ", ".join([f"epochs={row.protocol_epochs}"]
                     + [f"{name}={value}" for name, value in (("profile", row.ltbench_profile),
                                                              ("protocol", row.ltbench_protocol))
                        if value])


def matches_setting(row: PublishedRow, epochs: int | None, profile: str,
                    protocol: str | None) -> bool:
    """Whether a run of ``epochs``, ``profile`` and ``protocol`` has the row's setting."""
    return (epochs == row.protocol_epochs
            and (not row.ltbench_profile or profile == row.ltbench_profile)
            and (not row.ltbench_protocol or protocol == row.ltbench_protocol))


def comparable(row: PublishedRow, config: Configuration) -> bool:
    """Whether ``config`` is ``row``'s method trained in ``row``'s setting."""
    return config.method == row.ltbench_method and matches_setting(
        row, config.epochs, config.profile, config.protocol)


def compared_column(row: PublishedRow) -> str:
    """The column of :func:`with_compared_metrics` records compared with a comparable ``row``."""
    if row.selection == "best_test_epoch":
        return "top1_err_best_epoch" if row.metric == "top1_err" else "top1_acc_best_epoch"
    name = "top1" if row.split == "all" else row.split
    return f"{name}_{row.metric.split('_')[1]}"


def with_compared_metrics(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` plus the derived columns :func:`compared_column` can name.

    ``top1_acc_best_epoch`` and ``{many,medium,few}_err`` are 100 minus the stored value.
    """
    derived = {"top1_acc_best_epoch": 100.0 - records["top1_err_best_epoch"]}
    derived.update({f"{split}_err": 100.0 - records[f"{split}_acc"] for split in SHOT_SPLITS})
    return records.assign(**derived)
