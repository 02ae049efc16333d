"""Dataset plugins: LT counts (datasets.md §2.4), the LDAM-DRW subset replay, CIFAR loading and
its failure messages, and the synthetic dataset."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ltbench import registry
from ltbench.datasets.cifar_lt import Cifar100LT, Cifar10LT
from ltbench.datasets.profiles import class_counts, select_split, select_subset
from ltbench.datasets.synthetic_lt import SyntheticLT
from ltbench.errors import BadInput
from ltbench.datasets.cifar_protocols import JAMAL_CIFAR, LDAM_CIFAR
from ltbench.hparams import OPTIONAL_DEFAULTS, resolve_run

FACTORS = (200, 100, 50, 20, 10, 1)

#: The data keys of the two protocols (what class_counts and the loaders read).
LDAM = {"protocol": "ldam", "meta_per_class": 0}
JAMAL = {"protocol": "jamal", "meta_per_class": 10}
SYNTHETIC = resolve_run(SyntheticLT, None, {})

# datasets.md §2.4, LDAM construction.
CIFAR10_COUNTS = {
    200: [5000, 2775, 1540, 854, 474, 263, 146, 81, 45, 25],
    100: [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],
    50: [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100],
    20: [5000, 3584, 2569, 1842, 1320, 946, 678, 486, 348, 250],
    10: [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500],
    1: [5000] * 10,
}
CIFAR10_TOTALS = {200: 11203, 100: 12406, 50: 13996, 20: 17023, 10: 20431, 1: 50000}
# IF: (total, min, many, medium, few); many/medium/few = > 100 / 20-100 / < 20 images.
CIFAR100_SUMMARY = {
    200: (9502, 2, 30, 31, 39),
    100: (10847, 5, 35, 35, 30),
    50: (12608, 10, 41, 41, 18),
    20: (15907, 25, 53, 47, 0),
    10: (19573, 50, 69, 31, 0),
    1: (50000, 500, 100, 0, 0),
}
CIFAR100_IF100 = [int(n) for n in """
500 477 455 434 415 396 378 361 344 328 314 299 286 273 260 248 237 226 216 206 197 188 179 171
163 156 149 142 135 129 123 118 112 107 102 98 93 89 85 81 77 74 70 67 64 61 58 56 53 51 48 46
44 42 40 38 36 35 33 32 30 29 27 26 25 24 23 22 21 20 19 18 17 16 15 15 14 13 13 12 12 11 11 10
10 9 9 8 8 7 7 7 6 6 6 6 5 5 5 5""".split()]

# An independent replay of kaidic/LDAM-DRW : imbalance_cifar.py (get_img_num_per_cls with the
# inverse factor as on its command line, then gen_imbalanced_data on the global NumPy RNG). It
# runs in a subprocess so that np.random.seed cannot leak into this test process.
LDAM_REPLAY = r"""
import json, sys
import numpy as np
labels = np.load(sys.argv[1])
chosen = {}
for case in json.loads(sys.argv[2]):
    np.random.seed(case["rand_number"])
    cls_num = len(np.unique(labels))
    img_max = len(labels) / cls_num
    img_num_per_cls = [int(img_max * case["imb_factor"] ** (k / (cls_num - 1.0)))
                       for k in range(cls_num)]
    picked = []
    for the_class, the_img_num in zip(np.unique(labels), img_num_per_cls):
        idx = np.where(labels == the_class)[0]
        np.random.shuffle(idx)
        picked.extend(idx[:the_img_num].tolist())
    chosen[json.dumps(case, sort_keys=True)] = picked
