"""``ltbench list``: the registered methods and datasets, with their providers."""

from __future__ import annotations

import click

from ..errors import BadInput


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(["methods", "datasets"]))
def list_plugins(kind):
    """List registered methods and datasets: name, description, family, paper, provider."""
    from .. import registry

    for group in ([kind] if kind else ["methods", "datasets"]):
        click.echo(f"{group}:")
        for name, plugin in registry.plugins(group[:-1]).items():
            try:
                cls = plugin.load()
                summary, paper, family = cls.summary, cls.paper, getattr(cls, "family", None)
            except BadInput as exc:
                summary, paper, family = f"(unavailable: {exc})", "", None
            click.echo(f"  {name:<18} {summary}")
            if family:
                click.echo(f"  {'':<18} family: {family}")
            if paper:
                click.echo(f"  {'':<18} paper: {paper}")
            click.echo(f"  {'':<18} provider: {plugin.provider}")
