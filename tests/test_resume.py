"""Resume: a run killed mid-way (SIGKILL) or stopped (SIGTERM, Ctrl-C) and restarted, from an
epoch-boundary checkpoint or one within an epoch, ends with exactly the numbers of an
uninterrupted run with the same seed (CPU: bit-identical curves, metrics, method artifacts and,
where the test sees them, weights)."""

from __future__ import annotations

import io
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
from helpers import TINY_SYNTHETIC, with_default_ctrl_c

from ltbench.cli import cli
from ltbench.engine.checkpoint import Preempted, ResumeCheckpoint, request_stop, stop_on_signals
from ltbench.engine.progress import RunProgress
from ltbench.store.result_store import ResultStore

EPOCHS = 6
#: Timing columns differ between any two runs; everything else must be identical.
TIMING = ["train_s", "eval_s"]


#: The runs stopped mid-epoch by a signal: 14 batches per epoch (54 images, batch 4), so a
#: signal sent as the run starts lands well before its first epoch ends.
MID_EPOCHS = 2
MID_SETTINGS = tuple("batch_size=4" if s.startswith("batch_size=") else s
                     for s in TINY_SYNTHETIC)


def _args(results: Path, *extra: str, epochs: int = EPOCHS,
          settings: tuple[str, ...] = TINY_SYNTHETIC) -> list[str]:
    return ["run", "--datasets", "synthetic-lt", "--imb", "4", "--methods", "ce", "--epochs",
            str(epochs), "--results", str(results),
            *[a for s in settings for a in ("--set", s)], *extra]


def _mid_args(results: Path, *extra: str) -> list[str]:
    return _args(results, *extra, epochs=MID_EPOCHS, settings=MID_SETTINGS)


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


