"""``ltbench bench``: training throughput of the engine's variants, CIFAR-10-LT IF 100, ResNet-32.

One process times, one after the other, the training steps of:

* **B0** the reference style, with the reference's own settings (kaidic/LDAM-DRW :
  cifar_train.py, ``main_worker`` and ``train``): a torchvision ``CIFAR10`` dataset with PIL
  transforms (``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize``) in a shuffling ``DataLoader`` with ``--workers`` processes (the reference's
  default, 4, is the CLI's) and ``pin_memory=True``, ``cudnn.benchmark = True``, every batch
  copied with ``.cuda(non_blocking=True)``, eager fp32, one model, ``loss.item()`` every step
  (the reference's ``AverageMeter`` update). The reference's per-step top-1/top-5 accuracy and
  its logging are left out, so B0 is if anything faster than the reference and "x B0" is not
  inflated;
* **B1** ltbench's device-resident data path (:class:`~ltbench.engine.augment.DeviceImages`)
  and epoch loop (:func:`~ltbench.engine.train.train_epoch`), eager fp32, one model;
* **B1c** B1 with channels-last tensors (CPU only: on CUDA channels-last comes with B2);
* **B2** B1 with bf16 autocast and channels-last (on CPU: autocast on the CPU, which pays on
  processors with native bf16, AMX or AVX512-BF16);
* **B3** B2 with ``torch.compile`` of the network, and (**B3g**) with CUDA-graph replay
  (``mode="reduce-overhead"``) (CUDA; B3 on CPU only with ``cpu_compile``); where inductor ran
  graphs without CUDA graphs, B3g's status says so and why (:class:`CudagraphSkips`);
* **B4** packs of N models as one grouped network (:class:`~ltbench.engine.steps.GroupedStep`),
  with B3's numerics on CUDA, on CPU the precision ``ltbench run`` picks by default
  (:meth:`~ltbench.engine.steps.Numerics.for_device`), compiled with ``cpu_compile``.

fp32 rows are IEEE fp32 on CUDA too (TF32 off, :func:`~ltbench.engine.steps.use_ieee_fp32`).

Each variant first runs an untimed warm-up pass, then ``repeats`` timed passes of ``steps``
steps (one pass = one epoch of the engine's loop over ``steps × 128`` images, or the whole
subset, 97 full batches + 1 of 118, when that is smaller); the median pass counts. The
table gives images/s (all models, and per model), ms per step, the projected wall time of one
200-epoch run and of the full grid, the speed-up over B0 in the same process, the achieved
TFLOP/s at 413 MFLOP per training image (architecture.md §7: 3 × 137.7 MFLOP forward), the
peak memory and, separately, the compile time (the warm-up pass's excess over a timed one).

Data: the real CIFAR-10-LT IF 100 subset (LDAM-DRW construction, split seed 0) when
``data_root`` holds ``cifar-10-batches-py``; otherwise random uint8 images (values 1 … 255,
never all zeros) with the real per-class counts 5000, 2997, …, 50 (12,406 images).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from .. import __version__, registry
from ..engine.progress import RunProgress
from ..hparams import resolve_run
from ..store import atomicfile

IMB_FACTOR = 100.0
EPOCHS = 200
#: Training FLOPs of one 32x32 image through ResNet-32 (architecture.md §7).
TRAIN_FLOP_PER_IMAGE = 413e6
#: The full grid the projection is for: the 12 ltbench methods of Jamal et al.'s CIFAR-10-LT
#: table (CVPR 2020, arXiv:2003.10780; the rows mapped in results/published/published.csv:
#: ce, focal, cb-ce, cb-focal, cb-finetune, l2rw, mwn, ldam, ldam-drw, meta-ce, meta-focal,
#: meta-ldam) × 6 imbalance factors {200, 100, 50, 20, 10, 1} × 3 seeds. The projection
#: prices every run as a plain one; the meta-learning runs cost ~2-4x that (architecture.md §7).
GRID_METHODS, GRID_FACTORS, GRID_SEEDS = 12, 6, 3
GRID_RUNS = GRID_METHODS * GRID_FACTORS * GRID_SEEDS

CPU_DEFAULTS = {"packs": (1, 2, 4), "steps": 3, "warmup": 1, "repeats": 1}
CUDA_DEFAULTS = {"packs": (1, 2, 4, 8, 16, 32, 64), "steps": 98, "warmup": 98, "repeats": 3}


@dataclass
class BenchRow:
    """One line of the table; measured fields are None where the variant did not run."""

    variant: str
    description: str
    models: int
    status: str  # "ok", or why it did not run ("n/a on CPU", an error)
    steps: int = 0
    ms_per_step: float | None = None
    images_per_s: float | None = None
    images_per_s_per_model: float | None = None
    run_wall_h: float | None = None
    grid_wall_h: float | None = None
    speedup_vs_b0: float | None = None
    tflops: float | None = None
    peak_mem_mb: float | None = None
    compile_s: float | None = None


@dataclass
class BenchData:
    """The training subset as uint8 [N, 3, 32, 32] + labels, and where it came from."""

    images: Any
    labels: Any
    class_counts: list[int]
    source: str
    cifar_root: Path | None  # the official folder's root, for B0's torchvision dataset


def has_cifar10_lt(data_root: Path) -> bool:
    """Whether ``data_root`` serves the CIFAR-10-LT IF 100 subset (split seed 0): the official
    folder, or a data pack holding it (:mod:`ltbench.datasets.cifar_pack`). Never downloads."""
    from ..errors import BadInput

    root = Path(data_root)
    if not ((root / "cifar-10-batches-py").is_dir() or any(root.glob("*.ltpack"))):
        return False
    dataset = registry.load("dataset", "cifar10-lt")()
    try:
        dataset.check(root, resolve_run(dataset, None, {}), (IMB_FACTOR, "exp", 0))
    except BadInput:
        return False
    return True


def load_bench_data(data_root: Path) -> BenchData:
    """The real CIFAR-10-LT IF 100 subset if ``data_root`` has it (:func:`has_cifar10_lt`),
    else random images with its class counts (see the module docstring)."""
    import torch

    dataset = registry.load("dataset", "cifar10-lt")()
    hparams = resolve_run(dataset, None, {})
    counts = dataset.class_counts(IMB_FACTOR, "exp", hparams)
    if has_cifar10_lt(data_root):
        data = dataset.load(Path(data_root), IMB_FACTOR, "exp", 0, hparams)
        official = (Path(data_root) / "cifar-10-batches-py").is_dir()
        return BenchData(data.train_images, data.train_labels, counts,
                         f"CIFAR-10-LT IF 100 from {data_root}",
                         Path(data_root) if official else None)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (sum(counts), 3, 32, 32), dtype=torch.uint8,
                           generator=generator)
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return BenchData(images, labels, counts,
                     "random uint8 images (1..255) with CIFAR-10-LT IF 100 class counts", None)


class _PILImages:
    """A torch Dataset of uint8 images served as PIL images through ``transform``, as
    torchvision's ``CIFAR10.__getitem__`` does (``Image.fromarray`` of an HWC array)."""

    def __init__(self, images, labels, transform):
        self.images = images.permute(0, 2, 3, 1).numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def _sync(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _peak_memory_mb(device) -> float:
    """CUDA: the most memory torch allocated since the variant began; CPU: the process's
    peak resident set so far (it only grows, so later variants include earlier ones)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_memory(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


@dataclass(frozen=True)
class Settings:
    device: Any
    packs: tuple[int, ...]
    steps: int
    warmup: int
    repeats: int
    workers: int
    cpu_compile: bool
    batch_size: int = 128


class CudagraphSkips(logging.Handler):
    """While active (a ``with`` block), the graphs inductor compiled but runs without CUDA
    graphs under ``mode="reduce-overhead"``, and its reasons.

    Inductor reports every such skip through ``log_cudagraph_skip_and_bump_counter``
    (torch/_inductor/cudagraph_utils.py, torch 2.14): a warning "skipping cudagraphs due to
    <reason>" on a ``torch._inductor`` logger and one more count in
    ``torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]``. The count also covers
    skips whose warning did not reach ``torch._inductor`` (older torch logs them on the
    off-by-default ``perf_hints`` logger)."""

    PREFIX = "skipping cudagraphs due to "

    def __init__(self):
        super().__init__(logging.WARNING)
        self.reasons: list[str] = []  # distinct, first line of each
        self.skipped = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.PREFIX):
            reason = message[len(self.PREFIX):].partition("\n")[0].strip()
            if reason not in self.reasons:
                self.reasons.append(reason)

    def __enter__(self) -> CudagraphSkips:
        from torch._dynamo.utils import counters

        self._counted_before = counters["inductor"]["cudagraph_skips"]
        logging.getLogger("torch._inductor").addHandler(self)
        return self

    def __exit__(self, *exc_info) -> None:
        from torch._dynamo.utils import counters

        logging.getLogger("torch._inductor").removeHandler(self)
        self.skipped = counters["inductor"]["cudagraph_skips"] - self._counted_before

    def status(self) -> str:
        """A measured row's status: "ok", or "ok (cudagraphs skipped: <reasons>)"."""
        if not (self.skipped or self.reasons):
            return "ok"
        why = "; ".join(self.reasons) or f"{self.skipped} graphs, no reason logged"
        return f"ok (cudagraphs skipped: {why[:160]})"


