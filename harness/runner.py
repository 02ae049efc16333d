"""Train the pending runs of a grid and publish one record per run.

Resume is by run id: a run whose record says ``ok`` is done and skipped; a ``failed`` or
``diverged`` one is re-tried only when asked (``--rerun-failed``); ``--force`` re-trains all.
A run that raises is recorded as ``failed`` with its error and the grid goes on; only an
interrupt (Ctrl-C) stops the grid, leaving every finished record in place.

A two-stage run (:mod:`ltbench.stages`) first makes sure its stage-1 run is published with its
final model, training it (as a run of its own) when it is not. Every ok run is also scored on
the 11 shifted test sets (:mod:`ltbench.shifted`), stored as its ``evals`` artifact.

Several ``ltbench run`` processes (or launcher workers) may share one store: each run is
claimed first (:mod:`ltbench.claims`) and skipped when another live process holds it or
published it meanwhile. A run checkpoints while it trains (:mod:`ltbench.engine.checkpoint`)
and a restarted run continues from its checkpoint.
"""

from __future__ import annotations

import contextlib
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
from .packing import pack_id, plan_packs
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


def _base_record(spec: RunSpec, device, numerics, started: datetime,
                 wall_s: float) -> dict[str, Any]:
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
        "precision": numerics.precision_name,
        "memory_format": numerics.memory_format_name,
        "deterministic": numerics.deterministic,
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "started_utc": started,
        "finished_utc": datetime.now(timezone.utc),
    }


def train_specs(specs: list[RunSpec], data, device, progress: RunProgress | None = None,
                store: ResultStore | None = None, checkpoint=None, numerics=None):
    """Train compatible runs (one pack) on loaded data: one ``(record fields, artifacts)`` per
    run, the artifacts being its per-epoch ``curves``, its shifted-test ``evals`` and whatever
    its method produced; raises on errors. A two-stage run trains alone: it loads its
    published stage-1 model from ``store``. A run whose method is some method's stage 1 saves
    its final model there. ``checkpoint``: the pack's
    :class:`~ltbench.engine.checkpoint.ResumeCheckpoint` to resume from and save to.
    ``numerics``: the :class:`~ltbench.engine.steps.Numerics` to train and evaluate with
    (default: the device's automatic ones)."""
    import torch

    from .engine.steps import Numerics
    from .engine.train import PackMember, train, train_pack

    numerics = numerics if numerics is not None else Numerics.for_device(device)

    counts = torch.tensor(data.class_counts, dtype=torch.float64, device=device)
    methods = [registry.load("method", spec.method)(counts, spec.hparams) for spec in specs]
    stage1 = stage1_spec(specs[0])
    if stage1 is None:
        results = train_pack(data, [PackMember(method, spec.hparams, spec.seed)
                                    for method, spec in zip(methods, specs)], device, progress,
                             numerics=numerics, checkpoint=checkpoint)
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
                         model=model, checkpoint=checkpoint, numerics=numerics)]
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
                                                  method.uses_target_prior, device,
                                                  numerics.precision())
            if store is not None and keeps_final_model(spec.method):
                store.save_model(spec.run_id, result.model)  # before the record: its commit
        outcomes.append((fields, artifacts))
    return outcomes


