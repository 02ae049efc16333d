"""Cost of one meta-re-weighting training step relative to a plain cross-entropy step.

Times full training steps (``Method.training_loss``, backward, SGD step) of the CIFAR ResNet-32
on batch-100 CIFAR-shaped random uint8 images (values 1 ... 255, never all zeros) with the
Jamal protocol's augmentation, for ``ce`` and for the stage-2 steps of ``meta-ce`` (Jamal et
al.), ``l2rw`` and ``mwn``, whose look-ahead adds a meta batch of 100. Prints the median seconds
per step and the ratio to ``ce``::

    python -m ltbench.bench.meta_step [--device cpu] [--steps 10] [--threads N]

On a machine shared with other processes, ``--threads 1`` avoids OpenMP oversubscription,
which can slow PyTorch's CPU kernels down by an order of magnitude.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ltbench import registry
from ltbench.api import StepContext
from ltbench.engine.augment import DeviceImages
from ltbench.engine.models import build_backbone
from ltbench.engine.steps import Numerics, build_optimizer
from ltbench.engine.train import MetaBatches
from ltbench.hparams import resolve_run
from ltbench.spec import derive_seed

METHODS = ("ce", "meta-ce", "l2rw", "mwn")
#: CIFAR-10-LT IF 100 under the Jamal construction (datasets.md §2.4).
CLASS_COUNTS = [4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49]


def random_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return images, torch.arange(count) % len(CLASS_COUNTS)


def time_steps(method_name: str, device: torch.device, steps: int, warmup: int) -> list[float]:
    """Seconds of each of ``steps`` training steps after ``warmup`` untimed ones, all in the
    method's stage 2 (epoch 199 for ``meta-ce``)."""
    hparams = resolve_run(registry.load("dataset", "cifar10-lt"),
                          registry.load("method", method_name), {"protocol": "jamal"})
    method = registry.load("method", method_name)(
        torch.tensor(CLASS_COUNTS, dtype=torch.float64, device=device), hparams)
    on_cuda = device.type == "cuda"
    model = build_backbone("resnet32", len(CLASS_COUNTS), method.head,
                           torch.Generator().manual_seed(0)).to(device)
    optimizer = build_optimizer(model, hparams)
    generator = torch.Generator(device=device).manual_seed(derive_seed(0, "data"))

    def device_images(seed: int) -> DeviceImages:
        return DeviceImages(*random_images(100, seed), hparams["mean"], hparams["std"],
                            int(hparams["pad"]), hparams["pad_mode"], device,
                            channels_last=on_cuda)

    train_images = device_images(1)
    meta_batches = MetaBatches(device_images(2), int(hparams.get("meta_batch_size", 100)),
                               torch.Generator(device=device).manual_seed(3))
    step = StepContext(lr=1e-3, precision=Numerics.for_device(device).precision(),
                       meta_batch=meta_batches, seed=0)
    epoch = int(hparams["epochs"]) - 1
    model.train()
    index = torch.arange(100, device=device)
    times = []
    for k in range(warmup + steps):
        started = time.perf_counter()
        inputs, targets = train_images.train_batch(index, generator)
        loss, _, _ = method.training_loss(model, inputs, targets, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_cuda:
            torch.cuda.synchronize()
        if k >= warmup:
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"batch 100 + meta batch 100, {args.steps} timed steps after {args.warmup}")
    medians = {name: statistics.median(time_steps(name, device, args.steps, args.warmup))
               for name in METHODS}
    for name, seconds in medians.items():
        print(f"{name:<8} {seconds * 1000:9.1f} ms/step   x{seconds / medians['ce']:.2f} of ce")


if __name__ == "__main__":
    main()
