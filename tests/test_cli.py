"""The command line through click's runner: listings, data commands, and bad input.

Bad input must give exactly one line on stderr naming the problem, exit code 2, and leave the
results folder and the data root as they were.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import TINY_SYNTHETIC, tree_snapshot

from ltbench.cli import cli

TINY = [a for s in TINY_SYNTHETIC for a in ("--set", s)] + ["--imb", "4"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


BAD_RUNS = [
    (["--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--methods", "ldam_drw"], "did you mean 'ldam-drw'"),
    (["--methods", ","], "no method named"),
    (["--datasets", "cifar10lt"], "unknown dataset 'cifar10lt'; did you mean 'cifar10-lt'"),
    (["--imb", "0.01"], "must be a finite number >= 1"),
    (["--imb", "ten"], "imbalance factor 'ten' is not a number"),
    (["--imb", "nan"], "must be a finite number >= 1"),
    (["--seeds", "a"], "seed 'a' is not an integer"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--epochs", "two"], "--epochs 'two' is not an integer"),
    (["--set", "nosuch=1"], "unknown hyper-parameter 'nosuch'"),
    (["--set", "lr=fast"], "--set lr=fast: expected a finite number"),
    (["--set", "lr"], "--set expects key=value"),
    (["--profile", "linear"], "unknown profile 'linear'"),
    (["--device", "tpu"], "'tpu' is not one of"),
    (["--no-such-option"], "--no-such-option"),
]


@pytest.mark.parametrize("args, message", BAD_RUNS, ids=[" ".join(a) for a, _ in BAD_RUNS])
def test_bad_run_input_is_one_line_exit_2_nothing_written(tmp_path, args, message):
    results = tmp_path / "results"
    result = invoke("run", "--datasets", "synthetic-lt", "--results", results, *TINY, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert not results.exists()


def test_missing_cifar_data_says_where_it_looked(tmp_path):
    data_root, results = tmp_path / "nodata", tmp_path / "results"
    data_root.mkdir()
    result = invoke("run", "--datasets", "cifar10-lt", "--methods", "ce", "--epochs", "1",
                    "--data-root", data_root, "--results", results)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(data_root / "cifar-10-batches-py") in line and "LTBENCH_DATA_ROOT" in line
    assert tree_snapshot(data_root) == {} and not results.exists()


def test_results_folder_that_is_a_file(tmp_path):
    results = tmp_path / "results"
    results.write_text("not a folder")
    result = invoke("run", "--datasets", "synthetic-lt", "--methods", "ce", "--epochs", "1",
                    "--results", results, *TINY)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and str(results) in result.stderr
    assert results.read_text() == "not a folder"


def test_asking_for_cuda_without_one(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device, so --device cuda is valid input")
    results = tmp_path / "results"
    result = invoke("run", "--datasets", "synthetic-lt", "--device", "cuda", "--results",
                    results, *TINY)
    assert result.exit_code == 2 and "no CUDA device" in result.stderr
    assert not results.exists()


def test_dry_run_lists_runs_and_writes_nothing(tmp_path):
    results = tmp_path / "results"
    result = invoke("run", "--datasets", "synthetic-lt", "--methods", "ce,focal", *TINY,
                    "--imb", "10,5", "--seeds", "0,1", "--dry-run", "--results", results)
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("run ") for line in result.stdout.splitlines()) == 8
    assert "8 runs in the grid, 0 done, 8 to train" in result.stdout
    assert not results.exists()


def test_list_shows_names_descriptions_papers_providers():
    result = invoke("list")
    assert result.exit_code == 0
    for name in ("ce", "ldam-drw", "logit-adjust", "cifar10-lt", "synthetic-lt"):
        assert f"  {name} " in result.output
    assert "arXiv:1906.07413" in result.output
    assert "provider: ltbench 0.1.0" in result.output
    assert "cifar10-lt" not in invoke("list", "methods").output


@pytest.mark.parametrize("dataset, imb, total, counts", [
    ("cifar10-lt", "100", 12406, "5000 2997 1796 1077 645 387 232 139 83 50"),
    ("cifar10-lt", "200", 11203, "5000 2775 1540 854 474 263 146 81 45 25"),
    ("cifar100-lt", "100", 10847, None),
])
def test_data_describe_needs_no_data(dataset, imb, total, counts):
    result = invoke("data", "describe", dataset, "--imb", imb)
    assert result.exit_code == 0, result.output
    assert f"images {total}" in result.output
    if counts:
        assert f"per-class counts: {counts}\n" in result.output


def test_data_describe_step_profile():
    result = invoke("data", "describe", "cifar10-lt", "--imb", "10", "--profile", "step")
    assert "per-class counts: 5000 5000 5000 5000 5000 500 500 500 500 500" in result.output


@pytest.mark.parametrize("args, message", [
    (["describe", "cifar10-lt", "--imb", "0"], "must be a finite number >= 1"),
    (["describe", "cifar10-lt", "--imb", "100,50"], "takes one imbalance factor"),
    (["describe", "cifar10-lt", "--imb", "100", "--set", "lr=1"], "unknown option 'lr'"),
    (["describe", "imagenet", "--imb", "100"], "unknown dataset 'imagenet'"),
])
def test_data_bad_input(args, message):
    result = invoke("data", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_data_indices_missing_data_writes_nothing(tmp_path):
    out = tmp_path / "idx.npy"
    result = invoke("data", "indices", "cifar10-lt", "--imb", "100", "--data-root",
                    tmp_path / "none", "--out", out)
    assert result.exit_code == 2 and "no CIFAR-10 data" in result.stderr
    assert tree_snapshot(tmp_path) == {}


@pytest.mark.slow
def test_data_indices_on_real_cifar(cifar_root, tmp_path):
    out = tmp_path / "c10_lt100.npy"
    result = invoke("data", "indices", "cifar10-lt", "--imb", "100", "--data-root", cifar_root,
                    "--out", out)
    assert result.exit_code == 0, result.output
    idx = np.load(out)
    assert idx.dtype == np.int64 and len(idx) == 12406
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < 50000
    import torchvision

    labels = np.asarray(torchvision.datasets.CIFAR10(str(cifar_root), train=True).targets)
    assert np.bincount(labels[idx]).tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139,
                                                  83, 50]
    # A different subset seed picks other images with the same counts.
    out1 = tmp_path / "seed1.npy"
    invoke("data", "indices", "cifar10-lt", "--imb", "100", "--split-seed", "1", "--data-root",
           cifar_root, "--out", out1)
    idx1 = np.load(out1)
    assert np.bincount(labels[idx1]).tolist() == np.bincount(labels[idx]).tolist()
    assert not np.array_equal(idx, idx1)


def test_data_describe_jamal_protocol():
    result = invoke("data", "describe", "cifar10-lt", "--imb", "100", "--set", "protocol=jamal")
    assert result.exit_code == 0, result.output
    assert "images 12380" in result.output
    assert "per-class counts: 4990 2991 1793 1075 644 386 231 138 83 49\n" in result.output
    assert "protocol jamal, meta set: 10 per class (100 images)" in result.output
    plain = invoke("data", "describe", "cifar100-lt", "--imb", "100")
    assert "protocol ldam, meta set: 0 per class (0 images)" in plain.output


def test_data_indices_of_the_meta_set(tmp_path):
    subset_file, meta_file = tmp_path / "subset.npy", tmp_path / "meta.npy"
    common = ["data", "indices", "synthetic-lt", "--imb", "10", "--set", "protocol=jamal",
              "--data-root", tmp_path / "unused"]
    assert invoke(*common, "--out", subset_file).exit_code == 0
    result = invoke(*common, "--meta", "--out", meta_file)
    assert result.exit_code == 0, result.output
    assert "wrote 100 indices" in result.output
    subset, meta = np.load(subset_file), np.load(meta_file)
    # synthetic-lt's pool is class-grouped, 200 per class: position // 200 is the class;
    # int(190 * 0.1 ** (i / 9)) images of class i.
    assert np.bincount(meta // 200).tolist() == [10] * 10
    assert np.bincount(subset // 200).tolist() == [190, 147, 113, 88, 68, 52, 40, 31, 24, 19]
    assert not set(meta) & set(subset)


@pytest.mark.parametrize("extra, message", [
    ([], "--meta: protocol 'ldam' of 'synthetic-lt' has no meta set"),
    (["--set", "meta_per_class=5"], "class 0 keeps 200 of its 200 images"),
])
def test_data_indices_meta_without_a_meta_set(tmp_path, extra, message):
    out = tmp_path / "meta.npy"
    result = invoke("data", "indices", "synthetic-lt", "--imb", "10", "--meta", *extra,
                    "--out", out)
    assert result.exit_code == 2 and message in result.stderr
    assert not out.exists()
