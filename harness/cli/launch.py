"""``ltbench run``'s launch options (``--launcher`` and friends) and their dispatch.

Kept apart from :mod:`ltbench.cli.run` so the command itself only validates a
:class:`LaunchOptions`, turns it into a :class:`LaunchPlan` (:meth:`LaunchOptions.plan`) and runs
that; the launchers are in :mod:`ltbench.run.launchers`.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..errors import BadInput
from ..integers import Integer

#: Exit code of `ltbench run` when some workers ended abnormally (their runs stay pending).
EXIT_WORKERS_FAILED = 1

DEFAULT_MIN_FREE_GB = 1.0


@dataclass(frozen=True)
class LaunchOptions:
    """The launch options as given (``given``: those of :data:`LAUNCHER_ONLY` that were)."""

    launcher: str
    jobs: int
    jobs_per_gpu: int
    checkpoint_every: int
    checkpoint_every_steps: int
    min_free_gb: float
    slurm_partition: str | None
    gpus_per_job: int
    timeout_min: int
    array_parallelism: int
    precision: str
    deterministic: bool
    compile_mode: str | None = None
    given: frozenset = frozenset()

    def validate(self) -> None:
        """``--min-free-gb``, options another launcher would ignore and optional
        dependencies, before anything is read or written (the integer options' ranges are
        their types')."""
        from ..run.launchers import check_available

        if not (math.isfinite(self.min_free_gb) and self.min_free_gb >= 0):
            raise BadInput(f"--min-free-gb must be a finite number >= 0, got {self.min_free_gb}")
        for option, launchers in LAUNCHER_ONLY.items():
            if option in self.given and self.launcher not in launchers:
                raise BadInput(f"--{option.replace('_', '-')} applies to --launcher "
                               f"{' or '.join(launchers)} only, not {self.launcher}")
        check_available(self.launcher)

    def gpus_per_job_on(self, device: str) -> int:
        """``--gpus-per-job``, or 0 for ``--device cpu`` when it was not given: a task that
        asks for a GPU on a cluster without one waits forever (Ray only logs a warning)."""
        return 0 if device == "cpu" and "gpus_per_job" not in self.given else self.gpus_per_job

    def worker_settings(self, results: Path, data_root: Path, device: str):
        """What every worker of this launch is started with (paths made absolute)."""
        from ..run.launchers import WorkerSettings

        return WorkerSettings(Path(results).resolve(), Path(data_root).resolve(), device,
                              self.checkpoint_every, self.precision, self.deterministic,
                              self.checkpoint_every_steps, self.compile_mode)

    def describe_commands(self, todo, results: Path, data_root: Path, device: str,
                          pack_size: int | None) -> str:
        """The worker commands of ``todo`` in packs of up to ``pack_size`` (None: 1, as the
        automatic size needs the device)."""
        from ..run.launchers import describe_commands
        from ..run.packing import plan_packs

        return describe_commands(plan_packs(todo, pack_size or 1),
                                 self.worker_settings(results, data_root, device))

    def plan(self, device: str) -> LaunchPlan:
        """Where this launch trains: the local device and pool resolved (:class:`BadInput` on
        impossible requests); Slurm and Ray keep the device's name, as their devices are on
        other machines."""
        from ..run.launchers import local_slots
        from ..run.runner import resolve_device

        if self.launcher == "slurm":
            return LaunchPlan(self, device, (), "as one Slurm job array")
        if self.launcher == "ray":
            return LaunchPlan(self, device, (), "as Ray tasks")
        torch_device = resolve_device(device)
        slots = tuple(local_slots(torch_device.type, self.jobs, self.jobs_per_gpu))
        where = (f"on {torch_device.type}" if len(slots) == 1
                 else f"in {len(slots)} worker processes on {torch_device.type}")
        return LaunchPlan(self, torch_device, slots, where)

    def check_free_space(self, root: Path) -> None:
        from ..store.integrity import check_free_space

        check_free_space(root, self.min_free_gb)


@dataclass(frozen=True)
class LaunchPlan:
    """A launch ready to run: its options, the device (a ``torch.device`` for the local
    launcher, the ``--device`` name for Slurm and Ray), the local pool's slots (empty for Slurm
    and Ray) and where the runs train, in words for the start line."""

    options: LaunchOptions
    device: Any
    slots: tuple
    where: str

    def in_process(self) -> bool:
        """Whether the runs train in this process: the local launcher with one slot (one GPU
        and one job per GPU, or the CPU with one job)."""
        return self.options.launcher == "local" and len(self.slots) == 1

    def pack_size(self, requested: int | None, batch_size: int) -> int:
        """The pack size of this launch: ``requested``, or when None the automatic one of the
        local device (:func:`ltbench.run.packing.auto_pack_size`, shared by the workers of one
        GPU); 1 for Slurm and Ray, whose devices this process cannot see."""
        from ..run.packing import auto_pack_size

        if requested is not None:
            return requested
        if self.options.launcher != "local":
            return 1
        return max(1, auto_pack_size(self.device, batch_size) // self.options.jobs_per_gpu)

    def run(self, todo, store, data_root: Path, planned_at: float, pack_size: int = 1) -> None:
        """Train ``todo``, planned from the store as read at ``planned_at``, in packs of up to
        ``pack_size`` (in this process, or one worker per pack); exits 3 when stopped by
        SIGTERM / SIGUSR1 / Ctrl-C after checkpointing (in this process: after the current
        batch; a second Ctrl-C aborts without a checkpoint), and also when a local pool's
        launcher gets SIGTERM (its workers checkpoint after their batch)."""
        from ..engine.checkpoint import Preempted, stop_on_signals
        from ..engine.steps import Numerics
        from ..run import launchers
        from ..run.packing import plan_packs
        from ..run.runner import run_grid

        options = self.options
        if self.in_process():
            numerics = Numerics.for_device(self.device, options.precision, options.deterministic,
                                           options.compile_mode)
            try:
                with stop_on_signals():
                    run_grid(todo, store, data_root, self.device, pack_size=pack_size,
                             checkpoint_every=options.checkpoint_every,
                             checkpoint_every_steps=options.checkpoint_every_steps,
                             planned_at=planned_at, numerics=numerics)
            except Preempted as exc:
                click.echo(f"stopped: {exc}", err=True)
                sys.exit(launchers.EXIT_PREEMPTED)
            return
        device = self.device if isinstance(self.device, str) else self.device.type
        settings = options.worker_settings(store.root, data_root, device)
        packs = plan_packs(todo, pack_size)
        if options.launcher == "local":
            try:
                failed = launchers.launch_local(packs, settings, self.slots, planned_at)
            except launchers.PoolStopped as exc:  # as an in-process run stopped by SIGTERM
                click.echo(f"{exc}: the workers checkpointed and stopped; rerun the same "
                           f"command to continue", err=True)
                sys.exit(launchers.EXIT_PREEMPTED)
        elif options.launcher == "slurm":
            failed = launchers.launch_slurm(
                packs, settings, planned_at, partition=options.slurm_partition,
                gpus_per_job=options.gpus_per_job_on(device), timeout_min=options.timeout_min,
                array_parallelism=options.array_parallelism)
        else:
            failed = launchers.launch_ray(packs, settings, planned_at,
                                          gpus_per_job=options.gpus_per_job_on(device))
        if failed:  # exit 1: a script or CI job must not take a grid with holes for done
            click.echo(f"{failed} worker(s) ended abnormally; their runs stay pending "
                       f"(re-run the same command to retry them)", err=True)
            sys.exit(EXIT_WORKERS_FAILED)


#: Options that only some launchers use: given with another, they would be ignored silently.
LAUNCHER_ONLY = {"slurm_partition": ("slurm",), "timeout_min": ("slurm",),
                 "array_parallelism": ("slurm",), "gpus_per_job": ("slurm", "ray")}

_OPTIONS = [
    click.option("--launcher", type=click.Choice(["local", "slurm", "ray", "dry"]),
                 default="local", show_default=True,
                 help="local: this machine (GPU pool, or CPU); slurm: a submitit job array; "
                      "ray: Ray tasks on the cluster RAY_ADDRESS names (else a local Ray); "
                      "dry: print the worker commands."),
    click.option("--jobs", type=Integer(1), default=1, show_default=True,
                 help="CPU only: runs trained at once, each in its own worker process when > 1."),
    click.option("--jobs-per-gpu", type=Integer(1), default=1, show_default=True,
                 help="Worker processes per visible GPU (local launcher with CUDA)."),
    click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto",
                 show_default=True,
                 help="Forward precision: auto is bf16 autocast on CUDA and on CPUs with native "
                      "bf16 (AMX / AVX512-BF16), fp32 elsewhere; pooled features, head and loss "
                      "are always fp32. Recorded per run; not part of the run id."),
    click.option("--deterministic", is_flag=True,
                 help="CUDA: deterministic kernels instead of cuDNN autotuning (slower; for "
                      "bit-exact checks such as resume). CPU runs are always deterministic."),
    click.option("--compile", "compile_mode",
                 type=click.Choice(["default", "reduce-overhead", "max-autotune-no-cudagraphs"]),
                 default=None,
                 help="torch.compile the network's forward with this mode (the first steps "
                      "then compile; reduce-overhead adds CUDA graphs). Default: eager. "
                      "Recorded per run; not part of the run id."),
    click.option("--checkpoint-every", type=Integer(0), default=10, show_default=True,
                 help="Epochs between resume checkpoints (0: none). Whatever it is, Ctrl-C "
                      "and SIGTERM / SIGUSR1 to a training process checkpoint after the "
                      "current batch and stop; rerun the command to resume."),
    click.option("--checkpoint-every-steps", type=Integer(0), default=0, show_default=True,
                 help="Also checkpoint every K training steps within epochs (0: off, as a stop "
                      "request checkpoints anyway: K steps bound what a run killed outright, "
                      "by SIGKILL or a lost node, loses)."),
    click.option("--min-free-gb", type=float, default=DEFAULT_MIN_FREE_GB, show_default=True,
                 help="Refuse to start with less free space in the results folder."),
    click.option("--slurm-partition", default=None, help="Slurm partition (slurm launcher)."),
    click.option("--gpus-per-job", type=Integer(0), default=1, show_default=True,
                 help="GPUs per Slurm array task or Ray task (0 when --device cpu and not "
                      "given)."),
    click.option("--timeout-min", type=Integer(1), default=24 * 60, show_default=True,
                 help="Slurm time limit per task; a timed-out task is requeued and resumes."),
    click.option("--array-parallelism", type=Integer(1), default=64, show_default=True,
                 help="Slurm array tasks running at once."),
]


def launch_options(f):
    """Add the launch options to a click command; it receives them as ``launch``."""
    @functools.wraps(f)
    def command(*args, launcher, jobs, jobs_per_gpu, precision, deterministic, compile_mode,
                checkpoint_every, checkpoint_every_steps, min_free_gb, slurm_partition,
                gpus_per_job, timeout_min, array_parallelism, **kwargs):
        context = click.get_current_context()
        given = frozenset(name for name in LAUNCHER_ONLY
                          if context.get_parameter_source(name) is not ParameterSource.DEFAULT)
        launch = LaunchOptions(launcher, jobs, jobs_per_gpu, checkpoint_every,
                               checkpoint_every_steps, min_free_gb, slurm_partition,
                               gpus_per_job, timeout_min, array_parallelism, precision,
                               deterministic, compile_mode, given)
        return f(*args, launch=launch, **kwargs)

    for option in reversed(_OPTIONS):
        command = option(command)
    return command
