"""The decoded-image cache and the batched crops against torchvision's PIL reference pipeline.

Exact where the arithmetic is the same (the cache is torchvision's ``Resize`` to the pixel, the
test-time centre crop equals ``Resize + CenterCrop + ToTensor + Normalize``, a crop box resamples
as torchvision's tensor ``resized_crop`` without antialiasing, colour jitter as torchvision's
functional ops); statistical for the random draws (``RandomResizedCrop`` boxes and whole-pipeline
pixel statistics over many draws). torchvision's transforms draw from the global torch RNG, so
those draws run inside ``torch.random.fork_rng``.
"""

from __future__ import annotations

import io
import math
import threading

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from image_fixtures import count_device_copies, write_jpeg
from PIL import Image
from scipy.stats import ks_2samp

from ltbench.engine import image_cache, sources
from ltbench.engine.crops import (PackedImages, color_jitter, draw_crop_boxes, resized_crops)
from ltbench.engine.image_cache import ImageList, open_split, prepare_split, resized_size
from ltbench.engine.sources import CachedImages
from ltbench.errors import BadInput

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZES = [(30, 40), (44, 33), (36, 36), (28, 52), (61, 47), (25, 90), (40, 30)]
SHORT = 36


@pytest.fixture()
def image_list(tmp_path) -> ImageList:
    rng = np.random.default_rng(0)
    paths = []
    for k, (height, width) in enumerate(SIZES):
        path = f"img/{k}.jpg"
        write_jpeg(tmp_path / path, height, width, k, rng)
        paths.append(path)
    # One grey-scale JPEG: the loader must convert it to RGB.
    Image.fromarray(rng.integers(0, 256, (33, 45), dtype=np.uint8), "L").save(
        tmp_path / "img/grey.jpg")
    paths.append("img/grey.jpg")
    return ImageList(tmp_path, tuple(paths), np.arange(len(paths), dtype=np.int64))


def pil(path) -> Image.Image:
    with open(path, "rb") as handle:
        return Image.open(handle).convert("RGB")


def cached(images: ImageList, tmp_path, jobs: int = 1):
    prepare_split(images, tmp_path / "cache", short_side=SHORT, jobs=jobs,
                  stream=io.StringIO())
    return open_split(images, tmp_path / "cache", SHORT, "prepare")


def cached_image(split, k: int) -> np.ndarray:
    start, height, width = split.starts[k], split.heights[k], split.widths[k]
    return np.asarray(split.pixels[start:start + height * width]).reshape(height, width, 3)


def test_resized_size_is_torchvisions():
    assert resized_size(375, 500, 256) == (256, 341)   # int(256 * 500 / 375) = 341
    assert resized_size(500, 375, 256) == (341, 256)
    assert resized_size(300, 300, 256) == (256, 256)


def test_cache_round_trips_exactly_to_torchvisions_resize(image_list, tmp_path):
    split = cached(image_list, tmp_path)
    for k, path in enumerate(image_list.paths):
        expected = np.asarray(T.Resize(SHORT)(pil(tmp_path / path)))
        assert np.array_equal(cached_image(split, k), expected), path


def test_parallel_prepare_writes_the_same_bytes(image_list, tmp_path, monkeypatch):
    monkeypatch.setattr(image_cache, "CHUNK_IMAGES", 3)
    serial = cached(image_list, tmp_path / "serial")
    parallel = cached(image_list, tmp_path / "parallel", jobs=2)
    assert np.array_equal(np.asarray(serial.pixels), np.asarray(parallel.pixels))


def test_prepare_resumes_only_unfinished_chunks(image_list, tmp_path, monkeypatch):
    monkeypatch.setattr(image_cache, "CHUNK_IMAGES", 3)
    folder = tmp_path / "cache"
    assert prepare_split(image_list, folder, short_side=SHORT, stream=io.StringIO())
    reference = (folder / "pixels.u8").read_bytes()
    # An interrupted run: chunk 1 never finished (no marker, zeroed bytes), no completion.
    (folder / "complete.json").unlink()
    (folder / "done" / "00001").unlink()
    index = np.load(folder / "index.npz")
    first = int(index["starts"][3])
    last = int(index["starts"][5] + index["heights"][5] * index["widths"][5])
    damaged = bytearray(reference)
    damaged[3 * first:3 * last] = bytes(3 * (last - first))
    # A mark inside finished chunk 0 must survive: it proves that chunk was not rewritten.
    other = 3 * int(index["starts"][1])
    damaged[other] = 7 if reference[other] != 7 else 8
    (folder / "pixels.u8").write_bytes(bytes(damaged))
    with pytest.raises(BadInput, match="no complete image cache"):
        open_split(image_list, folder, SHORT, "ltbench data prepare x")
    log = io.StringIO()
    assert prepare_split(image_list, folder, short_side=SHORT, stream=log)
    repaired = (folder / "pixels.u8").read_bytes()
    assert repaired[3 * first:3 * last] == reference[3 * first:3 * last]
    assert repaired[other] == damaged[other] != reference[other]
    assert repaired[other + 1:] == reference[other + 1:]
    assert log.getvalue().count("cached 8 images") == 1
    # Complete now: nothing to do.
    log = io.StringIO()
    assert not prepare_split(image_list, folder, short_side=SHORT, label="x", stream=log)
    assert log.getvalue() == f"x already cached in {folder}\n"


