"""The report's own plots: training counts, per-class accuracy, learning curves, shifted tests.

Every function returns a :class:`~ltbench.api.plots.Plot` (the figure as self-contained SVG at
two widths, and the data drawn in it), built with the helpers plugins' report sections use too.
Head / medium / tail are the many / medium / few training-count groups (> 100, 20–100, < 20
images; :func:`ltbench.metrics.headline.shot_groups`, protocols.md §1.2).

This module must not import torch.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..api.plots import Plot, legend, make_plot, style
from ..metrics.headline import FEW_THRESHOLD, MANY_THRESHOLD
from ..spec import format_imb


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
                      **style(style_of[label]))
        for threshold in (FEW_THRESHOLD, MANY_THRESHOLD):
            axes.axvline(threshold, color="0.6", linewidth=0.8, linestyle=":")
        axes.set_xscale("log")
        axes.set_xlabel("training images of the class (log scale)")
        axes.set_ylabel("test accuracy of the class (%)")
        axes.set_ylim(-2, 102)
        legend(figure, len(series), narrow)

    rows = [{"configuration": label, "imb_factor": imb, "class": cls,
             "train_count": int(counts[cls]), "accuracy_mean": float(accuracy[cls]),
             "runs": runs}
            for label, counts, accuracy, runs in series for cls in range(len(counts))]
    return make_plot(f"Per-class accuracy, IF {format_imb(imb)}",
                     f"{dataset}, IF {format_imb(imb)}: test accuracy of every class against "
                     f"its training images, mean over the ok runs of each configuration (final "
                     f"epoch); dotted lines at {FEW_THRESHOLD} and {MANY_THRESHOLD} training "
                     f"images separate the few / medium / many groups.",
                     draw, 4.6, pd.DataFrame(rows), f"per_class_if{format_imb(imb)}",
                     [(label, style_of[label]) for label, *_ in series])


def training_counts(dataset: str,
                    profiles: Sequence[tuple[float, str, np.ndarray]]) -> Plot:
    """The per-class training counts of each (imbalance factor, profile), head first."""
    def draw(figure: Figure, narrow: bool) -> None:
        axes = figure.add_subplot()
        for index, (imb, profile, counts) in enumerate(profiles):
            ordered = np.sort(counts)[::-1]
            axes.step(np.arange(len(ordered)), ordered, where="mid",
                      label=f"IF {format_imb(imb)} ({profile})", color=style(index)["color"])
        for threshold in (FEW_THRESHOLD, MANY_THRESHOLD):
            axes.axhline(threshold, color="0.6", linewidth=0.8, linestyle=":")
        axes.set_yscale("log")
        axes.set_xlabel("class rank (most frequent first)")
        axes.set_ylabel("training images (log scale)")
        legend(figure, len(profiles), narrow)

    rows = [{"imb_factor": imb, "profile": profile, "rank": rank, "train_count": int(count)}
            for imb, profile, counts in profiles
            for rank, count in enumerate(np.sort(counts)[::-1])]
    return make_plot("Training images per class",
                     f"{dataset}: training images per class of every long-tailed subset in the "
                     f"store, classes sorted by count; dotted lines at {FEW_THRESHOLD} and "
                     f"{MANY_THRESHOLD} images bound the few / medium / many groups.",
                     draw, 4.0, pd.DataFrame(rows), "training_counts")


def learning_curves(dataset: str, imb: float, series: Sequence[tuple[str, pd.DataFrame]],
                    style_of: Mapping[str, int]) -> Plot:
    """Median training loss and test error per epoch, one line per row label.

    ``series``: (label, per-epoch medians with columns ``epoch``, ``train_loss``,
    ``test_err``, ``runs``); ``style_of`` as in :func:`per_class_accuracy`.
    """
    def draw(figure: Figure, narrow: bool) -> None:
        loss_axes, err_axes = figure.subplots(2, 1, sharex=True)
        for label, medians in series:
            line = {**style(style_of[label]), "markersize": 3, "linewidth": 1,
                    "markevery": max(1, len(medians) // 10)}
            loss_axes.plot(medians["epoch"], medians["train_loss"], label=label, **line)
            evaluated = medians.dropna(subset=["test_err"])
            err_axes.plot(evaluated["epoch"], evaluated["test_err"], **line)
        loss_axes.set_ylabel("training loss")
        err_axes.set_ylabel("test top-1 error (%)")
        err_axes.set_xlabel("epoch")
        legend(figure, len(series), narrow)

    data = pd.concat([medians.assign(configuration=label, imb_factor=imb)
                      for label, medians in series], ignore_index=True)
    return make_plot(f"Learning curves, IF {format_imb(imb)}",
                     f"{dataset}, IF {format_imb(imb)}: median over seeds (ok runs) of the "
                     f"training loss and of the test top-1 error at each evaluated epoch.",
                     draw, 5.6, data, f"curves_if{format_imb(imb)}",
                     [(label, style_of[label]) for label, _ in series])


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
                      **style(style_of[label]))
        axes.set_xticks(positions, eval_sets)
        axes.set_xlabel("test label distribution (F: like training, U: uniform, "
                        "B: reversed; number = imbalance ratio)")
        axes.set_ylabel("test top-1 accuracy (%)")
        legend(figure, len(series), narrow)

    rows = [{"configuration": label, "imb_factor": imb, "eval_set": name,
             "accuracy_mean": float(accuracy[k]), "runs": runs}
            for label, accuracy, runs in series for k, name in enumerate(eval_sets)]
    return make_plot(f"Shifted test label distributions, IF {format_imb(imb)}",
                     f"{dataset}, IF {format_imb(imb)}: top-1 accuracy on test sets whose label "
                     f"distribution is forward- or backward-shifted by the ratio named on the axis "
                     f"(LADE protocol, protocols.md §1.4), mean over the ok runs; PC softmax and "
                     f"LADE use each set's true label prior.",
                     draw, 4.6, pd.DataFrame(rows), f"shifted_if{format_imb(imb)}",
                     [(label, style_of[label]) for label, *_ in series])


def critical_difference(mean_ranks: Mapping[str, float], cd: float, blocks: int) -> Plot:
    """Each method's mean rank over ``blocks`` cells with its Nemenyi interval, mean ± CD / 2:
    two methods differ significantly (α = 0.05) where their intervals do not overlap (the
    interval form of Demšar's 2006 critical-difference diagram, :mod:`ltbench.report.ranks`)."""
    order = sorted(mean_ranks, key=lambda method: (mean_ranks[method], method))
    means = np.array([mean_ranks[method] for method in order])

    def draw(figure: Figure, narrow: bool) -> None:
        axes = figure.add_subplot()
        rows = np.arange(len(order))
        axes.errorbar(means, rows, xerr=cd / 2, fmt="o", color=style(0)["color"],
                      ecolor="0.45", elinewidth=1.2, capsize=3, markersize=5)
        axes.set_yticks(rows, order)
        axes.invert_yaxis()
        axes.set_xlim(min(1.0, means.min() - cd / 2) - 0.25,
                      max(float(len(order)), means.max() + cd / 2) + 0.25)
        axes.set_xlabel(f"mean rank over {blocks} cells (1 = lowest error)")
        axes.grid(axis="x", color="0.9", linewidth=0.8)

    rows = [{"method": method, "mean_rank": float(mean), "nemenyi_low": float(mean - cd / 2),
             "nemenyi_high": float(mean + cd / 2), "critical_difference": cd, "cells": blocks}
            for method, mean in zip(order, means)]
    return make_plot("Critical difference of mean ranks",
                     f"Mean rank of each method over the {blocks} dataset × imbalance-factor "
                     f"cells that all of them have, with its Nemenyi interval (mean ± CD/2, "
                     f"CD = {cd:.2f} at α = 0.05; Demšar 2006): methods whose intervals do not "
                     f"overlap differ significantly.",
                     draw, 0.9 + 0.32 * len(order), pd.DataFrame(rows), "critical_difference")


def error_vs_cost(dataset: str, imb: float, series: Sequence[tuple[str, float, float, int]],
                  style_of: Mapping[str, int]) -> Plot:
    """Each configuration's mean top-1 error against its device hours per run, one point per
    row label; ``series``: (label, device hours per run, mean error, ok runs)."""
    def draw(figure: Figure, narrow: bool) -> None:
        axes = figure.add_subplot()
        for label, hours, error, _ in series:
            axes.plot([hours], [error], linestyle="none", markersize=6, label=label,
                      **style(style_of[label]))
        axes.set_xscale("log")
        axes.set_xlabel("device hours per run (log scale)")
        axes.set_ylabel("top-1 error (%), final epoch")
        legend(figure, len(series), narrow)

    rows = [{"configuration": label, "imb_factor": imb, "device_hours_per_run": hours,
             "top1_err_mean": error, "runs": runs} for label, hours, error, runs in series]
    return make_plot(f"Error vs. cost, IF {format_imb(imb)}",
                     f"{dataset}, IF {format_imb(imb)}: mean top-1 error of each configuration "
                     f"against the device hours one of its runs took (its share of its pack's "
                     f"wall time), over the ok runs; lower left is better and cheaper.",
                     draw, 4.2, pd.DataFrame(rows), f"cost_if{format_imb(imb)}",
                     [(label, style_of[label]) for label, *_ in series])
