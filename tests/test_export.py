"""``ltbench export``: the records (and chosen artifacts) of a store as single files."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from ltbench.cli import cli
from ltbench.store.result_store import ResultStore
from helpers import curves_frame, make_record, tree_snapshot


def _store(tmp_path) -> ResultStore:
    store = ResultStore(tmp_path / "results")
    store.write(make_record("a" * 16, seed=0, top1_err=30.0), {"curves": curves_frame(3, 30.0)})
    store.write(make_record("b" * 16, seed=1, top1_err=31.5), {"curves": curves_frame(2, 31.5)})
    return store


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_parquet_export_is_the_store_read_and_artifacts_join_by_run_id(tmp_path):
    store = _store(tmp_path)
    result = invoke("export", "--results", store.root, "--out", tmp_path / "lb.parquet",
                    "--artifacts", "curves")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"wrote {tmp_path / 'lb.parquet'}",
                                          f"wrote {tmp_path / 'lb.curves.parquet'}"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "lb.parquet"), store.read())
    curves = pd.read_parquet(tmp_path / "lb.curves.parquet")
    assert curves.columns[0] == "run_id"
    assert curves.groupby("run_id").size().to_dict() == {"a" * 16: 3, "b" * 16: 2}
    pd.testing.assert_frame_equal(
        curves[curves["run_id"] == "b" * 16].drop(columns="run_id").reset_index(drop=True),
        store.curves("b" * 16))


def test_csv_export_writes_lists_as_json(tmp_path):
    store = _store(tmp_path)
    assert invoke("export", "--results", store.root, "--out", tmp_path / "lb.csv").exit_code == 0
    table = pd.read_csv(tmp_path / "lb.csv")
    assert table["top1_err"].tolist() == [30.0, 31.5]
    assert json.loads(table["train_class_counts"][0]) == make_record()["train_class_counts"]
    assert json.loads(table["per_class_acc"][1]) == make_record()["per_class_acc"]


def test_bad_export_arguments_write_nothing(tmp_path):
    store = _store(tmp_path)
    before = tree_snapshot(tmp_path)
    for args, message in (
            (("--out", tmp_path / "lb.json"), "the file must end in .parquet or .csv"),
            (("--out", tmp_path / "nowhere" / "lb.csv"), "does not exist"),
            (("--out", tmp_path / "lb.csv", "--artifacts", "curves,eps"),
             "the store holds no 'eps' artifact")):
        result = invoke("export", "--results", store.root, *args)
        assert result.exit_code == 2 and message in result.output, result.output
    assert tree_snapshot(tmp_path) == before
