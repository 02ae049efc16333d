"""The contract every registered method must meet, run on synthetic-lt for a few steps."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from helpers import TINY_SYNTHETIC

from ltbench import registry
from ltbench.hparams import parse_overrides
from ltbench.metrics.shifted import SHIFTED_SETS
from ltbench.run import grid
from ltbench.run.runner import run_grid
from ltbench.run.stages import stage1_spec
from ltbench.store.result_store import ResultStore


@pytest.mark.parametrize("method", list(registry.plugins("method")))
def test_method_trains_and_publishes_a_record(method, tmp_path):
    cls = registry.load("method", method)
    assert cls.head in ("linear", "cosine")
    assert cls.summary and "\n" not in cls.summary and cls.paper
    (spec,) = grid.expand([method], ["synthetic-lt"], [4.0], [0],
                          overrides=parse_overrides(TINY_SYNTHETIC), epochs=2)
    store = ResultStore(tmp_path)
    store.ensure_writable()
    (record,) = run_grid([spec], store, tmp_path, torch.device("cpu"))
    assert record["status"] == "ok", record["error"]
    stage1 = stage1_spec(spec)
    # A two-stage method's stage-1 run is trained on the way and published too.
    expected_ids = {spec.run_id} | ({stage1.run_id} if stage1 is not None else set())
    stored = store.read().set_index("run_id")
    assert set(stored.index) == expected_ids
    assert (store.read()["status"] == "ok").all()
    row = stored.loc[spec.run_id]
    assert row["method"] == method and len(row["per_class_acc"]) == 4
    assert 0.0 <= row["top1_acc"] <= 100.0
    curves = store.curves(spec.run_id)
    # Stage-2 runs' curves are their own epochs (none for a post-hoc classifier).
    epochs = spec.hparams.get("stage2_epochs", 0) if stage1 is not None else 2
    assert isinstance(curves, pd.DataFrame) and len(curves) == epochs
    assert all(math.isfinite(v) for v in curves["train_loss"])
    evals = store.artifact("evals", spec.run_id)
    assert list(evals["eval_set"]) == [name for name, _, _ in SHIFTED_SETS]
    assert (evals["run_id"] == spec.run_id).all()


@pytest.mark.parametrize("method", list(registry.plugins("method")))
def test_method_loss_is_a_differentiable_scalar(method):
    cls = registry.load("method", method)
    counts = torch.tensor([50.0, 20.0, 5.0], dtype=torch.float64)
    (spec,) = grid.expand([method], ["synthetic-lt"], [10.0], [0])
    hparams = spec.hparams
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    instance = cls(counts, hparams)
    for epoch in (0, hparams["epochs"] - 1):
        loss = instance.loss(logits, targets, epoch)
        assert loss.shape == () and torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
