"""``ltbench run`` → store → ``status`` → ``report``, as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import TINY_SYNTHETIC, tree_snapshot

from ltbench.store.result_store import ResultStore

TINY = [a for s in TINY_SYNTHETIC for a in ("--set", s)]


def ltbench(*args, cwd, check=True):
    proc = subprocess.run([sys.executable, "-m", "ltbench", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory):
    """A 2 methods × 2 factors × 2 seeds grid of 2-epoch synthetic runs, trained once."""
    work = tmp_path_factory.mktemp("grid")
    proc = ltbench("run", "--methods", "ce,ldam-drw", "--datasets", "synthetic-lt",
                   "--imb", "10,4", "--seeds", "0,1", "--epochs", "2", "--device", "cpu",
                   *TINY, cwd=work)
    return work, proc


@pytest.mark.slow
def test_run_trains_the_grid_and_prints_a_table(grid_store):
    work, proc = grid_store
    records = ResultStore(work / "results").read()
    assert len(records) == 8 and set(records["status"]) == {"ok"}
    assert sorted(set(zip(records["method"], records["imb_factor"], records["seed"]))) == \
        sorted((m, f, s) for m in ("ce", "ldam-drw") for f in (10.0, 4.0) for s in (0, 1))
    # Progress: an overall count per run and one line per epoch in a log.
    assert "[8/8] synthetic-lt imb=4 ldam-drw seed=1" in proc.stderr
    assert "epoch 2/2" in proc.stderr
    # The closing table has a row per method and a column per factor.
    assert "ldam-drw" in proc.stdout and "10" in proc.stdout and "(n=2, no CI)" in proc.stdout
    row = records.iloc[0]
    assert row["epochs"] == 2 and json.loads(row["hparams"])["classes"] == 4
    assert len(row["per_class_acc"]) == 4
    assert row["train_class_counts"].tolist() == \
        json.loads(json.dumps(row["train_class_counts"].tolist()))
    assert np.isclose(row["top1_err"], 100 - row["top1_acc"])
    assert 0.0 <= row["ece"] <= 100.0  # computed for every ok run (NaN would fail)
    curves = ResultStore(work / "results").curves(row["run_id"])
    assert list(curves["epoch"]) == [0, 1]
    assert curves.columns[0] == "run_id" and set(curves["run_id"]) == {row["run_id"]}


@pytest.mark.slow
def test_rerun_resumes_without_training(grid_store):
    work, _ = grid_store
    before = tree_snapshot(work / "results")
    mtimes = {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*.parquet")}
    proc = ltbench("run", "--methods", "ce,ldam-drw", "--datasets", "synthetic-lt",
                   "--imb", "4,10", "--seeds", "1,0", "--epochs", "2", "--device", "cpu",
                   *TINY, cwd=work)
    assert "8 already done, 0 to train" in proc.stderr
    assert tree_snapshot(work / "results") == before
    assert mtimes == {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*.parquet")}


@pytest.mark.slow
def test_status_counts_done_and_missing(grid_store):
    work, _ = grid_store
    proc = ltbench("status", "--methods", "ce,ldam-drw,focal", cwd=work)
    lines = proc.stdout.splitlines()
    assert any(l.split() == ["synthetic-lt", "10", "ce", "2", "0", "0", "0"] for l in lines)
    assert any(l.split() == ["synthetic-lt", "4", "focal", "0", "0", "0", "2"] for l in lines)
    assert lines[-1] == "total: 8 done, 0 failed, 0 diverged, 4 missing"
    # Without --methods it expects the methods the store holds, not every registered one.
    plain = ltbench("status", cwd=work).stdout.splitlines()
    assert sorted({line.split()[2] for line in plain[1:-1]}) == ["ce", "ldam-drw"]
    assert plain[-1] == "total: 8 done, 0 failed, 0 diverged, 0 missing"


@pytest.mark.slow
def test_report_writes_html_and_markdown(grid_store):
    work, _ = grid_store
    proc = ltbench("report", cwd=work)
    index = work / "reports" / "index.html"
    assert f"wrote {os.path.join('reports', 'index.html')}" in proc.stdout
    html = index.read_text()
    records = ResultStore(work / "results").read()
    ce10 = records[(records["method"] == "ce") & (records["imb_factor"] == 10.0)]["top1_err"]
    cell = f"{ce10.mean():.2f} ± {ce10.std(ddof=1):.2f}"
    assert cell in html and cell in (work / "reports" / "results.md").read_text()
    assert "http://" not in html and "https://" not in html


@pytest.mark.slow
def test_same_seed_on_cpu_gives_identical_numbers(grid_store, tmp_path):
    work, _ = grid_store
    ltbench("run", "--methods", "ldam-drw", "--datasets", "synthetic-lt", "--imb", "10",
            "--seeds", "1", "--epochs", "2", "--device", "cpu", "--results", tmp_path, *TINY,
            cwd=work)
    again = ResultStore(tmp_path).read().iloc[0]
    first = ResultStore(work / "results").read().set_index("run_id").loc[again["run_id"]]
    assert again["top1_acc"] == first["top1_acc"]
    assert again["per_class_acc"].tolist() == first["per_class_acc"].tolist()
    assert ResultStore(tmp_path).curves(again["run_id"])["train_loss"].tolist() == \
        ResultStore(work / "results").curves(again["run_id"])["train_loss"].tolist()


#: A run that fails in training: reflect padding needs images larger than the padding (32
#: pixels here), which only the loaded data can tell.
REFLECT_TOO_FAR = ["--set", "pad_mode=reflect", "--set", "pad=32"]


@pytest.mark.slow
def test_failed_and_diverged_runs_are_recorded_and_retried_on_request(tmp_path):
    common = ["--methods", "ce", "--datasets", "synthetic-lt", "--imb", "4", "--epochs", "1",
              "--device", "cpu", *TINY]
    ltbench("run", *common, "--seeds", "0", *REFLECT_TOO_FAR, cwd=tmp_path)
    ltbench("run", *common, "--seeds", "1", "--set", "lr=1e30", cwd=tmp_path)
    records = ResultStore(tmp_path / "results").read().set_index("seed")
    assert records.loc[0, "status"] == "failed"
    assert "reflect padding 32" in records.loc[0, "error"]
    assert records.loc[1, "status"] == "diverged"
    assert "non-finite" in records.loc[1, "error"]
    assert np.isnan(records.loc[0, "top1_err"])
    proc = ltbench("run", *common, "--seeds", "0", *REFLECT_TOO_FAR, cwd=tmp_path)
    assert "1 already done, 0 to train" in proc.stderr
    proc = ltbench("run", *common, "--seeds", "0", *REFLECT_TOO_FAR,
                   "--rerun-failed", cwd=tmp_path)
    assert "0 already done, 1 to train" in proc.stderr


@pytest.mark.cifar
@pytest.mark.slow
def test_short_real_cifar10_lt_run(cifar_root, tmp_path):
    """One epoch of CE on real CIFAR-10-LT (IF 200, the smallest subset) on the CPU."""
    proc = ltbench("run", "--methods", "ce", "--datasets", "cifar10-lt", "--imb", "200",
                   "--epochs", "1", "--device", "cpu", "--data-root", cifar_root, cwd=tmp_path)
    row = ResultStore(tmp_path / "results").read().iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["train_class_counts"].tolist() == [5000, 2775, 1540, 854, 474, 263, 146, 81,
                                                   45, 25]
    assert (row["n_many"], row["n_medium"], row["n_few"]) == (7, 3, 0)
    assert np.isnan(row["few_acc"])
    # One epoch already beats chance (10 %) on the balanced test set.
    assert row["top1_acc"] > 15.0, proc.stderr
    assert 0 <= row["best_epoch"] == 0
