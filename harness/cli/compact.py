"""``ltbench compact``: the store's per-run files merged into a few partitioned files."""

from __future__ import annotations

import click

from .shared import read_store, results_option


@click.command()
@results_option
def compact(results):
    """Merge the published per-run files into parts under RESULTS/compacted/ (per dataset, at
    most 1,000 runs each) and remove them; every reader reads both forms, and runs may keep
    training meanwhile (docs/store.md says how)."""
    from ..store.compaction import compact as compact_store
    from ..store.writable import check_writable

    store = read_store(results)
    for folder in (store.runs_dir, store.compacted_dir):
        check_writable(folder, "--results")
    done = compact_store(store, progress=lambda line: click.echo(line, err=True))
    click.echo(f"compacted {done.runs} run(s) into {len(done.parts)} part(s), "
               f"{done.files_removed} per-run file(s) removed")
    if done.runs_left:
        click.echo(f"{len(done.runs_left)} run(s) keep their own files (damaged: see ltbench "
                   f"status; or published again during the compaction)")
