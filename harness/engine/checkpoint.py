"""Resume checkpoints of a run in training, taken at epoch boundaries and within epochs.

A checkpoint holds everything the rest of a run depends on, so that a run killed at any point
and restarted from its last checkpoint ends with the numbers of an uninterrupted run (on CPU
bit for bit; architecture.md §8 pitfall 7: WILDS restores weights and epoch only, USB omits the
RNG state, transformers PR #8878 fixed a data-order divergence on resume):

* the state of every *part* the training loop names (model, optimiser, the method's own state,
  the data-order generator, the meta-batch sampler with its generator and position) through
  their ``state_dict()`` / ``load_state_dict()``;
* the curves so far and the last evaluation's per-class counts;
* within an epoch, also the epoch's position (:class:`ltbench.engine.train.PartialEpoch`: its
  example orders, the batches done, the exact partial loss sums, correct and seen counts and
  its wall seconds so far).

The learning rate is a function of the epoch (:func:`ltbench.engine.train.learning_rate`), so
there is no scheduler state; the engine uses no gradient scaler (bf16 autocast) and draws from
no global RNG (torch, NumPy or ``random``), so there is none of their state to keep. At an
epoch boundary the sampler's position is "start of the next epoch": its whole state is the
data generator's, and the checkpoint has no epoch position (the format of the checkpoints
taken before there were any within epochs, which therefore still resume).

When: every ``every`` epochs, every ``every_steps`` training steps of the run (counted from its
start, so a resumed run keeps the schedule), and on a stop request after the current batch.
After the last batch of an epoch the epoch's end (evaluation included) comes first, so that
checkpoint is an epoch-boundary one. A stop request, :func:`request_stop`, comes from SIGTERM
and SIGUSR1 (a launcher stopping its workers, Slurm's ``--signal``) and from the first Ctrl-C
in the foreground process (:func:`stop_on_signals`): a stopped run loses at most the batch
that was training, and stops with :class:`Preempted`.

Checkpoints live in ``<results>/resume/<run_id>.pt`` (distinct from any store of final
models), are written to a temporary name, fsynced and renamed (a reader sees the old or the new
file, never a partial one), and are removed once the run's record is published. A checkpoint
that cannot be used (a damaged file, another engine's, tensors of other shapes; see
:meth:`ResumeCheckpoint.load`) is reported on one line and ignored: the run starts over rather
than failing.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import torch

from ..store import torchfiles
from ..store.atomicfile import atomic_write

#: Default number of epochs between checkpoints.
DEFAULT_EVERY = 10
#: Default number of training steps between checkpoints within an epoch: none. A stop request
#: (signal, Ctrl-C) checkpoints after the current batch anyway, so only a run killed outright
#: (SIGKILL, a lost node) needs them, and what a step costs, hence how many are worth one save
#: (ImageNet ResNet-50 with its momentum: about 200 MB), differs by orders of magnitude between
#: protocols.
DEFAULT_EVERY_STEPS = 0

_stop_requested = threading.Event()


class Preempted(BaseException):
    """The run checkpointed and stopped on request (SIGTERM / SIGUSR1 / Ctrl-C); it is not a
    failure.

    A ``BaseException``, like ``KeyboardInterrupt``, so that the per-run ``except Exception``
    that records failures lets it through.
    """


def request_stop(signum: int | None = None, frame: Any = None) -> None:
    """Checkpoint after the current batch, then raise :class:`Preempted`."""
    _stop_requested.set()


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C: the first requests a stop (checkpoint after the current batch); another, while
    the run is still finishing that batch or outside training, interrupts at once."""
    if _stop_requested.is_set():
        raise KeyboardInterrupt
    request_stop()
    print("stopping after the current batch, with a resume checkpoint (Ctrl-C again to "
          "abort without one)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGUSR1 call :func:`request_stop`, and so does SIGINT
    (Ctrl-C) when Python's default handler has it (not when it is ignored, as in a process
    started in the background); main thread only. The previous handlers come back after it."""
    _stop_requested.clear()
    handlers = {signal.SIGTERM: request_stop, signal.SIGUSR1: request_stop}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        handlers[signal.SIGINT] = _interrupt
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop_requested.clear()


class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


class GeneratorState:
    """A ``torch.Generator`` seen through the ``state_dict`` protocol."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generator.set_state(state["state"])


