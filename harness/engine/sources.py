"""Image sources of the training loop: in-memory tensors or the decoded-image cache.

A source serves a labelled image set as normalised float32 NCHW batches:
``len(source)``, ``source.labels`` (int64 on the device), ``source.train_batch(index,
generator)`` (augmented, random draws from ``generator``) and
``source.eval_batches(batch_size)`` (the whole set in order, unaugmented). :func:`image_source`
picks the implementation from what the dataset's :class:`~ltbench.datasets.base.LTData` holds:
uint8 tensors (CIFAR-style, :class:`~ltbench.engine.augment.DeviceImages`) or a
:class:`~ltbench.engine.image_cache.CacheSplit` (ImageNet-style, :class:`CachedImages`).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch

from .augment import DeviceImages
from .crops import PackedImages, centre_crops, color_jitter, draw_crop_boxes, resized_crops
from .image_cache import CacheSplit


#: A cached split is copied to the GPU when it takes at most this fraction of the free memory;
#: a larger one (iNaturalist 2018: ~114 GB) stays in host memory and is streamed per batch.
RESIDENT_FRACTION = 0.5


class CachedImages:
    """A cached split served with the ImageNet protocols' augmentation (:mod:`.crops`).

    Training: ``RandomResizedCrop(crop_size)`` + horizontal flip (p = 0.5) + ``ColorJitter``
    of ``jitter`` (none when 0); evaluation: ``CenterCrop(crop_size)`` of the cached image,
    which is already ``Resize(short_side)``. The packed pixels live on the training device
    when ``resident`` (default: on the CPU, memory-mapped; on a GPU, when they fit in
    :data:`RESIDENT_FRACTION` of its free memory); otherwise they stay in host memory and each
    batch's source images are copied to the device (one host synchronisation per batch, for
    the batch's indices). Both give the same crops: every random draw and the resampling run
    on the device in either case.
    """

    def __init__(self, split: CacheSplit, labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], crop_size: int, jitter: float, device: torch.device,
                 channels_last: bool, resident: bool | None = None):
        if crop_size > split.short_side:
            raise ValueError(f"crop_size {crop_size} exceeds the cache's short side "
                             f"{split.short_side}")
        if len(labels) != len(split.starts):
            raise ValueError(f"{len(labels)} labels for {len(split.starts)} cached images")
        self._host = PackedImages(torch.from_numpy(split.pixels),
                                  *(torch.from_numpy(a) for a in (split.starts, split.heights,
                                                                  split.widths)))
        if resident is None:
            resident = device.type == "cpu" or (
                split.pixels.nbytes <= RESIDENT_FRACTION * torch.cuda.mem_get_info(device)[0])
        self._heights, self._widths = (self._host.heights.to(device),
                                       self._host.widths.to(device))
        self._images = PackedImages(self._host.pixels.to(device),
                                    self._host.starts.to(device), self._heights,
                                    self._widths) if resident else None
        self.labels = labels.to(device)
        self.crop_size = crop_size
        self.jitter = jitter
        self.channels_last = channels_last
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self._std = torch.tensor(std, dtype=torch.float32, device=device)

    def __len__(self) -> int:
        return len(self._host)

    @property
    def resident(self) -> bool:
        """Whether the pixels are on the training device (else streamed per batch)."""
        return self._images is not None

    def _source(self, index: torch.Tensor) -> tuple[PackedImages, torch.Tensor]:
        """The packed images holding ``index`` on the device, and ``index`` into them: the
        whole split when resident, else just the batch's images, re-packed and copied."""
        if self._images is not None:
            return self._images, index
        device = index.device
        chosen = index.cpu()
        starts, heights, widths = (self._host.starts[chosen], self._host.heights[chosen],
                                   self._host.widths[chosen])
        sizes = heights * widths
        pixels = torch.cat([self._host.pixels[start:start + size]
                            for start, size in zip(starts.tolist(), sizes.tolist())])
        packed = PackedImages(pixels.to(device),
                              *(a.to(device) for a in (torch.cumsum(sizes, 0) - sizes,
                                                       heights, widths)))
        return packed, torch.arange(len(chosen), device=device)

    def train_batch(self, index: torch.Tensor, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random-resized crops of images ``index``, flipped and jittered; draws from
        ``generator`` in the order boxes, flips, jitter."""
        boxes = draw_crop_boxes(self._heights[index], self._widths[index], generator)
        flip = torch.randint(0, 2, (index.shape[0],), generator=generator,
                             device=generator.device).bool()
        crops = resized_crops(*self._source(index), *boxes, flip, self.crop_size).div_(255)
        if self.jitter > 0:
            crops = color_jitter(crops, self.jitter, generator)
        return self._normalise(crops), self.labels[index]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Centre crops of the whole set in order, in chunks of ``batch_size``."""
        for start in range(0, len(self), batch_size):
            index = torch.arange(start, min(start + batch_size, len(self)),
                                 device=self.labels.device)
            crops = centre_crops(*self._source(index), self.crop_size).float().div(255)
            yield self._normalise(crops), self.labels[index]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Float NHWC in [0, 1] → float32 NCHW, ``(x - mean) / std`` as torchvision's
        ``normalize``."""
        images = images.sub(self._mean).div(self._std).permute(0, 3, 1, 2)
        return images if self.channels_last else images.contiguous()


def image_source(images: torch.Tensor | CacheSplit, labels: torch.Tensor,
                 hparams: Mapping[str, Any], device: torch.device, *, augment: bool,
                 channels_last: bool) -> DeviceImages | CachedImages:
    """The source of one set of :class:`~ltbench.datasets.base.LTData`: ``augment`` selects
    the training augmentation's padding for tensors (the test set gets none); a cached split
    reads ``crop_size`` and ``color_jitter`` from ``hparams``."""
    if isinstance(images, CacheSplit):
        return CachedImages(images, labels, hparams["mean"], hparams["std"],
                            int(hparams["crop_size"]), float(hparams["color_jitter"]), device,
                            channels_last)
    pad, pad_mode = (int(hparams["pad"]), hparams["pad_mode"]) if augment else (0, "zero")
    return DeviceImages(images, labels, hparams["mean"], hparams["std"], pad, pad_mode, device,
                        channels_last)
