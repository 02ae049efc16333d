"""Small helpers shared by the tests."""

from __future__ import annotations

import math
import os
import signal
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ltbench import registry
from ltbench.metrics.headline import summarize
from ltbench.store.result_store import ResultStore


def with_default_ctrl_c() -> None:
    """``preexec_fn`` of a child that a test sends SIGINT as Ctrl-C would: Python's default
    SIGINT handling, as in a foreground process, even when the suite itself was started in the
    background (SIGINT is then ignored, and children inherit that; ltbench leaves an ignored
    SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


#: ``--set`` values that make a synthetic-lt run take about a second on one CPU core.
TINY_SYNTHETIC = ("classes=4", "n_max=24", "test_per_class=5", "batch_size=16")

#: The names ltbench itself registers (third-party plugins installed here may add more).
BUILTIN_METHODS = {"ce", "focal", "cb-ce", "cb-focal", "ce-drw", "ldam", "ldam-drw",
                   "balanced-softmax", "logit-adjust", "meta-ce", "meta-focal", "meta-ldam",
                   "cb-finetune", "l2rw", "mwn", "meta-set-finetune", "crt", "lws", "tau-norm",
                   "ncm", "pc-softmax", "logit-adjust-posthoc", "lade"}
BUILTIN_DATASETS = {"cifar10-lt", "cifar100-lt", "imagenet-lt", "inat2017", "inat2018", "places-lt",
                    "synthetic-lt"}


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
        "selection_rule": "last", "stage1_run_id": "fedcba9876543210",
        "precision": "bf16", "memory_format": "channels_last", "deterministic": False,
        "artifact_error": None, "pack_size": 1,
        "method_family": method_family(overrides.get("method", "ce")), "compile_mode": None,
        "ece": 4.25,
    }
    record.update(overrides)
    return record


def method_family(method: str) -> str | None:
    """The family a run of ``method`` records: its class's, None for an unregistered name."""
    plugin = registry.plugins("method").get(method)
    return plugin.load().family if plugin is not None else None


def failed_record(run_id: str, **overrides) -> dict:
    """A failed run: metrics unknown (NaN / None), error message set."""
    metrics = {name: math.nan for name in ("top1_acc", "top1_err", "top1_err_best_epoch",
                                           "many_acc", "medium_acc", "few_acc", "ece")}
    metrics.update(best_epoch=None, n_many=math.nan, n_medium=None, n_few=None,
                   per_class_acc=None, train_class_counts=None, best_epoch_selected_on=None)
    return make_record(run_id, status="failed", error="RuntimeError: CUDA out of memory",
                       **{**metrics, **overrides})


def exp_counts(n_max: int, classes: int, imb: float) -> list[int]:
    """LDAM-DRW's exponential profile (kaidic/LDAM-DRW : imbalance_cifar.py)."""
    return [int(n_max * (1 / imb) ** (i / (classes - 1))) for i in range(classes)]


def summarized_record(run_id: str, *, method: str, dataset: str, imb: float, seed: int,
                      base_err: float, epochs: int = 200, protocol: str = "ldam",
                      **overrides) -> dict:
    """An ok record whose metrics are consistent: derived from per-class correct counts.

    Class ``c`` of a 100-image-per-class test set gets ``correct = 100 - base_err`` plus a
    head-to-tail slope, so ``top1_err`` is ``base_err`` up to the slope's mean.
    """
    classes = 10 if dataset == "cifar10-lt" else 100
    counts = exp_counts(5000 if classes == 10 else 500, classes, imb)
    slope = [20.0 * (c / (classes - 1) - 0.5) for c in range(classes)]
    correct = [min(100, max(0, round(100 - base_err - s))) for s in slope]
    metrics = summarize(correct, [100] * classes, counts)
    return make_record(
        run_id, method=method, dataset=dataset, imb_factor=float(imb), seed=seed,
        epochs=epochs, hparams=f'{{"epochs":{epochs},"lr":0.1,"protocol":"{protocol}"}}',
        top1_err_best_epoch=metrics["top1_err"] - 0.5, train_class_counts=counts,
        **{**metrics, **overrides})


def curves_frame(epochs: int, final_err: float) -> pd.DataFrame:
    """Per-epoch curves as the engine writes them, test evaluated every epoch."""
    epoch = list(range(epochs))
    return pd.DataFrame({
        "epoch": epoch, "lr": [0.1] * epochs,
        "train_loss": [2.3 / (1 + e) for e in epoch],
        "train_acc": [min(99.0, 10.0 + e) for e in epoch],
        "test_acc": [max(0.0, 100 - final_err - 40.0 / (1 + e)) for e in epoch],
        "train_s": [1.0] * epochs, "eval_s": [0.1] * epochs})


