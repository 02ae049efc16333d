"""Small helpers shared by the tests."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

#: ``--set`` values that make a synthetic-lt run take about a second on one CPU core.
TINY_SYNTHETIC = ("classes=4", "n_max=24", "test_per_class=5", "batch_size=16")


def tree_snapshot(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size: compare before/after to prove nothing changed."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file()}


def make_record(run_id: str = "0123456789abcdef", **overrides) -> dict:
    """A complete, plausible record of one ok run; ``overrides`` replace columns."""
    record = {
        "run_id": run_id, "status": "ok", "error": None,
        "method": "ce", "dataset": "cifar10-lt", "imb_factor": 100.0, "profile": "exp",
        "split_seed": 0, "seed": 1, "epochs": 200,
        "hparams": '{"epochs":200,"lr":0.1}', "harness_version": "0.1",
        "top1_acc": 70.36, "top1_err": 29.64, "top1_err_best_epoch": 28.9, "best_epoch": 187,
        "best_epoch_selected_on": "test",
        "many_acc": 90.5, "medium_acc": 61.25, "few_acc": math.nan,
        "n_many": 7, "n_medium": 3, "n_few": 0,
        "per_class_acc": [95.0, 91.5, 88.0, 90.0, 89.5, 92.0, 87.5, 70.0, 60.5, 53.25],
        "train_class_counts": [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],
        "wall_s": 1234.5, "device": "cpu", "torch_version": "2.4.0",
        "git_commit": "a" * 40,
        "started_utc": datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc),
        "finished_utc": datetime(2025, 3, 1, 12, 20, 34, 623456, tzinfo=timezone.utc),
    }
    record.update(overrides)
    return record


def failed_record(run_id: str, **overrides) -> dict:
    """A failed run: metrics unknown (NaN / None), error message set."""
    metrics = {name: math.nan for name in ("top1_acc", "top1_err", "top1_err_best_epoch",
                                           "many_acc", "medium_acc", "few_acc")}
    metrics.update(best_epoch=None, n_many=math.nan, n_medium=None, n_few=None,
                   per_class_acc=None, train_class_counts=None, best_epoch_selected_on=None)
    return make_record(run_id, status="failed", error="RuntimeError: CUDA out of memory",
                       **{**metrics, **overrides})
