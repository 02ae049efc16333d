"""One run, or one pack of runs, in its own process: the entry point every launcher starts.

``python -m ltbench.worker SPEC.json --results DIR --data-root DIR --device auto|cpu|cuda
[--precision auto|bf16|fp32] [--deterministic] [--checkpoint-every K] [--checkpoint-every-steps
K]`` trains the runs described by ``SPEC.json`` (written by
:func:`write_spec`; several runs train as one pack, :mod:`ltbench.packing`) exactly as
``ltbench run`` would in-process: under their claims, resuming from their checkpoint,
publishing their records (:func:`ltbench.runner.run_grid`). Launchers move spec files and exit
codes only, never data (architecture.md §5.2).

Exit codes: 0 the runs were trained and recorded (whatever their status) or were skipped
because another process holds or published them; 2 bad input (``Error:`` line); 3 stopped on SIGTERM /
SIGUSR1 / SIGINT after writing its resume checkpoint (after the batch it was training,
:mod:`ltbench.engine.checkpoint`); 4 the results store refused a write
(:class:`~ltbench.runner.StoreFailed`, ``Error:`` line; its runs are not recorded); 130
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path

from .errors import BadInput
from .packing import pack_id
from .spec import RunSpec

EXIT_PREEMPTED = 3
EXIT_STORE_FAILED = 4


def spec_path(pack: list[RunSpec], folder: Path) -> Path:
    """``<folder>/<pack id>.json`` (:func:`ltbench.packing.pack_id`: a lone run's id)."""
    return folder / f"{pack_id(pack)}.json"


def write_spec(pack: list[RunSpec], folder: Path, planned_at: float) -> Path:
    """:func:`spec_path` holding the identities of the runs of ``pack`` and when the launcher
    read the store to plan them (see :func:`ltbench.runner.run_grid`), atomically written."""
    folder.mkdir(parents=True, exist_ok=True)
    path = spec_path(pack, folder)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    tmp.write_text(json.dumps({"specs": [spec.identity() for spec in pack],
                               "planned_at": planned_at}, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_spec(path: Path) -> tuple[list[RunSpec], float]:
    """The runs of a spec file and their planning time; :class:`BadInput` if the file is
    unreadable or does not match its name (a hand-edited or foreign file)."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
        pack = [RunSpec(**identity) for identity in content["specs"]]
        planned_at = float(content["planned_at"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BadInput(f"{path} is not a readable run spec: {exc}") from exc
    if not pack or pack_id(pack) != Path(path).stem:
        raise BadInput(f"{path} does not describe pack {Path(path).stem}")
    return pack, planned_at


def run_worker(spec_path: str | Path, results: str | Path, data_root: str | Path,
               device: str, checkpoint_every: int | None, precision: str = "auto",
               deterministic: bool = False, checkpoint_every_steps: int = 0) -> None:
    """Train the runs of ``spec_path`` in this process, as one pack (raises like
    :func:`run_grid`), with the numerics of ``precision`` and ``deterministic``
    (:meth:`ltbench.engine.steps.Numerics.for_device`); ``checkpoint_every`` and
    ``checkpoint_every_steps``: see :func:`run_grid`."""
    from .engine.steps import Numerics
    from .runner import resolve_device, run_grid
    from .store import ResultStore

    pack, planned_at = read_spec(Path(spec_path))
    resolved = resolve_device(device)
    run_grid(pack, ResultStore(results), Path(data_root), resolved,
             pack_size=len(pack), checkpoint_every=checkpoint_every,
             checkpoint_every_steps=checkpoint_every_steps, planned_at=planned_at,
             numerics=Numerics.for_device(resolved, precision, deterministic))


def main(argv: list[str] | None = None) -> int:
    from .engine.checkpoint import Preempted, stop_on_signals
    from .integers import parse_int
    from .runner import StoreFailed

    parser = argparse.ArgumentParser(prog="python -m ltbench.worker",
                                     description="Train the run (or pack of runs) of a spec file.")
    parser.add_argument("spec")
    parser.add_argument("--results", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--checkpoint-every-steps", default="0")
    args = parser.parse_args(argv)
    try:
        every_steps = parse_int(args.checkpoint_every_steps, "--checkpoint-every-steps", least=0)
        with stop_on_signals():
            run_worker(args.spec, args.results, args.data_root, args.device,
                       args.checkpoint_every, args.precision, args.deterministic, every_steps)
    except StoreFailed as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_STORE_FAILED
    except BadInput as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:
        print(f"{Path(args.spec).stem}: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
