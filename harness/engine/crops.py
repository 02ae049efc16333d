"""Batched ImageNet-style augmentation on packed variable-size uint8 images (architecture.md §6.6).

The reference pipeline (``facebookresearch/classifier-balancing : data/dataloader.py``;
protocols.md §2.2, §2.4) is torchvision's ``RandomResizedCrop(224)``,
``RandomHorizontalFlip()``, optionally ``ColorJitter(0.4, 0.4, 0.4, 0)``, ``ToTensor`` and
``Normalize`` for training, and ``Resize(256)``, ``CenterCrop(224)`` at test. Here the images
are already resized (shorter side 256, :mod:`ltbench.engine.image_cache`) and packed as one flat
uint8 buffer of HWC pixels; every function works on a whole batch with tensor operations on the
buffer's device, without a per-image Python loop:

* :func:`draw_crop_boxes` replays ``RandomResizedCrop.get_params``
  (``pytorch/vision : torchvision/transforms/transforms.py``): up to 10 attempts of
  ``area · U(scale)`` with ``exp(U(log 3/4, log 4/3))`` aspect, ``w = round(sqrt(a·r))``,
  ``h = round(sqrt(a/r))``, first attempt that fits, top/left uniform over the valid offsets;
  otherwise the centred crop of the clamped aspect. All 10 attempts are drawn for every sample
  (torchvision draws them lazily), so the distribution is the same but not the stream;
* :func:`resized_crops` resamples each box to ``size × size`` bilinearly (half-pixel centres,
  edges clamped to the box as in crop-then-resize), mirrored where ``flip``. Unlike PIL's
  bilinear filter it does not widen its support when shrinking (no antialiasing): with a
  shorter side of 256 the largest shrink is about 1.5x, a documented deviation;
* :func:`color_jitter` is ``ColorJitter(b, c, s, hue=0)`` on float images in [0, 1]: factors
  uniform in ``[1 - x, 1 + x]``, the three operations in a random order per image, each a
  clamped blend (brightness with black, contrast with the mean grey level of the image,
  saturation with the per-pixel grey ``0.299 R + 0.587 G + 0.114 B``), as
  ``torchvision/transforms/_functional_tensor.py``;
* :func:`centre_crops` is ``CenterCrop`` (top ``round((H - size) / 2)``), an exact gather.

Randomness comes only from the generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: torchvision's RandomResizedCrop defaults.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10

#: ``rgb_to_grayscale`` weights (ITU-R 601-2 luma), torchvision/transforms/_functional_tensor.py.
GREY_WEIGHTS = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class PackedImages:
    """Variable-size uint8 RGB images packed in one buffer.

    ``pixels`` is a uint8 tensor ``[P, 3]``: image ``k`` occupies rows ``starts[k]`` to
    ``starts[k] + heights[k] · widths[k]``, row-major (HWC). ``starts``, ``heights`` and
    ``widths`` are int64 ``[N]`` on the same device as ``pixels``.
    """

    pixels: torch.Tensor
    starts: torch.Tensor
    heights: torch.Tensor
    widths: torch.Tensor

    def __len__(self) -> int:
        return self.starts.shape[0]


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator
             ) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device,
                      dtype=torch.float64) * (high - low) + low


def draw_crop_boxes(heights: torch.Tensor, widths: torch.Tensor, generator: torch.Generator,
                    scale: tuple[float, float] = CROP_SCALE,
                    ratio: tuple[float, float] = CROP_RATIO
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random-resized-crop boxes ``(top, left, height, width)`` (int64 ``[B]``) for images of
    the given sizes, distributed as ``RandomResizedCrop.get_params`` (module docstring)."""
    batch = heights.shape[0]
    height = heights.double()[:, None]
    width = widths.double()[:, None]
    target_area = height * width * _uniform((batch, CROP_ATTEMPTS), *scale, generator)
    aspect = torch.exp(_uniform((batch, CROP_ATTEMPTS), math.log(ratio[0]), math.log(ratio[1]),
                                generator))
    crop_w = torch.round(torch.sqrt(target_area * aspect))
    crop_h = torch.round(torch.sqrt(target_area / aspect))
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = fits.double().argmax(dim=1, keepdim=True)  # the first attempt that fits
    found = fits.any(dim=1)
    crop_h = crop_h.gather(1, first)[:, 0]
    crop_w = crop_w.gather(1, first)[:, 0]
    # Uniform integer offsets in 0 ... H - h, as torch.randint(0, H - h + 1).
    offsets = _uniform((batch, 2), 0.0, 1.0, generator)
    top = torch.floor(offsets[:, 0] * (height[:, 0] - crop_h + 1))
    left = torch.floor(offsets[:, 1] * (width[:, 0] - crop_w + 1))

    # Fallback: the whole image, its aspect clamped into ``ratio``, centred.
    in_ratio = width[:, 0] / height[:, 0]
    fallback_w = torch.where(in_ratio > ratio[1], torch.round(height[:, 0] * ratio[1]),
                             width[:, 0])
    fallback_h = torch.where(in_ratio < ratio[0], torch.round(width[:, 0] / ratio[0]),
                             height[:, 0])
    crop_h = torch.where(found, crop_h, fallback_h)
    crop_w = torch.where(found, crop_w, fallback_w)
    top = torch.where(found, top, torch.div(height[:, 0] - fallback_h, 2, rounding_mode="floor"))
    left = torch.where(found, left, torch.div(width[:, 0] - fallback_w, 2, rounding_mode="floor"))
    return top.long(), left.long(), crop_h.long(), crop_w.long()


