"""Launchers: the local process pool (numbers equal to in-process training, GPU pinning through
CUDA_VISIBLE_DEVICES, Ctrl-C stops workers by pid and leaves a consistent, resumable store),
submitit job arrays with the requeue protocol (submitit's local executor; a real Slurm when one
answers), Ray tasks on a real local Ray cluster (or Ray's missing-dependency error), ``dry``."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import TINY_SYNTHETIC, install_plugin, with_default_ctrl_c

from ltbench import registry
from ltbench.cli import cli
from ltbench.run import claims, grid, launchers
from ltbench.store.result_store import ResultStore

TINY = [a for s in TINY_SYNTHETIC for a in ("--set", s)]
TIMING = ["train_s", "eval_s"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _grid_args(results: Path, *extra) -> list:
    return ["run", "--datasets", "synthetic-lt", "--methods", "ce,focal", "--imb", "4",
            "--epochs", "2", "--results", results, *TINY, *extra]


def _numbers(results: Path) -> dict:
    store = ResultStore(results)
    frame = store.read().set_index("run_id")
    return {run_id: (row["status"], row["top1_err"], list(row["per_class_acc"]),
                     store.curves(run_id).drop(columns=TIMING).to_dict("list"))
            for run_id, row in frame.iterrows()}


@pytest.mark.slow
def test_local_pool_trains_like_in_process(tmp_path, monkeypatch):
    import torch

    pooled, inline = tmp_path / "pooled", tmp_path / "inline"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the pool shares the cores out
    result = invoke(*_grid_args(pooled, "--jobs", "2"))
    assert result.exit_code == 0, result.output
    assert "2 to train in 2 worker processes on cpu" in result.stderr
    # CPU reductions depend on the thread count: train inline with a worker's share.
    threads = torch.get_num_threads()
    torch.set_num_threads(launchers.worker_threads(2))
    try:
        assert invoke(*_grid_args(inline)).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    numbers = _numbers(pooled)
    assert len(numbers) == 2 and numbers == _numbers(inline)
    assert not any((pooled / "claims").iterdir())


ENV_PROBE = textwrap.dedent('''
    import os
    import pandas as pd
    import torch.nn.functional as F
    from ltbench.api import Method

    class EnvProbe(Method):
        summary = "Cross-entropy that stores the GPU list its process saw (test fixture)."

        def loss(self, logits, targets, epoch):
            return F.cross_entropy(logits, targets)

        def artifacts(self):
            return {"env": pd.DataFrame({"cuda_visible_devices": [
                os.environ.get("CUDA_VISIBLE_DEVICES")]})}
''')


@pytest.mark.slow
def test_local_pool_pins_one_gpu_per_worker(tmp_path, monkeypatch):
    """The pool reads the visible GPUs from CUDA_VISIBLE_DEVICES as given (indices or UUIDs)
    and hands each worker its own; the GPUs here are names only, the runs train on the CPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-5f2a")
    assert launchers.local_slots("cuda", 1, 2) == ["3", "3", "GPU-5f2a", "GPU-5f2a"]
    assert launchers.local_slots("cpu", 3, 2) == [None, None, None]

    site = tmp_path / "site"
    install_plugin(site, "env_probe", ENV_PROBE, "[ltbench.methods]\nenv-probe = "
                                                 "env_probe:EnvProbe\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    registry.refresh()
    try:
        specs = grid.expand(["env-probe"], ["synthetic-lt"], [4.0], [0, 1],
                            overrides=dict(s.split("=") for s in TINY_SYNTHETIC), epochs=1)
    finally:
        registry.refresh()
    results = tmp_path / "results"
    settings = launchers.WorkerSettings(results, tmp_path / "unused", "cpu", None)
    packs = [[spec] for spec in specs]
    assert launchers.launch_local(packs, settings, ["3", "GPU-5f2a"], time.time()) == 0
    store = ResultStore(results)
    seen = [store.artifact("env", spec.run_id)["cuda_visible_devices"][0] for spec in specs]
    assert seen == ["3", "GPU-5f2a"]


def _ltbench(args: list, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ltbench", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                            preexec_fn=with_default_ctrl_c)


def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


def _owners(results: Path) -> list[int]:
    return [json.loads(p.read_text())["pid"] for p in claims.claims_dir(results).glob("*.lock")]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 3)],
                         ids=["ctrl-c", "sigterm"])
