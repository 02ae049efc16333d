"""Image sources of the training loop: in-memory tensors or the decoded-image cache.

A source serves a labelled image set as normalised float32 NCHW batches:
``len(source)``, ``source.labels`` (int64 on the device), ``source.train_batch(index,
generator)`` (augmented, random draws from ``generator``) and
``source.eval_batches(batch_size)`` (the whole set in order, unaugmented). :func:`image_source`
picks the implementation from what the dataset's :class:`~ltbench.api.LTData` holds:
uint8 tensors (CIFAR-style, :class:`~ltbench.engine.augment.DeviceImages`) or a
:class:`~ltbench.engine.image_cache.CacheSplit` (ImageNet-style, :class:`CachedImages`).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
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
    when ``resident`` (default: on the CPU, memory-mapped; on a GPU, when the split already
    has a copy there or fits in :data:`RESIDENT_FRACTION` of its free memory); the device copy
    is the split's, made once and shared by every source of it (``CacheSplit.device_copies``).
    Otherwise the pixels stay in host memory and each batch's source images are gathered and
    copied to the device (:class:`_StreamedBatches`: one batch ahead, on a background thread,
    for the batches announced with :meth:`announce`). Both give the same crops: every random
    draw and the resampling run on the device in either case.
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
            resident = device.type == "cpu" or device in split.device_copies or (
                split.pixels.nbytes <= RESIDENT_FRACTION * torch.cuda.mem_get_info(device)[0])
        if resident:
            if device not in split.device_copies:
                split.device_copies[device] = _copy_to(self._host, device)
            self._images = split.device_copies[device]
            self._heights, self._widths = self._images.heights, self._images.widths
            self._streamed = None
        else:
            self._images = None
            self._heights, self._widths = (self._host.heights.to(device),
                                           self._host.widths.to(device))
            self._streamed = _StreamedBatches(self._host, device)
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

    def announce(self, order: torch.Tensor, batch_size: int) -> None:
        """The batches to come are the views ``order.split(batch_size)``, in turn (an epoch's
        order, on the device): a streamed split starts gathering them ahead. Resident: no-op."""
        if self._streamed is not None:
            self._streamed.announce(order, batch_size)

    def settle(self) -> None:
        """Wait for a batch being gathered ahead and forget the announced ones: an epoch that
        ends, or stops on an exception, leaves no gather running behind it."""
        if self._streamed is not None:
            self._streamed.settle()

    def _source(self, index: torch.Tensor) -> tuple[PackedImages, torch.Tensor]:
        """The packed images holding ``index`` on the device, and ``index`` into them: the
        whole split when resident, else just the batch's images, re-packed and copied."""
        if self._streamed is None:
            return self._images, index
        return self._streamed.batch(index), torch.arange(index.shape[0], device=index.device)

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
        order = torch.arange(len(self), device=self.labels.device)
        self.announce(order, batch_size)
        for index in order.split(batch_size):
            crops = centre_crops(*self._source(index), self.crop_size).float().div(255)
            yield self._normalise(crops), self.labels[index]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Float NHWC in [0, 1] → float32 NCHW, ``(x - mean) / std`` as torchvision's
        ``normalize``."""
        images = images.sub(self._mean).div(self._std).permute(0, 3, 1, 2)
        return images if self.channels_last else images.contiguous()


def _copy_to(images: PackedImages, device: torch.device) -> PackedImages:
    """``images`` on ``device``: a cached split made resident."""
    return PackedImages(*(a.to(device) for a in (images.pixels, images.starts, images.heights,
                                                 images.widths)))


class _StreamedBatches:
    """Batches of a split kept in host memory, re-packed and copied to ``device`` per batch.

    After :meth:`announce` (the epoch's order, read to the host once: its one host
    synchronisation) a background thread gathers the next announced batch's pixels while the
    current one trains, into pinned memory on CUDA, and the copy to the device does not block
    the host. A batch that is not the next announced one (the same view of the order) is
    gathered on the spot, after reading its indices to the host.
    """

    def __init__(self, host: PackedImages, device: torch.device):
        self._host = host
        self._device = device
        self._pin = device.type == "cuda"
        self._gatherer: ThreadPoolExecutor | None = None
        self._batches: tuple[torch.Tensor, ...] = ()
        self._host_batches: tuple[torch.Tensor, ...] = ()
        self._next = 0
        self._pending: Future | None = None

    def announce(self, order: torch.Tensor, batch_size: int) -> None:
        if self._gatherer is None:
            self._gatherer = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="ltbench-gather")
        self._batches = order.split(batch_size)
        self._host_batches = order.cpu().split(batch_size)
        self._next = 0
        self._prefetch()

    def settle(self) -> None:
        pending, self._pending = self._pending, None
        self._batches, self._host_batches, self._next = (), (), 0
        if pending is not None:
            pending.exception()  # waits; a batch never used has no error to report

    def _prefetch(self) -> None:
        self._pending = (self._gatherer.submit(self._gather, self._host_batches[self._next])
                         if self._next < len(self._batches) else None)

    def batch(self, index: torch.Tensor) -> PackedImages:
        """The images ``index`` (device int64 [B]) re-packed in that order, on the device."""
        if self._pending is not None and _same_view(index, self._batches[self._next]):
            host = self._pending.result()
            self._next += 1
            self._prefetch()
        else:
            host = self._gather(index.cpu())
        pixels, layout = (a.to(self._device, non_blocking=True) for a in host)
        return PackedImages(pixels, *layout)

    def _gather(self, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pixels of images ``chosen`` (host int64 [B]) packed in that order, and their
        int64 [3, B] starts, heights and widths in that packing (pinned on CUDA)."""
        starts, heights, widths = (self._host.starts[chosen], self._host.heights[chosen],
                                   self._host.widths[chosen])
        sizes = heights * widths
        pixels = torch.empty((int(sizes.sum()), 3), dtype=torch.uint8, pin_memory=self._pin)
        torch.cat([self._host.pixels[start:start + size]
                   for start, size in zip(starts.tolist(), sizes.tolist())], out=pixels)
        layout = torch.stack((torch.cumsum(sizes, 0) - sizes, heights, widths))
        return pixels, layout.pin_memory() if self._pin else layout


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` is the tensor view ``b`` (same memory, shape and strides): then it holds
    the same values, known without reading them."""
    return (a.device == b.device and a.data_ptr() == b.data_ptr() and a.shape == b.shape
            and a.stride() == b.stride())


def image_source(images: torch.Tensor | CacheSplit, labels: torch.Tensor,
                 hparams: Mapping[str, Any], device: torch.device, *, augment: bool,
                 channels_last: bool) -> DeviceImages | CachedImages:
    """The source of one set of :class:`~ltbench.api.LTData`: ``augment`` selects
    the training augmentation's padding for tensors (the test set gets none); a cached split
    reads ``crop_size`` and ``color_jitter`` from ``hparams``."""
    if isinstance(images, CacheSplit):
        return CachedImages(images, labels, hparams["mean"], hparams["std"],
                            int(hparams["crop_size"]), float(hparams["color_jitter"]), device,
                            channels_last)
    pad, pad_mode = (int(hparams["pad"]), hparams["pad_mode"]) if augment else (0, "zero")
    return DeviceImages(images, labels, hparams["mean"], hparams["std"], pad, pad_mode, device,
                        channels_last)
