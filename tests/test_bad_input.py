"""Bad input, tried on purpose, against a results store that already holds a run.

Every row must give exit code 2, exactly one ``Error:`` line on stderr naming the problem, and
leave the store byte for byte as it was. The option table of ``tests/test_cli.py``
(``BAD_RUNS``, checked there against a folder that does not exist yet) is replayed here against
an existing store, followed by the inputs it does not cover: launch options, more malformed
values, a results path that is a file, data roots without the expected files or with files
that fail the md5 check, and a plugin whose module raises at import.
"""

from __future__ import annotations

import importlib.util
import textwrap

import pytest
from click.testing import CliRunner
from helpers import TINY_SYNTHETIC, install_plugin, make_record, tree_snapshot
from test_cli import BAD_RUNS

from ltbench import registry
from ltbench.cli import cli
from ltbench.store import ResultStore

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
    (["--min-free-gb", "nan"], "--min-free-gb must be a finite number >= 0, got nan"),
    (["--min-free-gb", "1e12"], "GB free, less than --min-free-gb 1e+12"),
    (["--timeout-min", "0"], "--timeout-min must be at least 1, got 0"),
    (["--array-parallelism", "0"], "--array-parallelism must be at least 1, got 0"),
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


@pytest.mark.parametrize("args, message", TABLE, ids=[" ".join(a) for a, _ in TABLE])
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