def eps_frame(train_counts: list[int], epoch: int, shift: float = 0.0) -> pd.DataFrame:
    """An ε histogram artifact (long format): 10 bins of width 0.2 from ``-1 + shift``, shared
    by the classes as the engine bins them; rarer classes get larger ε."""
    rows = []
    for quantity in ("eps", "weight"):
        for cls, count in enumerate(train_counts):
            centre = 4 if count > 100 else 6 if count >= 20 else 8
            for b in range(10):
                rows.append({"quantity": quantity, "epoch": epoch, "class": cls, "bin": b,
                             "lo": -1.0 + shift + 0.2 * b, "hi": -0.8 + shift + 0.2 * b,
                             "count": max(0, 5 - abs(b - centre))})
    return pd.DataFrame(rows)


def eps_summary_frame(train_counts: list[int], epoch: int, shift: float = 0.0) -> pd.DataFrame:
    """The ``eps_summary`` artifact matching :func:`eps_frame`: each class's mean is the centre
    of its peak bin, ``-0.9 + shift + 0.2 · peak``."""
    rows = []
    for quantity in ("eps", "weight"):
        for cls, count in enumerate(train_counts):
            peak = 4 if count > 100 else 6 if count >= 20 else 8
            mean = -0.9 + shift + 0.2 * peak
            rows.append({"quantity": quantity, "epoch": epoch, "class": cls, "n": 25,
                         "mean": mean, "std": 0.2, "q05": mean - 0.4, "q25": mean - 0.2,
                         "q50": mean, "q75": mean + 0.2, "q95": mean + 0.4})
    return pd.DataFrame(rows)


def small_store(root: Path):
    """A store of several methods, factors and seeds, with curves, ε artifacts and holes.

    cifar10-lt at IF 100 and 10: ce, focal, ldam-drw and meta-ce over seeds 0-2 (focal seed 2
    failed; ldam-drw at IF 10 has no seed 2), meta-ce with ε histograms, plus a 1-epoch ce
    smoke run (meta-ce under the ``jamal`` protocol, the others ``ldam``); cifar100-lt at IF 100:
    ce and ldam-drw over seeds 0-1.
    """
    store = ResultStore(root)
    base = {"ce": 30.0, "focal": 29.0, "ldam-drw": 23.0, "meta-ce": 22.0}
    for imb in (100.0, 10.0):
        for method, err in base.items():
            for seed in (0, 1, 2):
                run_id = f"c10-{method}-{int(imb)}-{seed}"
                if method == "focal" and seed == 2:
                    store.write(failed_record(
                        run_id, method=method, imb_factor=imb, seed=seed,
                        hparams='{"epochs":200,"lr":0.1,"protocol":"ldam"}'))
                    continue
                if method == "ldam-drw" and imb == 10.0 and seed == 2:
                    continue
                shift = err if imb == 100.0 else err / 2
                record = summarized_record(run_id, method=method, dataset="cifar10-lt",
                                           imb=imb, seed=seed, base_err=shift + seed,
                                           protocol="jamal" if method == "meta-ce" else "ldam")
                artifacts = {"curves": curves_frame(8, record["top1_err"])}
                if method == "meta-ce":  # each seed's bins start 0.1 further right
                    artifacts["eps"] = eps_frame(record["train_class_counts"], 199, 0.1 * seed)
                    artifacts["eps_summary"] = eps_summary_frame(record["train_class_counts"],
                                                                 199, 0.1 * seed)
                store.write(record, artifacts)
    store.write(summarized_record("c10-ce-smoke", method="ce", dataset="cifar10-lt", imb=100,
                                  seed=0, base_err=80.0, epochs=1),
                {"curves": curves_frame(1, 80.0)})
    for method, err in (("ce", 61.0), ("ldam-drw", 57.0)):
        for seed in (0, 1):
            record = summarized_record(f"c100-{method}-{seed}", method=method,
                                       dataset="cifar100-lt", imb=100, seed=seed,
                                       base_err=err + seed, device="NVIDIA H200",
                                       torch_version="2.4.0+cu121", wall_s=1800.0)
            store.write(record, {"curves": curves_frame(8, record["top1_err"])})
    return store


def install_plugin(site: Path, module: str, source: str, entry_points: str) -> None:
    """A real installed distribution on the ``sys.path`` folder ``site``: the module
    ``<module>.py`` with ``source`` and a dist-info whose ``entry_points.txt`` is
    ``entry_points``; prepend ``site`` to ``sys.path`` (or PYTHONPATH) to install it."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def flip_a_value_byte(path, keep_stamp: bool) -> None:
    """Damage ``path`` in place (a byte of the first data page); with ``keep_stamp`` its size,
    modification time and inode stay what they were, as after a media error."""
    info = path.stat()
    data = bytearray(path.read_bytes())
    data[len(b"PAR1") + 40] ^= 0xFF
    with open(path, "r+b") as handle:
        handle.write(data)
    if keep_stamp:
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
