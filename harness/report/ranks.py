"""The cross-dataset leaderboard: each method's rank per (dataset, imbalance factor) cell, its
mean rank with an interval, and a critical-difference chart (Demšar 2006).

A method's entry in a cell is the mean final-epoch top-1 error of one of its configurations
there: the one trained for the most epochs (the full protocol before a smoke run), then the
one with most ok runs, then the first by label — chosen without looking at the errors, so the
test set selects nothing. Within a cell the methods with an entry are ranked by that error,
1 = lowest, ties sharing their average rank (:func:`~ltbench.report.stats.average_ranks`).

The mean ranks, their 95 % t-intervals over cells, the Friedman test and the critical
difference are computed over a *complete block design*: the cells where every compared method
has an entry. Missing cells are never imputed: starting from all methods, while fewer than two
cells are common to all and leaving out the method with the fewest cells would add a common
cell, that method is left out (and the page says so).

This module must not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..api.plots import Plot
from ..spec import format_imb
from . import figures
from .stats import MIN_RUNS, average_ranks, critical_difference, t_interval
from .tables import MISSING, CellView, TableView, configurations, method_rank

RANK_NOTE = ("Each method's rank in each dataset × imbalance-factor cell by mean top-1 error "
             "at the final epoch (1 = lowest; ties share their average rank), among the "
             "methods with runs there. A method's entry in a cell is its configuration trained "
             "for the most epochs, then with the most ok runs — never chosen by its error. "
             "Mean rank, its 95 % t-interval and the critical difference are over the cells "
             "every compared method has, ranked again among the compared methods only; — "
             "marks a cell without the method, never imputed.")


@dataclass
class RankPage:
    """The cross-dataset page: the rank table, the chart (None without two methods over two
    common cells), notes on what was compared and left out, and the data as a frame."""

    view: TableView
    chart: Plot | None
    notes: list[str] = field(default_factory=list)
    data: pd.DataFrame = field(default_factory=pd.DataFrame)


def cell_entries(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, imb_factor, method) with an ok run: the chosen configuration's
    ``label``, ``epochs``, ``runs`` and ``mean`` top-1 error (module doc)."""
    rows = []
    for dataset, of_dataset in records.groupby("dataset", sort=True):
        configs, labels = configurations(of_dataset)
        epochs = {config.label: config.epochs or 0 for config in configs}
        order = [config.label for config in configs]
        ok = of_dataset[(of_dataset["status"] == "ok") & np.isfinite(
            of_dataset["top1_err"].astype(float))]
        for (imb, method), runs in ok.groupby([ok["imb_factor"].astype(float), "method"]):
            run_labels = labels[runs.index]
            counts = run_labels.value_counts()
            label = min(counts.index, key=lambda name: (-epochs[name], -counts[name],
                                                        order.index(name)))
            chosen = runs.loc[run_labels == label, "top1_err"].astype(float)
            rows.append({"dataset": dataset, "imb_factor": float(imb), "method": method,
                         "configuration": label, "epochs": epochs[label], "runs": len(chosen),
                         "mean": float(chosen.mean())})
    return pd.DataFrame(rows, columns=["dataset", "imb_factor", "method", "configuration",
                                       "epochs", "runs", "mean"])


def _complete_design(entries: pd.DataFrame, methods: list[str]
                     ) -> tuple[list[str], list[tuple[str, float]], list[str]]:
    """The compared methods, the cells they all have, and the methods left out (module doc)."""
    cells_of = {method: set(zip(part["dataset"], part["imb_factor"]))
                for method, part in entries.groupby("method")}
    compared, left_out = [m for m in methods if m in cells_of], []
    while len(compared) > 2:
        common = set.intersection(*(cells_of[m] for m in compared))
        fewest = min(reversed(compared), key=lambda m: len(cells_of[m]))
        rest = [m for m in compared if m != fewest]
        if len(common) >= 2 or len(set.intersection(*(cells_of[m] for m in rest))) <= len(common):
            break  # enough cells, or leaving a method out would not add one
        compared = rest
        left_out.append(fewest)
    common = set.intersection(*(cells_of[m] for m in compared)) if compared else set()
    return compared, sorted(common, key=lambda cell: (cell[0], -cell[1])), left_out


