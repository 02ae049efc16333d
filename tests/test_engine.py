"""Training engine: ResNet-32, batched augmentation vs torchvision, LR schedule, the loop."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import stats

from ltbench.api import LTData, Method
from ltbench.engine.augment import DeviceImages
from ltbench.engine.models import BasicBlock, NormedLinear, build_backbone
from ltbench.engine.progress import RunProgress
from ltbench.engine.train import learning_rate, train_alone
from ltbench.datasets.cifar_protocols import LDAM_CIFAR
from ltbench.hparams import resolve

CPU = torch.device("cpu")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_uint8(shape, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator(seed))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- models -------------------------------------------------------------------------------

def test_resnet32_parameter_counts():
    assert count_parameters(build_backbone("resnet32", 10, "linear", generator(0))) == 464_154
    # NormedLinear has the same 64x10 weight and no bias.
    assert count_parameters(build_backbone("resnet32", 10, "cosine", generator(0))) == 464_144
    assert count_parameters(build_backbone("resnet32", 100, "linear", generator(0))) == 470_004  # 464,154 - 650 + 6,500


def test_resnet8_is_the_same_network_with_one_block_per_stage():
    # conv1 + BN 432 + 32; stage 1 (16→16) 2·2,304 + 2·32; stage 2 (16→32, stride 2)
    # 4,608 + 9,216 + 2·64; stage 3 (32→64) 18,432 + 36,864 + 2·128; head 64·10 + 10.
    model = build_backbone("resnet8", 10, "linear", generator(0))
    assert count_parameters(model) == 464 + 4_672 + 13_952 + 55_552 + 650 == 75_290
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3)] == [1, 1, 1]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_backbone_or_head_is_rejected():
    with pytest.raises(ValueError, match="backbone"):
        build_backbone("resnet18", 10, "linear", generator(0))
    with pytest.raises(ValueError, match="head"):
        build_backbone("resnet32", 10, "softmax", generator(0))


def test_cosine_head_outputs_cosine_similarities():
    model = build_backbone("resnet32", 7, "cosine", generator(3)).eval()
    head = model.head
    assert isinstance(head, NormedLinear) and tuple(head.weight.shape) == (64, 7)
    # uniform(-1, 1) then renorm_(2, 1, 1e-5).mul_(1e5): every column has unit norm.
    np.testing.assert_allclose(head.weight.detach().norm(dim=0).numpy(), 1.0, rtol=1e-5)
    x = torch.randn(5, 3, 32, 32, generator=generator(4))
    with torch.no_grad():
        logits = model(x).double().numpy()
        features = model.features(x).double().numpy()
    weight = head.weight.detach().double().numpy()
    expected = ((features / np.linalg.norm(features, axis=1, keepdims=True))
                @ (weight / np.linalg.norm(weight, axis=0, keepdims=True)))
    assert features.shape == (5, 64)
    np.testing.assert_allclose(logits, expected, atol=1e-6)
    assert np.abs(logits).max() <= 1.0 + 1e-6


def test_initialisation_follows_the_generator_only():
    rng_state = torch.random.get_rng_state()
    first = build_backbone("resnet32", 10, "linear", generator(11)).state_dict()
    again = build_backbone("resnet32", 10, "linear", generator(11)).state_dict()
    other = build_backbone("resnet32", 10, "linear", generator(12)).state_dict()
    assert torch.equal(rng_state, torch.random.get_rng_state())  # global RNG untouched
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])
    assert not torch.equal(first["head.bias"], other["head.bias"])


def test_initialisation_distributions():
    state = build_backbone("resnet32", 10, "linear", generator(5)).state_dict()
    conv = state["layer3.4.conv2.weight"]  # 36,864 draws, fan_in 64*9
    assert conv.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.02)
    assert state["head.weight"].std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.1)
    assert state["head.bias"].abs().max().item() <= 1 / 8  # uniform(±1/sqrt(64))
    assert torch.equal(state["bn1.weight"], torch.ones(16))
    assert torch.equal(state["layer2.0.bn1.bias"], torch.zeros(32))
    assert torch.equal(state["layer1.0.bn1.running_var"], torch.ones(16))


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    block = BasicBlock(16, 32, stride=2)
    assert count_parameters(block.shortcut) == 0
    x = torch.randn(2, 16, 8, 8, generator=generator(6))
    out = block.shortcut(x)
    assert tuple(out.shape) == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()
    same = BasicBlock(16, 16, stride=1)
    assert torch.equal(same.shortcut(x), x)


# --- augmentation -------------------------------------------------------------------------

def torchvision_view(image: torch.Tensor, top: int, left: int, flip: bool, pad: int,
                     padding_mode: str) -> torch.Tensor:
    """The LDAM-DRW transform on a PIL image for given draws: pad, crop, flip, to_tensor,
    normalize."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    pil = TF.pad(pil, pad, fill=0, padding_mode=padding_mode)
    pil = TF.crop(pil, top, left, image.shape[1], image.shape[2])
    if flip:
        pil = TF.hflip(pil)
    return TF.normalize(TF.to_tensor(pil), MEAN, STD)


