"""Train the pending runs of a grid and publish one record per run.

Resume is by run id: a run whose record says ``ok`` is done and skipped; a ``failed`` or
``diverged`` one is re-tried only when asked (``--rerun-failed``); ``--force`` re-trains all.
A run that raises is recorded as ``failed`` with its error and the grid goes on; only an
interrupt (Ctrl-C) stops the grid, leaving every finished record in place.

A two-stage run (:mod:`ltbench.stages`) first makes sure its stage-1 run is published with its
final model, training it (as a run of its own) when it is not. Every ok run is also scored on
the 11 shifted test sets (:mod:`ltbench.shifted`), stored as its ``evals`` artifact.
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
from .shifted import evaluate_shifted
from .spec import RunSpec, canonical_json, format_imb
from .stages import keeps_final_model, load_stage1_model, stage1_ready, stage1_spec
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
        # Optional keys (val_per_class) are absent from runs that never set them.
        options = {k: spec.hparams.get(k) for k in dataset.data_keys}
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


def train_specs(specs: list[RunSpec], data, device, progress: RunProgress | None = None,
                store: ResultStore | None = None):
    """Train compatible runs (one pack) on loaded data: one ``(record fields, artifacts)`` per
    run, the artifacts being its per-epoch ``curves``, its shifted-test ``evals`` and whatever
    its method produced; raises on errors. A two-stage run trains alone: it loads its
    published stage-1 model from ``store``. A run whose method is some method's stage 1 saves
    its final model there."""
    import torch

    from .engine.train import PackMember, train, train_pack

    counts = torch.tensor(data.class_counts, dtype=torch.float64, device=device)
    methods = [registry.load("method", spec.method)(counts, spec.hparams) for spec in specs]
    stage1 = stage1_spec(specs[0])
    if stage1 is None:
        results = train_pack(data, [PackMember(method, spec.hparams, spec.seed)
                                    for method, spec in zip(methods, specs)], device, progress)
    else:
        if len(specs) != 1:
            raise ValueError("a two-stage run trains alone")
        if store is None or not stage1_ready(store, stage1):
            raise RuntimeError(f"stage-1 run {stage1.run_id} ({stage1.describe()}) is not "
                               f"published with its model")
        method, seed = methods[0], specs[0].seed
        backbone = load_stage1_model(store, stage1, data.num_classes).to(device)
        model = method.build_classifier(backbone, data, device, seed)
        results = [train(data, method, method.stage2_hparams(), seed, device, progress,
                         model=model)]
    outcomes = []
    for spec, method, result in zip(specs, methods, results):
        fields: dict[str, Any] = {"status": result.status, "error": result.error,
                                  "train_class_counts": list(data.class_counts),
                                  "selection_rule": method.selection_rule,
                                  "stage1_run_id": stage1.run_id if stage1 is not None else None}
        artifacts = {"curves": result.curves, **method.artifacts()}
        if result.status == "ok":  # a diverged run has no final accuracy to report
            fields.update(summarize(result.per_class_correct, result.per_class_total,
                                    data.class_counts))
            fields["top1_err_best_epoch"] = 100.0 - result.best_top1_acc
            fields["best_epoch"] = result.best_epoch
            artifacts["evals"] = evaluate_shifted(spec.run_id, result.model, data, spec.hparams,
                                                  method.uses_target_prior, device)
            if store is not None and keeps_final_model(spec.method):
                store.save_model(spec.run_id, result.model)  # before the record: its commit
        outcomes.append((fields, artifacts))
    return outcomes


def train_one(spec: RunSpec, data, device, progress: RunProgress | None = None,
              store: ResultStore | None = None):
    """:func:`train_specs` of one run."""
    return train_specs([spec], data, device, progress, store)[0]


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


def _train_and_publish(pack: list[RunSpec], label: str, store: ResultStore, cache: _DataCache,
                       device, stream: TextIO) -> list[dict[str, Any]]:
    """Train one pack, publish every run's record (failed ones too) and return them."""
    progress = RunProgress(label, stream)
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    try:
        data = cache.get(pack[0])
        outcomes = train_specs(pack, data, device, progress, store)
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
    return records


def run_grid(specs: list[RunSpec], store: ResultStore, data_root: Path, device,
             stream: TextIO | None = None, pack_size: int = 1) -> list[dict[str, Any]]:
    """Train ``specs`` and return their records, in grid order.

    Runs are trained in packs of up to ``pack_size`` compatible runs
    (:func:`ltbench.packing.plan_packs`; 1: one run after the other, in grid order); every
    run's record is written as soon as its pack finishes (``wall_s`` is the pack's). Two-stage
    runs (:mod:`ltbench.stages`) train alone after all the others, so the stage-1 runs of the
    grid are published first; a stage-1 run that is neither in the store nor in ``specs`` is
    trained right before its first dependent (published like any run, not returned), and a
    stage 1 that failed in this call is not tried again.
    """
    stream = stream if stream is not None else sys.stderr
    cache = _DataCache(Path(data_root))
    done: dict[str, dict[str, Any]] = {}
    position = 1
    for pack in plan_packs([s for s in specs if stage1_spec(s) is None], pack_size):
        for record in _train_and_publish(pack, _pack_label(pack, position, len(specs)), store,
                                         cache, device, stream):
            done[record["run_id"]] = record
        position += len(pack)
    for spec in (s for s in specs if stage1_spec(s) is not None):
        label = f"[{position}/{len(specs)}]"
        stage1 = stage1_spec(spec)
        if stage1.run_id not in done and not stage1_ready(store, stage1):
            done[stage1.run_id], = _train_and_publish(
                [stage1], f"{label} stage 1: {stage1.describe()}", store, cache, device, stream)
        if spec.run_id not in done:
            done[spec.run_id], = _train_and_publish([spec], f"{label} {spec.describe()}", store,
                                                    cache, device, stream)
        position += 1
    return [done[spec.run_id] for spec in specs]


def describe_plan(specs: list[RunSpec], todo: list[RunSpec]) -> str:
    """One line per run for ``--dry-run``, marking which would be trained."""
    todo_ids = {s.run_id for s in todo}
    lines = []
    for spec in specs:
        mark = "run " if spec.run_id in todo_ids else "done"
        lines.append(f"{mark} {spec.run_id} {spec.describe()} epochs={spec.epochs}")
    return "\n".join(lines)
