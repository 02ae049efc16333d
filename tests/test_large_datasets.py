"""ImageNet-LT, Places-LT, iNaturalist 2017 / 2018: the plugin contract on generated fixture
trees in the published formats, their failure messages, the real split files (datasets.md §3),
and ``ltbench data prepare`` + ``ltbench run`` end to end."""

from __future__ import annotations

import collections
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import tree_snapshot
from image_fixtures import (count_device_copies, imagenet_lt_tree, inat_json_tree, places_lt_tree,
                            write_split_list)

from ltbench import registry
from ltbench.cli import cli
from ltbench.datasets.imagenet_lt import ImageNetLT
from ltbench.datasets.inat import INaturalist2017, INaturalist2018, read_coco_json
from ltbench.datasets.places_lt import PlacesLT
from ltbench.datasets.reference_counts import IMAGENET_LT_TRAIN, PLACES_LT_TRAIN
from ltbench.datasets.split_lists import SplitFileMismatch, parse_split_list, read_split_list
from ltbench.engine.image_cache import CacheSplit
from ltbench.errors import BadInput
from ltbench.hparams import resolve_run
from ltbench.metrics.headline import shot_groups
from ltbench.run import grid
from ltbench.run.runner import run_grid
from ltbench.store.result_store import ResultStore

#: Fixture images are about 30-50 pixels: cache them at 36 and crop 32.
SMALL = {"resize_size": "36", "crop_size": "32", "pretrained": "none"}
TRAIN_COUNTS = [6, 4, 3, 2, 2, 1]
TEST_PER_CLASS = 2


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def hparams(dataset_cls, **overrides):
    return resolve_run(dataset_cls, None, {**SMALL, **overrides})


def prepared(dataset, root: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitFileMismatch)  # fixture lists are not canonical
        dataset.prepare(root, hparams(type(dataset)), jobs=1, stream=open(os.devnull, "w"))
        return dataset.load(root, dataset.natural_imb_factor, "exp", 0, hparams(type(dataset)))


def fixture(name: str, root: Path):
    """(dataset, expected train labels, expected test labels) of a fixture tree of ``name``."""
    train = np.repeat(np.arange(len(TRAIN_COUNTS)), TRAIN_COUNTS)
    test = np.repeat(np.arange(len(TRAIN_COUNTS)), TEST_PER_CLASS)
    if name == "imagenet-lt":
        imagenet_lt_tree(root, TRAIN_COUNTS, TEST_PER_CLASS)
    elif name == "places-lt":
        places_lt_tree(root, TRAIN_COUNTS, TEST_PER_CLASS)
    else:
        # Category ids with gaps: labels are their ranks.
        inat_json_tree(root, int(name[-4:]), [3, 10, 11, 40, 41, 99], TRAIN_COUNTS,
                       TEST_PER_CLASS)
    return registry.load("dataset", name)(), train, test


@pytest.mark.parametrize("name", ["imagenet-lt", "places-lt", "inat2017", "inat2018"])
def test_plugin_contract_on_fixture_trees(name, tmp_path):
    dataset, train_labels, test_labels = fixture(name, tmp_path)
    data = prepared(dataset, tmp_path)
    assert isinstance(data.train_images, CacheSplit) and isinstance(data.test_images, CacheSplit)
    assert data.train_labels.dtype == torch.int64
    assert data.train_labels.tolist() == train_labels.tolist()
    assert data.test_labels.tolist() == test_labels.tolist()
    assert data.class_counts == TRAIN_COUNTS and data.num_classes == 6
    assert data.train_indices.tolist() == list(range(18)) and data.meta_images is None
    assert len(data.train_images.starts) == 18 and len(data.test_images.starts) == 12
    # Every cached image has a shorter side of 36.
    assert np.minimum(data.train_images.heights, data.train_images.widths).tolist() == [36] * 18
    subset, meta = dataset.split_indices(tmp_path, dataset.natural_imb_factor, "exp", 0,
                                         hparams(type(dataset)))
    assert subset.tolist() == list(range(18)) and subset.dtype == np.int64 and len(meta) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitFileMismatch)
        dataset.check(tmp_path, hparams(type(dataset)))  # complete: no error
    # Many / medium / few from the training list's counts: all six classes are "few" (< 20).
    assert {g: int(m.sum()) for g, m in shot_groups(data.class_counts).items()} == \
        {"many": 0, "medium": 0, "few": 6}