def _sample_positions(start: torch.Tensor, length: torch.Tensor, size: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``size`` output pixels spanning ``length`` source pixels from ``start`` (``[B]``):
    the lower and upper source indices ``[B, size]`` and the weight of the upper one."""
    out = torch.arange(size, device=start.device, dtype=torch.float64)
    source = (out[None, :] + 0.5) * (length.double()[:, None] / size) - 0.5
    source = source.clamp(min=0.0).minimum(length.double()[:, None] - 1)
    lower = source.floor()
    upper = (lower + 1).minimum(length.double()[:, None] - 1)
    weight = (source - lower).float()
    return (start[:, None] + lower.long()), (start[:, None] + upper.long()), weight


def _gather(images: PackedImages, index: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
            ) -> torch.Tensor:
    """Pixels ``[..., B, R, C, 3]`` (uint8) at ``rows`` ``[..., B, R]`` × ``cols``
    ``[..., B, C]`` of images ``index``."""
    flat = (images.starts[index][:, None, None]
            + rows[..., :, None] * images.widths[index][:, None, None] + cols[..., None, :])
    return images.pixels[flat]


def resized_crops(images: PackedImages, index: torch.Tensor, top: torch.Tensor,
                  left: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                  flip: torch.Tensor, size: int) -> torch.Tensor:
    """Float32 ``[B, size, size, 3]`` in [0, 255]: box (``top``, ``left``, ``height``,
    ``width``) of images ``index`` resampled bilinearly, mirrored where ``flip``."""
    row_lo, row_hi, row_w = _sample_positions(top, height, size)
    col_lo, col_hi, col_w = _sample_positions(left, width, size)
    mirrored = flip[:, None]
    col_lo, col_hi, col_w = (torch.where(mirrored, col_lo.flip(1), col_lo),
                             torch.where(mirrored, col_hi.flip(1), col_hi),
                             torch.where(mirrored, col_w.flip(1), col_w))
    # The four neighbours of every output pixel in one gather: (upper row, left column), ...
    rows = torch.stack((row_lo, row_lo, row_hi, row_hi))
    cols = torch.stack((col_lo, col_hi, col_lo, col_hi))
    corners = _gather(images, index, rows, cols).float()
    row_w = row_w[:, :, None, None]
    col_w = col_w[:, None, :, None]
    upper = torch.lerp(corners[0], corners[1], col_w)
    lower = torch.lerp(corners[2], corners[3], col_w)
    return torch.lerp(upper, lower, row_w)


def centre_crops(images: PackedImages, index: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[B, size, size, 3]``: the centred ``size × size`` window of images ``index``
    (torchvision ``CenterCrop``: top ``int(round((H - size) / 2))``, left likewise)."""
    heights, widths = images.heights[index], images.widths[index]
    if bool((heights < size).any() | (widths < size).any()):
        raise ValueError(f"centre crop {size} is larger than an image of the batch")
    top = torch.round((heights - size).double() / 2).long()
    left = torch.round((widths - size).double() / 2).long()
    span = torch.arange(size, device=heights.device)
    return _gather(images, index, top[:, None] + span, left[:, None] + span)


def color_jitter(images: torch.Tensor, strength: float, generator: torch.Generator
                 ) -> torch.Tensor:
    """``ColorJitter(strength, strength, strength, hue=0)`` of float ``[B, H, W, 3]`` images in
    [0, 1], per image (module docstring); returns a new tensor.

    Each of the three operations is an affine map of a pixel's RGB with a per-image matrix
    (``f·I``, plus ``(1 - f)·mean grey`` for contrast, or ``f·I + (1 - f)·1wᵀ`` for saturation,
    w the grey weights), so every step is one batched matrix product and a clamp."""
    batch = images.shape[0]
    factors = _uniform((batch, 3), 1.0 - strength, 1.0 + strength, generator).float()
    order = torch.rand((batch, 3), generator=generator, device=generator.device).argsort(dim=1)
    grey = torch.tensor(GREY_WEIGHTS, dtype=images.dtype, device=images.device)
    identity = torch.eye(3, dtype=images.dtype, device=images.device)
    pixels = images.reshape(batch, -1, 3)
    for slot in range(3):
        operation = order[:, slot]
        factor = factors.gather(1, operation[:, None])[:, 0]
        mean_grey = (pixels @ grey).mean(dim=1)
        towards_grey = torch.where(operation == 2, 1 - factor, torch.zeros_like(factor))
        matrix = (factor[:, None, None] * identity
                  + towards_grey[:, None, None] * grey.expand(3, 3))
        offset = torch.where(operation == 1, (1 - factor) * mean_grey,
                             torch.zeros_like(factor))
        pixels = torch.baddbmm(offset[:, None, None].expand(batch, 1, 3), pixels,
                               matrix.transpose(1, 2)).clamp_(0.0, 1.0)
    return pixels.reshape(images.shape)
