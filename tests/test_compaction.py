"""``ltbench compact``: per-run files merged into parts that every reader reads, safely while
writers run (:mod:`ltbench.store.compaction`)."""

from __future__ import annotations

import os
import re

import pandas as pd
import pytest
from click.testing import CliRunner

from ltbench.cli import cli
from ltbench.report.site import write_report
from ltbench.store import compaction, integrity
from ltbench.store.result_store import ResultStore
from helpers import (TINY_SYNTHETIC, curves_frame, flip_a_value_byte, make_record, small_store,
                     tree_snapshot)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _final_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) \
        if folder.is_dir() else []


def _report_pages(out) -> dict[str, str]:
    """Every page and data file of a report, its generation time left out."""
    return {str(p.relative_to(out)): re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "",
                                            p.read_text(errors="replace"))
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_compacted_store_reads_and_reports_exactly_as_before(tmp_path):
    """Records, artifact tables, single artifacts (plus their run_id), statuses and every
    report page are the same after compaction, which leaves no per-run parquet file and one
    part per dataset."""
    store = ResultStore(tmp_path / "results")
    small_store(store.root)
    records = store.read()
    run_ids = list(records["run_id"])
    names = ("curves", "eps", "eps_summary")
    tables = {name: store.artifact_table(name, run_ids) for name in names}
    meta = records.loc[records["method"] == "meta-ce", "run_id"].iloc[0]
    single = {name: store.artifact(name, meta) for name in names}
    write_report(store, tmp_path / "before")

    done = compaction.compact(store)
    assert (done.runs, len(done.parts), done.runs_left) == (28, 2, [])
    assert done.files_removed == 28 + sum(len(t["run_id"].unique()) for t in tables.values())
    for folder in ("runs", *names):
        assert _final_files(store.root / folder) == []
        assert len(_final_files(store.root / "compacted" / folder)) == (
            2 if folder in ("runs", "curves") else 1)  # cifar100-lt has no meta-ce run

    for reader in (ResultStore(store.root), ResultStore(store.root)):  # cold, then cached
        pd.testing.assert_frame_equal(reader.read(), records)
        assert reader.statuses() == dict(zip(records["run_id"], records["status"]))
        for name in names:
            pd.testing.assert_frame_equal(
                reader.artifact_table(name, run_ids).sort_values(["run_id", "epoch"])
                .reset_index(drop=True),
                tables[name].sort_values(["run_id", "epoch"]).reset_index(drop=True))
            assert reader.artifact(name, meta).drop(columns="run_id").equals(single[name])
    assert integrity.find_damaged(store) == []
    write_report(ResultStore(store.root), tmp_path / "after")
    assert _report_pages(tmp_path / "after") == _report_pages(tmp_path / "before")


def test_a_run_trained_again_during_compaction_keeps_its_new_files(tmp_path, monkeypatch):
    """A writer that publishes a run again after the compaction read it (here: between the
    reading and the removals) keeps its new record and curves, which readers prefer to the
    part's copy; evals published after compaction (an optional artifact, written after the
    record) are read from their own file."""
    store = ResultStore(tmp_path / "results")
    a, b = "a" * 16, "b" * 16
    for run_id in (a, b):
        store.write(make_record(run_id, top1_err=30.0), {"curves": curves_frame(3, 30.0)})
    real_write_part = compaction._write_artifact_part

    def write_part_while_a_is_trained_again(*args):
        merged = real_write_part(*args)
        store.write(make_record(a, top1_err=25.0), {"curves": curves_frame(5, 25.0)})
        return merged

    monkeypatch.setattr(compaction, "_write_artifact_part", write_part_while_a_is_trained_again)
    done = compaction.compact(store)
    assert done.runs_left == [a] and done.files_removed == 2  # b's record and curves
    assert _final_files(store.runs_dir) == _final_files(store.curves_dir) == [f"{a}.parquet"]
    reader = ResultStore(store.root)
    assert reader.read().set_index("run_id")["top1_err"].to_dict() == {a: 25.0, b: 30.0}
    assert reader.artifact_table("curves", [a, b]).groupby("run_id").size().to_dict() == \
        {a: 5, b: 3}
    assert reader.part_of(a) is None and reader.part_of(b) == done.parts[0]
    store.write_artifact("evals", b, pd.DataFrame({"run_id": [b], "top1_acc": [61.0]}))
    assert reader.artifact_table("evals", [a, b])["top1_acc"].tolist() == [61.0]
    assert reader.artifact("evals", b)["top1_acc"].tolist() == [61.0]


