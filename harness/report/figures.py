"""The report's plots: matplotlib figures as self-contained SVG, each with the data behind it.

Every function returns a :class:`Plot`: the figure rendered twice as SVG ``data:`` URIs, for
wide screens and for phones (narrower, taller, so that text stays legible without zooming; the
page picks one with a ``<picture>`` media query), and a long-format DataFrame of exactly the
numbers drawn, which the report writes as CSV. Embedding as ``data:`` URIs keeps every page one
file that opens from disk with no request. Figures are built on
:class:`matplotlib.figure.Figure` directly (no pyplot, no global figure state) and rendered by
the SVG backend with a fixed hash salt and no date, so the same data gives the same bytes.

Head / medium / tail are the many / medium / few training-count groups (> 100, 20–100, < 20
images; :func:`ltbench.metrics.headline.shot_groups`, protocols.md §1.2).

This module must not import torch.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..metrics.headline import FEW_THRESHOLD, MANY_THRESHOLD, shot_groups
from ..spec import format_imb

#: Display names of the training-count groups in ε plots.
GROUP_NAMES = {"many": "head", "medium": "medium", "few": "tail"}
QUANTITY_NAMES = {"eps": "ε", "weight": "weight"}
_RC = {"svg.hashsalt": "ltbench", "svg.fonttype": "none", "font.size": 9,
       "axes.spines.top": False, "axes.spines.right": False}
#: Figure widths in inches: the page shows wide figures up to 860 px, phone figures at 390 px.
WIDE, NARROW = 7.5, 4.0
# Enough distinct colour × marker pairs for every method of FAMILY_ORDER.
_MARKERS = "os^Dv<>ph*X"


@dataclass
class Plot:
    """A rendered figure (wide and narrow) and the data drawn in it."""

    title: str
    caption: str
    data_uri: str
    narrow_data_uri: str
    data: pd.DataFrame
    slug: str  # names the CSV file of ``data``
    data_file: str = ""  # set by the report once it names the file


def _style(index: int) -> dict:
    return {"color": matplotlib.colormaps["tab10"](index % 10),
            "marker": _MARKERS[(index // 10) % len(_MARKERS)]}


def _svg_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _render(draw: Callable[[Figure, bool], None], height: float) -> tuple[str, str]:
    """``draw(figure, narrow)`` at both widths; the narrow one is 1.5× taller."""
    uris = []
    for width, narrow in ((WIDE, False), (NARROW, True)):
        with matplotlib.rc_context(_RC):
            figure = Figure(figsize=(width, height * (1.5 if narrow else 1.0)),
                            layout="constrained")
            draw(figure, narrow)
            uris.append(_svg_uri(figure))
    return uris[0], uris[1]


def _legend(figure: Figure, count: int, narrow: bool) -> None:
    if count:
        figure.legend(loc="outside lower center", ncols=min(2 if narrow else 3, count),
                      frameon=False, fontsize="small")


def per_class_accuracy(dataset: str, imb: float,
                       series: Sequence[tuple[str, np.ndarray, np.ndarray, int]],
                       style_of: Mapping[str, int]) -> Plot:
    """Per-class test accuracy against the class's training count, one series per row label.

    ``series``: (label, training counts per class, mean accuracy per class over the runs,
    number of runs); ``style_of[label]`` picks the label's colour and marker, so that a
    configuration looks the same in every plot of a page.
    """
    def draw(figure: Figure, narrow: bool) -> None:
        axes = figure.add_subplot()
        for label, counts, accuracy, _ in series:
            order = np.argsort(counts, kind="stable")
            axes.plot(counts[order], accuracy[order], label=label, linewidth=1, markersize=4,
                      **_style(style_of[label]))
        for threshold in (FEW_THRESHOLD, MANY_THRESHOLD):
            axes.axvline(threshold, color="0.6", linewidth=0.8, linestyle=":")
        axes.set_xscale("log")
        axes.set_xlabel("training images of the class (log scale)")
        axes.set_ylabel("test accuracy of the class (%)")
        axes.set_ylim(-2, 102)
        _legend(figure, len(series), narrow)

    rows = [{"configuration": label, "imb_factor": imb, "class": cls,
             "train_count": int(counts[cls]), "accuracy_mean": float(accuracy[cls]),
             "runs": runs}
            for label, counts, accuracy, runs in series for cls in range(len(counts))]
    return Plot(f"Per-class accuracy, IF {format_imb(imb)}",
                f"{dataset}, IF {format_imb(imb)}: test accuracy of every class against its "
                f"training images, mean over the ok runs of each configuration (final epoch); "
                f"dotted lines at {FEW_THRESHOLD} and {MANY_THRESHOLD} training images separate "
                f"the few / medium / many groups.",
                *_render(draw, 4.6), pd.DataFrame(rows), f"per_class_if{format_imb(imb)}")


def training_counts(dataset: str,
                    profiles: Sequence[tuple[float, str, np.ndarray]]) -> Plot:
    """The per-class training counts of each (imbalance factor, profile), head first."""
    def draw(figure: Figure, narrow: bool) -> None:
        axes = figure.add_subplot()
        for index, (imb, profile, counts) in enumerate(profiles):
            ordered = np.sort(counts)[::-1]
            axes.step(np.arange(len(ordered)), ordered, where="mid",
                      label=f"IF {format_imb(imb)} ({profile})", color=_style(index)["color"])
        for threshold in (FEW_THRESHOLD, MANY_THRESHOLD):
            axes.axhline(threshold, color="0.6", linewidth=0.8, linestyle=":")
        axes.set_yscale("log")
        axes.set_xlabel("class rank (most frequent first)")
        axes.set_ylabel("training images (log scale)")
        _legend(figure, len(profiles), narrow)

    rows = [{"imb_factor": imb, "profile": profile, "rank": rank, "train_count": int(count)}
            for imb, profile, counts in profiles
            for rank, count in enumerate(np.sort(counts)[::-1])]
    return Plot("Training images per class",
                f"{dataset}: training images per class of every long-tailed subset in the "
                f"store, classes sorted by count; dotted lines at {FEW_THRESHOLD} and "
                f"{MANY_THRESHOLD} images bound the few / medium / many groups.",
                *_render(draw, 4.0), pd.DataFrame(rows), "training_counts")


def learning_curves(dataset: str, imb: float, series: Sequence[tuple[str, pd.DataFrame]],
                    style_of: Mapping[str, int]) -> Plot:
    """Median training loss and test error per epoch, one line per row label.

    ``series``: (label, per-epoch medians with columns ``epoch``, ``train_loss``,
    ``test_err``, ``runs``); ``style_of`` as in :func:`per_class_accuracy`.
    """
    def draw(figure: Figure, narrow: bool) -> None:
        loss_axes, err_axes = figure.subplots(2, 1, sharex=True)
        for label, medians in series:
            style = {**_style(style_of[label]), "markersize": 3, "linewidth": 1,
                     "markevery": max(1, len(medians) // 10)}
            loss_axes.plot(medians["epoch"], medians["train_loss"], label=label, **style)
            evaluated = medians.dropna(subset=["test_err"])
            err_axes.plot(evaluated["epoch"], evaluated["test_err"], **style)
        loss_axes.set_ylabel("training loss")
        err_axes.set_ylabel("test top-1 error (%)")
        err_axes.set_xlabel("epoch")
        _legend(figure, len(series), narrow)

    data = pd.concat([medians.assign(configuration=label, imb_factor=imb)
                      for label, medians in series], ignore_index=True)
    return Plot(f"Learning curves, IF {format_imb(imb)}",
                f"{dataset}, IF {format_imb(imb)}: median over seeds (ok runs) of the training "
                f"loss and of the test top-1 error at each evaluated epoch.",
                *_render(draw, 5.6), data, f"curves_if{format_imb(imb)}")


def _quantity_axes(figure: Figure, quantities: Sequence[str]):
    """One row of axes per recorded quantity (ε, weight), paired with its name."""
    return zip(np.atleast_1d(figure.subplots(len(quantities), 1)), quantities)


def _quantity_names(quantities: Sequence[str]) -> str:
    return " and ".join(QUANTITY_NAMES.get(q, q) for q in quantities)


def _configuration_slug(prefix: str, label: str, imb: float) -> str:
    """The CSV name of one configuration's plot: ``<prefix>_<label>_if<imb>``."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9]+', '-', label).strip('-')}_if{format_imb(imb)}"


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
                            color=_style(index)["color"], linewidth=1.2)
            axes.set_xlabel(QUANTITY_NAMES.get(quantity, quantity))
            axes.set_ylabel("fraction of examples")
            axes.legend(frameon=False, fontsize="small")

    names = _quantity_names(quantities)
    return Plot(f"{label}, IF {format_imb(imb)}",
                f"{dataset}, IF {format_imb(imb)}, {label}: distribution of the recorded "
                f"{names} at epoch {int(histogram['epoch'].max())}, summed over the classes of "
                f"each group and over seeds, as fractions of the group's examples.",
                *_render(draw, 2.8 * len(quantities)),
                histogram.assign(configuration=label, imb_factor=imb),
                _configuration_slug("eps", label, imb))


