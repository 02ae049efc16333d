"""Published numbers (the committed CSV and its loader) and ``ltbench check``.

The comparisons run on small synthetic stores whose means, standard errors and tolerances are
computed by hand in the comments.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ltbench.cli import cli
from ltbench.errors import BadInput
from ltbench.report.check import Tolerance, check, to_json, to_markdown
from ltbench import registry
from ltbench.report.published import (LTBENCH_COLUMNS, ORIGINAL_COLUMNS, SELECTIONS,
                                      default_published_dir, load_published, skip_reason)
from ltbench.store.result_store import ResultStore
from helpers import BUILTIN_DATASETS, BUILTIN_METHODS, failed_record, make_record, small_store

PUBLISHED_CSV = default_published_dir() / "published.csv"
SHARED_CSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "published.csv"
HEADER = ",".join(ORIGINAL_COLUMNS + LTBENCH_COLUMNS) + "\n"


# -- the committed published numbers --------------------------------------------------------

def test_every_published_row_parses_and_maps_to_known_names():
    rows = load_published(default_published_dir())
    assert len(rows) == 449
    assert {row.ltbench_method for row in rows} - {""} <= BUILTIN_METHODS
    assert {row.ltbench_dataset for row in rows} <= BUILTIN_DATASETS
    assert {row.selection for row in rows} <= set(SELECTIONS)
    for row in rows:
        assert row.selection_source, row.where
        assert row.ltbench_method or row.mapping_note, row.where
        assert row.ltbench_profile == ("" if row.ltbench_dataset in
                                       ("imagenet-lt", "places-lt", "inat2018") else
                                       "step" if row.dataset == "CIFAR-10-step" else "exp")


def test_every_published_protocol_is_a_preset_of_its_dataset():
    """The loader checks protocol names only for their form (a dataset's presets are known
    only by loading it, with torch); the committed rows name presets their datasets have."""
    for row in load_published(default_published_dir()):
        if row.ltbench_protocol:
            presets = registry.load("dataset", row.ltbench_dataset).protocols
            assert row.ltbench_protocol in presets, row.where


def test_published_mappings_that_need_care():
    rows = {(r.paper, r.table, r.method, r.dataset, r.imb_factor, r.split, r.metric): r
            for r in load_published(PUBLISHED_CSV)}
    lade_ldam = rows[("Hong2021-LADE", "Table2", "LDAM", "CIFAR-100-LT", 100.0, "all",
                      "top1_acc")]
    # 42.0 % accuracy is LDAM-DRW's 57.96 % error (Cao et al.), not LDAM's 60.40 %.
    assert lade_ldam.ltbench_method == "ldam-drw" and lade_ldam.selection == "unknown"
    starred = rows[("Jamal2020", "CVPR2020-slides CIFAR-10-LT",
                    "L2RW* (reported in MWN paper)", "CIFAR-10-LT", 100.0, "all", "top1_err")]
    assert (starred.ltbench_method, starred.protocol_epochs, starred.selection) == \
        ("l2rw", 100, "best_test_epoch")
    ours = rows[("Jamal2020", "CVPR2020-slides CIFAR-10-LT", "Ours with focal loss",
                 "CIFAR-10-LT", 100.0, "all", "top1_err")]
    assert (ours.ltbench_method, ours.protocol_epochs) == ("meta-focal", 200)
    step = rows[("Cao2019-LDAM", "Table2", "LDAM-DRW", "CIFAR-10-step", 100.0, "all",
                 "top1_err")]
    assert (step.ltbench_dataset, step.ltbench_profile) == ("cifar10-lt", "step")
    la = rows[("Menon2021-LA", "README", "Logit adjustment loss", "CIFAR-100-LT", 100.0, "all",
               "top1_acc")]
    assert (la.ltbench_method, la.protocol_epochs, la.selection) == \
        ("logit-adjust", 1419, "final_epoch")
    balms = rows[("Ren2020-BALMS", "README", "BALMS", "ImageNet-LT", 256.0, "all", "top1_acc")]
    assert balms.ltbench_method == "" and "no ltbench method" in balms.mapping_note
    places = rows[("Hong2021-LADE", "Table3", "LADE", "Places-LT", 996.0, "few", "top1_acc")]
    assert (places.selection, places.protocol_epochs, skip_reason(places)) == \
        ("final_epoch", 30, None)


@pytest.mark.skipif(not SHARED_CSV.is_file(),
                    reason="the shared reference table ../shared/reference/published.csv is "
                           "not beside this checkout")
def test_published_file_keeps_every_original_row_and_column():
    with open(SHARED_CSV, newline="", encoding="utf-8") as handle:
        shared = [tuple(row[c] for c in ORIGINAL_COLUMNS) for row in csv.DictReader(handle)]
    with open(PUBLISHED_CSV, newline="", encoding="utf-8") as handle:
        ours = [tuple(row[c] for c in ORIGINAL_COLUMNS) for row in csv.DictReader(handle)]
    assert ours == shared


@pytest.mark.parametrize("change, message", [
    (("ltbench_method", "cee"), "ltbench_method 'cee' is not one of"),
    (("ltbench_dataset", "cifar10"), "ltbench_dataset 'cifar10'"),
    (("selection", "best"), "selection 'best'"),
    (("value", "n/a"), "value 'n/a' is not a number"),
    (("imbalance_factor", "0.01"), "imbalance_factor must be >= 1"),
    (("metric", "top5_err"), "metric 'top5_err'"),
    (("protocol_epochs", "200.5"), "protocol_epochs '200.5'"),
    (("ltbench_protocol", "BBN 2020"), "ltbench_protocol 'BBN 2020' is not a protocol name"),
])
def test_bad_published_rows_name_file_and_line(tmp_path, change, message):
    row = dict(zip(ORIGINAL_COLUMNS + LTBENCH_COLUMNS,
                   ["P", "T", "ERM", "CIFAR-10-LT", "100", "all", "top1_err", "29.64", "src",
                    "P1", "", "ce", "cifar10-lt", "exp", "ldam", "200", "best_test_epoch",
                    "code", ""]))
    row[change[0]] = change[1]
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + ",".join(row.values()) + "\n")
    with pytest.raises(BadInput, match=message) as info:
        load_published(path)
    assert str(info.value).startswith(f"{path}:2: ")


def test_published_file_without_ltbench_columns(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(",".join(ORIGINAL_COLUMNS) + "\n")
    with pytest.raises(BadInput, match="missing columns ltbench_method"):
        load_published(path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInput, match="no published-numbers file"):
        load_published(empty)


# -- comparisons ----------------------------------------------------------------------------

def published(tmp_path, lines: list[str]) -> list:
    path = tmp_path / "published.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return load_published(path)


def row(method: str, imb: int, metric: str, value: float, selection: str = "final_epoch",
        epochs: str = "200", split: str = "all", paper: str = "P", protocol: str = "") -> str:
    return (f"{paper},T,{method},CIFAR-10-LT,{imb},{split},{metric},{value},src,P1,,{method},"
            f"cifar10-lt,exp,{protocol},{epochs},{selection},rule,")


def run(run_id, method="ce", imb=100.0, seed=0, err=30.0, best=None, epochs=200,
        protocol=None, **extra):
    hparams = {"epochs": epochs, "lr": 0.1, **({"protocol": protocol} if protocol else {})}
    return make_record(run_id, method=method, imb_factor=imb, seed=seed, top1_err=err,
                       top1_acc=100.0 - err, top1_err_best_epoch=err if best is None else best,
                       epochs=epochs, hparams=json.dumps(hparams), **extra)


def store_of(tmp_path, records) -> ResultStore:
    store = ResultStore(tmp_path / "results")
    for record in records:
        store.write(record)
    return store


# ce at IF 100: final errors 30, 31, 32 → mean 31, std 1, SE 1/√3 = 0.577, 2 SE = 1.155;
# best-epoch errors 29.5, 30, 30.5 → mean 30, SE 0.289 → tolerance = floor 1.
CE_RUNS = [run("ce0", seed=0, err=30.0, best=29.5), run("ce1", seed=1, err=31.0, best=30.0),
           run("ce2", seed=2, err=32.0, best=30.5)]


@pytest.mark.parametrize("line, outcome, diff, tolerance", [
    # final error 31 vs 30.0: Δ +1.0 ≤ 1.155 → pass.
    (row("ce", 100, "top1_err", 30.0), "pass", 1.0, 2 / math.sqrt(3)),
    # vs 29.8: Δ +1.2 > 1.155 → regression (error higher).
    (row("ce", 100, "top1_err", 29.8), "regression", 1.2, 2 / math.sqrt(3)),
    # vs 32.2: Δ -1.2 → improvement.
    (row("ce", 100, "top1_err", 32.2), "improvement", -1.2, 2 / math.sqrt(3)),
    # accuracy 69.0 vs 70.2: Δ -1.2 → regression (accuracy lower).
    (row("ce", 100, "top1_acc", 70.2), "regression", -1.2, 2 / math.sqrt(3)),
    (row("ce", 100, "top1_acc", 67.8), "improvement", 1.2, 2 / math.sqrt(3)),
    # best-epoch error 30.0 vs 29.0: Δ exactly the floor 1.0 → pass (not beyond it).
    (row("ce", 100, "top1_err", 29.0, "best_test_epoch"), "pass", 1.0, 1.0),
    (row("ce", 100, "top1_err", 28.9, "best_test_epoch"), "regression", 1.1, 1.0),
    # best-epoch accuracy 70.0 vs 71.5: Δ -1.5 → regression.
    (row("ce", 100, "top1_acc", 71.5, "best_test_epoch"), "regression", -1.5, 1.0),
])
def test_outcome_and_tolerance(tmp_path, line, outcome, diff, tolerance):
    result = check(store_of(tmp_path, CE_RUNS).read(), published(tmp_path, [line]))
    (comparison,) = result.comparisons
    assert comparison.outcome == outcome
    assert comparison.diff == pytest.approx(diff)
    assert comparison.tolerance == pytest.approx(tolerance)
    assert comparison.n == 3 and comparison.config == "ce"
    assert result.regressed == (outcome == "regression")
    # A best-test-epoch comparison shows the same runs' final-epoch mean beside it.
    if line.endswith("best_test_epoch,rule,"):
        final = 31.0 if "top1_err" in line else 69.0
        assert comparison.final_epoch_mean == pytest.approx(final)
    else:
        assert math.isnan(comparison.final_epoch_mean)


def test_k_times_standard_error_widens_the_floor(tmp_path):
    # Errors 28, 32, 36: mean 32, std 4, SE 2.309; vs 29.0 Δ = +3.0.
    records = store_of(tmp_path, [run(f"w{s}", seed=s, err=e)
                                  for s, e in enumerate([28.0, 32.0, 36.0])]).read()
    rows = published(tmp_path, [row("ce", 100, "top1_err", 29.0)])
    wide = check(records, rows).comparisons[0]  # tolerance 2 × 2.309 = 4.619
    assert (wide.outcome, wide.tolerance) == ("pass", pytest.approx(4 / math.sqrt(3) * 2))
    tight = check(records, rows, tolerance=Tolerance(floor=1.0, k=1.0)).comparisons[0]
    assert (tight.outcome, tight.tolerance) == ("regression", pytest.approx(4 / math.sqrt(3)))
    floor = check(records, rows, tolerance=Tolerance(floor=3.5, k=1.0)).comparisons[0]
    assert (floor.outcome, floor.tolerance) == ("pass", 3.5)


@pytest.mark.parametrize("errors, tolerance, basis", [
    # One seed: no spread to measure; SE = assumed 1 / √1 → tolerance 2 × 1 = 2 points.
    ([31.9], 2.0, "σ=1 assumed"),
    # Two seeds 31.9 ± 0 (measured SE 0): still assumed, 1 / √2 → 2 × 0.707 = 1.414.
    ([31.9, 31.9], 2 / math.sqrt(2), "σ=1 assumed"),
    # Three identical seeds: measured SE 0 → the floor 1.
    ([31.9, 31.9, 31.9], 1.0, "SE"),
])
def test_fewer_than_three_seeds_assume_the_seed_spread(tmp_path, errors, tolerance, basis):
    records = store_of(tmp_path, [run(f"r{s}", seed=s, err=e)
                                  for s, e in enumerate(errors)]).read()
    (comparison,) = check(records, published(tmp_path, [row("ce", 100, "top1_err", 30.0)])
                          ).comparisons
    assert comparison.n == len(errors) and comparison.diff == pytest.approx(1.9)
    assert (comparison.tolerance, comparison.tolerance_basis) == (pytest.approx(tolerance),
                                                                  basis)
    assert comparison.outcome == ("pass" if tolerance > 1.9 else "regression")
    assert math.isnan(comparison.se) == (len(errors) == 1)


def test_cost_is_each_runs_share_of_its_device(tmp_path):
    # 3600 s alone on a CPU + 7200 s in a pack of 2 on a GPU + 1800 s of an older record
    # without pack_size (counted as alone) = 1 + 1 + 0.5 hours.
    records = store_of(tmp_path, [
        run("alone", seed=0, wall_s=3600.0, device="cpu (x86_64)", pack_size=1),
        run("packed", seed=1, wall_s=7200.0, device="NVIDIA H200", pack_size=2),
        run("older", seed=2, wall_s=1800.0, device="cpu (x86_64)", pack_size=None),
    ]).read()
    (comparison,) = check(records, published(tmp_path, [row("ce", 100, "top1_err", 30.0)])
                          ).comparisons
    assert (comparison.device_hours, comparison.device_kind) == (2.5, "CPU+GPU")


def test_assumed_seed_std_is_a_setting(tmp_path):
    records = store_of(tmp_path, [run("one", err=32.5)]).read()
    rows = published(tmp_path, [row("ce", 100, "top1_err", 30.0)])
    loose = check(records, rows, tolerance=Tolerance(assumed_seed_std=1.5)).comparisons[0]
    assert (loose.outcome, loose.tolerance) == ("pass", 3.0)
    none = check(records, rows, tolerance=Tolerance(assumed_seed_std=0.0)).comparisons[0]
    assert (none.outcome, none.tolerance, none.tolerance_basis) == \
        ("regression", 1.0, "σ=0 assumed")


def test_missing_is_never_a_pass(tmp_path):
    records = store_of(tmp_path, CE_RUNS + [
        run("ce-if10", imb=10.0, err=14.0),
        failed_record("foc0", method="focal", hparams='{"epochs":200,"lr":0.1}'),
        run("ldam-smoke", method="ldam", err=80.0, epochs=1),
    ]).read()
    rows = published(tmp_path, [
        row("ce", 10, "top1_err", 14.0),          # compared: pass
        row("focal", 100, "top1_err", 29.6),      # only a failed run
        row("ldam", 100, "top1_err", 26.65),      # only a 1-epoch smoke run
        row("ldam-drw", 10, "top1_err", 11.84),   # no run of the method at all
        row("ce-drw", 10, "top1_err", 13.0),      # not checked: not in the store by default
    ])
    result = check(records, rows, methods=["ce", "focal", "ldam", "ldam-drw"])
    outcomes = [(c.row.ltbench_method, c.outcome, c.reason) for c in result.comparisons]
    assert outcomes == [
        ("focal", "missing", "no ok run (1 failed or diverged)"),
        ("ldam", "missing", "no configuration with epochs=200, profile=exp"),
        ("ldam-drw", "missing", "no run of ldam-drw on cifar10-lt"),
        ("ce", "pass", ""),
    ]
    assert result.counts() == {"regression": 0, "missing": 3, "improvement": 0, "pass": 1}
    assert not result.regressed
    assert result.failures() == ["3 missing"]
    # By default the checked methods are those in the store: ldam-drw and ce-drw drop out.
    default = check(records, rows)
    assert {c.row.ltbench_method for c in default.comparisons} == {"ce", "focal", "ldam"}


def test_missing_factor_of_a_method_that_ran_elsewhere(tmp_path):
    records = store_of(tmp_path, CE_RUNS + [run("f10", method="focal", imb=10.0)]).read()
    # Another method ran at IF 10, so ce's IF 10 number is missing rather than out of scope.
    result = check(records, published(tmp_path, [row("ce", 10, "top1_err", 13.6)]))
    assert [(c.outcome, c.reason) for c in result.comparisons] == [("missing", "no run at IF 10")]


def test_rows_not_compared_and_why(tmp_path):
    records = store_of(tmp_path, CE_RUNS).read()
    rows = published(tmp_path, [
        row("ce", 100, "top1_err", 30.0, "unknown"),
        row("ce", 100, "top1_acc", 70.0, split="F50"),
        row("ce", 100, "top1_acc", 70.0, split="many", selection="best_test_epoch"),
        row("ce", 100, "top1_err", 30.0, epochs=""),
        row("ce", 50, "top1_err", 25.0),                     # nobody ran IF 50
        row("ce", 100, "top1_err", 30.0, epochs="100"),       # nobody ran 100 epochs
        "P,T,Softmax,ImageNet-LT,256,all,top1_acc,43.1,src,P1,,ce,imagenet-lt,,,90,final_epoch,"
        "rule,",                                             # dataset not in the store
    ])
    result = check(records, rows)
    assert result.comparisons == []
    assert [reason for _, reason in result.not_compared] == [
        "model selection unknown", "shifted test split (in the report, not compared yet)",
        "best-epoch numbers are stored for the whole test set only",
        "published protocol length unknown",
        "no run of any method in its setting (imbalance factor, profile, protocol, epochs)",
        "no run of any method in its setting (imbalance factor, profile, protocol, epochs)"]
    assert "Not compared: 6 published rows in scope" in to_markdown(result)


def test_protocol_preset_must_match(tmp_path):
    records = store_of(tmp_path, [run("c0", protocol="ldam", err=30.0),
                                  run("m0", method="meta-ce", protocol="jamal", err=23.0),
                                  run("old", method="focal", err=29.0)]).read()
    result = check(records, published(tmp_path, [
        row("ce", 100, "top1_err", 30.0, protocol="jamal"),
        row("ce", 100, "top1_err", 30.0, protocol="ldam"),
        row("meta-ce", 100, "top1_err", 23.5, protocol="jamal"),
        # A run without a protocol (before presets existed) never matches a row naming one.
        row("focal", 100, "top1_err", 29.0, protocol="ldam"),
        row("focal", 100, "top1_err", 29.0),
    ]))
    assert [(c.row.ltbench_method, c.row.ltbench_protocol, c.outcome, c.reason)
            for c in result.comparisons] == [
        ("ce", "jamal", "missing", "no configuration with epochs=200, profile=exp, "
                                   "protocol=jamal"),
        ("focal", "ldam", "missing", "no configuration with epochs=200, profile=exp, "
                                     "protocol=ldam"),
        ("ce", "ldam", "pass", ""), ("focal", "", "pass", ""), ("meta-ce", "jamal", "pass", "")]


def test_group_accuracy_is_compared(tmp_path):
    # make_record's many_acc is 90.5 for every run.
    records = store_of(tmp_path, CE_RUNS).read()
    (comparison,) = check(records, published(tmp_path, [
        row("ce", 100, "top1_acc", 92.0, split="many")])).comparisons
    assert (comparison.outcome, comparison.mean, comparison.diff) == \
        ("regression", 90.5, pytest.approx(-1.5))


def test_each_matching_configuration_is_compared(tmp_path):
    records = store_of(tmp_path, CE_RUNS + [
        make_record("lr0", imb_factor=100.0, seed=0, top1_err=35.0,
                    hparams='{"epochs":200,"lr":0.05}')]).read()
    result = check(records, published(tmp_path, [row("ce", 100, "top1_err", 31.0)]))
    assert [(c.config, c.outcome) for c in result.comparisons] == [
        ("ce [lr=0.05]", "regression"), ("ce [lr=0.1]", "pass")]


def test_markdown_and_json(tmp_path):
    records = store_of(tmp_path, CE_RUNS).read()
    result = check(records, published(tmp_path, [row("ce", 100, "top1_err", 29.8),
                                                 row("ce", 100, "top1_err", 31.0, paper="Q")]))
    markdown = to_markdown(result)
    lines = markdown.splitlines()
    assert lines[0] == "## ltbench check: 1 regression, 0 missing, 0 improvement, 1 pass"
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 4 and len({len(line) for line in table}) == 1  # aligned columns
    cells = [cell.strip() for cell in table[2].strip("|").split("|")]
    # cost: three runs of 1234.5 s each, trained alone on the CPU.
    assert cells[:14] == ["REGRESSION", "ce", "cifar10-lt", "100", "all", "top1_err",
                          "final epoch", "31.00 ± 0.58 (n=3)", "—", "29.8", "+1.20", "1.15",
                          "SE", "1.03 CPU-h"]
    document = to_json(result)
    assert document["counts"] == {"regression": 1, "missing": 0, "improvement": 0, "pass": 1,
                                  "not_compared": 0}
    first = document["comparisons"][0]
    assert (first["outcome"], first["mean"], first["std"], first["n"], first["published"]) == \
        ("regression", 31.0, 1.0, 3, 29.8)
    assert first["se"] == pytest.approx(1 / math.sqrt(3))
    assert document["failures"] == ["1 regression"]
    json.dumps(document, allow_nan=False)


# -- the command ----------------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(cli, ["check", *map(str, args)])


def test_check_command_exit_codes_and_json(tmp_path):
    store_of(tmp_path, CE_RUNS)
    good = tmp_path / "good.csv"
    good.write_text(HEADER + row("ce", 100, "top1_err", 30.5) + "\n")
    result = invoke("--results", tmp_path / "results", "--published", good)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("## ltbench check: 0 regression, 0 missing, "
                                    "0 improvement, 1 pass\n")
    written = tmp_path / "results" / "check.json"
    assert result.stderr == f"wrote {written}\n"
    document = json.loads(written.read_text())
    assert document["published"] == str(good) and document["failures"] == []
    assert [(c["outcome"], c["tolerance_basis"]) for c in document["comparisons"]] == \
        [("pass", "SE")]

    # A missing comparison fails the gate: focal was asked for and never ran.
    with_missing = tmp_path / "missing.csv"
    with_missing.write_text(good.read_text() + row("focal", 100, "top1_err", 29.6) + "\n")
    result = invoke("--results", tmp_path / "results", "--published", with_missing,
                    "--methods", "ce,focal")
    assert result.exit_code == 1
    assert result.stderr.endswith("check failed: 1 missing\n")
    assert json.loads(written.read_text())["failures"] == ["1 missing"]

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + row("ce", 100, "top1_err", 29.5) + "\n")
    out = tmp_path / "elsewhere.json"
    result = invoke("--results", tmp_path / "results", "--published", bad, "--out", out)
    assert result.exit_code == 1
    assert "| REGRESSION |" in result.stdout
    assert result.stderr.endswith("check failed: 1 regression\n")
    assert json.loads(out.read_text())["counts"]["regression"] == 1
    # A wider floor lets the same numbers pass.
    result = invoke("--results", tmp_path / "results", "--published", bad, "--out", out,
                    "--tolerance", "1.5")
    assert result.exit_code == 0 and json.loads(out.read_text())["tolerance"]["floor"] == 1.5


def test_a_check_that_compares_nothing_fails_unless_allowed(tmp_path):
    # The only published row is for 100-epoch runs; the store has 200-epoch ones.
    store_of(tmp_path, CE_RUNS)
    other = tmp_path / "other.csv"
    other.write_text(HEADER + row("ce", 100, "top1_err", 30.0, epochs="100") + "\n")
    args = ("--results", tmp_path / "results", "--published", other)
    result = invoke(*args)
    assert result.exit_code == 1
    assert "No published number matches" in result.stdout
    assert result.stderr.endswith("check failed: nothing compared (1 published rows in "
                                  "scope, none comparable)\n")
    assert invoke(*args, "--allow-empty").exit_code == 0


def test_check_command_default_published_numbers(tmp_path):
    small_store(tmp_path / "results")
    result = invoke("--results", tmp_path / "results", "--tolerance-floor", "3")
    assert result.exit_code == 1, result.output  # the one missing comparison fails the gate
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in result.stdout.splitlines() if line.startswith("| ")]
    # Jamal's CE at IF 100 against ce's best-epoch mean (30.5); the 1-epoch smoke run of ce
    # is never compared.
    assert ["pass", "ce [epochs=200]", "cifar10-lt", "100", "all", "top1_err",
            "best test epoch", "30.50 ± 0.58 (n=3)", "31.00", "29.64", "+0.86", "3.00", "SE",
            "1.03 CPU-h",
            "Jamal2020 CVPR2020-slides CIFAR-10-LT (P1)", ""] in rows
    assert not any(r[1] == "ce [epochs=1]" for r in rows)
    assert result.stdout.startswith("## ltbench check: 0 regression, 1 missing, "
                                    "0 improvement, 17 pass\n")


@pytest.mark.parametrize("args, message", [
    (["--results", "{tmp}/none"], "no results store at"),
    (["--published", "{tmp}/none.csv"], "published numbers not found"),
    (["--methods", "cee"], "--methods: unknown method 'cee'"),
    (["--methods", ","], "--methods: no method named"),
    (["--tolerance-floor", "-1"], "--tolerance-floor must be a finite number >= 0"),
    (["--tolerance-k", "nan"], "--tolerance-k must be a finite number >= 0"),
    (["--assumed-seed-std", "-0.5"], "--assumed-seed-std must be a finite number >= 0"),
    (["--out", "{tmp}/no/such/check.json"], "folder"),
    (["--tolerance", "x"], "'x' is not a valid float"),
])
def test_check_bad_input_is_exit_2_and_writes_nothing(tmp_path, args, message):
    store_of(tmp_path, CE_RUNS)
    before = sorted(os.listdir(tmp_path / "results"))
    args = [a.format(tmp=tmp_path) for a in args]
    result = invoke(*(["--results", tmp_path / "results"] if "--results" not in args else []),
                    *args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and message in line
    assert sorted(os.listdir(tmp_path / "results")) == before


def test_bad_published_file_is_exit_2(tmp_path):
    store_of(tmp_path, CE_RUNS)
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + row("ce", 100, "top1_err", 30.0).replace("final_epoch", "best")
                   + "\n")
    result = invoke("--results", tmp_path / "results", "--published", bad)
    assert result.exit_code == 2
    assert f"{bad}:2: selection 'best'" in result.stderr


@pytest.mark.slow
def test_check_and_report_modules_do_not_import_torch():
    code = ("import sys, ltbench.cli, ltbench.report.check, ltbench.report.published, "
            "ltbench.report.figures, ltbench.report.site; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_ones_own_numbers_in_the_minimal_form_add_to_the_published_table(tmp_path):
    """Five columns suffice (docs/published.md): the row is a final-epoch top-1 error on the
    whole test set, credited to its file, and --published-extra adds it to --published's."""
    store_of(tmp_path, CE_RUNS)
    mine = tmp_path / "mine.csv"
    mine.write_text("ltbench_method,ltbench_dataset,imbalance_factor,protocol_epochs,value\n"
                    "ce,cifar10-lt,100,200,30.5\n")
    [parsed] = load_published(mine)
    assert (parsed.paper, parsed.split, parsed.metric, parsed.selection, parsed.source) == \
        ("mine", "all", "top1_err", "final_epoch", "mine.csv:2")
    other = tmp_path / "other.csv"
    other.write_text(HEADER + row("ce", 100, "top1_err", 30.0, epochs="100") + "\n")
    out = tmp_path / "check.json"
    result = invoke("--results", tmp_path / "results", "--published", other,
                    "--published-extra", mine, "--out", out)
    assert result.exit_code == 0, result.output  # 31.0 vs 30.5: within the tolerance
    document = json.loads(out.read_text())
    assert document["counts"]["pass"] == 1 and document["published_extra"] == [str(mine)]
    short = tmp_path / "short.csv"
    short.write_text("ltbench_method,value\nce,30\n")
    bad = invoke("--results", tmp_path / "results", "--published-extra", short)
    assert bad.exit_code == 2 and "missing columns ltbench_dataset" in bad.stderr
