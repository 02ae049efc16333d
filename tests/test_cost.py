"""The cost estimate of a plan (issue 18): how its runs are priced from the timed steps, and
that ``ltbench run`` prints it before training and in ``--dry-run``."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from ltbench import registry
from ltbench.cli import cli
from ltbench.run import cost, grid
from ltbench.run.stages import with_stage1

from helpers import TINY_SYNTHETIC

SMALL = {"n_max": "40", "test_per_class": "4", "batch_size": "16", "backbone": "resnet8"}


def plan(methods: list[str], epochs: int) -> list:
    return with_stage1(grid.expand(methods, ["synthetic-lt"], [10.0], [0], overrides=SMALL,
                                   epochs=epochs))


def training_images(spec) -> int:
    dataset = registry.load("dataset", spec.dataset)()
    return sum(dataset.class_counts(spec.imb_factor, spec.profile, spec.hparams))


def test_a_plain_run_is_its_steps_times_one_timed_ce_step():
    calibration = cost._Calibration("cpu")
    short, long = plan(["ce"], 2)[0], plan(["ce"], 4)[0]
    ce_drw = plan(["ce-drw"], 4)[0]
    step = calibration.step_seconds(long, 0, "ce")
    steps = math.ceil(training_images(long) / 16)
    assert cost._run_seconds(long, calibration) == pytest.approx(4 * steps * step)
    assert cost._run_seconds(short, calibration) == pytest.approx(2 * steps * step)
    # DRW's loss is a plain one: priced as ce, with no step of its own timed.
    assert cost._run_seconds(ce_drw, calibration) == pytest.approx(4 * steps * step)
    assert calibration.timings == 1


class FixedSteps:
    """A calibration whose steps take known times (real timings are noise-prone under load):
    a meta-learning step from ``meta_from`` on costs ``meta`` seconds, any other ``plain``."""

    def __init__(self, meta_from: int, plain: float = 0.1, meta: float = 1.0):
        self.meta_from, self.plain, self.meta = meta_from, plain, meta
        self.asked: list[tuple[str, int]] = []

    def step_seconds(self, spec, epoch: int, method_name: str) -> float:
        self.asked.append((method_name, epoch))
        return self.meta if epoch >= self.meta_from else self.plain


def test_a_meta_learning_run_is_priced_stage_by_stage():
    spec = plan(["meta-ce"], 10)[0]
    hp = spec.hparams
    # Jamal's schedule at 10 epochs: decays at 8 and 9, meta-learning from 8.
    assert (hp["lr_milestones"], hp["meta_start_epoch"]) == ([8, 9], 8)
    assert cost._stage_starts(hp, 10) == [0, 8, 9]
    steps = math.ceil(training_images(spec) / int(hp["batch_size"]))
    calibration = FixedSteps(meta_from=8)
    assert cost._run_seconds(spec, calibration) == pytest.approx(steps * (8 * 0.1 + 2 * 1.0))
    # The first and last stages, then the bisection's one look, at epoch 8.
    assert calibration.asked == [("meta-ce", 0), ("meta-ce", 9), ("meta-ce", 8)]


def test_a_real_meta_learning_step_costs_more_than_its_plain_one():
    calibration = cost._Calibration("cpu")
    spec = plan(["meta-ce"], 10)[0]
    # Two forwards and a double backward against one forward and backward.
    assert calibration.step_seconds(spec, 9, "meta-ce") > \
        calibration.step_seconds(spec, 0, "meta-ce")
    assert calibration.timings == 2


def test_stage_costs_come_from_the_fewest_timings():
    asked = []

    def time_at(costs):
        def timed(epoch):
            asked.append(epoch)
            return costs[epoch]
        return timed

    starts = [0, 159, 160, 179, 180]
    jamal = {0: 1.0, 159: 1.1, 160: 9.0, 179: 10.0, 180: 9.5}
    assert cost._stage_step_seconds(starts, time_at(jamal)) == [1.0, 1.0, 9.5, 9.5, 9.5]
    assert asked == [0, 180, 160, 159]
    asked.clear()
    # The same cost throughout (within timing noise): two timings, their mean everywhere.
    assert cost._stage_step_seconds(starts, time_at({0: 2.0, 180: 2.4})) == [2.2] * 5
    assert asked == [0, 180]


def test_a_two_stage_run_prices_only_its_classifier():
    calibration = cost._Calibration("cpu")
    stage1, crt = plan(["crt"], 2)
    tau_norm = plan(["tau-norm"], 2)[1]
    assert (stage1.method, crt.method, tau_norm.method) == ("ce", "crt", "tau-norm")
    forward_per_image = calibration.step_seconds(crt, 0, "ce") / 3 / 16
    assert cost._run_seconds(crt, calibration) == pytest.approx(
        10 * training_images(crt) * forward_per_image)
    assert cost._run_seconds(tau_norm, calibration) == 0  # evaluation only


@pytest.mark.parametrize("seconds, text", [(45, "45 s"), (150, "2.5 min"), (3 * 3600, "3.0 h"),
                                           (5 * 86400, "5.0 days")])
def test_durations_read_in_the_unit_that_fits(seconds, text):
    assert cost.format_duration(seconds) == text


def test_run_prints_the_estimate_in_a_dry_run_unless_told_not_to(tmp_path):
    args = ["run", "--methods", "ce,meta-ce", "--datasets", "synthetic-lt", "--imb", "10",
            "--epochs", "2", *(a for s in TINY_SYNTHETIC for a in ("--set", s)),
            "--results", str(tmp_path / "r"), "--dry-run"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    assert "estimated cost: 2 runs, about" in result.stderr
    assert "of training steps on cpu" in result.stderr
    quiet = CliRunner().invoke(cli, [*args, "--no-estimate"])
    assert quiet.exit_code == 0 and "estimated cost" not in quiet.stderr
    assert not (tmp_path / "r").exists()