def rank_page(records: pd.DataFrame, method_order: Sequence[str] | None = None) -> RankPage:
    """The cross-dataset page of ``records`` (as from :meth:`ResultStore.read`); methods tied
    in mean rank, or outside the comparison, follow ``method_order`` (default: by family)."""
    entries = cell_entries(records)
    rank = method_rank(records, method_order)
    methods = sorted(set(entries["method"]), key=rank)
    cells = sorted(set(zip(entries["dataset"], entries["imb_factor"])),
                   key=lambda cell: (cell[0], -cell[1]))
    entries["rank"] = entries.groupby(["dataset", "imb_factor"])["mean"].rank(method="average")
    mean_of = entries.set_index(["dataset", "imb_factor", "method"])["mean"]

    compared, common, left_out = _complete_design(entries, methods)
    notes, chart, summary = [], None, {}
    if len(compared) >= 2 and common:
        scores = np.array([[mean_of[(d, i, m)] for m in compared] for d, i in common])
        block_ranks = average_ranks(scores)
        means = block_ranks.mean(axis=0)
        summary = {m: (means[j], *t_interval(block_ranks[:, j])) for j, m in enumerate(compared)}
        cd = critical_difference(len(compared), len(common))
        cells_text = f"{len(common)} cell{'s' if len(common) != 1 else ''}"
        text = (f"Compared: {len(compared)} methods over the {cells_text} they all have "
                f"({', '.join(f'{d} IF {format_imb(i)}' for d, i in common)}). Nemenyi "
                f"critical difference at α = 0.05: {cd:.2f}.")
        if len(compared) >= 3 and len(common) >= 2:
            from scipy.stats import friedmanchisquare

            friedman = friedmanchisquare(*scores.T)
            text += (f" Friedman test over the same cells: χ² = {friedman.statistic:.2f}, "
                     f"p = {friedman.pvalue:.3g}.")
        notes.append(text)
        if len(common) < MIN_RUNS:
            notes.append(f"Fewer than {MIN_RUNS} common cells: mean ranks carry no interval.")
        if len(common) >= 2:
            chart = figures.critical_difference(
                {m: summary[m][0] for m in compared}, cd, len(common))
    else:
        notes.append("No two methods share a cell: no mean rank or chart.")
    if left_out:
        notes.append(f"Left out of the mean ranks and the chart (too few cells in common with "
                     f"the others): {', '.join(left_out)}.")

    order = sorted(methods, key=lambda m: (summary[m][0] if m in summary else math.inf,
                                           rank(m)))
    header = ["method"] + [f"{d} IF {format_imb(i)}" for d, i in cells] + [
        "mean rank (95 % CI)", "cells"]
    best_rank = entries.groupby(["dataset", "imb_factor"])["rank"].min().to_dict()
    rows, data = [], []
    for method in order:
        mine = entries[entries["method"] == method]
        row = []
        for dataset, imb in cells:
            hit = mine[(mine["dataset"] == dataset) & (mine["imb_factor"] == imb)]
            row.append(CellView(f"{hit['rank'].iloc[0]:g}",
                                best=hit["rank"].iloc[0] == best_rank[(dataset, imb)])
                       if len(hit) else CellView(MISSING, missing=True))
        if method in summary:
            mean, low, high = summary[method]
            interval = f" ({low:.2f}–{high:.2f})" if math.isfinite(low) else ""
            row.append(CellView(f"{mean:.2f}{interval}"))
        else:
            row.append(CellView(MISSING, missing=True))
        row.append(CellView(str(len(mine))))
        rows.append((method, row))
        mean, low, high = summary.get(method, (math.nan,) * 3)
        data += [{**entry, "mean_rank": mean, "mean_rank_ci95_low": low,
                  "mean_rank_ci95_high": high, "compared": method in summary}
                 for entry in mine.to_dict("records")]
    view = TableView("Rank of each method per dataset and imbalance factor (top-1 error, "
                     "final epoch)", header, rows)
    return RankPage(view, chart, notes, pd.DataFrame(data))