def train_one(spec: RunSpec, data, device, progress: RunProgress | None = None,
              store: ResultStore | None = None, checkpoint=None, numerics=None):
    """:func:`train_specs` of one run."""
    return train_specs([spec], data, device, progress, store, checkpoint, numerics)[0]


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
                       device, numerics, stream: TextIO, checkpoint_every: int | None,
                       planned_at: float) -> list[dict[str, Any]]:
    """Claim the runs of ``pack``, train those this process holds as one pack (resuming from
    its checkpoint) and publish their records (failed ones too); return the records written.

    A run claimed by another live process, or published since ``planned_at``, is left out;
    a run whose claim was taken over while training is not published (its new owner does)."""
    from .engine.checkpoint import DEFAULT_EVERY, ResumeCheckpoint, resume_path

    progress = RunProgress(label, stream)
    with contextlib.ExitStack() as held:
        mine = []
        for spec in pack:
            claim = claims.acquire(store.root, spec.run_id)
            if claim is None:
                stream.write(f"{label}: {spec.describe()} skipped: claimed by "
                             f"{claims.describe_owner(store.root, spec.run_id)}\n")
                continue
            held.enter_context(claim)
            if store.published_since(spec.run_id, planned_at):
                stream.write(f"{label}: {spec.describe()} skipped: published by another "
                             f"process meanwhile\n")
                continue
            mine.append((spec, claim))
        if not mine:
            progress.end("skipped")
            return []
        pack = [spec for spec, _ in mine]
        key = pack_id(pack)
        checkpoint = ResumeCheckpoint(resume_path(store.root, key), key,
                                      DEFAULT_EVERY if checkpoint_every is None
                                      else checkpoint_every)
        started = datetime.now(timezone.utc)
        t0 = time.monotonic()
        try:
            data = cache.get(pack[0])
            outcomes = train_specs(pack, data, device, progress, store, checkpoint, numerics)
        except Exception as exc:  # one broken pack (an OOM included) must not stop the grid
            traceback.print_exc(file=stream)
            outcomes = [({"status": "failed", "error": f"{type(exc).__name__}: {exc}"}, None)
                        ] * len(pack)
        if outcomes[0][0]["status"] == "failed":  # here: the traceback held the memory
            _release_device_memory(device)
        wall_s = time.monotonic() - t0
        records, notes = [], []
        for (spec, claim), (fields, artifacts) in zip(mine, outcomes):
            record = _base_record(spec, device, numerics, started, wall_s)
            record.update(fields)
            if not claim.held():  # its new owner trains and publishes it
                notes.append("discarded: the claim was taken over while training")
                continue
            store.write(record, artifacts)
            records.append(record)
            notes.append(_outcome(record))
        if len(records) == len(mine):
            checkpoint.discard()
    if len(pack) == 1:
        progress.end(notes[0])
    else:
        progress.end("; ".join(f"{spec.method} seed={spec.seed} {note}"
                               for spec, note in zip(pack, notes)))
    return records


def run_grid(specs: list[RunSpec], store: ResultStore, data_root: Path, device,
             stream: TextIO | None = None, pack_size: int = 1,
             checkpoint_every: int | None = None,
             planned_at: float | None = None, numerics=None) -> list[dict[str, Any]]:
    """Train ``specs``; return the records this process wrote, in grid order.

    Runs are trained in packs of up to ``pack_size`` compatible runs
    (:func:`ltbench.packing.plan_packs`; 1: one run after the other, in grid order); every
    run's record is written as soon as its pack finishes (``wall_s`` is the pack's). Two-stage
    runs (:mod:`ltbench.stages`) train alone after all the others, so the stage-1 runs of the
    grid are published first; a stage-1 run that is neither in the store nor in ``specs`` is
    trained right before its first dependent (published like any run, not returned), and a
    stage 1 that failed in this call is not tried again.

    Every run is trained under its claim (:mod:`ltbench.claims`). ``checkpoint_every``: epochs
    between resume checkpoints (default :data:`~ltbench.engine.checkpoint.DEFAULT_EVERY`; 0:
    only on SIGTERM / SIGUSR1). ``planned_at``: the ``time.time()`` taken before the store was
    read to pick ``specs`` (default: now); a run published at or after it was trained by
    another process meanwhile and is skipped. ``numerics``: how every run computes
    (:class:`~ltbench.engine.steps.Numerics`; default: the device's automatic precision),
    recorded in each record's ``precision``, ``memory_format`` and ``deterministic``.
    """
    from .engine.steps import Numerics

    stream = stream if stream is not None else sys.stderr
    numerics = numerics if numerics is not None else Numerics.for_device(device)
    cache = _DataCache(Path(data_root))
    planned_at = time.time() if planned_at is None else planned_at
    done: dict[str, dict[str, Any]] = {}
    tried: set[str] = set()

    def train_and_publish(pack: list[RunSpec], label: str) -> None:
        tried.update(spec.run_id for spec in pack)
        for record in _train_and_publish(pack, label, store, cache, device, numerics, stream,
                                         checkpoint_every, planned_at):
            done[record["run_id"]] = record

    position = 1
    for pack in plan_packs([s for s in specs if stage1_spec(s) is None], pack_size):
        train_and_publish(pack, _pack_label(pack, position, len(specs)))
        position += len(pack)
    for spec in (s for s in specs if stage1_spec(s) is not None):
        label = f"[{position}/{len(specs)}]"
        stage1 = stage1_spec(spec)
        if stage1.run_id not in tried and not stage1_ready(store, stage1):
            train_and_publish([stage1], f"{label} stage 1: {stage1.describe()}")
        if spec.run_id not in tried:
            train_and_publish([spec], f"{label} {spec.describe()}")
        position += 1
    return [done[spec.run_id] for spec in specs if spec.run_id in done]


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
