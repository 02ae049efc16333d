"""``ltbench bench``: throughput and memory of the training step (B0 … B4)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import BadInput
from ..integers import Integer
from .shared import DEFAULT_RESULTS, data_root_option


@click.command()
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@data_root_option
@click.option("--packs", default=None,
              help="Pack sizes N for B4, comma-separated [default: 1,2,4 on CPU; "
                   "1,2,4,...,64 on CUDA].")
@click.option("--steps", type=Integer(1), default=None,
              help="Training steps per timed pass [default: 3 on CPU; one epoch, 98, on CUDA].")
@click.option("--warmup", type=Integer(1), default=None,
              help="Steps of the untimed warm-up pass [default: 1 on CPU; 98 on CUDA].")
@click.option("--repeats", type=Integer(1), default=None,
              help="Timed passes per variant, the median counts [default: 1 on CPU; 3 on CUDA].")
@click.option("--workers", type=Integer(0), default=4, show_default=True,
              help="DataLoader worker processes for B0: the reference's default; 0 loads in "
                   "the main process.")
@click.option("--cpu-compile", is_flag=True, help="Also time torch.compile on CPU (B3, B4).")
@click.option("--batch-size", type=Integer(1), default=128, show_default=True,
              help="Batch per model: the protocol's 128; smaller only for smoke tests.")
@click.option("--out", default=Path(DEFAULT_RESULTS) / "bench", show_default=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Folder for bench-<time>.json and .csv.")
def bench(device, data_root, packs, steps, warmup, repeats, workers, cpu_compile, batch_size,
          out):
    """Time the training engine's variants (B0 reference style ... B4 packs of N) on
    CIFAR-10-LT IF 100 with ResNet-32 and print the table.

    Uses the real CIFAR-10 under --data-root when present, else random images with the real
    long-tailed class counts. A benchmark, not a test: numbers depend on the machine and its
    load; compare them as ratios within one run.
    """
    from ..bench.throughput import (CPU_DEFAULTS, CUDA_DEFAULTS, Settings, format_table, run_bench,
                                    write_results)
    from ..integers import parse_int_list
    from ..run.runner import resolve_device
    from ..store.writable import check_writable

    torch_device = resolve_device(device)
    defaults = CUDA_DEFAULTS if torch_device.type == "cuda" else CPU_DEFAULTS
    pack_sizes = tuple(parse_int_list(packs, "--packs", least=1)) if packs \
        else defaults["packs"]
    check_writable(out, "--out")  # before the benchmark's minutes, not after
    settings = Settings(
        device=torch_device, packs=pack_sizes, steps=steps or defaults["steps"],
        warmup=warmup or defaults["warmup"], repeats=repeats or defaults["repeats"],
        workers=workers, cpu_compile=cpu_compile, batch_size=batch_size)
    rows, meta = run_bench(settings, data_root, sys.stderr)
    click.echo(f"{meta['device']} · torch {meta['torch_version']} · {meta['data']} · "
               f"load average {meta['load_average_1min']:.2f} on {meta['cpu_count']} CPUs")
    click.echo(format_table(rows))
    try:
        json_path, csv_path = write_results(rows, meta, out)
    except OSError as exc:
        raise BadInput(f"--out {out} is not writable: {exc.strerror or exc}") from exc
    click.echo(f"wrote {json_path} and {csv_path}", err=True)
