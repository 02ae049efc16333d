"""Pack scheduling: which runs share a pack, and ``ltbench run`` packed vs unpacked."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_SYNTHETIC, tree_snapshot

from ltbench import registry
from ltbench.cli.run import _pack_size
from ltbench.errors import BadInput
from ltbench.hparams import parse_overrides
from ltbench.run import grid
from ltbench.run.packing import plan_packs
from ltbench.store.result_store import ResultStore

TINY = [a for s in TINY_SYNTHETIC for a in ("--set", s)]


def ltbench(*args, cwd, check=True):
    proc = subprocess.run([sys.executable, "-m", "ltbench", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def grid_specs(methods: str, imb: list[float], seeds: list[int], *overrides: str):
    return grid.expand(registry.parse_names("method", methods), ["synthetic-lt"], imb, seeds,
                       overrides=parse_overrides(list(TINY_SYNTHETIC) + list(overrides)),
                       epochs=2)


def describe(packs) -> list[list[tuple]]:
    return [[(s.method, s.imb_factor, s.seed) for s in pack] for pack in packs]


def test_compatible_runs_share_packs_in_grid_order():
    specs = grid_specs("ce,ldam,focal,l2rw,cb-ce", [10.0, 4.0], [0, 1], "protocol=jamal",
                       "n_max=40")
    packs = plan_packs(specs, 3)
    assert describe(packs) == [
        # IF 10: the linear-head loss methods chunked by 3 in grid order, then ldam (cosine
        # head), then l2rw (meta-learning: alone, one pack per run); the same for IF 4.
        [("ce", 10.0, 0), ("ce", 10.0, 1), ("focal", 10.0, 0)],
        [("focal", 10.0, 1), ("cb-ce", 10.0, 0), ("cb-ce", 10.0, 1)],
        [("ldam", 10.0, 0), ("ldam", 10.0, 1)],
        [("l2rw", 10.0, 0)], [("l2rw", 10.0, 1)],
        [("ce", 4.0, 0), ("ce", 4.0, 1), ("focal", 4.0, 0)],
        [("focal", 4.0, 1), ("cb-ce", 4.0, 0), ("cb-ce", 4.0, 1)],
        [("ldam", 4.0, 0), ("ldam", 4.0, 1)],
        [("l2rw", 4.0, 0)], [("l2rw", 4.0, 1)],
    ]
    assert describe(plan_packs(specs, 3)) == describe(packs)  # deterministic
    assert describe(plan_packs(specs, 1)) == [[(s.method, s.imb_factor, s.seed)] for s in specs]


def test_runs_that_step_differently_do_not_share_a_pack():
    base = grid_specs("ce", [10.0], [0])
    other_batch = grid_specs("ce", [10.0], [1], "batch_size=8")
    other_lr = grid_specs("ce", [10.0], [2], "lr=0.05")  # per-run values may differ
    packs = plan_packs(base + other_batch + other_lr, 8)
    assert describe(packs) == [[("ce", 10.0, 0), ("ce", 10.0, 2)], [("ce", 10.0, 1)]]
    # the grouped network is a ResNet-32: runs of another backbone train alone
    other_backbone = [dataclasses.replace(spec, hparams={**spec.hparams, "backbone": "resnet10"})
                      for spec in grid_specs("ce", [10.0], [0, 1])]
    assert [len(pack) for pack in plan_packs(other_backbone, 8)] == [1, 1]


@pytest.mark.slow
def test_pack_size_must_be_auto_or_positive(tmp_path):
    proc = ltbench("run", "--methods", "ce", "--datasets", "synthetic-lt", "--device", "cpu",
                   "--pack-size", "0", *TINY, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Error: --pack-size must be at least 1, got 0"]
    assert tree_snapshot(tmp_path) == {}
    for bad, message in (("-2", "at least 1, got -2"), ("many", "'many' is not an integer"),
                         ("1.5", "'1.5' is not an integer")):
        with pytest.raises(BadInput, match=message):
            _pack_size(bad)
    assert _pack_size("auto") is None and _pack_size("16") == 16


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    """The same grid trained with --pack-size 1 and 4: ce + focal (one linear-head pack of 4
    runs) and ldam (a cosine-head pack of 2), 1 epoch, in fp32 whatever the CPU (``auto`` is
    bf16 on CPUs with native bf16, whose grouped and plain kernels round differently by more
    than 1e-3 on some: measured on an AMD EPYC with AVX512-BF16). A small learning rate keeps
    fp32 rounding (which differs between the grouped and the plain kernels) from moving an
    argmax on this tiny set (see test_packs.py)."""
    out = {}
    for pack_size in (1, 4):
        work = tmp_path_factory.mktemp(f"pack{pack_size}")
        proc = ltbench("run", "--methods", "ce,focal,ldam", "--datasets", "synthetic-lt",
                       "--imb", "10", "--seeds", "0,1", "--epochs", "1", "--device", "cpu",
                       "--pack-size", pack_size, "--precision", "fp32", "--set", "lr=0.002",
                       *TINY, cwd=work)
        out[pack_size] = (ResultStore(work / "results"), proc.stderr)
    return out


@pytest.mark.slow
def test_packed_grid_trains_in_packs(grids):
    _, unpacked_log = grids[1]
    _, packed_log = grids[4]
    assert "in packs of up to 1" in unpacked_log and "pack of" not in unpacked_log
    assert "[1/6] synthetic-lt imb=10 ce seed=0" in unpacked_log
    assert "in packs of up to 4" in packed_log
    assert ("[1-4/6] pack of 4: synthetic-lt imb=10 ce seed=0, ce seed=1, focal seed=0, "
            "focal seed=1") in packed_log
    assert "[5-6/6] pack of 2: synthetic-lt imb=10 ldam seed=0, ldam seed=1" in packed_log


@pytest.mark.slow
def test_packed_grid_gives_the_unpacked_records(grids):
    unpacked_store, packed_store = grids[1][0], grids[4][0]
    unpacked = unpacked_store.read().sort_values("run_id").reset_index(drop=True)
    packed = packed_store.read().sort_values("run_id").reset_index(drop=True)
    assert len(packed) == 6 and set(packed["status"]) == {"ok"}
    assert packed["run_id"].tolist() == unpacked["run_id"].tolist()  # packing is not identity
    # Each record says how many runs shared its pack's device time (ce/focal 4, ldam 2).
    assert packed.groupby("method")["pack_size"].unique().map(list).to_dict() == \
        {"ce": [4], "focal": [4], "ldam": [2]}
    assert set(unpacked["pack_size"]) == {1}
    for column in ("top1_acc", "many_acc", "medium_acc", "few_acc", "best_epoch"):
        pd.testing.assert_series_equal(packed[column], unpacked[column])
    for packed_acc, alone_acc in zip(packed["per_class_acc"], unpacked["per_class_acc"]):
        np.testing.assert_array_equal(packed_acc, alone_acc)
    for run_id in packed["run_id"]:
        packed_curves, alone_curves = packed_store.curves(run_id), unpacked_store.curves(run_id)
        np.testing.assert_array_equal(packed_curves["lr"], alone_curves["lr"])
        np.testing.assert_array_equal(packed_curves["test_acc"], alone_curves["test_acc"])
        np.testing.assert_allclose(packed_curves["train_loss"], alone_curves["train_loss"],
                                   rtol=1e-3)
