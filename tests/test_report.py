"""Result tables (aggregation, labels, rendering) and the static HTML / Markdown report."""

from __future__ import annotations

import json
import math
import statistics

import pandas as pd
import pytest

from ltbench import __version__
from ltbench.report import write_report
from ltbench.store import ResultStore
from ltbench.tables import (Cell, ErrorTable, error_table, format_cell, run_summary, status_counts,
                            to_markdown)
from helpers import failed_record, make_record

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


def test_mean_and_sample_std_over_seeds(tmp_path):
    records = read(tmp_path, [record(f"s{seed}", seed=seed, err=err)
                              for seed, err in enumerate([30.0, 31.0, 32.0])]
                   + [record(f"t{seed}", imb=10.0, seed=seed, err=err)
                      for seed, err in enumerate([29.5, 30.25])])
    table = error_table(records, "cifar10-lt")
    assert table.cells[("ce", 100.0)] == Cell(mean=31.0, std=1.0, n=3, failed=0)
    assert format_cell(table.cells[("ce", 100.0)]) == "31.00 ± 1.00 (n=3)"
    two = table.cells[("ce", 10.0)]
    assert two.mean == pytest.approx(29.875)
    assert two.std == pytest.approx(statistics.stdev([29.5, 30.25]))  # 0.5303...
    assert format_cell(two) == "29.88 ± 0.53 (n=2)"


def test_single_seed_has_no_std():
    cell = Cell(mean=29.6449, std=math.nan, n=1, failed=0)
    assert format_cell(cell) == "29.64 (n=1)"


def test_columns_descending_and_missing_cell(tmp_path):
    records = read(tmp_path, [record("a", imb=10.0), record("b", imb=100.0),
                              record("c", method="focal", imb=100.0, err=28.0),
                              record("d", imb=12.5, err=20.0)])
    table = error_table(records, "cifar10-lt")
    assert table.columns == [100.0, 12.5, 10.0]
    assert table.rows == ["ce", "focal"]
    assert ("focal", 10.0) not in table.cells
    assert format_cell(table.cells.get(("focal", 10.0))) == "—"


def test_failed_and_diverged_runs_are_counted_not_averaged(tmp_path):
    records = read(tmp_path, [
        record("ok1", seed=0, err=30.0), record("ok2", seed=1, err=32.0),
        failed_record("bad1", seed=2, hparams=json.dumps(HPARAMS, separators=(",", ":"))),
        record("div1", seed=3, err=90.0, status="diverged", error="loss is nan"),
        failed_record("bad2", imb_factor=10.0,
                      hparams=json.dumps(HPARAMS, separators=(",", ":"))),
    ])
    table = error_table(records, "cifar10-lt")
    assert table.cells[("ce", 100.0)] == Cell(mean=31.0, std=pytest.approx(math.sqrt(2)),
                                              n=2, failed=2)
    assert format_cell(table.cells[("ce", 100.0)]) == "31.00 ± 1.41 (n=2) (2 failed)"
    assert format_cell(table.cells[("ce", 10.0)]) == "— (1 failed)"
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
    assert table.cells[("ce [epochs=200]", 100.0)] == Cell(31.0, pytest.approx(math.sqrt(2)),
                                                           2, 0)
    assert table.cells[("ce [epochs=1]", 100.0)].mean == 80.0
    # A key absent from one configuration is shown as unset, distinct from a null value.
    unset = read(tmp_path / "unset", [record("i", hparams={"epochs": 200}),
                                      record("j", hparams={"epochs": 200, "tau": None})])
    assert error_table(unset, "cifar10-lt").rows == ["ce [tau=null]", "ce [tau=unset]"]
    # The other dataset's table sees one ce configuration only.
    assert error_table(records, "cifar100-lt").rows == ["ce"]


def test_method_order(tmp_path):
    records = read(tmp_path, [record("a", method="ce"), record("b", method="zeta"),
                              record("c", method="ldam"), record("d", method="focal")])
    assert error_table(records, "cifar10-lt").rows == ["ce", "focal", "ldam", "zeta"]
    ordered = error_table(records, "cifar10-lt", method_order=["ldam", "ce"])
    assert ordered.rows == ["ldam", "ce", "focal", "zeta"]


