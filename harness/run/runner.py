"""Train the pending runs of a grid and publish one record per run.

Resume is by run id: a run whose record says ``ok`` is done and skipped; a ``failed`` or
``diverged`` one is re-tried only when asked (``--rerun-failed``); ``--force`` re-trains all.
A run that raises is recorded as ``failed`` with its error and the grid goes on; only an
interrupt (Ctrl-C) stops the grid, leaving every finished record in place. A pack of several
runs that runs out of device memory is trained again in halves (down to lone runs), and the
grid's later packs train in chunks no larger than the half that was tried last.

The store failing a write is not the run's failure: a results folder out of space (or over
quota, remounted read-only, or with a folder replaced by a file) stops the grid with
:class:`StoreFailed` (one ``Error:`` line, exit 2), and the run that could not be written is
left unpublished (its last resume checkpoint kept), so a rerun of the same command trains it.

A two-stage run (:mod:`ltbench.run.stages`) first makes sure its stage-1 run is published with its
final model, training it (as a run of its own) when it is not. Every ok run is also scored on
the 11 shifted test sets (:mod:`ltbench.metrics.shifted`), stored as its ``evals`` artifact.

Publish first, optional artifacts after: a trained run's record (with its curves and its
method's artifacts) is published as soon as its pack finishes; then its ``evals`` and, for a
stage-1 run, its final model are stored. A failure there never fails the run: the record is
rewritten with the reason in ``artifact_error`` (a stage-1 run without its model is not
:func:`~ltbench.run.stages.stage1_ready`, so its dependents in the same grid fail saying so, and a
later grid trains it again).

Several ``ltbench run`` processes (or launcher workers) may share one store: each run is
claimed first (:mod:`ltbench.run.claims`) and skipped when another live process holds it or
published it meanwhile. A run checkpoints while it trains (:mod:`ltbench.engine.checkpoint`)
and a restarted run continues from its checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from .. import registry
from ..engine.progress import RunProgress
from ..envinfo import device_name, git_commit
from ..errors import BadInput
from ..metrics.calibration import expected_calibration_error
from ..metrics.headline import summarize
from ..metrics.shifted import evaluate_shifted
from ..spec import RunSpec, canonical_json, format_imb
from ..store.result_store import ResultStore
from . import claims
from .packing import pack_id, plan_packs
from .stages import keeps_final_model, load_stage1_model, stage1_ready, stage1_spec

RETRYABLE = ("failed", "diverged")

#: ``errno`` values of a file system that takes no more data: out of space, over quota, a file
#: over the size limit, remounted read-only.
NO_MORE_DATA = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


class StoreFailed(BadInput):
    """The results store refused a write while a grid ran: the grid stops (one ``Error:``
    line, exit 2) and the runs not yet published stay pending."""

    def __init__(self, store: ResultStore, exc: OSError, unrecorded: str):
        super().__init__(f"results folder {store.root} refused a write "
                         f"({exc.strerror or exc}): the grid stopped; {unrecorded}; fix the "
                         f"folder and rerun the same command")


def _no_more_data(exc: BaseException) -> OSError | None:
    """The :data:`NO_MORE_DATA` OSError behind ``exc``: itself, or one it was raised from or
    while handling (``torch.save`` reports a failed write as a RuntimeError raised then)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in NO_MORE_DATA:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _not_recorded(spec: RunSpec) -> str:
    return f"{spec.describe()} and the runs after it are not recorded"


def _write(store: ResultStore, spec: RunSpec, write, *args):
    """``write(*args)``, a write into ``store`` for ``spec``, and what it returns; any OSError
    is :class:`StoreFailed`."""
    try:
        return write(*args)
    except OSError as exc:
        raise StoreFailed(store, exc, _not_recorded(spec)) from exc


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


