"""Progress lines (:mod:`ltbench.engine.progress`): fit the terminal, say the time left and
the phase, and become one line per event where there is no terminal."""

from __future__ import annotations

import io

import pytest

from ltbench.engine import progress as progress_module
from ltbench.engine.progress import RunProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(progress_module, "oversubscription_note", lambda: "")
    return now


@pytest.mark.parametrize("columns", [80, 120])
def test_terminal_lines_fit_the_width_and_estimate_the_time_left(monkeypatch, clock, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    out = Terminal()
    bar = RunProgress("[12/92] cifar100-lt imb=100 ldam-drw seed=2", out, min_interval=0.0)
    bar.begin(400)
    clock[0] += 30.0
    bar.advance(100)  # a quarter in 30 s: 90 s left
    bar.epoch_done(49, 200, 1.23456, 41.5)
    bar.phase("evaluating ldam-drw seed=2 on the shifted test sets")
    redraws = [line.removesuffix("\x1b[K") for line in out.getvalue().split("\r") if line]
    assert redraws and all(len(line) < columns for line in redraws)
    assert "25.0% (30.0s, 90.0s left)" in redraws[0]
    assert "shifted test sets" in redraws[-1] or redraws[-1].endswith("…")
    assert "\n" not in out.getvalue()  # redrawn in place, never stacked


def test_without_a_terminal_every_event_is_one_line(clock):
    out = io.StringIO()
    log = RunProgress("[1/2] synthetic-lt imb=4 ce seed=0", out)
    log.begin(10)
    clock[0] += 5.0
    log.advance(10)
    log.epoch_done(0, 1, 0.5, 60.0)
    log.phase("evaluating ce seed=0 on the shifted test sets")
    log.end("ok, top-1 error 40.00%")
    assert out.getvalue().splitlines() == [
        "[1/2] synthetic-lt imb=4 ce seed=0 started",
        "[1/2] synthetic-lt imb=4 ce seed=0 epoch 1/1 loss 0.5000 test acc 60.00% (5.0s)",
        "[1/2] synthetic-lt imb=4 ce seed=0 evaluating ce seed=0 on the shifted test sets (5.0s)",
        "[1/2] synthetic-lt imb=4 ce seed=0 ok, top-1 error 40.00% in 5.0s"]


def test_a_resumed_run_estimates_from_this_process_only(monkeypatch, clock):
    monkeypatch.setenv("COLUMNS", "200")
    out = Terminal()
    bar = RunProgress("[1/1] run", out, min_interval=0.0)
    bar.begin(100)
    bar.resumed(5, 50)
    clock[0] += 10.0
    bar.advance(10)  # 10 steps in 10 s here; 40 to go
    assert "(10.0s, 40.0s left)" in out.getvalue().split("\r")[-1]
