"""The report section of the meta-learned ε and example weights (artifacts ``eps`` and
``eps_summary``, :mod:`ltbench.methods.weight_histograms`): L2RW, MW-Net, Jamal et al.

Per configuration and imbalance factor, two plots of the last recorded epoch: the ε (and weight)
histograms by head / medium / tail training-count group, and each class's mean ε (and weight)
against its training count, which Jamal et al. (CVPR 2020, §4) expect to grow toward the tail.
Registered as the report section of the ``eps`` artifact (:mod:`ltbench.api.report_section`);
like the report, this module must not import torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ltbench.api.plots import Plot, configuration_slug, make_plot, style
from ltbench.api.report_section import ReportSection, SectionInput
from ltbench.metrics.headline import shot_group_of_classes
from ltbench.spec import format_imb

#: Display names of the training-count groups (many / medium / few, protocols.md §1.2).
GROUP_NAMES = {"many": "head", "medium": "medium", "few": "tail"}
QUANTITY_NAMES = {"eps": "ε", "weight": "weight"}


def weight_section(page: SectionInput) -> ReportSection | None:
    """Both plots of every configuration and imbalance factor with recorded ε, or None."""
    plots = []
    for imb in page.columns:
        for label in page.rows:
            runs = page.ok_runs(imb, label)
            if (histogram := page.cell_data(eps_histogram, runs)) is not None:
                plots.append(eps_histograms(page.dataset, imb, label, histogram))
            if (means := page.cell_data(eps_class_means, runs)) is not None:
                plots.append(eps_by_class(page.dataset, imb, label, means))
    return ReportSection("Meta-learned ε and weights: by head / medium / tail group and per "
                         "class", plots) if plots else None


def rebin(lo: np.ndarray, hi: np.ndarray, count: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the bins ``[lo, hi)`` moved onto the bins between ``edges``.

    Each count is spread in proportion to its bin's overlap with the new bins (uniform within
    a bin), so totals are kept and the result may be fractional; a zero-width bin counts where
    its edge falls.
    """
    width = hi - lo
    overlap = np.clip(np.minimum(hi[:, None], edges[None, 1:])
                      - np.maximum(lo[:, None], edges[None, :-1]), 0.0, None)
    share = np.divide(overlap, width[:, None], out=np.zeros_like(overlap),
                      where=width[:, None] > 0)
    points = np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, len(edges) - 2)
    share[width <= 0, points[width <= 0]] = 1.0
    return (count[:, None] * share).sum(axis=0)


def eps_histogram(page: SectionInput, runs: pd.DataFrame) -> pd.DataFrame | None:
    """The last recorded epoch's ε / weight histograms of ``runs`` per training-count group.

    Every run bins each epoch over its own value range (``eps`` artifact), so the runs'
    histograms are moved by :func:`rebin` onto common equal-width bins spanning all of them (as
    many as a run has), then summed over the classes of each group and over seeds.
    """
    parts = []
    for _, run in runs.iterrows():
        eps = page.artifact("eps", run["run_id"])
        if eps is None or eps.empty or run["train_class_counts"] is None:
            continue
        groups = shot_group_of_classes(run["train_class_counts"])
        last = eps[eps["epoch"] == eps["epoch"].max()]
        parts.append(last.assign(group=groups[last["class"].to_numpy(dtype=int)]))
    if not parts:
        return None
    merged = pd.concat(parts, ignore_index=True)
    rows = []
    for quantity, values in merged.groupby("quantity"):
        edges = np.linspace(values["lo"].min(), values["hi"].max(),
                            int(values["bin"].max()) + 2)
        for group, part in values.groupby("group"):
            summed = part.groupby(["lo", "hi"], as_index=False)["count"].sum()
            counts = rebin(summed["lo"].to_numpy(float), summed["hi"].to_numpy(float),
                           summed["count"].to_numpy(float), edges)
            rows += [{"quantity": quantity, "group": group, "epoch": int(part["epoch"].max()),
                      "bin": b, "lo": edges[b], "hi": edges[b + 1], "count": counts[b]}
                     for b in range(len(counts))]
    return pd.DataFrame(rows)


def eps_class_means(page: SectionInput, runs: pd.DataFrame) -> pd.DataFrame | None:
    """Each class's mean ε / weight at the last recorded epoch (``eps_summary`` artifact),
    averaged over the seeds of ``runs``, with its training count and group."""
    parts = []
    for _, run in runs.iterrows():
        summary = page.artifact("eps_summary", run["run_id"])
        if summary is None or summary.empty or run["train_class_counts"] is None:
            continue
        last = summary[summary["epoch"] == summary["epoch"].max()]
        parts.append(last[["quantity", "class", "mean"]])
    if not parts:
        return None
    means = (pd.concat(parts, ignore_index=True).dropna(subset=["mean"])
             .groupby(["quantity", "class"], as_index=False)["mean"].mean())
    counts = np.asarray(runs["train_class_counts"].iloc[0])
    classes = means["class"].to_numpy(dtype=int)
    return means.assign(train_count=counts[classes],
                        group=shot_group_of_classes(counts)[classes])


