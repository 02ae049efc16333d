"""Two-stage methods, post-hoc corrections, LADE, samplers, the validation split and the shifted
test sets: hand-computed values, and the stage-1 sharing and test-set isolation properties."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import TINY_SYNTHETIC, make_record

import ltbench.engine.train as engine_train
from ltbench import registry
from ltbench.datasets.profiles import split_with_validation
from ltbench.engine.samplers import EpochSampler, class_probabilities
from ltbench.errors import BadInput
from ltbench.hparams import parse_overrides
from ltbench.methods.lade import lader_loss
from ltbench.methods.lws import ScaledLinear
from ltbench.methods.ncm import class_centroids
from ltbench.methods.tau_norm import TauNormalisedLinear
from ltbench.metrics.shifted import class_budgets, shifted_accuracies, shifted_mask
from ltbench.run import grid
from ltbench.run.runner import run_grid, train_run
from ltbench.run.stages import stage1_spec
from ltbench.store.result_store import ResultStore

CPU = torch.device("cpu")


class IdentityBackbone(nn.Module):
    """``features(x) = x`` under a linear head with given weights: logits by hand."""

    def __init__(self, weight: list[list[float]], bias: list[float]):
        super().__init__()
        self.head = nn.Linear(len(weight[0]), len(weight))
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor(weight))
            self.head.bias.copy_(torch.tensor(bias))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _spec(method: str, *extra: str, imb: float = 4.0, epochs: int = 1):
    (spec,) = grid.expand([method], ["synthetic-lt"], [imb], [0],
                          overrides=parse_overrides(TINY_SYNTHETIC + extra), epochs=epochs)
    return spec


# --- hand-computed logits ------------------------------------------------------------------

def test_tau_normalised_logits_by_hand():
    weight = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # row norms 5 and 1
    x = torch.tensor([[1.0, 2.0]])
    assert TauNormalisedLinear(weight, 1.0)(x)[0].tolist() == pytest.approx([2.2, 1.0])
    # τ = 0.5: (3·1 + 4·2) / sqrt(5) = 11 / 2.2360680 = 4.9193496
    assert TauNormalisedLinear(weight, 0.5)(x)[0].tolist() == pytest.approx([4.9193496, 1.0])
    assert TauNormalisedLinear(weight, 0.0)(x)[0].tolist() == pytest.approx([11.0, 1.0])


def test_tau_norm_method_drops_the_bias_and_uses_the_chosen_tau():
    cls = registry.load("method", "tau-norm")
    backbone = IdentityBackbone([[3.0, 4.0], [1.0, 0.0]], [7.0, -7.0])
    method = cls(torch.tensor([10.0, 1.0], dtype=torch.float64), {"tau": 1.0})
    data = dataclasses.replace(_no_validation_data(), class_counts=[10, 1])
    model = method.build_classifier(backbone, data, CPU, seed=0)
    assert model(torch.tensor([[1.0, 2.0]]))[0].tolist() == pytest.approx([2.2, 1.0])
    assert method.selection_rule == "last,tau=fixed"
    assert method.artifacts()["tau_curve"]["tau"].tolist() == [1.0]


def test_lws_logits_by_hand_and_only_the_scales_learn():
    linear = nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
        linear.bias.copy_(torch.tensor([0.5, -1.0]))
    head = ScaledLinear(linear)
    x = torch.tensor([[1.0, 1.0]])
    assert head(x)[0].tolist() == pytest.approx([3.5, 0.0])  # scales start at 1
    with torch.no_grad():
        head.scales.copy_(torch.tensor([2.0, 3.0]))
    assert head(torch.tensor([[1.0, 2.0]]))[0].tolist() == pytest.approx([11.0, 3.0])
    assert [name for name, p in head.named_parameters() if p.requires_grad] == ["scales"]


def test_pc_softmax_logits_by_hand():
    cls = registry.load("method", "pc-softmax")
    backbone = IdentityBackbone([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    method = cls(torch.tensor([3.0, 1.0], dtype=torch.float64), {})
    model = method.build_classifier(backbone, None, CPU, seed=0)
    # z − log p_s with p_s = (0.75, 0.25): 1 − ln 0.75 = 1.2876821, 0.5 − ln 0.25 = 1.8862944
    logits = model(torch.tensor([[1.0, 0.5]]))[0]
    assert logits.tolist() == pytest.approx([1.2876821, 1.8862944])
    assert cls.uses_target_prior


def test_logit_adjust_posthoc_logits_by_hand():
    cls = registry.load("method", "logit-adjust-posthoc")
    backbone = IdentityBackbone([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    method = cls(torch.tensor([3.0, 1.0], dtype=torch.float64), {"tau": 2.0})
    model = method.build_classifier(backbone, _no_validation_data(), CPU, seed=0)
    # z − log(π² + 1e-12): 1 − ln 0.5625 = 1.5753641, 0.5 − ln 0.0625 = 3.2725887
    logits = model(torch.tensor([[1.0, 0.5]]))[0]
    assert logits.tolist() == pytest.approx([1.5753641, 3.2725887])


def test_ncm_scores_are_negative_squared_distances_to_normalised_class_means():
    features = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 3.0]])
    head = class_centroids(features, torch.tensor([0, 0, 1]), 2)
    # mean (2, 1); centred (0, −1), (2, −1), (−2, 2) → normalised (0, −1), (0.894, −0.447),
    # (−0.707, 0.707); class 0's centroid is the mean of the first two.
    c0 = (torch.tensor([0.0, -1.0]) + torch.tensor([2.0, -1.0]) / math.sqrt(5)) / 2
    c1 = torch.tensor([-1.0, 1.0]) / math.sqrt(2)
    x = F.normalize(torch.tensor([[3.0, 1.0]]) - torch.tensor([2.0, 1.0]), dim=1)
    expected = [-float((x - c0).pow(2).sum()), -float((x - c1).pow(2).sum())]
    assert head(torch.tensor([[3.0, 1.0]]))[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_lader_matches_a_loop_over_classes():
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [0.0, 1.0, 3.0],
                           [2.0, -1.0, 0.5]])
    targets = torch.tensor([0, 1, 1, 0])
    prior = torch.tensor([0.6, 0.3, 0.1])
    lam = 0.1
    total = 0.0
    for c in range(3):
        members = [float(logits[i, c]) for i in range(4) if int(targets[i]) == c]
        first = sum(members) / len(members) if members else 0.0
        second = (math.log(sum(math.exp(float(logits[i, c]) - math.log(prior[c]) - math.log(3))
                               for i in range(4))) - math.log(4))
        total -= float(prior[c]) * (first - second - lam * second ** 2)
    assert float(lader_loss(logits, targets, prior.log(), lam)) == pytest.approx(total)


# --- samplers and the validation split -----------------------------------------------------

def test_sampler_class_probabilities_by_hand():
    counts = torch.tensor([9.0, 1.0])
    for sampler, epoch, expected in [("instance-balanced", 0, [0.9, 0.1]),
                                     ("class-balanced", 0, [0.5, 0.5]),
                                     ("square-root", 0, [0.75, 0.25]),
                                     ("progressively-balanced", 0, [0.9, 0.1]),
                                     ("progressively-balanced", 1, [0.7, 0.3]),
                                     ("progressively-balanced", 2, [0.5, 0.5])]:
        assert class_probabilities(sampler, counts, epoch, 3).tolist() == pytest.approx(expected)


def test_class_balanced_order_draws_each_class_about_equally_and_is_seeded():
    labels = torch.tensor([0] * 900 + [1] * 100)
    sampler = EpochSampler("class-balanced", labels, 2, 1)
    order = sampler.order(0, torch.Generator().manual_seed(3))
    assert order.shape == (1000,)
    share = float((labels[order] == 1).float().mean())
    assert 0.45 < share < 0.55  # 0.5 expected; binomial sd 0.016
    again = sampler.order(0, torch.Generator().manual_seed(3))
    assert torch.equal(order, again)
    plain = EpochSampler("instance-balanced", labels, 2, 1).order(0,
                                                                  torch.Generator().manual_seed(3))
    assert torch.equal(plain, torch.randperm(1000, generator=torch.Generator().manual_seed(3)))


def test_validation_split_is_balanced_disjoint_and_removed_first():
    labels = np.repeat(np.arange(4), 30)
    hparams = {"protocol": "jamal", "meta_per_class": 2, "val_per_class": 5}
    dataset = registry.load("dataset", "synthetic-lt")()
    counts = dataset.class_counts(4.0, "exp", {"classes": 4, "n_max": 30, "test_per_class": 1,
                                               **hparams})
    assert counts == [23, 14, 9, 5]  # n_max 30 − 5 − 2: int(23 · 0.25 ** (i / 3))
    subset, meta, val = split_with_validation(labels, counts, 7, hparams)
    assert np.bincount(labels[val]).tolist() == [5, 5, 5, 5]
    assert np.bincount(labels[meta]).tolist() == [2, 2, 2, 2]
    assert np.bincount(labels[subset]).tolist() == counts
    assert not (set(val) & set(subset)) and not (set(val) & set(meta))
    assert not (set(meta) & set(subset))
    again = split_with_validation(labels, counts, 7, hparams)
    assert all(np.array_equal(a, b) for a, b in zip((subset, meta, val), again))
    with pytest.raises(BadInput, match="val_per_class"):
        dataset.class_counts(4.0, "exp", {"classes": 4, "n_max": 30, "test_per_class": 1,
                                          **hparams, "val_per_class": 30})


# --- shifted test sets ---------------------------------------------------------------------

def test_shifted_budgets_by_hand():
    # Training ranks: class 1 (50), 2 (20), 4 (8), 0 (5), 3 (1). Budgets by rank for m = 10,
    # ρ = 10: int(10 · 10 ** (−r/4)) = 10, 5, 3, 1, 1.
    train = [5, 50, 20, 1, 8]
    assert class_budgets(train, 10, "forward", 10).tolist() == [1, 10, 5, 1, 3]
    assert class_budgets(train, 10, "backward", 10).tolist() == [5, 1, 1, 10, 3]
    assert class_budgets(train, 10, "uniform", 1).tolist() == [10] * 5


def test_cifar100_shifted_set_sizes():
    train = [int(500 * 0.01 ** (i / 99)) for i in range(100)]
    forward50 = class_budgets(train, 100, "forward", 50)
    assert forward50[0] == 100 and forward50[99] == 2 and forward50[49] == 14
    assert class_budgets(train, 100, "backward", 50).tolist() == forward50[::-1].tolist()
    assert class_budgets(train, 100, "uniform", 1).sum() == 10_000


def test_shifted_mask_keeps_examples_in_file_order_while_the_budget_lasts():
    labels = np.array([2, 0, 2, 2, 1, 0])
    assert shifted_mask(labels, np.array([1, 0, 2])).tolist() == [True, True, True, False,
                                                                  False, False]


def test_target_prior_changes_only_prior_aware_predictions():
    # Two classes, train counts (9, 1); m = 2 per class. Each example's logits favour class 0
    # by 0.1: raw predictions are all 0.
    labels = torch.tensor([0, 1, 0, 1])
    logits = torch.tensor([[0.1, 0.0]] * 4)
    plain = shifted_accuracies("r", logits, labels, [9, 1], uses_target_prior=False)
    aware = shifted_accuracies("r", logits, labels, [9, 1], uses_target_prior=True)
    plain, aware = plain.set_index("eval_set"), aware.set_index("eval_set")
    # B2: budgets class 0 → int(2 · 0.5) = 1, class 1 → 2; 3 examples, 1 of class 0.
    assert plain.loc["B2", "n_test"] == 3
    assert plain.loc["B2", "top1_acc"] == pytest.approx(100 / 3)
    # log p_t = log(1/3), log(2/3): 0.1 + ln(1/3) < ln(2/3), so class 1 is predicted.
    assert aware.loc["B2", "top1_acc"] == pytest.approx(200 / 3)
    assert aware.loc["U1", "top1_acc"] == plain.loc["U1", "top1_acc"] == 50.0


# --- stage-1 sharing and test isolation (real runs on synthetic-lt) ------------------------

@pytest.mark.slow
def test_stage1_is_trained_once_per_dataset_imb_seed(tmp_path, monkeypatch):
    fresh_trainings = []
    real_train_pack = engine_train.train_pack

    def counting_train_pack(data, members, device, progress=None, numerics=None, models=None,
                            checkpoint=None):
        if models is None:  # fresh backbones, not a stage-2 classifier
            fresh_trainings.extend(type(member.method).__name__ for member in members)
        return real_train_pack(data, members, device, progress, numerics, models, checkpoint)

    monkeypatch.setattr(engine_train, "train_pack", counting_train_pack)
    specs = grid.expand(["crt", "lws", "tau-norm", "ncm"], ["synthetic-lt"], [4.0, 8.0], [0],
                        overrides=parse_overrides(TINY_SYNTHETIC + ("stage2_epochs=1",)),
                        epochs=1)
    store = ResultStore(tmp_path)
    store.ensure_writable()
    records = run_grid(specs, store, tmp_path, CPU)
    assert [r["status"] for r in records] == ["ok"] * 8
    assert fresh_trainings == ["CrossEntropy", "CrossEntropy"]
    stored = store.read()
    ce = stored[stored["method"] == "ce"].set_index("imb_factor")["run_id"]
    assert len(ce) == 2
    for _, row in stored[stored["method"] != "ce"].iterrows():
        assert row["stage1_run_id"] == ce[row["imb_factor"]]
    assert sorted(p.stem for p in (tmp_path / "models").iterdir()) == sorted(ce)
    # A later grid reuses the stored stage 1, and the grid's own ce run is the same run.
    fresh_trainings.clear()
    again = grid.expand(["ce", "pc-softmax"], ["synthetic-lt"], [4.0], [0],
                        overrides=parse_overrides(TINY_SYNTHETIC), epochs=1)
    assert again[0].run_id == ce[4.0] == stage1_spec(again[1]).run_id
    run_grid(again[1:], store, tmp_path, CPU)
    assert fresh_trainings == []


@pytest.mark.slow
def test_tau_selection_never_reads_the_test_split(tmp_path):
    # A setting the stage-1 model learns well (≥ 95 % test accuracy on either thread count),
    # so that corrupting the test split demonstrably changes the test accuracy.
    spec = _spec("tau-norm", "val_per_class=5", "n_max=60", "test_per_class=20",
                 "batch_size=32", "lr=0.02", epochs=8)
    store = ResultStore(tmp_path)
    store.ensure_writable()
    (record,) = run_grid([spec], store, tmp_path, CPU)
    assert record["selection_rule"] == "last,tau=val"
    assert record["top1_acc"] >= 75.0
    curve = store.artifact("tau_curve", spec.run_id)
    assert len(curve) == 21 and curve["chosen"].sum() == 1
    data = registry.load("dataset", "synthetic-lt")().load(
        tmp_path, spec.imb_factor, spec.profile, spec.split_seed, spec.hparams)
    generator = torch.Generator().manual_seed(1)
    noise = dataclasses.replace(
        data, test_labels=data.test_labels[torch.randperm(len(data.test_labels),
                                                          generator=generator)],
        test_images=torch.randint(0, 256, data.test_images.shape, dtype=torch.uint8,
                                  generator=generator))
    # Every test image relabelled as the next class: each prediction that was right is now
    # wrong, so the test accuracy falls to at most 100 − the original accuracy.
    relabelled = dataclasses.replace(data, test_labels=(data.test_labels + 1) % 4)
    for tampered in (noise, relabelled):
        fields, artifacts, *_ = train_run(spec, tampered, CPU, store=store)
        pd.testing.assert_frame_equal(artifacts["tau_curve"], curve)
    assert fields["top1_acc"] <= 100.0 - record["top1_acc"] <= 25.0  # the tampering bites


def test_two_stage_run_without_its_stage1_model_fails_cleanly(tmp_path):
    spec = _spec("ncm")
    data = registry.load("dataset", "synthetic-lt")().load(
        tmp_path, spec.imb_factor, spec.profile, spec.split_seed, spec.hparams)
    with pytest.raises(RuntimeError, match="stage-1 run .* is not published"):
        train_run(spec, data, CPU, store=ResultStore(tmp_path))


def test_records_without_the_new_columns_read_with_defaults(tmp_path):
    store = ResultStore(tmp_path)
    store.write(make_record("aaaaaaaaaaaaaaaa"))
    path = tmp_path / "runs" / "old0000000000000.parquet"
    table = pq.read_table(tmp_path / "runs" / "aaaaaaaaaaaaaaaa.parquet")
    old = table.drop_columns(["selection_rule", "stage1_run_id", "artifact_error"])
    old = old.set_column(old.schema.get_field_index("run_id"), old.schema.field("run_id"),
                         pa.array(["old0000000000000"]))
    pq.write_table(old, path)
    frame = store.read().set_index("run_id")
    assert frame.loc["old0000000000000", "selection_rule"] == "last"
    assert pd.isna(frame.loc["old0000000000000", "stage1_run_id"])
    assert pd.isna(frame.loc["old0000000000000", "artifact_error"])


def _no_validation_data():
    """An LTData shell without a validation split (the heads above need nothing else)."""
    from ltbench.api import LTData

    empty = torch.zeros(0, dtype=torch.int64)
    return LTData(train_images=torch.zeros(0, 3, 1, 1, dtype=torch.uint8), train_labels=empty,
                  test_images=torch.zeros(0, 3, 1, 1, dtype=torch.uint8), test_labels=empty,
                  class_counts=[3, 1], train_indices=np.zeros(0, dtype=np.int64))


# --- CLI -----------------------------------------------------------------------------------

def _cli(*args):
    from click.testing import CliRunner

    from ltbench.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_run_plan_lists_the_stage1_run_once(tmp_path):
    sets = [arg for item in TINY_SYNTHETIC for arg in ("--set", item)]
    result = _cli("run", "--methods", "crt,ncm", "--datasets", "synthetic-lt", "--imb", "4",
                  "--epochs", "1", "--results", tmp_path / "r", "--dry-run", *sets)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[4] for line in lines[:-1]] == ["ce", "crt", "ncm"]
    assert lines[-1] == "3 runs in the grid, 0 done, 3 to train"
    assert not (tmp_path / "r").exists()


def test_data_indices_writes_the_validation_split(tmp_path):
    out = tmp_path / "val.npy"
    result = _cli("data", "indices", "synthetic-lt", "--imb", "4", "--split-seed", "3",
                  "--set", "val_per_class=4", "--val", "--out", out)
    assert result.exit_code == 0, result.output
    hparams = {"protocol": "ldam", "meta_per_class": 0, "val_per_class": 4}
    counts = registry.load("dataset", "synthetic-lt")().class_counts(
        4.0, "exp", {"classes": 10, "n_max": 200, "test_per_class": 50, **hparams})
    expected = split_with_validation(np.repeat(np.arange(10), 200), counts, 3, hparams)[2]
    assert np.load(out).tolist() == expected.tolist() and len(expected) == 40
    missing = _cli("data", "indices", "synthetic-lt", "--imb", "4", "--val", "--out",
                   tmp_path / "none.npy")
    assert missing.exit_code == 2 and "val_per_class" in missing.output
    assert not (tmp_path / "none.npy").exists()


def test_unknown_sampler_is_bad_input_before_anything_runs(tmp_path):
    result = _cli("run", "--methods", "ce", "--datasets", "synthetic-lt", "--imb", "4",
                  "--results", tmp_path / "r", "--set", "sampler=balanced")
    assert result.exit_code == 2
    assert result.output.startswith("Error: --set sampler=balanced: expected one of "
                                    "instance-balanced, class-balanced")
    assert not (tmp_path / "r").exists()
