"""Result tables from store records: configurations × imbalance factors, mean ± std over seeds.

Data first: :func:`error_table` aggregates records into an :class:`ErrorTable` of
:class:`Cell` s; :func:`format_cell`, :func:`to_markdown` and :func:`run_summary` only render it.

Rules (architecture.md §8 pitfalls 1 and 2):

* only ``status == "ok"`` runs enter a mean; ``failed`` and ``diverged`` runs are counted and
  shown next to the number, never averaged in;
* a cell without a finite value renders "—", never a number (DomainBed prints ``X`` tables,
  facebookresearch/DomainBed #127; classifier-balancing's ``shot_acc`` reports an empty group
  as 0);
* the spread is the sample standard deviation over seeds (ddof = 1), NaN for fewer than two.

A row is one configuration: a method with one set of resolved hyper-parameters, count profile
and harness version. Runs of different configurations are never pooled, e.g. an ``--epochs 1``
smoke run never averages into the 200-epoch numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .spec import canonical_json, format_imb
from .store import STATUSES

MISSING = "—"


@dataclass
class Cell:
    """One table entry: statistics over the ``ok`` runs and the number of unusable runs."""

    mean: float
    std: float
    n: int
    failed: int


@dataclass
class ErrorTable:
    """A metric over configurations (``rows``, labels) × imbalance factors (``columns``)."""

    dataset: str
    metric: str
    columns: list[float]
    rows: list[str]
    cells: dict[tuple[str, float], Cell]


def _config(row: pd.Series) -> dict[str, Any]:
    """The settings that distinguish configurations of one method in one dataset."""
    config = json.loads(row["hparams"])
    config.update(profile=row["profile"], harness_version=row["harness_version"])
    return config


def _config_labels(method: str, configs: list[dict[str, Any]]) -> list[str]:
    """``method`` alone if it has one configuration, else with the settings that differ."""
    if len(configs) == 1:
        return [method]
    keys = sorted(set().union(*configs))

    def show(config: dict[str, Any], key: str) -> str:
        if key not in config:
            return "unset"
        value = config[key]
        return value if isinstance(value, str) else canonical_json(value)

    differing = [key for key in keys if len({show(config, key) for config in configs}) > 1]
    return [f"{method} [" + ", ".join(f"{key}={show(config, key)}" for key in differing) + "]"
            for config in configs]


def _cell(group: pd.DataFrame, metric: str) -> Cell:
    ok = group["status"] == "ok"
    values = group.loc[ok, metric].to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    n = len(values)
    return Cell(mean=float(values.mean()) if n else math.nan,
                std=float(values.std(ddof=1)) if n >= 2 else math.nan,
                n=n, failed=int((~ok).sum()))


def error_table(records: pd.DataFrame, dataset: str, metric: str = "top1_err",
                method_order: Sequence[str] | None = None) -> ErrorTable:
    """Aggregate ``records`` (as from :meth:`ResultStore.read`) of ``dataset`` into a table.

    Columns are the imbalance factors present, descending. Rows are ordered by method
    (``method_order`` first, in that order, then the remaining methods sorted), then label.
    A (row, column) pair with no run at all has no entry in ``cells``.
    """
    subset = records[records["dataset"] == dataset]
    columns = sorted({float(imb) for imb in subset["imb_factor"]}, reverse=True)
    configs = [_config(row) for _, row in subset.iterrows()]
    config_keys = [canonical_json(config) for config in configs]
    configs_by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for method, key, config in zip(subset["method"], config_keys, configs):
        configs_by_method.setdefault(method, {})[key] = config
    label_of: dict[tuple[str, str], str] = {}
    for method, by_key in configs_by_method.items():
        keys = sorted(by_key)
        for key, label in zip(keys, _config_labels(method, [by_key[k] for k in keys])):
            label_of[(method, key)] = label

    order = list(method_order or [])
    methods = sorted(configs_by_method,
                     key=lambda m: (order.index(m) if m in order else len(order), m))
    rows = [label for method in methods
            for label in sorted(label for (m, _), label in label_of.items() if m == method)]

    labels = pd.Series([label_of[(method, key)] for method, key
                        in zip(subset["method"], config_keys)], index=subset.index, dtype=object)
    cells = {}
    for (label, imb), group in subset.groupby([labels, subset["imb_factor"].astype(float)]):
        cells[(label, float(imb))] = _cell(group, metric)
    return ErrorTable(dataset=dataset, metric=metric, columns=columns, rows=rows, cells=cells)


def format_cell(cell: Cell | None) -> str:
    """``"29.64 ± 0.31 (n=3)"``, ``"29.64 (n=1)"``, ``"—"``; ``" (k failed)"`` appended."""
    if cell is None:
        return MISSING
    if cell.n == 0:
        text = MISSING
    elif cell.n == 1:
        text = f"{cell.mean:.2f} (n=1)"
    else:
        text = f"{cell.mean:.2f} ± {cell.std:.2f} (n={cell.n})"
    return f"{text} ({cell.failed} failed)" if cell.failed else text


def column_header(imb: float) -> str:
    return f"IF {format_imb(imb)}"


def to_markdown(table: ErrorTable) -> str:
    """The table as GitHub-flavoured Markdown (configuration column, one column per IF)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    out = [line(["method"] + [column_header(imb) for imb in table.columns]),
           "|---|" + "---:|" * len(table.columns)]
    for row in table.rows:
        out.append(line([row] + [format_cell(table.cells.get((row, imb)))
                                 for imb in table.columns]))
    return "\n".join(out) + "\n"


def status_counts(records: pd.DataFrame) -> dict[str, int]:
    """Number of runs per status (``ok``, ``failed``, ``diverged``; zeros included)."""
    counts = records["status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in STATUSES}


def run_summary(records: pd.DataFrame) -> str:
    """Plain-text top-1 error tables, one per dataset, for the end of ``ltbench run``."""
    if records.empty:
        return "no results\n"
    blocks = []
    for dataset in sorted(records["dataset"].unique()):
        table = error_table(records, dataset)
        grid = [["method"] + [column_header(imb) for imb in table.columns]]
        grid += [[row] + [format_cell(table.cells.get((row, imb))) for imb in table.columns]
                 for row in table.rows]
        widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
        body = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip()
                for line in grid]
        blocks.append(f"{dataset}: top-1 error (%), final epoch, mean ± std over seeds\n"
                      + "\n".join(body) + "\n")
    return "\n".join(blocks)
