"""Hyper-parameters: their resolution for one run from a protocol, and ``--set`` parsing.

A run's hyper-parameters are one flat dict, resolved in this order (later wins):

1. the defaults of the run's protocol, one of the dataset's ``protocols`` (its reference training
   schedule, augmentation and options), plus ``"protocol": name``; the name is
   ``--set protocol=X`` if given, else the method's ``protocol`` attribute, else the dataset's
   ``default_protocol`` (:func:`protocol_defaults`);
2. the method's defaults (its own knobs, e.g. focal ``gamma``);
3. ``--epochs``, which also rescales every epoch-valued default, keeping the schedule's
   shape (:func:`rescaled_epochs`);
4. ``--set key=value`` overrides, taken exactly as given.

:func:`resolve_run` does all four for a (dataset, method) pair; it is the only place a run's
hyper-parameters are decided.

Unknown keys are errors; values are parsed to the type of the default they replace. The fully
resolved dict is stored with every run and is part of its id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping, Sequence

from .errors import BadInput
from .integers import parse_int


@dataclass(frozen=True)
class EpochOf:
    """An epoch index stated for a run of ``of`` epochs (None: the protocol's reference length,
    its ``epochs`` default): an epoch where something starts (a learning-rate decay, DRW,
    meta-learning) or the length of the warm-up. A run of another length rescales every such
    index at once (:func:`rescaled_epochs`), keeping the schedule's shape."""

    epoch: int
    of: int | None = None

    def fraction(self, reference_epochs: int) -> Fraction:
        """Where the index lies in its run, 0 … 1."""
        return Fraction(self.epoch, self.of or reference_epochs)


def _epoch_values(defaults: Mapping[str, Any]) -> list[tuple[EpochOf, ...]]:
    """The :class:`EpochOf` values of ``defaults``, one tuple per key (in a tuple's order)."""
    groups = []
    for value in defaults.values():
        items = value if isinstance(value, tuple) else (value,)
        groups.append(tuple(item for item in items if isinstance(item, EpochOf)))
    return [group for group in groups if group]


def _fit_marks(marks: list[Fraction], apart: set[tuple[Fraction, Fraction]],
               epochs: int) -> dict[Fraction, int] | None:
    """Mark (a fraction of the run) → epoch of a run of ``epochs``, as close to proportional
    as the schedule's shape allows, or None where ``epochs`` is too short for it.

    The shape: the map never reverses two marks; the marks of a pair in ``apart`` stay on
    different epochs; a mark after the start stays at 1 or later (a warm-up, or the stage
    before a decay or DRW, keeps an epoch) and a mark before the end stays at ``epochs - 1``
    or earlier (the stage it starts keeps an epoch). A forward pass raises marks to meet the
    lower bounds, a backward pass lowers them to meet the upper ones; the result is the
    largest map below the forward one, so it is feasible exactly when any map is.
    """
    def lowest(mark: Fraction) -> int:
        return 1 if mark > 0 else 0

    def highest(mark: Fraction) -> int:
        return epochs - 1 if mark < 1 else epochs

    fitted: dict[Fraction, int] = {}
    for i, mark in enumerate(marks):
        floors = [round(mark * epochs), lowest(mark)]
        floors += [fitted[marks[i - 1]]] if i > 0 else []
        floors += [fitted[a] + 1 for a, b in apart if b == mark]
        fitted[mark] = max(floors)
    for i in reversed(range(len(marks))):
        mark = marks[i]
        ceilings = [fitted[mark], highest(mark)]
        ceilings += [fitted[marks[i + 1]]] if i + 1 < len(marks) else []
        ceilings += [fitted[b] - 1 for a, b in apart if a == mark]
        fitted[mark] = min(ceilings)
    if any(fitted[mark] < lowest(mark) for mark in marks):
        return None
    return fitted


def rescaled_epochs(defaults: Mapping[str, Any], epochs: int,
                    reference_epochs: int) -> tuple[dict[EpochOf, int], int | None]:
    """The epoch of a run of ``epochs`` for each :class:`EpochOf` value of ``defaults`` (a
    protocol's reference length ``reference_epochs``), and None, or, where ``epochs`` is too
    short to keep the schedule's shape (:func:`_fit_marks`; the entries of one tuple, such as
    two decays, stay apart), the plain proportional map and the fewest epochs that keep it.

    E.g. the LDAM-DRW CIFAR schedule (warm-up 5, decays at 160 and 180, DRW from 160 of 200)
    at 6 epochs: warm-up 1, decays at 4 and 5, DRW from 4, where proportional rounding would
    drop the warm-up and put both decays and DRW on the last epoch.
    """
    groups = _epoch_values(defaults)
    marks = sorted({value.fraction(reference_epochs) for group in groups for value in group})
    apart = {(a, b) for group in groups
             for a, b in zip((v.fraction(reference_epochs) for v in group),
                             (v.fraction(reference_epochs) for v in group[1:])) if a < b}
    fitted = _fit_marks(marks, apart, epochs)
    needed = None
    if fitted is None:
        needed = next((n for n in range(epochs + 1, max(epochs, reference_epochs) + 1)
                       if _fit_marks(marks, apart, n) is not None),
                      max(epochs + 1, reference_epochs))
        fitted = {mark: round(mark * epochs) for mark in marks}
    return {value: fitted[value.fraction(reference_epochs)]
            for group in groups for value in group}, needed


