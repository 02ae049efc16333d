"""Train the pending runs of a grid and publish one record per run.

Resume is by run id: a run whose record says ``ok`` is done and skipped; a ``failed`` or
``diverged`` one is re-tried only when asked (``--rerun-failed``); ``--force`` re-trains all.
A run that raises is recorded as ``failed`` with its error and the grid goes on; only an
interrupt (Ctrl-C) stops the grid, leaving every finished record in place.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from . import registry
from .envinfo import device_name, git_commit
from .evaluate import summarize
from .packing import plan_packs
from .progress import RunProgress
from .spec import RunSpec, canonical_json, format_imb
from .store import ResultStore

RETRYABLE = ("failed", "diverged")


def pending(specs: list[RunSpec], statuses: dict[str, str], *, force: bool = False,
            rerun_failed: bool = False) -> list[RunSpec]:
    """The runs of ``specs`` that still need training, given the store's statuses."""
    if force:
        return list(specs)
    todo = []
    for spec in specs:
        status = statuses.get(spec.run_id)
        if status is None or (rerun_failed and status in RETRYABLE):
            todo.append(spec)
    return todo


def resolve_device(name: str):
    """``auto`` → CUDA when available, else CPU; asking for CUDA without one is bad input."""
    import torch

    from .errors import BadInput

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


@dataclass
class _DataCache:
    """Loaded subsets, shared by the runs of a grid that use the same data."""

    root: Path
    loaded: dict[tuple, Any] = field(default_factory=dict)

    def get(self, spec: RunSpec):
        dataset = registry.load("dataset", spec.dataset)()
        options = {k: spec.hparams[k] for k in dataset.data_keys}
        key = (spec.dataset, spec.imb_factor, spec.profile, spec.split_seed,
               canonical_json(options))
        if key not in self.loaded:
            self.loaded.clear()  # one subset in memory at a time; the grid is ordered by it
            self.loaded[key] = dataset.load(self.root, spec.imb_factor, spec.profile,
                                            spec.split_seed, spec.hparams)
        return self.loaded[key]


def _base_record(spec: RunSpec, device, started: datetime, wall_s: float) -> dict[str, Any]:
    import torch

    return {
        **{k: v for k, v in spec.identity().items() if k != "hparams"},
        "run_id": spec.run_id,
        "epochs": spec.epochs,
        "hparams": canonical_json(spec.hparams),
        "status": "failed",
        "error": None,
        "top1_acc": float("nan"),
        "top1_err": float("nan"),
        "top1_err_best_epoch": float("nan"),
        "best_epoch": None,
        "best_epoch_selected_on": "test",
        "many_acc": float("nan"),
        "medium_acc": float("nan"),
        "few_acc": float("nan"),
        "n_many": 0,
        "n_medium": 0,
        "n_few": 0,
        "per_class_acc": [],
        "train_class_counts": [],
        "wall_s": wall_s,
        "device": device_name(device),
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "started_utc": started,
        "finished_utc": datetime.now(timezone.utc),
    }


def train_specs(specs: list[RunSpec], data, device, progress: RunProgress | None = None):
    """Train compatible runs (one pack) on loaded data: one ``(record fields, artifacts)`` per
    run, the artifacts being its per-epoch ``curves`` and whatever its method produced;
    raises on errors."""
    import torch

    from .engine.train import PackMember, train_pack

    counts = torch.tensor(data.class_counts, dtype=torch.float64, device=device)
    methods = [registry.load("method", spec.method)(counts, spec.hparams) for spec in specs]
    results = train_pack(data, [PackMember(method, spec.hparams, spec.seed)
                                for method, spec in zip(methods, specs)], device, progress)
    outcomes = []
    for method, result in zip(methods, results):
        fields: dict[str, Any] = {"status": result.status, "error": result.error,
                                  "train_class_counts": list(data.class_counts)}
        if result.status == "ok":  # a diverged run has no final accuracy to report
            fields.update(summarize(result.per_class_correct, result.per_class_total,
                                    data.class_counts))
            fields["top1_err_best_epoch"] = 100.0 - result.best_top1_acc
            fields["best_epoch"] = result.best_epoch
        outcomes.append((fields, {"curves": result.curves, **method.artifacts()}))
    return outcomes


def train_one(spec: RunSpec, data, device, progress: RunProgress | None = None):
    """:func:`train_specs` of one run."""
    return train_specs([spec], data, device, progress)[0]


def _outcome(record: dict[str, Any]) -> str:
    outcome = record["status"]
    if outcome == "ok":
        outcome += f", top-1 error {record['top1_err']:.2f}%"
    elif record["error"]:
        outcome += f": {record['error']}"
    return outcome


def _pack_label(pack: list[RunSpec], first: int, total: int) -> str:
    if len(pack) == 1:
        return f"[{first}/{total}] {pack[0].describe()}"
    members = ", ".join(f"{spec.method} seed={spec.seed}" for spec in pack)
    return (f"[{first}-{first + len(pack) - 1}/{total}] pack of {len(pack)}: "
            f"{pack[0].dataset} imb={format_imb(pack[0].imb_factor)} {members}")


def run_grid(specs: list[RunSpec], store: ResultStore, data_root: Path, device,
             stream: TextIO | None = None, pack_size: int = 1) -> list[dict[str, Any]]:
    """Train ``specs`` in packs of up to ``pack_size`` compatible runs
    (:func:`ltbench.packing.plan_packs`; 1: one run after the other, in grid order); every
    run's record is written as soon as its pack finishes (``wall_s`` is the pack's).
    Returns the records written, in order."""
    stream = stream if stream is not None else sys.stderr
    cache = _DataCache(Path(data_root))
    written = []
    first = 1
    for pack in plan_packs(specs, pack_size):
        progress = RunProgress(_pack_label(pack, first, len(specs)), stream)
        first += len(pack)
        started = datetime.now(timezone.utc)
        t0 = time.monotonic()
        try:
            data = cache.get(pack[0])
            outcomes = train_specs(pack, data, device, progress)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one broken pack must not stop a grid of hundreds
            traceback.print_exc(file=stream)
            outcomes = [({"status": "failed", "error": f"{type(exc).__name__}: {exc}"}, None)
                        ] * len(pack)
        wall_s = time.monotonic() - t0
        records = []
        for spec, (fields, artifacts) in zip(pack, outcomes):
            record = _base_record(spec, device, started, wall_s)
            record.update(fields)
            store.write(record, artifacts)
            records.append(record)
        if len(pack) == 1:
            progress.end(_outcome(records[0]))
        else:
            progress.end("; ".join(f"{spec.method} seed={spec.seed} {_outcome(record)}"
                                   for spec, record in zip(pack, records)))
        written.extend(records)
    return written


def describe_plan(specs: list[RunSpec], todo: list[RunSpec]) -> str:
    """One line per run for ``--dry-run``, marking which would be trained."""
    todo_ids = {s.run_id for s in todo}
    lines = []
    for spec in specs:
        mark = "run " if spec.run_id in todo_ids else "done"
        lines.append(f"{mark} {spec.run_id} {spec.describe()} epochs={spec.epochs}")
    return "\n".join(lines)
