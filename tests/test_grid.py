"""Hyper-parameter resolution, run identity and grid expansion."""

from __future__ import annotations

import pytest

from ltbench import HARNESS_VERSION, registry
from ltbench.datasets.cifar_protocols import JAMAL_CIFAR, LDAM_CIFAR
from ltbench.errors import BadInput
from ltbench.hparams import EpochOf, parse_overrides, rescaled_epochs, resolve, resolve_run
from ltbench.run import grid
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
    # Proportional (16, 18, DRW 16), but the warm-up keeps an epoch: round(0.5) would be 0.
    assert (hp["epochs"], hp["warmup_epochs"], hp["lr_milestones"], hp["drw_epoch"]) == \
        (20, 1, [16, 18], 16)
    hp = resolve(LDAM_CIFAR, {"drw_epoch": EpochOf(160)},
                 parse_overrides(["drw_epoch=3", "lr_milestones=5,7"]), epochs=10)
    assert (hp["drw_epoch"], hp["lr_milestones"], hp["warmup_epochs"]) == (3, [5, 7], 1)
    # One epoch cannot hold a warm-up, two decays and DRW: the plain proportional map, which
    # trains the only epoch at the full rate (the milestones round up to 1, past it).
    hp = resolve(LDAM_CIFAR, {}, {}, epochs=1)
    assert hp["lr_milestones"] == [1, 1] and hp["warmup_epochs"] == 0


def test_a_short_schedule_keeps_its_shape():
    """Issue 18: at 6 epochs, proportional rounding put both decays and DRW on the last epoch
    (the only DRW epoch, at lr 1e-5) and dropped the warm-up."""
    hp = resolve(LDAM_CIFAR, {"drw_epoch": EpochOf(160)}, {}, epochs=6)
    assert (hp["warmup_epochs"], hp["lr_milestones"], hp["drw_epoch"]) == (1, [4, 5], 4)
    # Jamal: decays at 159/179 and meta-learning from 160 (its own decays at 160/180): the
    # proportional 5, 5, 5, 5 becomes decays at 4 and 5 with two meta-learning epochs.
    meta = {"meta_start_epoch": EpochOf(160), "meta_lr_milestones": (EpochOf(160),
                                                                     EpochOf(180))}
    hp = resolve(JAMAL_CIFAR, meta, {}, epochs=6)
    assert (hp["warmup_epochs"], hp["lr_milestones"], hp["meta_start_epoch"],
            hp["meta_lr_milestones"]) == (0, [4, 5], 4, [4, 5])


def test_every_long_enough_schedule_keeps_its_stages():
    defaults = {**LDAM_CIFAR, "drw_epoch": EpochOf(160)}
    for epochs in range(3, 201):
        epoch_map, needed = rescaled_epochs(defaults, epochs, 200)
        assert needed is None
        hp = resolve(LDAM_CIFAR, {"drw_epoch": EpochOf(160)}, {}, epochs=epochs)
        first, second = hp["lr_milestones"]
        assert 1 <= hp["warmup_epochs"] <= first <= hp["drw_epoch"] < second <= epochs - 1
        # At most one epoch from proportional rounding (at most half an epoch off).
        assert all(abs(epoch_map[m] - m.epoch * epochs / 200) <= 1.5 for m in epoch_map), epochs


def test_too_short_a_schedule_says_how_many_epochs_it_needs():
    defaults = {**LDAM_CIFAR, "drw_epoch": EpochOf(160)}
    assert rescaled_epochs(defaults, 2, 200) == (
        {EpochOf(5): 0, EpochOf(160): 2, EpochOf(180): 2}, 3)
    assert rescaled_epochs(defaults, 200, 200) == (
        {EpochOf(5): 5, EpochOf(160): 160, EpochOf(180): 180}, None)


def test_drw_starts_at_four_fifths_of_any_protocol():
    """DRW's start is stated for the 200-epoch CIFAR protocol; on a 90-epoch ImageNet-LT run
    it used to stay at epoch 160, past the end, so ce-drw trained as ce."""
    dataset, method = registry.load("dataset", "imagenet-lt"), registry.load("method", "ce-drw")
    hp = resolve_run(dataset, method, {})
    assert (hp["epochs"], hp["drw_epoch"]) == (90, 72)
    assert resolve_run(registry.load("dataset", "cifar10-lt"), method, {})["drw_epoch"] == 160


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
    ("batch_size", "12.5", "'12.5' is not an integer"),
    ("nesterov", "maybe", "expected true or false"),
    ("batch_size", "0", "batch_size must be at least 1"),
    ("eval_every", "0", "eval_every must be at least 1"),
    ("epochs", "0", "epochs must be at least 1"),
])
def test_wrongly_typed_set_values(key, value, message):
    with pytest.raises(BadInput, match=message):
        resolve(LDAM_CIFAR, {}, {key: value})


