"""Run ids do not move when code moves: every built-in (method, dataset) pair's grid, with the
default and with non-default options, has the ids recorded in ``tests/golden/run_ids.json``.

A run id is the store's key (:mod:`ltbench.spec`): an id that changes orphans every stored
record of that run. The fixture was written by :func:`grids` before the harness was split into
sub-packages (issue 15) and rewritten once on purpose since (issue 18: a rescaled schedule keeps
its shape, so the 20-epoch grid's warm-up is 1 epoch, not 0, and DRW starts at 72 of the
ImageNet-style protocols' 90 epochs instead of never); regenerate it only together with
``HARNESS_VERSION`` or with such a deliberate change of the runs' hyper-parameters::

    .venv/bin/python tests/test_run_ids.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ltbench.run import grid

GOLDEN = Path(__file__).parent / "golden" / "run_ids.json"

METHODS = ["ce", "focal", "cb-ce", "cb-focal", "ce-drw", "ldam", "ldam-drw", "balanced-softmax",
           "logit-adjust", "meta-ce", "meta-focal", "meta-ldam", "cb-finetune", "l2rw", "mwn",
           "meta-set-finetune", "crt", "lws", "tau-norm", "ncm", "pc-softmax",
           "logit-adjust-posthoc", "lade"]
DATASETS = ["cifar10-lt", "cifar100-lt", "synthetic-lt", "imagenet-lt", "places-lt", "inat2017",
            "inat2018"]

#: Named grids over the built-in plugins (third-party plugins never enter: names are explicit).
OPTIONS = {
    "defaults": dict(imb_factors=None, seeds=[0]),
    "imb-seeds": dict(imb_factors=[100.0, 50.0], seeds=[1, 2]),
    "step-split-epochs": dict(imb_factors=[10.0], seeds=[0], profile="step", split_seed=3,
                              epochs=20),
    "jamal-set": dict(imb_factors=[100.0], seeds=[0], overrides={"protocol": "jamal",
                                                                 "lr": "0.05"}),
}


def grids() -> dict[str, list[str]]:
    """``"<dataset> <grid name>"`` → the run ids, in grid order."""
    out = {}
    for dataset in DATASETS:
        for name, options in OPTIONS.items():
            if dataset not in ("cifar10-lt", "cifar100-lt", "synthetic-lt"):
                if name == "jamal-set":
                    continue  # only the CIFAR-shaped datasets have the jamal protocol
                # Their factor and profile are fixed by the split lists.
                options = {**options, "imb_factors": None, "profile": "exp"}
            specs = grid.expand(METHODS, [dataset], all_methods=True, **options)
            out[f"{dataset} {name}"] = [s.run_id for s in specs]
    return out


def test_run_ids_match_the_golden_fixture():
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    now = grids()
    assert now.keys() == golden.keys()
    changed = {key: sum(a != b for a, b in zip(now[key], golden[key])) or "length"
               for key in golden if now[key] != golden[key]}
    assert changed == {}
    assert sum(map(len, golden.values())) > 300


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(json.dumps(grids(), indent=1) + "\n", encoding="utf-8")
