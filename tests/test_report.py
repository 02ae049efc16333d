"""Result tables (aggregation, labels, rendering) and the static report (HTML, MD, LaTeX, CSV)."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ltbench import __version__, registry
from ltbench.cli import cli
from ltbench.families import FAMILIES
from ltbench.methods.weight_report import rebin
from ltbench.report.published import LTBENCH_COLUMNS, ORIGINAL_COLUMNS, load_published
from ltbench.report.site import _cuda_of, write_report
from ltbench.report.tables import (Cell, CellView, TableView, best_flags, error_table,
                                   format_cell, run_summary, status_counts, to_latex, to_markdown)
from ltbench.store.result_store import ResultStore
from helpers import (BUILTIN_METHODS, eps_frame, eps_summary_frame, failed_record, install_plugin,
                     make_record, small_store)

HPARAMS = {"epochs": 200, "lr": 0.1}


def record(run_id: str, method: str = "ce", imb: float = 100.0, seed: int = 0,
           err: float = 30.0, dataset: str = "cifar10-lt", hparams: dict | None = None,
           **overrides) -> dict:
    return make_record(run_id, method=method, imb_factor=imb, seed=seed, top1_err=err,
                       top1_acc=100.0 - err, dataset=dataset,
                       hparams=json.dumps(hparams or HPARAMS, sort_keys=True,
                                          separators=(",", ":")),
                       **overrides)


def stored(tmp_path, records: list[dict]) -> ResultStore:
    store = ResultStore(tmp_path / "results")
    for rec in records:
        store.write(rec)
    return store


def read(tmp_path, records: list[dict]) -> pd.DataFrame:
    return stored(tmp_path, records).read()


# -- aggregation ----------------------------------------------------------------------------

def test_mean_and_sample_std_over_seeds(tmp_path):
    records = read(tmp_path, [record(f"s{seed}", seed=seed, err=err)
                              for seed, err in enumerate([30.0, 31.0, 32.0])]
                   + [record(f"t{seed}", imb=10.0, seed=seed, err=err)
                      for seed, err in enumerate([29.5, 30.25])])
    table = error_table(records, "cifar10-lt")
    assert table.cells[("ce", 100.0)] == Cell(mean=31.0, std=1.0, n=3, failed=0, missing=0,
                                              values={(0, 0): 30.0, (0, 1): 31.0, (0, 2): 32.0})
    # 95 % t-interval: 31 ± t(0.975, 2) · 1 / √3 = 31 ± 4.302653 / 1.732051 = 31 ± 2.484138
    assert table.cells[("ce", 100.0)].interval == pytest.approx((28.515862, 33.484138))
    assert format_cell(table.cells[("ce", 100.0)]) == "31.00 ± 1.00 (n=3, CI 28.52–33.48)"
    two = table.cells[("ce", 10.0)]
    assert two.mean == pytest.approx(29.875)
    assert two.std == pytest.approx(statistics.stdev([29.5, 30.25]))  # 0.5303...
    # Seed 2 runs at IF 100 only: at IF 10 it is missing.
    assert two.missing == 1
    assert format_cell(two) == "29.88 ± 0.53 (n=2, no CI) (1 missing)"


def test_single_seed_has_no_std():
    cell = Cell(mean=29.6449, std=math.nan, n=1, failed=0)
    assert format_cell(cell) == "29.64 (n=1, no CI)"


def test_columns_descending_and_missing_cell(tmp_path):
    records = read(tmp_path, [record("a", imb=10.0), record("b", imb=100.0),
                              record("c", method="focal", imb=100.0, err=28.0),
                              record("d", imb=12.5, err=20.0)])
    table = error_table(records, "cifar10-lt")
    assert table.columns == [100.0, 12.5, 10.0]
    assert table.rows == ["ce", "focal"]
    empty = table.cells[("focal", 10.0)]
    assert (empty.n, empty.failed, empty.missing, math.isnan(empty.mean)) == (0, 0, 1, True)
    assert format_cell(table.cells[("focal", 10.0)]) == "— (1 missing)"


def test_failed_and_diverged_runs_are_counted_not_averaged(tmp_path):
    records = read(tmp_path, [
        record("ok1", seed=0, err=30.0), record("ok2", seed=1, err=32.0),
        failed_record("bad1", seed=2, hparams=json.dumps(HPARAMS, separators=(",", ":"))),
        record("div1", seed=3, err=90.0, status="diverged", error="loss is nan"),
        failed_record("bad2", imb_factor=10.0, seed=1,
                      hparams=json.dumps(HPARAMS, separators=(",", ":"))),
    ])
    table = error_table(records, "cifar10-lt")
    assert table.cells[("ce", 100.0)] == Cell(mean=31.0, std=pytest.approx(math.sqrt(2)),
                                              n=2, failed=2, missing=0,
                                              values={(0, 0): 30.0, (0, 1): 32.0})
    assert format_cell(table.cells[("ce", 100.0)]) == "31.00 ± 1.41 (n=2, no CI) (2 failed)"
    # Seeds 0-3 exist in the dataset; IF 10 has one failed run (seed 1), 3 seeds missing.
    assert format_cell(table.cells[("ce", 10.0)]) == "— (1 failed, 3 missing)"
    assert status_counts(records) == {"ok": 2, "failed": 2, "diverged": 1}


def test_nan_metric_of_ok_runs_renders_missing(tmp_path):
    # CIFAR-10-LT IF 100 has no class with fewer than 20 training images: few_acc is NaN.
    records = read(tmp_path, [record("a", seed=0), record("b", seed=1)])
    table = error_table(records, "cifar10-lt", metric="few_acc")
    assert table.metric == "few_acc"
    assert table.cells[("ce", 100.0)].n == 0
    assert format_cell(table.cells[("ce", 100.0)]) == "—"


def test_configuration_labels(tmp_path):
    short = {"epochs": 1, "lr": 0.1}
    records = read(tmp_path, [
        record("a", hparams=HPARAMS, err=30.0), record("b", hparams=HPARAMS, seed=1, err=32.0),
        record("c", hparams=short, err=80.0),
        record("d", method="focal", hparams={"epochs": 200, "gamma": 1.0}),
        record("e", method="ldam", hparams={"epochs": 200, "pad_mode": "zero"}),
        record("f", method="ldam", hparams={"epochs": 200, "pad_mode": "reflect"}),
        record("g", method="ldam", hparams={"epochs": 200, "pad_mode": "zero"},
               profile="step"),
        record("h", method="ce", dataset="cifar100-lt"),
    ])
    table = error_table(records, "cifar10-lt")
    assert table.rows == ["ce [epochs=1]", "ce [epochs=200]", "focal",
                          "ldam [pad_mode=reflect, profile=exp]",
                          "ldam [pad_mode=zero, profile=exp]",
                          "ldam [pad_mode=zero, profile=step]"]
    assert table.cells[("ce [epochs=200]", 100.0)] == Cell(
        31.0, pytest.approx(math.sqrt(2)), 2, 0, 0, {(0, 0): 30.0, (0, 1): 32.0})
    assert table.cells[("ce [epochs=1]", 100.0)].mean == 80.0
    assert table.configs["ce [epochs=1]"].epochs == 1
    assert table.configs["ldam [pad_mode=zero, profile=step]"].profile == "step"
    # A key absent from one configuration is shown as unset, distinct from a null value.
    unset = read(tmp_path / "unset", [record("i", hparams={"epochs": 200}),
                                      record("j", hparams={"epochs": 200, "tau": None})])
    assert error_table(unset, "cifar10-lt").rows == ["ce [tau=null]", "ce [tau=unset]"]
    # The other dataset's table sees one ce configuration only.
    assert error_table(records, "cifar100-lt").rows == ["ce"]


def test_family_order_then_names(tmp_path):
    """Rows follow the families the records name (no plugin is loaded: ``zeta`` and ``alpha``
    are not installed), then method names; unlisted and unknown families come last."""
    records = read(tmp_path, [record("a", method="zeta", method_family="re-weighting"),
                              record("b", method="lade"), record("c", method="ldam"),
                              record("d", method="focal"), record("e", method="mwn"),
                              record("f", method="alpha", method_family="my-own"),
                              record("g", method="omega", method_family=None),
                              record("h", method="ce")])
    assert list(FAMILIES)[0] == "loss" and list(FAMILIES)[-1] == "label-shift"
    assert error_table(records, "cifar10-lt").rows == ["ce", "focal", "zeta", "ldam", "mwn",
                                                       "lade", "alpha", "omega"]
    ordered = error_table(records, "cifar10-lt", method_order=["ldam", "ce"])
    assert ordered.rows == ["ldam", "ce", "alpha", "focal", "lade", "mwn", "omega", "zeta"]


def test_every_builtin_method_names_a_listed_family():
    for name in BUILTIN_METHODS:
        assert registry.load("method", name).family in FAMILIES, name


def test_empty_dataset_table(tmp_path):
    table = error_table(read(tmp_path, []), "cifar10-lt")
    assert (table.columns, table.rows, table.cells) == ([], [], {})


def test_best_flags_follow_the_printed_value():
    cells = [Cell(20.004, 0, 2, 0), Cell(19.996, 0, 2, 0), Cell(math.nan, math.nan, 0, 1),
             Cell(25.0, 0, 1, 0)]
    # 20.004 and 19.996 both print as 20.00: a tie, both bold; the empty cell never is.
    assert best_flags(cells, lower_is_better=True) == [True, True, False, False]
    assert best_flags(cells, lower_is_better=False) == [False, False, False, True]
    assert best_flags([Cell(math.nan, math.nan, 0, 0)], True) == [False]


SMALL_RECORDS = [
    record("a0", seed=0, err=30.0), record("a1", seed=1, err=31.0), record("a2", seed=2, err=32.0),
    record("b0", imb=10.0, seed=0, err=12.345),
    record("c0", method="focal", seed=0, err=29.0),
    failed_record("c1", method="focal", seed=1, hparams='{"epochs":200,"lr":0.1}'),
]


def test_run_summary_exact(tmp_path):
    records = read(tmp_path, SMALL_RECORDS + [record("d0", dataset="cifar100-lt", err=61.5)])
    assert run_summary(records) == (
        "cifar10-lt: top-1 error (%), final epoch, mean ± std over seeds\n"
        "method  IF 100                                    IF 10\n"
        "ce      31.00 ± 1.00 (n=3, CI 28.52–33.48)        12.35 (n=1, no CI) (2 missing)\n"
        "focal   29.00 (n=1, no CI) (1 failed, 1 missing)  — (3 missing)\n"
        "\n"
        "cifar100-lt: top-1 error (%), final epoch, mean ± std over seeds\n"
        "method  IF 100\n"
        "ce      61.50 (n=1, no CI)\n"
    )
    assert run_summary(read(tmp_path / "empty", [])) == "no results\n"


# -- rendering ------------------------------------------------------------------------------

VIEW = TableView("c10: top-1 error (%)", ["method", "IF 100", "IF 10"], [
    ("ce", [CellView("31.00 ± 1.00 (n=3)", published="pub. 29.64 [1] Δ +0.86"),
            CellView("— (3 missing)", missing=True)]),
    ("a|b_c", [CellView("29.00 (n=1)", best=True), CellView("12.00 (n=1)", best=True)]),
], ["[1] Cao2019-LDAM, Table2: 50% of_it"])


def test_markdown_exact():
    assert to_markdown(VIEW) == (
        "c10: top-1 error (%)\n"
        "\n"
        "| method | IF 100 | IF 10 |\n"
        "|---|---:|---:|\n"
        "| ce | 31.00 ± 1.00 (n=3) · pub. 29.64 [1] Δ +0.86 | — (3 missing) |\n"
        "| a\\|b_c | **29.00 (n=1)** | **12.00 (n=1)** |\n"
        "\n"
        "[1] Cao2019-LDAM, Table2: 50% of_it\n"
    )


def test_latex_booktabs_exact():
    assert to_latex(VIEW) == (
        "\\begin{table}[t]\n\\centering\n\\small\n"
        "\\caption{c10: top-1 error (\\%)}\n"
        "\\begin{tabular}{lrr}\n\\toprule\n"
        "method & IF 100 & IF 10 \\\\\n\\midrule\n"
        "ce & 31.00 $\\pm$ 1.00 (n=3) {\\scriptsize pub. 29.64 [1] $\\Delta$ +0.86} & "
        "-- (3 missing) \\\\\n"
        "a|b\\_c & \\textbf{29.00 (n=1)} & \\textbf{12.00 (n=1)} \\\\\n"
        "\\bottomrule\n\\end{tabular}\n"
        "\\par\\smallskip{\\footnotesize [1] Cao2019-LDAM, Table2: 50\\% of\\_it}\n"
        "\\end{table}\n"
    )


def test_cuda_version_from_torch_build_tag():
    assert _cuda_of("2.4.0+cu121") == "12.1"
    assert _cuda_of("2.15.0+cu132") == "13.2"
    assert _cuda_of("2.4.0+cpu") == "CPU build"
    assert _cuda_of("2.4.0") == "not recorded"


# -- the report -----------------------------------------------------------------------------

PUBLISHED_HEADER = ",".join(ORIGINAL_COLUMNS + LTBENCH_COLUMNS) + "\n"


def published_file(tmp_path, lines: list[str]):
    path = tmp_path / "published.csv"
    path.write_text(PUBLISHED_HEADER + "".join(line + "\n" for line in lines))
    return path


def test_report_cells_show_matching_published_numbers(tmp_path):
    store = stored(tmp_path, [
        record("a0", seed=0, err=30.0, top1_err_best_epoch=29.0),
        record("a1", seed=1, err=32.0, top1_err_best_epoch=30.0),
        record("s0", seed=0, err=80.0, hparams={"epochs": 1, "lr": 0.1}),
        record("f0", method="focal", seed=0, err=28.0, top1_err_best_epoch=27.5),
    ])
    rows = load_published(published_file(tmp_path, [
        # Best-test-epoch error: compared with the best-epoch mean (29.5): Δ = -0.14.
        "P,T1,ERM,CIFAR-10-LT,100,all,top1_err,29.64,Paper A,P2,,ce,cifar10-lt,exp,,200,"
        "best_test_epoch,code selects on test,",
        # Final-epoch accuracy 70.0 = 30.0 % error: preferred (like for like), Δ = 31 - 30.
        "Q,T2,Softmax,CIFAR-10-LT,100,all,top1_acc,70.0,Paper B,P1,,ce,cifar10-lt,exp,,200,"
        "final_epoch,last epoch,",
        # Unknown selection and another protocol length: never shown.
        "R,T3,Softmax,CIFAR-10-LT,100,all,top1_acc,99.0,Paper C,P1,,ce,cifar10-lt,exp,,200,"
        "unknown,,",
        "S,T4,Softmax,CIFAR-10-LT,100,all,top1_acc,98.0,Paper D,P1,,ce,cifar10-lt,exp,,1241,"
        "final_epoch,last epoch,",
        "P,T1,Focal,CIFAR-10-LT,100,all,top1_err,29.62,Paper A,P2,,focal,cifar10-lt,exp,,200,"
        "best_test_epoch,code selects on test,",
    ]))
    out = tmp_path / "report"
    write_report(store, out, published=rows)
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert ("| ce [epochs=200] | 31.00 ± 1.41 (n=2, no CI) · pub. 30.00 [1] Δ +1.00; also [2] |"
            in markdown)
    assert "| ce [epochs=1] | 80.00 (n=1, no CI) (1 missing) |" in markdown
    assert ("| focal | **28.00 (n=1, no CI) (1 missing)** · pub. 29.62 [2] Δ -2.12 from best test ep. 27.50 |"
            in markdown)
    assert "[1] Q, T2: Paper B (P1). Model selection: final epoch — last epoch." in markdown
    # Rows with the same schedule are named together.
    assert ("Schedules: ce [epochs=1]: no protocol, 1 epoch, SHORTER than the published 200; "
            "ce [epochs=200], focal: no protocol, 200 epochs.") in markdown
    assert "[2] P, T1: Paper A (P2). Model selection: best test epoch" in markdown
    assert "Paper C" not in markdown and "Paper D" not in markdown
    data = pd.read_csv(out / "data" / "cifar10-lt_top1_err.csv")
    ce = data[data["configuration"] == "ce [epochs=200]"].iloc[0]
    assert (ce["mean"], ce["n"], ce["published_error"], ce["delta"]) == \
        (31.0, 2, 30.0, pytest.approx(1.0))
    assert ce["all_published"].splitlines() == [
        "Q, T2: 70 % top-1 accuracy (final epoch, P1)",
        "P, T1: 29.64 % top-1 error (best test epoch, P2)"]
    html = (out / "cifar10-lt.html").read_text(encoding="utf-8")
    assert ('<span class="pub" title="Q, T2: 70 % top-1 accuracy (final epoch, P1)\n'
            'P, T1: 29.64 % top-1 error (best test epoch, P2)">pub. 30.00 [1]') in html
    latex = (out / "results.tex").read_text(encoding="utf-8")
    assert "\\toprule" in latex and "{\\scriptsize pub. 30.00 [1] $\\Delta$ +1.00; also [2]}" \
        in latex


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    """The report of :func:`helpers.small_store` with one published number, written once."""
    root = tmp_path_factory.mktemp("small")
    rows = load_published(published_file(root, [
        "P,T1,LDAM-DRW,CIFAR-100-LT,100,all,top1_err,57.96,Paper A,P2,,ldam-drw,cifar100-lt,"
        "exp,,200,best_test_epoch,code selects on test,"]))
    index = write_report(small_store(root / "results"), root / "report", published=rows)
    assert index == root / "report" / "index.html"
    return root / "report"


@pytest.mark.slow
def test_report_of_a_small_store(small_report):
    out, index = small_report, small_report / "index.html"
    assert sorted(p.name for p in out.iterdir()) == [
        "cifar10-lt.html", "cifar100-lt.html", "data", "index.html", "ranks.html", "results.md",
        "results.tex"]
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(
        [f"cifar10-lt_{name}.csv" for name in
         ("top1_err", "shot_acc", "cost", "training_counts", "per_class_if100",
          "per_class_if10", "curves_if100", "curves_if10", "eps_meta-ce_if100",
          "eps_meta-ce_if10", "eps_mean_meta-ce_if100", "eps_mean_meta-ce_if10", "cost_if100",
          "cost_if10")]
        + [f"cifar100-lt_{name}.csv" for name in
           ("top1_err", "shot_acc", "cost", "training_counts", "per_class_if100",
            "curves_if100", "cost_if100")]
        + ["ranks.csv", "critical_difference.csv"])
    for page in ("index.html", "cifar10-lt.html", "cifar100-lt.html", "ranks.html"):
        html = (out / page).read_text(encoding="utf-8")
        assert "http://" not in html and "https://" not in html, page
        # one inline script (sortable tables), nothing fetched
        assert html.count("<script") == 1 and "<script src" not in html, page
        assert "<link" not in html and 'name="viewport"' in html
        assert f"ltbench</dt><dd>{__version__}" in html
    index_html = index.read_text(encoding="utf-8")
    assert index_html.index(">cifar10-lt<") < index_html.index(">cifar100-lt<")
    # ce (seeds 0-2 at 30, 31, 32 % error: 8 points above meta-ce's at every seed, so
    # significantly worse) and the bold best cell (meta-ce, 23 %).
    assert '<span class="value">31.00 ± 1.00 (n=3, CI 28.52–33.48) †</span>' in index_html
    assert ('<td class="num best"><span class="value">23.00 ± 1.00 (n=3, CI 20.52–25.48)</span>'
            in index_html)
    assert '<td class="missing"><span class="value">— (3 missing)</span>' in index_html
    # ldam-drw on CIFAR-100-LT: best-epoch errors 56.5, 57.5 → Δ = 57.0 − 57.96.
    assert "pub. 57.96 [1] Δ -0.96 from best test ep. 57.00" in index_html
    page = (out / "cifar10-lt.html").read_text(encoding="utf-8")
    assert page.count("<picture>") == 11 and page.count("data:image/svg+xml;base64,") == 22
    assert "Runs: 22 ok, 2 failed, 0 diverged, 6 missing." in page
    assert "many (8 classes)" in page and "few (0 classes)" in page
    # Provenance: 4 CIFAR-100 runs of 1800 s on a GPU; CUDA from the torch build tag.
    c100 = (out / "cifar100-lt.html").read_text(encoding="utf-8")
    assert "<dt>GPU-hours</dt><dd>2.00 (wall time" in c100
    assert "<dt>CUDA</dt><dd>12.1</dd>" in c100 and "NVIDIA H200 (4 runs)" in c100


@pytest.mark.slow
def test_plot_data_is_the_numbers_drawn(small_report):
    data = small_report / "data"
    counts = pd.read_csv(data / "cifar10-lt_training_counts.csv")
    assert counts[counts["imb_factor"] == 100]["train_count"].tolist() == \
        [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    # Test error at epoch e is final + 40 / (1 + e): the median over ce's seeds (30, 31, 32)
    # at the last epoch (7) is 31 + 5.
    curves = pd.read_csv(data / "cifar10-lt_curves_if100.csv")
    last = curves[(curves["configuration"] == "ce [epochs=200]") & (curves["epoch"] == 7)]
    assert last["test_err"].tolist() == [pytest.approx(36.0)] and last["runs"].tolist() == [3]
    # Per-class accuracy of class 0 (5000 images): round(100 - e + 10) over e = 30, 31, 32.
    per_class = pd.read_csv(data / "cifar10-lt_per_class_if100.csv")
    head = per_class[(per_class["configuration"] == "ce [epochs=200]")
                     & (per_class["class"] == 0)]
    assert head[["train_count", "accuracy_mean", "runs"]].values.tolist() == [[5000, 79.0, 3]]
    # ε at IF 100: 8 head classes × 25 examples and 2 medium classes × 24, over 3 seeds whose
    # bins start at -1.0, -0.9, -0.8: re-binned onto 10 equal bins over [-1.0, 1.2].
    eps = pd.read_csv(data / "cifar10-lt_eps_meta-ce_if100.csv")
    mine = eps[eps["quantity"] == "eps"]
    totals = mine.groupby("group")["count"].sum().to_dict()
    assert totals == {"many": pytest.approx(600), "medium": pytest.approx(144)}
    assert set(eps["epoch"]) == {199} and len(mine) == 20
    assert mine["lo"].min() == pytest.approx(-1.0) and mine["hi"].max() == pytest.approx(1.2)
    # Mean ε per class over the seeds' shifts 0, 0.1, 0.2: -0.9 + 0.1 + 0.2 · peak bin, the
    # peak at bin 4 for the head classes and 6 for the medium ones.
    means = pd.read_csv(data / "cifar10-lt_eps_mean_meta-ce_if100.csv")
    eps_means = means[means["quantity"] == "eps"].sort_values("class")
    assert eps_means["train_count"].tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139,
                                                 83, 50]
    assert eps_means["mean"].tolist() == pytest.approx([0.0] * 8 + [0.4] * 2)
    assert eps_means["group"].tolist() == ["many"] * 8 + ["medium"] * 2


def test_rebin_keeps_totals_and_splits_by_overlap():
    edges = np.array([0.0, 0.5, 1.0, 1.5])
    counts = rebin(np.array([0.0, 0.25, 1.0, 1.2]), np.array([1.0, 0.75, 1.5, 1.2]),
                   np.array([4.0, 2.0, 3.0, 5.0]), edges)
    # [0, 1) → 2 + 2; [0.25, 0.75) → 1 + 1; [1, 1.5) → 3 in the last bin; the zero-width
    # bin at 1.2 → the last bin.
    assert counts.tolist() == [3.0, 3.0, 8.0]


def test_report_of_empty_store(tmp_path):
    index = write_report(ResultStore(tmp_path / "nothing"), tmp_path / "report")
    assert "No results in the store yet." in index.read_text(encoding="utf-8")
    assert "No results in the store yet." in (tmp_path / "report" / "results.md").read_text()


def test_report_command(tmp_path):
    ldam = {"epochs": 200, "lr": 0.1, "protocol": "ldam"}
    stored(tmp_path, [record(f"r{seed}", seed=seed, err=30.0 + seed, hparams=ldam,
                             top1_err_best_epoch=29.5 + seed) for seed in range(3)])
    result = CliRunner().invoke(cli, ["report", "--results", str(tmp_path / "results"),
                                      "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {tmp_path / 'site' / 'index.html'}\n"
    # The repository's published numbers are used by default: Jamal's CE at IF 100 (best
    # test epoch) against the best-epoch mean 30.5.
    assert "pub. 29.64 [1] Δ +0.86 from best test ep. 30.50" in (tmp_path / "site" / "index.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--results", "{tmp}/none"], "no results store at"),
    (["--published", "{tmp}/none.csv"], "published numbers not found"),
])
def test_report_bad_input(tmp_path, args, message):
    small_store(tmp_path / "results")
    args = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli, ["report", "--results", str(tmp_path / "results"),
                                      "--out", str(tmp_path / "site"), *args])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and message in line
    assert not (tmp_path / "site").exists()


MARGIN_SECTION = textwrap.dedent('''
    import pandas as pd
    from ltbench.api import Plot, ReportSection
    from ltbench.api.plots import render

    def margin_section(page):
        rows = [{"configuration": label, "imb_factor": imb, "run_id": run_id,
                 "mean_margin": float(margins["margin"].mean())}
                for imb in page.columns for label in page.rows
                for run_id in page.ok_runs(imb, label)["run_id"]
                if (margins := page.artifact("margins", run_id)) is not None]
        if not rows:
            return None

        def draw(figure, narrow):
            figure.add_subplot().bar(range(len(rows)), [r["mean_margin"] for r in rows])

        return ReportSection("Learned margins", [Plot("Mean margin", "Each run's mean margin.",
                                                      *render(draw, 2.0), pd.DataFrame(rows),
                                                      "margins")])

    def never_called(page):
        raise AssertionError("the store holds no 'absent' artifact")
''')

REPORT_WITHOUT_TORCH = textwrap.dedent('''
    import sys
    from pathlib import Path
    from ltbench.report.site import write_report
    from ltbench.store.result_store import ResultStore
    write_report(ResultStore(Path(sys.argv[1])), Path(sys.argv[2]))
    sys.exit(3 if "torch" in sys.modules else 0)
''')


def test_plugin_sections_are_keyed_by_artifact_name_and_need_no_torch(tmp_path):
    """A third-party section registered for artifact ``margins`` draws the ok runs' artifacts;
    the section of an artifact the store lacks is never called; the report, built-in ε section
    included, runs without importing torch."""
    store = ResultStore(tmp_path / "results")
    for run_id, margins in (("m0", [0.5, 1.5]), ("m1", [2.0, 4.0])):
        store.write(record(run_id, seed=int(run_id[1])),
                    {"margins": pd.DataFrame({"margin": margins})})
    store.write(failed_record("m2", seed=2), {"margins": pd.DataFrame({"margin": [9.0]})})
    counts = make_record()["train_class_counts"]
    store.write(record("e0", method="meta-ce"),
                {"eps": eps_frame(counts, 199), "eps_summary": eps_summary_frame(counts, 199)})
    site = tmp_path / "site"
    install_plugin(site, "margin_plugin", MARGIN_SECTION,
                   "[ltbench.report_sections]\nmargins = margin_plugin:margin_section\n"
                   "absent = margin_plugin:never_called\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", REPORT_WITHOUT_TORCH, str(store.root),
                           str(tmp_path / "report")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    margins = pd.read_csv(tmp_path / "report" / "data" / "cifar10-lt_margins.csv")
    assert margins[["run_id", "mean_margin"]].values.tolist() == [["m0", 1.0], ["m1", 3.0]]
    html = (tmp_path / "report" / "cifar10-lt.html").read_text(encoding="utf-8")
    assert "Learned margins" in html and "Meta-learned ε and weights" in html
    assert html.index("Meta-learned ε") < html.index("Learned margins")  # eps < margins


def test_configuration_file_names_stay_short_and_distinct():
    from ltbench.api.plots import configuration_slug

    labels = ["ce [" + ", ".join(f"knob{k}={k * seed}" for k in range(30)) + "]"
              for seed in (1, 2)]
    slugs = [configuration_slug("eps_mean", label, 100.0) for label in labels]
    assert all(len(slug) <= 90 for slug in slugs) and slugs[0] != slugs[1]
    assert slugs[0].startswith("eps_mean_ce-knob0-0-knob1-1") and slugs[0].endswith("_if100")
    assert configuration_slug("eps", "meta-ce", 100.0) == "eps_meta-ce_if100"


def test_a_second_report_of_the_same_data_renders_nothing_and_a_change_renders_its_plots(
        tmp_path, monkeypatch):
    """Renderings are cached by what they draw: the same store renders no plot again and
    writes the same pages; one more run (without curves) in one cell re-renders just the
    per-class plot of its imbalance factor."""
    from ltbench.api import plots

    monkeypatch.setenv("LTBENCH_PLOT_CACHE", str(tmp_path / "plot-cache"))
    store = ResultStore(tmp_path / "results")
    for seed in (0, 1):
        for imb in (100.0, 10.0):
            rec = record(f"{seed}{int(imb):03d}", seed=seed, imb=imb, err=30.0 + seed)
            store.write(rec, {"curves": pd.DataFrame(
                {"epoch": [0, 1], "lr": [0.1, 0.1], "train_loss": [2.0, 1.0 + seed],
                 "train_acc": [10.0, 20.0], "test_acc": [50.0, 60.0 + seed],
                 "train_s": [1.0, 1.0], "eval_s": [0.1, 0.1]})})
    rendered = []
    real_render = plots.render
    monkeypatch.setattr(plots, "render", lambda draw, height: rendered.append(
        draw.__qualname__) or real_render(draw, height))
    write_report(store, tmp_path / "first")
    first = len(rendered)
    assert first == 7  # training counts; per-class accuracy, curves, cost at IF 100 and 10
    write_report(store, tmp_path / "second")
    assert len(rendered) == first
    for page in ("index.html", "cifar10-lt.html"):
        strip = lambda text: re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "", text)  # noqa: E731
        assert strip((tmp_path / "first" / page).read_text()) == \
            strip((tmp_path / "second" / page).read_text())
    store.write(record("2010", seed=2, imb=10.0, err=33.0))  # a run without curves
    write_report(store, tmp_path / "third")
    # of IF 10: the new run is a new per-class mean and a new point of the cost plot
    assert sorted(rendered[first:]) == ["error_vs_cost.<locals>.draw",
                                        "per_class_accuracy.<locals>.draw"]


def test_a_second_report_reads_no_eps_artifact_and_a_new_run_recomputes_only_its_cell(
        tmp_path, monkeypatch):
    """The ε section's plot data is kept per cell (:meth:`SectionInput.cell_data`): a second
    report of the same store reads no ε artifact and writes the same ε data; one more run in
    the IF 10 cell reads that cell's runs again, not the IF 100 cell's."""
    store = ResultStore(tmp_path / "results")
    counts = make_record()["train_class_counts"]
    for seed in (0, 1):
        for imb in (100.0, 10.0):
            store.write(record(f"e{seed}{int(imb):03d}", method="meta-ce", seed=seed, imb=imb),
                        {"eps": eps_frame(counts, 199, 0.1 * seed),
                         "eps_summary": eps_summary_frame(counts, 199)})
    reads = []
    real_artifact = ResultStore.artifact
    monkeypatch.setattr(ResultStore, "artifact", lambda self, name, run_id: reads.append(
        (name, run_id)) or real_artifact(self, name, run_id))
    write_report(store, tmp_path / "first")
    assert sorted(reads) == sorted((name, f"e{seed}{imb}") for name in ("eps", "eps_summary")
                                   for seed in (0, 1) for imb in ("100", "010"))
    reads.clear()
    write_report(store, tmp_path / "second")
    assert reads == []
    for name in ("cifar10-lt_eps_meta-ce_if100.csv", "cifar10-lt_eps_mean_meta-ce_if10.csv"):
        assert (tmp_path / "first" / "data" / name).read_bytes() == \
            (tmp_path / "second" / "data" / name).read_bytes()
    store.write(record("e2010", method="meta-ce", seed=2, imb=10.0),
                {"eps": eps_frame(counts, 199, 0.2), "eps_summary": eps_summary_frame(counts, 199)})
    write_report(store, tmp_path / "third")
    assert sorted(reads) == sorted((name, f"e{seed}010") for name in ("eps", "eps_summary")
                                   for seed in (0, 1, 2))
    third = pd.read_csv(tmp_path / "third" / "data" / "cifar10-lt_eps_meta-ce_if10.csv")
    first = pd.read_csv(tmp_path / "first" / "data" / "cifar10-lt_eps_meta-ce_if10.csv")
    assert third["count"].sum() == pytest.approx(first["count"].sum() * 1.5)  # 3 seeds, not 2


def test_every_error_table_states_its_model_selection(tmp_path):
    """The caption names the rule: the final epoch, and where a configuration also selected
    τ, that it did so on the validation split."""
    store = stored(tmp_path, [record("a"), record("b", method="tau-norm",
                                                  selection_rule="last,tau=val")])
    write_report(store, tmp_path / "site")
    markdown = (tmp_path / "site" / "results.md").read_text(encoding="utf-8")
    assert ("cifar10-lt: top-1 error (%), mean ± std over seeds; model selection: final epoch; "
            "tau-norm: final epoch, τ chosen on the validation split\n") in markdown


def test_shot_tables_show_published_group_accuracies_and_their_delta(tmp_path):
    """A final-epoch many-shot accuracy published for ce at 200 epochs shows beside the
    group's cell with Δ = ltbench − published; a best-test-epoch group number (stored for the
    whole test set only) never does."""
    store = stored(tmp_path, [record("a", seed=0), record("b", seed=1)])  # many_acc 90.5
    rows = load_published(published_file(tmp_path, [
        "Q,T9,Softmax,CIFAR-10-LT,100,many,top1_acc,88.0,Paper B,P1,,ce,cifar10-lt,exp,,200,"
        "final_epoch,last epoch,",
        "P,T1,Softmax,CIFAR-10-LT,100,medium,top1_acc,50.0,Paper A,P2,,ce,cifar10-lt,exp,,200,"
        "best_test_epoch,code selects on test,"]))
    write_report(store, tmp_path / "site", published=rows)
    markdown = (tmp_path / "site" / "results.md").read_text(encoding="utf-8")
    [line] = [line for line in markdown.splitlines() if line.startswith("| ce |")
              and "90.50" in line]
    assert "**90.50 ± 0.00 (n=2, no CI)** · pub. 88.00 [1] Δ +2.50 |" in line
    assert "pub. 50.00" not in markdown
    assert "[1] Q, T9: Paper B (P1). Model selection: final epoch" in markdown
