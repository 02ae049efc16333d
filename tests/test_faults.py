"""Faults: damaged result files are reported, ignored, repaired and re-run; a diverged or
out-of-memory run is recorded and the grid goes on; an out-of-memory pack is trained again in
halves; a failing optional artifact (shifted evals, stage-1 model) keeps its published run;
a nearly full disk stops the grid before any training."""

from __future__ import annotations

import copy
import io
import os
import shutil
import struct
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from helpers import TINY_SYNTHETIC, curves_frame, install_plugin, make_record, tree_snapshot

import ltbench.engine.train as engine_train
from ltbench import registry
from ltbench.cli import cli
from ltbench.engine.checkpoint import ResumeCheckpoint, resume_path
from ltbench.hparams import parse_overrides
from ltbench.metrics.shifted import SHIFTED_SETS
from ltbench.run import grid, runner
from ltbench.run.packing import pack_id, plan_packs
from ltbench.run.runner import run_grid
from ltbench.run.stages import stage1_ready, stage1_spec
from ltbench.store import torchfiles
from ltbench.store.integrity import find_damaged
from ltbench.store.result_store import RECORD_SCHEMA, ResultStore

CPU = torch.device("cpu")

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
    # synthetic-lt has no published numbers: nothing to compare, which the gate allows here.
    check = invoke("check", "--results", results, "--out", tmp_path / "check.json",
                   "--allow-empty")
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
    from ltbench.api import Method

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


# --- failures after training: optional artifacts, out-of-memory packs ----------------------

def _specs(methods: list[str], seeds: list[int], *overrides: str):
    return grid.expand(methods, ["synthetic-lt"], [4.0], seeds,
                       overrides=parse_overrides(TINY_SYNTHETIC + overrides), epochs=1)


def _fresh_store(root) -> ResultStore:
    store = ResultStore(root)
    store.ensure_writable()
    return store


def test_a_failing_shifted_evaluation_keeps_the_run_and_the_grid_goes_on(tmp_path, monkeypatch):
    real_evaluate = runner.evaluate_shifted
    calls = []

    def first_one_fails(run_id, *args):
        calls.append(run_id)
        if len(calls) == 1:
            raise RuntimeError("evaluation exploded")
        return real_evaluate(run_id, *args)

    monkeypatch.setattr(runner, "evaluate_shifted", first_one_fails)
    specs = _specs(["ce"], [0, 1])
    store = _fresh_store(tmp_path)
    records = run_grid(specs, store, tmp_path, CPU, stream=io.StringIO())
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert calls == [specs[0].run_id, specs[1].run_id]
    stored = store.read().set_index("run_id")
    assert stored.loc[specs[0].run_id, "artifact_error"] == (
        "evals: RuntimeError: evaluation exploded")
    assert pd.isna(stored.loc[specs[1].run_id, "artifact_error"])
    for spec in specs:  # published with the metrics of its last evaluated epoch
        assert stored.loc[spec.run_id, "status"] == "ok"
        assert (stored.loc[spec.run_id, "top1_acc"]
                == store.curves(spec.run_id)["test_acc"].iloc[-1])
    assert store.artifact("evals", specs[0].run_id) is None
    assert len(store.artifact("evals", specs[1].run_id)) == len(SHIFTED_SETS)


