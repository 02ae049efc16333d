"""``ltbench report``: a static HTML site of the results store, plus Markdown, LaTeX and CSV.

Files written to the report folder:

* ``index.html``: every dataset's top-1 error table and the provenance of all runs;
* ``<dataset>.html``: one page per dataset — the paper-style error table with published
  numbers, the many / medium / few accuracy tables, per-class accuracy vs. training count,
  the training counts, learning curves (median over seeds), the sections plugins add for the
  artifacts they store (:mod:`ltbench.api.report_section`; the built-in one shows the ε and
  weights of the meta-learning methods, :mod:`ltbench.methods.weight_report`) and the
  accuracies on the shifted test sets;
* ``results.md`` and ``results.tex`` (booktabs): the same tables;
* ``data/*.csv``: the numbers behind every table and plot.

Tables (:mod:`ltbench.report.tables`): rows are configurations in
family order (:mod:`ltbench.families`); cells are mean ± sample std of the final-epoch metric
over the ok runs, with n and the counts of failed / missing runs; "—" where no ok run exists. The
best cell per column is bold. A published number (:mod:`ltbench.report.published`) stands beside a
cell exactly when ``ltbench check`` would compare it with that configuration; Δ is computed against
the ltbench number with the paper's model selection (the best test epoch for kaidic/LDAM-DRW-style
numbers, flagged "best ep."; protocols.md §1.3), which is otherwise never shown as a result.

Every page is self-contained (inline CSS, plots as ``data:`` SVG, no scripts, no links to other
hosts), so it opens from disk and makes no network request. A new kind of result is one more
section of :class:`~ltbench.api.plots.Plot` s: the harness's own in :func:`_plot_sections`, a
plugin's through its artifact's report section.

This module must not import torch.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import jinja2
import numpy as np
import pandas as pd

from .. import __version__, registry
from ..api.plots import Plot, prune_cache
from ..api.report_section import SectionInput
from ..envinfo import git_commit
from ..errors import BadInput
from ..metrics.headline import FEW_THRESHOLD, MANY_THRESHOLD
from ..spec import format_imb
from ..store import atomicfile
from ..store.integrity import file_stamps
from ..store.result_store import ResultStore
from . import figures
from .published import (SELECTION_TEXT, SHOT_SPLITS, PublishedRow, comparable, skip_reason,
                        with_compared_metrics)
from .ranks import RANK_NOTE, RankPage, rank_page
from .shift_section import SHIFT_NOTE, shifted_section
from .tables import (MISSING, SIGNIFICANCE_NOTE, CellView, Configuration, ErrorTable,
                     TableView, cell_statistics, column_header, column_views, configurations,
                     device_time, error_table, markdown_escape, status_counts, to_latex,
                     to_markdown)

METRIC_NOTE = ("Top-1 error (%) at the final epoch on the balanced test set; mean ± sample "
               "standard deviation over seeds, n = number of successful runs. Only runs with "
               "status ok are averaged; failed and diverged runs, and seeds without a run, are "
               "counted next to the cell. — marks a cell without a successful run. Bold: the "
               "lowest error of the column. " + SIGNIFICANCE_NOTE)
PUBLISHED_NOTE = ("pub.: a published number for the same method, dataset and imbalance factor "
                  "(as top-1 error; footnotes name the source), shown only beside "
                  "configurations trained for the published protocol's length and count "
                  "profile. Δ = ltbench mean − published (negative: ltbench better), against "
                  "the ltbench number with the paper's model selection: the final epoch shown "
                  "in the cell, or the best test epoch, whose mean is then given after Δ "
                  "(\"from best test ep.\": selected on the test set, as the reference codes "
                  "do; a comparison only, never a result or a rank here).")
SHOT_NOTE = (f"Top-1 accuracy (%) per training-count group at the final epoch: many > "
             f"{MANY_THRESHOLD}, medium {FEW_THRESHOLD}–{MANY_THRESHOLD}, few < {FEW_THRESHOLD} "
             f"training images (protocols.md §1.2); mean ± std over ok runs. The thresholds "
             f"are fixed, so a subset can leave a group without classes (CIFAR-10-LT at IF 100 "
             f"has none under {FEW_THRESHOLD} images: the header says 0 classes); an empty group "
             f"is —, never 0. ECE: expected calibration error (%) of the final test "
             f"predictions over 15 equal-width bins of the top softmax probability (Guo et al., "
             f"ICML 2017; lower is better; — for runs that predate it). Bold: the best of the "
             f"column. pub.: the published accuracy of the group for the same configuration "
             f"(final-epoch numbers only), Δ = ltbench − published (positive: ltbench "
             f"better). {SIGNIFICANCE_NOTE}")
COST_NOTE = ("Cost: device hours of every run of a cell (ok, failed and diverged: each cost its "
             "time), a run's share being its pack's wall time over the pack's size, with the "
             "device kind and the numeric precision; the error-vs-cost plots use the ok runs.")
#: The shot tables' columns: header, metric, whether lower is better.
_SHOT_COLUMNS = (("many", "many_acc", False), ("medium", "medium_acc", False),
                 ("few", "few_acc", False), ("all", "top1_acc", False), ("ECE", "ece", True))


@dataclass
class DatasetPage:
    dataset: str
    file: str
    counts: dict[str, int]
    missing: int
    error_view: TableView
    shot_views: list[TableView]
    plot_sections: list[tuple[str, list[Plot]]]
    provenance: list[tuple[str, str]]
    table_files: list[str] = field(default_factory=list)
    data: dict[str, pd.DataFrame] = field(default_factory=dict)
    shift_views: list[TableView] = field(default_factory=list)
    cost_view: TableView | None = None


# -- published numbers beside the error table -----------------------------------------------

def _preference(row: PublishedRow) -> tuple:
    """Which of several published rows a cell shows: like-for-like selection, P1, error."""
    return (row.selection != "final_epoch", row.provenance != "P1", row.metric != "top1_err")


def _published_rows(config: Configuration, dataset: str, imb: float,
                    published: Sequence[PublishedRow], split: str = "all") -> list[PublishedRow]:
    rows = [row for row in published
            if row.ltbench_dataset == dataset and row.imb_factor == imb and row.split == split
            and comparable(row, config) and skip_reason(row) is None]
    return sorted(rows, key=_preference)


def _error_mean(records: pd.DataFrame, label_mask: pd.Series, row: PublishedRow) -> float:
    column = "top1_err_best_epoch" if row.selection == "best_test_epoch" else "top1_err"
    chosen = records.loc[label_mask & (records["status"] == "ok"), column].to_numpy(float)
    chosen = chosen[np.isfinite(chosen)]
    return float(chosen.mean()) if len(chosen) else math.nan


def _describe(row: PublishedRow) -> str:
    unit = "top-1 error" if row.metric == "top1_err" else "top-1 accuracy"
    text = (f"{row.paper}, {row.table}: {row.value:g} % {unit} "
            f"({SELECTION_TEXT[row.selection]}, {row.provenance})")
    return text + (f"; {row.note}" if row.note else "")


class _Footnotes:
    """Numbers the published sources of one page in order of first use."""

    def __init__(self) -> None:
        self.numbers: dict[tuple[str, str], int] = {}
        self.texts: list[str] = []

    def number(self, row: PublishedRow) -> int:
        key = (row.paper, row.table)
        if key not in self.numbers:
            self.numbers[key] = len(self.numbers) + 1
            self.texts.append(f"[{self.numbers[key]}] {row.paper}, {row.table}: {row.source} "
                              f"({row.provenance}). Model selection: "
                              f"{SELECTION_TEXT[row.selection]} — {row.selection_source}.")
        return self.numbers[key]


# -- tables ---------------------------------------------------------------------------------

def _error_view(table: ErrorTable, records: pd.DataFrame, labels: pd.Series,
                published: Sequence[PublishedRow]) -> tuple[TableView, pd.DataFrame]:
    notes = _Footnotes()
    views_of = {imb: dict(zip(table.rows, column_views([table.cells[(r, imb)]
                                                        for r in table.rows], True)))
                for imb in table.columns}
    rows, data = [], []
    for label in table.rows:
        cells = []
        for imb in table.columns:
            cell = table.cells[(label, imb)]
            view = views_of[imb][label]
            matches = _published_rows(table.configs[label], table.dataset, imb, published)
            delta = math.nan
            if matches:
                primary = matches[0]
                mask = (labels == label) & (records["imb_factor"].astype(float) == imb)
                compared = _error_mean(records, mask, primary)
                delta = compared - primary.as_error
                # Δ from a number the cell does not show says which one it is
                basis = (f" from best test ep. {compared:.2f}"
                         if primary.selection == "best_test_epoch" else "")
                shown_delta = f" Δ {delta:+.2f}{basis}" if math.isfinite(delta) else ""
                number = notes.number(primary)
                others = sorted({notes.number(row) for row in matches[1:]} - {number})
                also = f"; also [{', '.join(map(str, others))}]" if others else ""
                view.published = f"pub. {primary.as_error:.2f} [{number}]{shown_delta}{also}"
                view.tooltip = "\n".join(_describe(row) for row in matches)
            cells.append(view)
            data.append({"configuration": label, "method": table.configs[label].method,
                         "imb_factor": imb, **cell_statistics(cell, view),
                         "failed": cell.failed, "missing": cell.missing,
                         "published_error": matches[0].as_error if matches else math.nan,
                         "published_source": matches[0].label() if matches else "",
                         "published_selection": matches[0].selection if matches else "",
                         "delta": delta, "all_published": view.tooltip})
        rows.append((label, cells))
    view = TableView(f"{table.dataset}: top-1 error (%), mean ± std over seeds; model "
                     f"selection: {_selection(records, labels)}",
                     ["method"] + [column_header(imb) for imb in table.columns], rows,
                     [_schedules(table, published), *notes.texts])
    return view, pd.DataFrame(data)


def _schedules(table: ErrorTable, published: Sequence[PublishedRow]) -> str:
    """Each row's protocol, backbone and schedule length, and whether it is shorter than every
    published protocol of its method on the dataset (so a smoke run never reads as a result);
    rows that share all of these are named together."""
    groups: dict[str, list[str]] = {}
    for label in table.rows:
        config = table.configs[label]
        lengths = {row.protocol_epochs for row in published
                   if row.ltbench_method == config.method and row.ltbench_dataset == table.dataset
                   and row.protocol_epochs is not None}
        short = (f", SHORTER than the published {min(lengths)}"
                 if lengths and config.epochs is not None and config.epochs < min(lengths)
                 else "")
        epochs = "? epochs" if config.epochs is None else \
            f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}"
        backbone = config.settings.get("backbone")
        backbone = f", {backbone}" if isinstance(backbone, str) else ""
        groups.setdefault(f"{config.protocol or 'no'} protocol{backbone}, {epochs}{short}",
                          []).append(label)
    return "Schedules: " + "; ".join(f"{', '.join(labels)}: {schedule}"
                                     for schedule, labels in groups.items()) + "."


#: How each part of a record's ``selection_rule`` reads (protocols.md §1.3).
_SELECTION_PARTS = {"last": "final epoch", "tau=val": "τ chosen on the validation split",
                    "tau=fixed": "τ fixed (no validation split)"}


def _selection(records: pd.DataFrame, labels: pd.Series) -> str:
    """The table's model-selection rule: the final epoch, and what the configurations that
    select more (τ-norm's τ) chose it on; never the test set."""
    rules = records["selection_rule"].fillna("last")
    other = sorted({(label, rule) for label, rule in zip(labels, rules) if rule != "last"})
    return "; ".join(["final epoch"] + [
        f"{label}: " + ", ".join(_SELECTION_PARTS.get(part, part) for part in rule.split(","))
        for label, rule in other])


def _cost(table: ErrorTable, records: pd.DataFrame, labels: pd.Series
          ) -> tuple[TableView, list[Plot], pd.DataFrame]:
    """Device hours per cell (every run, failed ones too: they cost as much), the table's
    total, and per IF the error-vs-cost plot of the ok runs."""
    rows, data, plots = [], [], []
    style_of = {label: index for index, label in enumerate(table.rows)}
    imb_of = records["imb_factor"].astype(float)
    series: dict[float, list] = {imb: [] for imb in table.columns}
    for label in table.rows:
        cells = []
        for imb in table.columns:
            runs = records[(labels == label) & (imb_of == imb)]
            hours, kind = device_time(runs)
            precision = "+".join(sorted({str(p) for p in runs["precision"].dropna()}))
            cells.append(CellView(f"{hours:.2f} {kind}-h, {len(runs)} run"
                                  + ("s" if len(runs) > 1 else "")
                                  + (f", {precision}" if precision else ""))
                         if len(runs) else CellView(MISSING, missing=True))
            ok = runs[runs["status"] == "ok"]
            cell = table.cells[(label, imb)]
            if len(ok) and cell.n:
                series[imb].append((label, device_time(ok)[0] / len(ok), cell.mean, cell.n))
            data.append({"configuration": label, "imb_factor": imb, "runs": len(runs),
                         "device_hours": hours, "device_kind": kind, "precision": precision})
        rows.append((label, cells))
    total, kind = device_time(records)
    for imb, points in series.items():
        if points and all(hours > 0 for _, hours, _, _ in points):
            plots.append(figures.error_vs_cost(table.dataset, imb, points, style_of))
    view = TableView(f"{table.dataset}: device hours per cell, every run's share of its pack's "
                     f"wall time (failed runs included); total {total:.2f} {kind}-h",
                     ["method"] + [column_header(imb) for imb in table.columns], rows)
    return view, plots, pd.DataFrame(data)


def _group_sizes(records: pd.DataFrame) -> tuple[str, str, str]:
    ok = records[records["status"] == "ok"]
    sizes = {tuple(int(v) for v in row) for row in ok[["n_many", "n_medium", "n_few"]]
             .dropna().itertuples(index=False)}
    if len(sizes) == 1:
        return tuple(f"{n} classes" for n in sizes.pop())
    return ("classes vary",) * 3


def _shot_views(records: pd.DataFrame, labels: pd.Series, dataset: str,
                method_order: Sequence[str] | None, published: Sequence[PublishedRow]
                ) -> tuple[list[TableView], pd.DataFrame]:
    """One many / medium / few / all table per imbalance factor, rows with runs there; the
    group cells show the published group accuracies of their configuration (final-epoch
    numbers: best-epoch ones exist for the whole test set only) and Δ."""
    tables = {metric: error_table(records, dataset, metric, method_order)
              for _, metric, _ in _SHOT_COLUMNS}
    order = tables["top1_acc"].rows
    views, data = [], []
    for imb in tables["top1_acc"].columns:
        at_imb = records["imb_factor"].astype(float) == imb
        present = set(labels[at_imb])
        rows = [label for label in order if label in present]
        columns = [[tables[metric].cells[(label, imb)] for label in rows]
                   for _, metric, _ in _SHOT_COLUMNS]
        column_cells = [column_views(cells, lower_is_better)
                        for cells, (_, _, lower_is_better) in zip(columns, _SHOT_COLUMNS)]
        notes = _Footnotes()
        for (name, _, _), cells, cell_views in zip(_SHOT_COLUMNS, columns, column_cells):
            if name not in SHOT_SPLITS:
                continue
            for r, label in enumerate(rows):
                matches = _published_rows(tables["top1_acc"].configs[label], dataset, imb,
                                          published, split=name)
                if matches:
                    accuracy = 100.0 - matches[0].as_error
                    delta = (f" Δ {cells[r].mean - accuracy:+.2f}"
                             if math.isfinite(cells[r].mean) else "")
                    cell_views[r].published = (f"pub. {accuracy:.2f} "
                                               f"[{notes.number(matches[0])}]{delta}")
                    cell_views[r].tooltip = "\n".join(_describe(row) for row in matches)
        body = [(label, [views[r] for views in column_cells]) for r, label in enumerate(rows)]
        sizes = _group_sizes(records[at_imb]) + ("", "")
        header = ["method"] + [f"{name} ({size})" if size else name
                               for (name, _, _), size in zip(_SHOT_COLUMNS, sizes)]
        views.append(TableView(f"{dataset}, IF {format_imb(imb)}: top-1 accuracy (%) by "
                               f"training-count group and calibration error (%), final epoch",
                               header, body, notes.texts))
        data += [{"configuration": label, "imb_factor": imb, "group": name,
                  **cell_statistics(cells[r], views[r])}
                 for r, label in enumerate(rows)
                 for (name, _, _), cells, views in zip(_SHOT_COLUMNS, columns, column_cells)]
    return views, pd.DataFrame(data)


# -- plots ----------------------------------------------------------------------------------

def _per_class_series(ok_runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int] | None:
    ok = ok_runs[ok_runs["per_class_acc"].notna()]
    if ok.empty:
        return None
    accuracy = np.stack([np.asarray(a, dtype=float) for a in ok["per_class_acc"]])
    counts = np.stack([np.asarray(c, dtype=float) for c in ok["train_class_counts"]])
    return counts.mean(axis=0), accuracy.mean(axis=0), len(ok)


def _curve_medians(curves: pd.DataFrame) -> pd.DataFrame | None:
    """Per epoch, the median training loss and test error of the runs in ``curves`` (rows of
    :meth:`ResultStore.artifact_table`), and how many runs have the epoch."""
    if curves.empty:
        return None
    stacked = curves.assign(test_err=100.0 - curves["test_acc"])
    medians = stacked.groupby("epoch")[["train_loss", "test_err"]].median()
    medians["runs"] = stacked.groupby("epoch").size()
    return medians.reset_index()


def _plot_sections(store: ResultStore, records: pd.DataFrame, labels: pd.Series,
                   table: ErrorTable) -> list[tuple[str, list[Plot]]]:
    """The page's plot sections, in reading order: the report's own, then those of the plugins
    registered for the artifacts the store holds (:mod:`ltbench.api.report_section`); a section
    without data is left out."""
    dataset = table.dataset
    ok = records["status"] == "ok"
    profiles: dict[tuple[float, str], np.ndarray] = {}
    for _, run in records[ok & records["train_class_counts"].notna()].iterrows():
        profiles.setdefault((float(run["imb_factor"]), run["profile"]),
                            np.asarray(run["train_class_counts"]))
    counts = [figures.training_counts(dataset, [
        (imb, profile, profiles[(imb, profile)])
        for imb, profile in sorted(profiles, key=lambda key: (-key[0], key[1]))])] \
        if profiles else []

    def ok_runs(imb: float, label: str) -> pd.DataFrame:
        return records[ok & (records["imb_factor"].astype(float) == imb) & (labels == label)]

    run_curves = store.artifact_table("curves", list(records.loc[ok, "run_id"]))
    # split once by cell: a leaderboard page holds millions of curve rows
    run_ids = run_curves["run_id"]
    cell_keys = [run_ids.map(dict(zip(records["run_id"], records["imb_factor"].astype(float)))),
                 run_ids.map(dict(zip(records["run_id"], labels)))]
    curves_of_cell = dict(iter(run_curves.groupby(cell_keys))) if len(run_curves) else {}

    per_class, curves = [], []
    style_of = {label: index for index, label in enumerate(table.rows)}
    for imb in table.columns:
        per_class_series, curve_series = [], []
        for label in table.rows:
            runs = ok_runs(imb, label)
            if (series := _per_class_series(runs)) is not None:
                per_class_series.append((label, *series))
            if (medians := _curve_medians(curves_of_cell.get((imb, label), run_curves.iloc[0:0]))
                    ) is not None:
                curve_series.append((label, medians))
        if per_class_series:
            per_class.append(figures.per_class_accuracy(dataset, imb, per_class_series,
                                                        style_of))
        if curve_series:
            curves.append(figures.learning_curves(dataset, imb, curve_series, style_of))
    sections = [("Training images per class", counts),
                ("Per-class accuracy vs. training count", per_class),
                ("Learning curves", curves)]
    # Per run, not artifact_table: a plugin's artifact can be large (the ε histograms hold
    # about 50,000 rows per run), and a page holds every cell's runs.
    stamps, part_of = file_stamps(store), store.part_runs()

    def run_files(run_id: str) -> tuple:
        # a part never changes once published: its name stands for its files
        return (run_id, part_of.get(run_id), *((folder, files.get(f"{run_id}.parquet"))
                                               for folder, files in stamps.items()))

    page = SectionInput(dataset, table.columns, table.rows, ok_runs, store.artifact, run_files)
    for artifact in registry.plugins("report_section"):
        if store.has_artifact(artifact):
            section = registry.load("report_section", artifact)(page)
            if section is not None:
                sections.append((section.title, list(section.plots)))
    return [(title, plots) for title, plots in sections if plots]


# -- provenance -----------------------------------------------------------------------------

def _cuda_of(torch_version: str) -> str:
    """CUDA version from a torch build tag: ``2.4.0+cu121`` → ``12.1``; ``cpu`` builds say so."""
    match = re.search(r"\+cu(\d+)(\d)$", torch_version)
    if match:
        return f"{match[1]}.{match[2]}"
    return "CPU build" if torch_version.endswith("+cpu") else "not recorded"


def _short_commit(commit: str) -> str:
    """``<sha>[-dirty]`` with the sha cut to 12 characters, the ``-dirty`` flag kept."""
    sha, dirty, _ = str(commit).partition("-dirty")
    return sha[:12] + ("-dirty" if dirty else "")


def _counted(values: pd.Series) -> str:
    counts = Counter(str(v) for v in values.dropna())
    return ", ".join(f"{value} ({count} runs)" for value, count in sorted(counts.items())) \
        or "not recorded"


def _provenance(records: pd.DataFrame, generated: str) -> list[tuple[str, str]]:
    """Where the numbers come from (pitfall 5: tables stamped with git sha and versions)."""
    on_gpu = ~records["device"].fillna("cpu").str.startswith("cpu")
    torch_versions = sorted({str(v) for v in records["torch_version"].dropna()})
    started, finished = records["started_utc"].min(), records["finished_utc"].max()
    period = (f"{started:%Y-%m-%d} – {finished:%Y-%m-%d}" if not records.empty
              else "no runs")
    commits = records["git_commit"].dropna().map(_short_commit)
    return [
        ("ltbench", f"{__version__} (report written from commit "
                    f"{_short_commit(git_commit() or 'unknown')})"),
        ("runs' git commits", _counted(commits)),
        ("torch", ", ".join(torch_versions) or "not recorded"),
        ("CUDA", ", ".join(sorted({_cuda_of(v) for v in torch_versions})) or "not recorded"),
        ("devices", _counted(records["device"])),
        ("GPU-hours", f"{records.loc[on_gpu, 'wall_s'].sum() / 3600:.2f} "
                      f"(wall time of the runs on GPUs; all runs: "
                      f"{records['wall_s'].sum() / 3600:.2f} h)"),
        ("runs dated", period),
        ("generated", generated),
    ]


# -- pages ----------------------------------------------------------------------------------

def _page_file(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dataset) + ".html"


def _dataset_page(store: ResultStore, records: pd.DataFrame, dataset: str,
                  method_order: Sequence[str] | None, published: Sequence[PublishedRow],
                  generated: str) -> DatasetPage:
    mine = with_compared_metrics(records[records["dataset"] == dataset])
    table = error_table(mine, dataset, method_order=method_order)
    _, labels = configurations(mine, method_order)
    error_view, error_data = _error_view(table, mine, labels, published)
    shot_views, shot_data = _shot_views(mine, labels, dataset, method_order, published)
    cost_view, cost_plots, cost_data = _cost(table, mine, labels)
    page = DatasetPage(dataset=dataset, file=_page_file(dataset), counts=status_counts(mine),
                       missing=sum(cell.missing for cell in table.cells.values()),
                       error_view=error_view, shot_views=shot_views,
                       plot_sections=_plot_sections(store, mine, labels, table),
                       provenance=_provenance(mine, generated), cost_view=cost_view)
    stem = page.file.removesuffix(".html")
    page.table_files = [f"{stem}_top1_err.csv", f"{stem}_shot_acc.csv", f"{stem}_cost.csv"]
    page.data = dict(zip(page.table_files, [error_data, shot_data, cost_data]))
    if cost_plots:
        page.plot_sections.append(("Error vs. cost", cost_plots))
    page.shift_views, shift_plots, shift_data = shifted_section(store, mine, labels, table.rows,
                                                                dataset)
    if page.shift_views:
        page.plot_sections.append(("Accuracy under shifted test label distributions",
                                   shift_plots))
        page.table_files.append(f"{stem}_shifted_acc.csv")
        page.data[page.table_files[-1]] = shift_data
    for _, plots in page.plot_sections:
        for plot in plots:
            plot.data_file = f"{stem}_{plot.slug}.csv"
            page.data[plot.data_file] = plot.data
    return page


def _markdown(pages: list[DatasetPage], ranks: RankPage | None, generated: str) -> str:
    parts = ["# ltbench results\n"]
    if not pages:
        parts.append("No results in the store yet.\n")
    for page in pages:
        counts = page.counts
        parts.append(f"## {markdown_escape(page.dataset)}\n\n{METRIC_NOTE}\n\n"
                     f"{PUBLISHED_NOTE}\n\nRuns: {counts['ok']} ok, {counts['failed']} failed, "
                     f"{counts['diverged']} diverged, {page.missing} missing.\n\n"
                     + to_markdown(page.error_view) + f"\n{SHOT_NOTE}\n\n"
                     + "\n".join(to_markdown(view) for view in page.shot_views)
                     + (f"\n{SHIFT_NOTE}\n\n" if page.shift_views else "")
                     + "\n".join(to_markdown(view) for view in page.shift_views)
                     + f"\n{COST_NOTE}\n\n" + to_markdown(page.cost_view))
    if ranks is not None:
        parts.append("## Ranks across datasets\n\n" + RANK_NOTE + "\n\n"
                     + "".join(f"{markdown_escape(note)}\n\n" for note in ranks.notes)
                     + to_markdown(ranks.view))
    parts.append(f"Generated by ltbench {__version__} on {generated}.\n")
    return "\n".join(parts)


def _latex(pages: list[DatasetPage], generated: str) -> str:
    views = [view for page in pages for view in [page.error_view, *page.shot_views]]
    return (f"% ltbench {__version__} results, generated {generated}; "
            f"needs \\usepackage{{booktabs}}\n" + "\n".join(to_latex(view) for view in views))


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("ltbench.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def write_report(store: ResultStore, out_dir: Path, method_order: Sequence[str] | None = None,
                 published: Sequence[PublishedRow] = ()) -> Path:
    """Write the report of ``store`` into ``out_dir``; return the path of ``index.html``.

    Rows are ordered by ``method_order`` (default: by family, :mod:`ltbench.families`), then
    the other methods sorted; ``published`` rows (:func:`~ltbench.report.published.load_published`)
    are shown beside the error-table cells they match. An empty store still gets a page that
    says so. Files are replaced atomically; other files in ``out_dir`` are left alone. Plots
    rendered for an earlier report of the same data come from the plot cache
    (:func:`ltbench.api.plots.make_plot`).
    """
    out_dir = Path(out_dir)
    records = store.read()
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pages = [_dataset_page(store, records, dataset, method_order, published, generated)
             for dataset in sorted(records["dataset"].unique())]
    ranks = rank_page(records, method_order) if pages else None
    if ranks is not None and ranks.chart is not None:
        ranks.chart.data_file = f"{ranks.chart.slug}.csv"
    environment = _environment()
    common = {"pages": pages, "ranks": ranks, "metric_note": METRIC_NOTE,
              "published_note": PUBLISHED_NOTE, "shot_note": SHOT_NOTE,
              "shift_note": SHIFT_NOTE, "cost_note": COST_NOTE, "version": __version__,
              "generated": generated}
    provenance = _provenance(records, generated)
    texts = {"index.html": environment.get_template("index.html.j2").render(
                 provenance=provenance, **common),
             "results.md": _markdown(pages, ranks, generated),
             "results.tex": _latex(pages, generated)}
    for page in pages:
        texts[page.file] = environment.get_template("dataset.html.j2").render(page=page,
                                                                               **common)
    data = {name: frame for page in pages for name, frame in page.data.items()}
    if ranks is not None:
        texts["ranks.html"] = environment.get_template("ranks.html.j2").render(
            rank_note=RANK_NOTE, provenance=provenance, **common)
        data["ranks.csv"] = ranks.data
        if ranks.chart is not None:
            data[ranks.chart.data_file] = ranks.chart.data
    try:
        (out_dir / "data").mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            atomicfile.write_text(out_dir / name, text, durable=False)
        for name, frame in data.items():
            atomicfile.write_text(out_dir / "data" / name, frame.to_csv(index=False),
                                  durable=False)
    except OSError as exc:
        raise BadInput(f"report folder {out_dir} is not writable: "
                       f"{exc.strerror or exc}") from exc
    prune_cache()
    return out_dir / "index.html"