def check_store_writable(store: ResultStore) -> None:
    """:class:`~ltbench.errors.BadInput` unless every folder a grid writes in ``store`` can be
    written (:func:`ltbench.store.writable.check_writable`), so that a read-only or blocked store
    fails before anything trains: the records and curves, the claims, resume checkpoints,
    launch spec files, stage-1 models and shifted-test evals, and the artifact folders already
    there (one a method creates anew needs only a writable root, checked first)."""
    from ..engine.checkpoint import resume_path
    from ..store.integrity import NOT_ARTIFACTS
    from ..store.writable import check_writable
    from .launchers import spec_folder

    written = [store.root, store.runs_dir, store.curves_dir, store.root / "evals",
               claims.claims_dir(store.root), resume_path(store.root, "any").parent,
               spec_folder(store.root), store.model_path("any").parent]
    if store.root.is_dir():
        written += sorted(p for p in store.root.iterdir()
                          if p.is_dir() and p.name not in NOT_ARTIFACTS and p not in written)
    for folder in written:
        check_writable(folder, "results folder")


def resolve_device(name: str):
    """``auto`` → CUDA when available, else CPU; asking for CUDA without one is bad input."""
    import torch

    from ..errors import BadInput

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


def _base_record(spec: RunSpec, device, numerics, started: datetime, wall_s: float,
                 pack_size: int) -> dict[str, Any]:
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
        "ece": float("nan"),
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
        "compile_mode": numerics.compile_mode,
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "started_utc": started,
        "finished_utc": datetime.now(timezone.utc),
        "artifact_error": None,
        "pack_size": pack_size,
        "method_family": registry.load("method", spec.method).family,
    }


class Trained(NamedTuple):
    """One run trained by :func:`train_runs`."""

    fields: dict[str, Any]  # its record's columns from training
    artifacts: dict[str, Any]  # published with its record: ``curves`` and its method's own
    model: Any  # its final model when ``ok`` (for :func:`store_optional_artifacts`), else None
    resumed_wall_s: float = 0.0  # seconds spent on it before this process resumed it


def train_runs(specs: list[RunSpec], data, device, progress: RunProgress | None = None,
               store: ResultStore | None = None, checkpoint=None,
               numerics=None) -> list[Trained]:
    """Train compatible runs (one pack) on loaded data: one :class:`Trained` per run; raises on
    errors. A two-stage run trains alone: it loads its published stage-1 model from
    ``store``. ``checkpoint``: the pack's :class:`~ltbench.engine.checkpoint.ResumeCheckpoint`
    to resume from and save to. ``numerics``: the :class:`~ltbench.engine.steps.Numerics` to
    train and evaluate with (default: the device's automatic ones)."""
    import torch

    from ..engine.steps import Numerics
    from ..engine.train import PackMember, train_alone, train_pack

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
                               f"published with its model (--rerun-failed trains it again)")
        method, seed = methods[0], specs[0].seed
        backbone = load_stage1_model(store, stage1, data.num_classes).to(device)
        model = method.build_classifier(backbone, data, device, seed)
        results = [train_alone(data, method, method.stage2_hparams(), seed, device, progress,
                               model=model, checkpoint=checkpoint, numerics=numerics)]
    trained = []
    for spec, method, result in zip(specs, methods, results):
        fields: dict[str, Any] = {"status": result.status, "error": result.error,
                                  "train_class_counts": list(data.class_counts),
                                  "selection_rule": method.selection_rule,
                                  "stage1_run_id": stage1.run_id if stage1 is not None else None}
        # the run id in the file too, so curves join without their file names
        curves = result.curves.assign(run_id=spec.run_id)[["run_id", *result.curves.columns]]
        artifacts = {"curves": curves, **method.artifacts()}
        if result.status == "ok":  # a diverged run has no final accuracy to report
            fields.update(summarize(result.per_class_correct, result.per_class_total,
                                    data.class_counts))
            fields["ece"] = expected_calibration_error(result.calibration)
            fields["top1_err_best_epoch"] = 100.0 - result.best_top1_acc
            fields["best_epoch"] = result.best_epoch
        trained.append(Trained(fields, artifacts,
                               result.model if result.status == "ok" else None,
                               result.resumed_wall_s))
    return trained


def train_run(spec: RunSpec, data, device, progress: RunProgress | None = None,
              store: ResultStore | None = None, checkpoint=None, numerics=None) -> Trained:
    """:func:`train_runs` of one run."""
    return train_runs([spec], data, device, progress, store, checkpoint, numerics)[0]


