"""The ``ltbench`` command line.

Heavy modules (torch, pandas) are imported inside the commands that need them, so ``ltbench
--help``, ``report`` and ``status`` start fast. Every problem with the user's input is reported
as one line, ``Error: ...``, with exit code 2, before anything is written.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
import time
from pathlib import Path

import click

from . import __version__, atomicfile
from .errors import BadInput
from .integers import Integer

DEFAULT_RESULTS = "results"
DEFAULT_REPORTS = "reports"


class LtbenchGroup(click.Group):
    """A click group whose errors are one line on stderr with exit code 2.

    click prints usage errors over several lines (usage, hint, error); researchers run grids
    from scripts and logs, where one greppable line naming the problem reads better.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"Error: {where}{exc.format_message()}", err=True)
            sys.exit(2)
        except BadInput as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=LtbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ltbench")
def cli():
    """ltbench: train, compare and report long-tailed recognition methods."""


# -- shared options ---------------------------------------------------------------------------

def _results_option(f):
    return click.option("--results", "results", default=DEFAULT_RESULTS, show_default=True,
                        type=click.Path(path_type=Path), help="Results store folder.")(f)


def _data_root_option(f):
    return click.option("--data-root", envvar="LTBENCH_DATA_ROOT", default="data",
                        show_default="$LTBENCH_DATA_ROOT or ./data",
                        type=click.Path(path_type=Path),
                        help="Folder holding the datasets' files.")(f)


def _set_option(f):
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a hyper-parameter (repeatable), e.g. --set lr=0.05.")(f)


def _subset_options(f):
    f = click.option("--profile", default="exp", show_default=True,
                     help="Count profile: exp or step.")(f)
    from .spec import MAX_SPLIT_SEED

    return click.option("--split-seed", default=0, show_default=True,
                        type=Integer(0, MAX_SPLIT_SEED),
                        help="Seed of the long-tailed subset (separate from training seeds).")(f)


def _launch_options(f):
    """``--launcher`` and its options, gathered into one ``launch`` argument
    (:class:`ltbench.launch_cli.LaunchOptions`)."""
    from .launch_cli import launch_options

    return launch_options(f)


# -- run ------------------------------------------------------------------------------------

@cli.command()
@click.option("--methods", default="all", show_default=True,
              help="'all' or comma-separated method names (see 'ltbench list').")
@click.option("--datasets", default="cifar10-lt", show_default=True,
              help="Comma-separated dataset names.")
@click.option("--imb", default=None, show_default="100, or the split's own factor for "
                                                   "datasets with fixed splits",
              help="Comma-separated imbalance factors n_max/n_min (>= 1), e.g. 200,100,50.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated training seeds.")
@click.option("--epochs", type=Integer(1), default=None,
              help="Epochs per run; epoch-valued defaults (warm-up, decays, DRW) scale with it.")
@_subset_options
@_data_root_option
@_results_option
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@_set_option
@click.option("--dry-run", is_flag=True, help="Print the runs and whether each is done; train "
                                              "nothing, write nothing.")
@click.option("--force", is_flag=True, help="Re-train runs that are already in the store.")
@click.option("--rerun-failed", is_flag=True, help="Re-train failed and diverged runs.")
@click.option("--pack-size", default="auto", show_default=True,
              help="Most runs trained together as one grouped network: N >= 1, or 'auto' "
                   "(1 on CPU; on CUDA from the free GPU memory; 1 for Slurm and Ray). "
                   "A launcher worker trains one pack.")