def test_damage_is_left_to_status_and_a_damaged_part_is_repaired_as_a_whole(tmp_path):
    """A run with a damaged file keeps all its files; a part damaged after compaction makes
    each of its runs incomplete (re-run by ``ltbench run``), and repair moves the part's every
    file aside."""
    store = ResultStore(tmp_path / "results")
    a, b, c = "a" * 16, "b" * 16, "c" * 16
    for run_id in (a, b, c):
        store.write(make_record(run_id), {"curves": curves_frame(3, 30.0)})
    flip_a_value_byte(store.curves_dir / f"{c}.parquet", keep_stamp=False)
    done = compaction.compact(store)
    assert done.runs == 2 and done.runs_left == [c]
    assert _final_files(store.runs_dir) == _final_files(store.curves_dir) == [f"{c}.parquet"]
    assert [d.name for d in integrity.find_damaged(store)] == [c]

    part = done.parts[0]
    flip_a_value_byte(store.compacted_dir / "curves" / f"{part}.parquet", keep_stamp=False)
    damaged = integrity.find_damaged(store)
    assert [(d.name, d.path.parent.name) for d in damaged] == [(c, "curves"), (part, "curves")]
    assert integrity.damaged_runs(store, damaged) == {a, b, c}
    assert integrity.usable_statuses(store) == {}
    moves = integrity.repair(store, damaged)
    corrupt = store.root / "corrupt"
    assert sorted(str(target.relative_to(corrupt)) for _, target in moves) == sorted([
        f"runs/{c}.parquet", f"curves/{c}.parquet",
        f"compacted/runs/{part}.parquet", f"compacted/curves/{part}.parquet"])
    assert store.read().empty and integrity.find_damaged(store) == []


@pytest.mark.slow
def test_run_resumes_from_a_compacted_store_and_reuses_its_stage1_model(tmp_path):
    """``ltbench run`` on a compacted store trains nothing it holds, and a two-stage method
    starts from the compacted stage-1 run's model."""
    sets = [arg for item in TINY_SYNTHETIC for arg in ("--set", item)]
    grid = ["--datasets", "synthetic-lt", "--imb", "4", "--epochs", "1", "--results",
            tmp_path / "r", *sets]
    assert invoke("run", "--methods", "ce", *grid).exit_code == 0
    result = invoke("compact", "--results", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "compacted 1 run(s) into 1 part(s), 3 per-run file(s) removed" in result.stdout
    plan = invoke("run", "--methods", "ce,pc-softmax", "--dry-run", *grid)
    assert plan.stdout.splitlines()[-1] == "2 runs in the grid, 1 done, 1 to train"
    assert invoke("run", "--methods", "pc-softmax", *grid).exit_code == 0
    records = ResultStore(tmp_path / "r").read().set_index("method")
    assert records.loc["pc-softmax", "stage1_run_id"] == records.loc["ce", "run_id"]
    assert len(os.listdir(tmp_path / "r" / "models")) == 1


def test_compact_needs_a_store_and_writes_nothing_on_bad_input(tmp_path):
    result = invoke("compact", "--results", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: no results store at {tmp_path / 'nowhere'} (expected "
        f"{tmp_path / 'nowhere' / 'runs'})"]
    assert tree_snapshot(tmp_path) == {}