def test_a_stopped_pool_stops_its_workers_and_the_store_stays_consistent(tmp_path, signum, code):
    """Ctrl-C (SIGINT), or SIGTERM from a supervisor, to the launcher of a worker pool: it
    stops its workers by pid (they checkpoint after their batch), never leaves them running;
    the rerun continues both runs."""
    results = tmp_path / "results"
    args = [str(a) for a in _grid_args(results, "--jobs", "2", "--checkpoint-every", "1")]
    args[args.index("--epochs") + 1] = "12"
    launcher = _ltbench(args)
    deadline = time.monotonic() + 120
    while _count(results / "resume", "*.pt") < 2:  # both workers are mid-run
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.02)
    workers = _owners(results)
    assert len(workers) == 2 and launcher.pid not in workers
    launcher.send_signal(signum)  # SIGINT: what Ctrl-C sends to the foreground process
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == code, err
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # Workers checkpointed, released their claims and published nothing partial.
    assert not any(claims.claims_dir(results).iterdir())
    assert _count(results / "resume", "*.pt") == 2
    assert ResultStore(results).read().empty
    assert not [p for p in results.rglob(".*") if p.is_file()]  # no temporary files left

    resumed = _ltbench(args)  # a subprocess: the workers write to its stderr
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    # Each continues after the batch it was training when stopped (an epoch's last batch
    # ends its epoch: then after that epoch).
    assert err.count(" resumed after ") == 2
    assert set(ResultStore(results).read()["status"]) == {"ok"}


@pytest.mark.slow
def test_a_worker_trains_a_pack(tmp_path):
    """With --pack-size 2 the two compatible runs go to one worker, which trains them as one
    grouped pack and publishes both records."""
    results = tmp_path / "results"
    dry = invoke(*_grid_args(results, "--launcher", "dry", "--pack-size", "2"))
    (command,) = [line for line in dry.stdout.splitlines() if "-m ltbench.run.worker" in line]
    assert f"{results.resolve()}/launch/pack-" in command and not results.exists()
    result = invoke(*_grid_args(results, "--jobs", "2", "--pack-size", "2"))
    assert result.exit_code == 0, result.output
    assert "in 2 worker processes on cpu in packs of up to 2" in result.stderr
    records = ResultStore(results).read()
    assert sorted(records["method"]) == ["ce", "focal"] and set(records["status"]) == {"ok"}
    assert set(records["pack_size"]) == {2}
    assert not list((results / "launch").iterdir())  # the worker removed its spec file


