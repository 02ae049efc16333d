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
from .progress import RunProgress
from .shifted import evaluate_shifted
from .spec import RunSpec, canonical_json
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


def train_one(spec: RunSpec, data, device, progress: RunProgress | None = None,
              store: ResultStore | None = None):
    """Train one run on loaded data: ``(record fields, artifacts)``, the artifacts being the
    per-epoch ``curves``, the shifted-test ``evals`` and whatever the method produced; raises
    on errors. A two-stage run loads its published stage-1 model from ``store``, and a run
    whose method is some method's stage 1 saves its final model there."""
    import torch

    from .engine.train import train

    method_cls = registry.load("method", spec.method)
    counts = torch.tensor(data.class_counts, dtype=torch.float64, device=device)
    method = method_cls(counts, spec.hparams)
    stage1 = stage1_spec(spec)
    if stage1 is None:
        result = train(data, method, spec.hparams, spec.seed, device, progress)
    else:
        if store is None or not stage1_ready(store, stage1):
            raise RuntimeError(f"stage-1 run {stage1.run_id} ({stage1.describe()}) is not "
                               f"published with its model")
        backbone = load_stage1_model(store, stage1, data.num_classes).to(device)
        model = method.build_classifier(backbone, data, device, spec.seed)
        result = train(data, method, method.stage2_hparams(), spec.seed, device, progress,
                       model=model)
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
            store.save_model(spec.run_id, result.model)  # before the record: its commit point
    return fields, artifacts


def _run_and_publish(spec: RunSpec, label: str, store: ResultStore, cache: _DataCache,
                     device, stream: TextIO) -> dict[str, Any]:
    """Train one run, publish its record (failed ones too) and return it."""
    progress = RunProgress(f"{label} {spec.describe()}", stream)
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    artifacts = None
    try:
        data = cache.get(spec)
        fields, artifacts = train_one(spec, data, device, progress, store)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one broken run must not stop a grid of hundreds
        traceback.print_exc(file=stream)
        fields = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    record = _base_record(spec, device, started, time.monotonic() - t0)
    record.update(fields)
    store.write(record, artifacts)
    outcome = record["status"]
    if outcome == "ok":
        outcome += f", top-1 error {record['top1_err']:.2f}%"
    elif record["error"]:
        outcome += f": {record['error']}"
    progress.end(outcome)
    return record


def run_grid(specs: list[RunSpec], store: ResultStore, data_root: Path, device,
             stream: TextIO | None = None) -> list[dict[str, Any]]:
    """Train ``specs`` one after the other; returns their records, in order.

    The stage-1 run of a two-stage spec is trained first when the store lacks it (published
    like any run, not returned); a spec already trained that way in this call is not trained
    again, its record is returned.
    """
    stream = stream if stream is not None else sys.stderr
    cache = _DataCache(Path(data_root))
    trained: dict[str, dict[str, Any]] = {}
    written = []
    for k, spec in enumerate(specs, 1):
        label = f"[{k}/{len(specs)}]"
        stage1 = stage1_spec(spec)
        # A stage 1 tried in this call is not tried again when it failed.
        if (stage1 is not None and stage1.run_id not in trained
                and not stage1_ready(store, stage1)):
            trained[stage1.run_id] = _run_and_publish(stage1, f"{label} stage 1:", store,
                                                      cache, device, stream)
        if spec.run_id not in trained:
            trained[spec.run_id] = _run_and_publish(spec, label, store, cache, device, stream)
        written.append(trained[spec.run_id])
    return written


def describe_plan(specs: list[RunSpec], todo: list[RunSpec]) -> str:
    """One line per run for ``--dry-run``, marking which would be trained."""
    todo_ids = {s.run_id for s in todo}
    lines = []
    for spec in specs:
        mark = "run " if spec.run_id in todo_ids else "done"
        lines.append(f"{mark} {spec.run_id} {spec.describe()} epochs={spec.epochs}")
    return "\n".join(lines)
