"""Figures for the report: :class:`Plot` and the drawing helpers every plot shares.

A plot is a matplotlib figure rendered twice as an SVG ``data:`` URI, for wide screens and for
phones (narrower, taller, so that text stays legible without zooming; the page picks one with a
``<picture>`` media query), plus a long-format DataFrame of exactly the numbers drawn, which the
report writes as CSV. Embedding as ``data:`` URIs keeps every page one file that opens from disk
with no request. Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no
global figure state) and rendered by the SVG backend with a fixed hash salt and no date, so the
same data gives the same bytes.

The report's own plots (:mod:`ltbench.report.figures`) and the sections plugins add to it
(:mod:`ltbench.api.report_section`) are drawn with these helpers, so every plot of a page looks
alike. Rendering dominates the time of a report (about 0.4 s per SVG on a 2-core machine, two
SVGs per plot), so :func:`make_plot` keeps what it rendered in a per-user cache,
``$LTBENCH_PLOT_CACHE`` or ``~/.cache/ltbench/plots``, keyed by everything the figure is drawn
from: the data drawn, the texts, the styles, the height, matplotlib's version and the source of
the drawing code (this module's and the caller's). A report of a store where few cells changed
renders only those; entries unused for :data:`CACHE_DAYS` days are removed
(:func:`prune_cache`). This module must not import torch.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from ..spec import format_imb
from ..store.atomicfile import atomic_write, write_text

_RC = {"svg.hashsalt": "ltbench", "svg.fonttype": "none", "font.size": 9,
       "axes.spines.top": False, "axes.spines.right": False}
#: Figure widths in inches: the page shows wide figures up to 860 px, phone figures at 390 px.
WIDE, NARROW = 7.5, 4.0
#: Okabe and Ito's palette ("Color universal design", 2008), distinguishable with every common
#: colour-vision deficiency; markers tell series apart where colours repeat, and in grey print.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")
# 8 colours × 11 markers, both changing with every series: 88 distinct pairs, more than a
# table of every built-in method needs.
_MARKERS = "os^Dv<>ph*X"


@dataclass
class Plot:
    """A rendered figure (wide and narrow) and the data drawn in it."""

    title: str
    caption: str
    data_uri: str
    narrow_data_uri: str
    data: pd.DataFrame
    slug: str  # names the CSV file of ``data``
    data_file: str = ""  # set by the report once it names the file


def style(index: int) -> dict:
    """The colour and marker of series ``index`` (a row's position in its table)."""
    return {"color": PALETTE[index % len(PALETTE)], "marker": _MARKERS[index % len(_MARKERS)]}


def _svg_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render(draw: Callable[[Figure, bool], None], height: float) -> tuple[str, str]:
    """``draw(figure, narrow)`` at both widths, as the wide and the narrow data URI; the narrow
    one is 1.5× taller."""
    uris = []
    for width, narrow in ((WIDE, False), (NARROW, True)):
        with matplotlib.rc_context(_RC):
            figure = Figure(figsize=(width, height * (1.5 if narrow else 1.0)),
                            layout="constrained")
            draw(figure, narrow)
            uris.append(_svg_uri(figure))
    return uris[0], uris[1]


#: Days a cached rendering may go unused before :func:`prune_cache` removes it.
CACHE_DAYS = 30


def cache_dir() -> Path:
    """Where :func:`make_plot` keeps rendered plots (see the module docstring)."""
    if os.environ.get("LTBENCH_PLOT_CACHE"):
        return Path(os.environ["LTBENCH_PLOT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ltbench" / "plots"


@functools.cache
def _source_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:  # no source to read (e.g. a zipped install): never reuse a rendering
        return str(time.time_ns())


def make_plot(title: str, caption: str, draw: Callable[[Figure, bool], None], height: float,
              data: pd.DataFrame, slug: str, styles: Sequence[Any] = ()) -> Plot:
    """The :class:`Plot` of ``draw`` (:func:`render` at ``height``) with ``data``, the numbers
    it draws, and ``styles``, whatever else its look depends on (e.g. each series' style
    index); taken from the cache when a plot of the same key was rendered before."""
    key = hashlib.sha256(repr((
        _source_digest(__file__), _source_digest(draw.__code__.co_filename),
        draw.__qualname__, matplotlib.__version__, title, caption, height, list(styles),
    )).encode() + data.to_csv(index=False).encode()).hexdigest()
    path = cache_dir() / f"{key}.txt"
    try:
        wide, narrow = path.read_text(encoding="ascii").split("\n")
        os.utime(path)  # used: kept by prune_cache
    except (OSError, ValueError, UnicodeDecodeError):
        wide, narrow = render(draw, height)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, f"{wide}\n{narrow}", durable=False)
        except OSError:  # an unwritable cache only costs the next report its time
            pass
    return Plot(title, caption, wide, narrow, data, slug)


def _loaded_ltbench_digest() -> str:
    """A digest of the source of every ltbench module loaded now (the code a computation can
    call)."""
    files = sorted(str(getattr(module, "__file__", None) or "") for name, module
                   in list(sys.modules.items()) if name == "ltbench" or name.startswith("ltbench."))
    return hashlib.sha256(repr([_source_digest(f) for f in files if f]).encode()).hexdigest()


def cached_data(compute: Callable[[], pd.DataFrame | None], code: Callable,
                inputs: Any) -> pd.DataFrame | None:
    """``compute()``, kept in the plot cache (as parquet) under a key of ``inputs`` — a
    description of everything it reads whose ``repr`` changes when any of it changes, such as
    the stamps of the files it reads — and the source of ``code``'s module and of every ltbench
    module loaded. For plot data that is slow to derive from large artifacts: a report of an
    unchanged store reads one small file per plot instead. An empty frame without columns is
    kept like None, and both come back as None."""
    key = hashlib.sha256(repr((
        "data", _source_digest(code.__code__.co_filename), code.__qualname__,
        _loaded_ltbench_digest(), inputs)).encode()).hexdigest()
    path = cache_dir() / f"{key}.parquet"
    try:
        frame = pd.read_parquet(path)
        os.utime(path)  # used: kept by prune_cache
    except (OSError, ValueError):  # absent or unreadable (pyarrow's errors are either)
        frame = compute()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, durable=False) as out:
                (pd.DataFrame() if frame is None else frame).to_parquet(out, index=False)
        except (OSError, ValueError, TypeError):  # unwritable, or columns parquet cannot hold:
            pass  # it only costs the next report its time
    return None if frame is None or (frame.empty and not len(frame.columns)) else frame


def prune_cache(max_age_days: float = CACHE_DAYS) -> None:
    """Remove cached renderings and data (:func:`cached_data`) unused for ``max_age_days``."""
    oldest = time.time() - max_age_days * 86400
    try:
        entries = list(os.scandir(cache_dir()))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name.endswith((".txt", ".parquet")) and entry.stat().st_mtime < oldest:
                os.unlink(entry.path)
        except OSError:  # removed by a concurrent report
            continue


def legend(figure: Figure, count: int, narrow: bool) -> None:
    """The figure's legend of ``count`` series below its axes (none for no series)."""
    if count:
        figure.legend(loc="outside lower center", ncols=min(2 if narrow else 3, count),
                      frameon=False, fontsize="small")


def configuration_slug(prefix: str, label: str, imb: float) -> str:
    """The CSV name of one configuration's plot: ``<prefix>_<label>_if<imb>``; a label of many
    differing settings is cut to 60 characters plus a digest of the whole, so that the file
    name stays far below the file systems' 255-byte limit and still unique."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
    if len(name) > 60:
        name = f"{name[:60]}-{hashlib.sha256(label.encode()).hexdigest()[:10]}"
    return f"{prefix}_{name}_if{format_imb(imb)}"
