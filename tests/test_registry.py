"""Packaging and plugin discovery: import names, entry points, third-party plugins, duplicates."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ltbench import registry
from ltbench.cli import cli
from helpers import BUILTIN_DATASETS, BUILTIN_METHODS
from ltbench.errors import BadInput
from ltbench.run import stages

REPO = Path(__file__).resolve().parents[1]

def test_import_names_map_to_repository_folders(tmp_path):
    """One import name: harness/ → ltbench, methods/ → ltbench.methods, datasets/ →
    ltbench.datasets, and no top-level ``datasets`` package (it would shadow Hugging Face's)."""
    probe = textwrap.dedent("""
        import importlib.util, json, ltbench, ltbench.methods, ltbench.datasets
        spec = importlib.util.find_spec("datasets")
        print(json.dumps([ltbench.__file__, ltbench.methods.__file__,
                          ltbench.datasets.__file__, spec.origin if spec else None]))
    """)
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    import json

    harness, methods, datasets, top_level = json.loads(out)
    assert Path(harness).parent == REPO / "harness"
    assert Path(methods).parent == REPO / "methods"
    assert Path(datasets).parent == REPO / "datasets"
    assert top_level is None or not Path(top_level).is_relative_to(REPO)


def _builtins(kind: str) -> set[str]:
    """The names ltbench itself registers (third-party plugins installed here may add more)."""
    return {name for name, plugin in registry.plugins(kind).items()
            if plugin.provider.startswith("ltbench ")}


def test_builtins_register_through_entry_points():
    assert _builtins("method") == BUILTIN_METHODS
    assert _builtins("dataset") == BUILTIN_DATASETS
    for kind in ("method", "dataset"):
        for name in _builtins(kind):
            cls = registry.plugins(kind)[name].load()
            assert cls.summary and cls.paper, f"{kind} {name} lacks summary or paper"


def test_unknown_name_suggests_close_ones():
    with pytest.raises(BadInput, match=r"unknown method 'ldam_drw'; did you mean 'ldam-drw'"):
        registry.parse_names("method", "ce,ldam_drw")
    assert registry.parse_names("method", "focal, ce,focal") == ["focal", "ce"]
    everything = registry.parse_names("method", "all")
    assert everything == sorted(registry.plugins("method")) and BUILTIN_METHODS <= set(everything)


def _install_fake_distribution(site: Path, entry_points: str) -> None:
    """A real installed distribution (dist-info with entry points) on a sys.path folder."""
    (site / "thirdparty_lt").mkdir(parents=True)
    (site / "thirdparty_lt" / "__init__.py").write_text(textwrap.dedent('''
        import torch.nn.functional as F
        from ltbench.api import Method

        class SquaredHinge(Method):
            summary = "A third-party loss used by ltbench's tests."
            paper = "none (test fixture)"
            defaults = {"margin": 1.0}

            def loss(self, logits, targets, epoch):
                onehot = F.one_hot(targets, logits.shape[1]).float()
                signs = 2 * onehot - 1
                return F.relu(self.hparams["margin"] - signs * logits).pow(2).mean()

        class FromFocal(SquaredHinge):
            stage1 = "focal"  # declares that it starts from focal's runs
    '''))
    info = site / "thirdparty_lt-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-lt\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def fresh_registry():
    registry.refresh()
    yield
    registry.refresh()


def test_refresh_also_refreshes_which_final_models_are_kept(tmp_path, monkeypatch,
                                                            fresh_registry):
    """Which methods' final models the store keeps follows the registry: after installing a
    plugin that starts from focal's runs, and ``refresh``, focal's models are kept."""
    assert stages.keeps_final_model("ce") and not stages.keeps_final_model("focal")
    site = tmp_path / "site"
    _install_fake_distribution(site, "[ltbench.methods]\nfrom-focal = thirdparty_lt:FromFocal\n")
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()
    assert stages.keeps_final_model("focal")


@pytest.mark.slow
def test_third_party_method_is_one_entry_point(tmp_path, monkeypatch, fresh_registry):
    site = tmp_path / "site"
    _install_fake_distribution(site, "[ltbench.methods]\nsq-hinge = thirdparty_lt:SquaredHinge\n")
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()
    plugin = registry.plugins("method")["sq-hinge"]
    assert plugin.provider == "thirdparty-lt 1.0"
    listing = CliRunner().invoke(cli, ["list", "methods"])
    assert listing.exit_code == 0
    assert "sq-hinge" in listing.output and "thirdparty-lt 1.0" in listing.output

    # And it trains end to end in a fresh process that sees the same installation.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get(
        "PYTHONPATH", "")])}
    from helpers import TINY_SYNTHETIC

    sets = [a for s in TINY_SYNTHETIC for a in ("--set", s)]
    proc = subprocess.run([sys.executable, "-m", "ltbench", "run", "--methods", "sq-hinge",
                           "--datasets", "synthetic-lt", "--imb", "4", "--epochs", "1", "--device", "cpu",
                           "--results", str(tmp_path / "results"), *sets],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    from ltbench.store.result_store import ResultStore

    records = ResultStore(tmp_path / "results").read()
    assert list(records["method"]) == ["sq-hinge"]
    assert list(records["status"]) == ["ok"]
    assert '"margin":1.0' in records["hparams"][0]


def test_duplicate_name_is_a_hard_error_naming_both(tmp_path, monkeypatch, fresh_registry):
    site = tmp_path / "site"
    _install_fake_distribution(site, "[ltbench.methods]\nce = thirdparty_lt:SquaredHinge\n")
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()
    with pytest.raises(BadInput) as err:
        registry.plugins("method")
    message = str(err.value)
    assert "'ce' is registered twice" in message
    assert "thirdparty-lt 1.0" in message and "ltbench 0.1.0" in message