def _time_passes(settings: Settings, run_pass: Callable[[int], None], label: str,
                 stream: TextIO) -> tuple[float, float]:
    """(median seconds of the timed passes, seconds of the warm-up pass)."""
    progress = RunProgress(label, stream)
    progress.begin(settings.warmup + settings.repeats * settings.steps)
    _sync(settings.device)
    started = time.perf_counter()
    run_pass(settings.warmup)
    _sync(settings.device)
    warmup_s = time.perf_counter() - started
    progress.advance(settings.warmup)
    timed = []
    for _ in range(settings.repeats):
        started = time.perf_counter()
        run_pass(settings.steps)
        _sync(settings.device)
        timed.append(time.perf_counter() - started)
        progress.advance(settings.steps)
    progress.end(f"{statistics.median(timed) / settings.steps * 1000:.1f} ms/step")
    return statistics.median(timed), warmup_s


def _pass_images(data: BenchData, steps: int, batch_size: int) -> int:
    """Images per pass: ``steps`` full batches, or the whole subset when that is smaller."""
    return min(len(data.labels), steps * batch_size)


def _reference_style(settings: Settings, data: BenchData, hparams, stream) -> float:
    """B0's seconds per pass (see the module docstring)."""
    import torch
    import torch.nn.functional as F
    import torchvision
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Subset

    from ..engine.models import build_backbone
    from ..engine.steps import build_optimizer, use_ieee_fp32

    device = settings.device
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(hparams["mean"], hparams["std"])])
    if data.cifar_root is not None:
        full = torchvision.datasets.CIFAR10(str(data.cifar_root), train=True, download=False,
                                            transform=transform)
        dataset = registry.load("dataset", "cifar10-lt")()
        indices, _ = dataset.split_indices(data.cifar_root, IMB_FACTOR, "exp", 0, hparams)
        subset_of = lambda n: Subset(full, indices[:n].tolist())  # noqa: E731
    else:
        images = _PILImages(data.images, data.labels, transform)
        subset_of = lambda n: Subset(images, range(n))  # noqa: E731
    model = build_backbone("resnet32", len(data.class_counts), "linear",
                           torch.Generator().manual_seed(0)).to(device)
    optimizer = build_optimizer(model, hparams)
    loader_generator = torch.Generator().manual_seed(1)
    on_cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    use_ieee_fp32()  # B0 claims fp32, as B1 does (the reference's era had no TF32)

    def run_pass(steps: int) -> None:
        # pinned memory needs a CUDA device, the only one the reference runs on
        loader = DataLoader(subset_of(_pass_images(data, steps, settings.batch_size)),
                            batch_size=settings.batch_size, shuffle=True,
                            num_workers=settings.workers, pin_memory=on_cuda,
                            generator=loader_generator)
        model.train()
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the reference logs every step: one host synchronisation each

    seconds, _ = _time_passes(settings, run_pass, "bench B0", stream)
    return seconds


