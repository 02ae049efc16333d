"""The ``ltbench run`` lines that plan a store's runs again, regenerated from their records.

One line per (method, dataset, imbalance factor, profile, split seed, resolved
hyper-parameters) with its seeds: the settings that differ from what the command resolves by
default become ``--set`` values, and each line is checked to plan exactly the records' run ids
(:func:`ltbench.run.grid.expand`). A configuration that cannot be regenerated (a method no
longer registered, a run of another harness version) is a comment saying why. Used by
``ltbench report --bundle`` (:mod:`ltbench.report.bundle`).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import pandas as pd

from ..errors import BadInput
from ..spec import HARNESS_VERSION, format_imb
from . import grid


def _set_text(value: Any) -> str:
    """``value`` as ``--set`` parses it back (:func:`ltbench.hparams.parse_value`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_set_text(v) for v in value)
    return json.dumps(value) if isinstance(value, float) else str(value)


def _command(method: str, dataset: str, imb: float, profile: str, split_seed: int,
             seeds: list[int], hparams: dict[str, Any], run_ids: list[str]) -> str:
    """The ``ltbench run`` line planning ``run_ids`` (module doc), or a comment why none
    does."""
    what = f"{method} on {dataset} IF {format_imb(imb)}"
    plan = dict(methods=[method], datasets=[dataset], imb_factors=[imb], seeds=seeds,
                profile=profile, split_seed=split_seed, epochs=int(hparams["epochs"]))
    try:
        defaults = grid.expand(**plan)[0].hparams
        overrides = {key: _set_text(value) for key, value in sorted(hparams.items())
                     if key != "epochs" and json.loads(json.dumps(defaults.get(key))) != value}
        planned = [spec.run_id for spec in grid.expand(**plan, overrides=overrides)]
    except (BadInput, KeyError, ValueError) as exc:
        return f"# {what}: cannot be regenerated ({exc})"
    if planned != run_ids:
        return (f"# {what}: no command of ltbench {HARNESS_VERSION} plans these runs again "
                f"(trained by another version, or with settings it no longer resolves)")
    words = ["ltbench", "run", "--methods", method, "--datasets", dataset,
             "--imb", format_imb(imb), "--seeds", ",".join(map(str, seeds)),
             "--profile", profile, "--split-seed", str(split_seed),
             "--epochs", str(hparams["epochs"])]
    for key, text in overrides.items():
        words += ["--set", f"{key}={text}"]
    return " ".join(shlex.quote(word) for word in words)


def rerun_commands(records: pd.DataFrame) -> list[str]:
    """One line per configuration cell of ``records`` (module doc), in record order."""
    lines = []
    keys = ["method", "dataset", "imb_factor", "profile", "split_seed", "hparams"]
    for (method, dataset, imb, profile, split_seed, hparams), runs in records.groupby(
            keys, sort=False):
        runs = runs.sort_values("seed")
        lines.append(_command(method, dataset, float(imb), profile, int(split_seed),
                              [int(seed) for seed in runs["seed"]], json.loads(hparams),
                              list(runs["run_id"])))
    return lines
