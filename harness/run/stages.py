"""Two-stage runs: the stage-1 run a method starts from, and its final model in the store.

A method with ``stage1 = "ce"`` (:class:`ltbench.methods.two_stage.TwoStageMethod`) starts from
the final model of the ``ce`` run with the same dataset, imbalance factor, profile, split
seed, seed and stage-1 hyper-parameters: all of the run's hyper-parameters except the
method's own ``defaults`` (its ``stage2_*`` knobs, τ). That run is an ordinary run of the
store: trained once, by the first run of the grid that needs it (or by the grid itself), its
final model published as ``models/<run_id>.pt`` (:meth:`ResultStore.save_model`), and reused
by every later stage-2 run, so ``--methods crt,lws,tau-norm,ncm`` trains one ``ce`` backbone
per (dataset, imbalance factor, seed).
"""

from __future__ import annotations


from .. import registry
from ..errors import BadInput
from ..spec import RunSpec
from ..store.result_store import ResultStore


def stage1_spec(spec: RunSpec) -> RunSpec | None:
    """The run ``spec``'s method starts from, or None for a single-stage method."""
    method_cls = registry.load("method", spec.method)
    if method_cls.stage1 is None:
        return None
    hparams = {k: v for k, v in spec.hparams.items() if k not in method_cls.defaults}
    return RunSpec(method_cls.stage1, spec.dataset, spec.imb_factor, spec.profile,
                   spec.split_seed, spec.seed, hparams)


def with_stage1(specs: list[RunSpec]) -> list[RunSpec]:
    """``specs`` with the stage-1 run of every two-stage spec added (once) right before its
    first dependent, unless it is already in ``specs`` earlier; so plans and counts show
    every run a grid trains."""
    seen = {spec.run_id for spec in specs}
    planned: list[RunSpec] = []
    for spec in specs:
        stage1 = stage1_spec(spec)
        if stage1 is not None and stage1.run_id not in seen:
            planned.append(stage1)
            seen.add(stage1.run_id)
        planned.append(spec)
    return planned


def keeps_final_model(method: str) -> bool:
    """Whether some registered method starts from runs of ``method`` (their final models are
    then kept in the store). A plugin that fails to import starts from nothing here: it cannot
    run in this process (``ltbench list`` shows its error). Read through the registry's own
    caches, so :func:`ltbench.registry.refresh` applies here too."""
    return any(_stage1_of(name) == method for name in registry.plugins("method"))


def _stage1_of(name: str) -> str | None:
    try:
        return registry.load("method", name).stage1
    except BadInput:
        return None


def stage1_ready(store: ResultStore, stage1: RunSpec) -> bool:
    """Whether ``stage1`` is published ``ok`` with its final model."""
    return store.status(stage1.run_id) == "ok" and store.has_model(stage1.run_id)


def load_stage1_model(store: ResultStore, stage1: RunSpec, num_classes: int):
    """The final model of the published run ``stage1``, on the CPU."""
    import torch

    from ..engine.models import build_backbone

    head = registry.load("method", stage1.method).head
    # Every weight is overwritten by the saved state; the generator only fills the shell.
    shell = build_backbone(stage1.hparams["backbone"], num_classes, head,
                           torch.Generator().manual_seed(0))
    return store.load_model(stage1.run_id, shell)