def test_inat_json_is_joined_on_image_id_not_position(tmp_path):
    folder = inat_json_tree(tmp_path, 2018, [5, 2, 9], [2, 1, 1], 1)
    paths, labels = read_coco_json(folder / "train2018.json")
    # Annotations are stored reversed; by position image 0 would get category 9's rank.
    assert labels.tolist() == [1, 1, 0, 2]  # ranks of categories 5, 5, 2, 9
    assert paths[0] == "train_val2018/Plantae/5/train0000.jpg"


def test_inat_json_problems_are_bad_input(tmp_path):
    bad = tmp_path / "train2018.json"
    bad.write_text('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], '
                   '"categories": [{"id": 0}]}')
    with pytest.raises(BadInput, match="image 1 has no annotation"):
        read_coco_json(bad)
    bad.write_text("{not json")
    with pytest.raises(BadInput, match="not an iNaturalist annotation file"):
        read_coco_json(bad)
    # Image paths are read below the dataset folder only.
    bad.write_text('{"images": [{"id": 1, "file_name": "../a.jpg"}], "annotations": '
                   '[{"image_id": 1, "category_id": 0}], "categories": [{"id": 0}]}')
    with pytest.raises(BadInput, match="image 1's file_name '../a.jpg' leaves the dataset"):
        read_coco_json(bad)


def test_inat2018_reads_the_lt_lists_when_present(tmp_path):
    folder = tmp_path / "iNaturalist18"
    train = [(f"train_val2018/Plantae/{c}/t{i}.jpg", c) for c, n in enumerate([3, 1]) for i in
             range(n)]
    test = [(f"train_val2018/Plantae/{c}/v{c}.jpg", c) for c in range(2)]
    write_split_list(folder / "iNaturalist18_train.txt", train)
    write_split_list(folder / "iNaturalist18_val.txt", test)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = INaturalist2018().images(tmp_path)
    assert sorted(str(w.message).split(" is not the canonical ")[1][:21] for w in caught) == \
        ["iNaturalist18_train.t", "iNaturalist18_val.txt"]
    assert {w.category for w in caught} == {SplitFileMismatch}
    assert images["train"].labels.tolist() == [0, 0, 0, 1]
    assert images["test"].paths == ("train_val2018/Plantae/0/v0.jpg",
                                    "train_val2018/Plantae/1/v1.jpg")


