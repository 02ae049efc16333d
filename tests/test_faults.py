"""Faults: damaged result files are reported, ignored, repaired and re-run; a diverged or
out-of-memory run is recorded and the grid goes on; a nearly full disk stops the grid before
any training."""

from __future__ import annotations

import os
import textwrap

import pytest
from click.testing import CliRunner
from helpers import TINY_SYNTHETIC, install_plugin, tree_snapshot

from ltbench import registry
from ltbench.cli import cli
from ltbench.store import ResultStore

TINY = [a for s in TINY_SYNTHETIC for a in ("--set", s)]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _grid(results, *extra):
    return invoke("run", "--datasets", "synthetic-lt", "--methods", "ce,focal", "--imb", "4",
                  "--epochs", "1", "--results", results, *TINY, *extra)


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.fixture
def damaged_store(tmp_path):
    """Two ok runs; then ce's record and focal's curves truncated to half their bytes."""
    results = tmp_path / "results"
    assert _grid(results).exit_code == 0
    records = ResultStore(results).read().set_index("method")
    ce, focal = records.loc["ce", "run_id"], records.loc["focal", "run_id"]
    _truncate(results / "runs" / f"{ce}.parquet")
    _truncate(results / "curves" / f"{focal}.parquet")
    return results, ce, focal


@pytest.mark.slow
def test_damaged_files_are_reported_ignored_and_repaired(damaged_store, tmp_path):
    results, ce, focal = damaged_store
    status = invoke("status", "--results", results, "--methods", "ce,focal", "--datasets",
                    "synthetic-lt", "--imb", "4", "--seeds", "0")
    assert status.exit_code == 0, status.output
    assert "2 damaged file(s), ignored" in status.stdout
    assert f"{results}/runs/{ce}.parquet: " in status.stdout
    assert f"{results}/curves/{focal}.parquet: " in status.stdout
    assert "total: 0 done, 0 failed, 0 diverged, 2 missing" in status.stdout

    report = invoke("report", "--results", results, "--out", tmp_path / "site")
    assert report.exit_code == 0, report.output
    assert "ignoring 2 damaged result file(s)" in report.stderr
    check = invoke("check", "--results", results, "--out", tmp_path / "check.json")
    assert check.exit_code == 0, check.output

    repaired = invoke("status", "--results", results, "--methods", "ce,focal", "--repair")
    assert repaired.exit_code == 0
    moved = {line.split()[1]: line.split()[3] for line in repaired.stdout.splitlines()
             if line.startswith("moved ")}
    assert moved == {f"{results}/{folder}/{run}.parquet":
                     f"{results}/corrupt/{folder}/{run}.parquet"
                     for folder in ("runs", "curves", "evals") for run in (ce, focal)}
    assert "damaged" not in invoke("status", "--results", results).stdout

    rerun = _grid(results)
    assert rerun.exit_code == 0 and "0 already done, 2 to train" in rerun.stderr
    assert set(ResultStore(results).read()["status"]) == {"ok"}


@pytest.mark.slow
def test_damaged_runs_are_re_run_without_repair(damaged_store):
    results, ce, focal = damaged_store
    rerun = _grid(results)
    assert rerun.exit_code == 0 and "0 already done, 2 to train" in rerun.stderr
    store = ResultStore(results)
    assert sorted(store.read()["run_id"]) == sorted([ce, focal])
    assert store.curves(focal) is not None
    assert "damaged" not in invoke("status", "--results", results).stdout


OOM_PLUGIN = textwrap.dedent('''
    import torch
    from ltbench.methods.base import Method

    class Exhausting(Method):
        summary = "Raises CUDA's out-of-memory error on the first batch (test fixture)."

        def loss(self, logits, targets, epoch):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
''')


@pytest.fixture
def oom_method(tmp_path, monkeypatch):
    install_plugin(tmp_path / "site", "oom_plugin", OOM_PLUGIN,
                   "[ltbench.methods]\noom = oom_plugin:Exhausting\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry.refresh()
    yield
    registry.refresh()


@pytest.mark.slow
def test_out_of_memory_and_divergence_are_recorded_and_the_grid_goes_on(tmp_path, oom_method):
    results = tmp_path / "results"
    result = invoke("run", "--datasets", "synthetic-lt", "--methods", "oom,ce", "--imb", "4",
                    "--seeds", "0,1", "--epochs", "3", "--results", results, *TINY,
                    "--set", "lr=1e30")
    assert result.exit_code == 0, result.output
    records = ResultStore(results).read()
    assert len(records) == 4
    for row in records.itertuples():
        if row.method == "oom":
            assert row.status == "failed"
            assert row.error == ("OutOfMemoryError: CUDA out of memory. Tried to allocate "
                                 "20.00 GiB")
        else:  # lr 1e30 overflows the first step: non-finite loss in epoch 0 or 1
            assert row.status == "diverged"
            assert row.error.startswith("non-finite training loss in epoch ")
            curves = ResultStore(results).curves(row.run_id)
            assert int(row.error.split()[-1]) == curves["epoch"].iloc[-1] < 2


def test_nearly_full_disk_stops_before_any_training(tmp_path):
    results = tmp_path / "results"
    result = _grid(results, "--min-free-gb", "1e9")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: results folder {results} has ") and "GB free" in line
    assert tree_snapshot(tmp_path) == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits, so a read-only "
                                              "folder is writable to this test")
def test_unwritable_results_folder_stops_before_any_training(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        result = _grid(results)
    finally:
        results.chmod(0o755)
    assert result.exit_code == 2 and "is not writable" in result.stderr
    assert tree_snapshot(results) == {}