@pytest.mark.parametrize("pad_mode, padding_mode", [("zero", "constant"), ("reflect", "reflect")])
def test_augmentation_equals_torchvision_on_the_same_draws(pad_mode, padding_mode):
    images = random_uint8((24, 3, 32, 32), seed=7)
    labels = torch.arange(24) % 3
    data = DeviceImages(images, labels, MEAN, STD, 4, pad_mode, CPU, channels_last=False)
    index = torch.randperm(24, generator=generator(8))[:20]
    top, left, flip = data.draw_augmentation(20, generator(9))
    assert flip.any() and (~flip).any() and top.min() < 4 < top.max()
    x, y = data.augmented_batch(index, top, left, flip)
    assert x.dtype == torch.float32 and tuple(x.shape) == (20, 3, 32, 32)
    assert torch.equal(y, labels[index])
    for k in range(20):
        reference = torchvision_view(images[index[k]], int(top[k]), int(left[k]),
                                     bool(flip[k]), 4, padding_mode)
        assert (x[k] - reference).abs().max().item() < 1e-6
    # train_batch makes exactly these draws from the generator it is given.
    x_again, _ = data.train_batch(index, generator(9))
    assert torch.equal(x_again, x)


def test_crop_offsets_uniform_and_flip_rate_half():
    data = DeviceImages(random_uint8((1, 3, 8, 8), seed=1), torch.zeros(1, dtype=torch.int64),
                        MEAN, STD, 4, "zero", CPU, channels_last=False)
    draws = 81_000
    top, left, flip = data.draw_augmentation(draws, generator(10))
    assert top.min() == 0 and top.max() == 8 and left.min() == 0 and left.max() == 8
    joint = np.bincount((top * 9 + left).numpy(), minlength=81)
    assert stats.chisquare(joint).pvalue > 1e-3  # uniform over {0..8}^2, independent
    assert abs(flip.double().mean().item() - 0.5) < 4 * math.sqrt(0.25 / draws)


def test_padded_pixels_are_minus_mean_over_std():
    images = torch.full((2, 3, 32, 32), 200, dtype=torch.uint8)
    data = DeviceImages(images, torch.zeros(2, dtype=torch.int64), MEAN, STD, 4, "zero", CPU,
                        channels_last=False)
    top, left = torch.tensor([0, 8]), torch.tensor([0, 8])
    x, _ = data.augmented_batch(torch.tensor([0, 1]), top, left, torch.tensor([False, True]))
    border = ((torch.zeros(3) - torch.tensor(MEAN)) / torch.tensor(STD))[:, None, None]
    inside = ((torch.tensor(200.0) / 255 - torch.tensor(MEAN)) / torch.tensor(STD))[:, None, None]
    assert torch.equal(x[0, :, :4, :], border.expand(3, 4, 32))    # top rows, crop at (0, 0)
    assert torch.equal(x[0, :, :, :4], border.expand(3, 32, 4))    # left columns
    assert torch.equal(x[1, :, 28:, :], border.expand(3, 4, 32))   # bottom rows, crop at (8, 8)
    assert torch.equal(x[1, :, :, :4], border.expand(3, 32, 4))    # right columns, mirrored
    assert torch.equal(x[0, :, 4:, 4:], inside.expand(3, 28, 28))