def test_a_stage1_model_that_cannot_be_saved_fails_its_dependent_until_retrained(
        tmp_path, monkeypatch):
    def disk_full(self, run_id, model):
        self.model_path(run_id).parent.mkdir(parents=True, exist_ok=True)
        self.model_path(run_id).write_bytes(b"partial")  # a stale or partial file
        raise OSError("No space left on device")

    (crt,) = _specs(["crt"], [0], "stage2_epochs=1")
    ce = stage1_spec(crt)
    store = _fresh_store(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(ResultStore, "save_model", disk_full)
        records = run_grid([ce, crt], store, tmp_path, CPU, stream=io.StringIO())
    by_id = {r["run_id"]: r for r in records}
    assert by_id[ce.run_id]["status"] == "ok"
    assert by_id[ce.run_id]["artifact_error"] == "model: OSError: No space left on device"
    assert not store.model_path(ce.run_id).exists() and not stage1_ready(store, ce)
    assert store.artifact("evals", ce.run_id) is not None  # the other artifact was stored
    assert by_id[crt.run_id]["status"] == "failed"
    assert f"stage-1 run {ce.run_id}" in by_id[crt.run_id]["error"]
    assert "is not published with its model" in by_id[crt.run_id]["error"]
    # A later grid (the dependent re-tried) trains stage 1 again, then the dependent.
    again = run_grid([crt], store, tmp_path, CPU, stream=io.StringIO())
    assert [r["status"] for r in again] == ["ok"]
    assert stage1_ready(store, ce)
    assert pd.isna(store.read().set_index("run_id").loc[ce.run_id, "artifact_error"])


def test_is_out_of_memory():
    assert runner._is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory."))
    assert runner._is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not runner._is_out_of_memory(RuntimeError("shapes cannot be multiplied"))
    assert not runner._is_out_of_memory(ValueError("out of memory"))


def test_an_out_of_memory_pack_is_trained_again_in_halves(tmp_path, monkeypatch):
    """A pack of 3 that does not fit (more than 2 runs raise CUDA's OOM) is trained as 2 + 1;
    the next pack of 3 is then cut to 2 + 1 without trying 3; every record equals the run
    trained alone (fp32 on CPU; a small lr as in test_pack_grid.py)."""
    specs = _specs(["ce", "focal"], [0, 1, 2], "lr=0.002")
    alone = _fresh_store(tmp_path / "alone")
    run_grid(specs, alone, tmp_path, CPU, stream=io.StringIO())

    real_train_pack = engine_train.train_pack
    sizes = []

    def tight_memory(data, members, *args, **kwargs):
        sizes.append(len(members))
        if len(members) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train_pack(data, members, *args, **kwargs)

    monkeypatch.setattr(engine_train, "train_pack", tight_memory)
    packed = _fresh_store(tmp_path / "packed")
    whole = plan_packs(specs, 3)[0]
    stale = resume_path(packed.root, pack_id(whole))  # the whole pack's checkpoint
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not a checkpoint")
    log = io.StringIO()
    records = run_grid(specs, packed, tmp_path, CPU, stream=log, pack_size=3)
    assert sizes == [3, 2, 1, 2, 1]
    assert "out of device memory; training it again in halves" in log.getvalue()
    assert [r["run_id"] for r in records] == [s.run_id for s in specs]
    assert not any(packed.root.joinpath("resume").iterdir())  # split packs leave none behind
    got = packed.read().sort_values("run_id").reset_index(drop=True)
    expected = alone.read().sort_values("run_id").reset_index(drop=True)
    assert set(got["status"]) == {"ok"}
    for column in ("run_id", "top1_acc", "many_acc", "medium_acc", "few_acc", "best_epoch"):
        pd.testing.assert_series_equal(got[column], expected[column])
    for got_acc, alone_acc in zip(got["per_class_acc"], expected["per_class_acc"]):
        np.testing.assert_array_equal(got_acc, alone_acc)


# --- damage planted in real files: flipped bits, misnamed copies, foreign schemas -----------

def _flip_value_bit(path, column: str, value: float) -> None:
    """Flip the lowest exponent bit (x2 or /2) of the double ``value`` in the dictionary page
    of ``column`` (snappy leaves a value without repeated bytes as it is)."""
    metadata = pq.ParquetFile(path).metadata
    chunk = metadata.row_group(0).column(metadata.schema.names.index(column))
    data = bytearray(path.read_bytes())
    at = data.index(struct.pack("<d", value), chunk.dictionary_page_offset,
                    chunk.data_page_offset)
    data[at + 6] ^= 0x10
    path.write_bytes(bytes(data))


def _write_foreign_record(path, **columns) -> None:
    """A record of the store's version, its columns replaced by ``columns`` (None: dropped)."""
    table = pa.Table.from_pylist([make_record(path.stem)], schema=RECORD_SCHEMA)
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        table = table.remove_column(index) if values is None else \
            table.set_column(index, name, values)
    pq.write_table(table.replace_schema_metadata(RECORD_SCHEMA.metadata), path)


def _rename_in_footer(path, old: bytes, new: bytes) -> None:
    """Overwrite the first bytes of the first ``old`` in the footer (a column's name in the
    parquet schema) with ``new``, as a few flipped bits would."""
    data = path.read_bytes()
    at = data.index(old, len(data) - 8 - struct.unpack("<i", data[-8:-4])[0])
    path.write_bytes(data[:at] + new + data[at + len(new):])


SEEDS = range(5)


def _run_id(seed: int) -> str:
    return f"{seed}" * 16


@pytest.fixture
def planted_store(tmp_path):
    """Five ok ce runs (seeds 0-4, records and curves written by the store) and nine damaged
    files: seed 0's top1_err and seed 1's curves with a flipped bit, seed 2's record copied
    under another name, seed 3's curves of other columns, two foreign records and three
    records with a damaged footer (its length; a column name that is no UTF-8; a column
    name changed into another)."""
    results = tmp_path / "results"
    store = ResultStore(results)
    for seed in SEEDS:
        store.write(make_record(_run_id(seed), seed=seed), {"curves": curves_frame(3, 29.64)})
    runs, curves = results / "runs", results / "curves"
    _flip_value_bit(runs / f"{_run_id(0)}.parquet", "top1_err", 29.64)
    _flip_value_bit(curves / f"{_run_id(1)}.parquet", "test_acc",
                    curves_frame(3, 29.64)["test_acc"][0])
    shutil.copy(runs / f"{_run_id(2)}.parquet", runs / "cccccccccccccccc.parquet")
    pd.DataFrame({"epoch": [0], "loss": [2.3]}).to_parquet(curves / f"{_run_id(3)}.parquet")
    pd.DataFrame({"a": [1]}).to_parquet(runs / "aaaaaaaaaaaaaaaa.parquet")  # no ltbench file
    _write_foreign_record(runs / "bbbbbbbbbbbbbbbb.parquet", top1_err=pa.array(["29.64"]),
                          seed=None)
    for letter in "def":
        store.write(make_record(letter * 16))
    footer = runs / "dddddddddddddddd.parquet"
    data = bytearray(footer.read_bytes())
    data[-8:-4] = struct.pack("<i", len(data))  # a footer length past the file's start
    footer.write_bytes(bytes(data))
    _rename_in_footer(runs / "eeeeeeeeeeeeeeee.parquet", b"top1_acc", b"\xf2")
    _rename_in_footer(runs / "ffffffffffffffff.parquet", b"stage1_run_id", b"stage1_run_ix")
    return results


PLANTED = {
    f"runs/{_run_id(0)}.parquet": "OSError: could not verify page integrity, CRC checksum "
                                  "verification failed for page_ordinal 0",
    f"curves/{_run_id(1)}.parquet": "OSError: could not verify page integrity, CRC checksum "
                                    "verification failed for page_ordinal 0",
    "runs/cccccccccccccccc.parquet": f"its run_id is '{_run_id(2)}', not its file name",
    f"curves/{_run_id(3)}.parquet": "curves without column(s) lr, train_loss, train_acc, "
                                    "test_acc, train_s, eval_s",
    "runs/aaaaaaaaaaaaaaaa.parquet": "not an ltbench record (no store schema version in its "
                                     "metadata)",
    "runs/bbbbbbbbbbbbbbbb.parquet": "column seed is missing",
    "runs/dddddddddddddddd.parquet": "ArrowInvalid: Parquet file size is ",
    "runs/eeeeeeeeeeeeeeee.parquet": "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xf2",
    "runs/ffffffffffffffff.parquet": "column(s) stage1_run_ix instead of stage1_run_id",
}


def test_every_planted_damage_is_listed_ignored_and_repaired(planted_store, tmp_path):
    results = planted_store
    status = invoke("status", "--results", results, "--methods", "ce", "--seeds", "0,1,2,3,4")
    assert status.exit_code == 0, status.output
    assert "9 damaged file(s), ignored" in status.stdout
    listed = dict(line.strip().split(": ", 1) for line in status.stdout.splitlines()
                  if line.startswith(f"  {results}/"))
    assert set(listed) == {f"{results}/{name}" for name in PLANTED}
    for name, reason in PLANTED.items():
        assert listed[f"{results}/{name}"].startswith(reason), name
    # Seeds 2 and 4 are intact (the copy of 2 is not counted); 0, 1 and 3 are to be re-run.
    assert "total: 2 done, 0 failed, 0 diverged, 3 missing" in status.stdout
    store = ResultStore(results)  # intact records are read, damaged artifacts are not
    assert sorted(store.read()["run_id"]) == [_run_id(seed) for seed in (1, 2, 3, 4)]
    assert [store.curves(_run_id(seed)) is None for seed in (1, 2, 3, 4)] == \
        [True, False, True, False]
    assert invoke("run", "--datasets", "cifar10-lt", "--methods", "ce", "--imb", "100",
                  "--results", results, "--dry-run").exit_code == 0

    report = invoke("report", "--results", results, "--out", tmp_path / "site")
    assert report.exit_code == 0, report.output
    assert "ignoring 9 damaged result file(s)" in report.stderr
    check = invoke("check", "--results", results, "--out", tmp_path / "check.json",
                   "--allow-empty")  # these records match no published protocol
    assert check.exit_code == 0, check.output
    assert "ignoring 9 damaged result file(s)" in check.stderr

    repaired = invoke("status", "--results", results, "--methods", "ce", "--repair")
    assert repaired.exit_code == 0, repaired.output
    moved = {line.split()[1]: line.split()[3] for line in repaired.stdout.splitlines()
             if line.startswith("moved ")}
    expected = [f"{folder}/{_run_id(seed)}.parquet" for seed in (0, 1, 3)
                for folder in ("runs", "curves")] + \
        [f"runs/{letter * 16}.parquet" for letter in "abcdef"]  # every file of a damaged run
    assert moved == {f"{results}/{name}": f"{results}/corrupt/{name}" for name in expected}
    after = invoke("status", "--results", results, "--methods", "ce", "--seeds", "0,1,2,3,4")
    assert "damaged" not in after.stdout
    assert "total: 2 done, 0 failed, 0 diverged, 3 missing" in after.stdout
    assert sorted(p.name for p in (results / "runs").iterdir()) == \
        [f"{_run_id(2)}.parquet", f"{_run_id(4)}.parquet"]


def test_a_flipped_bit_reads_unnoticed_without_page_checksums(tmp_path):
    """Why records carry page checksums; and records written before them still read."""
    store = ResultStore(tmp_path)
    store.write(make_record(_run_id(7)))
    path = tmp_path / "runs" / f"{_run_id(7)}.parquet"
    pq.write_table(pq.read_table(path), path)  # as ltbench wrote it before: no checksums
    assert store.read()["top1_err"].tolist() == [29.64]
    _flip_value_bit(path, "top1_err", 29.64)
    assert store.read()["top1_err"].tolist() == [14.82]
    assert find_damaged(store) == []


# --- damaged and unusable torch files: resume checkpoints, stage-1 models -------------------

def _flip_storage_byte(path, member: str = "data/0", at: int = 5) -> None:
    """Flip one bit of byte ``at`` of the tensor storage ``member`` in the zip archive that
    torch.save wrote (the member is stored uncompressed)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        (info,) = [i for i in archive.infolist() if i.filename.endswith(f"/{member}")]
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26:
                                                          info.header_offset + 30])
    data[info.header_offset + 30 + name_length + extra_length + at] ^= 0x01
    path.write_bytes(bytes(data))


def test_torch_load_does_not_check_crcs_so_torch_files_are_verified_first(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.arange(8, dtype=torch.float32)}, path)
    assert torchfiles.damage(path) is None
    assert torch.equal(torchfiles.load(path)["w"], torch.arange(8, dtype=torch.float32))
    _flip_storage_byte(path, at=6)  # w[1] = 1.0 is stored 00 00 80 3f: 0x80 -> 0x81
    assert torch.load(path, weights_only=True)["w"][1].item() == 1.0 + 2 ** -7
    reason = "member state/data/0 fails its CRC-32"  # torch names the folder after the file
    assert torchfiles.damage(path) == reason
    with pytest.raises(torchfiles.DamagedTorchFile, match=f"{path}: {reason}"):
        torchfiles.load(path)
    path.write_bytes(b"not a zip archive")
    assert torchfiles.damage(path).startswith("not a readable zip archive (BadZipFile: ")


def _two_layers(out: int = 3) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, out))


@pytest.mark.parametrize("damage", ["flipped bit", "older format", "other shapes"])
def test_an_unusable_resume_checkpoint_is_ignored_and_leaves_the_parts_as_they_were(
        tmp_path, capsys, damage):
    path = tmp_path / "run-a.pt"
    saved = {"model": _two_layers()}
    ResumeCheckpoint(path, "run-a").save(3, saved, curves=[], statuses=["ok"])
    if damage == "flipped bit":
        _flip_storage_byte(path)
    model = _two_layers(2 if damage == "other shapes" else 3)
    before = copy.deepcopy(model.state_dict())
    extra = ("curves", "statuses", "epochs_completed") if damage == "older format" else \
        ("curves", "statuses")
    assert ResumeCheckpoint(path, "run-a").load({"model": model}, extra) is None
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"ignoring resume checkpoint {path}: ")
    # The first layer fits and was copied before the second one raised: put back.
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    if damage != "other shapes":
        assert not torch.equal(model[0].weight, saved["model"][0].weight)


@pytest.fixture(scope="module")
def ce_trained_with_checkpoints(tmp_path_factory):
    """A 2-epoch ce run trained with a checkpoint every epoch: its result and the checkpoint
    of epoch 0 that it leaves (train_run does not publish, so nothing discards it)."""
    (spec,) = _specs(["ce"], [0], "epochs=2")
    path = tmp_path_factory.mktemp("resume") / f"{spec.run_id}.pt"
    data = runner._DataCache(Path("unused")).get(spec)
    result = runner.train_run(spec, data, CPU, checkpoint=ResumeCheckpoint(path, spec.run_id, 1))
    return spec, data, result, path


@pytest.mark.parametrize("damage", ["other shapes", "older format"])
def test_a_run_with_an_unusable_checkpoint_starts_over_instead_of_failing(
        tmp_path, capsys, ce_trained_with_checkpoints, damage):
    spec, data, reference, checkpoint = ce_trained_with_checkpoints
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 0
    if damage == "other shapes":
        fc = next(name for name in state["parts"]["model"] if name.endswith("weight"))
        state["parts"]["model"][fc] = torch.zeros(1, 1)
    else:  # before the checkpoint kept the epochs each run completed
        del state["extra"]["epochs_completed"]
    path = tmp_path / checkpoint.name
    torch.save(state, path)
    capsys.readouterr()
    again = runner.train_run(spec, data, CPU, checkpoint=ResumeCheckpoint(path, spec.run_id, 0))
    assert capsys.readouterr().err.startswith(f"ignoring resume checkpoint {path}: ")
    assert again.fields["status"] == "ok"
    timing = ["train_s", "eval_s"]
    pd.testing.assert_frame_equal(again.artifacts["curves"].drop(columns=timing),
                                  reference.artifacts["curves"].drop(columns=timing))
    assert again.fields["per_class_acc"] == reference.fields["per_class_acc"]


def test_a_damaged_stage1_model_counts_as_absent_and_is_trained_again(tmp_path):
    (crt,) = _specs(["crt"], [0], "stage2_epochs=1")
    ce = stage1_spec(crt)
    store = _fresh_store(tmp_path)
    first = run_grid([ce, crt], store, tmp_path, CPU, stream=io.StringIO())
    assert [r["status"] for r in first] == ["ok", "ok"]
    model = store.model_path(ce.run_id)
    intact = torch.load(model, weights_only=True)
    _flip_storage_byte(model)
    assert store.status(ce.run_id) == "ok" and not stage1_ready(store, ce)
    with pytest.raises(torchfiles.DamagedTorchFile, match="fails its CRC-32"):
        store.load_model(ce.run_id, torch.nn.Module())
    again = run_grid([crt], store, tmp_path, CPU, stream=io.StringIO())
    assert [r["status"] for r in again] == ["ok"]
    assert torchfiles.damage(model) is None and stage1_ready(store, ce)
    retrained = torch.load(model, weights_only=True)  # CPU: the same model, bit for bit
    assert retrained.keys() == intact.keys()
    assert all(torch.equal(retrained[name], intact[name]) for name in intact)
    assert again[0]["top1_acc"] == first[1]["top1_acc"]


def test_an_artifact_reads_the_same_with_its_pandas_metadata_damaged(tmp_path):
    """The footer's pandas JSON is not checksummed and artifacts do not need it: a flipped
    bit there (which made to_pandas raise JSONDecodeError) changes nothing."""
    store = ResultStore(tmp_path)
    curves = curves_frame(3, 29.64)
    store.write(make_record(_run_id(7)), {"curves": curves})
    path = tmp_path / "curves" / f"{_run_id(7)}.parquet"
    data = bytearray(path.read_bytes())
    data[data.index(b'{"index_columns"') + 1] ^= 0x02  # '"' -> ' '
    path.write_bytes(bytes(data))
    pd.testing.assert_frame_equal(store.curves(_run_id(7)), curves)
    assert find_damaged(store) == []
