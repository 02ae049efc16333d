"""The plugin contract: what a method or dataset plugin subclasses, and what it may use.

A method plugin subclasses :class:`Method` (:mod:`ltbench.api.method`: the per-batch loss,
:class:`StepContext`, the loss helpers several methods share); a dataset plugin subclasses
:class:`Dataset` and returns :class:`LTData` (:mod:`ltbench.api.dataset`). The built-in plugins
under ``methods/`` and ``datasets/`` import from here as a third-party package does; the
engine depends on this contract, never on a plugin.
"""

from .dataset import Dataset, LTData
from .method import (DRW_DEFAULTS, DeferredReweighting, Method, StepContext,
                     class_balanced_weights, focal_loss, step_decay)

__all__ = ["DRW_DEFAULTS", "Dataset", "DeferredReweighting", "LTData", "Method", "StepContext",
           "class_balanced_weights", "focal_loss", "step_decay"]
