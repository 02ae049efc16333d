"""``ltbench bench`` as a user runs it (a real subprocess), with minimal settings."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest

from ltbench.bench.throughput import COLUMNS, GRID_RUNS, TRAIN_FLOP_PER_IMAGE, CudagraphSkips

HEADER = ("| variant | N | img/s | img/s/model | ms/step | run h | grid h | x B0 | TFLOP/s | "
          "peak MB | compile s | status |")


def ltbench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ltbench", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    proc = ltbench("bench", "--device", "cpu", "--data-root", work / "no-cifar", "--steps", 2,
                   "--warmup", 1, "--packs", "1,2", "--workers", 0, "--batch-size", 8,
                   "--out", work / "out", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work, proc


@pytest.mark.slow
def test_bench_prints_the_table(bench_run):
    _, proc = bench_run
    lines = proc.stdout.splitlines()
    assert "random uint8 images (1..255) with CIFAR-10-LT IF 100 class counts" in lines[0]
    assert lines[1] == HEADER
    variants = [line.split("|")[1].strip() for line in lines[3:]]
    assert variants == ["B0", "B1", "B1c", "B2", "B3", "B3g", "B4 N=1", "B4 N=2"]
    assert lines[8].rstrip().endswith("| n/a on CPU |")  # B3g needs CUDA


@pytest.mark.slow
def test_bench_writes_consistent_json_and_csv(bench_run):
    work, _ = bench_run
    (json_path,) = (work / "out").glob("bench-*.json")
    (csv_path,) = (work / "out").glob("bench-*.csv")
    document = json.loads(json_path.read_text())
    assert document["train_images"] == 12406  # 5000 + 2997 + ... + 50
    assert document["settings"]["packs"] == [1, 2] and document["projection"]["grid_runs"] == 216
    rows = {row["variant"]: row for row in document["rows"]}
    with open(csv_path, newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert list(csv_rows[0]) == COLUMNS and [r["variant"] for r in csv_rows] == list(rows)
    measured = [v for v, row in rows.items() if row["status"] == "ok"]
    assert measured == ["B0", "B1", "B1c", "B2", "B4 N=1", "B4 N=2"]
    assert rows["B0"]["speedup_vs_b0"] == 1.0
    assert rows["B0"]["description"] == ("reference style: torchvision + PIL + DataLoader "
                                         "(0 workers), fp32 eager")
    for variant in measured:
        row = rows[variant]
        assert row["steps"] == 2  # two batches of 8 per timed pass
        seconds_per_pass = 2 * row["ms_per_step"] / 1000
        assert row["images_per_s"] == pytest.approx(row["models"] * 16 / seconds_per_pass)
        assert row["images_per_s_per_model"] == pytest.approx(row["images_per_s"] / row["models"])
        assert row["tflops"] == pytest.approx(row["images_per_s"] * TRAIN_FLOP_PER_IMAGE / 1e12)
        # 200 epochs of ceil(12406 / 8) = 1551 steps; the grid in packs of N
        assert row["run_wall_h"] == pytest.approx(200 * 1551 * row["ms_per_step"] / 1000 / 3600)
        assert row["grid_wall_h"] == pytest.approx(math.ceil(GRID_RUNS / row["models"])
                                                   * row["run_wall_h"])
        assert row["peak_mem_mb"] > 0 and row["compile_s"] is None
    assert rows["B3g"]["status"] == "n/a on CPU" and rows["B3g"]["images_per_s"] is None


@pytest.mark.slow
def test_bench_rejects_bad_settings(tmp_path):
    for args, message in ((["--packs", "1,0"], "Error: --packs must be at least 1, got 0"),
                          (["--steps", "0"], "Error: --steps must be at least 1, got 0")):
        proc = ltbench("bench", "--device", "cpu", *args, "--out", tmp_path / "out",
                       cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [message]
        assert not (tmp_path / "out").exists()


def test_cudagraph_skips_give_b3g_status_its_reasons():
    """B3g's status from inductor's own skip report, called as inductor calls it
    (torch/_inductor/cudagraph_utils.py): each distinct reason once, its first line; a skip
    counted without a warning (as inductor counts non-GPU graphs) by number; none: "ok"."""
    from torch._dynamo.utils import counters
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    with CudagraphSkips() as nothing_skipped:
        pass
    assert nothing_skipped.status() == "ok"
    with CudagraphSkips() as skips:
        for _ in range(2):
            log_cudagraph_skip_and_bump_counter(
                "skipping cudagraphs due to mutated inputs (1 instances). Found from : \n"
                '   File "steps.py", line 220, in train_step')
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to cpu device (arg0_1)")
    assert skips.skipped == 3
    assert skips.status() == ("ok (cudagraphs skipped: mutated inputs (1 instances). Found "
                              "from :; cpu device (arg0_1))")
    with CudagraphSkips() as unexplained:
        counters["inductor"]["cudagraph_skips"] += 2
    assert unexplained.status() == "ok (cudagraphs skipped: 2 graphs, no reason logged)"
