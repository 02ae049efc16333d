"""``ltbench status``: what the store holds against what was asked; ``--repair``."""

from __future__ import annotations

import click

from ..errors import BadInput
from .shared import results_option


@click.command()
@results_option
@click.option("--methods", default=None,
              help="Methods expected in every (dataset, imb) group, or 'all' registered "
                   "[default: those in the store].")
@click.option("--datasets", default=None, help="Datasets to show [default: those in the store].")
@click.option("--imb", default=None, help="Imbalance factors expected [default: those stored].")
@click.option("--seeds", default=None, help="Seeds expected [default: those stored].")
@click.option("--repair", is_flag=True, help="Move damaged result files (and the other files "
                                             "of their runs) to <results>/corrupt/.")
@click.option("--rescan", is_flag=True, help="Verify every file again, also those found intact "
                                             "before and unchanged since.")
def status(results, methods, datasets, imb, seeds, repair, rescan):
    """Done / failed / missing seed counts per (dataset, imb, method), and damaged files."""
    from .. import registry
    from ..report.status import status_table
    from ..report.tables import method_rank
    from ..run import grid
    from ..store import integrity
    from ..store.result_store import ResultStore

    store = ResultStore(results)
    if not store.runs_dir.is_dir():
        raise BadInput(f"no results store at {results} (expected {store.runs_dir})")
    damaged = integrity.find_damaged(store, rescan=rescan)
    records = store.read()
    click.echo(status_table(
        records[~records["run_id"].isin(integrity.damaged_runs(store, damaged))],
        methods=(registry.parse_names("method", methods) if methods
                 else sorted(set(records["method"]), key=method_rank(records))),
        datasets=registry.parse_names("dataset", datasets) if datasets else None,
        imb_factors=grid.parse_imb_factors(imb) if imb else None,
        seeds=grid.parse_seeds(seeds) if seeds else None))
    if damaged:
        click.echo(f"{len(damaged)} damaged file(s), ignored (their runs count as missing and "
                   f"are re-run):")
        for damage in damaged:
            click.echo(f"  {damage.path}: {damage.reason}")
    if repair:
        for source, target in integrity.repair(store, damaged):
            click.echo(f"moved {source} -> {target}")
    elif damaged:
        click.echo("run 'ltbench status --repair' to move them aside")