def _cpu(value: Any) -> Any:
    """``value`` with every tensor moved to the CPU, so a checkpoint loads on any device."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value


class ResumeCheckpoint:
    """The resume checkpoint of run ``run_id`` at ``path``, saved every ``every`` epochs and
    every ``every_steps`` training steps.

    ``every`` and ``every_steps`` 0: none of those (a stop request still saves). The saved
    dictionary is ``{"run_id", "epoch" (the last completed, 0-based; -1 within the first),
    "parts": {name: state_dict}, "extra": {...}}``; it contains only tensors and plain Python
    values, so it loads with ``torch.load(weights_only=True)``.
    """

    def __init__(self, path: Path, run_id: str, every: int = DEFAULT_EVERY,
                 every_steps: int = DEFAULT_EVERY_STEPS):
        self.path = Path(path)
        self.run_id = run_id
        self.every = every
        self.every_steps = every_steps

    def load(self, parts: Mapping[str, Stateful], extra: tuple[str, ...] = (),
             optional: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """Restore ``parts`` from the checkpoint and return ``{"epoch", **extra}`` and those
        of the ``optional`` keys it has; None (parts as they were) when there is no usable
        checkpoint: none, a damaged file (:mod:`ltbench.store.torchfiles`), another run's, one
        without exactly these parts and ``extra`` keys, or with other keys besides
        ``optional`` ones (another engine version), or one a part refuses (tensors of other
        shapes)."""
        if not self.path.exists():
            return None
        try:
            saved = torchfiles.load(self.path)
            if (saved.get("run_id") != self.run_id or set(saved["parts"]) != set(parts)
                    or not set(extra) <= set(saved["extra"]) <= set(extra) | set(optional)):
                raise ValueError("it belongs to another run or another engine")
            _load_parts(parts, saved["parts"])
        except Exception as exc:  # any damage means the same: train from the start
            reason = " ".join(str(exc).split())  # one line (load_state_dict's has several)
            print(f"ignoring resume checkpoint {self.path}: {type(exc).__name__}: {reason}",
                  file=sys.stderr)
            return None
        return {"epoch": saved["epoch"], **saved["extra"]}

    def save(self, epoch: int, parts: Mapping[str, Stateful], **extra: Any) -> None:
        """Atomically replace the checkpoint with the state after 0-based ``epoch``."""
        state = {"run_id": self.run_id, "epoch": epoch,
                 "parts": {name: _cpu(part.state_dict()) for name, part in parts.items()},
                 "extra": _cpu(extra)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path) as handle:
            torch.save(state, handle)

    def epoch_done(self, epoch: int, epochs: int, parts: Mapping[str, Stateful],
                   **extra: Any) -> None:
        """Save if ``epoch`` is due (every ``every`` epochs) or a stop was requested; then, on
        a stop request, raise :class:`Preempted`. The last epoch is never saved: the run is
        about to publish its record."""
        if epoch == epochs - 1:
            return
        stopping = _stop_requested.is_set()
        if stopping or (self.every > 0 and (epoch + 1) % self.every == 0):
            self.save(epoch, parts, **extra)
        if stopping:
            raise Preempted(f"stopped after epoch {epoch} on request; resume checkpoint "
                            f"{self.path}")

    def batch_done(self, epoch: int, batch: int, batches_per_epoch: int,
                   parts: Mapping[str, Stateful], extra: Callable[[], Mapping[str, Any]]) -> None:
        """After 1-based ``batch`` of 0-based ``epoch``, unless it is the epoch's last (its end
        follows, with :meth:`epoch_done`): save with the ``extra`` values (called only then)
        if a stop was requested or ``every_steps`` divides the run's training steps so far;
        then, on a stop request, raise :class:`Preempted`. When nothing is due it costs one
        ``Event.is_set()`` and a modulo: no host synchronisation."""
        if batch == batches_per_epoch:
            return
        stopping = _stop_requested.is_set()
        step = epoch * batches_per_epoch + batch
        if stopping or (self.every_steps > 0 and step % self.every_steps == 0):
            self.save(epoch - 1, parts, **extra())
        if stopping:
            raise Preempted(f"stopped after batch {batch} of epoch {epoch} on request; resume "
                            f"checkpoint {self.path}")

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _load_parts(parts: Mapping[str, Stateful], states: Mapping[str, Any]) -> None:
    """Load ``states[name]`` into every part, or, when one refuses, put every part back as it
    was (a module's ``load_state_dict`` may have copied some tensors before it raised)."""
    before = {name: copy.deepcopy(part.state_dict()) for name, part in parts.items()}
    try:
        for name, part in parts.items():
            part.load_state_dict(states[name])
    except BaseException:
        for name, part in parts.items():
            part.load_state_dict(before[name])
        raise


def resume_path(results: Path, run_id: str) -> Path:
    return Path(results) / "resume" / f"{run_id}.pt"
