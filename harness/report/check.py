"""``ltbench check``: the store's means over seeds against the published numbers.

Scope: the published rows (:mod:`ltbench.report.published`) of the checked methods (default: the
methods in the store) on the datasets the store has runs of. Each row in scope is either *not
compared* — :func:`~ltbench.report.published.skip_reason` (unknown model selection, shifted split,
...), or no run of any method in the store has the row's setting (imbalance factor, count
profile, protocol preset and length), so nobody tried to reproduce it — or compared with every
store configuration that matches it (:func:`~ltbench.report.published.comparable`) and has runs at
its imbalance factor:

* *missing*: no such configuration has a run there, or none of its runs is ``ok`` with a finite
  value. A missing run is never a pass (architecture.md §8 pitfall 2);
* otherwise ``diff = mean − published`` over the ``ok`` runs, with the tolerance
  ``max(floor, k × SE)`` (architecture.md §8 pitfall 12: tolerances from seed-level standard
  error). With n ≥ 3 seeds SE is measured: sample std / √n. With n = 1 or 2 it cannot be: one
  run has no spread, two give a std estimate with one degree of freedom, and a single run
  deviates from its expected value by the whole seed spread, not a fraction of it. So for
  n < 3 ``SE = assumed_seed_std / √n``, with an assumed seed std of 1 point: one seed is allowed
  2 points, two seeds 1.41 (with the default floor and k). The result is *regression* when the
  mean is worse than published by more than the tolerance (error higher, accuracy lower),
  *improvement* when better by more, *pass* otherwise.

The default floor, 1 point, is below the ≥ 1.5-point spread between long-tailed subsets of
one dataset (protocols.md §4, subset RNG row) because ltbench fixes the subset (split seed 0 is
LDAM-DRW's); k = 2 is a two-sided ≈ 95 % band for a normal mean. The assumed seed std of 1
point is a deliberately loose stand-in until a cell has three seeds: ltbench's own CPU run of
``ce`` (CIFAR-10-LT IF 100) moves by about 0.5 point between its last epochs alone.

A check *fails* (:attr:`CheckResult.failed`) on any regression and on any missing comparison,
and, unless allowed, when it compared nothing at all: a gate must not pass on nothing.

This module must not import torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .published import (SELECTION_TEXT, PublishedRow, comparable, compared_column, matches_setting,
                        setting, skip_reason, with_compared_metrics)
from ..spec import format_imb
from .tables import Configuration, configurations, device_time, markdown_escape, method_rank

#: Outcomes in the order the summary lists them.
OUTCOMES = ("regression", "missing", "improvement", "pass")


#: Seeds from which a cell's standard error is measured rather than assumed.
MEASURED_SE_SEEDS = 3


@dataclass(frozen=True)
class Tolerance:
    """Allowed |mean − published| in metric points: ``max(floor, k × SE)``, SE measured over
    n ≥ :data:`MEASURED_SE_SEEDS` seeds, else ``assumed_seed_std / √n`` (module docstring)."""

    floor: float = 1.0
    k: float = 2.0
    assumed_seed_std: float = 1.0

    def of(self, n: int, measured_se: float) -> float:
        return max(self.floor, self.k * self.tolerated_se(n, measured_se))

    def tolerated_se(self, n: int, measured_se: float) -> float:
        if n >= MEASURED_SE_SEEDS:
            return measured_se
        return self.assumed_seed_std / math.sqrt(n)

    def basis(self, n: int) -> str:
        """Where the tolerated SE comes from, as the check table prints it."""
        return "SE" if n >= MEASURED_SE_SEEDS else f"σ={self.assumed_seed_std:g} assumed"


@dataclass
class Comparison:
    """One published row against one store configuration (or against nothing: missing)."""

    row: PublishedRow
    outcome: str
    config: str = ""
    n: int = 0
    failed: int = 0
    mean: float = math.nan
    std: float = math.nan
    se: float = math.nan
    tolerance: float = math.nan
    tolerance_basis: str = ""
    diff: float = math.nan
    reason: str = ""
    #: For a row selected on the best test epoch: the same runs' final-epoch mean, shown
    #: beside it (never compared) so the test-set selection's gain is visible.
    final_epoch_mean: float = math.nan
    #: The device time of its ok runs: Σ wall_s / pack_size (a pack shares its device).
    device_hours: float = math.nan
    #: "CPU", "GPU", or both: where those hours were spent.
    device_kind: str = ""


@dataclass
class CheckResult:
    comparisons: list[Comparison]
    not_compared: list[tuple[PublishedRow, str]]
    tolerance: Tolerance

    def counts(self) -> dict[str, int]:
        counts = {outcome: 0 for outcome in OUTCOMES}
        for comparison in self.comparisons:
            counts[comparison.outcome] += 1
        return counts

    @property
    def regressed(self) -> bool:
        return any(c.outcome == "regression" for c in self.comparisons)

    def failures(self, allow_empty: bool = False) -> list[str]:
        """Why the check fails as a gate (empty: it passes): regressions, missing
        comparisons, and (unless ``allow_empty``) having compared nothing."""
        counts = self.counts()
        reasons = [f"{counts[outcome]} {outcome}" for outcome in ("regression", "missing")
                   if counts[outcome]]
        if not self.comparisons and not allow_empty:
            reasons.append(f"nothing compared ({len(self.not_compared)} published rows in "
                           f"scope, none comparable)")
        return reasons


def _outcome(row: PublishedRow, diff: float, tolerance: float) -> str:
    worse = diff if row.lower_is_better else -diff
    if worse > tolerance:
        return "regression"
    if worse < -tolerance:
        return "improvement"
    return "pass"


def _compare(row: PublishedRow, label: str, group: pd.DataFrame,
             tolerance: Tolerance) -> Comparison:
    ok = group["status"] == "ok"
    values = group.loc[ok, compared_column(row)].to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    n, failed = len(values), int((~ok).sum())
    if n == 0:
        reason = (f"no ok run ({failed} failed or diverged)" if failed
                  else f"no finite {compared_column(row)} in its ok runs")
        return Comparison(row, "missing", config=label, failed=failed, reason=reason)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n >= 2 else math.nan
    se = std / math.sqrt(n) if n >= 2 else math.nan
    allowed = tolerance.of(n, se)
    diff = mean - row.value
    final = math.nan
    if row.selection == "best_test_epoch":
        final_values = group.loc[ok, row.metric].to_numpy(dtype=np.float64)
        final = float(np.nanmean(final_values)) if np.isfinite(final_values).any() else final
    hours, kind = device_time(group[ok])
    return Comparison(row, _outcome(row, diff, allowed), config=label, n=n, failed=failed,
                      mean=mean, std=std, se=se, tolerance=allowed,
                      tolerance_basis=tolerance.basis(n), diff=diff,
                      final_epoch_mean=final, device_hours=hours, device_kind=kind)


def _compare_row(row: PublishedRow, mine: pd.DataFrame, configs: list[Configuration],
                 labels: pd.Series, tolerance: Tolerance) -> list[Comparison]:
    """``mine``: the records of the row's method and dataset, with their configurations and
    labels (:func:`configurations`)."""
    if mine.empty:
        return [Comparison(row, "missing", reason=f"no run of {row.ltbench_method} on "
                                                  f"{row.ltbench_dataset}")]
    matching = [c.label for c in configs if comparable(row, c)]
    if not matching:
        return [Comparison(row, "missing", reason=f"no configuration with {setting(row)}")]
    at_imb = mine["imb_factor"].astype(float) == row.imb_factor
    comparisons = [_compare(row, label, mine[at_imb & (labels == label)], tolerance)
                   for label in matching if (at_imb & (labels == label)).any()]
    return comparisons or [Comparison(row, "missing",
                                      reason=f"no run at IF {format_imb(row.imb_factor)}")]


NOT_RUN = "no run of any method in its setting (imbalance factor, profile, protocol, epochs)"


def _setting_in_store(row: PublishedRow, settings: set[tuple]) -> bool:
    return any(dataset == row.ltbench_dataset and imb == row.imb_factor
               and matches_setting(row, epochs, profile, protocol)
               for dataset, imb, profile, epochs, protocol in settings)


def check(records: pd.DataFrame, published: Iterable[PublishedRow],
          methods: Sequence[str] | None = None, tolerance: Tolerance = Tolerance()
          ) -> CheckResult:
    """Compare ``records`` (:meth:`ResultStore.read`) with the ``published`` rows in scope.

    ``methods`` defaults to the methods in ``records``. Comparisons are sorted by outcome
    (:data:`OUTCOMES`), dataset, method family order, imbalance factor (descending), paper.
    """
    records = with_compared_metrics(records)
    datasets = set(records["dataset"])
    checked = set(records["method"]) if methods is None else set(methods)
    settings = set(zip(records["dataset"], records["imb_factor"].astype(float),
                       records["profile"], records["epochs"].astype(int),
                       [json.loads(h).get("protocol") for h in records["hparams"]]))
    comparisons: list[Comparison] = []
    not_compared: list[tuple[PublishedRow, str]] = []
    by_run = {key: (runs, *configurations(runs))
              for key, runs in records.groupby(["dataset", "method"], sort=False)}
    no_runs = (records.iloc[0:0], [], pd.Series(dtype=object))
    for row in published:
        if row.ltbench_method not in checked or row.ltbench_dataset not in datasets:
            continue
        reason = skip_reason(row) or (None if _setting_in_store(row, settings) else
                                      NOT_RUN)
        if reason:
            not_compared.append((row, reason))
            continue
        runs = by_run.get((row.ltbench_dataset, row.ltbench_method), no_runs)
        comparisons += _compare_row(row, *runs, tolerance)
    rank = method_rank(records)
    comparisons.sort(key=lambda c: (OUTCOMES.index(c.outcome), c.row.ltbench_dataset,
                                    rank(c.row.ltbench_method), -c.row.imb_factor,
                                    c.row.split, c.row.metric, c.row.paper, c.row.table,
                                    c.config))
    return CheckResult(comparisons, not_compared, tolerance)


def _number(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _ours(c: Comparison) -> str:
    if c.n == 0:
        return "—"
    spread = f" ± {c.se:.2f}" if math.isfinite(c.se) else ""
    return f"{c.mean:.2f}{spread} (n={c.n})"


def _summary_line(result: CheckResult) -> str:
    counts = result.counts()
    return ", ".join(f"{counts[outcome]} {outcome}" for outcome in OUTCOMES)


def to_markdown(result: CheckResult) -> str:
    """The comparisons as an aligned Markdown table (readable as plain text in a CI log)."""
    tol = result.tolerance
    lines = [f"## ltbench check: {_summary_line(result)}", "",
             f"ltbench = mean ± standard error over the ok runs of each configuration; "
             f"Δ = ltbench − published (points); tolerance = max({tol.floor:g}, "
             f"{tol.k:g} × SE), SE measured over n ≥ {MEASURED_SE_SEEDS} seeds, else "
             f"{tol.assumed_seed_std:g} / √n (an assumed seed std: fewer seeds cannot "
             f"measure it); cost = device hours of its runs (wall time / pack size). Error: "
             f"lower is better; accuracy: higher is better. Where the paper selected the best "
             f"test epoch, so does the comparison; the final-epoch mean of the same runs is "
             f"shown beside it and never compared.", ""]
    header = ["outcome", "configuration", "dataset", "IF", "split", "metric", "selection",
              "ltbench ± SE", "final epoch", "published", "Δ", "tol", "tol from", "cost",
              "source", "note"]
    body = [[c.outcome.upper() if c.outcome == "regression" else c.outcome,
             c.config or c.row.ltbench_method, c.row.ltbench_dataset,
             format_imb(c.row.imb_factor), c.row.split, c.row.metric,
             SELECTION_TEXT[c.row.selection], _ours(c), _number(c.final_epoch_mean),
             f"{c.row.value:g}",
             _number(c.diff, signed=True), _number(c.tolerance), c.tolerance_basis or "—",
             f"{c.device_hours:.2f} {c.device_kind}-h" if c.n else "—",
             f"{c.row.label()} ({c.row.provenance})", c.reason]
            for c in result.comparisons]
    body = [[markdown_escape(cell) for cell in cells] for cells in body]
    if body:
        widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(cell.ljust(width)
                                     for cell, width in zip(cells, widths)) + " |"

        lines += [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += [line(cells) for cells in body]
    else:
        lines.append("No published number matches the methods and datasets in the store.")
    if result.not_compared:
        reasons: dict[str, int] = {}
        for _, reason in result.not_compared:
            reasons[reason] = reasons.get(reason, 0) + 1
        lines += ["", f"Not compared: {len(result.not_compared)} published rows in scope ("
                  + "; ".join(f"{count}: {markdown_escape(reason)}"
                              for reason, count in sorted(reasons.items()))
                  + ")."]
    return "\n".join(lines) + "\n"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _row_json(row: PublishedRow) -> dict[str, Any]:
    return {"paper": row.paper, "table": row.table, "method": row.method,
            "ltbench_method": row.ltbench_method, "dataset": row.ltbench_dataset,
            "imb_factor": row.imb_factor, "split": row.split, "metric": row.metric,
            "selection": row.selection, "published": row.value, "source": row.source,
            "provenance": row.provenance, "where": row.where}


def to_json(result: CheckResult, allow_empty: bool = False) -> dict[str, Any]:
    """The result as JSON-ready data (NaN as null); ``failures`` as the gate judges it."""
    return {
        "tolerance": {"floor": result.tolerance.floor, "k": result.tolerance.k,
                      "assumed_seed_std": result.tolerance.assumed_seed_std,
                      "measured_se_seeds": MEASURED_SE_SEEDS},
        "counts": {**result.counts(), "not_compared": len(result.not_compared)},
        "regressed": result.regressed,
        "failures": result.failures(allow_empty),
        "comparisons": [{**_row_json(c.row), "outcome": c.outcome, "configuration": c.config,
                         "n": c.n, "failed": c.failed, "mean": _finite(c.mean),
                         "std": _finite(c.std), "se": _finite(c.se),
                         "tolerance": _finite(c.tolerance),
                         "tolerance_basis": c.tolerance_basis, "diff": _finite(c.diff),
                         "final_epoch_mean": _finite(c.final_epoch_mean),
                         "device_hours": _finite(c.device_hours),
                         "device_kind": c.device_kind,
                         "reason": c.reason}
                        for c in result.comparisons],
        "not_compared": [{**_row_json(row), "reason": reason}
                         for row, reason in result.not_compared],
    }