def eps_by_class(dataset: str, imb: float, label: str, means: pd.DataFrame) -> Plot:
    """Mean ε (and weight) of every class against its training count, one configuration.

    ``means``: long format with ``quantity``, ``class``, ``train_count``, ``group`` and
    ``mean`` — each class's mean over its examples at the last recorded epoch, averaged over
    seeds. Jamal et al. (CVPR 2020, §4) expect ε to grow toward the tail, which this shows.
    """
    quantities = sorted(means["quantity"].unique())

    def draw(figure: Figure, narrow: bool) -> None:
        for axes, quantity in _quantity_axes(figure, quantities):
            mine = means[means["quantity"] == quantity]
            for index, group in enumerate(GROUP_NAMES):
                part = mine[mine["group"] == group]
                if not part.empty:
                    axes.scatter(part["train_count"], part["mean"], s=14,
                                 label=GROUP_NAMES[group], color=_style(index)["color"])
            axes.axhline(0.0 if quantity == "eps" else 1.0, color="0.6", linewidth=0.8,
                         linestyle=":")
            axes.set_xscale("log")
            axes.set_xlabel("training images of the class (log scale)")
            axes.set_ylabel(f"mean {QUANTITY_NAMES.get(quantity, quantity)}")
            axes.legend(frameon=False, fontsize="small")

    names = _quantity_names(quantities)
    return Plot(f"{label}, IF {format_imb(imb)}: mean per class",
                f"{dataset}, IF {format_imb(imb)}, {label}: mean {names} of each class's "
                f"examples at the last recorded epoch, averaged over seeds, against the class's "
                f"training images.",
                *_render(draw, 2.8 * len(quantities)),
                means.assign(configuration=label, imb_factor=imb),
                _configuration_slug("eps_mean", label, imb))


