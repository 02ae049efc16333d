"""Resume: a run killed mid-way (SIGKILL) or stopped (SIGTERM) and restarted ends with exactly
the numbers of an uninterrupted run with the same seed (CPU: bit-identical curves, metrics and
method artifacts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from helpers import TINY_SYNTHETIC

from ltbench.cli import cli
from ltbench.engine.checkpoint import Preempted, ResumeCheckpoint, request_stop, stop_on_signals
from ltbench.store import ResultStore

EPOCHS = 6
DATA = [a for s in TINY_SYNTHETIC for a in ("--set", s)]
#: Timing columns differ between any two runs; everything else must be identical.
TIMING = ["train_s", "eval_s"]


def _args(results: Path, *extra: str) -> list[str]:
    return ["run", "--datasets", "synthetic-lt", "--imb", "4", "--methods", "ce", "--epochs",
            str(EPOCHS), "--results", str(results), *DATA, *extra]


def _subprocess(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ltbench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _completed(args: list[str]) -> subprocess.CompletedProcess:
    """``ltbench ARGS`` run to completion with the thread count of :func:`_subprocess`: every
    training run compared here must reduce in the same order."""
    return subprocess.run([sys.executable, "-m", "ltbench", *args], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for(path_glob, folder: Path, process: subprocess.Popen, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(folder.glob(path_glob)) if folder.is_dir() else []
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    raise AssertionError(f"no {path_glob} under {folder} after {timeout}s")


def _outcome(results: Path):
    store = ResultStore(results)
    (record,) = store.read().to_dict("records")
    artifacts = {name: store.artifact(name, record["run_id"])
                 for name in ("curves", "eps", "eps_summary")}
    return record, artifacts


def _assert_identical(resumed: Path, reference: Path) -> None:
    record, artifacts = _outcome(resumed)
    expected, expected_artifacts = _outcome(reference)
    assert record["run_id"] == expected["run_id"] and record["status"] == "ok"
    for column in ("top1_acc", "top1_err", "top1_err_best_epoch", "best_epoch", "many_acc",
                   "medium_acc", "few_acc"):
        assert record[column] == expected[column] or (
            pd.isna(record[column]) and pd.isna(expected[column])), column
    assert list(record["per_class_acc"]) == list(expected["per_class_acc"])
    for name, frame in artifacts.items():
        other = expected_artifacts[name]
        if frame is None:
            assert other is None, name
            continue
        pd.testing.assert_frame_equal(frame.drop(columns=TIMING, errors="ignore"),
                                      other.drop(columns=TIMING, errors="ignore"),
                                      check_exact=True)
    assert len(artifacts["curves"]) == EPOCHS


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The store of the uninterrupted run, trained once for the module, in a subprocess with
    the thread count of the interrupted ones (CPU kernels reduce in a thread-dependent order)."""
    results = tmp_path_factory.mktemp("reference")
    result = _completed(_args(results))
    assert result.returncode == 0, result.stderr
    return results


@pytest.mark.slow
def test_killed_run_resumes_to_identical_results(tmp_path, uninterrupted):
    results = tmp_path / "results"
    process = _subprocess(_args(results, "--checkpoint-every", "1"))
    checkpoint = _wait_for("*.pt", results / "resume", process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved_epoch = torch.load(checkpoint, weights_only=True)["epoch"]
    assert saved_epoch < EPOCHS - 1 and not any((results / "runs").glob("*.parquet"))

    resumed = _subprocess(_args(results, "--checkpoint-every", "1"))
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    assert f"resumed after epoch {saved_epoch + 1}" in err
    _assert_identical(results, uninterrupted)
    assert not any((results / "resume").iterdir())  # discarded once published


@pytest.mark.slow
def test_sigterm_checkpoints_stops_with_exit_3_and_resumes(tmp_path, uninterrupted):
    results = tmp_path / "results"
    process = _subprocess(_args(results, "--checkpoint-every", "0"))
    _wait_for("*.lock", results / "claims", process)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 3, err
    (checkpoint,) = (results / "resume").iterdir()
    assert torch.load(checkpoint, weights_only=True)["epoch"] < EPOCHS - 1
    assert not any((results / "claims").iterdir())  # released on the way out
    result = _completed(_args(results))
    assert result.returncode == 0 and "resumed after epoch" in result.stderr
    _assert_identical(results, uninterrupted)


@pytest.mark.slow
def test_damaged_checkpoint_is_ignored_and_the_run_starts_over(tmp_path, uninterrupted):
    results = tmp_path / "results"
    plan = CliRunner().invoke(cli, _args(results, "--dry-run"))
    run_id = plan.stdout.split()[1]
    path = results / "resume" / f"{run_id}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated checkpoint")
    result = _completed(_args(results))
    assert result.returncode == 0, result.stderr
    assert f"ignoring resume checkpoint {path}" in result.stderr
    assert "resumed" not in result.stderr
    _assert_identical(results, uninterrupted)


