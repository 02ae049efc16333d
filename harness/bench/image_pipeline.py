"""Images per second of the plain PIL / torchvision pipeline and of ltbench's cached pipeline.

Not a test: run it by hand on the machine you care about (``--device cuda`` on a GPU box)::

    python -m ltbench.bench.image_pipeline --images 300 --jobs 2

It writes ``--images`` JPEGs of about 500x375 (ImageNet's typical size; alternating landscape
and portrait, smooth content plus noise, quality 90) into a scratch folder, then measures, on
the same files in one process:

* ``pil``: the reference training transform of ``facebookresearch/classifier-balancing :
  data/dataloader.py`` (PIL decode, ``RandomResizedCrop(224)``, flip, ``ColorJitter(0.4, 0.4,
  0.4)``, ``ToTensor``, ``Normalize``) through a ``DataLoader``, in the main process and with
  ``--jobs`` workers;
* ``prepare``: the one-time ``ltbench data prepare`` decode + resize into the cache, ``--jobs``
  processes;
* ``cached``: ltbench's training batches from that cache (batched crop + flip + jitter on
  ``--device``), what every epoch costs afterwards;
* ``streamed``: the same with the cache kept in host memory (as a split too large for the GPU),
  each announced epoch's batches gathered one ahead on a background thread and copied.

Each timed section runs after one untimed warm-up pass.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_images(folder: Path, count: int, seed: int) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        height, width = (375, 500) if k % 2 == 0 else (500, 375)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        smooth = np.stack([127 + 100 * np.sin(xs / (20 + 7 * c) + ys / 31 + phase[c])
                           for c in range(3)], axis=-1)
        pixels = np.clip(smooth + rng.normal(0, 12, size=(height, width, 3)), 0, 255)
        path = f"images/{k:05d}.jpg"
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / path, quality=90)
        paths.append(path)
    return paths


class PilImages(torch.utils.data.Dataset):
    """The plain reference path: one PIL decode and torchvision transform per sample."""

    def __init__(self, root: Path, paths: list[str]):
        import torchvision.transforms as T

        self.root, self.paths = root, paths
        self.transform = T.Compose([
            T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0),
            T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        with open(self.root / self.paths[index], "rb") as handle:
            image = Image.open(handle).convert("RGB")
        return self.transform(image), index


def time_pil(root: Path, paths: list[str], batch_size: int, jobs: int) -> float:
    loader = torch.utils.data.DataLoader(PilImages(root, paths), batch_size=batch_size,
                                         shuffle=True, num_workers=jobs,
                                         persistent_workers=jobs > 0)
    for _ in loader:  # warm-up: worker start-up and file cache
        pass
    started = time.perf_counter()
    for _ in loader:
        pass
    return len(paths) / (time.perf_counter() - started)


def time_cached(root: Path, paths: list[str], batch_size: int, jobs: int, device: torch.device,
                epochs: int) -> tuple[float, float, float]:
    from ltbench.engine.image_cache import ImageList, open_split, prepare_split
    from ltbench.engine.sources import CachedImages

    images = ImageList(root, tuple(paths), np.zeros(len(paths), dtype=np.int64))
    started = time.perf_counter()
    prepare_split(images, root / "cache", jobs=jobs, stream=io.StringIO())
    prepare_rate = len(paths) / (time.perf_counter() - started)
    split = open_split(images, root / "cache", 256, "prepare")
    rates = []
    for resident in (True, False):
        source = CachedImages(split, torch.from_numpy(images.labels), (0.485, 0.456, 0.406),
                              (0.229, 0.224, 0.225), 224, 0.4, device, channels_last=False,
                              resident=resident)
        generator = torch.Generator(device=device).manual_seed(0)

        def epoch() -> None:
            order = torch.randperm(len(source), generator=generator, device=device)
            source.announce(order, batch_size)  # as the training loop does
            for index in order.split(batch_size):
                source.train_batch(index, generator)
            if device.type == "cuda":
                torch.cuda.synchronize()

        epoch()
        started = time.perf_counter()
        for _ in range(epochs):
            epoch()
        rates.append(epochs * len(paths) / (time.perf_counter() - started))
    return prepare_rate, *rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=2, help="DataLoader / prepare processes")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of the cached path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder [default: a temporary one, removed afterwards]")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="ltbench-bench-"))
    try:
        paths = write_images(root, args.images, seed=0)
        pil_single_rate = time_pil(root, paths, args.batch_size, 0)
        pil_rate = time_pil(root, paths, args.batch_size, args.jobs)
        prepare_rate, cached_rate, streamed_rate = time_cached(root, paths, args.batch_size, args.jobs,
                                                torch.device(args.device), args.epochs)
    finally:
        if args.workdir is None:
            shutil.rmtree(root)
    figures = {"images": args.images, "jobs": args.jobs, "device": args.device,
               "torch_threads": torch.get_num_threads(),
               "pil_single_process_images_per_s": round(pil_single_rate, 1),
               "pil_images_per_s": round(pil_rate, 1),
               "prepare_images_per_s": round(prepare_rate, 1),
               "cached_images_per_s": round(cached_rate, 1),
               "streamed_images_per_s": round(streamed_rate, 1)}
    print(f"plain PIL path (main process):   {pil_single_rate:8.1f} images/s")
    print(f"plain PIL path ({args.jobs} workers):      {pil_rate:8.1f} images/s")
    print(f"one-time prepare ({args.jobs} processes):   {prepare_rate:8.1f} images/s")
    print(f"cached path on {args.device} ({torch.get_num_threads()} threads):  "
          f"{cached_rate:8.1f} images/s ({cached_rate / pil_rate:.1f}x the PIL path with "
          f"{args.jobs} workers)")
    print(f"streamed from host memory:       {streamed_rate:8.1f} images/s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
