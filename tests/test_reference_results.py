"""The committed reference results (``results/reference/``): every record is a finished
full-protocol run with its provenance, every file is intact, each resume checkpoint belongs to
a run still under way and is documented, and ``ltbench check`` passes on them as a gate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from ltbench.report.check import check, to_markdown
from ltbench.report.published import default_published_dir, load_published
from ltbench.report.site import write_report
from ltbench.store.integrity import find_damaged
from ltbench.store.result_store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference"
REPORT = ROOT / "reports" / "reference"
#: Every full-protocol run so far is 200 epochs (the LDAM-DRW and Jamal CIFAR protocols).
PROTOCOL_EPOCHS = 200
PROVENANCE = ("device", "precision", "memory_format", "torch_version", "git_commit",
              "started_utc", "finished_utc")


@pytest.fixture(scope="module")
def reference():
    store = ResultStore(REFERENCE)
    return store, store.read()


def test_every_reference_file_is_intact(reference):
    store, records = reference
    assert not records.empty
    assert find_damaged(store) == []
    assert sorted(p.stem for p in (REFERENCE / "runs").glob("*.parquet")) == \
        sorted(records["run_id"])


def test_every_reference_run_is_a_finished_full_protocol_run_with_provenance(reference):
    store, records = reference
    readme = (REFERENCE / "README.md").read_text(encoding="utf-8")
    for record in records.to_dict("records"):
        run_id = record["run_id"]
        # artifact_error is null, or NaN in a record written before the column existed.
        assert record["status"] == "ok" and pd.isna(record["artifact_error"]), run_id
        assert record["epochs"] == json.loads(record["hparams"])["epochs"] == PROTOCOL_EPOCHS
        assert not any(pd.isna(record[column]) for column in PROVENANCE), run_id
        curves = store.curves(run_id)
        assert list(curves["epoch"]) == list(range(PROTOCOL_EPOCHS)), run_id
        # The recorded cost covers at least every epoch's training and evaluation.
        assert record["wall_s"] >= (curves["train_s"] + curves["eval_s"].fillna(0)).sum()
        assert run_id in readme, f"{run_id} is not described in results/reference/README.md"


def test_resume_checkpoints_belong_to_documented_runs_under_way(reference):
    _, records = reference
    readme = (REFERENCE / "README.md").read_text(encoding="utf-8")
    checkpoints = sorted((REFERENCE / "resume").glob("*")) if (REFERENCE / "resume").is_dir() \
        else []
    for path in checkpoints:
        assert path.suffix == ".pt" and path.stem not in set(records["run_id"]), path
        assert path.stat().st_size < 5 * 2**20, path
        assert path.stem in readme, f"{path.name} is not described in the README"


def test_the_reference_results_pass_the_check_gate(reference):
    _, records = reference
    result = check(records, load_published(default_published_dir()))
    assert result.comparisons and result.failures() == []


def _numbers(site: Path) -> dict[str, str]:
    """The report's tables and plot data (not its SVG, which depends on the matplotlib
    version), with generation times masked."""
    files = [site / "results.md", *sorted((site / "data").glob("*.csv"))]
    return {str(path.relative_to(site)):
            re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "<time>", path.read_text("utf-8"))
            for path in files}


def test_the_committed_reference_report_is_current(reference, tmp_path):
    """reports/reference/ is the report of the committed results (``make reference-report``)."""
    store, _ = reference
    write_report(store, tmp_path / "site", published=load_published(default_published_dir()))
    assert _numbers(REPORT) == _numbers(tmp_path / "site")
    assert sorted(p.name for p in REPORT.iterdir()) == \
        sorted(p.name for p in (tmp_path / "site").iterdir())


def test_the_readme_shows_the_reference_check_table(reference):
    """The README's reproduced-vs-published table is ``ltbench check --results
    results/reference``'s, row for row (paste its table between the markers when a reference
    run lands)."""
    _, records = reference
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme.split("<!-- reference-check:begin -->")[1].split(
        "<!-- reference-check:end -->")[0]
    table = [line for line in to_markdown(check(records, load_published(
        default_published_dir()))).splitlines() if line.startswith("|")]
    assert [line for line in shown.splitlines() if line.startswith("|")] == table