def _reported(exc: Exception, stream: TextIO) -> OSError | None:
    """:func:`_no_more_data` of an optional artifact's failure ``exc``; the traceback of any
    other failure goes to ``stream`` (a full store is said once, by :class:`StoreFailed`)."""
    full = _no_more_data(exc)
    if full is None:
        traceback.print_exc(file=stream)
    return full


def store_optional_artifacts(spec: RunSpec, record: dict[str, Any], model, data, device,
                             numerics, store: ResultStore, stream: TextIO) -> None:
    """After the ok run ``spec``'s ``record`` is published: store its shifted-test ``evals``
    (:func:`~ltbench.metrics.shifted.evaluate_shifted` of its final ``model``, in the run's
    ``numerics``) and, when some method starts from runs of its method, the model itself
    (:mod:`ltbench.run.stages`). What failed (tracebacks to ``stream``, :func:`_reported`) is set
    as the record's ``artifact_error`` and the record published again; a model that could not
    be saved leaves no file behind, not even one of an earlier training of the run. A failure
    because the store takes no more data (:data:`NO_MORE_DATA`) then raises
    :class:`StoreFailed`: the next run could not be recorded either."""
    errors, full = [], None
    try:
        uses_target_prior = registry.load("method", spec.method).uses_target_prior
        store.write_artifact("evals", spec.run_id,
                             evaluate_shifted(spec.run_id, model, data, spec.hparams,
                                              uses_target_prior, device,
                                              numerics.precision()))
    except Exception as exc:
        full = full or _reported(exc, stream)
        errors.append(f"evals: {type(exc).__name__}: {exc}")
    if keeps_final_model(spec.method):
        try:
            store.save_model(spec.run_id, model)
        except Exception as exc:
            full = full or _reported(exc, stream)
            store.model_path(spec.run_id).unlink(missing_ok=True)
            errors.append(f"model: {type(exc).__name__}: {exc}")
    if errors:
        _release_device_memory(device)  # an out-of-memory evaluation must not starve the next
        record["artifact_error"] = "; ".join(errors)
        _write(store, spec, store.write, record)
    if full is not None:
        raise StoreFailed(store, full, f"{spec.describe()} is published without some of its "
                                       f"optional artifacts (its artifact_error says which); "
                                       f"the runs after it are not recorded")


def _outcome(record: dict[str, Any]) -> str:
    outcome = record["status"]
    if outcome == "ok":
        outcome += f", top-1 error {record['top1_err']:.2f}%"
        if record["artifact_error"]:
            outcome += f" (artifacts missing: {record['artifact_error']})"
    elif record["error"]:
        outcome += f": {record['error']}"
    return outcome


def _pack_label(pack: list[RunSpec], first: int, total: int) -> str:
    if len(pack) == 1:
        return f"[{first}/{total}] {pack[0].describe()}"
    members = ", ".join(f"{spec.method} seed={spec.seed}" for spec in pack)
    return (f"[{first}-{first + len(pack) - 1}/{total}] pack of {len(pack)}: "
            f"{pack[0].dataset} imb={format_imb(pack[0].imb_factor)} {members}")


@dataclass
class _PackLimit:
    """The most runs a grid still trains as one pack: a pack that ran out of device memory
    lowers it to that pack's larger half, so the grid's later packs train in chunks that small
    (under the claims of the pack as planned)."""

    size: int


@dataclass(frozen=True)
class _Checkpoints:
    """When a grid's packs take resume checkpoints: every ``every`` epochs (None: the
    default) and every ``every_steps`` training steps (:class:`ResumeCheckpoint
    <ltbench.engine.checkpoint.ResumeCheckpoint>`)."""

    every: int | None
    every_steps: int


