"""The report's statistics (:mod:`ltbench.report.stats`) and the cross-dataset ranks
(:mod:`ltbench.report.ranks`) on hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ltbench.report.ranks import rank_page
from ltbench.report.stats import (average_ranks, compare_to_best, critical_difference, holm,
                                  t_interval)
from ltbench.report.tables import Cell, column_views
from helpers import make_record


def test_t_interval_by_hand_and_none_below_three_runs():
    # 31 ± t(0.975, 2) · s / √3 with s = 1: t = 4.302653 (df 2)
    assert t_interval([30.0, 31.0, 32.0]) == pytest.approx((28.515862, 33.484138))
    # n = 4, s = √(5/3): 2.5 ± 3.182446 · 1.290994 / 2
    assert t_interval([1.0, 2.0, 3.0, 4.0]) == pytest.approx((0.4457397, 4.5542603))
    assert all(math.isnan(x) for x in t_interval([30.0, 31.0]))


def test_a_cells_interval_stays_within_the_percentage_range():
    """100, 100, 98: mean 99.33, s = 1.1547, half-width 4.302653 · 1.1547 / √3 = 2.8684, so
    the raw interval 96.465 … 102.202 ends at 100 (the demo report showed 'CI 97.44–101.23')."""
    cell = Cell(99.333, 1.155, 3, 0, values={(0, 0): 100.0, (0, 1): 100.0, (0, 2): 98.0})
    assert cell.interval == pytest.approx((96.464983, 100.0))
    low = Cell(1.0, 1.0, 3, 0, values={(0, 0): 0.0, (0, 1): 1.0, (0, 2): 2.0})
    assert low.interval == pytest.approx((0.0, 3.484138))
    assert all(math.isnan(x) for x in Cell(1.0, 0.0, 2, 0, values={(0, 0): 1.0,
                                                                  (0, 1): 1.0}).interval)


def test_paired_t_test_by_hand():
    """Differences 1, 2, 0.5 over three paired seeds: t = √7 with 2 degrees of freedom, whose
    two-sided p-value has the closed form 1 − √7 / 3 = 0.118083."""
    best = {(0, 0): 10.0, (0, 1): 11.0, (0, 2): 12.0}
    other = {(0, 0): 11.0, (0, 1): 13.0, (0, 2): 12.5}
    [difference] = compare_to_best({"best": best, "other": other}, "best").values()
    assert difference.test == "paired t-test"
    assert difference.p == pytest.approx(1 - math.sqrt(7) / 3)
    assert difference.p_holm == difference.p and not difference.significant


def test_welch_t_test_where_seeds_do_not_pair():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 7.0, 8.0]
    best = {(0, seed): value for seed, value in enumerate(a)}
    other = {(1, seed): value for seed, value in enumerate(b)}  # another split seed
    [difference] = compare_to_best({"best": best, "other": other}, "best").values()
    # Welch: t = (m_b − m_a) / √(s_a²/n_a + s_b²/n_b), Welch–Satterthwaite degrees of freedom
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    t = (np.mean(b) - np.mean(a)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    assert difference.test == "Welch's t-test"
    assert difference.p == pytest.approx(2 * scipy_stats.t.sf(t, df))
    assert difference.significant  # p = 0.0153


def test_holm_by_hand():
    # sorted: 0.01 · 3 = 0.03; 0.03 · 2 = 0.06; 0.04 · 1 = 0.04, raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_columns_mark_significant_cells_and_never_test_fewer_than_three_runs():
    def cell(values):
        return Cell(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1
                    else math.nan, len(values), 0,
                    values={(0, seed): v for seed, v in enumerate(values)})

    column = [cell([20.0, 21.0, 22.0]), cell([30.0, 31.5, 32.0]), cell([20.5, 20.0, 23.0]),
              cell([40.0, 41.0]), cell([20.0, 21.0, 22.0])]
    views = column_views(column, lower_is_better=True)
    assert [v.best for v in views] == [True, False, False, False, True]
    assert [v.significant for v in views] == [False, True, False, False, False]
    assert views[1].text == "31.17 ± 1.04 (n=3, CI 28.58–33.75) †"
    assert views[3].text == "40.50 ± 0.71 (n=2, no CI)"


def test_average_ranks_share_ties_and_the_critical_difference_matches_demsar():
    ranks = average_ranks(np.array([[0.3, 0.1, 0.2, 0.2], [1.0, 1.0, 1.0, 0.0]]))
    assert ranks.tolist() == [[4.0, 1.0, 2.5, 2.5], [3.0, 3.0, 3.0, 1.0]]
    # Demšar (2006), Table 5(a): q_0.05 = 2.569 for 4 classifiers; CD = q · √(4 · 5 / (6 · 10))
    assert critical_difference(4, 10) == pytest.approx(2.569 * math.sqrt(20 / 60), abs=1e-3)
    assert critical_difference(2, 10) == pytest.approx(1.960 * math.sqrt(6 / 60), abs=1e-3)


def _records(entries) -> pd.DataFrame:
    """Records of (run id, method, dataset, IF, error[, epochs]) at three seeds each, the
    error the same at every seed."""
    rows = []
    for run_id, method, dataset, imb, err, *epochs in entries:
        hparams = json.dumps({"epochs": epochs[0] if epochs else 200}, separators=(",", ":"))
        rows += [make_record(f"{run_id}{seed}", method=method, dataset=dataset, imb_factor=imb,
                             seed=seed, top1_err=err, hparams=hparams) for seed in range(3)]
    return pd.DataFrame(rows)


def test_rank_page_shares_tied_ranks_and_leaves_out_a_method_without_common_cells():
    records = _records([
        ("a", "ce", "cifar10-lt", 100.0, 30.0), ("b", "focal", "cifar10-lt", 100.0, 28.0),
        ("c", "ldam", "cifar10-lt", 100.0, 28.0), ("d", "lade", "cifar10-lt", 100.0, 10.0),
        ("e", "ce", "cifar10-lt", 10.0, 15.0), ("f", "focal", "cifar10-lt", 10.0, 14.0),
        ("g", "ldam", "cifar10-lt", 10.0, 12.0),
        ("h", "ce", "cifar100-lt", 100.0, 60.0), ("i", "focal", "cifar100-lt", 100.0, 59.0),
        ("j", "ldam", "cifar100-lt", 100.0, 57.0),
        ("k", "ce", "cifar10-lt", 100.0, 5.0, 1),  # a 1-epoch smoke run: never the entry
    ])
    page = rank_page(records)
    ranks = page.data.set_index(["method", "dataset", "imb_factor"])["rank"]
    # cifar10-lt IF 100: lade 10 (1), focal and ldam 28 (tied: 2.5), ce 30 at 200 epochs (4)
    assert [ranks[(m, "cifar10-lt", 100.0)] for m in ("lade", "focal", "ldam", "ce")] == \
        [1.0, 2.5, 2.5, 4.0]
    assert page.data.set_index(["method", "dataset", "imb_factor"]).loc[
        ("ce", "cifar10-lt", 100.0), "epochs"] == 200
    # lade has one cell: left out; the other three over their 3 common cells, ranked again
    # without lade: ce 3, 3, 3; focal 1.5, 2, 2; ldam 1.5, 1, 1
    means = page.data.groupby("method")["mean_rank"].first()
    assert means[["ce", "focal", "ldam"]].tolist() == pytest.approx([3.0, 11 / 6, 7 / 6])
    assert math.isnan(means["lade"])
    ldam = page.data[page.data["method"] == "ldam"].iloc[0]
    # 7/6 ± t(0.975, 2) · s / √3 with s = √(1/12): half-width 0.717109
    assert (ldam["mean_rank_ci95_low"], ldam["mean_rank_ci95_high"]) == \
        pytest.approx((7 / 6 - 0.717109, 7 / 6 + 0.717109), abs=1e-6)
    assert [label for label, _ in page.view.rows] == ["ldam", "focal", "ce", "lade"]
    assert any("Left out" in note and "lade" in note for note in page.notes)
    # CD for 3 methods over 3 cells: q = 2.343 (Demšar Table 5a) · √(3 · 4 / 18)
    assert page.chart is not None
    assert page.chart.data["critical_difference"].iloc[0] == pytest.approx(
        2.343 * math.sqrt(12 / 18), abs=1e-3)


def test_compare_two_stores_tests_cells_both_hold_and_lists_the_others(tmp_path):
    """ce at IF 100 on both stores with the same three seeds: paired differences −2, −2,
    −1.5, so t = −11 with 2 degrees of freedom, p = 1 − 11 / √123 (Holm over the one cell
    tested); focal has two runs a side (not tested); ldam is only in B."""
    from click.testing import CliRunner

    from ltbench.cli import cli
    from ltbench.store.result_store import ResultStore

    def store(name, errors):
        result = ResultStore(tmp_path / name)
        for run_id, method, seed, err in errors:
            result.write(make_record(run_id, method=method, seed=seed, top1_err=err))
        return result.root

    a = store("a", [("a0", "ce", 0, 30.0), ("a1", "ce", 1, 31.0), ("a2", "ce", 2, 32.0),
                    ("f0", "focal", 0, 29.0), ("f1", "focal", 1, 29.5)])
    b = store("b", [("b0", "ce", 0, 28.0), ("b1", "ce", 1, 29.0), ("b2", "ce", 2, 30.5),
                    ("g0", "focal", 0, 28.0), ("g1", "focal", 1, 28.5), ("l0", "ldam", 0, 25.0)])
    result = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    p = 1 - 11 / math.sqrt(123)  # 0.00816
    assert (f"| cifar10-lt | ce | 100 | 31.00 ± 1.00 (n=3, CI 28.52–33.48) | 29.17 ± 1.26 "
            f"(n=3, CI 26.04–32.29) | -1.83 | {p:.3g} † (paired t-test) |") in result.stdout
    assert "| cifar10-lt | focal | 100 |" in result.stdout and "not tested" in result.stdout
    assert "only in B: cifar10-lt ldam IF 100" in result.stdout
    assert "Holm-corrected over the 1 cells tested" in result.stdout
    missing = CliRunner().invoke(cli, ["compare", str(a), str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no results store" in missing.stderr