#: Hyper-parameters every run of a pack must share (:mod:`ltbench.run.packing`): they decide the
#: data, the network and the lockstep of its batches; the engine checks them again.
PACK_SHARED_HPARAMS = ("backbone", "epochs", "batch_size", "eval_every", "pad", "pad_mode",
                       "mean", "std", "nesterov")

#: Hyper-parameters any run may set with ``--set`` but that are part of a run's resolved dict
#: only when set, so the ids of runs that never set them do not change: the training sampler
#: (:mod:`ltbench.engine.samplers`) and the size of the balanced validation split
#: (:func:`ltbench.datasets.profiles.split_with_validation`); the values are their meanings
#: when absent.
OPTIONAL_DEFAULTS = {"sampler": "instance-balanced", "val_per_class": 0}

#: The training samplers (:mod:`ltbench.engine.samplers`); the keys that name one.
SAMPLERS = ("instance-balanced", "class-balanced", "square-root", "progressively-balanced")
SAMPLER_KEYS = ("sampler", "stage2_sampler")

#: Counts that make no sense below one.
AT_LEAST_ONE = ("epochs", "batch_size", "eval_every", "meta_batch_size")
#: Settings the engine rejects when negative (torch.optim.SGD's, and the crop padding, which
#: would crop instead): bad input, not a failed run.
NON_NEGATIVE = ("lr", "momentum", "weight_decay", "pad")


def _parse_scalar(key: str, text: str, like: Any) -> Any:
    try:
        if isinstance(like, bool):
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(like, (int, EpochOf)):
            return parse_int(text, f"--set {key}")
        if isinstance(like, float):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        return str(text)
    except ValueError:
        kind = "EpochOf" if isinstance(like, EpochOf) else type(like).__name__
        kind = {"EpochOf": "an integer", "int": "an integer", "float": "a finite number",
                "bool": "true or false"}.get(kind, kind)
        raise BadInput(f"--set {key}={text}: expected {kind}") from None


def parse_value(key: str, text: str, like: Any) -> Any:
    """Parse the text of ``--set key=text`` to the type of the default ``like``."""
    if isinstance(like, tuple):
        parts = [p for p in text.split(",") if p.strip()]
        if not parts:
            raise BadInput(f"--set {key}={text}: expected a comma-separated list")
        return tuple(_parse_scalar(key, p, like[0] if like else "") for p in parts)
    return _parse_scalar(key, text, like)


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``['lr=0.05', 'gamma=2']`` → ``{'lr': '0.05', 'gamma': '2'}`` (values parsed later)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise BadInput(f"--set expects key=value, got '{item}'")
        out[key] = value.strip()
    return out


def _materialise(value: Any, epoch_map: Mapping[EpochOf, int]) -> Any:
    if isinstance(value, EpochOf):
        return epoch_map[value]
    if isinstance(value, tuple):
        return tuple(_materialise(v, epoch_map) for v in value)
    return value


