"""The plugin contract: what a method or dataset plugin subclasses, and what it may use.

A method plugin subclasses :class:`Method` (:mod:`ltbench.api.method`: the per-batch loss,
:class:`StepContext`, the loss helpers several methods share); a dataset plugin subclasses
:class:`Dataset` and returns :class:`LTData` (:mod:`ltbench.api.dataset`); a plugin that stores
an artifact can draw it in the report with a section builder returning a :class:`ReportSection`
of :class:`Plot` s (:mod:`ltbench.api.report_section`, :mod:`ltbench.api.plots`). The built-in
plugins under ``methods/`` and ``datasets/`` import from here as a third-party package does;
the engine depends on this contract, never on a plugin.

The names load on first use: a report section's module imports this package without torch,
which only the method and dataset contracts need.
"""

from importlib import import_module

_HOMES = {
    "Dataset": "dataset", "LTData": "dataset",
    "DRW_DEFAULTS": "method", "DeferredReweighting": "method", "Method": "method",
    "StepContext": "method", "class_balanced_weights": "method", "focal_loss": "method",
    "step_decay": "method",
    "Plot": "plots",
    "ReportSection": "report_section", "SectionInput": "report_section",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{home}", __name__), name)
