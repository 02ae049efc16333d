"""``ltbench compare``: two stores side by side — two machines, two versions of a method.

The records of both stores get their configuration labels together
(:func:`~ltbench.report.tables.configurations`), so the same settings carry the same label on
both sides. Every (dataset, configuration, imbalance factor) cell held by both gets the two
means over their ok runs, Δ = B − A, and the test of
:func:`~ltbench.report.stats.difference_test` (paired over runs with the same split and
training seed, Welch's otherwise; cells with fewer than three runs on a side are not tested),
Holm-corrected over all the cells compared. Cells
held by one store only are listed as such, never compared. This module must not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..spec import format_imb
from .stats import ALPHA, MIN_RUNS, difference_test, holm
from .tables import Cell, cell_of, configurations, format_cell, markdown_escape


@dataclass
class Compared:
    """One cell of both stores: their cells, Δ = B − A of the means, the test and its
    Holm-adjusted p-value (NaN where not tested)."""

    dataset: str
    label: str
    imb_factor: float
    a: Cell
    b: Cell
    test: str = ""
    p_holm: float = math.nan

    @property
    def delta(self) -> float:
        return self.b.mean - self.a.mean

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


def compare(a: pd.DataFrame, b: pd.DataFrame, metric: str = "top1_err"
            ) -> tuple[list[Compared], list[tuple[str, str, float, str]]]:
    """The cells ``a`` and ``b`` (records as from :meth:`ResultStore.read`) both hold, and
    those only one holds as (dataset, label, IF, "A" or "B")."""
    both = pd.concat([a.assign(_store="A"), b.assign(_store="B")], ignore_index=True)
    compared, alone = [], []
    for dataset, records in both.groupby("dataset", sort=True):
        _, labels = configurations(records)
        ok = records[records["status"] == "ok"]
        cells = {key: cell_of(runs, metric) for key, runs in ok.groupby(
            [labels[ok.index], ok["imb_factor"].astype(float), "_store"])}
        for label, imb in sorted({(label, imb) for label, imb, _ in cells},
                                 key=lambda key: (key[0], -key[1])):
            sides = [cells.get((label, imb, side)) for side in ("A", "B")]
            if all(sides):
                compared.append(Compared(dataset, label, imb, *sides))
            else:
                alone.append((dataset, label, imb, "A" if sides[0] else "B"))
    tested = [c for c in compared if c.a.n >= MIN_RUNS and c.b.n >= MIN_RUNS]
    results = [difference_test(c.a.values, c.b.values) for c in tested]
    for c, (test, _), p in zip(tested, results, holm([p for _, p in results])):
        c.test, c.p_holm = test, p
    return compared, alone


def to_markdown(compared: list[Compared], alone: list[tuple[str, str, float, str]],
                metric: str = "top1_err") -> str:
    """The comparison as one Markdown table, then the cells only one store holds."""
    tested = sum(c.test != "" for c in compared)
    lines = [f"{metric} (final epoch): A and B mean ± std over their ok runs, Δ = B − A; † "
             f"significant at α = {ALPHA} (paired t-test over matching split and training "
             f"seeds, Welch's otherwise; Holm-corrected over the {tested} cells tested; cells "
             f"with fewer than {MIN_RUNS} runs on a side are not tested).",
             "", "| dataset | configuration | IF | A | B | Δ | p (Holm) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for c in compared:
        p = (f"{c.p_holm:.3g}{' †' if c.significant else ''} ({c.test})" if c.test
             else "not tested")
        lines.append("| " + " | ".join(markdown_escape(text) for text in (
            c.dataset, c.label, format_imb(c.imb_factor), format_cell(c.a), format_cell(c.b),
            f"{c.delta:+.2f}", p)) + " |")
    if not compared:
        lines.append("| — | no cell is held by both stores | | | | | |")
    for dataset, label, imb, side in alone:
        lines.append(f"\nonly in {side}: {markdown_escape(dataset)} "
                     f"{markdown_escape(label)} IF {format_imb(imb)}")
    return "\n".join(lines) + "\n"
