"""A results folder that other users can write to (a group-writable share on a cluster).

What another user could plant there, or in the folder ltbench is started from, must not change
what ltbench runs or writes: workers never import from the caller's working directory, every
file is replaced through one atomic writer that neither follows nor reuses a planted name, the
launch spec files are checked as untrusted input and removed when their pack is done, and
record text reaches Markdown as text, never as markup.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import TINY_SYNTHETIC, make_record, tree_snapshot

from ltbench import HARNESS_VERSION
from ltbench.cli import cli
from ltbench.report.published import LTBENCH_COLUMNS, ORIGINAL_COLUMNS
from ltbench.run import grid, launchers, worker
from ltbench.store import atomicfile
from ltbench.store.result_store import ResultStore

TINY = [a for s in TINY_SYNTHETIC for a in ("--set", s)]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _published_csv(path: Path, table: str) -> Path:
    """A published-numbers file of one row (ERM on CIFAR-10-LT IF 100) from ``table``."""
    row = {"paper": "Cao2019", "table": table, "method": "ERM", "dataset": "CIFAR-10-LT",
           "imbalance_factor": "100", "split": "all", "metric": "top1_err", "value": "29.64",
           "source": "arXiv:1906.07413", "provenance": "P1", "ltbench_method": "ce",
           "ltbench_dataset": "cifar10-lt", "ltbench_profile": "exp", "ltbench_protocol": "ldam",
           "protocol_epochs": "200", "selection": "best_test_epoch"}
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=ORIGINAL_COLUMNS + LTBENCH_COLUMNS)
        writer.writeheader()
        writer.writerow(row)
    return path


def _tiny_specs(methods=("ce", "focal")):
    return grid.expand(list(methods), ["synthetic-lt"], [4.0], [0],
                       overrides=dict(s.split("=") for s in TINY_SYNTHETIC), epochs=1)


# --- workers and the caller's working directory ---------------------------------------------

PLANTED_WORKER = """
import pathlib, sys
pathlib.Path({marker!r}).write_text(" ".join(sys.argv))
"""


def _plant_ltbench(folder: Path, marker: Path) -> None:
    (folder / "ltbench" / "run").mkdir(parents=True)
    (folder / "ltbench" / "__init__.py").write_text("")
    (folder / "ltbench" / "run" / "__init__.py").write_text("")
    (folder / "ltbench" / "run" / "worker.py").write_text(PLANTED_WORKER.format(marker=str(marker)))


@pytest.mark.slow
def test_workers_do_not_run_code_from_the_callers_working_directory(tmp_path, monkeypatch):
    """A folder holding ``ltbench/run/worker.py`` is where the user starts ``ltbench run``: the
    plain ``python -m ltbench.run.worker`` would run the planted module (the control below), the
    launcher's workers run the installed one."""
    cwd, marker, results = tmp_path / "shared", tmp_path / "planted-ran", tmp_path / "results"
    _plant_ltbench(cwd, marker)
    control = subprocess.run([sys.executable, "-m", "ltbench.run.worker"], cwd=cwd, timeout=60)
    assert control.returncode == 0 and marker.exists()  # the plant works on a plain start
    marker.unlink()

    monkeypatch.chdir(cwd)
    result = invoke("run", "--datasets", "synthetic-lt", "--methods", "ce,focal", "--imb", "4",
                    "--epochs", "1", "--results", results, "--jobs", "2", *TINY)
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    records = ResultStore(results).read()
    assert sorted(records["method"]) == ["ce", "focal"] and set(records["status"]) == {"ok"}
    assert not list((results / "launch").iterdir())  # each worker removed its spec file


