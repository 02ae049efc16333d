"""Run claims: two ``ltbench run`` processes on one store train every run exactly once; stale
claims (dead owner, old heartbeat) are taken over by exactly one of several racing takers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import TINY_SYNTHETIC

from ltbench.run import claims
from ltbench.store.result_store import ResultStore

TINY = [a for s in TINY_SYNTHETIC for a in ("--set", s)]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(results: Path, run_id: str, **owner) -> Path:
    path = claims.claims_dir(results) / f"{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"token": "other", **owner}))
    return path


def test_a_held_claim_excludes_others_until_released(tmp_path):
    first = claims.acquire(tmp_path, "run1")
    assert first is not None and first.held()
    assert claims.acquire(tmp_path, "run1") is None  # this live process owns it
    owner = json.loads(first.path.read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == claims.HOST
    first.release()
    assert not first.path.exists()
    second = claims.acquire(tmp_path, "run1")
    assert second is not None
    second.release()


@pytest.mark.parametrize("owner, age_s, taken", [
    ({"host": claims.HOST, "pid": "dead"}, 0, True),          # dead owner on this host
    ({"host": claims.HOST, "pid": os.getpid()}, 0, False),    # live owner on this host
    ({"host": "elsewhere", "pid": 1}, 0, False),              # fresh heartbeat from afar
    ({"host": "elsewhere", "pid": 1}, claims.STALE_AFTER_S + 5, True),  # old heartbeat
    ({}, claims.STALE_AFTER_S + 5, True),                      # unreadable owner, old
])
def test_stale_claims_are_taken_over(tmp_path, owner, age_s, taken):
    if owner.get("pid") == "dead":
        owner = {**owner, "pid": _dead_pid()}
    path = _write_lock(tmp_path, "run1", **owner)
    old = time.time() - age_s
    os.utime(path, (old, old))
    claim = claims.acquire(tmp_path, "run1")
    assert (claim is not None) == taken
    if claim is not None:
        assert json.loads(path.read_text())["token"] == claim.token
        claim.release()
    else:
        assert json.loads(path.read_text())["token"] == "other"


def test_racing_takers_of_one_stale_claim_yield_one_owner(tmp_path):
    for trial in range(20):
        run_id = f"run{trial}"
        _write_lock(tmp_path, run_id, host=claims.HOST, pid=_dead_pid())
        won, barrier = [], threading.Barrier(8)

        def take():
            barrier.wait()
            claim = claims.acquire(tmp_path, run_id)
            if claim is not None:
                won.append(claim)

        threads = [threading.Thread(target=take) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        held = [claim for claim in won if claim.held()]
        assert len(held) == 1, f"trial {trial}: {len(won)} acquired, {len(held)} hold it"
        for claim in won:
            claim.release()


def test_heartbeat_refreshes_the_lock(tmp_path):
    claim = claims.acquire(tmp_path, "run1", heartbeat_s=0.05)
    old = time.time() - 1000
    os.utime(claim.path, (old, old))
    time.sleep(0.3)
    assert time.time() - claim.path.stat().st_mtime < 1.0
    claim.release()


def _ltbench_run(results: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ltbench", "run", "--datasets", "synthetic-lt", "--imb", "4",
         "--results", str(results), *TINY, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_concurrent_processes_train_each_run_exactly_once(tmp_path):
    results = tmp_path / "results"
    grid = ["--methods", "ce,focal,cb-ce", "--seeds", "0,1", "--epochs", "3"]
    processes = [_ltbench_run(results, *grid) for _ in range(2)]
    outputs = [process.communicate(timeout=240) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    trained = [line for _, err in outputs for line in err.splitlines()
               if " ok, top-1 error " in line]
    labels = [line.split("] ", 1)[1].split(" ok,")[0] for line in trained]
    assert len(labels) == 6 and len(set(labels)) == 6, trained   # trained once each
    records = ResultStore(results).read()
    assert len(records) == 6 and records["run_id"].is_unique
    assert set(records["status"]) == {"ok"}
    assert not any(claims.claims_dir(results).iterdir())        # every claim released
