"""``ltbench report``: the static HTML report, Markdown / LaTeX tables and plot data."""

from __future__ import annotations

from pathlib import Path

import click

from .shared import DEFAULT_REPORTS, load_published, published_option, read_store, results_option


@click.command()
@results_option
@click.option("--out", default=DEFAULT_REPORTS, show_default=True,
              type=click.Path(path_type=Path), help="Folder to write the report into.")
@published_option
@click.option("--bundle", default=None, type=click.Path(path_type=Path, dir_okay=False),
              help="Also zip the report, the records (with curves and evals) and the "
                   "commands that rerun every cell into this FILE.zip.")
def report(results, out, published, published_extra, bundle):
    """Write the static HTML report, Markdown / LaTeX tables and plot data of the store."""
    from ..report.bundle import check_bundle_path, write_bundle
    from ..report.site import write_report
    from ..run.commands import rerun_commands

    if bundle is not None:
        check_bundle_path(bundle)
    store = read_store(results)
    _, rows = load_published(published, required=False, extra=published_extra)
    index = write_report(store, out, published=rows)
    click.echo(f"wrote {index}")
    if bundle is not None:
        click.echo(f"wrote {write_bundle(store, out, rerun_commands(store.read()), bundle)}")