def test_workers_that_die_make_the_run_exit_1_with_their_runs_pending(tmp_path, monkeypatch):
    """Every worker dies at start-up (a ``sitecustomize`` on ``PYTHONPATH``, which workers
    inherit and ``ltbench run`` itself, already running, never imports): each is named, the
    command exits 1 rather than 0, nothing is recorded and no spec file is left."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos._exit(9)\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    results = tmp_path / "results"
    result = invoke(*_grid_args(results, "--jobs", "2"))
    assert result.exit_code == 1, result.output
    assert result.stderr.count("exited with code 9; its runs stay pending") == 2
    assert "2 worker(s) ended abnormally" in result.stderr
    assert ResultStore(results).read().empty
    assert not list((results / "launch").iterdir())


def test_dry_launcher_prints_worker_commands_and_writes_nothing(tmp_path):
    results = tmp_path / "results"
    result = invoke(*_grid_args(results, "--launcher", "dry", "--checkpoint-every", "5",
                                "--checkpoint-every-steps", "7", "--compile", "reduce-overhead"))
    assert result.exit_code == 0, result.output
    commands = [line for line in result.stdout.splitlines() if "-m ltbench.run.worker" in line]
    assert len(commands) == 2
    assert all(f"--results {results.resolve()}" in c and "--checkpoint-every 5 " in c
               and c.endswith("--checkpoint-every-steps 7 --compile reduce-overhead")
               for c in commands)
    assert not results.exists()


def test_a_worker_refuses_a_bad_step_count_before_anything_else(tmp_path, capsys):
    from ltbench.run import worker

    code = worker.main([str(tmp_path / "none.json"), "--results", str(tmp_path / "results"),
                        "--data-root", str(tmp_path), "--checkpoint-every-steps", "-5"])
    assert code == 2
    assert capsys.readouterr().err == ("Error: --checkpoint-every-steps must be at least 0, "
                                       "got -5\n")
    assert not (tmp_path / "results").exists()


def test_ray_launcher_without_ray_is_bad_input(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    results = tmp_path / "results"
    result = invoke(*_grid_args(results, "--launcher", "ray"))
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "--launcher ray needs ray, which is not installed: pip install 'ltbench[ray]'" in line
    assert not results.exists()


def _started_ray_address(process: subprocess.Popen, log: Path, timeout_s: float) -> str:
    """The address ``ray start`` prints once its node runs (``ray start --address='...'``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        printed = re.search(r"ray start --address='([^']+)'", log.read_text())
        if printed:
            return printed.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"ray start did not come up:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster (2 CPUs, no GPU) in a temporary folder: its address.

    ``ray start --head --block`` runs in a session of its own and is stopped by SIGTERM (it
    then drains and stops the Ray processes it started), with SIGKILL to its whole process
    group after that, also when a test failed; not ``ray stop``, which stops every Ray process
    of the machine. Ray binds the node's own address even when given 127.0.0.1
    (``services.resolve_ip_for_localhost``). The workers inherit ``OMP_NUM_THREADS=1`` (the
    thread count of the reference runs) and an empty ``CUDA_VISIBLE_DEVICES``."""
    root = Path(tempfile.mkdtemp(prefix="ltbench-ray-"))  # short: Ray's socket paths are
    log = root / "ray-start.log"  # limited to 107 characters
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
             "--node-ip-address", "127.0.0.1", "--port", "0", "--num-cpus", "2",
             "--num-gpus", "0", "--include-dashboard=false", "--disable-usage-stats",
             "--temp-dir", str(root / "tmp")],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    try:
        yield _started_ray_address(process, log, timeout_s=180)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its session's group: nothing else's
        except ProcessLookupError:
            pass
        process.wait()
        shutil.rmtree(root, ignore_errors=True)


NO_RAY = "ray is the optional 'ray' extra (make venv installs it)"


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason=NO_RAY)
@pytest.mark.slow
def test_ray_cluster_trains_a_grid_as_the_local_launcher_does(ray_cluster, tmp_path):
    """``ltbench run --launcher ray`` on a running cluster (``RAY_ADDRESS``): one ok record
    per run, numbers equal to the in-process run's (bit for bit: CPU, one thread each), the
    precision and determinism asked for; the rerun trains nothing and contacts no cluster.
    With ``--device cpu`` and no ``--gpus-per-job`` the tasks ask for no GPU (with one they
    would wait forever on this GPU-less cluster)."""
    results, reference = tmp_path / "results", tmp_path / "reference"
    numerics = ["--device", "cpu", "--precision", "fp32", "--deterministic"]
    command = _grid_args(results, *numerics, "--launcher", "ray")
    on_ray = _ltbench(command, RAY_ADDRESS=ray_cluster)
    local = _ltbench(_grid_args(reference, *numerics))
    _, err = on_ray.communicate(timeout=300)
    assert on_ray.returncode == 0, err
    assert "2 to train as Ray tasks" in err
    assert f"Connecting to existing Ray cluster at address: {ray_cluster}" in err
    _, local_err = local.communicate(timeout=300)
    assert local.returncode == 0, local_err

    records = ResultStore(results).read()
    assert sorted(records["method"]) == ["ce", "focal"] and records["run_id"].is_unique
    assert _count(results / "runs", "*.parquet") == 2
    assert set(records["status"]) == {"ok"} and set(records["precision"]) == {"fp32"}
    assert list(records["deterministic"]) == [True, True]
    assert _numbers(results) == _numbers(reference)
    assert not any(claims.claims_dir(results).iterdir())

    rerun = _ltbench(command, RAY_ADDRESS=ray_cluster)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "2 runs in the grid, 2 already done, 0 to train" in err
    assert "Ray cluster" not in err
    assert list(ResultStore(results).read()["finished_utc"]) == list(records["finished_utc"])


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason=NO_RAY)
@pytest.mark.slow
def test_a_failed_ray_task_is_reported_and_its_runs_stay_pending(ray_cluster, tmp_path):
    """``--device cuda`` on a cluster without GPUs: each task raises in its worker (the
    launcher cannot see the nodes' devices); each is named, its runs stay pending, and the
    command ends as a local pool whose workers failed does (exit 1, the retry hint); no spec
    file is left."""
    results = tmp_path / "results"
    specs = grid.expand(["ce", "focal"], ["synthetic-lt"], [4.0], [0],
                        overrides=dict(s.split("=") for s in TINY_SYNTHETIC), epochs=2)
    on_ray = _ltbench(_grid_args(results, "--device", "cuda", "--launcher", "ray",
                                 "--gpus-per-job", "0"), RAY_ADDRESS=ray_cluster)
    _, err = on_ray.communicate(timeout=300)
    assert on_ray.returncode == 1, err
    failures = sorted(line for line in err.splitlines() if line.startswith("ray task for "))
    assert failures == sorted(
        f"ray task for {spec.run_id} failed: ltbench.errors.BadInput: --device cuda: no CUDA "
        f"device is available (use --device cpu or auto); its runs stay pending"
        for spec in specs)
    assert "2 worker(s) ended abnormally; their runs stay pending" in err
    assert ResultStore(results).read().empty
    assert _count(claims.claims_dir(results), "*") == 0
    assert _count(results / "launch", "*") == 0
    dry = invoke(*_grid_args(results, "--launcher", "dry"))
    assert "2 runs in the grid, 0 done, 2 to train" in dry.stdout


EPOCHS = 6


def _submit_ce_and_focal(results: Path, tmp_path: Path, cluster: str):
    """One job array of two tiny runs (ce, focal) on submitit's ``cluster``; its jobs and the
    first run's resume-checkpoint path."""
    specs = grid.expand(["ce", "focal"], ["synthetic-lt"], [4.0], [0],
                        overrides=dict(s.split("=") for s in TINY_SYNTHETIC), epochs=EPOCHS)
    settings = launchers.WorkerSettings(results, tmp_path / "unused", "cpu", 1)
    jobs = launchers.submit_array([[spec] for spec in specs], settings, time.time(),
                                  partition=None, gpus_per_job=0, timeout_min=10,
                                  array_parallelism=2, cluster=cluster)
    return jobs, results / "resume" / f"{specs[0].run_id}.pt"


def _assert_requeued_and_resumed(jobs) -> None:
    """Every task succeeded, and the first was requeued on USR2 and resumed."""
    assert launchers.wait_for(jobs, sys.stderr, timeout_s=300) == 0
    submitit_log = Path(jobs[0].paths.stdout).read_text()
    assert "Caught signal SIGUSR2" in submitit_log and "Requeued job" in submitit_log
    assert "resumed after epoch" in Path(jobs[0].paths.stderr).read_text()


@pytest.mark.slow
def test_submitit_array_requeue_resumes(tmp_path):
    """A submitit job array through submitit's local executor, one task preempted mid-run
    (real Slurm: the next test). The local executor runs the same ``SlurmTask`` callables in fresh processes and implements
    the same protocol: the preemption signal (USR2, what Slurm sends with
    ``PreemptParameters=send_user_signal`` or ``--signal``) makes submitit call
    ``SlurmTask.checkpoint`` and requeue the task, which resumes from the run's resume
    checkpoint. (``LocalJob._interrupt`` signals the local controller, which does not forward
    USR2 in submitit 1.5, so the signal goes to the task process itself, as Slurm's would.)"""
    pytest.importorskip("submitit", reason="submitit is the optional 'slurm' extra")
    results, reference = tmp_path / "results", tmp_path / "reference"
    jobs, checkpoint = _submit_ce_and_focal(results, tmp_path, "local")
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert time.monotonic() < deadline and not jobs[0].done()
        time.sleep(0.02)
    controller = jobs[0]._process.pid
    (task,) = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    os.kill(int(task), signal.SIGUSR2)
    _assert_requeued_and_resumed(jobs)

    assert invoke("run", "--datasets", "synthetic-lt", "--methods", "ce,focal", "--imb", "4",
                  "--epochs", EPOCHS, "--results", reference, *TINY).exit_code == 0
    assert _numbers(results) == _numbers(reference)


def _slurm_is_up() -> bool:
    if shutil.which("sinfo") is None or importlib.util.find_spec("submitit") is None:
        return False
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                timeout=20).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(state in ("idle", "mixed") for state in states)


def _squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                          text=True, timeout=20).stdout.strip()


