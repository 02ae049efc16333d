"""``ltbench data pack`` and data roots that hold packs (issue 12 §4).

The real-data tests pack CIFAR-10-LT IF 100 once (both protocols, the fastest WebP effort) and
compare everything a run reads from a root holding only that pack with the official files.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import tree_snapshot

from ltbench.cli import cli
from ltbench.datasets.cifar_lt import Cifar100LT, Cifar10LT
from ltbench.errors import BadInput
from ltbench.hparams import resolve_run
from ltbench.run import grid

PACK_NAME = "c10-lt100.ltpack"
HOLDS = (f"the packs hold {PACK_NAME}: cifar10-lt imb 100 profile exp split seed 0 "
         f"(protocol=ldam meta_per_class=0 val_per_class=0, "
         f"protocol=jamal meta_per_class=10 val_per_class=0)")
# datasets.md §2.1 and §2.4.
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
LDAM_COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
JAMAL_COUNTS = [4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49]
FIELDS = ("train_images", "train_labels", "test_images", "test_labels", "meta_images",
          "meta_labels", "val_images", "val_labels")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_rejected(result, *messages: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for message in messages:
        assert message in lines[0]


def assert_same_data(ours, official) -> None:
    for name in FIELDS:
        mine, theirs = getattr(ours, name), getattr(official, name)
        assert (mine is None) == (theirs is None), name
        if theirs is not None:
            assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), name
    assert ours.class_counts == official.class_counts
    for name in ("train_indices", "meta_indices", "val_indices"):
        mine, theirs = getattr(ours, name), getattr(official, name)
        assert (mine is None and theirs is None) or np.array_equal(mine, theirs), name


@pytest.fixture(scope="module")
def pack_root(cifar_root, tmp_path_factory) -> Path:
    """A data root holding only the CIFAR-10-LT IF 100 pack (split seed 0, exp)."""
    root = tmp_path_factory.mktemp("pack-root")
    result = invoke("data", "pack", "cifar10-lt", "--imb", "100", "--effort", "0",
                    "--data-root", cifar_root, "--out", root / PACK_NAME)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {root / PACK_NAME} (")
    assert result.stdout.endswith("): cifar10-lt imb 100 profile exp split seed 0, "
                                  "protocols ldam, jamal\n")
    return root


@pytest.mark.cifar
@pytest.mark.parametrize("protocol, counts, meta", [("ldam", LDAM_COUNTS, 0),
                                                    ("jamal", JAMAL_COUNTS, 100)])
def test_pack_gives_the_official_tensors_for_both_protocols(pack_root, cifar_root, protocol,
                                                            counts, meta):
    dataset = Cifar10LT()
    hparams = resolve_run(dataset, None, {"protocol": protocol})
    ours = dataset.load(pack_root, 100, "exp", 0, hparams)
    official = dataset.load(cifar_root, 100, "exp", 0, hparams)
    assert_same_data(ours, official)
    assert torch.bincount(ours.train_labels).tolist() == counts == ours.class_counts
    assert ours.test_images.shape == (10000, 3, 32, 32)
    assert torch.bincount(ours.test_labels).tolist() == [1000] * 10
    assert (0 if ours.meta_labels is None else len(ours.meta_labels)) == meta
    assert all(np.array_equal(a, b) for a, b in zip(
        dataset.split_positions(pack_root, 100, "exp", 0, hparams),
        dataset.split_positions(cifar_root, 100, "exp", 0, hparams)))


@pytest.mark.cifar
def test_pack_manifest_positions_and_size(pack_root, cifar_root):
    path = pack_root / PACK_NAME
    dataset = Cifar10LT()
    needed = set()
    for protocol in ("ldam", "jamal"):
        for positions in dataset.split_positions(cifar_root, 100, "exp", 0,
                                                 resolve_run(dataset, None,
                                                             {"protocol": protocol})):
            needed |= set(positions.tolist())
    assert len(needed) == 16810  # 12406 ldam, 12380 + 100 jamal, overlapping
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        positions = np.load(archive.open("train/positions.npy"))
        labels = np.load(archive.open("train/labels.npy"))
        chunks = [n for n in archive.namelist() if n.endswith(".webp")]
    assert {k: manifest[k] for k in ("format", "format_version", "dataset", "imb_factor",
                                     "profile", "split_seed", "data_options", "codec")} == {
        "format": "ltbench-pack", "format_version": 1, "dataset": "cifar10-lt",
        "imb_factor": 100.0, "profile": "exp", "split_seed": 0, "data_options": {},
        "codec": "webp-lossless"}
    assert manifest["protocols"] == {
        "ldam": {"protocol": "ldam", "meta_per_class": 0, "val_per_class": 0},
        "jamal": {"protocol": "jamal", "meta_per_class": 10, "val_per_class": 0}}
    assert manifest["source_md5"] == CIFAR10_MD5
    assert manifest["splits"] == {"train": {"size": 50000, "images": 16810},
                                  "test": {"size": 10000, "images": 10000}}
    assert positions.tolist() == sorted(needed)
    official_labels = dataset._split(cifar_root, {}, train=True)[1].numpy()
    assert np.array_equal(labels, official_labels)
    assert len(chunks) == 17 + 10  # 1024 images per file
    assert path.stat().st_size < 64 * 2 ** 20


@pytest.mark.cifar
def test_pack_root_plans_and_loads_the_grid_like_the_official_root(pack_root, cifar_root):
    specs = grid.expand(["ldam-drw", "meta-ce"], ["cifar10-lt"], [100.0], [0, 1],
                        profile="exp", split_seed=0, overrides={})
    planned = {}
    for root in (pack_root, cifar_root):
        result = invoke("run", "--methods", "ldam-drw,meta-ce", "--imb", "100", "--seeds",
                        "0,1", "--data-root", root, "--results", pack_root / "none",
                        "--dry-run")
        assert result.exit_code == 0, result.output
        planned[root] = result.stdout
    assert planned[pack_root] == planned[cifar_root]
    assert [line.split()[1] for line in planned[pack_root].splitlines()[:-1]] == \
        [spec.run_id for spec in specs]
    dataset = Cifar10LT()
    for spec in specs[::2]:  # one per method: the seeds share the data
        dataset.check(pack_root, spec.hparams)
        assert_same_data(dataset.load(pack_root, 100.0, "exp", 0, spec.hparams),
                         dataset.load(cifar_root, 100.0, "exp", 0, spec.hparams))
    assert sorted(p.name for p in pack_root.iterdir()) == [PACK_NAME]


REFUSED = [
    (["cifar10-lt", "--imb", "50"], "imb 50 profile exp split seed 0 protocol=ldam"),
    (["cifar10-lt", "--imb", "100", "--split-seed", "1"], "imb 100 profile exp split seed 1"),
    (["cifar10-lt", "--imb", "100", "--profile", "step"], "imb 100 profile step split seed 0"),
    (["cifar10-lt", "--imb", "100", "--set", "val_per_class=5"],
     "holds cifar10-lt protocol=ldam meta_per_class=0 val_per_class=5;"),
    (["cifar10-lt", "--imb", "100", "--set", "protocol=jamal", "--set", "meta_per_class=5"],
     "holds cifar10-lt protocol=jamal meta_per_class=5 val_per_class=0;"),
    (["cifar100-lt", "--imb", "100"], "cifar100-lt: no official folder under"),
]


@pytest.mark.cifar
@pytest.mark.parametrize("args, message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_other_configurations_are_refused_naming_the_pack(pack_root, tmp_path, args, message):
    before = tree_snapshot(pack_root)
    out = tmp_path / "indices.npy"
    result = invoke("data", "indices", *args, "--data-root", pack_root, "--out", out)
    assert_rejected(result, message, HOLDS)
    assert not out.exists() and tree_snapshot(pack_root) == before


@pytest.mark.cifar
@pytest.mark.parametrize("args, message", [
    (["--imb", "100", "--set", "val_per_class=5"], "val_per_class=5"),
    (["--imb", "100,50"], "imb 50 profile exp split seed 0 protocol=ldam"),
    (["--imb", "100", "--split-seed", "2"], "imb 100 profile exp split seed 2"),
], ids=["data option", "imbalance factor", "split seed"])
def test_run_of_a_configuration_no_pack_holds_is_refused_before_anything_is_written(
        pack_root, tmp_path, args, message):
    results = tmp_path / "results"
    result = invoke("run", "--methods", "ce", *args, "--epochs", "1", "--data-root", pack_root,
                    "--results", results)
    assert_rejected(result, message, HOLDS)
    assert not results.exists()


@pytest.mark.cifar
def test_damaged_or_foreign_packs_are_bad_input(pack_root, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    content = bytearray((pack_root / PACK_NAME).read_bytes())
    with zipfile.ZipFile(pack_root / PACK_NAME) as archive:
        entry = archive.getinfo("test/images-00003.webp")
    middle = entry.header_offset + 100 + entry.compress_size // 2  # inside the stored bytes
    content[middle] ^= 0xFF
    (damaged / PACK_NAME).write_bytes(bytes(content))
    hparams = resolve_run(Cifar10LT, None, {})
    with pytest.raises(BadInput, match=f"{damaged / PACK_NAME} is damaged"):
        Cifar10LT().load(damaged, 100, "exp", 0, hparams)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.ltpack").write_text("not a zip")
    result = invoke("data", "indices", "cifar10-lt", "--imb", "100", "--data-root", foreign,
                    "--out", tmp_path / "indices.npy")
    assert_rejected(result, f"{foreign / 'notes.ltpack'} is not a readable ltbench data pack")


@pytest.mark.cifar
def test_official_folder_is_used_even_beside_a_pack(cifar_root, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-batches-py").symlink_to(cifar_root / "cifar-10-batches-py")
    (root / "unreadable.ltpack").write_text("not a zip: ignored while the folder is there")
    hparams = resolve_run(Cifar10LT, None, {"protocol": "jamal"})
    Cifar10LT().check(root, hparams)
    assert all(np.array_equal(a, b) for a, b in zip(
        Cifar10LT().split_positions(root, 50, "exp", 3, hparams),
        Cifar10LT().split_positions(cifar_root, 50, "exp", 3, hparams)))


@pytest.mark.cifar
def test_cifar100_jamal_pack_with_a_validation_split(cifar_root, tmp_path):
    if not (cifar_root / "cifar-100-python").is_dir():
        pytest.skip(f"{cifar_root} has no cifar-100-python folder")
    root = tmp_path / "data"
    root.mkdir()
    options = ["--set", "protocol=jamal", "--set", "val_per_class=5"]
    result = invoke("data", "pack", "cifar100-lt", "--imb", "100", *options, "--effort", "0",
                    "--data-root", cifar_root, "--out", root / "c100.ltpack")
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(root / "c100.ltpack") as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["data_options"] == {"val_per_class": 5}
    assert manifest["protocols"] == {
        "jamal": {"protocol": "jamal", "meta_per_class": 10, "val_per_class": 5}}
    # n_max 485 = 500 - 5 validation - 10 meta images per class: a subset of 10518 images.
    assert manifest["splits"]["train"] == {"size": 50000, "images": 10518 + 1000 + 500}
    hparams = resolve_run(Cifar100LT, None, {"protocol": "jamal", "val_per_class": "5"})
    ours = Cifar100LT().load(root, 100, "exp", 0, hparams)
    assert_same_data(ours, Cifar100LT().load(cifar_root, 100, "exp", 0, hparams))
    assert len(ours.val_labels) == 500 and len(ours.meta_labels) == 1000
    result = invoke("data", "indices", "cifar100-lt", "--imb", "100", "--data-root", root,
                    "--out", tmp_path / "indices.npy")
    assert_rejected(result, "no pack there holds cifar100-lt protocol=ldam meta_per_class=0",
                    "the packs hold c100.ltpack: cifar100-lt imb 100 profile exp split seed 0 "
                    "(protocol=jamal meta_per_class=10 val_per_class=5)")


@pytest.mark.parametrize("args, message", [
    (["synthetic-lt", "--imb", "10"], "dataset 'synthetic-lt' cannot be packed"),
    (["cifar10-lt", "--imb", "100", "--set", "lr=1"], "unknown option 'lr'"),
    (["cifar10-lt", "--imb", "100,50"], "--imb takes one imbalance factor here"),
    (["cifar10-lt", "--imb", "100", "--effort", "7"], "--effort must be at most 6, got 7"),
    (["cifar10-lt", "--imb", "100", "--set", "meta_per_class=5"],
     "protocol 'ldam' draws the meta set from the images its subset leaves out"),
    (["cifar10-lt", "--imb", "100", "--set", "protocol=nosuch"], "unknown protocol 'nosuch'"),
])
def test_data_pack_bad_input_reads_and_writes_nothing(tmp_path, args, message):
    # The data root does not exist: a command that got as far as reading would download.
    result = invoke("data", "pack", *args, "--data-root", tmp_path / "absent",
                    "--out", tmp_path / "out.ltpack")
    assert_rejected(result, message)
    assert tree_snapshot(tmp_path) == {}


def test_data_pack_out_folder_must_exist(tmp_path):
    result = invoke("data", "pack", "cifar10-lt", "--imb", "100", "--data-root", tmp_path,
                    "--out", tmp_path / "missing" / "c10.ltpack")
    assert_rejected(result, f"--out {tmp_path / 'missing' / 'c10.ltpack'}: folder "
                            f"{tmp_path / 'missing'} does not exist")
    assert tree_snapshot(tmp_path) == {}
