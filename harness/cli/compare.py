"""``ltbench compare``: two stores side by side, with Δ and significance per cell."""

from __future__ import annotations

from pathlib import Path

import click

from .shared import read_store


@click.command()
@click.argument("store_a", type=click.Path(path_type=Path))
@click.argument("store_b", type=click.Path(path_type=Path))
def compare(store_a, store_b):
    """Compare the cells of STORE_A and STORE_B (e.g. two machines, two versions of a method):
    both means, Δ = B − A and a Holm-corrected test per cell, as Markdown."""
    from ..report.compare import compare as compare_stores, to_markdown

    records = [read_store(path).read() for path in (store_a, store_b)]
    click.echo(to_markdown(*compare_stores(*records)), nl=False)
