"""``ltbench run``: plan the grid, check data and store, train what is pending."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..integers import Integer
from .launch import launch_options
from .shared import data_root_option, results_option, set_option, subset_options


@click.command()
@click.option("--methods", default="all", show_default=True,
              help="'all' or comma-separated method names (see 'ltbench list').")
@click.option("--datasets", default="cifar10-lt", show_default=True,
              help="Comma-separated dataset names.")
@click.option("--imb", default=None, show_default="100, or the split's own factor for "
                                                   "datasets with fixed splits",
              help="Comma-separated imbalance factors n_max/n_min (>= 1), e.g. 200,100,50.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated training seeds.")
@click.option("--epochs", type=Integer(1), default=None,
              help="Epochs per run; epoch-valued defaults (warm-up, decays, DRW, meta-learning) "
                   "scale with it, keeping the schedule's shape where it is long enough.")
@subset_options
@data_root_option
@results_option
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@set_option
@click.option("--dry-run", is_flag=True, help="Print the runs and whether each is done; train "
                                              "nothing, write nothing.")
@click.option("--estimate/--no-estimate", default=True, show_default=True,
              help="Before training (and in --dry-run), time a few training steps here and "
                   "print what the runs to train will cost on this machine.")
@click.option("--force", is_flag=True, help="Re-train runs that are already in the store.")
@click.option("--rerun-failed", is_flag=True, help="Re-train failed and diverged runs.")
@click.option("--pack-size", default="auto", show_default=True,
              help="Most runs trained together as one grouped network: N >= 1, or 'auto' "
                   "(1 on CPU; on CUDA from the free GPU memory; 1 for Slurm and Ray). "
                   "A launcher worker trains one pack.")
@launch_options
def run(methods, datasets, imb, seeds, epochs, profile, split_seed, data_root, results, device,
        overrides, dry_run, estimate, force, rerun_failed, pack_size, launch):
    """Train every run of the grid datasets x imbalance factors x methods x seeds.

    Runs already in the results store are skipped, so re-running a command resumes it; a run
    that was interrupted continues from its last checkpoint. Ctrl-C checkpoints every run in
    training after its current batch and stops (exit code 3; 130 with a worker pool); in
    this process, a second Ctrl-C aborts at once, without a checkpoint.
    """
    from .. import registry
    from ..hparams import parse_overrides
    from ..run import grid
    from ..run.runner import check_store_writable, describe_plan, pending
    from ..run.stages import with_stage1
    from ..store.integrity import usable_statuses
    from ..store.result_store import ResultStore

    requested_pack_size = _pack_size(pack_size)
    specs = grid.expand(
        registry.parse_names("method", methods),
        registry.parse_names("dataset", datasets),
        grid.parse_imb_factors(imb) if imb is not None else None,
        grid.parse_seeds(seeds),
        profile=profile, split_seed=split_seed, overrides=parse_overrides(overrides),
        epochs=epochs, all_methods=methods.strip() == "all")
    notes = grid.schedule_notes(specs, parse_overrides(overrides))  # printed once all is valid
    specs = with_stage1(specs)  # two-stage methods' stage-1 runs are runs of the grid too
    launch.validate()
    store = ResultStore(results)
    planned_at = time.time()  # before reading: records published later are someone else's
    statuses = usable_statuses(store) if store.runs_dir.is_dir() else {}
    todo = pending(specs, statuses, force=force, rerun_failed=rerun_failed)
    if dry_run or launch.launcher == "dry":
        click.echo("".join(f"{note}\n" for note in notes), err=True, nl=False)
        if estimate and todo:
            _print_estimate(todo, device)
        click.echo(describe_plan(specs, todo))
        if launch.launcher == "dry":
            click.echo(launch.describe_commands(todo, results, data_root, device,
                                                requested_pack_size))
        click.echo(f"{len(specs)} runs in the grid, {len(specs) - len(todo)} done, "
                   f"{len(todo)} to train")
        return
    _check_data(todo, data_root)
    plan = launch.plan(device)
    launch.check_free_space(store.root)
    check_store_writable(store)
    store.ensure_writable()
    click.echo("".join(f"{note}\n" for note in notes), err=True, nl=False)
    if estimate and todo and plan.in_process():  # a pool's workers have the devices
        _print_estimate(todo, device)
    pack_size = plan.pack_size(requested_pack_size,
                               max((s.hparams["batch_size"] for s in todo), default=1))
    click.echo(f"{len(specs)} runs in the grid, {len(specs) - len(todo)} already done, "
               f"{len(todo)} to train {plan.where}"
               + f" in packs of up to {pack_size}", err=True)
    plan.run(todo, store, data_root, planned_at, pack_size)
    _print_summary(store, {s.run_id for s in specs})


def _check_data(todo, data_root: Path) -> None:
    """Every distinct data configuration of ``todo`` (dataset, subset, data options) must be
    servable from ``data_root`` (:meth:`Dataset.check <ltbench.api.Dataset.check>`),
    before anything is written."""
    from .. import registry
    from ..spec import canonical_json

    checked = set()
    for spec in todo:
        dataset = registry.load("dataset", spec.dataset)()
        subset = (spec.imb_factor, spec.profile, spec.split_seed)
        options = {key: spec.hparams.get(key) for key in dataset.data_keys}
        key = (spec.dataset, subset, canonical_json(options))
        if key not in checked:
            dataset.check(data_root, spec.hparams, subset)
            checked.add(key)


def _print_estimate(todo, device: str) -> None:
    """The plan's cost on this machine (:mod:`ltbench.run.cost`), on stderr."""
    from ..run.cost import estimate
    from ..run.runner import resolve_device

    runs = f"{len(todo)} run{'s' if len(todo) != 1 else ''}"
    click.echo(f"timing a few training steps on this machine to estimate the cost of {runs} "
               f"(--no-estimate skips it) ...", err=True)
    click.echo(estimate(todo, resolve_device(device)).describe(), err=True)


def _pack_size(text: str) -> int | None:
    """``--pack-size``: a positive integer, or None for 'auto'."""
    from ..integers import parse_int

    if text.strip().lower() == "auto":
        return None
    return parse_int(text, "--pack-size", least=1)


def _print_summary(store, run_ids: set[str]) -> None:
    from ..report.tables import run_summary

    records = store.read()
    click.echo(run_summary(records[records["run_id"].isin(run_ids)]))
