"""Result tables from store records: configurations × imbalance factors, mean ± std over seeds.

Data first: :func:`error_table` aggregates records into an :class:`ErrorTable` of
:class:`Cell` s; :class:`TableView` is a table ready to print (cell texts, bold best cells,
published values with footnotes), rendered by :func:`to_markdown`, :func:`to_latex` (booktabs)
and the report's HTML templates. :func:`run_summary` prints an :class:`ErrorTable` as text.

Rules (architecture.md §8 pitfalls 1 and 2):

* only ``status == "ok"`` runs enter a mean; ``failed`` and ``diverged`` runs are counted and
  shown next to the number, never averaged in; so are *missing* runs, the seeds the dataset's
  runs use that a configuration has no record for (the same expectation as ``ltbench status``);
* a cell without a finite value renders "—", never a number (DomainBed prints ``X`` tables,
  facebookresearch/DomainBed #127; classifier-balancing's ``shot_acc`` reports an empty group
  as 0);
* the spread is the sample standard deviation over seeds (ddof = 1), NaN for fewer than two;
  the 95 % confidence interval of the mean is the t-interval over seeds, shown from three runs
  on (:mod:`ltbench.report.stats`), and :func:`significant_flags` marks the cells of a column
  that differ significantly from its best.

A row is one :class:`Configuration`: a method with one set of resolved hyper-parameters, count
profile and harness version. Runs of different configurations are never pooled, e.g. an
``--epochs 1`` smoke run never averages into the 200-epoch numbers. Rows follow the methods'
families (:mod:`ltbench.families`), then their names.

This module must not import torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..families import family_rank
from ..spec import canonical_json, format_imb
from ..store.result_store import STATUSES
from .stats import MIN_RUNS, compare_to_best, t_interval

MISSING = "—"

@dataclass
class Cell:
    """One table entry: statistics over the ``ok`` runs, and the runs that are not in them;
    ``values`` holds each ok run's value by (split seed, training seed), for tests that pair
    runs."""

    mean: float
    std: float
    n: int
    failed: int
    missing: int = 0
    values: dict[tuple[int, int], float] = field(default_factory=dict)

    @property
    def interval(self) -> tuple[float, float]:
        """The 95 % t-interval of the mean (NaNs below :data:`~ltbench.report.stats.MIN_RUNS`
        runs), clipped to 0 … 100, the range of every percentage a cell holds: an accuracy of
        100 ± 2 has no upper end above 100."""
        low, high = t_interval(list(self.values.values()))
        if math.isnan(low):
            return low, high
        return max(low, 0.0), min(high, 100.0)


@dataclass(frozen=True)
class Configuration:
    """One table row: ``method`` run with ``settings`` (hparams, profile, harness version)."""

    label: str
    method: str
    settings: Mapping[str, Any]

    @property
    def epochs(self) -> int | None:
        epochs = self.settings.get("epochs")
        return int(epochs) if isinstance(epochs, (int, float)) else None

    @property
    def profile(self) -> str:
        return str(self.settings["profile"])

    @property
    def protocol(self) -> str | None:
        """The protocol preset (``ldam``, ``jamal``, ...), None for runs that predate them."""
        protocol = self.settings.get("protocol")
        return protocol if isinstance(protocol, str) else None


@dataclass
class ErrorTable:
    """A metric over configurations (``rows``, labels) × imbalance factors (``columns``).

    ``cells`` has an entry for every (row, column) pair; ``configs`` maps a row label to its
    :class:`Configuration`.
    """

    dataset: str
    metric: str
    columns: list[float]
    rows: list[str]
    cells: dict[tuple[str, float], Cell]
    configs: dict[str, Configuration] = field(default_factory=dict)


def _settings(hparams: str, profile: str, harness_version: str) -> dict[str, Any]:
    """The settings that distinguish configurations of one method in one dataset."""
    return {**json.loads(hparams), "profile": profile, "harness_version": harness_version}


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


def method_rank(records: pd.DataFrame, method_order: Sequence[str] | None = None):
    """Sort key of method names: ``method_order`` when given, else the family of the method's
    records (``method_family``, in :data:`~ltbench.families.FAMILIES` order); then by name."""
    if method_order is not None:
        order = list(method_order)
        return lambda method: (order.index(method) if method in order else len(order), method)
    known = records.dropna(subset=["method_family"]) if "method_family" in records \
        else records.iloc[0:0]
    family = dict(zip(known["method"], known["method_family"]))
    return lambda method: (family_rank(family.get(method)), method)


def configurations(records: pd.DataFrame, method_order: Sequence[str] | None = None
                   ) -> tuple[list[Configuration], pd.Series]:
    """The configurations of ``records`` (one dataset) in row order, and each record's label.

    The label Series is aligned with ``records.index``.
    """
    # a leaderboard has thousands of records but few distinct settings: parse each once
    triples = list(zip(records["hparams"], records["profile"], records["harness_version"]))
    key_of: dict[tuple, str] = {}
    setting_of: dict[str, dict[str, Any]] = {}
    for triple in set(triples):
        setting = _settings(*triple)
        key_of[triple] = canonical_json(setting)
        setting_of[key_of[triple]] = setting
    keys = [key_of[triple] for triple in triples]
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for method, key in zip(records["method"], keys):
        by_method.setdefault(method, {})[key] = setting_of[key]
    configs: list[Configuration] = []
    label_of: dict[tuple[str, str], str] = {}
    for method in sorted(by_method, key=method_rank(records, method_order)):
        ordered = sorted(by_method[method])
        labelled = zip(ordered, _config_labels(method, [by_method[method][k] for k in ordered]))
        for key, label in sorted(labelled, key=lambda pair: pair[1]):
            label_of[(method, key)] = label
            configs.append(Configuration(label, method, by_method[method][key]))
    labels = pd.Series([label_of[(method, key)] for method, key in zip(records["method"], keys)],
                       index=records.index, dtype=object)
    return configs, labels


def cell_of(runs: pd.DataFrame, column: str, failed: int = 0, missing: int = 0) -> Cell:
    """The cell of the finite values of ``column`` in ``runs`` (rows with ``split_seed`` and
    ``seed``, all to be averaged)."""
    values = {(int(split), int(seed)): float(value) for split, seed, value
              in zip(runs["split_seed"], runs["seed"], runs[column].to_numpy(dtype=np.float64))
              if math.isfinite(value)}
    array = np.array(list(values.values()))
    n = len(array)
    return Cell(mean=float(array.mean()) if n else math.nan,
                std=float(array.std(ddof=1)) if n >= 2 else math.nan,
                n=n, failed=failed, missing=missing, values=values)


def _cell(group: pd.DataFrame, metric: str, expected_seeds: set[int]) -> Cell:
    ok = group["status"] == "ok"
    return cell_of(group[ok], metric, failed=int((~ok).sum()),
                   missing=len(expected_seeds - {int(seed) for seed in group["seed"]}))


def error_table(records: pd.DataFrame, dataset: str, metric: str = "top1_err",
                method_order: Sequence[str] | None = None) -> ErrorTable:
    """Aggregate ``records`` (as from :meth:`ResultStore.read`) of ``dataset`` into a table.

    Columns are the imbalance factors present, descending. Rows are ordered by method
    (:func:`method_rank`), then label. The expected seeds of every cell are all seeds of the
    dataset's records.
    """
    subset = records[records["dataset"] == dataset]
    columns = sorted({float(imb) for imb in subset["imb_factor"]}, reverse=True)
    configs, labels = configurations(subset, method_order)
    expected = {int(seed) for seed in subset["seed"]}
    empty = subset.iloc[0:0]
    groups = {(label, float(imb)): group for (label, imb), group
              in subset.groupby([labels, subset["imb_factor"].astype(float)])}
    cells = {(config.label, imb): _cell(groups.get((config.label, imb), empty), metric, expected)
             for config in configs for imb in columns}
    return ErrorTable(dataset=dataset, metric=metric, columns=columns,
                      rows=[config.label for config in configs], cells=cells,
                      configs={config.label: config for config in configs})


def device_time(runs: pd.DataFrame) -> tuple[float, str]:
    """Device hours of ``runs``, each its share of its pack's wall time (``wall_s /
    pack_size``; a record without ``pack_size`` counts as trained alone), and the kind of
    device they ran on (``GPU``, ``CPU`` or ``CPU+GPU``; empty for no runs)."""
    shares = runs["wall_s"].astype(float) / runs["pack_size"].astype(float).fillna(1.0)
    kinds = {"CPU" if str(device).startswith("cpu") else "GPU" for device in runs["device"]}
    return float(shares.sum()) / 3600.0, "+".join(sorted(kinds))


def format_cell(cell: Cell) -> str:
    """``"29.64 ± 0.31 (n=3, CI 28.87–30.41)"`` (mean ± std, the 95 % t-interval),
    ``"29.64 ± 0.31 (n=2, no CI)"``, ``"29.64 (n=1, no CI)"`` or ``"—"``; then
    ``" (k failed, m missing)"``."""
    low, high = cell.interval
    ci = f"CI {low:.2f}–{high:.2f}" if math.isfinite(low) else "no CI"
    if cell.n == 0:
        text = MISSING
    elif cell.n == 1:
        text = f"{cell.mean:.2f} (n=1, {ci})"
    else:
        text = f"{cell.mean:.2f} ± {cell.std:.2f} (n={cell.n}, {ci})"
    unusable = [f"{count} {what}" for count, what in ((cell.failed, "failed"),
                                                       (cell.missing, "missing")) if count]
    return f"{text} ({', '.join(unusable)})" if unusable else text


def column_header(imb: float) -> str:
    return f"IF {format_imb(imb)}"


_MARKDOWN_SPECIALS = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|"}


def markdown_escape(text: str) -> str:
    """``text`` shown as itself in a Markdown table cell or line: Markdown passes raw HTML
    through, so ``&``, ``<`` and ``>`` become entities (a method name, a published note or a
    label from a record never turns into markup or script), and ``|`` cannot end the cell."""
    return "".join(_MARKDOWN_SPECIALS.get(char, char) for char in text)


def _markdown_line(cells: list[str]) -> str:
    return "| " + " | ".join(markdown_escape(cell) for cell in cells) + " |"


@dataclass
class CellView:
    """One printable cell: its text, whether it is the column's best (or significantly worse
    than it: :func:`significant_flags`), a published annotation."""

    text: str
    missing: bool = False
    best: bool = False
    published: str = ""
    tooltip: str = ""
    significant: bool = False


@dataclass
class TableView:
    """A printable table: a caption, a header, labelled rows of cells and footnotes."""

    caption: str
    header: list[str]
    rows: list[tuple[str, list[CellView]]]
    footnotes: list[str] = field(default_factory=list)


def best_flags(cells: Sequence[Cell], lower_is_better: bool) -> list[bool]:
    """Which cells hold the best mean as printed (2 decimals); ties are all best."""
    shown = [round(cell.mean, 2) if cell.n else None for cell in cells]
    candidates = [value for value in shown if value is not None]
    if not candidates:
        return [False] * len(cells)
    best = min(candidates) if lower_is_better else max(candidates)
    return [value == best for value in shown]


#: What :func:`significant_flags` marks, for the notes under a table.
SIGNIFICANCE_NOTE = (f"CI: the 95 % t-interval of the mean over seeds, from {MIN_RUNS} runs "
                     f"on. †: differs from the column's bold best at α = 0.05 — paired t-test "
                     f"over runs with the same split and training seed (Welch's t-test where "
                     f"fewer than {MIN_RUNS} pair), Holm-corrected over the column; cells with "
                     f"fewer than {MIN_RUNS} runs are not tested.")
SIGNIFICANT_MARK = " †"


def significant_flags(cells: Sequence[Cell], best: Sequence[bool]) -> list[bool]:
    """Which ``cells`` of a column differ significantly from its ``best`` cell (of several
    tied, the one with most runs: :func:`~ltbench.report.stats.compare_to_best`); cells tied
    as best are never marked."""
    if not any(best):
        return [False] * len(cells)
    reference = max((i for i in range(len(cells)) if best[i]), key=lambda i: cells[i].n)
    tested = compare_to_best({i: cell.values for i, cell in enumerate(cells) if not best[i]
                              or i == reference}, reference)
    return [i in tested and tested[i].significant for i in range(len(cells))]


def column_views(cells: Sequence[Cell], lower_is_better: bool) -> list[CellView]:
    """The printable cells of one table column: text, bold best, † where significantly worse
    than the best (:func:`significant_flags`)."""
    best = best_flags(cells, lower_is_better)
    marked = significant_flags(cells, best)
    return [CellView(format_cell(cell) + (SIGNIFICANT_MARK if mark else ""),
                     missing=cell.n == 0, best=is_best, significant=mark)
            for cell, is_best, mark in zip(cells, best, marked)]


def cell_statistics(cell: Cell, view: CellView) -> dict[str, Any]:
    """A cell's statistics for a table's CSV: mean, std, n, its 95 % interval, and whether
    its view marks it significantly worse than its column's best."""
    low, high = cell.interval
    return {"mean": cell.mean, "std": cell.std, "n": cell.n, "ci95_low": low, "ci95_high": high,
            "significantly_worse_than_best": view.significant}