@_launch_options
def run(methods, datasets, imb, seeds, epochs, profile, split_seed, data_root, results, device,
        overrides, dry_run, force, rerun_failed, pack_size, launch):
    """Train every run of the grid datasets x imbalance factors x methods x seeds.

    Runs already in the results store are skipped, so re-running a command resumes it; a run
    that was interrupted continues from its last checkpoint. Ctrl-C checkpoints every run in
    training after its current batch and stops (exit code 3; 130 with a worker pool); in
    this process, a second Ctrl-C aborts at once, without a checkpoint.
    """
    from . import grid, registry
    from .hparams import parse_overrides
    from .integrity import usable_statuses
    from .runner import check_store_writable, describe_plan, pending
    from .stages import with_stage1
    from .store import ResultStore

    requested_pack_size = _pack_size(pack_size)
    specs = grid.expand(
        registry.parse_names("method", methods),
        registry.parse_names("dataset", datasets),
        grid.parse_imb_factors(imb) if imb is not None else None,
        grid.parse_seeds(seeds),
        profile=profile, split_seed=split_seed, overrides=parse_overrides(overrides),
        epochs=epochs, all_methods=methods.strip() == "all")
    specs = with_stage1(specs)  # two-stage methods' stage-1 runs are runs of the grid too
    launch.validate()
    store = ResultStore(results)
    planned_at = time.time()  # before reading: records published later are someone else's
    statuses = usable_statuses(store) if store.runs_dir.is_dir() else {}
    todo = pending(specs, statuses, force=force, rerun_failed=rerun_failed)
    if dry_run or launch.launcher == "dry":
        click.echo(describe_plan(specs, todo))
        if launch.launcher == "dry":
            click.echo(launch.describe_commands(todo, results, data_root, device,
                                                requested_pack_size))
        click.echo(f"{len(specs)} runs in the grid, {len(specs) - len(todo)} done, "
                   f"{len(todo)} to train")
        return
    _check_data(todo, data_root)
    where = launch.prepare(device)
    launch.check_free_space(store.root)
    check_store_writable(store)
    store.ensure_writable()
    pack_size = launch.pack_size(requested_pack_size,
                                 max((s.hparams["batch_size"] for s in todo), default=1))
    click.echo(f"{len(specs)} runs in the grid, {len(specs) - len(todo)} already done, "
               f"{len(todo)} to train {where}"
               + f" in packs of up to {pack_size}", err=True)
    launch.run(todo, store, data_root, planned_at, pack_size)
    _print_summary(store, {s.run_id for s in specs})


def _check_data(todo, data_root: Path) -> None:
    """Every distinct data configuration of ``todo`` (dataset, subset, data options) must be
    servable from ``data_root`` (:meth:`Dataset.check <ltbench.api.Dataset.check>`),
    before anything is written."""
    from . import registry
    from .spec import canonical_json

    checked = set()
    for spec in todo:
        dataset = registry.load("dataset", spec.dataset)()
        subset = (spec.imb_factor, spec.profile, spec.split_seed)
        options = {key: spec.hparams.get(key) for key in dataset.data_keys}
        key = (spec.dataset, subset, canonical_json(options))
        if key not in checked:
            dataset.check(data_root, spec.hparams, subset)
            checked.add(key)


def _pack_size(text: str) -> int | None:
    """``--pack-size``: a positive integer, or None for 'auto'."""
    from .integers import parse_int

    if text.strip().lower() == "auto":
        return None
    return parse_int(text, "--pack-size", least=1)


def _print_summary(store, run_ids: set[str]) -> None:
    from .tables import run_summary

    records = store.read()
    click.echo(run_summary(records[records["run_id"].isin(run_ids)]))


# -- bench ------------------------------------------------------------------------------------

@cli.command()
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@_data_root_option
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
    from .bench import CPU_DEFAULTS, CUDA_DEFAULTS, Settings, format_table, run_bench, \
        write_results
    from .integers import parse_int_list
    from .runner import resolve_device
    from .writable import check_writable

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


# -- list -------------------------------------------------------------------------------------

@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(["methods", "datasets"]))
def list_plugins(kind):
    """List registered methods and datasets: name, description, paper, provider."""
    from . import registry

    for group in ([kind] if kind else ["methods", "datasets"]):
        click.echo(f"{group}:")
        for name, plugin in registry.plugins(group[:-1]).items():
            try:
                cls = plugin.load()
                summary, paper = cls.summary, cls.paper
            except BadInput as exc:
                summary, paper = f"(unavailable: {exc})", ""
            click.echo(f"  {name:<18} {summary}")
            if paper:
                click.echo(f"  {'':<18} paper: {paper}")
            click.echo(f"  {'':<18} provider: {plugin.provider}")


# -- status -----------------------------------------------------------------------------------

@cli.command()
@_results_option
@click.option("--methods", default="all", show_default=True,
              help="Methods expected in every (dataset, imb) group.")
@click.option("--datasets", default=None, help="Datasets to show [default: those in the store].")
@click.option("--imb", default=None, help="Imbalance factors expected [default: those stored].")
@click.option("--seeds", default=None, help="Seeds expected [default: those stored].")
@click.option("--repair", is_flag=True, help="Move damaged result files (and the other files "
                                             "of their runs) to <results>/corrupt/.")
