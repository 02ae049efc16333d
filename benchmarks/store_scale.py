"""How reading the results store scales: ``ltbench status``, ``check`` and ``report`` and
``ResultStore.read()`` on stores of 1,000 / 10,000 / 50,000 runs fabricated from real records.

    python benchmarks/store_scale.py [--source results/reference] [--sizes 1000,10000]
                                     [--work DIR] [--out benchmarks/results]

Every fabricated run is a copy of one of the source store's records (and its curves, evals and
other artifacts) under a new run id, spread over the 23 built-in methods × 6 imbalance
factors × as many seeds as it takes, so that the tables and plots have leaderboard-sized cells.
Each command runs in a fresh process, as a user starts it: first with empty caches (every file
read and verified and every plot rendered, which is what every read cost before the caches,
:mod:`ltbench.store.read_cache` and :func:`ltbench.api.plots.make_plot`), then again with the
caches it left (the usual case: a store read before, a few runs added since). Then
``ltbench compact`` merges the store into parts (timed) and every command runs again, cold and
warm, on the compacted store (``compacted_*`` columns). Prints a Markdown table and writes it with the machine's details as ``store_scale-<UTC time>.json``
under ``--out``. A benchmark, not a test: the numbers depend on the machine and on what else
runs on it (the load average is recorded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

METHODS = ("ce", "focal", "cb-ce", "cb-focal", "ce-drw", "ldam", "ldam-drw", "balanced-softmax",
           "logit-adjust", "cb-finetune", "meta-set-finetune", "l2rw", "mwn", "meta-ce",
           "meta-focal", "meta-ldam", "crt", "lws", "tau-norm", "ncm", "pc-softmax",
           "logit-adjust-posthoc", "lade")
IMB_FACTORS = (200.0, 100.0, 50.0, 20.0, 10.0, 1.0)
COMMANDS = {"status": ["status"], "check": ["check", "--allow-empty"], "report": ["report"]}


def _set(table: pa.Table, name: str, value, type_) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array([value], type_))


def fabricate(source: Path, out: Path, runs: int) -> None:
    """A store of ``runs`` copies of ``source``'s records and artifacts (see the docstring)."""
    records = sorted((source / "runs").glob("*.parquet"))
    if not records:
        raise SystemExit(f"no records in {source / 'runs'}")
    folders = [p.name for p in source.iterdir() if p.is_dir() and p.name != "runs"]
    originals = [(pq.read_table(path), {folder: (source / folder / path.name).read_bytes()
                                        for folder in folders
                                        if (source / folder / path.name).exists()})
                 for path in records]
    for folder in ["runs", *folders]:
        (out / folder).mkdir(parents=True, exist_ok=True)
    cell = len(METHODS) * len(IMB_FACTORS)
    for i in range(runs):
        # one source per method, so that every method keeps one configuration
        record, artifacts = originals[(i % len(METHODS)) % len(originals)]
        run_id = hashlib.sha256(f"store-scale {i}".encode()).hexdigest()[:16]
        record = _set(record, "run_id", run_id, pa.string())
        record = _set(record, "method", METHODS[i % len(METHODS)], pa.string())
        record = _set(record, "imb_factor", IMB_FACTORS[(i // len(METHODS)) % len(IMB_FACTORS)],
                      pa.float64())
        record = _set(record, "seed", i // cell, pa.int64())
        pq.write_table(record, out / "runs" / f"{run_id}.parquet", write_page_checksum=True)
        for folder, data in artifacts.items():
            (out / folder / f"{run_id}.parquet").write_bytes(data)


def _timed(argv: list[str], env: dict[str, str]) -> float:
    """Seconds of the command ``argv``; it must exit 0, or 1 (``check``: the fabricated copies
    of few real runs regress against, or miss, many published numbers)."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")
    return time.perf_counter() - started


def _read_seconds(store: Path, env: dict[str, str]) -> float:
    code = ("import sys, time; from ltbench.store.result_store import ResultStore; "
            "t = time.perf_counter(); ResultStore(sys.argv[1]).read(); "
            "print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code, str(store)], env=env, check=True,
                          capture_output=True, text=True)
    return float(done.stdout)


def _env(work: Path) -> dict[str, str]:
    """The environment of every command: its caches under ``work``."""
    return {**os.environ, "LTBENCH_READ_CACHE": str(work / "read-cache"),
            "LTBENCH_PLOT_CACHE": str(work / "plot-cache")}


def measure(store: Path, work: Path) -> dict[str, dict[str, float]]:
    """Seconds of every command, cold (empty caches) and warm (the caches it left)."""
    ltbench = [sys.executable, "-m", "ltbench"]
    times: dict[str, dict[str, float]] = {}
    env = _env(work)
    caches = [Path(env["LTBENCH_READ_CACHE"]), Path(env["LTBENCH_PLOT_CACHE"])]

    def clear() -> None:
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)

    for name, args in COMMANDS.items():
        extra = {"check": ["--out", str(work / "check.json")],
                 "report": ["--out", str(work / "report")]}.get(name, [])
        times[name] = {}
        for state in ("cold", "warm"):
            if state == "cold":
                clear()
            times[name][state] = _timed([*ltbench, *args, "--results", str(store), *extra], env)
    times["read"] = {}
    for state in ("cold", "warm"):
        if state == "cold":
            clear()
        times["read"][state] = _read_seconds(store, env)
    return times


def _columns(prefix: str, times: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{prefix}{name}_{state}_s": round(seconds, 2)
            for name, by_state in times.items() for state, seconds in by_state.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path("results/reference"))
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--work", type=Path, default=None,
                        help="Where the fabricated stores go [default: a temporary folder].")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="ltbench-store-scale-"))
    rows = []
    for size in sizes:
        store = work / f"store-{size}"
        if (store / "compacted").exists():  # compacted by an earlier run: per-run files gone
            shutil.rmtree(store)
        if not (store / "runs").is_dir():
            started = time.perf_counter()
            fabricate(args.source, store, size)
            print(f"fabricated {size} runs in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
        row = {"runs": size, **_columns("", measure(store, work))}
        # with the caches the warm commands left, as a user compacts a store they read
        row["compact_s"] = round(_timed([sys.executable, "-m", "ltbench", "compact", "--results",
                                         str(store)], _env(work)), 2)
        rows.append({**row, **_columns("compacted_", measure(store, work))})
        print(json.dumps(rows[-1]), file=sys.stderr)
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in header) + " |")
    document = {"created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
                "source": str(args.source), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("store_scale-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                       + ".json")
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
