"""Device-resident images with batched random-crop + flip augmentation (architecture.md §6.1).

The training pipeline of kaidic/LDAM-DRW : cifar_train.py is torchvision's
``RandomCrop(32, padding=4)`` (constant-0 padding of the *unnormalised* image),
``RandomHorizontalFlip()`` (p = 0.5), ``ToTensor`` and ``Normalize(mean, std)``. Here the uint8
set is moved to the device and padded once; each batch draws per-sample offsets
``top, left`` uniform over {0, ..., 2·pad} and a flip bit with p = 0.5 from the caller's
generator, and gathers all windows in one indexing operation (the flip folded into the column
index). Conversion is the same float32 arithmetic as ``to_tensor`` + ``normalize``
(``x / 255``, ``- mean``, ``/ std``), so each output equals torchvision's for the same draws
and padded pixels become exactly ``-mean / std``. ``pad_mode="reflect"`` gives the Jamal /
MW-Net variant (4-pixel reflect padding, protocols.md §2.1).

Pixels are stored NHWC, so a gathered batch is a channels-last NCHW view for free.
No per-image Python loop and no host synchronisation.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

PAD_MODES = ("zero", "reflect")
#: Colour channels of every image the engine trains on (RGB): ``mean`` and ``std`` hold one
#: value per channel.
CHANNELS = 3


def _reflect_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source positions of a reflect-padded axis, edge not repeated (as ``np.pad`` 'reflect')."""
    index = torch.arange(-pad, size + pad, device=device).abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def pad_images(images: torch.Tensor, pad: int, pad_mode: str) -> torch.Tensor:
    """``images`` [N, C, H, W] padded by ``pad`` pixels on every side, same dtype."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f"unknown pad_mode {pad_mode!r}; known: {', '.join(PAD_MODES)}")
    if pad_mode == "zero":
        return F.pad(images, (pad, pad, pad, pad))
    height, width = images.shape[2:]
    if pad >= min(height, width):
        raise ValueError(f"reflect padding {pad} needs images larger than {pad} pixels")
    rows = _reflect_index(height, pad, images.device)
    cols = _reflect_index(width, pad, images.device)
    return images[:, :, rows[:, None], cols]


class DeviceImages:
    """A labelled uint8 image set held on ``device``, served as normalised float32 batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], pad: int, pad_mode: str, device: torch.device,
                 channels_last: bool):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != CHANNELS:
            raise ValueError(f"expected uint8 images [N, {CHANNELS}, H, W], got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.height, self.width = images.shape[2:]
        self.pad = pad
        self.channels_last = channels_last
        padded = pad_images(images.to(device), pad, pad_mode)
        self._pixels = padded.permute(0, 2, 3, 1).contiguous()  # uint8 [N, H+2p, W+2p, 3]
        self.labels = labels.to(device)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self._std = torch.tensor(std, dtype=torch.float32, device=device)
        self._rows = torch.arange(self.height, device=device)
        self._cols = torch.arange(self.width, device=device)

    def __len__(self) -> int:
        return self._pixels.shape[0]

    def draw_augmentation(self, batch_size: int, generator: torch.Generator
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample crop offsets ``top``, ``left`` (int64, uniform over 0..2·pad) and
        ``flip`` (bool, p = 0.5), drawn from ``generator`` in that order."""
        device = self._pixels.device
        top = torch.randint(0, 2 * self.pad + 1, (batch_size,), generator=generator,
                            device=device)
        left = torch.randint(0, 2 * self.pad + 1, (batch_size,), generator=generator,
                             device=device)
        flip = torch.randint(0, 2, (batch_size,), generator=generator, device=device).bool()
        return top, left, flip

    def augmented_batch(self, index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                        flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``index`` cropped at (``top``, ``left``), mirrored where ``flip``, normalised."""
        rows = top[:, None] + self._rows
        cols = left[:, None] + torch.where(flip[:, None], self.width - 1 - self._cols,
                                           self._cols)
        pixels = self._pixels[index[:, None, None], rows[:, :, None], cols[:, None, :]]
        return self._normalise(pixels), self.labels[index]

    def train_batch(self, index: torch.Tensor, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An augmented batch of images ``index`` (LongTensor on the device); the random
        draws come from ``generator`` (on the same device)."""
        return self.augmented_batch(index, *self.draw_augmentation(index.shape[0], generator))

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole set in order, unaugmented (the central window), in chunks of ``batch_size``."""
        window = self._pixels[:, self.pad:self.pad + self.height, self.pad:self.pad + self.width]
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield self._normalise(window[start:stop]), self.labels[start:stop]

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC → float32 NCHW with torchvision's ``to_tensor`` + ``normalize`` arithmetic."""
        images = pixels.float().div(255).sub(self._mean).div(self._std).permute(0, 3, 1, 2)
        return images if self.channels_last else images.contiguous()
