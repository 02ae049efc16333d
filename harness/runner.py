"""Train the pending runs of a grid and publish one record per run.

Resume is by run id: a run whose record says ``ok`` is done and skipped; a ``failed`` or
``diverged`` one is re-tried only when asked (``--rerun-failed``); ``--force`` re-trains all.
A run that raises is recorded as ``failed`` with its error and the grid goes on; only an
interrupt (Ctrl-C) stops the grid, leaving every finished record in place.

Several ``ltbench run`` processes (or launcher workers) may share one store: each run is
claimed first (:mod:`ltbench.claims`) and skipped when another live process holds it or
published it meanwhile. A run checkpoints while it trains (:mod:`ltbench.engine.checkpoint`)
and a restarted run continues from its checkpoint.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from . import claims, registry
from .envinfo import device_name, git_commit
from .evaluate import summarize
from .progress import RunProgress
from .spec import RunSpec, canonical_json
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


def train_one(spec: RunSpec, data, device, progress: RunProgress | None = None,
              checkpoint=None):
    """Train one run on loaded data: ``(record fields, artifacts)``, the artifacts being the
    per-epoch ``curves`` and whatever the method produced; raises on errors. ``checkpoint``: a
    :class:`~ltbench.engine.checkpoint.ResumeCheckpoint` to resume from and save to."""
    import torch

    from .engine.train import train

    method_cls = registry.load("method", spec.method)
    counts = torch.tensor(data.class_counts, dtype=torch.float64, device=device)
    method = method_cls(counts, spec.hparams)
    result = train(data, method, spec.hparams, spec.seed, device, progress, checkpoint)
    fields: dict[str, Any] = {"status": result.status, "error": result.error,
                              "train_class_counts": list(data.class_counts)}
    if result.status == "ok":  # a diverged run has no final accuracy to report
        fields.update(summarize(result.per_class_correct, result.per_class_total,
                                data.class_counts))
        fields["top1_err_best_epoch"] = 100.0 - result.best_top1_acc
        fields["best_epoch"] = result.best_epoch
    return fields, {"curves": result.curves, **method.artifacts()}


def run_grid(specs: list[RunSpec], store: ResultStore, data_root: Path, device,
             stream: TextIO | None = None, checkpoint_every: int | None = None,
             planned_at: float | None = None) -> list[dict[str, Any]]:
    """Train ``specs`` one after the other, each under its claim; returns the records this
    process wrote, in order.

    ``checkpoint_every``: epochs between resume checkpoints (default
    :data:`~ltbench.engine.checkpoint.DEFAULT_EVERY`; 0: only on SIGTERM / SIGUSR1).
    ``planned_at``: the ``time.time()`` taken before the store was read to pick ``specs``
    (default: now); a run whose record was published at or after it was trained by another
    process meanwhile and is skipped."""
    stream = stream if stream is not None else sys.stderr
    cache = _DataCache(Path(data_root))
    planned_at = time.time() if planned_at is None else planned_at
    written = []
    for k, spec in enumerate(specs, 1):
        progress = RunProgress(f"[{k}/{len(specs)}] {spec.describe()}", stream)
        claim = claims.acquire(store.root, spec.run_id)
        if claim is None:
            progress.end(f"skipped: claimed by {claims.describe_owner(store.root, spec.run_id)}")
            continue
        with claim:
            if store.published_since(spec.run_id, planned_at):
                progress.end("skipped: published by another process meanwhile")
                continue
            record = _train_and_publish(spec, store, cache, device, progress, stream, claim,
                                        checkpoint_every)
        if record is not None:
            written.append(record)
    return written


def _train_and_publish(spec: RunSpec, store: ResultStore, cache: _DataCache, device,
                       progress: RunProgress, stream: TextIO, claim: claims.Claim,
                       checkpoint_every: int | None) -> dict[str, Any] | None:
    """Train one claimed run (resuming from its checkpoint) and publish its record, unless
    the claim was lost meanwhile (then None: the new owner publishes)."""
    from .engine.checkpoint import DEFAULT_EVERY, ResumeCheckpoint, resume_path

    checkpoint = ResumeCheckpoint(resume_path(store.root, spec.run_id), spec.run_id,
                                  DEFAULT_EVERY if checkpoint_every is None else checkpoint_every)
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    artifacts = None
    try:
        data = cache.get(spec)
        fields, artifacts = train_one(spec, data, device, progress, checkpoint)
    except Exception as exc:  # one broken run (an OOM included) must not stop a grid of hundreds
        traceback.print_exc(file=stream)
        fields = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    if fields["status"] == "failed":  # here, not in the handler: the traceback held the memory
        _release_device_memory(device)
    record = _base_record(spec, device, started, time.monotonic() - t0)
    record.update(fields)
    if not claim.held():
        progress.end("discarded: the claim was taken over while training")
        return None
    store.write(record, artifacts)
    checkpoint.discard()
    outcome = record["status"]
    if outcome == "ok":
        outcome += f", top-1 error {record['top1_err']:.2f}%"
    elif record["error"]:
        outcome += f": {record['error']}"
    progress.end(outcome)
    return record


def _release_device_memory(device) -> None:
    """After a failed run (an out-of-memory one above all), hand its cached CUDA blocks back
    so the next run of the grid starts from an empty device."""
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.empty_cache()


def describe_plan(specs: list[RunSpec], todo: list[RunSpec]) -> str:
    """One line per run for ``--dry-run``, marking which would be trained."""
    todo_ids = {s.run_id for s in todo}
    lines = []
    for spec in specs:
        mark = "run " if spec.run_id in todo_ids else "done"
        lines.append(f"{mark} {spec.run_id} {spec.describe()} epochs={spec.epochs}")
    return "\n".join(lines)