def _engine(settings: Settings, data: BenchData, hparams, models: int, numerics,
            label: str, stream) -> tuple[float, float]:
    """Seconds per pass and warm-up seconds of the engine's loop with ``models`` runs."""
    import torch

    from ..api import StepContext
    from ..engine.augment import DeviceImages
    from ..engine.models import build_backbone
    from ..engine.samplers import EpochSampler
    from ..engine.train import PackMember, build_step, train_epoch
    from ..spec import derive_seed

    device = settings.device
    counts = torch.tensor(data.class_counts, dtype=torch.float64, device=device)
    method_cls = registry.load("method", "ce")
    members = [PackMember(method_cls(counts, hparams), hparams, seed) for seed in range(models)]
    networks = [build_backbone("resnet32", len(data.class_counts), "linear",
                               torch.Generator().manual_seed(derive_seed(m.seed, "init")))
                for m in members]
    step = build_step(networks, members, device, numerics)
    generators = [torch.Generator(device=device).manual_seed(derive_seed(m.seed, "data"))
                  for m in members]
    contexts = [StepContext(lr=float(hparams["lr"]), precision=numerics.precision(),
                            meta_batch=lambda: None, seed=m.seed) for m in members]
    subsets = {}

    def run_pass(steps: int) -> None:
        count = _pass_images(data, steps, settings.batch_size)
        if count not in subsets:
            subsets[count] = DeviceImages(data.images[:count], data.labels[:count],
                                          hparams["mean"], hparams["std"], int(hparams["pad"]),
                                          hparams["pad_mode"], device,
                                          channels_last=numerics.channels_last)
        images = subsets[count]
        samplers = [EpochSampler("instance-balanced", images.labels, len(data.class_counts), 1)
                    ] * models
        loss_sum, correct, _ = train_epoch(step, images, 0, settings.batch_size, generators,
                                           samplers, contexts)
        torch.cat((loss_sum, correct.double())).tolist()  # the loop's one sync per epoch

    return _time_passes(settings, run_pass, label, stream)


