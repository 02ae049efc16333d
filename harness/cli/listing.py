"""``ltbench list``: the registered methods and datasets, with their providers."""

from __future__ import annotations

import click

from ..errors import BadInput


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(["methods", "datasets"]))
def list_plugins(kind):
    """List registered methods and datasets: name, description, paper, provider."""
    from .. import registry

    for group in ([kind] if kind else ["methods", "datasets"]):
        click.echo(f"{group}:")
        for name, plugin in registry.plugins(group[:-1]).items():
            try:
                cls = plugin.load()
                summary, paper = cls.summary, cls.paper
            except BadInput as exc:
                summary, paper = f"(unavailable: {exc})", ""
            click.echo(f"  {name:<18} {summary}")
            if paper:
                click.echo(f"  {'':<18} paper: {paper}")
            click.echo(f"  {'':<18} provider: {plugin.provider}")