def test_a_cache_of_another_list_is_refused_then_rebuilt(image_list, tmp_path):
    cached(image_list, tmp_path)
    changed = ImageList(image_list.root, image_list.paths, image_list.labels[::-1].copy())
    with pytest.raises(BadInput, match="made from another list or short side"):
        open_split(changed, tmp_path / "cache", SHORT, "prepare")
    with pytest.raises(BadInput, match="made from another list or short side"):
        open_split(image_list, tmp_path / "cache", SHORT + 1, "prepare")
    assert prepare_split(changed, tmp_path / "cache", short_side=SHORT, stream=io.StringIO())
    open_split(changed, tmp_path / "cache", SHORT, "prepare")


def source(split, jitter: float = 0.0, crop: int = 32, resident: bool | None = None
           ) -> CachedImages:
    labels = torch.arange(len(split.starts))
    return CachedImages(split, labels, MEAN, STD, crop, jitter, torch.device("cpu"),
                        channels_last=False, resident=resident)


def test_a_split_streamed_from_host_memory_gives_the_resident_crops(image_list, tmp_path):
    """A split too large for the GPU stays in host memory and each batch's images are
    re-packed and copied; the crops (training draws and evaluation) are the resident ones."""
    split = cached(image_list, tmp_path)
    resident, streamed = source(split, jitter=0.4), source(split, jitter=0.4, resident=False)
    assert resident.resident and not streamed.resident
    index = torch.tensor([5, 0, 7, 7, 2])
    for seed in range(3):
        a = resident.train_batch(index, torch.Generator().manual_seed(seed))
        b = streamed.train_batch(index, torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for (x, y), (u, v) in zip(resident.eval_batches(3), streamed.eval_batches(3)):
        assert torch.equal(x, u) and torch.equal(y, v)


def test_eval_batches_equal_torchvisions_resize_centre_crop(image_list, tmp_path):
    reference = T.Compose([T.Resize(SHORT), T.CenterCrop(32), T.ToTensor(),
                           T.Normalize(MEAN, STD)])
    batches = list(source(cached(image_list, tmp_path)).eval_batches(3))
    inputs = torch.cat([x for x, _ in batches])
    assert [len(x) for x, _ in batches] == [3, 3, 2]
    assert torch.cat([y for _, y in batches]).tolist() == list(range(8))
    for k, path in enumerate(image_list.paths):
        expected = reference(pil(tmp_path / path))
        assert torch.allclose(inputs[k], expected, atol=1e-6), path


def test_a_crop_box_resamples_as_torchvisions_resized_crop(image_list, tmp_path):
    split = cached(image_list, tmp_path)
    packed = PackedImages(torch.from_numpy(split.pixels), *(torch.from_numpy(a) for a in (
        split.starts, split.heights, split.widths)))
    index = torch.tensor([0, 1, 5, 7, 3])
    top, left = torch.tensor([2, 0, 5, 1, 0]), torch.tensor([3, 7, 0, 2, 0])
    height, width = torch.tensor([20, 36, 9, 30, 36]), torch.tensor([17, 26, 40, 30, 66])
    plain = resized_crops(packed, index, top, left, height, width,
                          torch.zeros(5, dtype=torch.bool), 24)
    flipped = resized_crops(packed, index, top, left, height, width,
                            torch.ones(5, dtype=torch.bool), 24)
    for b, k in enumerate(index.tolist()):
        image = torch.from_numpy(cached_image(split, k).copy()).permute(2, 0, 1).float()
        expected = TF.resized_crop(image, int(top[b]), int(left[b]), int(height[b]),
                                   int(width[b]), [24, 24], antialias=False)
        assert torch.allclose(plain[b].permute(2, 0, 1), expected, atol=1e-3)
        assert torch.allclose(flipped[b].permute(2, 0, 1), expected.flip(2), atol=1e-3)


def torchvision_boxes(height: int, width: int, draws: int, seed: int) -> np.ndarray:
    image = torch.empty(3, height, width)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return np.array([T.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))
                         for _ in range(draws)], dtype=np.float64)