def _assert_identical(resumed: Path, reference: Path, epochs: int = EPOCHS) -> None:
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
    assert len(artifacts["curves"]) == epochs


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The store of the uninterrupted run, trained once for the module, in a subprocess with
    the thread count of the interrupted ones (CPU kernels reduce in a thread-dependent order)."""
    results = tmp_path_factory.mktemp("reference")
    result = _completed(_args(results))
    assert result.returncode == 0, result.stderr
    return results


@pytest.fixture(scope="module")
def mid_uninterrupted(tmp_path_factory):
    """:func:`uninterrupted` for :func:`_mid_args`."""
    results = tmp_path_factory.mktemp("mid-reference")
    result = _completed(_mid_args(results))
    assert result.returncode == 0, result.stderr
    return results


def _signal_once_started(command: list[str], signum: int) -> tuple[int, str]:
    """Start ``python -m COMMAND`` as :func:`_subprocess` does, send it ``signum`` as soon as
    its run reports that it started (its signal handlers are in place by then; its first
    batch is training), and return its exit code and its whole stderr."""
    process = subprocess.Popen([sys.executable, "-m", *command], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               preexec_fn=with_default_ctrl_c)
    lines = []
    while not (lines and lines[-1].rstrip().endswith(" started")):
        lines.append(process.stderr.readline())
        assert lines[-1] or process.poll() is None, "".join(lines)
    process.send_signal(signum)
    lines.append(process.stderr.read())
    return process.wait(timeout=120), "".join(lines)


def _saved_mid_epoch(results: Path) -> int:
    """The batches of the first epoch that the run's only checkpoint, taken within it, has."""
    (path,) = (results / "resume").iterdir()
    saved = torch.load(path, weights_only=True)
    batches = saved["extra"]["within_epoch"]["batches"]
    assert saved["epoch"] == -1 and 1 <= batches < 14
    assert not any((results / "claims").iterdir())  # released on the way out
    assert not (results / "runs").is_dir() or not any((results / "runs").iterdir())
    return batches


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
def test_a_run_killed_mid_epoch_resumes_from_its_last_step_checkpoint(tmp_path,
                                                                      mid_uninterrupted):
    results = tmp_path / "results"
    args = _mid_args(results, "--checkpoint-every", "0", "--checkpoint-every-steps", "3")
    process = _subprocess(args)
    checkpoint = _wait_for("*.pt", results / "resume", process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved = torch.load(checkpoint, weights_only=True)
    within = saved["extra"]["within_epoch"]
    step = (saved["epoch"] + 1) * 14 + within["batches"]
    assert step % 3 == 0 and within["batches"] < 14 and saved["epoch"] < MID_EPOCHS - 1
    result = _completed(args)
    assert result.returncode == 0, result.stderr
    assert f"resumed after batch {within['batches']} of epoch {saved['epoch'] + 2}" in (
        result.stderr)
    _assert_identical(results, mid_uninterrupted, MID_EPOCHS)


@pytest.mark.slow
def test_sigterm_stops_a_worker_after_its_batch_and_it_resumes_there(tmp_path,
                                                                    mid_uninterrupted):
    """A launcher stops its workers with SIGTERM: the worker checkpoints after the batch it
    is training, mid-epoch, exits 3, and a worker started again on the same spec continues
    at the next batch to the uninterrupted run's numbers."""
    from ltbench.run import grid
    from ltbench.run.worker import write_spec

    results = tmp_path / "results"
    specs = grid.expand(["ce"], ["synthetic-lt"], [4.0], [0], profile="exp", split_seed=0,
                        overrides=dict(s.split("=") for s in MID_SETTINGS), epochs=MID_EPOCHS,
                        all_methods=False)
    spec = write_spec(specs, results / "launch", time.time())
    worker = ["ltbench.run.worker", str(spec), "--results", str(results), "--data-root",
              str(tmp_path / "unused"), "--device", "cpu", "--checkpoint-every", "0"]
    code, err = _signal_once_started(worker, signal.SIGTERM)
    assert code == 3, err
    batches = _saved_mid_epoch(results)
    assert f"stopped after batch {batches} of epoch 0 on request" in err
    resumed = subprocess.run([sys.executable, "-m", *worker], capture_output=True, text=True,
                             timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed after batch {batches} of epoch 1" in resumed.stderr
    _assert_identical(results, mid_uninterrupted, MID_EPOCHS)
    assert not any((results / "resume").iterdir())  # discarded once published


@pytest.mark.slow
def test_ctrl_c_stops_a_run_after_its_batch_and_a_rerun_resumes_there(tmp_path,
                                                                      mid_uninterrupted):
    """``ltbench run`` training in its own process: Ctrl-C (SIGINT) checkpoints after the
    current batch and exits 3; the same command continues from there."""
    results = tmp_path / "results"
    code, err = _signal_once_started(["ltbench", *_mid_args(results, "--checkpoint-every",
                                                              "0")], signal.SIGINT)
    assert code == 3, err
    assert "stopping after the current batch, with a resume checkpoint" in err
    batches = _saved_mid_epoch(results)
    result = _completed(_mid_args(results))
    assert result.returncode == 0, result.stderr
    assert f"resumed after batch {batches} of epoch 1" in result.stderr
    _assert_identical(results, mid_uninterrupted, MID_EPOCHS)


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


class _StopAtStep(RunProgress):
    """Progress that requests a stop, as SIGTERM would, while training step ``stop_at`` (the
    run's, 1-based) runs, or with ``kill`` raises :class:`_Killed` there instead (a process
    killed outright: nothing saved); it counts the steps this process trains."""

    def __init__(self, stop_at: int | None = None, kill: bool = False):
        super().__init__("[test]", io.StringIO())
        self.stop_at, self.kill, self.trained = stop_at, kill, 0

    def advance(self, steps: int = 1) -> None:
        super().advance(steps)
        self.trained += steps
        if self.done == self.stop_at:
            if self.kill:
                raise _Killed
            request_stop()


class _Killed(BaseException):
    pass


def _train(method: str, seeds: list[int], epochs: int, checkpoint=None, progress=None,
           **overrides: str):
    """``method`` (one run per seed, a pack when several) on tiny synthetic data (4 batches
    per epoch; 3 with MW-Net's meta set held out) through the engine, as ``ltbench run``
    trains it."""
    from ltbench.run import grid
    from ltbench.run.runner import _DataCache, train_runs

    specs = grid.expand([method], ["synthetic-lt"], [4.0], seeds, profile="exp", split_seed=0,
                        overrides={**dict(s.split("=") for s in TINY_SYNTHETIC), **overrides},
                        epochs=epochs, all_methods=False)
    data = _DataCache(Path("unused")).get(specs[0])
    return train_runs(specs, data, torch.device("cpu"), progress, checkpoint=checkpoint)


#: MW-Net's meta set: its weighting network, optimiser, weight histograms and meta-batch
#: sampler (MetaBatches) are method state a checkpoint must carry.
MWN = {"meta_per_class": "4", "meta_batch_size": "8"}


def _assert_same_training(trained, expected) -> None:
    """Equal records, method artifacts (curves but for their seconds) and final weights."""
    assert len(trained) == len(expected)
    for run, reference in zip(trained, expected):
        assert run.fields == reference.fields
        assert set(run.artifacts) == set(reference.artifacts)
        for name, frame in run.artifacts.items():
            pd.testing.assert_frame_equal(frame.drop(columns=TIMING, errors="ignore"),
                                          reference.artifacts[name].drop(columns=TIMING,
                                                                         errors="ignore"),
                                          check_exact=True)
        weights, reference_weights = run.model.state_dict(), reference.model.state_dict()
        assert list(weights) == list(reference_weights)
        assert all(torch.equal(weights[k], reference_weights[k]) for k in weights)


def _stop_and_resume(tmp_path, method: str, seeds: list[int], epochs: int, stop_at: int,
                     **overrides: str):
    """Train with a stop request during step ``stop_at``, then again from its checkpoint;
    returns the resumed results, the checkpoint as saved and the resumed run's progress."""
    checkpoint = ResumeCheckpoint(tmp_path / "run.pt", "run", every=0)
    with stop_on_signals():
        with pytest.raises(Preempted, match="stopped after batch"):
            _train(method, seeds, epochs, checkpoint, _StopAtStep(stop_at), **overrides)
    saved = torch.load(checkpoint.path, weights_only=True)
    progress = _StopAtStep()
    return _train(method, seeds, epochs, checkpoint, progress, **overrides), saved, progress


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["instance-balanced", "class-balanced"])
def test_a_run_stopped_mid_epoch_resumes_at_the_next_batch(tmp_path, sampler):
    expected = _train("ce", [0], 3, sampler=sampler)
    resumed, saved, progress = _stop_and_resume(tmp_path, "ce", [0], 3, stop_at=6,
                                                sampler=sampler)
    # Stopped after the 2nd of epoch 1's 4 batches; the 10 steps after it trained once more.
    assert saved["epoch"] == 0 and saved["extra"]["within_epoch"]["batches"] == 2
    assert [len(order) for order in saved["extra"]["within_epoch"]["orders"]] == [54]
    assert progress.trained == 6 and progress.done == 12
    assert "[test] resumed after batch 2 of epoch 2" in progress.stream.getvalue()
    _assert_same_training(resumed, expected)


@pytest.mark.slow
def test_a_pack_stopped_mid_epoch_resumes_like_it_never_stopped(tmp_path):
    expected = _train("ce", [0, 1], 2)
    resumed, saved, progress = _stop_and_resume(tmp_path, "ce", [0, 1], 2, stop_at=3)
    within = saved["extra"]["within_epoch"]
    assert saved["epoch"] == -1 and within["batches"] == 3 and len(within["orders"]) == 2
    assert within["seen"] == [48, 48]  # 3 batches of 16, for each run
    assert progress.trained == 5
    _assert_same_training(resumed, expected)


@pytest.fixture(scope="module")
def mwn_uninterrupted():
    return _train("mwn", [0], 4, **MWN)


@pytest.mark.slow
def test_a_meta_method_stopped_mid_epoch_resumes_with_its_state(tmp_path, mwn_uninterrupted):
    resumed, saved, progress = _stop_and_resume(tmp_path, "mwn", [0], 4, stop_at=5, **MWN)
    assert saved["epoch"] == 0 and saved["extra"]["within_epoch"]["batches"] == 2
    assert progress.trained == 7
    _assert_same_training(resumed, mwn_uninterrupted)
    assert set(resumed[0].artifacts) == {"curves", "eps", "eps_summary"}
    # The run's cost counts epoch 0 and the part of epoch 1 trained before the stop, which
    # is also in epoch 1's training seconds.
    curves = resumed[0].artifacts["curves"]
    before = saved["extra"]["within_epoch"]["train_s"]
    assert resumed[0].resumed_wall_s == curves.at[0, "train_s"] + curves.at[0, "eval_s"] + before
    assert curves.at[1, "train_s"] > before > 0


@pytest.mark.slow
def test_step_checkpoints_change_nothing_and_a_killed_run_resumes_from_the_last(
        tmp_path, mwn_uninterrupted):
    """Every 2 steps (3 per epoch): after steps 2 and 4, then the process dies during step
    7; the rerun continues after step 4 and saves after steps 8 and 10 on its way (6 and 12
    end an epoch: no step checkpoint there)."""
    checkpoint = ResumeCheckpoint(tmp_path / "run.pt", "run", every=0, every_steps=2)
    with pytest.raises(_Killed):
        _train("mwn", [0], 4, checkpoint, _StopAtStep(7, kill=True), **MWN)
    saved = torch.load(checkpoint.path, weights_only=True)
    assert saved["epoch"] == 0 and saved["extra"]["within_epoch"]["batches"] == 1

    saves = []

    class Counted(ResumeCheckpoint):
        def save(self, epoch, parts, **extra):
            saves.append((epoch, extra["within_epoch"]["batches"]))
            super().save(epoch, parts, **extra)

    progress = _StopAtStep()
    resumed = _train("mwn", [0], 4, Counted(checkpoint.path, "run", every=0, every_steps=2),
                     progress, **MWN)
    assert progress.trained == 8 and saves == [(1, 2), (2, 1)]
    _assert_same_training(resumed, mwn_uninterrupted)


def test_a_checkpoint_loads_with_or_without_its_optional_keys(tmp_path):
    """Epoch-boundary checkpoints keep the format they had before those within epochs, so
    both load; a checkpoint with keys this engine does not know is another engine's."""
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "a.pt"
    for extra, loads in [({"curves": 1}, True), ({"curves": 1, "within_epoch": 2}, True),
                         ({"curves": 1, "other": 2}, False), ({}, False)]:
        ResumeCheckpoint(path, "run").save(3, {"model": model}, **extra)
        loaded = ResumeCheckpoint(path, "run").load({"model": model}, ("curves",),
                                                    ("within_epoch",))
        assert loaded == ({"epoch": 3, **extra} if loads else None), extra


def test_weight_histograms_resume_within_an_epoch_and_from_the_old_format():
    """A state taken mid-epoch changes nothing and continues the epoch exactly; a state in
    the format of before (the epoch's values already in the tables, no "pending") still
    continues at the next epoch."""
    from ltbench.methods.weight_histograms import WeightHistograms

    generator = torch.Generator().manual_seed(0)
    batches = [(epoch, torch.randint(0, 3, (8,), generator=generator),
                torch.randn(8, generator=generator)) for epoch in (0, 0, 0, 1, 1)]

    def record(histograms, chosen):
        for epoch, targets, values in chosen:
            histograms.record(epoch, targets, eps=values, weight=values.exp())
        return histograms

    expected = record(WeightHistograms(3), batches).frames()
    taken = record(WeightHistograms(3), batches[:2])
    mid_epoch = taken.state_dict()
    record(taken, batches[2:])
    resumed = WeightHistograms(3)
    resumed.load_state_dict(mid_epoch)
    record(resumed, batches[2:])
    old_format = record(WeightHistograms(3), batches[:3])
    old_format._flush()  # what state_dict did before there were checkpoints within epochs
    state = {key: value for key, value in old_format.state_dict().items() if key != "pending"}
    from_old = WeightHistograms(3)
    from_old.load_state_dict(state)
    record(from_old, batches[3:])
    for histograms in (taken, resumed, from_old):
        frames = histograms.frames()
        assert set(frames) == {"eps", "eps_summary"}
        for name, frame in frames.items():
            pd.testing.assert_frame_equal(frame, expected[name], check_exact=True)
    assert sorted(set(expected["eps_summary"]["epoch"])) == [0, 1]