print(json.dumps(chosen))
"""


def ldam_replay(labels: np.ndarray, cases: list[dict], tmp_path: Path) -> dict[str, list[int]]:
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    done = subprocess.run([sys.executable, "-c", LDAM_REPLAY, str(path), json.dumps(cases)],
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def balanced_labels(num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """A CIFAR-like training label array: balanced classes in a scrambled order."""
    return np.random.RandomState(seed).permutation(
        np.repeat(np.arange(num_classes, dtype=np.int64), per_class))


# --- count profiles ---------------------------------------------------------------------------

@pytest.mark.parametrize("imb", FACTORS)
def test_cifar10_lt_counts_match_reference_table(imb):
    counts = Cifar10LT().class_counts(imb, "exp", LDAM)
    assert counts == CIFAR10_COUNTS[imb]
    assert sum(counts) == CIFAR10_TOTALS[imb]


@pytest.mark.parametrize("imb", FACTORS)
def test_cifar100_lt_counts_match_reference_table(imb):
    counts = Cifar100LT().class_counts(imb, "exp", LDAM)
    total, smallest, many, medium, few = CIFAR100_SUMMARY[imb]
    assert len(counts) == 100 and counts[0] == 500
    assert (sum(counts), min(counts)) == (total, smallest)
    assert sum(n > 100 for n in counts) == many
    assert sum(20 <= n <= 100 for n in counts) == medium
    assert sum(n < 20 for n in counts) == few
    assert counts == sorted(counts, reverse=True)


def test_cifar100_lt_if100_full_list():
    assert Cifar100LT().class_counts(100, "exp", LDAM) == CIFAR100_IF100


def test_step_profile():
    assert Cifar10LT().class_counts(100, "step", LDAM) == [5000] * 5 + [50] * 5
    assert Cifar100LT().class_counts(10, "step", LDAM) == [500] * 50 + [50] * 50
    # Odd C: the extra class gets the tail count.
    assert class_counts(200.0, 5, 10, "step") == [200, 200, 20, 20, 20]


def test_float_factor_and_small_hand_computed_case():
    # 200 * (1/4) ** (i/2) = 200, 100, 50; IF 2.5: 200 * 0.4 ** (i/2) = 200, 126.49.., 80.000..
    assert class_counts(200.0, 3, 4, "exp") == [200, 100, 50]
    assert class_counts(200.0, 3, 2.5, "exp") == [200, 126, 80]


@pytest.mark.parametrize("imb", [0.5, 0, -3, math.nan, math.inf])
def test_bad_imbalance_factor_is_bad_input(imb):
    with pytest.raises(BadInput, match="imbalance factor"):
        Cifar10LT().class_counts(imb, "exp", LDAM)


def test_bad_profile_classes_and_empty_tail_are_bad_input():
    with pytest.raises(BadInput, match="unknown profile 'linear'; choose one of exp, step"):
        class_counts(5000.0, 10, 100, "linear")
    with pytest.raises(BadInput, match="at least 2 classes"):
        class_counts(5000.0, 1, 100, "exp")
    # 200 * (1/500) ** (8/9) = 0.798... -> int() gives class 8 (and 9) no image.
    with pytest.raises(BadInput, match="leaves class 8 without training images"):
        class_counts(200.0, 10, 500, "exp")


# --- subset selection -------------------------------------------------------------------------

def test_subset_has_exact_counts_and_is_sorted_int64():
    labels = balanced_labels(10, 5000, seed=11)
    counts = CIFAR10_COUNTS[100]
    picked = select_subset(labels, counts, split_seed=0)
    assert picked.dtype == np.int64
    assert len(picked) == 12406
    assert np.all(np.diff(picked) > 0)
    assert np.bincount(labels[picked], minlength=10).tolist() == counts


def test_subset_is_deterministic_and_depends_on_split_seed():
    labels = balanced_labels(100, 500, seed=12)
    counts = class_counts(500.0, 100, 100, "exp")
    first = select_subset(labels, counts, 3)
    assert np.array_equal(first, select_subset(labels, counts, 3))
    other = select_subset(labels, counts, 4)
    assert np.bincount(labels[other], minlength=100).tolist() == counts
    assert not np.array_equal(first, other)


def test_subset_leaves_global_numpy_rng_alone():
    before = np.random.get_state()[1].copy()
    select_subset(balanced_labels(10, 50, seed=1), [50, 20, 5] + [1] * 7, 9)
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_subsets_are_nested_across_factors(num_classes):
    per_class = 50000 // num_classes
    labels = balanced_labels(num_classes, per_class, seed=13)
    subsets = [set(select_subset(labels, class_counts(per_class, num_classes, imb, "exp"), 0))
               for imb in FACTORS]
    for smaller, larger in zip(subsets, subsets[1:]):
        assert smaller < larger
    assert subsets[-1] == set(range(50000))


def test_subset_equals_independent_ldam_drw_replay(tmp_path):
    for num_classes in (10, 100):
        labels = balanced_labels(num_classes, 50000 // num_classes, seed=num_classes)
        cases = [{"rand_number": seed, "imb_factor": inverse}
                 for seed in (0, 7) for inverse in (0.01, 0.1, 0.005)]
        reference = ldam_replay(labels, cases, tmp_path)
        for case in cases:
            counts = class_counts(50000 / num_classes, num_classes, 1 / case["imb_factor"], "exp")
            ours = select_subset(labels, counts, case["rand_number"])
            theirs = reference[json.dumps(case, sort_keys=True)]
            assert len(theirs) == sum(counts)
            assert ours.tolist() == sorted(theirs)


def test_split_seed_outside_randomstate_range_is_bad_input():
    with pytest.raises(BadInput, match="split seed"):
        select_subset(balanced_labels(2, 3, seed=0), [3, 1], 2 ** 32)


# --- plugins ----------------------------------------------------------------------------------

def test_plugins_are_registered_with_their_protocols():
    assert registry.load("dataset", "cifar10-lt") is Cifar10LT
    assert registry.load("dataset", "cifar100-lt") is Cifar100LT
    assert registry.load("dataset", "synthetic-lt") is SyntheticLT
    for cifar in (Cifar10LT, Cifar100LT):
        assert cifar.protocols == {"ldam": LDAM_CIFAR, "jamal": JAMAL_CIFAR}
        assert cifar.default_protocol == "ldam"
    assert set(SyntheticLT.protocols) == {"ldam", "jamal"}
    for protocol, reference in (("ldam", LDAM_CIFAR), ("jamal", JAMAL_CIFAR)):
        options = SyntheticLT.protocols[protocol]
        assert {k: options[k] for k in reference if k not in ("mean", "std")} == \
            {k: v for k, v in reference.items() if k not in ("mean", "std")}
        assert set(SyntheticLT.data_keys) <= (set(options) | {"protocol"}
                                              | set(OPTIONAL_DEFAULTS))


# --- CIFAR files: failures ----------------------------------------------------------------------

# The download must fail in the test whether or not the machine is online: every proxy points
# at a closed local port. TMPDIR is redirected so a leftover scratch directory can be seen.
CHECK_SCRIPT = r"""
import json, sys
from pathlib import Path
from ltbench.datasets.cifar_lt import Cifar10LT, Cifar100LT
from ltbench.errors import BadInput
messages = []
for dataset, root in ((Cifar10LT(), sys.argv[1]), (Cifar100LT(), sys.argv[2])):
    try:
        dataset.check(Path(root), {})
        messages.append(None)
    except BadInput as exc:
        messages.append(str(exc))
