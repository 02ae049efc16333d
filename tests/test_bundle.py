"""``ltbench report --bundle``: the zip of the site, the records and the commands that rerun
every cell (:mod:`ltbench.report.bundle`, :mod:`ltbench.run.commands`)."""

from __future__ import annotations

import shlex
import zipfile

import pandas as pd
from click.testing import CliRunner

from ltbench.cli import cli
from ltbench.hparams import parse_overrides
from ltbench.run import grid
from ltbench.run.commands import rerun_commands
from ltbench.spec import canonical_json
from ltbench.store.result_store import ResultStore
from helpers import TINY_SYNTHETIC, curves_frame, make_record, tree_snapshot


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _store(root) -> ResultStore:
    """Records of runs planned by two grids: ldam-drw at its defaults, and focal with
    gamma=2 and a 3-epoch schedule, over two seeds; plus a record no command plans."""
    store = ResultStore(root)
    overrides = parse_overrides(TINY_SYNTHETIC)
    specs = grid.expand(["ldam-drw"], ["synthetic-lt"], [4.0], [0, 1], overrides=overrides,
                        epochs=2)
    specs += grid.expand(["focal"], ["synthetic-lt"], [8.0], [0, 1], epochs=3,
                         overrides={**overrides, "gamma": "2"}, profile="step", split_seed=3)
    for spec in specs:
        store.write(make_record(spec.run_id, method=spec.method, dataset=spec.dataset,
                                imb_factor=spec.imb_factor, profile=spec.profile,
                                split_seed=spec.split_seed, seed=spec.seed,
                                epochs=spec.epochs, hparams=canonical_json(spec.hparams)),
                    {"curves": curves_frame(spec.epochs, 30.0)})
    store.write(make_record("0123456789abcdef", method="ce", dataset="synthetic-lt"))
    return store


def test_rerun_commands_plan_exactly_the_stored_runs(tmp_path):
    """Every regenerated line, run as ``--dry-run`` against the store, finds all its runs
    done; the hand-made record no command plans is a comment."""
    store = _store(tmp_path / "results")
    lines = rerun_commands(store.read())
    assert len(lines) == 3
    [comment] = [line for line in lines if line.startswith("#")]
    assert comment.startswith("# ce on synthetic-lt IF 100: no command of ltbench")
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    focal = next(words for words in commands if "focal" in words)
    assert "gamma=2.0" in focal and focal[focal.index("--profile") + 1] == "step"
    for words in commands:
        result = invoke(*words[1:], "--dry-run", "--results", store.root)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-1] == "2 runs in the grid, 2 done, 0 to train"


def test_bundle_zips_the_site_the_records_and_the_commands(tmp_path):
    store = _store(tmp_path / "results")
    bundle = tmp_path / "share.zip"
    result = invoke("report", "--results", store.root, "--out", tmp_path / "site",
                    "--bundle", bundle)
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        assert {"site/index.html", "site/synthetic-lt.html", "site/ranks.html",
                "records.parquet", "records.curves.parquet", "commands.sh"} <= names
        with archive.open("records.parquet") as handle:
            assert len(pd.read_parquet(handle)) == 5
        assert archive.read("commands.sh").decode().count("\nltbench run ") == 2


def test_a_bad_bundle_path_is_one_line_and_writes_nothing(tmp_path):
    store = _store(tmp_path / "results")
    before = tree_snapshot(tmp_path)
    for path, problem in ((tmp_path / "share.tar", "must end in .zip"),
                          (tmp_path / "no" / "share.zip", "does not exist")):
        result = invoke("report", "--results", store.root, "--out", tmp_path / "site",
                        "--bundle", path)
        assert result.exit_code == 2 and problem in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert tree_snapshot(tmp_path) == before