def test_eval_batches_are_unaugmented_and_cover_the_set_in_order():
    images = random_uint8((10, 3, 32, 32), seed=12)
    labels = torch.arange(10)
    data = DeviceImages(images, labels, MEAN, STD, 4, "reflect", CPU, channels_last=False)
    batches = list(data.eval_batches(4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([x for x, _ in batches])
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    reference = torch.stack([TF.normalize(TF.to_tensor(Image.fromarray(
        image.permute(1, 2, 0).numpy())), MEAN, STD) for image in images])
    assert (x - reference).abs().max().item() < 1e-6


# --- schedule -----------------------------------------------------------------------------

def test_learning_rate_ldam_drw_schedule():
    hparams = resolve(LDAM_CIFAR, {}, {})
    expected = {0: 0.02, 1: 0.04, 2: 0.06, 3: 0.08, 4: 0.1, 5: 0.1, 100: 0.1, 159: 0.1,
                160: 1e-3, 179: 1e-3, 180: 1e-5, 199: 1e-5}
    for epoch, lr in expected.items():
        assert learning_rate(epoch, hparams) == pytest.approx(lr, rel=1e-12, abs=0), epoch


# --- training loop ------------------------------------------------------------------------

class RecordingCE(Method):
    """Plain cross-entropy that records the size of every batch it sees."""

    def __init__(self, class_counts, hparams):
        super().__init__(class_counts, hparams)
        self.batch_sizes: list[int] = []

    def loss(self, logits, targets, epoch):
        self.batch_sizes.append(targets.shape[0])
        return F.cross_entropy(logits, targets)


class NaNLoss(Method):
    def loss(self, logits, targets, epoch):
        return logits.sum() * math.nan


def tiny_data() -> LTData:
    """Two classes of 8x8 images (30 dark, 10 bright training images), 10 + 10 test images."""
    def images(labels: torch.Tensor, seed: int) -> torch.Tensor:
        noise = random_uint8((len(labels), 3, 8, 8), seed) // 4
        return noise + (labels * 150).to(torch.uint8)[:, None, None, None]

    train_labels = torch.tensor([0] * 30 + [1] * 10)
    test_labels = torch.tensor([0, 1] * 10)
    return LTData(train_images=images(train_labels, 20), train_labels=train_labels,
                  test_images=images(test_labels, 21), test_labels=test_labels,
                  class_counts=[30, 10], train_indices=np.arange(40))


TINY_HPARAMS = {
    "backbone": "resnet32", "epochs": 3, "batch_size": 16, "lr": 0.05, "momentum": 0.9,
    "nesterov": False, "weight_decay": 2e-4, "warmup_epochs": 1, "lr_milestones": [2],
    "lr_decay": 0.1, "pad": 2, "pad_mode": "zero", "mean": list(MEAN), "std": list(STD),
    "eval_every": 2,
}


def run_tiny(seed: int, method_class=RecordingCE):
    data = tiny_data()
    method = method_class(torch.tensor(data.class_counts, dtype=torch.float64), TINY_HPARAMS)
    progress = RunProgress("[1/1]", stream=io.StringIO())
    return train_alone(data, method, TINY_HPARAMS, seed, CPU, progress), method, progress


def test_training_is_reproducible_and_keeps_the_partial_batch():
    first, method, progress = run_tiny(seed=0)
    again, _, _ = run_tiny(seed=0)
    other, _, _ = run_tiny(seed=1)

    assert first.status == "ok" and first.error is None and first.epochs_completed == 3
    numbers = ["epoch", "lr", "train_loss", "train_acc", "test_acc"]  # not the wall times
    pd.testing.assert_frame_equal(first.curves[numbers], again.curves[numbers],
                                  check_exact=True)
    assert np.array_equal(first.per_class_correct, again.per_class_correct)
    assert not np.array_equal(first.curves["train_loss"], other.curves["train_loss"])

    # ceil(40 / 16) = 3 steps per epoch: 16 + 16 + 8, the last partial batch included.
    assert method.batch_sizes == [16, 16, 8] * 3
    assert progress.total == 9 and progress.done == 9

    curves = first.curves
    assert list(curves.columns) == numbers + ["train_s", "eval_s"]
    assert (curves["train_s"] > 0).all() and curves["eval_s"].isna().tolist() == \
        [True, False, False]
    assert curves["epoch"].tolist() == [0, 1, 2]
    assert curves["lr"].tolist() == pytest.approx([0.05, 0.05, 0.005], rel=1e-12)
    # eval_every = 2: after epoch 1, and always after the last epoch.
    assert math.isnan(curves["test_acc"][0]) and curves["test_acc"][1:].notna().all()
    correct_counts = curves["train_acc"] * 40 / 100
    assert np.allclose(correct_counts, correct_counts.round())
    assert first.per_class_total.tolist() == [10, 10]
    assert first.per_class_correct.dtype == np.int64
    last_acc = 100 * np.mean(first.per_class_correct / first.per_class_total)
    assert curves["test_acc"][2] == pytest.approx(last_acc)
    assert first.best_top1_acc == curves["test_acc"].max()
    assert curves["test_acc"][first.best_epoch] == first.best_top1_acc


def test_non_finite_loss_stops_as_diverged():
    result, _, progress = run_tiny(seed=0, method_class=NaNLoss)
    assert result.status == "diverged"
    assert result.error == "non-finite training loss in epoch 0"
    assert result.epochs_completed == 0
    assert len(result.curves) == 1 and math.isnan(result.curves["train_loss"][0])
    assert result.best_epoch is None and math.isnan(result.best_top1_acc)
    assert result.per_class_correct.tolist() == [0, 0]
    assert progress.done == 3  # the epoch ran to its end before the (single) host sync