def _is_out_of_memory(exc: Exception) -> bool:
    """CUDA's ``OutOfMemoryError``, or another allocator's RuntimeError saying so."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def _claim_and_train(pack: list[RunSpec], label: str, store: ResultStore, cache: _DataCache,
                     device, numerics, stream: TextIO, checkpoints: _Checkpoints,
                     planned_at: float, limit: _PackLimit) -> list[dict[str, Any]]:
    """Claim the runs of ``pack``, train those this process holds in packs of at most
    ``limit.size`` runs, in order, and publish their records (failed ones too); return the
    records written.

    A pack of several runs that runs out of device memory lowers ``limit.size`` to its larger
    half and is trained again that way (halving again while needed, down to lone runs, whose
    out-of-memory error is recorded as their failure). A run claimed by another live process,
    or published since ``planned_at``, is left out; a run whose claim was taken over while
    training is not published (its new owner does)."""
    with contextlib.ExitStack() as held:
        mine = []
        for spec in pack:
            claim = _write(store, spec, claims.acquire, store.root, spec.run_id)
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
            RunProgress(label, stream).end("skipped")
            return []
        records, rest = [], mine
        while rest:
            chunk, rest = rest[:limit.size], rest[limit.size:]
            part = label if len(chunk) == len(mine) else f"{label} part: " + ", ".join(
                f"{spec.method} seed={spec.seed}" for spec, _ in chunk)
            published = _train_and_publish_pack(chunk, part, store, cache, device, numerics,
                                                 stream, checkpoints)
            if published is None:  # out of memory: trained again in halves
                limit.size = min(limit.size, (len(chunk) + 1) // 2)
                rest = chunk + rest
            else:
                records += published
    return records


def _train_and_publish_pack(chunk: list, label: str, store: ResultStore, cache: _DataCache,
                            device, numerics, stream: TextIO,
                            checkpoints: _Checkpoints) -> list[dict[str, Any]] | None:
    """Train the claimed runs ``chunk`` as one pack (resuming from its checkpoint, keyed by
    its :func:`~ltbench.run.packing.pack_id`) and publish each: its record first, then its
    optional artifacts (:func:`store_optional_artifacts`); return the records written, or
    None when a pack of several runs ran out of device memory (nothing published)."""
    from ..engine.checkpoint import DEFAULT_EVERY, ResumeCheckpoint, resume_path

    pack = [spec for spec, _ in chunk]
    key = pack_id(pack)
    checkpoint = ResumeCheckpoint(resume_path(store.root, key), key,
                                  DEFAULT_EVERY if checkpoints.every is None
                                  else checkpoints.every, checkpoints.every_steps)
    progress = RunProgress(label, stream)
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    split = False
    try:
        data = cache.get(pack[0])
        trained = train_runs(pack, data, device, progress, store, checkpoint, numerics)
    except Exception as exc:  # one broken pack (an OOM included) must not stop the grid
        full = _no_more_data(exc)
        if full is not None:  # a checkpoint that did not fit: the store's failure, not theirs
            progress.end("not recorded: the results folder refused a write")
            raise StoreFailed(store, full, _not_recorded(pack[0])) from exc
        split = len(pack) > 1 and _is_out_of_memory(exc)
        if not split:
            traceback.print_exc(file=stream)
        failure = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        trained = [Trained(failure, None, None)] * len(pack)
    if trained[0].fields["status"] == "failed":  # here: the traceback held the memory
        _release_device_memory(device)
    if split:
        # Its halves are other packs (other ids, other checkpoints): this state is no use.
        checkpoint.discard()
        progress.end("out of device memory; training it again in halves")
        return None
    wall_s = time.monotonic() - t0
    records, notes = [], {}
    try:
        for (spec, claim), run in zip(chunk, trained):
            record = _base_record(spec, device, numerics, started,
                                  wall_s + run.resumed_wall_s, len(pack))
            record.update(run.fields)
            if not claim.held():  # its new owner trains and publishes it
                notes[spec.run_id] = "discarded: the claim was taken over while training"
                continue
            _write(store, spec, store.write, record, run.artifacts)
            records.append((spec, record, run.model))
    except StoreFailed:
        progress.end("not recorded: the results folder refused a write")
        if records:  # some are published: the pack is never planned again as it was
            checkpoint.discard()
        raise
    if len(records) == len(chunk):  # before the optional artifacts, which need the space
        checkpoint.discard()
    for spec, record, model in records:
        if model is not None:  # sets its artifact_error when one is missing
            progress.phase(f"evaluating {spec.method} seed={spec.seed} on the shifted test sets")
            store_optional_artifacts(spec, record, model, data, device, numerics, store,
                                     stream)
        notes[spec.run_id] = _outcome(record)
    if len(pack) == 1:
        progress.end(notes[pack[0].run_id])
    else:
        progress.end("; ".join(f"{spec.method} seed={spec.seed} {notes[spec.run_id]}"
                               for spec in pack))
    return [record for _, record, _ in records]


def run_grid(specs: list[RunSpec], store: ResultStore, data_root: Path, device,
             stream: TextIO | None = None, pack_size: int = 1,
             checkpoint_every: int | None = None, checkpoint_every_steps: int = 0,
             planned_at: float | None = None, numerics=None) -> list[dict[str, Any]]:
    """Train ``specs``; return the records this process wrote, in grid order.

    Runs are trained in packs of up to ``pack_size`` compatible runs
    (:func:`ltbench.run.packing.plan_packs`; 1: one run after the other, in grid order); every
    run's record is written as soon as its pack finishes (``wall_s`` is the pack's). Two-stage
    runs (:mod:`ltbench.run.stages`) train alone after all the others, so the stage-1 runs of the
    grid are published first; a stage-1 run that is neither in the store nor in ``specs`` is
    trained right before its first dependent (published like any run, not returned), and a
    stage 1 that failed in this call is not tried again.

    Every run is trained under its claim (:mod:`ltbench.run.claims`). ``checkpoint_every``: epochs
    between resume checkpoints (default :data:`~ltbench.engine.checkpoint.DEFAULT_EVERY`; 0:
    none); ``checkpoint_every_steps``: training steps between those within an epoch (0:
    none); either way a stop request (SIGTERM, SIGUSR1, Ctrl-C under
    :func:`~ltbench.engine.checkpoint.stop_on_signals`) checkpoints after the current batch.
    ``planned_at``: the ``time.time()`` taken before the store was
    read to pick ``specs`` (default: now); a run published at or after it was trained by
    another process meanwhile and is skipped. ``numerics``: how every run computes
    (:class:`~ltbench.engine.steps.Numerics`; default: the device's automatic precision),
    recorded in each record's ``precision``, ``memory_format`` and ``deterministic``.
    """
    from ..engine.steps import Numerics

    stream = stream if stream is not None else sys.stderr
    numerics = numerics if numerics is not None else Numerics.for_device(device)
    cache = _DataCache(Path(data_root))
    planned_at = time.time() if planned_at is None else planned_at
    done: dict[str, dict[str, Any]] = {}
    tried: set[str] = set()
    limit = _PackLimit(pack_size)
    checkpoints = _Checkpoints(checkpoint_every, checkpoint_every_steps)

    def claim_and_train(pack: list[RunSpec], label: str) -> None:
        tried.update(spec.run_id for spec in pack)
        for record in _claim_and_train(pack, label, store, cache, device, numerics, stream,
                                       checkpoints, planned_at, limit):
            done[record["run_id"]] = record

    position = 1
    for pack in plan_packs([s for s in specs if stage1_spec(s) is None], pack_size):
        claim_and_train(pack, _pack_label(pack, position, len(specs)))
        position += len(pack)
    for spec in (s for s in specs if stage1_spec(s) is not None):
        label = f"[{position}/{len(specs)}]"
        stage1 = stage1_spec(spec)
        if stage1.run_id not in tried and not stage1_ready(store, stage1):
            claim_and_train([stage1], f"{label} stage 1: {stage1.describe()}")
        if spec.run_id not in tried:
            claim_and_train([spec], f"{label} {spec.describe()}")
        position += 1
    return [done[spec.run_id] for spec in specs if spec.run_id in done]


def _release_device_memory(device) -> None:
    """After a failed run (an out-of-memory one above all), hand its cached CUDA blocks back
    so the next run of the grid starts from an empty device (collecting first the reference
    cycles that may still hold its tensors)."""
    if getattr(device, "type", None) == "cuda":
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def describe_plan(specs: list[RunSpec], todo: list[RunSpec]) -> str:
    """One line per run for ``--dry-run``, marking which would be trained."""
    todo_ids = {s.run_id for s in todo}
    lines = []
    for spec in specs:
        mark = "run " if spec.run_id in todo_ids else "done"
        lines.append(f"{mark} {spec.run_id} {spec.describe()} epochs={spec.epochs}")
    return "\n".join(lines)