def _measured(row: BenchRow, seconds: float, settings: Settings, data: BenchData,
              device) -> None:
    """Fill ``row``'s throughput columns from the median pass time."""
    images = _pass_images(data, settings.steps, settings.batch_size)
    steps = math.ceil(images / settings.batch_size)
    row.status, row.steps = "ok", steps
    row.ms_per_step = seconds / steps * 1000
    row.images_per_s = row.models * images / seconds
    row.images_per_s_per_model = images / seconds
    steps_per_epoch = math.ceil(len(data.labels) / settings.batch_size)
    row.run_wall_h = EPOCHS * steps_per_epoch * row.ms_per_step / 1000 / 3600
    row.grid_wall_h = math.ceil(GRID_RUNS / row.models) * row.run_wall_h
    row.tflops = row.images_per_s * TRAIN_FLOP_PER_IMAGE / 1e12
    row.peak_mem_mb = _peak_memory_mb(device)


def _variants(settings: Settings) -> list[tuple[BenchRow, Any]]:
    """Every variant to time, as a pending row (or one saying why it does not apply on this
    device) and its :class:`~ltbench.engine.steps.Numerics` (None: the reference-style B0)."""
    from ..engine.steps import Numerics

    device = settings.device
    on_cuda, kind = device.type == "cuda", device.type
    fp32 = Numerics(kind, bf16=False, channels_last=False)
    fp32_channels_last = Numerics(kind, bf16=False, channels_last=True)
    fast = Numerics(kind, bf16=True, channels_last=True)
    default = Numerics.for_device(device)
    compiled = replace(fast if on_cuda else default, compile_mode="default")
    graphs = replace(fast, compile_mode="reduce-overhead")
    compile_here = on_cuda or settings.cpu_compile
    variants: list[tuple[BenchRow, Any]] = [
        (BenchRow("B0", f"reference style: torchvision + PIL + DataLoader "
                        f"({settings.workers} workers), fp32 eager", 1, "pending"), None),
        (BenchRow("B1", "device-resident data, fp32 eager", 1, "pending"), fp32),
        (BenchRow("B1c", "B1 + channels_last", 1,
                  "n/a on CUDA (with B2)" if on_cuda else "pending"), fp32_channels_last),
        (BenchRow("B2", "B1 + bf16 autocast + channels_last", 1, "pending"), fast),
        (BenchRow("B3", f"{'B2' if compiled.bf16 else 'B1c'} + torch.compile", 1,
                  "pending" if compile_here else "n/a on CPU (--cpu-compile)"), compiled),
        (BenchRow("B3g", "B2 + torch.compile with CUDA graphs (reduce-overhead)", 1,
                  "pending" if on_cuda else "n/a on CPU"), graphs),
    ]
    pack_numerics = compiled if compile_here else default
    for n in settings.packs:
        network = "one grouped network" if n > 1 else "the plain network"
        numerics_text = (f"{pack_numerics.precision_name} + {pack_numerics.memory_format_name}"
                         + (" + compile" if pack_numerics.compile_mode else ""))
        variants.append((BenchRow(f"B4 N={n}", f"pack of {n}: {network}, {numerics_text}", n,
                                  "pending"), pack_numerics))
    return variants