def test_the_worker_command_starts_python_without_the_working_directory(tmp_path):
    settings = launchers.WorkerSettings(tmp_path / "results", tmp_path / "data", "cpu", None)
    command = settings.command(tmp_path / "results" / "launch" / "x.json")
    assert command[:4] == [sys.executable, "-P", "-m", "ltbench.run.worker"]
    probe = subprocess.run([*launchers.WORKER_PYTHON, "-c", "import sys; print(sys.path[0])"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() not in ("", str(tmp_path))


# --- the atomic writer -----------------------------------------------------------------------

def test_atomic_write_replaces_a_symlink_at_the_target_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.json"
    target.symlink_to(victim)
    atomicfile.write_text(target, "new")
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and target.read_text() == "new"


def test_atomic_write_never_opens_a_planted_temporary_name(tmp_path, monkeypatch):
    """Names are random; were one guessed and planted (a symlink to the victim), the writer
    refuses it (``O_EXCL``) and tries another; three planted names in a row are an error."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.json"
    tokens = iter(["aaaa", "bbbb", "cccc", "dddd"])
    monkeypatch.setattr(atomicfile.secrets, "token_hex", lambda n: next(tokens))
    (tmp_path / ".out.json.aaaa.tmp").symlink_to(victim)
    atomicfile.write_text(target, "new")  # aaaa refused, bbbb used
    assert target.read_text() == "new" and victim.read_text() == "precious"

    tokens = iter(["aaaa", "bbbb", "cccc"])
    for token in ("bbbb", "cccc"):
        (tmp_path / f".out.json.{token}.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        atomicfile.write_text(target, "newer")
    assert target.read_text() == "new" and victim.read_text() == "precious"


def test_a_failed_atomic_write_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="half way"):
        with atomicfile.atomic_write(target) as handle:
            handle.write(b"new, but")
            raise RuntimeError("half way")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]


def test_atomic_write_gives_the_mode_open_would(tmp_path):
    """0o666 less the umask, as ``open()``: a group-writable share stays group-writable."""
    previous = os.umask(0o002)
    try:
        atomicfile.write_bytes(tmp_path / "shared.bin", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared.bin").stat().st_mode) == 0o664


def test_check_and_data_indices_write_through_the_atomic_writer(tmp_path):
    """``check --out`` and ``data indices --out`` replace a symlink planted at their output,
    never the file it points to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    results = tmp_path / "results"
    ResultStore(results).write(make_record("0123456789abcdef",
                                           hparams='{"epochs":200,"protocol":"ldam"}'))
    published = _published_csv(tmp_path / "published.csv", table="Table 2")
    check_out = tmp_path / "check.json"
    check_out.symlink_to(victim)
    result = invoke("check", "--results", results, "--published", published, "--out", check_out)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious" and not check_out.is_symlink()
    assert json.loads(check_out.read_text())["results"] == str(results)

    indices = tmp_path / "indices.npy"
    indices.symlink_to(victim)
    result = invoke("data", "indices", "synthetic-lt", "--imb", "4", "--out", indices,
                    "--set", "classes=4", "--set", "n_max=24")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious" and not indices.is_symlink()


# --- launch spec files -----------------------------------------------------------------------

def test_two_launches_of_one_pack_write_two_spec_files(tmp_path):
    """Two launchers planning the same pack on one store (both find it pending) each get their
    own file, so neither reads the other's planning time or removes the other's file."""
    pack = _tiny_specs(["ce"])
    first = worker.write_spec(pack, tmp_path, 100.0)
    second = worker.write_spec(pack, tmp_path, 200.0)
    assert first != second and worker.spec_pack(first) == worker.spec_pack(second) == \
        pack[0].run_id
    assert worker.read_spec(first)[1] == 100.0 and worker.read_spec(second)[1] == 200.0


def _tampered(identity: dict, **changes) -> dict:
    return {**identity, **changes}


def _spec_document(pack, planned_at) -> dict:
    return {"specs": [spec.identity() for spec in pack], "planned_at": planned_at}


TAMPERED = {
    "planned in the future": (lambda doc: {**doc, "planned_at": time.time() + 3600},
                              "lies in the future"),
    "planned at NaN": (lambda doc: {**doc, "planned_at": float("nan")}, "lies in the future"),
    "planned at true": (lambda doc: {**doc, "planned_at": True}, "is not a time"),
    "planned at a string": (lambda doc: {**doc, "planned_at": "1"}, "is not a time"),
    "no specs": (lambda doc: {"planned_at": doc["planned_at"]}, "'specs'"),
    "another harness version": (
        lambda doc: {**doc, "specs": [_tampered(doc["specs"][0], harness_version="0.0")]},
        "planned by ltbench 0.0, this is " + HARNESS_VERSION),
    "an extra field": (lambda doc: {**doc, "specs": [_tampered(doc["specs"][0], x=1)]},
                       "a run must have exactly the fields"),
    "an unknown method": (
        lambda doc: {**doc, "specs": [_tampered(doc["specs"][0], method="nosuch")]},
        "unknown method 'nosuch'"),
    "a seed beyond int64": (
        lambda doc: {**doc, "specs": [_tampered(doc["specs"][0], seed=2 ** 64)]},
        "seed 18446744073709551616 is not an int64"),
    "a hyper-parameter the engine refuses": (
        lambda doc: {**doc, "specs": [_tampered(doc["specs"][0], hparams={
            **doc["specs"][0]["hparams"], "backbone": "nosuch"})]},
        "--set backbone=nosuch: expected one of"),
    "not JSON": (lambda doc: None, "is not a readable run spec"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_spec_file_is_bad_input_for_the_worker(tmp_path, capsys, case):
    """The worker refuses a spec file that the plan could not have written: exit 2, one
    ``Error:`` line, nothing trained or written, the file left for its owner to see."""
    change, message = TAMPERED[case]
    results = tmp_path / "results"
    ResultStore(results).write(make_record("0123456789abcdef"))
    path = worker.write_spec(_tiny_specs(["ce"]), results / "launch", time.time())
    document = change(_spec_document(_tiny_specs(["ce"]), time.time()))
    path.write_text("{not json" if document is None else json.dumps(document))
    before = tree_snapshot(results)
    code = worker.main([str(path), "--results", str(results), "--data-root",
                        str(tmp_path / "data"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"Error: {path} ") and message in line
    assert tree_snapshot(results) == before


def test_a_renamed_spec_file_is_bad_input(tmp_path, capsys):
    """A file's content is bound to its name (the pack id is a hash of the runs)."""
    ce, focal = _tiny_specs()
    path = worker.write_spec([ce], tmp_path, time.time())
    renamed = path.with_name(path.name.replace(ce.run_id, focal.run_id))
    path.rename(renamed)
    code = worker.main([str(renamed), "--results", str(tmp_path / "results"), "--data-root",
                        str(tmp_path), "--device", "cpu"])
    assert code == 2
    assert f"does not describe pack {focal.run_id}" in capsys.readouterr().err


# --- Markdown --------------------------------------------------------------------------------

PAYLOAD = '<img src=x onerror="alert(1)">'


def test_record_text_reaches_results_md_as_text(tmp_path):
    """``results.md`` (rendered as HTML by any Markdown viewer) shows a dataset name from a
    record as text: ``<`` ``>`` ``&`` become entities, ``|`` cannot end a cell."""
    results, out = tmp_path / "results", tmp_path / "report"
    ResultStore(results).write(make_record("0123456789abcdef", dataset=PAYLOAD + "|x"))
    result = invoke("report", "--results", results, "--out", out)
    assert result.exit_code == 0, result.output
    markdown = (out / "results.md").read_text()
    assert "<img" not in markdown
    assert "## &lt;img src=x onerror=\"alert(1)\"&gt;\\|x" in markdown


def test_published_text_reaches_the_check_table_as_text(tmp_path):
    """The check table (pasted into READMEs and CI summaries) escapes a published row's text."""
    results = tmp_path / "results"
    ResultStore(results).write(make_record("0123456789abcdef",
                                           hparams='{"epochs":200,"protocol":"ldam"}'))
    published = _published_csv(tmp_path / "published.csv", table=PAYLOAD)
    result = invoke("check", "--results", results, "--published", published,
                    "--out", tmp_path / "check.json")
    assert result.exit_code == 0, result.output
    assert "<img" not in result.stdout
    assert '| Cao2019 &lt;img src=x onerror="alert(1)"&gt; (P1) |' in result.stdout