@pytest.mark.parametrize("defaults, overrides, choices, message", [
    (LDAM_CIFAR, {"backbone": "resnet33"}, None,
     "--set backbone=resnet33: expected one of resnet32, resnet8, resnet10, resnet50, "
     "resnext50_32x4d, resnet152"),
    (LDAM_CIFAR, {"pad_mode": "edge"}, None, "--set pad_mode=edge: expected one of zero, "
                                             "reflect"),
    ({**LDAM_CIFAR, "lr_schedule": "step"}, {"lr_schedule": "linear"}, None,
     "--set lr_schedule=linear: expected one of step, cosine"),
    (LDAM_CIFAR, {"mean": "0.5,0.5"}, None, "--set mean=0.5,0.5: expected 3 comma-separated "
                                            "values (one per colour channel), got 2"),
    (LDAM_CIFAR, {"std": "0.2,-0.1,0.2"}, None, "--set std=0.2,-0.1,0.2: every value must be "
                                                "> 0"),
    # A method's own choices, and a bad default is caught as a bad --set value would be.
    ({**LDAM_CIFAR, "eps_form": "additive"}, {"eps_form": "sum"}, {"eps_form": ("additive",)},
     "--set eps_form=sum: expected one of additive"),
    ({**LDAM_CIFAR, "backbone": "nosuch"}, {}, None, "--set backbone=nosuch: expected one of"),
])
def test_values_the_engine_refuses_are_bad_input(defaults, overrides, choices, message):
    with pytest.raises(BadInput) as info:
        resolve(defaults, {}, overrides, choices=choices)
    assert str(info.value).startswith(message)


def test_values_the_engine_takes_resolve():
    hp = resolve({**LDAM_CIFAR, "lr_schedule": "step"}, {},
                 {"backbone": "resnet50", "pad_mode": "reflect", "lr_schedule": "cosine",
                  "mean": "0.5,0.4,0.3", "std": "0.1,0.1,0.1"})
    assert (hp["backbone"], hp["pad_mode"], hp["lr_schedule"], hp["mean"], hp["std"]) == \
        ("resnet50", "reflect", "cosine", [0.5, 0.4, 0.3], [0.1, 0.1, 0.1])


def test_set_values_take_the_default_type():
    hp = resolve(LDAM_CIFAR, {}, {"lr": "0.05", "batch_size": "64", "nesterov": "true"})
    assert hp["lr"] == 0.05 and hp["batch_size"] == 64 and hp["nesterov"] is True


def _ce_on_cifar10(overrides: dict[str, str]) -> dict:
    return resolve_run(registry.load("dataset", "cifar10-lt"), registry.load("method", "ce"),
                       overrides)


def _spec(**changes) -> RunSpec:
    fields = dict(method="ce", dataset="cifar10-lt", imb_factor=100.0, profile="exp",
                  split_seed=0, seed=0, hparams=_ce_on_cifar10({}))
    fields.update(changes)
    return RunSpec(**fields)


def test_run_id_is_stable_and_depends_only_on_identity():
    assert _spec().run_id == _spec().run_id
    assert _spec(imb_factor=100).run_id == _spec(imb_factor=100.0).run_id
    ids = {_spec().run_id, _spec(seed=1).run_id, _spec(split_seed=1).run_id,
           _spec(imb_factor=50.0).run_id, _spec(profile="step").run_id,
           _spec(method="focal").run_id,
           _spec(hparams=_ce_on_cifar10({"lr": "0.05"})).run_id,
           _spec(hparams=_ce_on_cifar10({"protocol": "jamal"})).run_id}
    assert len(ids) == 8


def test_run_id_golden_value():
    # If this changes, every stored run is orphaned: change it only with HARNESS_VERSION.
    assert HARNESS_VERSION == "0.1"
    # Changed from bf28b862e42c3b29 when the protocol and meta_per_class entered the hparams.
    assert _spec().run_id == "c337a41fc73dc6bb"


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
    with pytest.raises(BadInput, match="seed must be at least 0, got -1"):
        grid.parse_seeds("-1")


# --- protocols -------------------------------------------------------------------------------

def test_protocol_comes_from_set_then_method_then_dataset():
    cifar = registry.load("dataset", "cifar10-lt")
    ce, meta_ce = registry.load("method", "ce"), registry.load("method", "meta-ce")
    assert ce.protocol is None and meta_ce.protocol == "jamal"
    assert cifar.default_protocol == "ldam"
    plain = resolve_run(cifar, ce, {})
    assert plain["protocol"] == "ldam" and plain["meta_per_class"] == 0
    assert {k: v for k, v in plain.items() if k != "protocol"} == resolve(LDAM_CIFAR, {}, {})
    jamal = resolve_run(cifar, meta_ce, {})
    assert jamal["protocol"] == "jamal"
    assert (jamal["batch_size"], jamal["nesterov"], jamal["weight_decay"], jamal["pad_mode"],
            jamal["warmup_epochs"], jamal["lr_milestones"], jamal["lr_decay"],
            jamal["meta_per_class"]) == (100, True, 5e-4, "reflect", 0, [159, 179], 0.01, 10)
    assert jamal["mean"] == [125.3 / 255, 123.0 / 255, 113.9 / 255]
    assert jamal["std"] == [63.0 / 255, 62.1 / 255, 66.7 / 255]
    assert resolve_run(cifar, ce, {"protocol": "jamal"})["batch_size"] == 100
    assert resolve_run(cifar, meta_ce, {"protocol": "ldam"})["batch_size"] == 128
    assert resolve_run(cifar, None, {"protocol": "jamal"})["protocol"] == "jamal"
    with pytest.raises(BadInput, match="unknown protocol 'cui'; known: ldam, jamal"):
        resolve_run(cifar, ce, {"protocol": "cui"})


