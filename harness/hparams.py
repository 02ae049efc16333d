"""Hyper-parameters: their resolution for one run from a protocol, and ``--set`` parsing.

A run's hyper-parameters are one flat dict, resolved in this order (later wins):

1. the defaults of the run's protocol, one of the dataset's ``protocols`` (its reference training
   schedule, augmentation and options), plus ``"protocol": name``; the name is
   ``--set protocol=X`` if given, else the method's ``protocol`` attribute, else the dataset's
   ``default_protocol`` (:func:`protocol_defaults`);
2. the method's defaults (its own knobs, e.g. focal ``gamma``);
3. ``--epochs``, which also rescales every epoch-valued default (see :class:`EpochOf`);
4. ``--set key=value`` overrides, taken exactly as given.

:func:`resolve_run` does all four for a (dataset, method) pair; it is the only place a run's
hyper-parameters are decided.

Unknown keys are errors; values are parsed to the type of the default they replace. The fully
resolved dict is stored with every run and is part of its id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import BadInput
from .integers import parse_int


@dataclass(frozen=True)
class EpochOf:
    """An epoch index stated for the protocol's reference length (``epochs`` default).

    When a run uses another epoch count, the index is scaled proportionally and rounded, so
    ``--epochs 20`` keeps the LDAM-DRW schedule's shape: decays at 16 and 18, DRW from 16.
    """

    epoch: int

    def at(self, epochs: int, reference_epochs: int) -> int:
        return int(round(self.epoch * epochs / reference_epochs))


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


def _materialise(value: Any, epochs: int, reference_epochs: int) -> Any:
    if isinstance(value, EpochOf):
        return value.at(epochs, reference_epochs)
    if isinstance(value, tuple):
        return tuple(_materialise(v, epochs, reference_epochs) for v in value)
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
    n_epochs = int(defaults["epochs"])
    resolved = {k: _materialise(v, n_epochs, reference_epochs) for k, v in defaults.items()}
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