def to_markdown(view: TableView) -> str:
    """``view`` as a Markdown table: best cells in bold, published values after a ``·``."""
    def text(cell: CellView) -> str:
        shown = f"**{cell.text}**" if cell.best else cell.text
        return f"{shown} · {cell.published}" if cell.published else shown

    out = [f"{markdown_escape(view.caption)}\n", _markdown_line(view.header),
           "|---|" + "---:|" * (len(view.header) - 1)]
    out += [_markdown_line([label] + [text(cell) for cell in cells]) for label, cells in view.rows]
    notes = "".join(f"\n{markdown_escape(note)}\n" for note in view.footnotes)
    return "\n".join(out) + "\n" + notes


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "--", "Δ": r"$\Delta$",
                   "·": r"$\cdot$", "–": "--", "†": r"\textdagger{}", "α": r"$\alpha$"}


def latex_escape(text: str) -> str:
    """``text`` safe inside a LaTeX table cell (specials escaped, ± and Δ as math)."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def to_latex(view: TableView) -> str:
    """``view`` as a booktabs ``table`` (needs ``\\usepackage{booktabs}``); best cells bold."""
    def text(cell: CellView) -> str:
        shown = latex_escape(cell.text)
        shown = rf"\textbf{{{shown}}}" if cell.best else shown
        return shown + (rf" {{\scriptsize {latex_escape(cell.published)}}}"
                        if cell.published else "")

    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(view.caption)}}}",
             r"\begin{tabular}{l" + "r" * (len(view.header) - 1) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in view.header) + r" \\", r"\midrule"]
    lines += [" & ".join([latex_escape(label)] + [text(cell) for cell in cells]) + r" \\"
              for label, cells in view.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\smallskip{{\footnotesize {latex_escape(note)}}}" for note in view.footnotes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


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
        grid += [[row] + [format_cell(table.cells[(row, imb)]) for imb in table.columns]
                 for row in table.rows]
        widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
        body = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip()
                for line in grid]
        blocks.append(f"{dataset}: top-1 error (%), final epoch, mean ± std over seeds\n"
                      + "\n".join(body) + "\n")
    return "\n".join(blocks)
