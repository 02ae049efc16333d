"""Bad input, tried on purpose, against a results store that already holds a run.

Every row must give exit code 2, exactly one ``Error:`` line on stderr naming the problem, and
leave the store byte for byte as it was. The option table of ``tests/test_cli.py``
(``BAD_RUNS``, checked there against a folder that does not exist yet) is replayed here against
an existing store, followed by the inputs it does not cover: launch options, more malformed
values (integers out of range or not in ASCII digits, hyper-parameter values the engine
refuses), a results path that is a file, data roots without the expected files or with files
that fail the md5 check, and a plugin whose module raises at import; then the other commands'
bad input (``status``, ``bench``, ``data``, ``check``), unusable pretrained weights, results
folders that cannot be written, and a store that runs out of space during a grid.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from helpers import TINY_SYNTHETIC, install_plugin, make_record, tree_snapshot
from test_cli import BAD_RUNS

from ltbench import registry
from ltbench.cli import cli
from ltbench.store.result_store import ResultStore

TINY = [a for s in TINY_SYNTHETIC for a in ("--set", s)] + ["--imb", "4"]

MORE_BAD_RUNS = [
    (["--imb", "-5"], "imbalance factor -5 must be a finite number >= 1"),
    (["--imb", "0"], "imbalance factor 0 must be a finite number >= 1"),
    (["--imb", "inf"], "imbalance factor inf must be a finite number >= 1"),
    (["--imb", "1e400"], "imbalance factor 1e400 must be a finite number >= 1"),
    (["--imb", "1e12"], "leaves class 1 without training images"),
    (["--imb", "4,"], None),  # a trailing comma is tolerated: listed here as a control
    (["--seeds", "-1"], "seed must be at least 0, got -1"),
    (["--seeds", "1.5"], "seed '1.5' is not an integer"),
    (["--set", "epochs=1.5"], "--set epochs '1.5' is not an integer"),
    (["--set", "lr=nan"], "--set lr=nan: expected a finite number"),
    (["--set", "lr=1e400"], "--set lr=1e400: expected a finite number"),
    (["--set", "lr=-0.1"], "--set lr must be >= 0, got -0.1"),
    (["--set", "weight_decay=-1"], "--set weight_decay must be >= 0"),
    (["--set", "nesterov=maybe"], "--set nesterov=maybe: expected true or false"),
    (["--set", "=1"], "--set expects key=value, got '=1'"),
    (["--set", "lr="], "--set expects key=value, got 'lr='"),
    (["--set", "batch_size=0"], "--set batch_size must be at least 1, got 0"),
    (["--set", "n_max=0"], "n_max and test_per_class must be at least 1"),
    (["--set", "classes=1"], "needs at least 2 classes, got 1"),
    (["--set", "protocol=nosuch"], "unknown protocol 'nosuch'"),
    (["--epochs", "-3"], "--epochs must be at least 1, got -3"),
    (["--launcher", "nosuch"], "'nosuch' is not one of 'local', 'slurm', 'ray', 'dry'"),
    (["--jobs", "0"], "--jobs must be at least 1, got 0"),
    (["--jobs-per-gpu", "0"], "--jobs-per-gpu must be at least 1, got 0"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be at least 0, got -1"),
    (["--checkpoint-every", "ten"], "--checkpoint-every 'ten' is not an integer"),
    (["--checkpoint-every-steps", "-1"], "--checkpoint-every-steps must be at least 0, got -1"),
    (["--checkpoint-every-steps", "²"], "--checkpoint-every-steps '²' is not an integer"),
    (["--min-free-gb", "nan"], "--min-free-gb must be a finite number >= 0, got nan"),
    (["--min-free-gb", "1e12"], "GB free, less than --min-free-gb 1e+12"),
    (["--timeout-min", "0"], "--timeout-min must be at least 1, got 0"),
    (["--array-parallelism", "0"], "--array-parallelism must be at least 1, got 0"),
    # Integers: ASCII digits only (int() takes '١', str.isdigit() takes '²'), within int64 or
    # what the consumer takes (the split seed's RandomState: below 2^32).
    (["--seeds", "²"], "seed '²' is not an integer"),
    (["--seeds", "١"], "seed '١' is not an integer"),
    (["--seeds", "1_000"], "seed '1_000' is not an integer"),
    (["--seeds", "0,99999999999999999999999"],
     "seed must be at most 9223372036854775807, got 99999999999999999999999"),
    (["--seeds", "9223372036854775808"], "seed must be at most 9223372036854775807"),
    (["--seeds", "9" * 5000], "seed must be at most 9223372036854775807, got 99999999999"),
    (["--split-seed", "99999999999999999999"],
     "--split-seed must be at most 4294967295, got 99999999999999999999"),
    (["--split-seed", "4294967296"], "--split-seed must be at most 4294967295, got 4294967296"),
    (["--split-seed", "²"], "--split-seed '²' is not an integer"),
    (["--split-seed", "-1"], "--split-seed must be at least 0, got -1"),
    (["--epochs", "²"], "--epochs '²' is not an integer"),
    (["--epochs", "99999999999999999999"], "--epochs must be at most 9223372036854775807"),
    (["--jobs", "²"], "--jobs '²' is not an integer"),
    (["--jobs-per-gpu", "١"], "--jobs-per-gpu '١' is not an integer"),
    (["--checkpoint-every", "99999999999999999999"], "--checkpoint-every must be at most"),
    (["--gpus-per-job", "-1"], "--gpus-per-job must be at least 0, got -1"),
    (["--timeout-min", "²"], "--timeout-min '²' is not an integer"),
    (["--array-parallelism", "1e3"], "--array-parallelism '1e3' is not an integer"),
    (["--pack-size", "²"], "--pack-size '²' is not an integer"),
    (["--pack-size", "99999999999999999999"], "--pack-size must be at most"),
    (["--set", "epochs=²"], "--set epochs '²' is not an integer"),
    (["--set", "batch_size=١٦"], "--set batch_size '١٦' is not an integer"),
    (["--set", "n_max=99999999999999999999"], "--set n_max must be at most 9223372036854775807"),
    (["--set", "pad=" + "9" * 5000], "--set pad must be at most 9223372036854775807"),
    # Hyper-parameter values the engine would refuse only once training started.
    (["--set", "backbone=nosuch"], "--set backbone=nosuch: expected one of resnet32, resnet8, "
                                   "resnet10, resnet50, resnext50_32x4d, resnet152"),
    (["--set", "pad_mode=zzz"], "--set pad_mode=zzz: expected one of zero, reflect"),
    (["--set", "pad=-4"], "--set pad must be >= 0, got -4"),
    (["--set", "mean=0.5"], "--set mean=0.5: expected 3 comma-separated values (one per "
                            "colour channel), got 1"),
    (["--set", "std=0.2,0.2,0.2,0.2"], "--set std=0.2,0.2,0.2,0.2: expected 3"),
    (["--set", "std=0.2,0,0.2"], "--set std=0.2,0.0,0.2: every value must be > 0"),
    (["--set", "sampler=sorted"], "--set sampler=sorted: expected one of instance-balanced, "
                                  "class-balanced, square-root, progressively-balanced"),
    (["--methods", "meta-ce", "--set", "eps_form=zz"],
     "--set eps_form=zz: expected one of multiplicative, additive"),
    # Options of other launchers would be ignored silently.
    (["--launcher", "local", "--slurm-partition", "gpu"],
     "--slurm-partition applies to --launcher slurm only, not local"),
    (["--timeout-min", "30"], "--timeout-min applies to --launcher slurm only, not local"),
    (["--array-parallelism", "4"], "--array-parallelism applies to --launcher slurm only"),
    (["--gpus-per-job", "2"], "--gpus-per-job applies to --launcher slurm or ray only, not "
                              "local"),
]
if importlib.util.find_spec("ray") is None:
    MORE_BAD_RUNS.append((["--launcher", "ray"], "--launcher ray needs ray"))
if importlib.util.find_spec("submitit") is None:
    MORE_BAD_RUNS.append((["--launcher", "slurm"], "--launcher slurm needs submitit"))
TABLE = [row for row in BAD_RUNS + MORE_BAD_RUNS if row[1] is not None]


@pytest.fixture
def store(tmp_path):
    """A results folder holding one published run."""
    results = tmp_path / "results"
    ResultStore(results).write(make_record())
    return results


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_rejected(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]


@pytest.mark.parametrize("args, message", TABLE, ids=[" ".join(a)[:80] for a, _ in TABLE])
def test_bad_run_option(store, args, message):
    before = tree_snapshot(store)
    result = invoke("run", "--datasets", "synthetic-lt", "--methods", "ce", "--epochs", "1",
                    "--results", store, *TINY, *args)
    assert_rejected(result, message)
    assert tree_snapshot(store) == before


def test_a_trailing_comma_is_not_bad_input(tmp_path):
    """The control row: ``--imb 4,`` parses as ``4`` (so the table is not vacuous)."""
    result = invoke("run", "--datasets", "synthetic-lt", "--methods", "ce", *TINY, "--imb",
                    "4,", "--dry-run", "--results", tmp_path / "results")
    assert result.exit_code == 0 and "1 to train" in result.stdout


def test_results_path_that_is_a_file(tmp_path):
    results = tmp_path / "results"
    results.write_text("not a folder")
    result = invoke("run", "--datasets", "synthetic-lt", "--methods", "ce", "--epochs", "1",
                    "--results", results, *TINY)
    assert_rejected(result, f"results folder {results} is a file")
    assert results.read_text() == "not a folder"


CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                 "data_batch_5", "test_batch", "batches.meta")


@pytest.mark.parametrize("tree, message", [
    ({}, "no CIFAR-10 data"),
    ({"cifar-10-batches-py/readme.html": b"<html>"}, "failed the md5 check"),
    ({f"cifar-10-batches-py/{name}": b"\x80\x04 not the real bytes" for name in CIFAR10_FILES},
     "failed the md5 check (data_batch_1, data_batch_2"),
], ids=["empty root", "folder without the files", "files with a wrong md5"])
def test_data_root_without_usable_cifar(store, tmp_path, tree, message):
    data_root = tmp_path / "data"
    data_root.mkdir()
    for name, content in tree.items():
        (data_root / name).parent.mkdir(parents=True, exist_ok=True)
        (data_root / name).write_bytes(content)
    data_before, store_before = tree_snapshot(data_root), tree_snapshot(store)
    result = invoke("run", "--datasets", "cifar10-lt", "--methods", "ce", "--epochs", "1",
                    "--data-root", data_root, "--results", store)
    assert_rejected(result, message)
    assert tree_snapshot(data_root) == data_before and tree_snapshot(store) == store_before


BROKEN_PLUGIN = textwrap.dedent('''
    raise ImportError("this plugin's module refuses to import")
''')


@pytest.fixture
def broken_method(tmp_path, monkeypatch):
    """An installed distribution registering ``broken-loss`` whose module raises at import."""
    install_plugin(tmp_path / "site", "broken_plugin", BROKEN_PLUGIN,
                   "[ltbench.methods]\nbroken-loss = broken_plugin:BrokenLoss\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry.refresh()
    yield
    registry.refresh()


def test_method_that_raises_at_import_is_bad_input_and_breaks_nothing_else(store, broken_method):
    before = tree_snapshot(store)
    result = invoke("run", "--datasets", "synthetic-lt", "--methods", "broken-loss", "--epochs",
                    "1", "--results", store, *TINY)
    assert_rejected(result, "method 'broken-loss' from broken_plugin 1.0 failed to import: "
                            "ImportError: this plugin's module refuses to import")
    assert tree_snapshot(store) == before

    listing = invoke("list", "methods")
    assert listing.exit_code == 0
    assert ("  broken-loss        (unavailable: method 'broken-loss' from broken_plugin 1.0 "
            "failed to import") in listing.stdout
    assert "  ce                 Softmax cross-entropy" in listing.stdout  # others still listed
    assert "provider: broken_plugin 1.0" in listing.stdout

    ok = invoke("run", "--datasets", "synthetic-lt", "--methods", "ce", "--epochs", "1",
                "--results", store, *TINY)
    assert ok.exit_code == 0, ok.output
    records = ResultStore(store).read()
    assert len(records) == 2 and (records["status"] == "ok").all()


def published_csv(path, *rows: str) -> None:
    """A published-numbers file with the full header and ``rows``."""
    from ltbench.report.published import LTBENCH_COLUMNS, ORIGINAL_COLUMNS

    path.write_text(",".join(ORIGINAL_COLUMNS + LTBENCH_COLUMNS) + "\n"
                    + "".join(row + "\n" for row in rows))


OTHER_COMMANDS = [
    (["status", "--seeds", "²"], "seed '²' is not an integer"),
    (["status", "--seeds", "99999999999999999999"], "seed must be at most 9223372036854775807"),
    (["bench", "--device", "cpu", "--packs", "²"], "--packs '²' is not an integer"),
    (["bench", "--device", "cpu", "--packs", "1,0"], "--packs must be at least 1, got 0"),
    (["bench", "--device", "cpu", "--steps", "١"], "--steps '١' is not an integer"),
    (["bench", "--device", "cpu", "--workers", "-1"], "--workers must be at least 0, got -1"),
    (["bench", "--device", "cpu", "--out", "{file}/x"],
     "--out {file}/x cannot be created: {file} is a file"),
    (["data", "describe", "synthetic-lt", "--imb", "4", "--set", "classes=²"],
     "--set classes '²' is not an integer"),
    (["data", "indices", "synthetic-lt", "--imb", "4", "--split-seed", "4294967296", "--out",
      "{tmp}/x.npy"], "--split-seed must be at most 4294967295, got 4294967296"),
    (["data", "pack", "cifar10-lt", "--imb", "4", "--effort", "7", "--out", "{tmp}/x.ltpack"],
     "--effort must be at most 6, got 7"),
    (["data", "prepare", "imagenet-lt", "--jobs", "²"], "--jobs '²' is not an integer"),
    (["check", "--published", "{header_only}"],
     "no published numbers in {header_only} (nothing but a header): nothing to compare"),
    (["check", "--published", "{epochs_superscript}"], "protocol_epochs '²' is not an integer"),
]


@pytest.mark.parametrize("args, message", OTHER_COMMANDS,
                         ids=[" ".join(a[:4]) for a, _ in OTHER_COMMANDS])
def test_bad_input_of_other_commands(store, tmp_path, args, message):
    paths = {"file": tmp_path / "a-file", "tmp": tmp_path,
             "header_only": tmp_path / "header-only.csv",
             "epochs_superscript": tmp_path / "epochs.csv"}
    paths["file"].write_text("not a folder")
    published_csv(paths["header_only"])
    published_csv(paths["epochs_superscript"],
                  "P,T,CE,CIFAR-10-LT,100,all,top1_err,29.6,s,p,n,ce,cifar10-lt,exp,ldam,²,"
                  "final_epoch,s,m")
    before = tree_snapshot(tmp_path)
    result = invoke(*[a.format(**paths) for a in args],
                    *(["--results", store] if args[0] in ("status", "check") else []))
    assert_rejected(result, message.format(**paths))
    assert tree_snapshot(tmp_path) == before


def test_integer_bounds_are_inclusive(tmp_path):
    """The largest seed and split seed the store and RandomState take are planned (controls
    for the rows just past them)."""
    result = invoke("run", "--datasets", "synthetic-lt", "--methods", "ce", *TINY, "--seeds",
                    "9223372036854775807", "--split-seed", "4294967295", "--dry-run",
                    "--results", tmp_path / "results")
    assert result.exit_code == 0 and "1 to train" in result.stdout


def test_unusable_pretrained_weights_are_refused_before_training(store, tmp_path):
    import torch

    (tmp_path / "notes.txt").write_text("not weights")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    empty_root = tmp_path / "data"
    empty_root.mkdir()
    before = tree_snapshot(store)
    for weights, message in (("notes.txt", "cannot read a state_dict"),
                             ("tensor.pt", "cannot read a state_dict"),
                             ("missing.pt", "cannot read a state_dict"),
                             (".", "cannot read a state_dict"),
                             ("wrong.pt", "the weights do not fit resnet50 (318 problems")):
        result = invoke("run", "--datasets", "imagenet-lt", "--methods", "ce", "--set",
                        "backbone=resnet50", "--set", f"pretrained={tmp_path / weights}",
                        "--data-root", empty_root, "--results", store)
        assert_rejected(result, f"--set pretrained={tmp_path / weights}: {message}")
    assert tree_snapshot(store) == before


@contextlib.contextmanager
def unwritable(folder):
    """``folder`` made unwritable for everyone, root included: the immutable attribute
    (``chattr +i``), else, for another user than root, permission bits; skips the test when
    neither is available (root ignores permission bits)."""
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True) \
        if shutil.which("chattr") else None
    if made is not None and made.returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    elif os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
    else:
        pytest.skip("running as root on a file system without chattr +i: no way to make a "
                    "folder unwritable")


def run_tiny(results, *args):
    return invoke("run", "--datasets", "synthetic-lt", "--methods", "ce", "--epochs", "1",
                  "--seeds", "5", "--device", "cpu", "--results", results, *TINY, *args)


WRITTEN = ("runs", "curves", "evals", "claims", "resume", "launch", "models")


@pytest.mark.parametrize("name", WRITTEN)
def test_a_store_folder_that_is_a_file(store, name):
    shutil.rmtree(store / name, ignore_errors=True)
    (store / name).write_text("in the way")
    before = tree_snapshot(store)
    assert_rejected(run_tiny(store), f"results folder {store / name} is a file")
    assert tree_snapshot(store) == before


@pytest.mark.parametrize("name", (".", *WRITTEN, "eps"))
def test_a_store_folder_that_cannot_be_written(store, name):
    """``eps`` stands for an artifact folder of the store that some method writes."""
    folder = store / name
    folder.mkdir(exist_ok=True)
    before = tree_snapshot(store)
    with unwritable(folder):
        result = run_tiny(store)
    assert_rejected(result, f"results folder {folder} is not writable: ")
    assert tree_snapshot(store) == before


def test_a_results_folder_under_a_file(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    result = run_tiny(tmp_path / "a-file" / "results")
    assert_rejected(result, f"results folder {tmp_path / 'a-file' / 'results'} cannot be "
                            f"created: {tmp_path / 'a-file'} is a file")
    assert (tmp_path / "a-file").read_text() == "not a folder"


def run_with_file_size_limit(limit: int, results, *args) -> subprocess.CompletedProcess:
    """``ltbench run`` in a process whose files cannot grow past ``limit`` bytes
    (RLIMIT_FSIZE; SIGXFSZ ignored, so an oversized write fails with EFBIG as a full disk
    fails with ENOSPC)."""
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "from ltbench.cli import main; sys.argv[0] = 'ltbench'; main()")
    return subprocess.run(
        [sys.executable, "-c", code, "run", "--datasets", "synthetic-lt", "--imb", "4",
         "--epochs", "2", "--device", "cpu", "--min-free-gb", "0", "--results", str(results),
         *[a for s in TINY_SYNTHETIC for a in ("--set", s)], *args],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_store_failed(proc, store, first_unrecorded: str) -> None:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [proc.stderr.strip().splitlines()[-1]] and "Traceback" not in proc.stderr
    assert errors[0].startswith(f"Error: results folder {store} refused a write (File too "
                                f"large): the grid stopped; {first_unrecorded} and the runs "
                                f"after it are not recorded")


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_stops_the_grid_and_records_nothing(tmp_path):
    """A ResNet-32 checkpoint (weights and momentum: about 3.7 MB) cannot be written; the
    records (a few kB) could: the runs are still not recorded as failed, and a rerun trains
    them."""
    results = tmp_path / "results"
    proc = run_with_file_size_limit(10 ** 6, results, "--methods", "ce,focal",
                                    "--checkpoint-every", "1")
    assert_store_failed(proc, results, "synthetic-lt imb=4 ce seed=0")
    assert ResultStore(results).read().empty
    rerun = invoke("run", "--datasets", "synthetic-lt", "--imb", "4", "--epochs", "2",
                   "--device", "cpu", "--methods", "ce,focal", "--checkpoint-every", "1",
                   "--results", results, *[a for s in TINY_SYNTHETIC for a in ("--set", s)])
    assert rerun.exit_code == 0, rerun.output
    assert "2 runs in the grid, 0 already done, 2 to train" in rerun.stderr
    assert sorted(ResultStore(results).read()["status"]) == ["ok", "ok"]


@pytest.mark.slow
def test_a_record_that_does_not_fit_stops_the_grid(tmp_path):
    """No checkpoint, no model: the first file too large for the store is the run's curves,
    written with its record."""
    results = tmp_path / "results"
    proc = run_with_file_size_limit(2000, results, "--methods", "focal", "--seeds", "0,1",
                                    "--checkpoint-every", "0")
    assert_store_failed(proc, results, "synthetic-lt imb=4 focal seed=0")
    assert "seed=1" not in proc.stderr  # the grid stopped
    assert tree_snapshot(results / "runs") == {}


@pytest.mark.slow
def test_a_worker_pool_stops_when_the_store_refuses_a_write(tmp_path):
    """Two workers fail to write their records; the third pack is never started."""
    results = tmp_path / "results"
    proc = run_with_file_size_limit(2000, results, "--methods", "focal", "--seeds", "0,1,2",
                                    "--checkpoint-every", "0", "--jobs", "2")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[-1] == proc.stderr.strip().splitlines()[-1] == (
        f"Error: results folder {results} refused a write by a worker (its Error line above): "
        f"the grid stopped, 1 pack(s) not started; fix the folder and rerun the same command")
    assert all("refused a write (File too large)" in line for line in errors[:2])
    assert tree_snapshot(results / "runs") == {}
