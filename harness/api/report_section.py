"""What a plugin adds to the report: a section of plots, keyed by the artifact it draws.

A method that stores an artifact (:meth:`ltbench.api.Method.artifacts`, written as
``<name>/<run_id>.parquet``) shows it on the report's dataset pages by registering a section
builder under the artifact's name in the entry-point group ``ltbench.report_sections``::

    [project.entry-points."ltbench.report_sections"]
    eps = "ltbench.methods.weight_report:weight_section"

On every dataset page, after its own sections (training counts, per-class accuracy, learning
curves), the report calls the builder of each registered artifact name the store holds, in name
order, with a :class:`SectionInput`; the builder returns a :class:`ReportSection`, or None when
none of the page's runs has anything to show. Its plots (:class:`~ltbench.api.plots.Plot`) get
their CSV files like the report's own. The report runs without torch, so a builder's module
must not import it: it reads artifacts, it does not recompute them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import pandas as pd

from .plots import Plot, cached_data


@dataclass(frozen=True)
class SectionInput:
    """One dataset page, as a section builder sees it.

    * ``columns``: the page's imbalance factors, in table column order;
    * ``rows``: its configuration labels (a method with one set of hyper-parameters), in table
      row order;
    * ``ok_runs(imb, label)``: the records (one row per run, the columns of
      :data:`ltbench.store.result_store.RECORD_SCHEMA`) of that cell's runs with status
      ``ok``;
    * ``artifact(name, run_id)``: that run's artifact ``name``, or None when it has none (or its
      file is damaged, which ``ltbench status`` reports);
    * ``run_files(run_id)``: a description of the run and its files (record and artifacts)
      that changes when any of them changes, for :meth:`cell_data`.
    """

    dataset: str
    columns: Sequence[float]
    rows: Sequence[str]
    ok_runs: Callable[[float, str], pd.DataFrame]
    artifact: Callable[[str, str], pd.DataFrame | None]
    run_files: Callable[[str], Hashable]

    def cell_data(self, compute: Callable[[SectionInput, pd.DataFrame], pd.DataFrame | None],
                  runs: pd.DataFrame) -> pd.DataFrame | None:
        """``compute(self, runs)``: the data of a plot of ``runs`` (e.g. from
        :attr:`ok_runs`), derived from their artifacts. Kept in the plot cache keyed by the runs'
        files and ``compute``'s code (:func:`~ltbench.api.plots.cached_data`), so that a report
        of unchanged runs reads no artifact: use it where the artifacts are large."""
        return cached_data(lambda: compute(self, runs), compute,
                           (self.dataset, [self.run_files(run_id)
                                           for run_id in sorted(runs["run_id"])]))


@dataclass(frozen=True)
class ReportSection:
    """A titled list of plots on a dataset page."""

    title: str
    plots: Sequence[Plot]


#: The type of a section builder registered in ``ltbench.report_sections``.
SectionBuilder = Callable[[SectionInput], "ReportSection | None"]