def test_empty_dataset_table(tmp_path):
    table = error_table(read(tmp_path, []), "cifar10-lt")
    assert (table.columns, table.rows, table.cells) == ([], [], {})


SMALL_RECORDS = [
    record("a0", seed=0, err=30.0), record("a1", seed=1, err=31.0), record("a2", seed=2, err=32.0),
    record("b0", imb=10.0, seed=0, err=12.345),
    record("c0", method="focal", seed=0, err=29.0),
    failed_record("c1", method="focal", seed=1, hparams='{"epochs":200,"lr":0.1}'),
]


def test_markdown_exact(tmp_path):
    table = error_table(read(tmp_path, SMALL_RECORDS), "cifar10-lt")
    assert to_markdown(table) == (
        "| method | IF 100 | IF 10 |\n"
        "|---|---:|---:|\n"
        "| ce | 31.00 ± 1.00 (n=3) | 12.35 (n=1) |\n"
        "| focal | 29.00 (n=1) (1 failed) | — |\n"
    )


def test_markdown_escapes_pipes():
    table = ErrorTable("d", "top1_err", [100.0], ["a|b"],
                       {("a|b", 100.0): Cell(1.0, math.nan, 1, 0)})
    assert to_markdown(table).splitlines()[2] == "| a\\|b | 1.00 (n=1) |"


def test_run_summary_exact(tmp_path):
    records = read(tmp_path, SMALL_RECORDS + [record("d0", dataset="cifar100-lt", err=61.5)])
    assert run_summary(records) == (
        "cifar10-lt: top-1 error (%), final epoch, mean ± std over seeds\n"
        "method  IF 100                  IF 10\n"
        "ce      31.00 ± 1.00 (n=3)      12.35 (n=1)\n"
        "focal   29.00 (n=1) (1 failed)  —\n"
        "\n"
        "cifar100-lt: top-1 error (%), final epoch, mean ± std over seeds\n"
        "method  IF 100\n"
        "ce      61.50 (n=1)\n"
    )
    assert run_summary(read(tmp_path / "empty", [])) == "no results\n"


def test_report_writes_html_and_markdown(tmp_path):
    store = stored(tmp_path, SMALL_RECORDS + [
        record("d0", dataset="cifar100-lt", err=61.5),
        record("e0", method="ce", hparams={"epochs": 200, "note": "<b>bold</b>"},
               dataset="cifar100-lt", err=62.0),
    ])
    out = tmp_path / "report"
    index = write_report(store, out, method_order=["focal", "ce"])
    assert index == out / "index.html"
    html = index.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "<script" not in html and "<style>" in html
    assert 'name="viewport"' in html and "overflow-x: auto" in html
    for text in ("cifar10-lt", "cifar100-lt", "IF 100", "IF 10", "31.00 ± 1.00 (n=3)",
                 "12.35 (n=1)", "29.00 (n=1) (1 failed)", "61.50 (n=1)",
                 "Runs: 5 ok, 1 failed, 0 diverged.", "final epoch", "not shown",
                 f"ltbench {__version__}"):
        assert text in html, text
    # focal before ce, as asked; a missing cell shows the dash, not a number.
    assert html.index(">focal<") < html.index(">ce<")
    assert '<td class="missing">—</td>' in html
    # Labels are escaped.
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold" not in html

    markdown = (out / "results.md").read_text(encoding="utf-8")
    records = store.read()
    for dataset in ("cifar10-lt", "cifar100-lt"):
        table = error_table(records, dataset, method_order=["focal", "ce"])
        assert f"## {dataset}\n" in markdown
        assert to_markdown(table) in markdown
    assert sorted(path.name for path in out.iterdir()) == ["index.html", "results.md"]


def test_report_of_empty_store(tmp_path):
    index = write_report(ResultStore(tmp_path / "nothing"), tmp_path / "report")
    assert "No results in the store yet." in index.read_text(encoding="utf-8")
    assert "No results in the store yet." in (tmp_path / "report" / "results.md").read_text()
