"""Launchers: where the pending runs of ``ltbench run`` execute (``--launcher``).

Every backend starts the same entry point, :mod:`ltbench.run.worker`, once per pack of runs (often
one run; :func:`ltbench.run.packing.plan_packs` with ``--pack-size``) in a fresh process
(architecture.md §5.2), and passes it a spec file under ``<results>/launch/`` — paths, never
data or pickled objects (pitfall 19). The worker's interpreter is :data:`WORKER_PYTHON`, never
a module search that starts in the user's working directory. A spec file has a name of its own
per launch, is read as untrusted input and is removed once its pack is done
(:func:`ltbench.run.worker.read_spec`). Each worker claims its runs, resumes from its checkpoint
and publishes their records, so the launchers only start, wait and stop processes:

* ``local``: a slot pool. With CUDA, one slot per visible GPU × ``--jobs-per-gpu``, the GPU list
  taken from ``CUDA_VISIBLE_DEVICES`` as given (DomainBed ignored it until
  facebookresearch/DomainBed PR #104) and pinned per worker through that variable; on CPU,
  ``--jobs`` slots. With a single slot (one GPU and one job per GPU, or one CPU job) the runs
  train in the ``ltbench run`` process itself. A slot is
  refilled when its worker exits (a thread per worker reports its exit: the launcher sleeps
  until one ends and reaps no other child). Workers run in their own session, so a Ctrl-C
  reaches only the launcher, which stops them by pid: SIGTERM (the worker checkpoints after the
  batch it is training and exits), then SIGKILL after a grace period. Records are published atomically
  and claims of killed workers go stale, so the store stays consistent.
* ``slurm``: submitit (``pip install 'ltbench[slurm]'``), one job array per submission
  (``executor.batch()``), one array task per pack. The task is a checkpointable callable: on
  preemption or timeout submitit calls its ``checkpoint`` and requeues it (submitit's checkpoint
  protocol), and the requeued task resumes from the run's resume checkpoint. The results folder
  (spec files, job folder, checkpoints) must be on storage the nodes share.
* ``ray``: ``pip install 'ltbench[ray]'``; one task per pack with ``num_gpus`` and
  ``max_calls=1`` (a fresh worker process per task: ray #29606, reused workers hold CUDA
  memory) and Ray's default of one CPU (Ray sets the worker's ``OMP_NUM_THREADS`` to it),
  calling :func:`~ltbench.run.worker.run_worker`. It runs on the cluster ``ray.init()`` connects
  to: the one ``RAY_ADDRESS`` names (what a user with a Ray cluster sets), else the latest
  one ``ray start`` started on this machine, else a new local Ray instance that ends with the
  launch. As for Slurm, the results folder must be on storage the nodes share. A task that
  raises is reported and its runs stay pending; one whose worker died Ray itself retries (3
  times by default), resuming from the run's checkpoint (or skipping the run while the dead
  worker's claim is not yet stale, :mod:`ltbench.run.claims`). For users who already run Ray
  clusters; never the Slurm path (pitfall 18).
* ``dry``: prints the worker command of every pending run.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

from ..envinfo import usable_cores
from ..errors import BadInput
from ..spec import RunSpec
from .worker import EXIT_PREEMPTED, EXIT_STORE_FAILED, run_worker, spec_pack, spec_path, write_spec

LAUNCHERS = ("local", "slurm", "ray", "dry")
#: How a worker's Python starts: this interpreter with ``-P``, so that the folder the user
#: happens to be in is not searched first for modules (a results folder on shared storage, or
#: any folder holding an ``ltbench/`` package, would otherwise run its code in every worker).
WORKER_PYTHON = (sys.executable, "-P")
#: Seconds a stopped worker gets to write its checkpoint before it is killed.
STOP_GRACE_S = 60.0


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of one launch is told besides its spec file."""

    results: Path
    data_root: Path
    device: str
    checkpoint_every: int | None
    precision: str = "auto"
    deterministic: bool = False
    checkpoint_every_steps: int = 0
    compile_mode: str | None = None

    def command(self, spec_path: Path) -> list[str]:
        command = [*WORKER_PYTHON, "-m", "ltbench.run.worker", str(spec_path),
                   "--results", str(self.results), "--data-root", str(self.data_root),
                   "--device", self.device, "--precision", self.precision]
        if self.checkpoint_every is not None:
            command += ["--checkpoint-every", str(self.checkpoint_every)]
        if self.checkpoint_every_steps:
            command += ["--checkpoint-every-steps", str(self.checkpoint_every_steps)]
        if self.deterministic:
            command.append("--deterministic")
        if self.compile_mode is not None:
            command += ["--compile", self.compile_mode]
        return command

    def worker_arguments(self, spec_path: Path) -> dict:
        """:func:`~ltbench.run.worker.run_worker`'s arguments for ``spec_path``: what the Slurm
        and Ray tasks call it with, the counterpart of :meth:`command`."""
        return {"spec_path": spec_path, "results": self.results, "data_root": self.data_root,
                "device": self.device, "checkpoint_every": self.checkpoint_every,
                "precision": self.precision, "deterministic": self.deterministic,
                "checkpoint_every_steps": self.checkpoint_every_steps,
                "compile_mode": self.compile_mode}


