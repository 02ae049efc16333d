"""The report's shifted-test-distribution section: a LADE-style table and a chart per IF.

Rows are the dataset page's configurations, columns the 11 shifted test sets of
:mod:`ltbench.metrics.shifted` (F50 … U1 … B50, as Hong et al., CVPR 2021, arXiv:2012.00321,
Table 3); cells are mean ± sample std over the ok runs that stored ``evals``. This module must
not import torch.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from ..api.plots import Plot
from ..metrics.shifted import SHIFTED_SETS
from ..spec import format_imb
from ..store.result_store import ResultStore
from . import figures
from .tables import SIGNIFICANCE_NOTE, TableView, cell_of, cell_statistics, column_views

SHIFT_NOTE = ("Top-1 accuracy (%) of the final model on test sets drawn from the balanced test "
              "set with shifted label distributions (LADE protocol, protocols.md §1.4): F = "
              "the training order, B = reversed, U = uniform, the number is the test "
              "imbalance ratio. PC softmax and LADE are given each set's true label prior, "
              "the other methods use their plain predictions. Mean ± std over ok runs; bold: "
              "the best of the column. " + SIGNIFICANCE_NOTE)
_SET_NAMES = [name for name, _, _ in SHIFTED_SETS]


def _evaluations(store: ResultStore, records: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """The ``evals`` rows of the ok runs, with their configuration label and IF."""
    ok = records[records["status"] == "ok"]
    evals = store.artifact_table("evals", list(ok["run_id"]))
    if evals.empty:
        return pd.DataFrame()
    runs = pd.DataFrame({"run_id": ok["run_id"], "configuration": labels[ok.index],
                         "imb_factor": ok["imb_factor"].astype(float),
                         "split_seed": ok["split_seed"], "seed": ok["seed"]})
    return evals.merge(runs, on="run_id", how="inner", sort=False)


def shifted_section(store: ResultStore, records: pd.DataFrame, labels: pd.Series,
                    rows: list[str], dataset: str
                    ) -> tuple[list[TableView], list[Plot], pd.DataFrame]:
    """Per IF with shifted evaluations: a table view and a chart; plus the table data."""
    evaluations = _evaluations(store, records, labels)
    if evaluations.empty:
        return [], [], pd.DataFrame()
    style_of = {label: index for index, label in enumerate(rows)}
    views, plots, data = [], [], []
    for imb in sorted(evaluations["imb_factor"].unique(), reverse=True):
        at_imb = evaluations[evaluations["imb_factor"] == imb]
        present = [label for label in rows if label in set(at_imb["configuration"])]
        grouped = at_imb.groupby(["configuration", "eval_set"])
        columns = [[cell_of(grouped.get_group((label, name)), "top1_acc") for label in present]
                   for name in _SET_NAMES]
        views_of_column = [column_views(cells, lower_is_better=False) for cells in columns]
        body = [(label, [column[r] for column in views_of_column])
                for r, label in enumerate(present)]
        views.append(TableView(f"{dataset}, IF {format_imb(imb)}: top-1 accuracy (%) on "
                               f"shifted test label distributions", ["method"] + _SET_NAMES,
                               body))
        runs = at_imb.groupby("configuration")["run_id"].nunique()
        series = [(label, np.array([cells[r].mean for cells in columns]), int(runs[label]))
                  for r, label in enumerate(present)]
        plots.append(figures.shifted_accuracy(dataset, imb, _SET_NAMES, series, style_of))
        data += [{"configuration": label, "imb_factor": imb, "eval_set": name,
                  **cell_statistics(cells[r], views[r])}
                 for r, label in enumerate(present)
                 for name, cells, views in zip(_SET_NAMES, columns, views_of_column)]
    return views, plots, pd.DataFrame(data)