@pytest.mark.skipif(not _slurm_is_up(), reason="no Slurm cluster answers here (CI starts a "
                                                "single-node one with tests/slurm_localhost.sh)")
@pytest.mark.slow
def test_real_slurm_array_requeues_a_preempted_task_which_resumes(tmp_path):
    """One job array on a real Slurm; a task gets the preemption signal mid-run (``scancel
    --signal=USR2``, as ``PreemptParameters=send_user_signal`` sends it), submitit requeues it
    with ``scontrol requeue``, and the requeued task resumes from the run's checkpoint. Slurm
    holds a requeued job back for a while (its begin time is pushed ahead); the test releases
    it at once with ``scontrol update StartTime=now``."""
    results, reference = tmp_path / "results", tmp_path / "reference"
    jobs, checkpoint = _submit_ce_and_focal(results, tmp_path, "slurm")
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1  # one array
    deadline = time.monotonic() + 180
    while not checkpoint.exists():
        assert time.monotonic() < deadline and not jobs[0].done()
        time.sleep(0.05)
    subprocess.run(["scancel", "--signal=USR2", jobs[0].job_id], check=True, timeout=20)
    while _squeue_state(jobs[0].job_id) != "PENDING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Released at once, the new instance can start while the node still cleans up the old
    # one, and Slurm kills it ("Job credential revoked"): give the node a few seconds.
    time.sleep(5)
    subprocess.run(["scontrol", "update", f"JobId={jobs[0].job_id}", "StartTime=now"],
                   check=True, timeout=20)
    _assert_requeued_and_resumed(jobs)

    # The uninterrupted reference goes through the command line's own Slurm launcher.
    result = invoke("run", "--datasets", "synthetic-lt", "--methods", "ce,focal", "--imb", "4",
                    "--epochs", EPOCHS, "--results", reference, *TINY, "--launcher", "slurm",
                    "--gpus-per-job", "0", "--timeout-min", "10")
    assert result.exit_code == 0, result.output
    assert "2 to train as one Slurm job array" in result.stderr
    assert _numbers(results) == _numbers(reference)
