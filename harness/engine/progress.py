"""Progress output for long work: a bar per run on a terminal, one line per event in logs.

The training loop calls :meth:`RunProgress.advance` once per step (cheap: no host sync, no
formatting unless the terminal is due a redraw) and :meth:`RunProgress.epoch_done` once per
epoch with numbers it has already synchronised; :meth:`RunProgress.phase` names the work after
training (the shifted-set evaluations). On a terminal the bar is one line that fits the
terminal's width (it is redrawn in place, so a longer one would stack up), with the time left
estimated from the steps of this process; elsewhere (a log, a pipe) every event is a line.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from typing import TextIO

from ..envinfo import usable_cores


def oversubscription_note() -> str:
    """``" (machine oversubscribed: load L on N cores)"`` when the 1-minute load average
    exceeds the usable cores by more than half a core, else ``""``: CPU training then slows
    far more than proportionally (OpenMP threads spin against each other)."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return ""
    cores = usable_cores()
    if load <= cores + 0.5:
        return ""
    return f" (machine oversubscribed: load {load:.1f} on {cores} cores)"


class RunProgress:
    """Progress of one run, labelled with its place in the grid (e.g. ``[3/27]``)."""

    def __init__(self, label: str, stream: TextIO | None = None, min_interval: float = 0.2):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval = min_interval
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._status = ""
        self._done_at_start = 0  # steps restored from a checkpoint: not this process's pace

    def begin(self, total_steps: int) -> None:
        self.total = max(total_steps, 1)
        self.started = time.monotonic()
        if not self.tty:
            self._write(f"{self.label} started\n")

    def resumed(self, epochs_done: int, steps_done: int, batches_done: int = 0) -> None:
        """The run continues from a checkpoint taken after ``epochs_done`` epochs and
        ``batches_done`` batches of the next (``steps_done`` steps in all)."""
        self.done = self._done_at_start = steps_done
        where = (f"batch {batches_done} of epoch {epochs_done + 1}" if batches_done
                 else f"epoch {epochs_done}")
        self._write(f"{self.label} resumed after {where}\n")

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        now = time.monotonic()
        if self.tty and (now - self._last_draw >= self.min_interval or self.done >= self.total):
            self._last_draw = now
            self._draw()

    def epoch_done(self, epoch: int, epochs: int, train_loss: float,
                   test_acc: float | None) -> None:
        acc = "" if test_acc is None or math.isnan(test_acc) else f" test acc {test_acc:.2f}%"
        self._status = (f"epoch {epoch + 1}/{epochs} loss {train_loss:.4f}{acc}"
                        f"{oversubscription_note()}")
        if self.tty:
            self._draw()
        else:
            self._write(f"{self.label} {self._status} ({self._elapsed()})\n")

    def phase(self, name: str) -> None:
        """The run's work goes on after training, as ``name`` (e.g. its shifted-set
        evaluations): shown instead of the last epoch's line."""
        self._status = name
        if self.tty:
            self._draw()
        else:
            self._write(f"{self.label} {name} ({self._elapsed()})\n")

    def end(self, outcome: str) -> None:
        if self.tty:
            self._draw()
            self._write("\n")
        self._write(f"{self.label} {outcome} in {self._elapsed()}\n")

    def _elapsed(self) -> str:
        return _duration(time.monotonic() - self.started)

    def _left(self) -> str:
        """``", 3.2min left"`` from this process's pace, or ``""`` before its first step and
        once every step is done."""
        done = self.done - self._done_at_start
        if done <= 0 or self.done >= self.total:
            return ""
        seconds = (time.monotonic() - self.started) * (self.total - self.done) / done
        return f", {_duration(seconds)} left"

    def _draw(self) -> None:
        columns = shutil.get_terminal_size().columns
        width = 24 if columns >= 120 else 10 if columns >= 100 else 0  # narrow: no bar
        filled = int(width * min(self.done / self.total, 1.0))
        bar = f" [{'#' * filled}{'-' * (width - filled)}]" if width else ""
        pct = 100.0 * self.done / self.total
        line = f"{self.label}{bar} {pct:5.1f}% ({self._elapsed()}{self._left()}) {self._status}"
        if len(line) >= columns:  # a wrapped line is not redrawn in place: cut its end
            line = line[:max(columns - 2, 1)] + "…"
        self._write(f"\r{line}\x1b[K")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _duration(seconds: float) -> str:
    """``"42.0s"``, ``"3.5min"`` or ``"2.1h"``."""
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}min" if seconds < 7200 else f"{seconds / 3600:.1f}h"
