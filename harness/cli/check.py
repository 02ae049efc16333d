"""``ltbench check``: the regression gate against the published numbers."""

from __future__ import annotations

import math
from pathlib import Path

import click

from .. import __version__
from ..errors import BadInput
from ..store import atomicfile
from .shared import load_published, published_option, read_store, results_option


def _tolerance(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise BadInput(f"{name} must be a finite number >= 0, got {value}")
    return value


@click.command()
@results_option
@published_option
@click.option("--methods", default=None,
              help="Comma-separated methods to check [default: the methods in the store].")
@click.option("--tolerance-floor", "--tolerance", "floor", type=float, default=1.0,
              show_default=True, help="Smallest allowed |mean - published|, in points.")
@click.option("--tolerance-k", "k", type=float, default=2.0, show_default=True,
              help="Allowed |mean - published| in standard errors over seeds, when larger "
                   "than the floor.")
@click.option("--assumed-seed-std", type=float, default=1.0, show_default=True,
              help="Seed std, in points, assumed for cells with fewer than 3 seeds (whose "
                   "standard error cannot be measured): SE = this / sqrt(n).")
@click.option("--allow-empty", is_flag=True,
              help="Exit 0 even when no published number could be compared.")
@click.option("--out", default=None, type=click.Path(path_type=Path, dir_okay=False),
              help="JSON file to write [default: <results>/check.json].")
def check(results, published, published_extra, methods, floor, k, assumed_seed_std, allow_empty,
          out):
    """Compare the store's means over seeds with the published numbers.

    Prints a Markdown table (pass / regression / improvement / missing per published row) and
    writes it as JSON. Exit code 0 when every comparison passed or improved; 1 on a
    regression, on a missing comparison (a failed or absent run is never a pass) or when
    nothing could be compared (unless --allow-empty); 2 on bad input.
    """
    import json

    from .. import registry
    from ..report.check import Tolerance, check as run_check, to_json, to_markdown

    tolerance = Tolerance(_tolerance("--tolerance-floor", floor), _tolerance("--tolerance-k", k),
                          _tolerance("--assumed-seed-std", assumed_seed_std))
    store = read_store(results)
    path, rows = load_published(published, required=True, extra=published_extra)
    if not rows:
        raise BadInput(f"no published numbers in {path} (nothing but a header): nothing to "
                       f"compare")
    records = store.read()
    chosen = None
    if methods is not None:
        chosen = [name.strip() for name in methods.split(",") if name.strip()]
        known = set(registry.plugins("method")) | set(records["method"]) | \
            {row.ltbench_method for row in rows if row.ltbench_method}
        unknown = [name for name in chosen if name not in known]
        if not chosen or unknown:
            raise BadInput(f"--methods: unknown method '{unknown[0]}'" if unknown
                           else f"--methods: no method named in '{methods}'")
    out = out if out is not None else Path(results) / "check.json"
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: folder {out.parent} does not exist")
    result = run_check(records, rows, methods=chosen, tolerance=tolerance)
    click.echo(to_markdown(result), nl=False)
    document = {"ltbench_version": __version__, "results": str(results),
                "published": str(path),
                "published_extra": [str(file) for file in published_extra],
                **to_json(result, allow_empty)}
    try:
        atomicfile.write_text(out, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise BadInput(f"--out {out} is not writable: {exc.strerror or exc}") from exc
    click.echo(f"wrote {out}", err=True)
    failures = result.failures(allow_empty)
    if failures:
        click.echo(f"check failed: {'; '.join(failures)}", err=True)
    click.get_current_context().exit(1 if failures else 0)