@pytest.mark.parametrize("height,width", [(256, 341), (36, 36), (24, 200)])
def test_crop_boxes_are_distributed_as_torchvisions(height, width):
    draws = 4000
    ours = torch.stack(draw_crop_boxes(
        torch.full((draws,), height), torch.full((draws,), width),
        torch.Generator().manual_seed(1)), dim=1).double().numpy()
    theirs = torchvision_boxes(height, width, draws, seed=2)
    for boxes in (ours, theirs):
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + h <= height).all() and (left + w <= width).all()

    def features(boxes):
        top, left, h, w = boxes.T
        return {"scale": h * w / (height * width), "log aspect": np.log(w / h),
                "centre row": (top + h / 2) / height, "centre col": (left + w / 2) / width}

    for name, ours_values in features(ours).items():
        theirs_values = features(theirs)[name]
        result = ks_2samp(ours_values, theirs_values)
        assert result.pvalue > 1e-3, (name, result)
    # The wide image falls back to the centred, aspect-clamped box about as often.
    fallback = (round(height * 4 / 3) if width / height > 4 / 3 else width)
    ours_rate = np.mean((ours[:, 0] == 0) & (ours[:, 3] == fallback) & (ours[:, 2] == height))
    theirs_rate = np.mean((theirs[:, 0] == 0) & (theirs[:, 3] == fallback)
                          & (theirs[:, 2] == height))
    assert abs(ours_rate - theirs_rate) < 4 * math.sqrt(max(theirs_rate, 1e-3) / draws) + 0.01


def test_training_crops_match_torchvisions_pipeline_in_pixel_statistics(image_list, tmp_path):
    """Many augmented draws of one image: the mean image (8x8 blocks) and the per-channel
    pixel spread agree with torchvision's RandomResizedCrop + flip + ToTensor + Normalize on
    the same (cached) image, within what PIL's antialiasing and sampling noise allow."""
    split = cached(image_list, tmp_path)
    k, draws = 4, 3000
    images = source(split)
    ours = torch.cat([images.train_batch(torch.full((500,), k), generator)[0]
                      for generator in [torch.Generator().manual_seed(3)]
                      for _ in range(draws // 500)])
    reference = T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(MEAN, STD)])
    picture = Image.fromarray(cached_image(split, k))
    with torch.random.fork_rng():
        torch.manual_seed(4)
        theirs = torch.stack([reference(picture) for _ in range(draws)])
    pooled = [torch.nn.functional.avg_pool2d(x.mean(0, keepdim=True), 8) for x in (ours, theirs)]
    assert (pooled[0] - pooled[1]).abs().max() < 0.08
    assert torch.allclose(ours.std(dim=(0, 2, 3)), theirs.std(dim=(0, 2, 3)), rtol=0.05)
    # A different image is far away on the same scale: the check has teeth.
    other = torch.nn.functional.avg_pool2d(
        source(split).train_batch(torch.full((500,), 6), torch.Generator().manual_seed(5))[0]
        .mean(0, keepdim=True), 8)
    assert (other - pooled[1]).abs().max() > 0.3


def test_color_jitter_applies_torchvisions_operations_in_the_drawn_order():
    images = torch.rand(6, 5, 7, 3, generator=torch.Generator().manual_seed(0))
    out = color_jitter(images, 0.4, torch.Generator().manual_seed(9))
    # Replay the draws (factors, then the order) and apply torchvision's functional ops.
    replay = torch.Generator().manual_seed(9)
    factors = torch.rand((6, 3), generator=replay, dtype=torch.float64) * 0.8 + 0.6
    order = torch.rand((6, 3), generator=replay).argsort(dim=1)
    operations = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for b in range(6):
        expected = images[b].permute(2, 0, 1)
        for op in order[b].tolist():
            expected = operations[op](expected, float(factors[b, op]))
        assert torch.allclose(out[b].permute(2, 0, 1), expected, atol=1e-5)
    assert len(set(map(tuple, order.tolist()))) > 1  # orders do differ between images
    assert not torch.allclose(out, images)


def _watch_gathers(monkeypatch) -> list[tuple[bool, list[int]]]:
    """The streamed split's gathers from now on: (on the background thread?, positions)."""
    gathered = []
    real_gather = sources._StreamedBatches._gather

    def watched(self, chosen):
        gathered.append((threading.current_thread().name.startswith("ltbench-gather"),
                         chosen.tolist()))
        return real_gather(self, chosen)

    monkeypatch.setattr(sources._StreamedBatches, "_gather", watched)
    return gathered


def test_announced_streamed_batches_are_gathered_ahead_on_a_thread(image_list, tmp_path,
                                                                    monkeypatch):
    """After an epoch's order is announced, each next batch's pixels are gathered on the
    background thread, in the announced order; an unannounced batch is gathered on the spot.
    The crops are the resident ones throughout."""
    gathered = _watch_gathers(monkeypatch)
    split = cached(image_list, tmp_path)
    resident, streamed = source(split, jitter=0.4), source(split, jitter=0.4, resident=False)
    order = torch.tensor([6, 2, 7, 0, 5, 1, 3, 4])
    streamed.announce(order, 3)
    for index in order.split(3):
        a = resident.train_batch(index, torch.Generator().manual_seed(index[0].item()))
        b = streamed.train_batch(index, torch.Generator().manual_seed(index[0].item()))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert gathered == [(True, [6, 2, 7]), (True, [0, 5, 1]), (True, [3, 4])]
    gathered.clear()
    a = resident.train_batch(torch.tensor([6, 2, 7]), torch.Generator().manual_seed(0))
    b = streamed.train_batch(torch.tensor([6, 2, 7]), torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0])
    assert gathered == [(False, [6, 2, 7])]  # equal values, but not the announced view


