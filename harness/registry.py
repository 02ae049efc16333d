"""Method, dataset and report-section plugins, discovered through entry points.

A plugin is a class named by an entry point in the group ``ltbench.methods`` (a subclass of
:class:`ltbench.api.Method`) or ``ltbench.datasets`` (a subclass of
:class:`ltbench.api.Dataset`), or a function in ``ltbench.report_sections`` named after the
artifact it draws (:mod:`ltbench.api.report_section`). The entry point's name is the plugin's name, so a
third-party package adds a method with one line in its own ``pyproject.toml``::

    [project.entry-points."ltbench.methods"]
    my-loss = "my_package.my_loss:MyLoss"

The built-ins register exactly the same way. Two providers of one name are a hard error naming
both (timm's lesson: silent shadowing is worse than failing).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from importlib.metadata import entry_points

from .errors import BadInput

GROUPS = {"method": "ltbench.methods", "dataset": "ltbench.datasets",
          "report_section": "ltbench.report_sections"}


@dataclass(frozen=True)
class Plugin:
    """One registered name: where it comes from, and how to load its class."""

    kind: str
    name: str
    target: str
    provider: str

    def load(self) -> type:
        ep = next(ep for ep in entry_points(group=GROUPS[self.kind])
                  if ep.name == self.name and ep.value == self.target)
        try:
            return ep.load()
        except Exception as exc:  # a broken third-party plugin must not read as "unknown name"
            raise BadInput(f"{self.kind} '{self.name}' from {self.provider} failed to import: "
                           f"{type(exc).__name__}: {exc}") from exc


def _provider(ep) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else ep.value


@functools.cache
def plugins(kind: str) -> dict[str, Plugin]:
    """All registered plugins of ``kind`` ('method' or 'dataset'), by name, in sorted order."""
    found: dict[str, Plugin] = {}
    for ep in entry_points(group=GROUPS[kind]):
        plugin = Plugin(kind, ep.name, ep.value, _provider(ep))
        other = found.get(ep.name)
        if other is not None and other.target != plugin.target:
            raise BadInput(f"{kind} name '{ep.name}' is registered twice: by {other.provider} "
                           f"({other.target}) and by {plugin.provider} ({plugin.target})")
        found[ep.name] = plugin
    return dict(sorted(found.items()))


def refresh() -> None:
    """Forget discovered plugins (after installing a package into a running interpreter)."""
    plugins.cache_clear()
    load.cache_clear()


def _unknown(kind: str, name: str) -> BadInput:
    known = list(plugins(kind))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
        f"; known: {', '.join(known)}"
    return BadInput(f"unknown {kind} '{name}'{hint}")


@functools.cache
def load(kind: str, name: str) -> type:
    """The plugin registered as ``name``; :class:`BadInput` with suggestions if unknown."""
    plugin = plugins(kind).get(name)
    if plugin is None:
        raise _unknown(kind, name)
    return plugin.load()


def parse_names(kind: str, text: str) -> list[str]:
    """``'all'`` or a comma-separated list of names → validated names in the order given."""
    if text.strip() == "all":
        return list(plugins(kind))
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BadInput(f"no {kind} named in '{text}'")
    for name in names:
        if name not in plugins(kind):
            raise _unknown(kind, name)
    return list(dict.fromkeys(names))
