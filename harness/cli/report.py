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
def report(results, out, published):
    """Write the static HTML report, Markdown / LaTeX tables and plot data of the store."""
    from ..report.site import write_report

    store = read_store(results)
    _, rows = load_published(published, required=False)
    index = write_report(store, out, published=rows)
    click.echo(f"wrote {index}")
