"""``ltbench demo`` (issue 18): its plan keeps each family's schedule, and Ctrl-C still leaves
the report of the runs that finished. A real subprocess, interrupted as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from helpers import with_default_ctrl_c

from ltbench.cli.demo import DEMO_RUN
from ltbench.hparams import parse_overrides
from ltbench.run import grid


def test_the_demo_plan_keeps_every_stage_of_its_schedules():
    options = dict(zip(DEMO_RUN[::2], DEMO_RUN[1::2]))
    overrides = parse_overrides([DEMO_RUN[i + 1] for i, arg in enumerate(DEMO_RUN)
                                 if arg == "--set"])
    specs = grid.expand(options["--methods"].split(","), ["synthetic-lt"], [100.0],
                        [0, 1, 2], overrides=overrides, epochs=int(options["--epochs"]))
    assert grid.schedule_notes(specs, overrides) == []
    by_method = {spec.method: spec.hparams for spec in specs}
    assert (by_method["ce"]["warmup_epochs"], by_method["ce"]["lr_milestones"]) == (1, [16, 18])
    assert by_method["ce-drw"]["drw_epoch"] == 16  # four DRW epochs, two at the full rate
    assert by_method["meta-ce"]["meta_start_epoch"] == 16


@pytest.mark.slow  # the first demo run trains for several seconds
def test_ctrl_c_stops_the_demo_and_still_writes_the_report(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "ltbench", "demo", "--device", "cpu"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=env,
                               preexec_fn=with_default_ctrl_c)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "ok, top-1 error" in line:  # the first run is in the store
            process.send_signal(signal.SIGINT)
            break
    _, rest = process.communicate(timeout=120)
    lines.append(rest)
    assert process.returncode == 3, "".join(lines)
    assert any(line.startswith("estimated cost: 15 runs") for line in lines)
    assert "interrupted: the report of the runs that finished: open reports/demo/index.html" \
        in "".join(lines)
    runs = pd.concat(pd.read_parquet(path) for path in (tmp_path / "results/demo/runs").iterdir())
    assert 1 <= len(runs) <= 2 and set(runs["status"]) == {"ok"}
    page = (tmp_path / "reports/demo/index.html").read_text(encoding="utf-8")
    assert "synthetic-lt" in page