def _time_variant(row: BenchRow, numerics, settings: Settings, data: BenchData,
                  hparams: dict[str, Any], stream: TextIO) -> None:
    """Time one pending variant and fill in ``row`` (its status says why when it failed)."""
    import torch

    _reset_peak_memory(settings.device)
    compiles = numerics is not None and numerics.compile_mode is not None
    if compiles:
        # a fresh compile cache per variant: the pack sizes' graphs would otherwise add
        # up past dynamo's recompile limit and silently fall back to eager
        torch.compiler.reset()
    skips = CudagraphSkips() if compiles and numerics.compile_mode == "reduce-overhead" \
        else None
    try:
        with skips or contextlib.nullcontext():
            if numerics is None:
                seconds = _reference_style(settings, data, hparams, stream)
            else:
                seconds, warmup_s = _engine(settings, data, hparams, row.models, numerics,
                                            f"bench {row.variant}", stream)
        if compiles:
            warmup_steps = math.ceil(_pass_images(data, settings.warmup, settings.batch_size)
                                     / settings.batch_size)
            steps = math.ceil(_pass_images(data, settings.steps, settings.batch_size)
                              / settings.batch_size)
            row.compile_s = max(0.0, warmup_s - seconds * warmup_steps / steps)
        _measured(row, seconds, settings, data, settings.device)
        if skips is not None:
            row.status = skips.status()
    except Exception as exc:  # e.g. out of memory at a large N: report it, go on
        row.status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"


def _metadata(settings: Settings, data: BenchData) -> dict[str, Any]:
    """What a bench result records besides its rows: machine, data, settings, projection."""
    import torch

    device = settings.device
    on_cuda = device.type == "cuda"
    return {
        "ltbench_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if on_cuda else platform.processor()
        or platform.machine(),
        "torch_version": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "data": data.source,
        "train_images": len(data.labels),
        "settings": {"packs": list(settings.packs), "steps": settings.steps,
                     "warmup": settings.warmup, "repeats": settings.repeats,
                     "workers": settings.workers, "batch_size": settings.batch_size,
                     "cpu_compile": settings.cpu_compile},
        "projection": {"epochs": EPOCHS, "grid_runs": GRID_RUNS,
                       "grid": f"{GRID_METHODS} methods x {GRID_FACTORS} imbalance factors x "
                               f"{GRID_SEEDS} seeds (Jamal et al. CIFAR-10-LT table)",
                       "train_flop_per_image": TRAIN_FLOP_PER_IMAGE},
        "peak_mem_note": ("CUDA: torch's peak allocation per variant" if on_cuda else
                          "CPU: the process's peak resident set so far (cumulative)"),
    }


def run_bench(settings: Settings, data_root: Path, stream: TextIO) -> tuple[list[BenchRow], dict]:
    """Time every variant; returns the rows and the run's metadata (machine, data, settings)."""
    data = load_bench_data(data_root)
    hparams = resolve_run(registry.load("dataset", "cifar10-lt"), registry.load("method", "ce"),
                          {})
    rows = []
    for row, numerics in _variants(settings):
        rows.append(row)
        if row.status == "pending":
            _time_variant(row, numerics, settings, data, hparams, stream)
    reference = rows[0].images_per_s
    for row in rows:
        if row.images_per_s is not None and reference:
            row.speedup_vs_b0 = row.images_per_s / reference
    return rows, _metadata(settings, data)


COLUMNS = [f.name for f in fields(BenchRow)]
_HEADERS = {"variant": "variant", "models": "N", "images_per_s": "img/s",
            "images_per_s_per_model": "img/s/model", "ms_per_step": "ms/step",
            "run_wall_h": "run h", "grid_wall_h": "grid h", "speedup_vs_b0": "x B0",
            "tflops": "TFLOP/s", "peak_mem_mb": "peak MB", "compile_s": "compile s",
            "status": "status"}


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def format_table(rows: Sequence[BenchRow]) -> str:
    """The rows as a Markdown table (the columns of :data:`_HEADERS`)."""
    names = list(_HEADERS)
    lines = ["| " + " | ".join(_HEADERS[n] for n in names) + " |",
             "|" + "|".join("---" for _ in names) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(getattr(row, n)) for n in names) + " |")
    return "\n".join(lines)


def write_results(rows: Sequence[BenchRow], meta: dict, out_dir: Path) -> tuple[Path, Path]:
    """``bench-<UTC time>.json`` (metadata + rows) and ``.csv`` (rows) in ``out_dir``,
    each written to a temporary name and renamed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "bench-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    atomicfile.write_text(json_path,
                          json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    with atomicfile.atomic_write(csv_path, text=True) as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    return json_path, csv_path