def test_method_defaults_override_the_protocol_and_epochs_rescale_both():
    cifar, mwn = registry.load("dataset", "cifar10-lt"), registry.load("method", "mwn")
    hp = resolve_run(cifar, mwn, {})
    # MW-Net's own schedule on the Jamal data: 100 epochs, x0.1 at 0-based 79 / 89.
    assert (hp["epochs"], hp["lr_milestones"], hp["lr_decay"], hp["meta_lr_milestones"]) == \
        (100, [79, 89], 0.1, [80, 90])
    hp = resolve_run(cifar, mwn, {}, epochs=10)
    assert (hp["lr_milestones"], hp["meta_lr_milestones"]) == ([8, 9], [8, 9])
    meta_ce = resolve_run(cifar, registry.load("method", "meta-ce"), {}, epochs=20)
    assert (meta_ce["lr_milestones"], meta_ce["meta_start_epoch"],
            meta_ce["meta_lr_milestones"]) == ([16, 18], 16, [16, 18])
    assert JAMAL_CIFAR["lr_milestones"] == (EpochOf(159), EpochOf(179))


def test_protocol_set_key_is_known_and_changes_the_grid():
    (ldam,) = grid.expand(["ce"], ["synthetic-lt"], [10.0], [0])
    (jamal,) = grid.expand(["ce"], ["synthetic-lt"], [10.0], [0],
                           overrides={"protocol": "jamal"})
    assert (ldam.hparams["protocol"], jamal.hparams["protocol"]) == ("ldam", "jamal")
    assert ldam.run_id != jamal.run_id
    with pytest.raises(BadInput, match="unknown protocol 'nosuch'"):
        grid.expand(["ce"], ["synthetic-lt"], [10.0], [0], overrides={"protocol": "nosuch"})


def test_meta_set_problems_fail_the_grid_before_training():
    # The ldam protocol keeps every image of the head class, so no meta set can be drawn.
    with pytest.raises(BadInput, match="class 0 keeps 5000 of its 5000 images.*"
                                       "use --set protocol=jamal"):
        grid.expand(["ce"], ["cifar10-lt"], [100.0], [0], overrides={"meta_per_class": "10"})
    with pytest.raises(BadInput, match="method 'meta-ce' needs a balanced meta set.*"
                                       "protocol 'ldam'.*meta_per_class 0"):
        grid.expand(["meta-ce"], ["cifar10-lt"], [100.0], [0], overrides={"protocol": "ldam"})
    with pytest.raises(BadInput, match="class 0 keeps"):
        grid.expand(["meta-ce"], ["cifar100-lt"], [100.0], [0],
                    overrides={"protocol": "ldam", "meta_per_class": "10"})
    with pytest.raises(BadInput, match="needs a balanced meta set"):
        grid.expand(["l2rw"], ["synthetic-lt"], [10.0], [0], overrides={"meta_per_class": "0"})
    with pytest.raises(BadInput, match="meta_batch_size must be at least 1"):
        grid.expand(["l2rw"], ["synthetic-lt"], [10.0], [0], overrides={"meta_batch_size": "0"})
    # cb-finetune uses no meta set, so meta_per_class 0 is fine for it.
    (spec,) = grid.expand(["cb-finetune"], ["synthetic-lt"], [10.0], [0],
                          overrides={"meta_per_class": "0"})
    assert spec.hparams["protocol"] == "jamal" and spec.hparams["meta_per_class"] == 0


def test_a_plan_too_short_for_its_schedules_says_so_once_per_schedule():
    specs = grid.expand(["ce", "ldam-drw", "meta-ce", "mwn"], ["cifar10-lt"], [100.0], [0, 1],
                        epochs=2)
    assert grid.schedule_notes(specs) == [
        "note: 2 epochs cannot keep the shape of the ldam schedule of ce, ldam-drw on "
        "cifar10-lt (it needs 3): its stages merge",
        "note: 2 epochs cannot keep the shape of the jamal schedule of meta-ce, mwn on "
        "cifar10-lt (it needs 3): its stages merge"]
    assert grid.schedule_notes(grid.expand(["ce", "meta-ce"], ["cifar10-lt"], [100.0], [0],
                                           epochs=3)) == []
    # An explicit schedule is the user's: only the warm-up is left to fit, and 2 epochs hold it.
    overrides = {"lr_milestones": "1,2", "drw_epoch": "1"}
    assert grid.schedule_notes(grid.expand(["ldam-drw"], ["cifar10-lt"], [100.0], [0],
                                           epochs=2, overrides=overrides), overrides) == []