class _RecordingStep:
    """A training step that trains nothing: it keeps the batches the epoch loop gives it."""

    def __init__(self):
        self.batches = []

    def train_step(self, inputs, targets, epoch, contexts):
        self.batches.append((inputs, targets))
        return (torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.int64),
                [targets.shape[1]])


def test_an_epoch_resumed_mid_way_streams_the_rest_ahead(image_list, tmp_path, monkeypatch):
    """``train_epoch`` continuing an epoch checkpointed after its first batch of 3 announces
    only the batches to come to a streamed split: each is gathered ahead on the thread, and
    they are the uninterrupted epoch's batches."""
    from ltbench.engine.samplers import EpochSampler
    from ltbench.engine.train import PartialEpoch, train_epoch

    gathered = _watch_gathers(monkeypatch)
    split = cached(image_list, tmp_path)
    sampler = EpochSampler("instance-balanced", source(split).labels, len(SIZES) + 1, 1)

    def epoch(step, generator, partial=None, after_batch=None):
        train_epoch(step, source(split, jitter=0.4, resident=False), 0, 3, [generator],
                    [sampler], [None], partial=partial, after_batch=after_batch)

    uninterrupted = _RecordingStep()
    epoch(uninterrupted, torch.Generator().manual_seed(0))
    assert [on_thread for on_thread, _ in gathered] == [True] * 3
    order = [index for _, batch in gathered for index in batch]

    class Stop(Exception):
        pass

    def stop_after_first(partial):
        buffer = io.BytesIO()
        torch.save(partial.state(train_s=0.0), buffer)
        saved.append((buffer.getvalue(), generator.get_state()))
        raise Stop

    saved, generator = [], torch.Generator().manual_seed(0)
    with pytest.raises(Stop):
        epoch(_RecordingStep(), generator, after_batch=stop_after_first)
    (state, generator_state), = saved
    partial, train_s = PartialEpoch.from_state(torch.load(io.BytesIO(state), weights_only=True),
                                               torch.device("cpu"))
    assert partial.batches == 1 and train_s == 0.0
    gathered.clear()
    resumed = _RecordingStep()
    epoch(resumed, torch.Generator().set_state(generator_state), partial)
    assert gathered == [(True, order[3:6]), (True, order[6:])]
    assert len(resumed.batches) == 2
    for (x, y), (u, v) in zip(resumed.batches, uninterrupted.batches[1:]):
        assert torch.equal(x, u) and torch.equal(y, v)


def test_sources_of_one_split_share_its_resident_copy(image_list, tmp_path, monkeypatch):
    copies = count_device_copies(monkeypatch)
    split = cached(image_list, tmp_path)
    first, second = source(split), source(split, jitter=0.4)
    assert first.resident and second.resident and copies == [len(split.starts)]
    assert next(first.eval_batches(8))[0].equal(next(second.eval_batches(8))[0])
    reopened = open_split(image_list, tmp_path / "cache", SHORT, "prepare")
    source(reopened)  # another split object (a subset loaded again): its own copy
    assert copies == [len(split.starts)] * 2