def resolve(dataset_defaults: Mapping[str, Any], method_defaults: Mapping[str, Any],
            overrides: Mapping[str, str], epochs: int | None = None,
            choices: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The resolved hyper-parameters of one (dataset, method) pair; see the module docstring.
    Every value is checked (:func:`check_values`, with the method's ``choices``).

    Keys of ``overrides`` that neither default set knows are ignored here: the grid rejects a
    key only when no (dataset, method) pair of the grid knows it.
    """
    defaults = {**dataset_defaults, **method_defaults}
    reference_epochs = int(defaults["epochs"])
    if epochs is not None:
        if epochs < 1:
            raise BadInput(f"--epochs must be at least 1, got {epochs}")
        defaults["epochs"] = epochs
    if "epochs" in overrides:
        defaults["epochs"] = parse_value("epochs", overrides["epochs"], 0)
    # Explicit overrides are taken as given, so they take no part in the shape either.
    rescaled = {k: v for k, v in defaults.items() if k not in overrides}
    epoch_map, _ = rescaled_epochs(rescaled, int(defaults["epochs"]), reference_epochs)
    resolved = {k: _materialise(v, epoch_map) for k, v in rescaled.items()}
    for key, text in overrides.items():
        if key in defaults:
            resolved[key] = parse_value(key, text, defaults[key])
        elif key in OPTIONAL_DEFAULTS:
            resolved[key] = parse_value(key, text, OPTIONAL_DEFAULTS[key])
    for key in AT_LEAST_ONE:
        if key in resolved and resolved[key] < 1:
            raise BadInput(f"--set {key} must be at least 1, got {resolved[key]}")
    for key in NON_NEGATIVE:
        if key in resolved and resolved[key] < 0:
            raise BadInput(f"--set {key} must be >= 0, got {resolved[key]}")
    check_values(resolved, choices)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(resolved.items())}


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def check_values(hparams: Mapping[str, Any],
                 choices: Mapping[str, Sequence[str]] | None = None) -> None:
    """:class:`BadInput` naming the key, the value and what is allowed, for a value the engine
    would refuse once training started (a failed run instead of bad input).

    The allowed values come from the code that consumes them: ``backbone`` from
    :func:`~ltbench.engine.models.backbone_names`, ``pad_mode`` from
    :data:`~ltbench.engine.augment.PAD_MODES`, ``lr_schedule`` from
    :data:`~ltbench.engine.train.LR_SCHEDULES`, the sampler keys from :data:`SAMPLERS`, and
    ``choices``, the method's own (:attr:`Method.choices <ltbench.api.Method.choices>`);
    ``mean`` and ``std`` hold one value per colour channel
    (:data:`~ltbench.engine.augment.CHANNELS`), ``std`` positive (it divides).
    """
    from .engine.augment import CHANNELS, PAD_MODES
    from .engine.models import backbone_names
    from .engine.train import LR_SCHEDULES

    allowed = {"backbone": backbone_names(), "pad_mode": PAD_MODES,
               "lr_schedule": LR_SCHEDULES, **{key: SAMPLERS for key in SAMPLER_KEYS},
               **(choices or {})}
    for key, values in allowed.items():
        if key in hparams and hparams[key] not in values:
            raise BadInput(f"--set {key}={_text(hparams[key])}: expected one of "
                           f"{', '.join(values)}")
    for key in ("mean", "std"):
        if key in hparams and len(hparams[key]) != CHANNELS:
            raise BadInput(f"--set {key}={_text(hparams[key])}: expected {CHANNELS} "
                           f"comma-separated values (one per colour channel), got "
                           f"{len(hparams[key])}")
    if "std" in hparams and min(hparams["std"]) <= 0:
        raise BadInput(f"--set std={_text(hparams['std'])}: every value must be > 0")


def protocol_defaults(protocols: Mapping[str, Mapping[str, Any]], default_protocol: str,
                      method_protocol: str | None, overrides: Mapping[str, str]) -> dict[str, Any]:
    """The defaults of the run's protocol with ``"protocol": name`` added.

    The name is ``overrides["protocol"]`` (``--set protocol=X``) if given, else
    ``method_protocol`` (the method's class attribute) if not None, else ``default_protocol``.
    A name the dataset does not know is :class:`BadInput` listing the known ones.
    """
    name = overrides.get("protocol", method_protocol or default_protocol)
    if name not in protocols:
        raise BadInput(f"unknown protocol '{name}'; known: {', '.join(protocols)}")
    return {**protocols[name], "protocol": name}


def resolve_run(dataset: Any, method: Any | None, overrides: Mapping[str, str],
                epochs: int | None = None) -> dict[str, Any]:
    """The resolved hyper-parameters of ``method`` (a method plugin class, or None for the
    dataset alone, as ``ltbench data`` needs) on ``dataset`` (a dataset plugin class or
    instance); see the module docstring for the order."""
    defaults = protocol_defaults(dataset.protocols, dataset.default_protocol,
                                 method.protocol if method is not None else None, overrides)
    if method is None:
        return resolve(defaults, {}, overrides, epochs)
    return resolve(defaults, method.defaults, overrides, epochs, method.choices)


def schedule_shortfall(dataset: Any, method: Any, overrides: Mapping[str, str],
                       epochs: int) -> int | None:
    """The fewest epochs that keep the shape of ``method``'s schedule on ``dataset``
    (:func:`rescaled_epochs`) where a run of ``epochs`` (its resolved count) is too short for
    it, else None. Overridden keys take no part, as in :func:`resolve`."""
    defaults = {**protocol_defaults(dataset.protocols, dataset.default_protocol,
                                    method.protocol, overrides), **method.defaults}
    reference_epochs = int(defaults["epochs"])
    kept = {k: v for k, v in defaults.items() if k not in overrides}
    return rescaled_epochs(kept, epochs, reference_epochs)[1]
