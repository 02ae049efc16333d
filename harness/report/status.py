"""``ltbench status``: how much of a grid is in the store.

Counts are per (dataset, imbalance factor, method) over seeds, whatever the hyper-parameters:
a seed is *done* when any of its records is ``ok``, otherwise *failed* or *diverged* by its
record, and *missing* when it has none. The expected seeds and factors default to those the
store holds for the dataset, so a plain ``ltbench status`` shows the holes in what was run.
"""

from __future__ import annotations

import pandas as pd

from ..spec import format_imb

_RANK = {"ok": 0, "diverged": 1, "failed": 2}


def grid_status(records: pd.DataFrame, methods: list[str], datasets: list[str] | None = None,
                  imb_factors: list[float] | None = None,
                  seeds: list[int] | None = None) -> pd.DataFrame:
    """One row per (dataset, imb_factor, method): done, failed, diverged, missing seeds."""
    rows = []
    for dataset in datasets if datasets is not None else sorted(records["dataset"].unique()):
        mine = records[records["dataset"] == dataset]
        factors = imb_factors if imb_factors is not None else \
            sorted(mine["imb_factor"].unique(), reverse=True)
        expected = seeds if seeds is not None else sorted(mine["seed"].unique())
        for imb in factors:
            for method in methods:
                group = mine[(mine["imb_factor"] == imb) & (mine["method"] == method)]
                best = group.assign(rank=group["status"].map(_RANK)).groupby("seed")["rank"].min()
                state = {seed: best.get(seed) for seed in expected}
                rows.append({
                    "dataset": dataset, "imb_factor": float(imb), "method": method,
                    "done": sum(r == 0 for r in state.values()),
                    "diverged": sum(r == 1 for r in state.values()),
                    "failed": sum(r == 2 for r in state.values()),
                    "missing": sum(r is None for r in state.values()),
                })
    return pd.DataFrame(rows, columns=["dataset", "imb_factor", "method", "done", "failed",
                                       "diverged", "missing"])


def status_table(records: pd.DataFrame, methods: list[str], **expected) -> str:
    """:func:`grid_status` as aligned text, with a total line."""
    counts = grid_status(records, methods, **expected)
    if counts.empty:
        return "the store holds no runs"
    shown = counts.assign(imb_factor=counts["imb_factor"].map(format_imb))
    totals = counts[["done", "failed", "diverged", "missing"]].sum()
    text = shown.to_string(index=False)
    return text + "\ntotal: " + ", ".join(f"{int(v)} {k}" for k, v in totals.items())
