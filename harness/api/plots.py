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
alike. This module must not import torch.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from dataclasses import dataclass
from typing import Callable

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from ..spec import format_imb

_RC = {"svg.hashsalt": "ltbench", "svg.fonttype": "none", "font.size": 9,
       "axes.spines.top": False, "axes.spines.right": False}
#: Figure widths in inches: the page shows wide figures up to 860 px, phone figures at 390 px.
WIDE, NARROW = 7.5, 4.0
# Enough distinct colour × marker pairs for a table of every built-in method and then some.
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
    return {"color": matplotlib.colormaps["tab10"](index % 10),
            "marker": _MARKERS[(index // 10) % len(_MARKERS)]}


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
