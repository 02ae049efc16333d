"""Hyper-parameter resolution, run identity and grid expansion."""

from __future__ import annotations

import pytest

from ltbench import HARNESS_VERSION, grid
from ltbench.errors import BadInput
from ltbench.hparams import LDAM_CIFAR, EpochOf, parse_overrides, resolve
from ltbench.spec import RunSpec, derive_seed


def test_reference_protocol_resolves_to_ldam_drw_schedule():
    hp = resolve(LDAM_CIFAR, {"drw_epoch": EpochOf(160)}, {})
    assert hp["epochs"] == 200 and hp["batch_size"] == 128
    assert hp["warmup_epochs"] == 5
    assert hp["lr_milestones"] == [160, 180]
    assert hp["drw_epoch"] == 160
    assert hp["weight_decay"] == 2e-4 and hp["nesterov"] is False


def test_epochs_rescale_epoch_valued_defaults_but_not_explicit_overrides():
    hp = resolve(LDAM_CIFAR, {"drw_epoch": EpochOf(160)}, {}, epochs=20)
    assert (hp["epochs"], hp["warmup_epochs"], hp["lr_milestones"], hp["drw_epoch"]) == \
        (20, 0, [16, 18], 16)
    hp = resolve(LDAM_CIFAR, {"drw_epoch": EpochOf(160)},
                 parse_overrides(["drw_epoch=3", "lr_milestones=5,7"]), epochs=10)
    assert (hp["drw_epoch"], hp["lr_milestones"], hp["warmup_epochs"]) == (3, [5, 7], 0)
    # One epoch trains at the full rate: milestones round up to 1, past the only epoch.
    hp = resolve(LDAM_CIFAR, {}, {}, epochs=1)
    assert hp["lr_milestones"] == [1, 1] and hp["warmup_epochs"] == 0


@pytest.mark.parametrize("item, message", [
    ("lr", "expects key=value"),
    ("=3", "expects key=value"),
    ("lr=", "expects key=value"),
])
def test_malformed_set_items(item, message):
    with pytest.raises(BadInput, match=message):
        parse_overrides([item])


@pytest.mark.parametrize("key, value, message", [
    ("lr", "fast", "expected a finite number"),
    ("lr", "nan", "expected a finite number"),
    ("batch_size", "12.5", "expected an integer"),
    ("nesterov", "maybe", "expected true or false"),
    ("batch_size", "0", "batch_size must be at least 1"),
    ("eval_every", "0", "eval_every must be at least 1"),
    ("epochs", "0", "epochs must be at least 1"),
])
def test_wrongly_typed_set_values(key, value, message):
    with pytest.raises(BadInput, match=message):
        resolve(LDAM_CIFAR, {}, {key: value})


def test_set_values_take_the_default_type():
    hp = resolve(LDAM_CIFAR, {}, {"lr": "0.05", "batch_size": "64", "nesterov": "true"})
    assert hp["lr"] == 0.05 and hp["batch_size"] == 64 and hp["nesterov"] is True


def _spec(**changes) -> RunSpec:
    fields = dict(method="ce", dataset="cifar10-lt", imb_factor=100.0, profile="exp",
                  split_seed=0, seed=0, hparams=resolve(LDAM_CIFAR, {}, {}))
    fields.update(changes)
    return RunSpec(**fields)


def test_run_id_is_stable_and_depends_only_on_identity():
    assert _spec().run_id == _spec().run_id
    assert _spec(imb_factor=100).run_id == _spec(imb_factor=100.0).run_id
    ids = {_spec().run_id, _spec(seed=1).run_id, _spec(split_seed=1).run_id,
           _spec(imb_factor=50.0).run_id, _spec(profile="step").run_id,
           _spec(method="focal").run_id,
           _spec(hparams=resolve(LDAM_CIFAR, {}, {"lr": "0.05"})).run_id}
    assert len(ids) == 7


def test_run_id_golden_value():
    # If this changes, every stored run is orphaned: change it only with HARNESS_VERSION.
    assert HARNESS_VERSION == "0.1"
    assert _spec().run_id == "bf28b862e42c3b29"


def test_derived_seeds_are_independent_streams():
    assert derive_seed(0, "init") != derive_seed(0, "data")
    assert derive_seed(0, "init") == derive_seed(0, "init")
    assert 0 <= derive_seed(123, "x") < 2 ** 63


def test_grid_order_and_size():
    specs = grid.expand(["ce", "focal"], ["synthetic-lt"], [100.0, 10.0], [0, 1])
    assert len(specs) == 8
    assert [(s.imb_factor, s.method, s.seed) for s in specs[:4]] == \
        [(100.0, "ce", 0), (100.0, "ce", 1), (100.0, "focal", 0), (100.0, "focal", 1)]
    # The order names are given in does not change any run's identity.
    reordered = grid.expand(["focal", "ce"], ["synthetic-lt"], [10.0, 100.0], [1, 0])
    assert {s.run_id for s in specs} == {s.run_id for s in reordered}


def test_set_key_applies_where_known_and_unknown_keys_fail():
    specs = grid.expand(["ce", "focal"], ["synthetic-lt"], [10.0], [0],
                        overrides={"gamma": "2"})
    by_method = {s.method: s.hparams for s in specs}
    assert by_method["focal"]["gamma"] == 2.0 and "gamma" not in by_method["ce"]
    with pytest.raises(BadInput, match="unknown hyper-parameter 'gama'.*did you mean gamma"):
        grid.expand(["focal"], ["synthetic-lt"], [10.0], [0], overrides={"gama": "2"})


@pytest.mark.parametrize("text, message", [
    ("abc", "is not a number"),
    ("0.01", "must be a finite number >= 1"),
    ("-5", "must be a finite number >= 1"),
    ("inf", "must be a finite number >= 1"),
    ("nan", "must be a finite number >= 1"),
    (",", "no imbalance factor"),
])
def test_bad_imbalance_factors(text, message):
    with pytest.raises(BadInput, match=message):
        grid.parse_imb_factors(text)


def test_seeds_parse():
    assert grid.parse_seeds("0, 1,2,1") == [0, 1, 2]
    with pytest.raises(BadInput, match="not a non-negative integer"):
        grid.parse_seeds("-1")