def group_of_classes(train_counts: Sequence[int]) -> np.ndarray:
    """The many / medium / few group name of every class, from its training count."""
    names = np.empty(len(train_counts), dtype=object)
    for group, mask in shot_groups(train_counts).items():
        names[mask] = group
    return names


def shifted_accuracy(dataset: str, imb: float, eval_sets: Sequence[str],
                     series: Sequence[tuple[str, np.ndarray, int]],
                     style_of: Mapping[str, int]) -> Plot:
    """Top-1 accuracy on the shifted test sets (LADE protocol, :mod:`ltbench.metrics.shifted`), one
    line per row label; ``series``: (label, mean accuracy per set in ``eval_sets`` order,
    number of runs)."""
    positions = np.arange(len(eval_sets))

    def draw(figure: Figure, narrow: bool) -> None:
        axes = figure.add_subplot()
        for label, accuracy, _ in series:
            axes.plot(positions, accuracy, label=label, linewidth=1, markersize=4,
                      **_style(style_of[label]))
        axes.set_xticks(positions, eval_sets)
        axes.set_xlabel("test label distribution (F: like training, U: uniform, "
                        "B: reversed; number = imbalance ratio)")
        axes.set_ylabel("test top-1 accuracy (%)")
        _legend(figure, len(series), narrow)

    rows = [{"configuration": label, "imb_factor": imb, "eval_set": name,
             "accuracy_mean": float(accuracy[k]), "runs": runs}
            for label, accuracy, runs in series for k, name in enumerate(eval_sets)]
    return Plot(f"Shifted test label distributions, IF {format_imb(imb)}",
                f"{dataset}, IF {format_imb(imb)}: top-1 accuracy on test sets whose label "
                f"distribution is forward- or backward-shifted by the ratio named on the axis "
                f"(LADE protocol, protocols.md §1.4), mean over the ok runs; PC softmax and "
                f"LADE use each set's true label prior.",
                *_render(draw, 4.6), pd.DataFrame(rows), f"shifted_if{format_imb(imb)}")
