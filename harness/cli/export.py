"""``ltbench export``: every record of the store (and chosen artifacts) as single files."""

from __future__ import annotations

from pathlib import Path

import click

from .shared import read_store, results_option


@click.command()
@results_option
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The records file: FILE.parquet or FILE.csv.")
@click.option("--artifacts", default="", help="Comma-separated artifacts to export beside it, "
                                              "e.g. curves,evals (FILE.curves.parquet, ...).")
def export(results, out, artifacts):
    """Write every published record to one Parquet or CSV file, and artifacts beside it."""
    from ..store.export import export as export_store

    names = [name.strip() for name in artifacts.split(",") if name.strip()]
    for path in export_store(read_store(results), out, names):
        click.echo(f"wrote {path}")