print(json.dumps(messages))
"""


@pytest.mark.slow
def test_missing_cifar_folder_is_one_line_bad_input_and_writes_nothing(tmp_path):
    absent = tmp_path / "absent"
    empty = tmp_path / "empty"
    empty.mkdir()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "NO_PROXY": "", "no_proxy": ""}
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[variable] = "http://127.0.0.1:9"
    done = subprocess.run([sys.executable, "-c", CHECK_SCRIPT, str(absent), str(empty)],
                          capture_output=True, text=True, timeout=120, env=env, check=True)
    c10, c100 = json.loads(done.stdout.strip().splitlines()[-1])
    assert c10.startswith(f"cifar10-lt: no CIFAR-10 data under {absent} (looked for "
                          f"{absent / 'cifar-10-batches-py'}) and the download failed (")
    assert c100.startswith(f"cifar100-lt: no CIFAR-100 data under {empty} (looked for "
                           f"{empty / 'cifar-100-python'}) and the download failed (")
    for message in (c10, c100):
        assert "\n" not in message
        assert message.endswith("put the official python-format folder there, or pass "
                                "--data-root DIR / set LTBENCH_DATA_ROOT")
    assert not absent.exists()
    assert list(empty.iterdir()) == []
    assert list(scratch.glob("ltbench-*")) == []


def test_corrupt_cifar_folder_fails_the_md5_check_and_is_left_alone(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "test_batch",
                 "batches.meta"):
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(BadInput) as caught:
        Cifar10LT().check(tmp_path, {})
    message = str(caught.value)
    assert message.startswith(f"cifar10-lt: {folder} failed the md5 check (data_batch_1, "
                              f"data_batch_2, data_batch_3, data_batch_4, data_batch_5 missing, "
                              f"test_batch, batches.meta); ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]
    assert len(list(folder.iterdir())) == 6


# --- CIFAR files: real data -----------------------------------------------------------------------

def cifar_root(folder: str) -> Path:
    root = os.environ.get("LTBENCH_DATA_ROOT")
    if not root:
        pytest.skip("LTBENCH_DATA_ROOT is not set: no real CIFAR folders to read")
    if not (Path(root) / folder).is_dir():
        pytest.skip(f"LTBENCH_DATA_ROOT={root} has no {folder} folder")
    return Path(root)


@pytest.mark.cifar
@pytest.mark.slow
def test_cifar10_lt_if100_loads_the_ldam_subset(tmp_path):
    from torchvision.datasets import CIFAR10

    root = cifar_root("cifar-10-batches-py")
    dataset = Cifar10LT()
    dataset.check(root, {})
    data = dataset.load(root, 100, "exp", 0, resolve_run(dataset, None, {}))
    official = CIFAR10(str(root), train=True, download=False)
    targets = np.asarray(official.targets)

    assert data.train_images.shape == (12406, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.class_counts == CIFAR10_COUNTS[100] and data.num_classes == 10
    assert torch.bincount(data.train_labels).tolist() == CIFAR10_COUNTS[100]
    assert np.array_equal(data.train_labels.numpy(), targets[data.train_indices])
    expected_images = official.data[data.train_indices].transpose(0, 3, 1, 2)
    assert np.array_equal(data.train_images.numpy(), expected_images)
    assert data.test_images.shape == (10000, 3, 32, 32)
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10

    reference = ldam_replay(targets, [{"rand_number": 0, "imb_factor": 0.01}], tmp_path)
    assert data.train_indices.tolist() == sorted(next(iter(reference.values())))
    assert data.meta_images is None and data.meta_labels is None and data.meta_indices is None
    assert np.array_equal(dataset.split_indices(root, 100, "exp", 0, LDAM)[0],
                          data.train_indices)


@pytest.mark.cifar
@pytest.mark.slow
def test_cifar100_lt_if100_loads_fine_labels():
    from torchvision.datasets import CIFAR100

    root = cifar_root("cifar-100-python")
    data = Cifar100LT().load(root, 100, "exp", 0, resolve_run(Cifar100LT, None, {}))
    targets = np.asarray(CIFAR100(str(root), train=True, download=False).targets)
    assert len(data.train_labels) == 10847
    assert torch.bincount(data.train_labels, minlength=100).tolist() == CIFAR100_IF100
    assert np.array_equal(data.train_labels.numpy(), targets[data.train_indices])
    assert data.test_images.shape == (10000, 3, 32, 32)
    assert torch.bincount(data.test_labels).tolist() == [100] * 100


# --- synthetic ------------------------------------------------------------------------------------

def synthetic(imb: float, split_seed: int = 0, profile: str = "exp", **options):
    hparams = {**SYNTHETIC, **options}
    return SyntheticLT().load(Path("unused"), imb, profile, split_seed, hparams)


def test_synthetic_shapes_counts_and_balanced_test():
    data = synthetic(100)
    counts = [200, 119, 71, 43, 25, 15, 9, 5, 3, 2]  # int(200 * 0.01 ** (i / 9))
    assert data.class_counts == counts
    assert data.train_images.shape == (492, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.train_labels.dtype == torch.int64 and data.test_labels.dtype == torch.int64
    assert torch.bincount(data.train_labels).tolist() == counts
    assert data.test_images.shape == (500, 3, 32, 32) and data.test_images.dtype == torch.uint8
    assert torch.bincount(data.test_labels).tolist() == [50] * 10
    assert data.train_indices.dtype == np.int64 and np.all(np.diff(data.train_indices) > 0)
    step = synthetic(10, profile="step")
    assert torch.bincount(step.train_labels).tolist() == [200] * 5 + [20] * 5


def test_synthetic_options_change_the_sizes():
    data = synthetic(4, classes=3, n_max=40, test_per_class=7)
    assert data.class_counts == [40, 20, 10]
    assert data.train_images.shape == (70, 3, 32, 32)
    assert torch.bincount(data.test_labels).tolist() == [7, 7, 7]
    with pytest.raises(BadInput, match="n_max and test_per_class must be at least 1"):
        synthetic(4, n_max=0)


def test_synthetic_is_deterministic_and_seeded_by_split_seed():
    first, again, other = synthetic(10, 5), synthetic(10, 5), synthetic(10, 6)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert np.array_equal(first.train_indices, again.train_indices)
    assert not np.array_equal(first.train_indices, other.train_indices)
    assert not torch.equal(first.test_images, other.test_images)


def test_synthetic_subsets_are_nested_with_identical_images():
    pool = synthetic(1)
    assert pool.train_indices.tolist() == list(range(2000))
    for imb in (10, 100):
        subset = synthetic(imb)
        assert set(subset.train_indices) < set(pool.train_indices)
        assert torch.equal(subset.train_images, pool.train_images[subset.train_indices])
        assert np.array_equal(subset.train_indices,
                              SyntheticLT().split_indices(Path("unused"), imb, "exp", 0,
                                                          SYNTHETIC)[0])


def test_synthetic_normalisation_constants_fit_the_data():
    pixels = synthetic(1).train_images.double() / 255
    assert pixels.mean((0, 2, 3)).tolist() == pytest.approx(SYNTHETIC["mean"], abs=0.01)
    assert pixels.std((0, 2, 3)).tolist() == pytest.approx(SYNTHETIC["std"], abs=0.01)


def test_synthetic_classes_differ_in_appearance():
    data = synthetic(1)
    images = data.train_images.double() / 255
    class_colours = torch.stack([images[data.train_labels == c].mean((0, 2, 3))
                                 for c in range(10)])
    # Distinct base colours and a stripe pattern (large within-image spread) in every class.
    assert torch.cdist(class_colours, class_colours).add(torch.eye(10)).min() > 0.02
    assert images.std((2, 3)).mean() > 0.15


# --- the Jamal / MW-Net construction and the meta set (datasets.md §2.4, §2.5) --------------------

JAMAL_CIFAR10_COUNTS = {
    200: [4990, 2769, 1537, 853, 473, 262, 145, 80, 44, 24],
    100: [4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49],
    50: [4990, 3230, 2091, 1354, 877, 567, 367, 238, 154, 99],
    20: [4990, 3577, 2564, 1838, 1317, 944, 677, 485, 348, 249],
    10: [4990, 3863, 2991, 2316, 1793, 1388, 1075, 832, 644, 499],
    1: [4990] * 10,
}
# IF: (C10 total, C10 realised ratio, C100 total, C100 min, C100 realised ratio)
JAMAL_SUMMARY = {
    200: (11177, 207.9, 9304, 2, 245.0),
    100: (12380, 101.8, 10626, 4, 122.5),
    50: (13967, 50.4, 12354, 9, 54.4),
    20: (16989, 20.0, 15594, 24, 20.4),
    10: (20391, 10.0, 19183, 49, 10.0),
    1: (49900, 1.0, 49000, 490, 1.0),
}
JAMAL_CIFAR100_IF100 = [int(n) for n in """
490 467 446 426 406 388 370 353 337 322 307 293 280 267 255 243 232 222 212 202 193 184 176 168
160 153 146 139 133 127 121 115 110 105 100 96 91 87 83 79 76 72 69 66 63 60 57 55 52 50 47 45 43
41 39 37 36 34 32 31 30 28 27 26 24 23 22 21 20 19 18 18 17 16 15 14 14 13 13 12 11 11 10 10 9 9 8
8 8 7 7 7 6 6 6 5 5 5 5 4""".split()]


@pytest.mark.parametrize("imb", FACTORS)
def test_jamal_counts_match_reference_table(imb):
    c10 = Cifar10LT().class_counts(imb, "exp", JAMAL)
    c100 = Cifar100LT().class_counts(imb, "exp", JAMAL)
    c10_total, c10_ratio, c100_total, c100_min, c100_ratio = JAMAL_SUMMARY[imb]
    assert c10 == JAMAL_CIFAR10_COUNTS[imb] and sum(c10) == c10_total
    assert round(max(c10) / min(c10), 1) == c10_ratio
    assert (len(c100), c100[0], sum(c100), min(c100)) == (100, 490, c100_total, c100_min)
    assert round(max(c100) / min(c100), 1) == c100_ratio


def test_jamal_cifar100_if100_full_list():
    assert Cifar100LT().class_counts(100, "exp", JAMAL) == JAMAL_CIFAR100_IF100
    # n_max = (50000 - meta_per_class * C) / C follows meta_per_class.
    assert Cifar10LT().class_counts(1, "exp", {**JAMAL, "meta_per_class": 25}) == [4975] * 10


def test_meta_set_of_a_protocol_without_one_is_empty():
    labels = balanced_labels(3, 50, seed=2)
    subset, meta = select_split(labels, [40, 20, 10], 5, "ldam", 0)
    assert meta.dtype == np.int64 and len(meta) == 0
    assert np.array_equal(subset, select_subset(labels, [40, 20, 10], 5))


def test_ldam_protocol_meta_set_comes_from_unselected_images():
    labels = balanced_labels(3, 50, seed=3)
    before = np.random.get_state()[1].copy()
    subset, meta = select_split(labels, [40, 20, 10], 5, "ldam", 6)
    assert np.array_equal(np.random.get_state()[1], before)  # local RNGs only
    assert np.array_equal(subset, select_subset(labels, [40, 20, 10], 5))  # subset unchanged
    assert np.bincount(labels[meta]).tolist() == [6, 6, 6]
    assert not set(meta) & set(subset) and np.all(np.diff(meta) > 0)
    again, other = select_split(labels, [40, 20, 10], 5, "ldam", 6), select_split(
        labels, [40, 20, 10], 6, "ldam", 6)
    assert np.array_equal(meta, again[1]) and not np.array_equal(meta, other[1])
    # The head class keeps 40 of 50: 10 left, so 11 meta images cannot be drawn.
    with pytest.raises(ValueError, match="class 0 has 10 candidates"):
        select_split(labels, [40, 20, 10], 5, "ldam", 11)


def test_ldam_protocol_with_a_meta_set_is_bad_input_before_any_data():
    with pytest.raises(BadInput, match="cifar10-lt: protocol 'ldam' draws the meta set from the "
                                       "images its subset leaves out, but class 0 keeps 5000 "
                                       "of its 5000 images.*use --set protocol=jamal"):
        Cifar10LT().class_counts(100, "exp", {"protocol": "ldam", "meta_per_class": 10})
    with pytest.raises(BadInput, match="meta_per_class must be >= 0"):
        Cifar10LT().class_counts(100, "exp", {"protocol": "jamal", "meta_per_class": -1})


def test_jamal_meta_set_is_balanced_disjoint_deterministic_and_independent_of_imb():
    labels = balanced_labels(10, 500, seed=4)
    splits = {imb: select_split(labels, class_counts(490.0, 10, imb, "exp"), 0, "jamal", 10)
              for imb in FACTORS}
    subset, meta = splits[100]
    assert meta.dtype == np.int64 and np.all(np.diff(meta) > 0)
    assert np.bincount(labels[meta], minlength=10).tolist() == [10] * 10
    assert np.bincount(labels[subset], minlength=10).tolist() == class_counts(490.0, 10, 100,
                                                                              "exp")
    assert not set(meta) & set(subset)
    for imb, (other_subset, other_meta) in splits.items():
        assert np.array_equal(other_meta, meta)  # removed first: the same for every factor
        assert not set(other_meta) & set(other_subset)
    nested = [set(splits[imb][0]) for imb in FACTORS]
    assert all(small < large for small, large in zip(nested, nested[1:]))
    assert nested[-1] | set(meta) == set(range(5000))  # IF 1: everything but the meta set
    again = select_split(labels, class_counts(490.0, 10, 100, "exp"), 0, "jamal", 10)
    assert all(np.array_equal(a, b) for a, b in zip(again, splits[100]))
    other = select_split(labels, class_counts(490.0, 10, 100, "exp"), 1, "jamal", 10)
    assert not np.array_equal(other[1], meta)


def test_synthetic_jamal_load_holds_the_meta_set():
    hparams = resolve_run(SyntheticLT, None, {"protocol": "jamal"})
    data = SyntheticLT().load(Path("unused"), 100, "exp", 0, hparams)
    assert data.class_counts == class_counts(190.0, 10, 100, "exp")
    assert data.meta_images.shape == (100, 3, 32, 32) and data.meta_images.dtype == torch.uint8
    assert torch.bincount(data.meta_labels).tolist() == [10] * 10
    assert not set(data.meta_indices) & set(data.train_indices)
    pool = synthetic(1)  # the same rendered pool, ldam protocol, every image
    assert torch.equal(data.meta_images, pool.train_images[data.meta_indices])
    assert torch.equal(data.meta_labels, pool.train_labels[data.meta_indices])
    assert torch.equal(data.train_images, pool.train_images[data.train_indices])
    assert synthetic(100).meta_images is None


@pytest.mark.cifar
@pytest.mark.parametrize("dataset, folder, counts", [
    (Cifar10LT(), "cifar-10-batches-py", JAMAL_CIFAR10_COUNTS[100]),
    (Cifar100LT(), "cifar-100-python", JAMAL_CIFAR100_IF100),
])
def test_real_cifar_jamal_split(dataset, folder, counts):
    root = cifar_root(folder)
    hparams = resolve_run(dataset, None, {"protocol": "jamal"})
    data = dataset.load(root, 100, "exp", 0, hparams)
    classes = len(counts)
    assert torch.bincount(data.train_labels, minlength=classes).tolist() == counts
    assert torch.bincount(data.meta_labels, minlength=classes).tolist() == [10] * classes
    assert not set(data.meta_indices) & set(data.train_indices)
    images, labels = (torch.cat([data.train_images, data.meta_images]),
                      torch.cat([data.train_labels, data.meta_labels]))
    positions = np.concatenate([data.train_indices, data.meta_indices])
    official_images, official_labels = dataset._split(root, hparams, train=True)
    assert torch.equal(images, official_images[positions])
    assert torch.equal(labels, official_labels[positions])
    subset, meta = dataset.split_indices(root, 100, "exp", 0, hparams)
    assert np.array_equal(subset, data.train_indices) and np.array_equal(meta, data.meta_indices)
