"""What several commands share: their common options, reading the store and the published
numbers."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import BadInput
from ..integers import Integer

DEFAULT_RESULTS = "results"
DEFAULT_REPORTS = "reports"


def results_option(f):
    return click.option("--results", "results", default=DEFAULT_RESULTS, show_default=True,
                        type=click.Path(path_type=Path), help="Results store folder.")(f)


def data_root_option(f):
    return click.option("--data-root", envvar="LTBENCH_DATA_ROOT", default="data",
                        show_default="$LTBENCH_DATA_ROOT or ./data",
                        type=click.Path(path_type=Path),
                        help="Folder holding the datasets' files.")(f)


def set_option(f):
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a hyper-parameter (repeatable), e.g. --set lr=0.05.")(f)


def subset_options(f):
    f = click.option("--profile", default="exp", show_default=True,
                     help="Count profile: exp or step.")(f)
    from ..spec import MAX_SPLIT_SEED

    return click.option("--split-seed", default=0, show_default=True,
                        type=Integer(0, MAX_SPLIT_SEED),
                        help="Seed of the long-tailed subset (separate from training seeds).")(f)


def published_option(f):
    f = click.option("--published-extra", "published_extra", multiple=True,
                     type=click.Path(path_type=Path),
                     help="A CSV file of one's own published numbers, added to --published's "
                          "(repeatable; docs/published.md gives the format).")(f)
    return click.option("--published", "published", default=None,
                        type=click.Path(path_type=Path),
                        help="Published-numbers CSV file or folder, instead of the built-in "
                             "table [default: results/published of the ltbench source "
                             "checkout].")(f)


def read_store(results: Path):
    from ..store.result_store import ResultStore

    from ..store.integrity import find_damaged

    store = ResultStore(results)
    if not store.runs_dir.is_dir():
        raise BadInput(f"no results store at {results} (expected {store.runs_dir})")
    damaged = find_damaged(store)
    if damaged:
        click.echo(f"ignoring {len(damaged)} damaged result file(s) (see ltbench status)",
                   err=True)
    return store


def load_published(path: Path | None, required: bool, extra: tuple[Path, ...] = ()):
    """The published rows of ``path`` (default: the checkout's; () if optional and absent),
    then those of the ``extra`` files."""
    from ..report.published import default_published_dir, load_published

    added = [row for file in extra for row in load_published(file)]
    if path is None:
        path = default_published_dir()
        if not path.exists():
            if required and not added:
                raise BadInput(f"no published numbers at {path} (ltbench is not installed from "
                               f"a source checkout): pass --published FILE")
            return path, added
    return path, [*load_published(path), *added]