def test_checkpoint_of_another_run_is_not_loaded(tmp_path):
    model = torch.nn.Linear(2, 2)
    ResumeCheckpoint(tmp_path / "a.pt", "run-a").save(3, {"model": model})
    other = torch.nn.Linear(2, 2)
    before = other.weight.clone()
    assert ResumeCheckpoint(tmp_path / "a.pt", "run-b").load({"model": other}) is None
    assert torch.equal(other.weight, before)
    assert ResumeCheckpoint(tmp_path / "a.pt", "run-a").load({"model": other}) == {"epoch": 3}
    assert torch.equal(other.weight, model.weight)


def _train_mwn(checkpoint: ResumeCheckpoint | None):
    """MW-Net on tiny synthetic data through the engine; its weighting network, optimiser,
    weight histograms and meta-batch sampler are method state a checkpoint must carry."""
    from ltbench import grid
    from ltbench.runner import _DataCache, train_one

    (spec,) = grid.expand(["mwn"], ["synthetic-lt"], [4.0], [0], profile="exp", split_seed=0,
                          overrides={**dict(s.split("=") for s in TINY_SYNTHETIC),
                                     "meta_per_class": "4", "meta_batch_size": "8"},
                          epochs=4, all_methods=False)
    data = _DataCache(Path("unused")).get(spec)
    return train_one(spec, data, torch.device("cpu"), checkpoint=checkpoint)


@pytest.mark.slow
def test_method_state_survives_a_stop_and_resume(tmp_path):
    expected_fields, expected, *_ = _train_mwn(None)
    checkpoint = ResumeCheckpoint(tmp_path / "mwn.pt", "mwn-run", every=0)
    with stop_on_signals():
        request_stop()  # as SIGTERM would: checkpoint after the current epoch and stop
        with pytest.raises(Preempted, match="stopped after epoch 0"):
            _train_mwn(checkpoint)
    fields, artifacts, _, resumed_wall_s = _train_mwn(checkpoint)
    assert fields == expected_fields
    # The epoch trained before the stop is counted in the run's cost.
    first = artifacts["curves"].iloc[0]
    assert resumed_wall_s == first["train_s"] + first["eval_s"] > 0
    assert set(artifacts) == set(expected) == {"curves", "eps", "eps_summary"}
    for name, frame in artifacts.items():
        pd.testing.assert_frame_equal(frame.drop(columns=TIMING, errors="ignore"),
                                      expected[name].drop(columns=TIMING, errors="ignore"),
                                      check_exact=True)


def _train_pack(checkpoint: ResumeCheckpoint | None):
    """Two ce runs (seeds 0 and 1) trained as one grouped pack on tiny synthetic data."""
    from ltbench import grid
    from ltbench.runner import _DataCache, train_specs

    specs = grid.expand(["ce"], ["synthetic-lt"], [4.0], [0, 1], profile="exp", split_seed=0,
                        overrides=dict(s.split("=") for s in TINY_SYNTHETIC), epochs=3,
                        all_methods=False)
    data = _DataCache(Path("unused")).get(specs[0])
    return train_specs(specs, data, torch.device("cpu"), checkpoint=checkpoint)


@pytest.mark.slow
def test_a_pack_resumes_like_it_never_stopped(tmp_path):
    expected = _train_pack(None)
    checkpoint = ResumeCheckpoint(tmp_path / "pack.pt", "pack-run", every=0)
    with stop_on_signals():
        request_stop()
        with pytest.raises(Preempted, match="stopped after epoch 0"):
            _train_pack(checkpoint)
    loaded = []

    class Watched(ResumeCheckpoint):
        def load(self, parts, extra=()):
            loaded.append(super().load(parts, extra))
            return loaded[-1]

    resumed = _train_pack(Watched(checkpoint.path, "pack-run", every=0))
    assert loaded[0]["epoch"] == 0  # it continued after epoch 0 rather than starting over
    assert len(resumed) == len(expected) == 2
    for (fields, artifacts, *_), (expected_fields, expected_artifacts, *_) in zip(resumed,
                                                                                   expected):
        assert fields == expected_fields
        pd.testing.assert_frame_equal(artifacts["curves"].drop(columns=TIMING),
                                      expected_artifacts["curves"].drop(columns=TIMING),
                                      check_exact=True)
        assert len(artifacts["curves"]) == 3