def status(results, methods, datasets, imb, seeds, repair):
    """Done / failed / missing seed counts per (dataset, imb, method), and damaged files."""
    from . import grid, integrity, registry
    from .statusview import status_table
    from .store import ResultStore

    store = ResultStore(results)
    if not store.runs_dir.is_dir():
        raise BadInput(f"no results store at {results} (expected {store.runs_dir})")
    damaged = integrity.find_damaged(store)
    records = store.read()
    click.echo(status_table(
        records[~records["run_id"].isin({d.run_id for d in damaged})],
        methods=registry.parse_names("method", methods),
        datasets=registry.parse_names("dataset", datasets) if datasets else None,
        imb_factors=grid.parse_imb_factors(imb) if imb else None,
        seeds=grid.parse_seeds(seeds) if seeds else None))
    if damaged:
        click.echo(f"{len(damaged)} damaged file(s), ignored (their runs count as missing and "
                   f"are re-run):")
        for damage in damaged:
            click.echo(f"  {damage.path}: {damage.reason}")
    if repair:
        for source, target in integrity.repair(store, damaged):
            click.echo(f"moved {source} -> {target}")
    elif damaged:
        click.echo("run 'ltbench status --repair' to move them aside")


# -- report and check -------------------------------------------------------------------------

def _published_option(f):
    return click.option("--published", "published", default=None,
                        type=click.Path(path_type=Path),
                        help="Published-numbers CSV file or folder [default: results/published "
                             "of the ltbench source checkout].")(f)


def _read_store(results: Path):
    from .store import ResultStore

    from .integrity import find_damaged

    store = ResultStore(results)
    if not store.runs_dir.is_dir():
        raise BadInput(f"no results store at {results} (expected {store.runs_dir})")
    damaged = find_damaged(store)
    if damaged:
        click.echo(f"ignoring {len(damaged)} damaged result file(s) (see ltbench status)",
                   err=True)
    return store


def _load_published(path: Path | None, required: bool):
    """The published rows of ``path`` (default: the checkout's), or () if optional and absent."""
    from . import registry
    from .published import default_published_dir, load_published

    if path is None:
        path = default_published_dir()
        if not path.exists():
            if required:
                raise BadInput(f"no published numbers at {path} (ltbench is not installed from "
                               f"a source checkout): pass --published FILE")
            return path, ()
    return path, load_published(path, extra_methods=list(registry.plugins("method")))


@cli.command()
@_results_option
@click.option("--out", default=DEFAULT_REPORTS, show_default=True,
              type=click.Path(path_type=Path), help="Folder to write the report into.")
@_published_option
def report(results, out, published):
    """Write the static HTML report, Markdown / LaTeX tables and plot data of the store."""
    from .report import write_report

    store = _read_store(results)
    _, rows = _load_published(published, required=False)
    index = write_report(store, out, published=rows)
    click.echo(f"wrote {index}")


