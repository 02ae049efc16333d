"""The method families of the long-tailed literature, in the order result tables list them.

A method plugin names its family (:attr:`ltbench.api.Method.family`); every run stores it in
its record (``method_family``), so the report and ``ltbench check`` order rows by family, in
:data:`FAMILIES` order, then by method name, without loading the plugin (or torch) and even
where it is not installed. A family not listed here (a plugin's own), and records written
before the column existed, come after the listed families.
"""

from __future__ import annotations

#: Family name → what its methods change, in table order.
FAMILIES = {
    "loss": "the training loss alone (cross-entropy, focal)",
    "re-weighting": "per-class loss weights (class-balanced, deferred re-weighting)",
    "margin": "per-class margins in the loss (LDAM)",
    "logit-adjustment": "the logits by the log class prior during training",
    "fine-tuning": "a balanced fine-tuning stage after ordinary training",
    "meta-learning": "per-example weights learned on a balanced meta set",
    "decoupled": "the classifier, re-learned or re-scaled on a frozen backbone",
    "label-shift": "the prediction rule, for the test label distribution",
}


def family_rank(family: str | None) -> int:
    """The position of ``family`` in :data:`FAMILIES`; after all of them when unlisted or
    unknown (None)."""
    order = list(FAMILIES)
    return order.index(family) if family in order else len(order)
