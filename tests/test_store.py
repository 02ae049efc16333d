"""The results store: schema round trip, atomic publication, writability checks, statuses."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ltbench.errors import BadInput
from ltbench.store.result_store import RECORD_SCHEMA, STORE_SCHEMA_VERSION, ResultStore
from helpers import curves_frame, failed_record, flip_a_value_byte, make_record


def test_helper_record_covers_the_schema():
    assert list(make_record()) == RECORD_SCHEMA.names


def test_write_read_round_trips_every_column(tmp_path):
    store = ResultStore(tmp_path)
    record = make_record()
    path = store.write(record)
    assert path == tmp_path / "runs" / "0123456789abcdef.parquet"
    frame = store.read()
    assert list(frame.columns) == RECORD_SCHEMA.names
    assert len(frame) == 1
    row = frame.iloc[0]
    for name in RECORD_SCHEMA.names:
        expected, got = record[name], row[name]
        if name in ("per_class_acc", "train_class_counts"):
            assert list(got) == expected
        elif name in ("started_utc", "finished_utc"):
            assert got == pd.Timestamp(expected)
            assert got.microsecond == expected.microsecond
            assert str(got.tz) == "UTC"
        elif name in ("error", "artifact_error", "compile_mode"):  # null in an ok eager record
            assert pd.isna(got)
        elif isinstance(expected, float) and math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == expected, name
    assert frame["seed"].dtype == "Int64"
    assert frame["imb_factor"].dtype == "float64"
    assert str(frame["started_utc"].dtype) == "datetime64[us, UTC]"
    metadata = pq.read_schema(path).metadata
    assert metadata[b"ltbench.store_schema_version"] == STORE_SCHEMA_VERSION.encode()


def test_failed_run_keeps_nulls_and_nan(tmp_path):
    store = ResultStore(tmp_path)
    store.write(failed_record("feedfacefeedface"))
    row = store.read().iloc[0]
    assert row["status"] == "failed"
    assert row["error"] == "RuntimeError: CUDA out of memory"
    assert math.isnan(row["top1_err"])
    assert row["n_many"] is pd.NA and row["best_epoch"] is pd.NA
    assert row["per_class_acc"] is None


def test_empty_store_reads_schema_columns(tmp_path):
    frame = ResultStore(tmp_path / "never-created").read()
    assert frame.empty
    assert list(frame.columns) == RECORD_SCHEMA.names
    assert frame["seed"].dtype == "Int64"
    assert frame["top1_err"].dtype == "float64"


def test_read_sorts_by_dataset_method_imb_seed(tmp_path):
    store = ResultStore(tmp_path)
    keys = [("cifar100-lt", "ce", 10.0, 0), ("cifar10-lt", "focal", 100.0, 2),
            ("cifar10-lt", "ce", 100.0, 1), ("cifar10-lt", "ce", 10.0, 2),
            ("cifar10-lt", "ce", 10.0, 0)]
    for index, (dataset, method, imb, seed) in enumerate(keys):
        store.write(make_record(f"run{index}", dataset=dataset, method=method, imb_factor=imb,
                                seed=seed))
    frame = store.read()
    got = list(zip(frame["dataset"], frame["method"], frame["imb_factor"], frame["seed"]))
    assert got == [("cifar10-lt", "ce", 10.0, 0), ("cifar10-lt", "ce", 10.0, 2),
                   ("cifar10-lt", "ce", 100.0, 1), ("cifar10-lt", "focal", 100.0, 2),
                   ("cifar100-lt", "ce", 10.0, 0)]


def test_leftover_temp_file_is_ignored(tmp_path):
    store = ResultStore(tmp_path)
    store.write(make_record("aaaaaaaaaaaaaaaa"))
    # A writer killed mid-write leaves its temp file behind, possibly truncated.
    leftover = store.runs_dir / ".bbbbbbbbbbbbbbbb.parquet.tmp-123-0f0f"
    leftover.write_bytes(b"PAR1 truncated")
    frame = store.read()
    assert list(frame["run_id"]) == ["aaaaaaaaaaaaaaaa"]
    assert store.statuses() == {"aaaaaaaaaaaaaaaa": "ok"}


def test_failing_replace_leaves_no_file(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    store.ensure_writable()

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        store.write(make_record(), {"curves": pd.DataFrame({"epoch": [0, 1], "loss": [2.3, 1.9]})})
    monkeypatch.undo()
    assert list(store.runs_dir.iterdir()) == []
    assert list(store.curves_dir.iterdir()) == []
    assert store.read().empty


@pytest.mark.parametrize("broken", [
    {"drop": "top1_err"},
    {"extra": "learning_rate"},
    {"status": "done"},
    {"seed": None},
    {"started_utc": datetime(2025, 3, 1, 12, 0)},
    {"hparams": {"lr": 0.1}},
    {"hparams": "lr=0.1"},
    {"hparams": "[0.1]"},
    {"run_id": "../escape"},
])
def test_invalid_record_is_rejected_before_writing(tmp_path, broken):
    store = ResultStore(tmp_path)
    record = make_record()
    if "drop" in broken:
        del record[broken["drop"]]
    elif "extra" in broken:
        record[broken["extra"]] = 0.1
    else:
        record.update(broken)
    with pytest.raises(ValueError):
        store.write(record, {"curves": pd.DataFrame({"epoch": [0]})})
    assert not any(store.root.rglob("*"))


def test_unreadable_record_is_skipped_and_foreign_record_is_bad_input(tmp_path):
    store = ResultStore(tmp_path)
    store.ensure_writable()
    garbage = store.runs_dir / "ffffffffffffffff.parquet"
    garbage.write_bytes(b"not parquet at all")
    # A damaged file reads as a missing run (tests/test_faults.py: reported and repaired).
    assert store.read().empty and store.statuses() == {}
    garbage.unlink()
    # A record from another store schema version must not be mixed in silently.
    table = pa.Table.from_pylist([make_record()], schema=RECORD_SCHEMA)
    table = table.replace_schema_metadata({b"ltbench.store_schema_version": b"0"})
    pq.write_table(table, store.runs_dir / "0123456789abcdef.parquet")
    with pytest.raises(BadInput, match="store schema version 0"):
        store.statuses()


def test_curves_round_trip_and_need_a_record(tmp_path):
    store = ResultStore(tmp_path)
    curves = curves_frame(3, 40.0).assign(split="test")  # other columns may follow
    store.write(make_record("cccccccccccccccc"), {"curves": curves})
    pd.testing.assert_frame_equal(store.curves("cccccccccccccccc"), curves)
    assert store.curves("dddddddddddddddd") is None
    # Curves published by a writer that died before its record are not a result.
    (store.curves_dir / "eeeeeeeeeeeeeeee.parquet").write_bytes(
        (store.curves_dir / "cccccccccccccccc.parquet").read_bytes())
    assert store.curves("eeeeeeeeeeeeeeee") is None


def test_named_artifacts_round_trip_and_bad_names_write_nothing(tmp_path):
    store = ResultStore(tmp_path)
    eps = pd.DataFrame({"epoch": [160, 160], "class": [0, 1], "bin": [3, 7], "count": [5, 2]})
    store.write(make_record("abababababababab"), {"eps": eps})
    assert store.artifact("eps", "abababababababab")["count"].tolist() == [5, 2]
    assert store.artifact("eps", "cdcdcdcdcdcdcdcd") is None
    for name in ("runs", "../x", "Eps"):
        with pytest.raises(ValueError, match="artifact name"):
            store.write(make_record("efefefefefefefef"), {name: eps})
    assert "efefefefefefefef" not in store.statuses()


def test_statuses(tmp_path):
    store = ResultStore(tmp_path)
    store.write(make_record("1111111111111111"))
    store.write(failed_record("2222222222222222"))
    store.write(make_record("3333333333333333", status="diverged", error="loss is nan",
                            top1_err=math.nan))
    assert store.statuses() == {"1111111111111111": "ok", "2222222222222222": "failed",
                                "3333333333333333": "diverged"}
    # Re-publishing a run (e.g. --rerun-failed) replaces its record.
    store.write(make_record("2222222222222222"))
    assert store.statuses()["2222222222222222"] == "ok"
    assert len(store.read()) == 3


def test_ensure_writable_creates_folders(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.ensure_writable()
    assert store.runs_dir.is_dir() and store.curves_dir.is_dir()
    assert list(store.runs_dir.iterdir()) == [] and list(store.curves_dir.iterdir()) == []


def test_ensure_writable_rejects_a_file(tmp_path):
    target = tmp_path / "results"
    target.write_text("not a folder")
    with pytest.raises(BadInput, match="is a file") as info:
        ResultStore(target).ensure_writable()
    assert "\n" not in str(info.value)


def test_ensure_writable_rejects_a_file_in_the_way(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "runs").write_text("")
    with pytest.raises(BadInput, match="is a file"):
        ResultStore(tmp_path / "results").ensure_writable()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores file permissions, so a read-only folder is writable")
def test_ensure_writable_rejects_read_only_folder(tmp_path):
    target = tmp_path / "results"
    target.mkdir()
    target.chmod(0o555)
    try:
        with pytest.raises(BadInput, match="is not writable") as info:
            ResultStore(target).ensure_writable()
        assert "\n" not in str(info.value)
    finally:
        target.chmod(0o755)


def test_store_modules_do_not_import_torch():
    """Nor scipy.stats, which takes most of a second: status and check never need it."""
    code = ("import sys, ltbench.store.result_store, ltbench.report.tables, ltbench.report.site; "
            "sys.exit(1 if {'torch', 'scipy.stats'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- the read cache (ltbench.store.read_cache) -----------------------------------------------

def test_cached_reads_follow_every_change_and_never_write_into_the_store(tmp_path):
    """The second read serves unchanged records from the cache; a record replaced, added or
    removed since is seen; the store folder itself is never written by a reader."""
    from ltbench.store import integrity
    from helpers import tree_snapshot

    store = ResultStore(tmp_path / "results")
    for run_id, err in (("a" * 16, 30.0), ("b" * 16, 31.0)):
        store.write(make_record(run_id, top1_err=err), {"curves": curves_frame(3, err)})
    before = tree_snapshot(store.root)
    assert store.read()["top1_err"].tolist() == [30.0, 31.0]
    assert integrity.find_damaged(store) == []
    assert store.read()["top1_err"].tolist() == [30.0, 31.0]
    assert tree_snapshot(store.root) == before
    store.write(make_record("a" * 16, top1_err=29.0))  # --rerun-failed replaces a record
    store.write(make_record("c" * 16, top1_err=32.0))
    (store.runs_dir / f"{'b' * 16}.parquet").unlink()
    assert store.read()[["run_id", "top1_err"]].values.tolist() == [["a" * 16, 29.0],
                                                                    ["c" * 16, 32.0]]
    assert store.statuses() == {"a" * 16: "ok", "c" * 16: "ok"}


def test_damage_is_found_again_unless_the_stamp_hides_it_from_all_but_a_rescan(tmp_path):
    """A file damaged after it was verified is found when its stamp changed (a write in
    place); damage that keeps the stamp (a failing disk) needs ``rescan``; a damaged file is
    never cached, and a damaged cache is rebuilt."""
    from ltbench.store import integrity
    from ltbench.store.read_cache import ReadCache

    store = ResultStore(tmp_path / "results")
    for run_id in ("a" * 16, "b" * 16):
        store.write(make_record(run_id), {"curves": curves_frame(3, 30.0)})
    assert integrity.find_damaged(store) == [] and len(store.read()) == 2
    flip_a_value_byte(store.runs_dir / f"{'a' * 16}.parquet", keep_stamp=False)
    assert [d.name for d in integrity.find_damaged(store)] == ["a" * 16]
    assert store.read()["run_id"].tolist() == ["b" * 16]
    assert [d.name for d in integrity.find_damaged(store)] == ["a" * 16]  # not cached
    flip_a_value_byte(store.curves_dir / f"{'b' * 16}.parquet", keep_stamp=True)
    assert [d.name for d in integrity.find_damaged(store)] == ["a" * 16]
    assert [d.name for d in integrity.find_damaged(store, rescan=True)] == ["a" * 16,
                                                                              "b" * 16]
    cache = ReadCache(store.root)
    for name in ("records.parquet", "verified.parquet"):
        (cache.folder / name).write_bytes(b"damaged cache")
    assert store.read()["run_id"].tolist() == ["b" * 16]
    assert [d.name for d in integrity.find_damaged(store)] == ["a" * 16, "b" * 16]


def test_artifact_table_joins_published_runs_and_follows_changes(tmp_path):
    """One frame of an artifact for many runs: only published runs, the union of the files'
    columns, a rewritten file seen, a damaged one left out (the cache never hides either)."""
    store = ResultStore(tmp_path / "results")
    a, b, c = "a" * 16, "b" * 16, "c" * 16
    store.write(make_record(a), {"curves": curves_frame(3, 30.0)})
    store.write(make_record(b), {"curves": curves_frame(2, 31.0).assign(split="test")})
    store.write_artifact("curves", c, curves_frame(5, 40.0))  # no record: not a result
    table = store.artifact_table("curves", [b, a, c, "d" * 16])
    assert list(table.columns[:2]) == ["run_id", "epoch"] and "split" in table.columns
    assert table.groupby("run_id").size().to_dict() == {a: 3, b: 2}
    assert table[table["run_id"] == a]["split"].isna().all()
    assert store.artifact_table("curves", [a])["run_id"].tolist() == [a] * 3  # from the cache
    store.write(make_record(a), {"curves": curves_frame(4, 29.0)})
    flip_a_value_byte(store.curves_dir / f"{b}.parquet", keep_stamp=False)
    assert store.artifact_table("curves", [a, b]).groupby("run_id").size().to_dict() == {a: 4}
    assert store.artifact_table("evals", [a]).columns.tolist() == ["run_id"]
