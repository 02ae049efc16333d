"""Per-epoch, per-class distributions of meta-learned example weights, for the report.

A method calls :meth:`WeightHistograms.record` on every step with the batch's targets and one
value per example for each quantity it has:

* ``"eps"``: the meta-learned perturbation (Jamal et al.'s ε_i; for L2RW the score ``−g_i``
  before clipping and normalisation);
* ``"weight"``: the example's final weight, expressed as the factor of ``ℓ_i`` in the real
  update written as a batch **mean** ``(1/B) Σ_i weight_i ℓ_i``, so that 1 means plain
  cross-entropy for every method (Jamal: ``w_i``; L2RW and MW-Net, whose weights sum to 1 over
  the batch: ``B · w_i``).

Recording keeps the detached device tensors of the current epoch (no host synchronisation, a
few floats per example); the first record of the next epoch, or :meth:`frames`, turns them into
rows with one device-to-host copy per epoch. :meth:`frames` returns two long-format tables:

``eps`` — columns ``quantity`` (str), ``epoch``, ``class``, ``bin`` (0 … 63), ``lo``, ``hi``
(the bin's edges), ``count`` (int64): a 64-bin histogram per (quantity, epoch, class), every bin
listed. The edges are 64 equal bins over ``[min, max]`` of that quantity's values in that epoch,
all classes together (``numpy.histogram_bin_edges``; ``[v − 0.5, v + 0.5]`` if all values equal
v): classes share bins within an epoch and nothing is ever clamped. The range is set per epoch
rather than once at the start of stage 2 because Jamal's look-ahead step α_meta (to which ε is
proportional) drops 100× at epoch 180, which would put the last 20 epochs in one or two bins.
Bins are right-open except the last (NumPy's convention). Non-finite values (a diverging run)
are left out.

``eps_summary`` — columns ``quantity``, ``epoch``, ``class``, ``n``, ``mean``, ``std``
(population, ddof 0), ``q05``, ``q25``, ``q50``, ``q75``, ``q95``: exact statistics of the same
values (quantiles by linear interpolation, ``numpy.quantile``'s default), NaN for a class with
no value in the epoch.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

BINS = 64
QUANTITIES = ("eps", "weight")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class WeightHistograms:
    """Collects per-example values during training; see the module docstring."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self._epoch: int | None = None
        self._pending: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._histograms: list[pd.DataFrame] = []
        self._summaries: list[pd.DataFrame] = []

    def record(self, epoch: int, targets: torch.Tensor, **values: torch.Tensor) -> None:
        """Add one batch: ``targets`` [B] and, per quantity name, its values [B]."""
        if epoch != self._epoch:
            self._flush()
            self._epoch = epoch
        for quantity, value in values.items():
            if quantity not in QUANTITIES:
                raise ValueError(f"unknown quantity {quantity!r}; known: {QUANTITIES}")
            self._pending.setdefault(quantity, []).append((targets, value.detach()))

    def frames(self) -> dict[str, pd.DataFrame]:
        """``{"eps": histograms, "eps_summary": statistics}``, or ``{}`` if nothing was recorded."""
        self._flush()
        if not self._histograms:
            return {}
        return {"eps": pd.concat(self._histograms, ignore_index=True),
                "eps_summary": pd.concat(self._summaries, ignore_index=True)}

    def state_dict(self) -> dict:
        """Everything recorded so far, as tensors and strings (for resume checkpoints): the
        tables of the epochs before the current one and the current one's values as recorded
        (it may not be over: a checkpoint within an epoch), so that taking it changes
        nothing."""
        return {"epoch": self._epoch,
                "pending": {quantity: (torch.cat([targets for targets, _ in batches]),
                                       torch.cat([value for _, value in batches]))
                            for quantity, batches in self._pending.items()},
                "histograms": [_frame_state(f) for f in self._histograms],
                "summaries": [_frame_state(f) for f in self._summaries]}

    def load_state_dict(self, state: dict) -> None:
        self._epoch = state["epoch"]
        # A checkpoint from before those within epochs has no "pending": its state_dict
        # folded the epoch's values into the tables, at an epoch boundary where that is exact.
        self._pending = {quantity: [recorded]
                         for quantity, recorded in state.get("pending", {}).items()}
        self._histograms = [_frame_from_state(s) for s in state["histograms"]]
        self._summaries = [_frame_from_state(s) for s in state["summaries"]]

    def _flush(self) -> None:
        for quantity, batches in self._pending.items():
            # The epoch's single device-to-host copy of this quantity; a resumed epoch's
            # first values are the checkpoint's, on the CPU, and go to the others' device.
            device = batches[-1][0].device
            labels = torch.cat([targets.to(device) for targets, _ in batches]).cpu().numpy()
            values = torch.cat([value.to(device) for _, value in batches]).double().cpu().numpy()
            finite = np.isfinite(values)
            if finite.any():
                self._add_epoch(quantity, labels[finite], values[finite])
        self._pending = {}

    def _add_epoch(self, quantity: str, labels: np.ndarray, values: np.ndarray) -> None:
        classes, epoch = self.num_classes, self._epoch
        edges = np.histogram_bin_edges(values, bins=BINS)
        bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, BINS - 1)
        counts = np.bincount(labels * BINS + bins, minlength=classes * BINS)
        self._histograms.append(pd.DataFrame({
            "quantity": quantity,
            "epoch": np.full(classes * BINS, epoch, dtype=np.int64),
            "class": np.repeat(np.arange(classes, dtype=np.int64), BINS),
            "bin": np.tile(np.arange(BINS, dtype=np.int64), classes),
            "lo": np.tile(edges[:-1], classes),
            "hi": np.tile(edges[1:], classes),
            "count": counts.astype(np.int64),
        }))
        rows = []
        for cls in range(classes):
            own = values[labels == cls]
            stats = ([own.mean(), own.std(), *np.quantile(own, QUANTILES)] if len(own)
                     else [np.nan] * (2 + len(QUANTILES)))
            rows.append([quantity, epoch, cls, len(own), *stats])
        self._summaries.append(pd.DataFrame(rows, columns=[
            "quantity", "epoch", "class", "n", "mean", "std", "q05", "q25", "q50", "q75",
            "q95"]).astype({"epoch": np.int64, "class": np.int64, "n": np.int64}))


def _frame_state(frame: pd.DataFrame) -> dict:
    """Numeric columns as tensors (exact, dtype kept), text columns as lists of str."""
    return {name: torch.tensor(column.to_numpy()) if pd.api.types.is_numeric_dtype(column)
            else [str(value) for value in column] for name, column in frame.items()}


def _frame_from_state(state: dict) -> pd.DataFrame:
    return pd.DataFrame({name: value.numpy() if isinstance(value, torch.Tensor) else value
                         for name, value in state.items()})


class RecordsWeights:
    """Mixin of the methods that keep a :class:`WeightHistograms` as ``self.histograms``: it
    is published as their artifacts (``eps``, ``eps_summary``) and carried by resume
    checkpoints (:mod:`ltbench.engine.checkpoint`)."""

    histograms: WeightHistograms

    def state_dict(self) -> dict[str, Any]:
        return {"histograms": self.histograms.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.histograms.load_state_dict(state["histograms"])

    def artifacts(self) -> dict[str, pd.DataFrame]:
        return self.histograms.frames()