def test_split_list_parsing_splits_on_the_last_space(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("train/a b/c.jpg 3\n\nval/x.jpg 0\n")
    paths, labels = parse_split_list(path)
    assert paths == ("train/a b/c.jpg", "val/x.jpg") and labels.tolist() == [3, 0]
    for bad in ("train/a.jpg three", "train/a.jpg ²", "train/a.jpg -1", "train/a.jpg",
                "train/a.jpg 99999999999999999999"):
        path.write_text(f"val/x.jpg 0\n{bad}\n")
        with pytest.raises(BadInput, match="line 2: expected '<relative path> <label>'"):
            parse_split_list(path)


@pytest.mark.parametrize("entry", ["../../outside.jpg 0", "train/../../outside.jpg 0",
                                   "/etc/hostname 0"])
def test_a_split_list_path_that_leaves_the_dataset_folder_is_bad_input(tmp_path, entry):
    """Image paths are read below the dataset folder only: an absolute path or one climbing
    with '..' is refused before any image is read or any cache written."""
    folder = places_lt_tree(tmp_path, [3, 1], 1)
    (tmp_path / "outside.jpg").write_bytes((folder / "train/scene1/00000000.jpg").read_bytes())
    with open(folder / "Places_LT_train.txt", "a", encoding="utf-8") as handle:
        handle.write(entry + "\n")
    before = tree_snapshot(tmp_path)
    result = invoke("data", "prepare", "places-lt", "--data-root", tmp_path)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "line 5: image path" in line
    assert f"{entry[:-2]!r} leaves the dataset folder" in line
    assert tree_snapshot(tmp_path) == before


@pytest.mark.parametrize("name,folder,files", [
    ("imagenet-lt", "ImageNet_LT", "ImageNet_LT_train.txt, ImageNet_LT_test.txt"),
    ("places-lt", "Places_LT", "Places_LT_train.txt, Places_LT_test.txt"),
    ("inat2018", "iNaturalist18", "iNaturalist18_train.txt and iNaturalist18_val.txt or "
                                  "train2018.json and val2018.json"),
    ("inat2017", "iNaturalist17", "train2017.json and val2017.json"),
])
def test_missing_lists_are_one_line_bad_input_naming_the_layout(name, folder, files, tmp_path):
    before = tree_snapshot(tmp_path)
    result = invoke("data", "prepare", name, "--data-root", tmp_path)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and f"{tmp_path / folder}/ holding {files}" in line
    assert tree_snapshot(tmp_path) == before


def test_missing_images_are_bad_input_before_anything_is_written(tmp_path):
    folder = imagenet_lt_tree(tmp_path, TRAIN_COUNTS, TEST_PER_CLASS)
    (folder / "val/n00000002/ILSVRC2012_val_00000201.JPEG").unlink()
    before = tree_snapshot(tmp_path)
    with pytest.warns(SplitFileMismatch), \
            pytest.raises(BadInput, match=r"1 images of the test list are missing, e\.g\. "
                                          r".*ILSVRC2012_val_00000201\.JPEG"):
        ImageNetLT().prepare(tmp_path, hparams(ImageNetLT), jobs=1)
    assert tree_snapshot(tmp_path) == before


def test_a_class_without_training_images_is_bad_input(tmp_path):
    folder = imagenet_lt_tree(tmp_path, [2, 1], 1)
    write_split_list(folder / "ImageNet_LT_train.txt", [("train/n00000000/n00000000_0.JPEG", 1)])
    with pytest.warns(SplitFileMismatch), \
            pytest.raises(BadInput, match="no image of class 0"):
        ImageNetLT().images(tmp_path)


def test_imbalance_factor_and_profile_are_fixed_by_the_split():
    assert ImageNetLT().class_counts(256, "exp", {}) == list(IMAGENET_LT_TRAIN)
    with pytest.raises(BadInput, match=r"fixed by its split lists \(256\); omit --imb or pass "
                                       r"--imb 256, not 100"):
        ImageNetLT().check_subset(100.0, "exp", {})
    with pytest.raises(BadInput, match="count profile is fixed"):
        PlacesLT().check_subset(996.0, "step", {})
    with pytest.raises(BadInput, match="read from the training list at training time"):
        INaturalist2017().class_counts(435.4, "exp", {})
    # Without --imb every dataset gets its own factor; CIFAR-style ones 100.
    specs = grid.expand(["ce"], ["imagenet-lt", "places-lt", "inat2018", "synthetic-lt"],
                        None, [0])
    assert [(s.dataset, s.imb_factor) for s in specs] == [
        ("imagenet-lt", 256.0), ("places-lt", 996.0), ("inat2018", 500.0),
        ("synthetic-lt", 100.0)]
    with pytest.raises(BadInput, match="omit --imb or pass --imb 500"):
        grid.expand(["ce"], ["inat2018"], [100.0], [0])


def test_protocol_defaults_and_their_sources():
    imagenet = resolve_run(ImageNetLT, None, {})
    assert (imagenet["protocol"], imagenet["backbone"], imagenet["epochs"],
            imagenet["batch_size"], imagenet["lr"], imagenet["weight_decay"],
            imagenet["lr_schedule"], imagenet["color_jitter"], imagenet["crop_size"],
            imagenet["resize_size"]) == ("decoupling", "resnext50_32x4d", 90, 512, 0.2, 5e-4,
                                         "cosine", 0.4, 224, 256)
    lade = resolve_run(ImageNetLT, None, {"protocol": "lade"})
    assert (lade["epochs"], lade["batch_size"], lade["lr"]) == (180, 256, 0.05)
    places = resolve_run(PlacesLT, None, {})
    assert (places["backbone"], places["pretrained"], places["epochs"], places["batch_size"],
            places["lr"], places["backbone_lr_factor"], places["lr_schedule"],
            places["lr_milestones"]) == ("resnet152", "imagenet", 30, 128, 0.1, 0.01, "step",
                                         [10, 20])
    inat = resolve_run(INaturalist2018, None, {})
    assert (inat["backbone"], inat["weight_decay"], inat["color_jitter"], inat["mean"]) == \
        ("resnet50", 1e-4, 0.0, [0.466, 0.471, 0.380])


@pytest.mark.filterwarnings("ignore::ltbench.datasets.split_lists.SplitFileMismatch")
def test_missing_cache_or_wrong_imb_exit_2_and_write_nothing(tmp_path):
    imagenet_lt_tree(tmp_path, TRAIN_COUNTS, TEST_PER_CLASS)
    results = tmp_path / "results"
    common = ["--datasets", "imagenet-lt", "--methods", "ce", "--epochs", "1", "--data-root",
              str(tmp_path), "--results", str(results), "--set", "resize_size=36"]
    result = invoke("run", *common)
    assert result.exit_code == 2
    assert "Error: no complete image cache at" in result.stderr
    assert f"run 'ltbench data prepare imagenet-lt --data-root {tmp_path} --set " \
           f"resize_size=36'" in result.stderr
    result = invoke("run", *common, "--imb", "100")
    assert result.exit_code == 2 and "omit --imb or pass --imb 256" in result.stderr
    assert not results.exists()


@pytest.mark.slow
def test_prepare_then_run_end_to_end_on_cpu_writes_rows(tmp_path):
    imagenet_lt_tree(tmp_path, TRAIN_COUNTS, TEST_PER_CLASS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ltbench", "data", "prepare", "imagenet-lt",
                           "--data-root", str(tmp_path), "--jobs", "2",
                           "--set", "resize_size=36"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Warning: " in proc.stderr and "not the canonical ImageNet_LT_train.txt" in proc.stderr
    assert "cached 18 images" in proc.stderr and "cached 12 images" in proc.stderr
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "ltbench", "run", "--datasets", "imagenet-lt",
                           "--methods", "ce,crt", "--epochs", "1", "--data-root",
                           str(tmp_path), "--results", str(results), "--device", "cpu",
                           "--set", "backbone=resnet10", "--set", "resize_size=36",
                           "--set", "crop_size=32", "--set", "batch_size=8",
                           "--set", "stage2_epochs=1"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    records = ResultStore(results).read().set_index("method")
    assert sorted(records.index) == ["ce", "crt"]
    assert records.loc["crt", "status"] == "ok"
    # crt retrains the classifier of the grid's own ce run (one backbone trained).
    assert records.loc["crt", "stage1_run_id"] == records.loc["ce", "run_id"]
    row = records.loc["ce"]
    assert (row["status"], row["dataset"], row["imb_factor"]) == ("ok", "imagenet-lt", 256.0)
    assert row["train_class_counts"].tolist() == TRAIN_COUNTS
    assert len(row["per_class_acc"]) == 6 and (row["n_many"], row["n_few"]) == (0, 6)
    assert 0.0 <= row["top1_err"] <= 100.0
    curves = ResultStore(results).curves(row["run_id"])
    assert curves["lr"].tolist() == [0.2]  # cosine: epoch 0 runs at the base lr


def test_runs_of_one_subset_copy_its_cached_splits_to_the_device_once(tmp_path, monkeypatch):
    """Two runs of one subset (each also scored on the shifted test sets) share one device
    copy of the training split and one of the test split."""
    dataset, _, _ = fixture("imagenet-lt", tmp_path)
    prepared(dataset, tmp_path)
    copies = count_device_copies(monkeypatch)
    specs = grid.expand(["ce"], ["imagenet-lt"], None, [0, 1], epochs=1,
                        overrides={**SMALL, "backbone": "resnet10", "batch_size": "8"})
    store = ResultStore(tmp_path / "results")
    store.ensure_writable()
    records = run_grid(specs, store, tmp_path, torch.device("cpu"), stream=io.StringIO())
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert copies == [sum(TRAIN_COUNTS), TEST_PER_CLASS * len(TRAIN_COUNTS)]


# -- the real split files ------------------------------------------------------------------

def splits_dir() -> Path:
    """``../shared/data/splits`` beside the repository (``$LTBENCH_SPLITS`` overrides)."""
    override = os.environ.get("LTBENCH_SPLITS")
    folder = Path(override) if override else \
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "splits"
    if not folder.is_dir():
        pytest.skip(f"real split files not present at {folder} (../shared beside the clone, "
                    f"or set LTBENCH_SPLITS)")
    return folder


# file: (lines, classes, per-class max, per-class min, sha256); datasets.md §3.2.
REAL_LISTS = {
    "ImageNet_LT_val.txt": (20_000, 1000, 20, 20,
                            "9af7ba688acf9532ff5845a8fb14a1e97fdc4c51ac48bc72c08ea9c3f7ff142e"),
    "ImageNet_LT_test.txt": (50_000, 1000, 50, 50,
                             "d1590191cf8a71fada7b1aaedaa2d139a2aea93ff2f1b755319d0bd8dbaa55d5"),
    "Places_LT_train.txt": (62_500, 365, 4980, 5,
                            "726c4871dcbf07ce2f857703bfe32e9a83ffbf52d704239f6d95c4f4f4c247f7"),
    "Places_LT_val.txt": (7_300, 365, 20, 20,
                          "719e3cf3766c09134ea28f56f1036c78def511ac1ed2c2532a6beef78f2439ba"),
    "Places_LT_test.txt": (36_500, 365, 100, 100,
                           "44eee8441c8098c59195465abede425721bc35525d75209f9433b161a6eb37bc"),
    "iNaturalist18_val.txt": (24_426, 8142, 3, 3,
                              "efaeff65f80641b60864470e6f255aa69453406ef5717eec8c6681748f3a61f3"),
}


@pytest.mark.parametrize("filename", sorted(REAL_LISTS))
def test_real_split_files_match_datasets_md(filename):
    import hashlib

    path = splits_dir() / filename
    lines, classes, high, low, sha256 = REAL_LISTS[filename]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    paths, labels = parse_split_list(path)
    counts = np.bincount(labels)
    assert (len(paths), len(counts), counts.max(), counts.min()) == (lines, classes, high, low)
    if filename.startswith("iNaturalist18"):
        # The directory id in the path equals the label (datasets.md §3.2 notes).
        assert all(int(p.split("/")[2]) == label for p, label in zip(paths, labels.tolist()))
        supercategories = collections.Counter(p.split("/")[1] for p in paths)
        assert (supercategories["Plantae"], supercategories["Bacteria"]) == (8751, 3)


def test_real_lists_read_by_the_plugins_without_a_mismatch_warning():
    folder = splits_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitFileMismatch)
        _, labels = read_split_list(folder / "Places_LT_train.txt", PlacesLT.lists["train"])
        read_split_list(folder / "ImageNet_LT_test.txt", ImageNetLT.lists["test"])
        read_split_list(folder / "iNaturalist18_val.txt", INaturalist2018.lists["test"])
    # The shipped reference counts are this list's, with many / medium / few 131 / 163 / 71.
    assert np.bincount(labels).tolist() == list(PLACES_LT_TRAIN)
    assert {g: int(m.sum()) for g, m in shot_groups(list(PLACES_LT_TRAIN)).items()} == \
        {"many": 131, "medium": 163, "few": 71}


def test_real_imagenet_lt_train_counts_match_datasets_md():
    import json

    counts = json.loads((splits_dir() / "ImageNet_LT_train_class_counts.json").read_text())
    assert counts == list(IMAGENET_LT_TRAIN)
    assert (sum(counts), max(counts), counts.index(1280), min(counts), counts.count(5)) == \
        (115_846, 1280, 86, 5, 5)
    assert {g: int(m.sum()) for g, m in shot_groups(counts).items()} == \
        {"many": 385, "medium": 479, "few": 136}


def test_methods_tied_to_the_jamal_protocol_are_left_out_of_all():
    methods = list(registry.plugins("method"))
    specs = grid.expand(methods, ["imagenet-lt"], None, [0], all_methods=True)
    kept = {s.method for s in specs}
    tied = {m for m in methods if registry.load("method", m).protocol == "jamal"}
    assert tied and not kept & tied and "ce" in kept and "ldam-drw" in kept
    with pytest.raises(BadInput, match="does not support dataset 'imagenet-lt'"):
        grid.expand([sorted(tied)[0]], ["imagenet-lt"], None, [0])