def _quantity_axes(figure: Figure, quantities: list[str]):
    """One row of axes per recorded quantity (ε, weight), paired with its name."""
    return zip(np.atleast_1d(figure.subplots(len(quantities), 1)), quantities)


def _quantity_names(quantities: list[str]) -> str:
    return " and ".join(QUANTITY_NAMES.get(q, q) for q in quantities)


def _configuration_plot(prefix: str, label: str, imb: float, title_suffix: str, caption: str,
                        draw, quantities: list[str], data: pd.DataFrame) -> Plot:
    """One configuration's plot, one row of axes per quantity, its data labelled with the
    configuration and imbalance factor."""
    return make_plot(f"{label}, IF {format_imb(imb)}{title_suffix}", caption, draw,
                     2.8 * len(quantities), data.assign(configuration=label, imb_factor=imb),
                     configuration_slug(prefix, label, imb))


def eps_histograms(dataset: str, imb: float, label: str, histogram: pd.DataFrame) -> Plot:
    """ε (and weight) histograms of one configuration by head / medium / tail group.

    ``histogram``: long format with ``quantity``, ``epoch``, ``group`` (many / medium / few),
    ``lo``, ``hi``, ``count`` — the last recorded epoch, summed over classes and seeds. Each
    group's counts are normalised to fractions so that groups of different sizes compare.
    """
    quantities = sorted(histogram["quantity"].unique())

    def draw(figure: Figure, narrow: bool) -> None:
        for axes, quantity in _quantity_axes(figure, quantities):
            mine = histogram[histogram["quantity"] == quantity]
            for index, group in enumerate(GROUP_NAMES):
                bins = mine[mine["group"] == group].sort_values("lo")
                total = int(bins["count"].sum())
                if total == 0:
                    continue
                edges = np.append(bins["lo"].to_numpy(), bins["hi"].to_numpy()[-1])
                axes.stairs(bins["count"].to_numpy() / total, edges,
                            label=f"{GROUP_NAMES[group]} (n={total})",
                            color=style(index)["color"], linewidth=1.2)
            axes.set_xlabel(QUANTITY_NAMES.get(quantity, quantity))
            axes.set_ylabel("fraction of examples")
            axes.legend(frameon=False, fontsize="small")

    return _configuration_plot(
        "eps", label, imb, "",
        f"{dataset}, IF {format_imb(imb)}, {label}: distribution of the recorded "
        f"{_quantity_names(quantities)} at epoch {int(histogram['epoch'].max())}, summed over "
        f"the classes of each group and over seeds, as fractions of the group's examples.",
        draw, quantities, histogram)


def eps_by_class(dataset: str, imb: float, label: str, means: pd.DataFrame) -> Plot:
    """Mean ε (and weight) of every class against its training count, one configuration.

    ``means``: long format with ``quantity``, ``class``, ``train_count``, ``group`` and
    ``mean`` — each class's mean over its examples at the last recorded epoch, averaged over
    seeds.
    """
    quantities = sorted(means["quantity"].unique())

    def draw(figure: Figure, narrow: bool) -> None:
        for axes, quantity in _quantity_axes(figure, quantities):
            mine = means[means["quantity"] == quantity]
            for index, group in enumerate(GROUP_NAMES):
                part = mine[mine["group"] == group]
                if not part.empty:
                    axes.scatter(part["train_count"], part["mean"], s=14,
                                 label=GROUP_NAMES[group], color=style(index)["color"])
            axes.axhline(0.0 if quantity == "eps" else 1.0, color="0.6", linewidth=0.8,
                         linestyle=":")
            axes.set_xscale("log")
            axes.set_xlabel("training images of the class (log scale)")
            axes.set_ylabel(f"mean {QUANTITY_NAMES.get(quantity, quantity)}")
            axes.legend(frameon=False, fontsize="small")

    return _configuration_plot(
        "eps_mean", label, imb, ": mean per class",
        f"{dataset}, IF {format_imb(imb)}, {label}: mean {_quantity_names(quantities)} of each "
        f"class's examples at the last recorded epoch, averaged over seeds, against the "
        f"class's training images.",
        draw, quantities, data=means)
