"""One run, or one pack of runs, in its own process: the entry point every launcher starts.

``python -P -m ltbench.run.worker SPEC.json --results DIR --data-root DIR
--device auto|cpu|cuda [--precision auto|bf16|fp32] [--deterministic] [--compile MODE]
[--checkpoint-every K] [--checkpoint-every-steps K]`` trains the runs described by ``SPEC.json`` (written by
:func:`write_spec`; several runs train as one pack, :mod:`ltbench.run.packing`) exactly as
``ltbench run`` would in-process: under their claims, resuming from their checkpoint,
publishing their records (:func:`ltbench.run.runner.run_grid`). Launchers move spec files and exit
codes only, never data (architecture.md §5.2). A spec file sits in the results folder, which
other users of a shared store may write to: :func:`read_spec` checks it as untrusted input,
and the worker removes it once the pack is done.

Exit codes: 0 the runs were trained and recorded (whatever their status) or were skipped
because another process holds or published them; 2 bad input (``Error:`` line); 3 stopped on SIGTERM /
SIGUSR1 / SIGINT after writing its resume checkpoint (after the batch it was training,
:mod:`ltbench.engine.checkpoint`); 4 the results store refused a write
(:class:`~ltbench.run.runner.StoreFailed`, ``Error:`` line; its runs are not recorded); 130
interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from .. import HARNESS_VERSION, registry
from ..errors import BadInput
from ..hparams import check_values
from ..integers import INT64_MAX, INT64_MIN
from ..spec import RunSpec
from ..store import atomicfile
from .packing import pack_id

EXIT_PREEMPTED = 3
EXIT_STORE_FAILED = 4


#: How far in the future a spec file's ``planned_at`` may lie: the launcher's clock against the
#: worker's (Slurm nodes), beyond which the file is refused (see :func:`read_spec`).
CLOCK_SKEW_S = 600.0
_RUN_FIELDS = frozenset(field.name for field in dataclasses.fields(RunSpec))


def spec_path(pack: list[RunSpec], folder: Path) -> Path:
    """A fresh ``<folder>/<pack id>.<random>.json`` (:func:`ltbench.run.packing.pack_id`: a lone
    run's id): each launch writes its own file, so two launchers planning the same pack on one
    store never read or remove each other's."""
    return folder / f"{pack_id(pack)}.{secrets.token_hex(4)}.json"


def spec_pack(path: str | Path) -> str:
    """The pack id a :func:`spec_path` is named after."""
    return Path(path).name.split(".")[0]


def write_spec(pack: list[RunSpec], folder: Path, planned_at: float) -> Path:
    """A new :func:`spec_path` holding the identities of the runs of ``pack`` and when the
    launcher read the store to plan them (see :func:`ltbench.run.runner.run_grid`), atomically
    written. It is removed when its worker completes the pack (:func:`run_worker`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = spec_path(pack, folder)
    atomicfile.write_text(path, json.dumps({"specs": [spec.identity() for spec in pack],
                                            "planned_at": planned_at}, sort_keys=True))
    return path


def _checked_run(identity: Any) -> RunSpec:
    """One run of a spec file, checked as the plan would have made it: the fields of a
    :class:`RunSpec`, of this harness version, a registered method and dataset, integer seeds
    in the store's range, hyper-parameters the engine accepts (:func:`check_values`)."""
    if not isinstance(identity, dict) or set(identity) != _RUN_FIELDS:
        raise ValueError(f"a run must have exactly the fields {', '.join(sorted(_RUN_FIELDS))}")
    spec = RunSpec(**identity)
    if spec.harness_version != HARNESS_VERSION:
        raise ValueError(f"it was planned by ltbench {spec.harness_version}, this is "
                         f"{HARNESS_VERSION}")
    for name in ("split_seed", "seed"):
        value = getattr(spec, name)
        if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{name} {value!r} is not an int64")
    if not isinstance(spec.hparams, dict):
        raise ValueError("hparams is not a mapping")
    method = registry.load("method", spec.method)
    registry.load("dataset", spec.dataset)
    check_values(spec.hparams, method.choices)
    return spec


def read_spec(path: Path) -> tuple[list[RunSpec], float]:
    """The runs of a spec file and their planning time. The file lives in a results folder
    other users may write to, so its content is untrusted: :class:`BadInput` if it is
    unreadable, names a run the plan could not have made (:func:`_checked_run`), does not
    match its name, or has a planning time that is not a time or lies in the future (which
    would make the worker retrain runs published after the plan)."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
        pack = [_checked_run(identity) for identity in content["specs"]]
        planned_at = content["planned_at"]
        if isinstance(planned_at, bool) or not isinstance(planned_at, (int, float)):
            raise ValueError(f"planned_at {planned_at!r} is not a time")
        if not math.isfinite(planned_at) or planned_at > time.time() + CLOCK_SKEW_S:
            raise ValueError(f"planned_at {planned_at!r} lies in the future")
    except (OSError, ValueError, TypeError, KeyError, BadInput) as exc:
        raise BadInput(f"{path} is not a readable run spec: {exc}") from exc
    if not pack or pack_id(pack) != spec_pack(path):
        raise BadInput(f"{path} does not describe pack {spec_pack(path)}")
    return pack, float(planned_at)


def run_worker(spec_path: str | Path, results: str | Path, data_root: str | Path,
               device: str, checkpoint_every: int | None, precision: str = "auto",
               deterministic: bool = False, checkpoint_every_steps: int = 0,
               compile_mode: str | None = None) -> None:
    """Train the runs of ``spec_path`` in this process, as one pack (raises like
    :func:`run_grid`), with the numerics of ``precision``, ``deterministic`` and
    ``compile_mode``
    (:meth:`ltbench.engine.steps.Numerics.for_device`), then remove the spec file; for
    ``checkpoint_every`` and ``checkpoint_every_steps`` see :func:`run_grid`. A worker that
    stops without completing (preempted, interrupted, the store refusing a write) leaves the
    spec file for the task that continues."""
    from ..engine.steps import Numerics
    from ..store.result_store import ResultStore
    from .runner import resolve_device, run_grid

    pack, planned_at = read_spec(Path(spec_path))
    resolved = resolve_device(device)
    run_grid(pack, ResultStore(results), Path(data_root), resolved,
             pack_size=len(pack), checkpoint_every=checkpoint_every,
             checkpoint_every_steps=checkpoint_every_steps, planned_at=planned_at,
             numerics=Numerics.for_device(resolved, precision, deterministic, compile_mode))
    Path(spec_path).unlink(missing_ok=True)  # the pack is done: nothing reads it again


def main(argv: list[str] | None = None) -> int:
    from ..engine.checkpoint import Preempted, stop_on_signals
    from ..integers import parse_int
    from .runner import StoreFailed

    parser = argparse.ArgumentParser(prog="python -m ltbench.run.worker",
                                     description="Train the run (or pack of runs) of a spec file.")
    parser.add_argument("spec")
    parser.add_argument("--results", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--compile", dest="compile_mode", default=None)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--checkpoint-every-steps", default="0")
    args = parser.parse_args(argv)
    try:
        every_steps = parse_int(args.checkpoint_every_steps, "--checkpoint-every-steps", least=0)
        with stop_on_signals():
            run_worker(args.spec, args.results, args.data_root, args.device,
                       args.checkpoint_every, args.precision, args.deterministic, every_steps,
                       args.compile_mode)
    except StoreFailed as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_STORE_FAILED
    except BadInput as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:
        print(f"{spec_pack(args.spec)}: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
