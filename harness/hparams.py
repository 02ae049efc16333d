"""Hyper-parameters: reference protocols, their resolution for one run, and ``--set`` parsing.

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


#: The LDAM-DRW CIFAR protocol (kaidic/LDAM-DRW : cifar_train.py; protocols.md §2.1):
#: ResNet-32, 200 epochs, batch 128, SGD momentum 0.9 without Nesterov, weight decay 2e-4,
#: lr 0.1 with a 5-epoch linear warm-up (0.02, 0.04, ... per epoch), x0.01 at epochs 160 and
#: 180 (0-based), RandomCrop(32, padding=4) with zero padding + horizontal flip, normalisation
#: mean (0.4914, 0.4822, 0.4465) / std (0.2023, 0.1994, 0.2010). Test set evaluated every epoch.
LDAM_CIFAR = {
    "backbone": "resnet32",
    "epochs": 200,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 2e-4,
    "warmup_epochs": EpochOf(5),
    "lr_milestones": (EpochOf(160), EpochOf(180)),
    "lr_decay": 0.01,
    "pad": 4,
    "pad_mode": "zero",
    "mean": (0.4914, 0.4822, 0.4465),
    "std": (0.2023, 0.1994, 0.2010),
    "eval_every": 1,
    "meta_per_class": 0,
}

#: The Jamal et al. CIFAR protocol (abdullahjamal/Longtail_DA : C-LT/main.py; protocols.md §2.1,
#: §3.7): the same ResNet-32 with a linear head, 200 epochs, batch 100, SGD momentum 0.9 with
#: Nesterov, weight decay 5e-4, lr 0.1 without warm-up, x0.01 at 0-based epochs 159 and 179 (the
#: reference calls ``adjust_learning_rate(optimizer, epoch + 1)`` and decays at e >= 160 / 180),
#: 4-pixel reflect padding + crop + flip, normalisation mean (125.3, 123.0, 113.9)/255 and std
#: (63.0, 62.1, 66.7)/255, test set evaluated every epoch. ``meta_per_class`` = 10 images per
#: class are removed from the training split first as the balanced meta set (datasets.md §2.5).
JAMAL_CIFAR = {
    "backbone": "resnet32",
    "epochs": 200,
    "batch_size": 100,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "warmup_epochs": EpochOf(0),
    "lr_milestones": (EpochOf(159), EpochOf(179)),
    "lr_decay": 0.01,
    "pad": 4,
    "pad_mode": "reflect",
    "mean": (125.3 / 255, 123.0 / 255, 113.9 / 255),
    "std": (63.0 / 255, 62.1 / 255, 66.7 / 255),
    "eval_every": 1,
    "meta_per_class": 10,
}


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