def _tolerance(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise BadInput(f"{name} must be a finite number >= 0, got {value}")
    return value


@cli.command()
@_results_option
@_published_option
@click.option("--methods", default=None,
              help="Comma-separated methods to check [default: the methods in the store].")
@click.option("--tolerance-floor", "--tolerance", "floor", type=float, default=1.0,
              show_default=True, help="Smallest allowed |mean - published|, in points.")
@click.option("--tolerance-k", "k", type=float, default=2.0, show_default=True,
              help="Allowed |mean - published| in standard errors over seeds, when larger "
                   "than the floor.")
@click.option("--assumed-seed-std", type=float, default=1.0, show_default=True,
              help="Seed std, in points, assumed for cells with fewer than 3 seeds (whose "
                   "standard error cannot be measured): SE = this / sqrt(n).")
@click.option("--allow-empty", is_flag=True,
              help="Exit 0 even when no published number could be compared.")
@click.option("--out", default=None, type=click.Path(path_type=Path, dir_okay=False),
              help="JSON file to write [default: <results>/check.json].")
def check(results, published, methods, floor, k, assumed_seed_std, allow_empty, out):
    """Compare the store's means over seeds with the published numbers.

    Prints a Markdown table (pass / regression / improvement / missing per published row) and
    writes it as JSON. Exit code 0 when every comparison passed or improved; 1 on a
    regression, on a missing comparison (a failed or absent run is never a pass) or when
    nothing could be compared (unless --allow-empty); 2 on bad input.
    """
    import json

    from . import registry
    from .check import Tolerance, check as run_check, to_json, to_markdown

    tolerance = Tolerance(_tolerance("--tolerance-floor", floor), _tolerance("--tolerance-k", k),
                          _tolerance("--assumed-seed-std", assumed_seed_std))
    store = _read_store(results)
    path, rows = _load_published(published, required=True)
    if not rows:
        raise BadInput(f"no published numbers in {path} (nothing but a header): nothing to "
                       f"compare")
    records = store.read()
    chosen = None
    if methods is not None:
        chosen = [name.strip() for name in methods.split(",") if name.strip()]
        known = set(registry.plugins("method")) | set(records["method"]) | \
            {row.ltbench_method for row in rows if row.ltbench_method}
        unknown = [name for name in chosen if name not in known]
        if not chosen or unknown:
            raise BadInput(f"--methods: unknown method '{unknown[0]}'" if unknown
                           else f"--methods: no method named in '{methods}'")
    out = out if out is not None else Path(results) / "check.json"
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: folder {out.parent} does not exist")
    result = run_check(records, rows, methods=chosen, tolerance=tolerance)
    click.echo(to_markdown(result), nl=False)
    document = {"ltbench_version": __version__, "results": str(results),
                "published": str(path), **to_json(result, allow_empty)}
    try:
        atomicfile.write_text(out, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise BadInput(f"--out {out} is not writable: {exc.strerror or exc}") from exc
    click.echo(f"wrote {out}", err=True)
    failures = result.failures(allow_empty)
    if failures:
        click.echo(f"check failed: {'; '.join(failures)}", err=True)
    click.get_current_context().exit(1 if failures else 0)


# -- data -------------------------------------------------------------------------------------

@cli.group()
def data():
    """Inspect and export the long-tailed subsets."""


def _dataset_and_hparams(name: str, overrides):
    from . import hparams, registry

    dataset = registry.load("dataset", name)()
    parsed = hparams.parse_overrides(overrides)
    unknown = sorted(set(parsed) - set(dataset.data_keys))
    if unknown:
        options = ", ".join(dataset.data_keys) or "none"
        raise BadInput(f"unknown option '{unknown[0]}' for dataset '{name}' "
                       f"(its data options: {options})")
    return dataset, hparams.resolve_run(dataset, None, parsed)


def _single_factor(imb: str, profile: str) -> float:
    from .grid import PROFILES, parse_imb_factors

    if profile not in PROFILES:
        raise BadInput(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}")
    factors = parse_imb_factors(imb)
    if len(factors) != 1:
        raise BadInput(f"--imb takes one imbalance factor here, got '{imb}'")
    return factors[0]


@data.command()
@click.argument("dataset")
@click.option("--imb", required=True, help="Imbalance factor n_max/n_min (>= 1).")
@click.option("--profile", default="exp", show_default=True, help="Count profile: exp or step.")
@_set_option
def describe(dataset, imb, profile, overrides):
    """Print the per-class training counts of a long-tailed subset."""
    from .evaluate import shot_groups

    plugin, hp = _dataset_and_hparams(dataset, overrides)
    counts = plugin.class_counts(_single_factor(imb, profile), profile, hp)
    groups = {g: int(m.sum()) for g, m in shot_groups(counts).items()}
    click.echo(f"{dataset} imb={imb} profile={profile}")
    click.echo(f"classes {len(counts)}, images {sum(counts)}, max {max(counts)}, "
               f"min {min(counts)}, realised ratio {max(counts) / min(counts):.1f}")
    click.echo(f"many/medium/few classes (>100 / 20-100 / <20): "
               f"{groups['many']}/{groups['medium']}/{groups['few']}")
    click.echo("per-class counts: " + " ".join(str(c) for c in counts))
    meta_per_class = int(hp.get("meta_per_class", 0))
    click.echo(f"protocol {hp['protocol']}, meta set: {meta_per_class} per class "
               f"({meta_per_class * len(counts)} images)")
    val_per_class = int(hp.get("val_per_class", 0))
    click.echo(f"validation split: {val_per_class} per class "
               f"({val_per_class * len(counts)} images)")


@data.command()
@click.argument("dataset")
@click.option("--imb", required=True, help="Imbalance factor n_max/n_min (>= 1).")
@_subset_options
@_data_root_option
@_set_option
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Output .npy file (int64 training-image indices, dataset order).")
@click.option("--meta", is_flag=True, help="Write the balanced meta set's indices instead "
                                           "(needs meta_per_class > 0, e.g. "
                                           "--set protocol=jamal).")
@click.option("--val", is_flag=True, help="Write the balanced validation split's indices "
                                          "instead (needs --set val_per_class=N).")
def indices(dataset, imb, profile, split_seed, data_root, overrides, out, meta, val):
    """Write the exact training-image indices of a long-tailed subset (or of its meta set, or
    of its validation split)."""
    import numpy as np

    plugin, hp = _dataset_and_hparams(dataset, overrides)
    factor = _single_factor(imb, profile)
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: folder {out.parent} does not exist")
    if meta and int(hp.get("meta_per_class", 0)) < 1:
        raise BadInput(f"--meta: protocol '{hp['protocol']}' of '{dataset}' has no meta set; "
                       f"use --set protocol=jamal or --set meta_per_class=N")
    if meta and val:
        raise BadInput("--meta and --val: choose one")
    if val and int(hp.get("val_per_class", 0)) < 1:
        raise BadInput(f"--val: '{dataset}' has no validation split unless "
                       f"--set val_per_class=N (N >= 1)")
    plugin.class_counts(factor, profile, hp)  # a meta set that cannot be drawn: before reading
    plugin.check(data_root, hp)
    if val:
        chosen = plugin.split_positions(data_root, factor, profile, split_seed, hp)[2]
    else:
        subset, meta_set = plugin.split_indices(data_root, factor, profile, split_seed, hp)
        chosen = meta_set if meta else subset
    idx = np.asarray(chosen, dtype=np.int64)
    with atomicfile.atomic_write(out) as handle:
        np.save(handle, idx)
    click.echo(f"wrote {len(idx)} indices to {out}")


@data.command("pack")
@click.argument("dataset")
@click.option("--imb", required=True, help="Imbalance factor n_max/n_min (>= 1).")
@_subset_options
@_data_root_option
@_set_option
@click.option("--effort", type=Integer(0, 6), default=2, show_default=True,
              help="Lossless WebP effort (libwebp method): higher is smaller and slower.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Pack file to write; name it NAME.ltpack.")
def pack_data(dataset, imb, profile, split_seed, data_root, overrides, effort, out):
    """Write one portable file with exactly the images a configuration trains on.

    It holds, losslessly (WebP), the training images of the subset under each protocol
    (ldam; jamal with its meta set; only the one --set protocol=X names, if given), the
    validation split with --set val_per_class=N, the whole test set, every label, their
    positions in the official files and those files' md5s. Read from the official folder
    under --data-root.

    \b
    To use it, copy it into a data root as <data root>/NAME.ltpack (several may sit there).
    A data root without the official CIFAR folder trains from the pack that holds the run's
    configuration, with the same tensors and run ids, and refuses any other imbalance
    factor, profile, split seed, data option or dataset, naming what its packs hold.
    """
    from .hparams import parse_overrides

    plugin, _ = _dataset_and_hparams(dataset, overrides)  # rejects unknown --set keys
    if not hasattr(plugin, "pack"):
        raise BadInput(f"dataset '{dataset}' cannot be packed (CIFAR-LT datasets can)")
    factor = _single_factor(imb, profile)
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: folder {out.parent} does not exist")
    covered = plugin.pack(data_root, factor, profile, split_seed, parse_overrides(overrides),
                          out, effort)
    click.echo(f"wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB): {dataset} imb {imb} "
               f"profile {profile} split seed {split_seed}, protocols {', '.join(covered)}")


@data.command()
@click.argument("dataset")
@_data_root_option
@click.option("--cache", envvar="LTBENCH_CACHE", default=None, type=click.Path(path_type=Path),
              help="Cache folder (training reads $LTBENCH_CACHE) [default: $LTBENCH_CACHE, "
                   "else inside the dataset's folder].")
@click.option("--jobs", type=Integer(1), default=os.cpu_count() or 1,
              show_default="all CPU cores",
              help="Decoding processes.")
@_set_option
def prepare(dataset, data_root, cache, jobs, overrides):
    """Decode and resize every listed image once into the cache training reads (resumable)."""
    plugin, hp = _dataset_and_hparams(dataset, overrides)
    if not hasattr(plugin, "prepare"):
        raise BadInput(f"dataset '{dataset}' is not read from a decoded-image cache; there is "
                       f"nothing to prepare")
    plugin.prepare(data_root, hp, jobs=jobs, cache=cache)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"Warning: {message}\n"


def main() -> None:
    # Warnings (e.g. a split file that is not the canonical one) read like errors: one line.
    warnings.formatwarning = _one_line_warning
    cli()