def spec_folder(results: Path) -> Path:
    return Path(results) / "launch"


def describe_commands(packs: list[list[RunSpec]], settings: WorkerSettings) -> str:
    """The ``dry`` launcher: one worker command line per pending pack (or run)."""
    folder = spec_folder(settings.results)
    return "\n".join(" ".join(settings.command(spec_path(pack, folder))) for pack in packs)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [entry.strip() for entry in given.split(",") if entry.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def worker_threads(workers: int) -> int:
    """Intra-op threads for each of ``workers`` concurrent CPU workers: the usable cores
    shared out, at least one. More threads than cores spin against each other in OpenMP's
    barriers: measured on 2 cores, a run with 2 threads beside other processes slowed from 16 s
    to over 60 s per epoch."""
    return max(1, usable_cores() // workers)


def local_slots(device_type: str, jobs: int, jobs_per_gpu: int) -> list[str | None]:
    """The pool's slots: GPU ids (each repeated ``jobs_per_gpu`` times) or ``jobs`` CPU slots."""
    if jobs < 1 or jobs_per_gpu < 1:
        raise BadInput("--jobs and --jobs-per-gpu must be at least 1")
    if device_type == "cuda":
        gpus = visible_gpus()
        if not gpus:
            raise BadInput("--device cuda: CUDA_VISIBLE_DEVICES lists no GPU")
        return [gpu for gpu in gpus for _ in range(jobs_per_gpu)]
    return [None] * jobs


def _stop(processes: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM every worker by pid, wait up to ``grace_s`` in all, SIGKILL the rest."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PoolStopped(BaseException):
    """The local pool's launcher got SIGTERM (a cluster's or a supervisor's stop): it stopped
    its workers as Ctrl-C does, each after checkpointing."""


def _raise_pool_stopped(signum: int, frame) -> None:
    raise PoolStopped(f"stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def _sigterm_stops_the_pool() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`PoolStopped` (main thread only): without it
    the launcher would die at once and leave its workers, in their own sessions, running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_pool_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report_exit(process: subprocess.Popen, exited: queue.Queue) -> None:
    process.wait()
    exited.put(process.pid)


def launch_local(packs: list[list[RunSpec]], settings: WorkerSettings,
                 slots: list[str | None], planned_at: float, stream: TextIO | None = None,
                 grace_s: float = STOP_GRACE_S) -> int:
    """Run every pack (a list of runs; often one) in a fresh worker process on the pool
    ``slots``; returns the number of workers that exited abnormally (their runs stay pending,
    named on ``stream``). A worker whose results store refused a write (its own ``Error:``
    line) stops the pool: no further worker starts, the running ones finish, then
    :class:`BadInput` says so. ``planned_at``: when the store was read to pick the runs
    (:func:`ltbench.run.runner.run_grid`). A worker's spec file is written when it starts and
    removed when it exits: a pack it did not finish is planned again by the next run."""
    stream = stream if stream is not None else sys.stderr
    folder = spec_folder(settings.results)
    pending = deque(packs)
    free = list(slots)
    cpu_threads = str(worker_threads(len(slots)))
    running: dict[int, tuple[subprocess.Popen, str | None, Path]] = {}
    exited: queue.Queue[int] = queue.Queue()
    abnormal = unstarted = 0
    store_failed = False
    with _sigterm_stops_the_pool():
        try:
            while pending or running:
                while pending and free:
                    slot, path = free.pop(0), write_spec(pending.popleft(), folder, planned_at)
                    env = dict(os.environ)
                    if slot is not None:
                        env["CUDA_VISIBLE_DEVICES"] = slot
                    else:  # a CPU pool shares the cores out, unless the user chose a count
                        env.setdefault("OMP_NUM_THREADS", cpu_threads)
                    process = subprocess.Popen(settings.command(path), env=env,
                                               start_new_session=True)
                    running[process.pid] = (process, slot, path)
                    threading.Thread(target=_report_exit, args=(process, exited),
                                     daemon=True).start()
                process, slot, path = running.pop(exited.get())  # a signal interrupts the wait
                path.unlink(missing_ok=True)  # a pack this pool did not finish is planned anew
                free.append(slot)
                if process.returncode == EXIT_STORE_FAILED:
                    store_failed = True
                    unstarted += len(pending)
                    pending.clear()  # every later worker would fail the same way
                if process.returncode not in (0, EXIT_PREEMPTED):
                    abnormal += 1
                    stream.write(f"worker for {spec_pack(path)} exited with code "
                                 f"{process.returncode}; its runs stay pending\n")
        except BaseException:  # Ctrl-C, SIGTERM (PoolStopped): stop the workers by pid
            _stop([process for process, _, _ in running.values()], grace_s)
            for _, _, path in running.values():
                path.unlink(missing_ok=True)
            raise
    if store_failed:
        raise BadInput(f"results folder {settings.results} refused a write by a worker (its "
                       f"Error line above): the grid stopped, {unstarted} pack(s) not "
                       f"started; fix the folder and rerun the same command")
    return abnormal


class SlurmTask:
    """One array task: trains one run or pack; checkpointable (submitit requeues it on
    preemption)."""

    def __init__(self, spec_path: Path, settings: WorkerSettings):
        self.spec_path = spec_path
        self.settings = settings

    def __call__(self) -> str:
        run_worker(**self.settings.worker_arguments(self.spec_path))
        return spec_pack(self.spec_path)

    def checkpoint(self, *args, **kwargs):
        """submitit's checkpoint protocol: requeue this same task. The run's own resume
        checkpoint (written every K epochs) is what the requeued task continues from."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def _import_or_bad_input(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BadInput(f"--launcher {extra} needs {module}, which is not installed: "
                       f"pip install 'ltbench[{extra}]' ({exc})") from exc


def check_available(launcher: str) -> None:
    """:class:`BadInput` if the launcher's optional dependency is missing (before any write)."""
    if launcher == "slurm":
        _import_or_bad_input("submitit", "slurm")
    elif launcher == "ray":
        _import_or_bad_input("ray", "ray")


def launch_slurm(packs: list[list[RunSpec]], settings: WorkerSettings, planned_at: float, *,
                 partition: str | None, gpus_per_job: int, timeout_min: int,
                 array_parallelism: int, stream: TextIO | None = None) -> int:
    """Submit one Slurm job array (one task per pack or run) and wait for it; returns the
    number of tasks that failed."""
    stream = stream if stream is not None else sys.stderr
    jobs = submit_array(packs, settings, planned_at, partition=partition,
                        gpus_per_job=gpus_per_job, timeout_min=timeout_min,
                        array_parallelism=array_parallelism)
    stream.write(f"submitted {len(jobs)} tasks ({', '.join(job.job_id for job in jobs[:3])}"
                 f"{', ...' if len(jobs) > 3 else ''}); logs in {settings.results}/slurm\n")
    return wait_for(jobs, stream)


def submit_array(packs: list[list[RunSpec]], settings: WorkerSettings, planned_at: float, *,
                 partition: str | None, gpus_per_job: int, timeout_min: int,
                 array_parallelism: int, cluster: str | None = None) -> list:
    """Submit one submitit job array, one :class:`SlurmTask` per pack; returns its jobs.
    ``cluster`` None lets submitit pick Slurm (``sbatch`` on the PATH); tests pass ``"local"``
    (submitit's local executor: real processes, the same callable and requeue protocol)."""
    submitit = _import_or_bad_input("submitit", "slurm")
    folder = spec_folder(settings.results)
    paths = [write_spec(pack, folder, planned_at) for pack in packs]
    python = shlex.join(WORKER_PYTHON)  # submitit starts each task with this command
    executor = submitit.AutoExecutor(folder=Path(settings.results) / "slurm" / "%j",
                                     cluster=cluster, slurm_python=python, local_python=python)
    parameters = {"timeout_min": timeout_min, "gpus_per_node": gpus_per_job,
                  "tasks_per_node": 1, "slurm_array_parallelism": array_parallelism}
    if partition:
        parameters["slurm_partition"] = partition
    executor.update_parameters(**parameters)
    with executor.batch():
        jobs = [executor.submit(SlurmTask(path, settings)) for path in paths]
    return jobs


def wait_for(jobs: list, stream: TextIO, timeout_s: float | None = None) -> int:
    """Wait for submitit ``jobs`` as they complete; returns how many failed (named on
    ``stream``; their runs stay pending). ``timeout_s``: raise ``TimeoutError`` after it.

    submitit learns that a task ended without a result (killed, node lost) from ``sacct``; on
    a cluster without accounting such a task is waited for until ``timeout_s``."""
    import submitit

    failed = 0
    for job in submitit.helpers.as_completed(jobs, timeout=timeout_s, poll_frequency=2):
        try:
            job.result()
        except Exception as exc:  # the task's own error; its run stays pending
            failed += 1
            stream.write(f"task {job.job_id} failed: {str(exc).splitlines()[-1]}\n")
    return failed


def launch_ray(packs: list[list[RunSpec]], settings: WorkerSettings, planned_at: float, *,
               gpus_per_job: int, stream: TextIO | None = None) -> int:
    """One Ray task per pack or run (``num_gpus``, ``max_calls=1``) on the cluster
    ``ray.init()`` connects to: the one ``RAY_ADDRESS`` names, else the latest one ``ray
    start`` started on this machine, else a new local instance that ends with this launch.
    Returns the number of tasks that failed (named on ``stream``; their runs stay pending).
    With nothing to train it connects to no cluster."""
    if not packs:
        return 0
    ray = _import_or_bad_input("ray", "ray")
    stream = stream if stream is not None else sys.stderr
    folder = spec_folder(settings.results)
    paths = [write_spec(pack, folder, planned_at) for pack in packs]
    ray.init()
    task = ray.remote(num_gpus=gpus_per_job, max_calls=1)(run_worker)
    pending = {task.remote(**settings.worker_arguments(path)): path for path in paths}
    failed = 0
    while pending:
        (done,), _ = ray.wait(list(pending), num_returns=1)
        path = pending.pop(done)
        try:
            ray.get(done)
        except ray.exceptions.RayError as exc:  # the task raised, or its worker died
            failed += 1
            path.unlink(missing_ok=True)  # its pack is planned anew by the next run
            stream.write(f"ray task for {spec_pack(path)} failed: "
                         f"{str(exc).strip().splitlines()[-1]}; its runs stay pending\n")
    return failed
