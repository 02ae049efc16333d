"""``ltbench data``: describe, index, pack and prepare the datasets."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import BadInput
from ..integers import Integer
from ..store import atomicfile
from .shared import data_root_option, set_option, subset_options


@click.group()
def data():
    """Inspect and export the long-tailed subsets."""


def _dataset_and_hparams(name: str, overrides):
    from .. import hparams, registry

    dataset = registry.load("dataset", name)()
    parsed = hparams.parse_overrides(overrides)
    unknown = sorted(set(parsed) - set(dataset.data_keys))
    if unknown:
        options = ", ".join(dataset.data_keys) or "none"
        raise BadInput(f"unknown option '{unknown[0]}' for dataset '{name}' "
                       f"(its data options: {options})")
    return dataset, hparams.resolve_run(dataset, None, parsed)


def _single_factor(imb: str, profile: str) -> float:
    from ..run.grid import parse_imb_factors
    from ..spec import check_profile

    check_profile(profile)
    factors = parse_imb_factors(imb)
    if len(factors) != 1:
        raise BadInput(f"--imb takes one imbalance factor here, got '{imb}'")
    return factors[0]


@data.command()
@click.argument("dataset")
@click.option("--imb", required=True, help="Imbalance factor n_max/n_min (>= 1).")
@click.option("--profile", default="exp", show_default=True, help="Count profile: exp or step.")
@set_option
def describe(dataset, imb, profile, overrides):
    """Print the per-class training counts of a long-tailed subset."""
    from ..metrics.headline import shot_groups

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
@subset_options
@data_root_option
@set_option
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
@subset_options
@data_root_option
@set_option
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
    from ..hparams import parse_overrides

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
@data_root_option
@click.option("--cache", envvar="LTBENCH_CACHE", default=None, type=click.Path(path_type=Path),
              help="Cache folder (training reads $LTBENCH_CACHE) [default: $LTBENCH_CACHE, "
                   "else inside the dataset's folder].")
@click.option("--jobs", type=Integer(1), default=os.cpu_count() or 1,
              show_default="all CPU cores",
              help="Decoding processes.")
@set_option
def prepare(dataset, data_root, cache, jobs, overrides):
    """Decode and resize every listed image once into the cache training reads (resumable)."""
    plugin, hp = _dataset_and_hparams(dataset, overrides)
    if not hasattr(plugin, "prepare"):
        raise BadInput(f"dataset '{dataset}' is not read from a decoded-image cache; there is "
                       f"nothing to prepare")
    plugin.prepare(data_root, hp, jobs=jobs, cache=cache)
