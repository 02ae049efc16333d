"""The contract every registered method must meet, run on synthetic-lt for a few steps."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from helpers import TINY_SYNTHETIC

from ltbench import grid, registry
from ltbench.hparams import parse_overrides
from ltbench.runner import run_grid
from ltbench.store import ResultStore


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
    stored = store.read()
    assert list(stored["run_id"]) == [spec.run_id]
    assert stored.loc[0, "method"] == method and len(stored.loc[0, "per_class_acc"]) == 4
    assert 0.0 <= stored.loc[0, "top1_acc"] <= 100.0
    curves = store.curves(spec.run_id)
    assert isinstance(curves, pd.DataFrame) and len(curves) == 2
    assert all(math.isfinite(v) for v in curves["train_loss"])


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
