"""benchmarks/gpu_check.py: the CPU rehearsal (``--device cpu --quick``) as the GPU session runs
the real one, in a subprocess, and the budget, selection and guard rules around its checks."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
NAMES = ["environment", "throughput", "grouped_exact_fp64", "pack_vs_alone",
         "meta_gradient_bf16", "generator_resume", "cuda_oom", "ltbench_run", "cifar10_ce_200",
         "compiled_bench"]
RUN_ON_CPU = {"environment", "throughput", "grouped_exact_fp64", "pack_vs_alone",
              "meta_gradient_bf16", "generator_resume", "ltbench_run"}


def gpu_check(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def load_script(monkeypatch):
    """The script as a module (registered while the test runs: its dataclasses need it)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    work = tmp_path_factory.mktemp("gpu_check")
    proc = gpu_check("--device", "cpu", "--quick", "--data-root", work / "no-data", "--out",
                     work / "out", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((work / "out" / "gpu_check.json").read_text()), work / "out", proc


def test_every_check_has_a_status_and_the_cpu_ones_pass(rehearsal):
    document, _, _ = rehearsal
    assert document["finished"] is True and document["quick"] is True
    assert document["device"] == "cpu" and document["budget_s"] == 480
    checks = document["checks"]
    assert [c["name"] for c in checks] == NAMES
    assert [c["number"] for c in checks] == list(range(1, 11))
    for check in checks:
        assert set(check) == {"number", "name", "proves", "criterion", "status", "reason",
                              "estimate_s", "seconds", "values"}
        assert check["criterion"] and check["proves"]
        if check["name"] in RUN_ON_CPU:
            assert check["status"] == "PASS", check
            assert check["estimate_s"] > 0 and check["seconds"] >= 0 and check["values"]
        else:
            assert check["status"] == "SKIP" and check["seconds"] is None
    reasons = {c["name"]: c["reason"] for c in checks if c["status"] == "SKIP"}
    assert reasons == {"cuda_oom": "needs CUDA", "compiled_bench": "needs CUDA",
                       "cifar10_ce_200": "full run only (not with --quick)"}


def test_the_rehearsal_measures_real_values(rehearsal):
    document, _, _ = rehearsal
    values = {c["name"]: c["values"] for c in document["checks"]}
    rows = values["throughput"]["rows"]
    assert [r["models"] for r in rows] == [1, 2] and all(r["status"] == "ok" for r in rows)
    for row in rows:  # a pass of 2 batches of 8 images per model
        assert row["images_per_s"] == pytest.approx(row["models"] * 16
                                                    / (2 * row["ms_per_step"] / 1000))
    for case in ("all_finite", "one_nan_member"):
        for what in ("loss", "gradients", "parameters", "bn_statistics"):
            assert values["grouped_exact_fp64"][case][what] <= 1e-10
    assert values["grouped_exact_fp64"]["one_nan_member"]["nan_member_loss_is_nan"] is True
    agreement = values["pack_vs_alone"]
    assert max(agreement["fp32"].values()) <= 1e-5 and max(agreement["bf16"].values()) <= 3e-2
    assert agreement["bf16_loss_vs_fp32_loss"] > 0  # the bf16 step did round
    meta = values["meta_gradient_bf16"]
    assert meta["trained_steps"] == 4 and meta["meta_batch_size"] == 20  # 2 of each class
    assert 0 <= meta["l2rw_weight_sign_agreement_min"] <= 1
    assert values["generator_resume"]["draws_equal"] == [True] * 4
    run = values["ltbench_run"]
    parts = ("loss_family_packed", "meta_family", "two_stage_family", "two_workers",
             "sigterm_resume")
    assert all(run[part]["status"] == "PASS" for part in parts)
    assert run["loss_family_packed"]["packed_three"] and run["two_workers"]["two_workers"]
    assert len(run["loss_family_packed"]["records"]) == 4
    assert run["meta_family"]["eps_recorded"] == {"meta-ce": True, "l2rw": True, "mwn": True}
    assert run["two_stage_family"]["stage1_runs"] == 1 and run["two_stage_family"][
        "stage1_reused"]
    sigterm = run["sigterm_resume"]
    assert sigterm["stopped_exit_code"] == 3 and sigterm["resumed"]
    assert sigterm["curve_epochs"] == 3


def test_the_markdown_summary_lists_every_check(rehearsal):
    _, out, proc = rehearsal
    markdown = (out / "gpu_check.md").read_text()
    for number, name in enumerate(NAMES, 1):
        assert f"| {number} | {name} | " in markdown
        assert f"## {number}. {name}: " in markdown
    assert "| 7 | cuda_oom | SKIP (needs CUDA) |" in markdown
    assert "[8] ltbench_run: PASS" in proc.stdout


def test_a_check_that_does_not_fit_the_budget_is_skipped_with_its_estimate(tmp_path):
    proc = gpu_check("--device", "cpu", "--only", "generator_resume,cifar10_ce_200",
                     "--budget-s", "60", "--data-root", tmp_path / "no-data", "--out",
                     tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    checks = {c["name"]: c for c in
              json.loads((tmp_path / "out" / "gpu_check.json").read_text())["checks"]}
    assert checks["generator_resume"]["status"] == "PASS"
    # no throughput measured: 200 epochs x 98 steps x 1.15 at 15 ms/step + 60 s
    skipped = checks["cifar10_ce_200"]
    assert skipped["status"] == "SKIP" and skipped["estimate_s"] == pytest.approx(398.1)
    assert skipped["reason"].startswith("estimated 398 s, ")
    assert skipped["reason"].endswith(" s of the budget left")
    assert {c["reason"] for n, c in checks.items()
            if n not in ("generator_resume", "cifar10_ce_200")} == {
        "not selected (--only / --skip)"}


def test_a_failing_check_fails_with_its_exception_line_and_the_next_check_runs(tmp_path,
                                                                                 monkeypatch):
    script = load_script(monkeypatch)

    def broken(ctx):
        raise ValueError("no such tensor\nsecond line")

    resume = next(c for c in script.CHECKS if c.name == "generator_resume")
    monkeypatch.setattr(script, "CHECKS", (
        script.Check("broken", "nothing", "never passes", script.costs(1, 1), broken), resume))
    ctx = script.Context(torch.device("cpu"), True, script.QUICK, tmp_path, tmp_path,
                         time.monotonic() + 60)
    meta = {"device_name": "cpu", "created_utc": "now", "ltbench_version": "0",
            "torch_version": torch.__version__, "data_root": str(tmp_path), "quick": True,
            "budget_s": 60.0, "elapsed_s": 0.0, "finished": False}
    entries = script.run_all(ctx, {"broken", "generator_resume"}, tmp_path, meta,
                             time.monotonic())
    assert [(e.status, e.reason) for e in entries] == [("FAIL", "ValueError: no such tensor"),
                                                       ("PASS", None)]
    written = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [c["status"] for c in written["checks"]] == ["FAIL", "PASS"] and written["finished"]
    assert "| 1 | broken | FAIL (ValueError: no such tensor) |" in (
        tmp_path / "gpu_check.md").read_text()


def test_bad_arguments_are_one_error_line_and_write_nothing(tmp_path):
    for args, message in (
            (["--only", "nope"], "Error: --only: unknown check 'nope' (checks: "
                                 + ", ".join(NAMES) + ")"),
            (["--budget-s", "0"], "Error: --budget-s must be a positive number, got 0.0")):
        proc = gpu_check(*args, "--out", tmp_path / "out", cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [message]
        assert not (tmp_path / "out").exists()
