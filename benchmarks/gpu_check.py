"""The GPU proof in one command: does ltbench's CUDA path work, and how fast is it?

On a machine with one NVIDIA GPU, from the repository root (no installation needed: when
``ltbench`` is not installed the script imports it from this checkout, see
:func:`ensure_ltbench_importable`)::

    python benchmarks/gpu_check.py --data-root DIR --out DIR [--budget-s 480]

``DIR`` for ``--data-root`` holds CIFAR-10 (the official ``cifar-10-batches-py`` folder or the
pack ``ltbench data pack`` writes); without it the checks that need real data use random images
with the CIFAR-10-LT counts or synthetic-lt, and the 200-epoch check is skipped. The rehearsal on
any machine, in well under a minute (``tests/test_gpu_check.py`` runs it)::

    python benchmarks/gpu_check.py --device cpu --quick --data-root DIR --out DIR

Every check declares an estimated cost (seconds on one H200); a check that no longer fits the
remaining ``--budget-s`` is skipped with the estimate as its reason. Each runs guarded: an
exception is a FAIL with the traceback's last line, the next check still runs, and CUDA memory
is released in between. ``--only`` / ``--skip`` take comma-separated check names. CUDA-only
checks report SKIP "needs CUDA" on the CPU; ``--quick`` runs tiny sizes and skips the
200-epoch run. Exit code 0 when every check that ran passed, 1 otherwise, 2 on bad arguments.

The checks, in order (the name selects it):

1. ``environment``: device, capability, memory, torch / torchvision / CUDA / cuDNN versions;
   after ``Numerics.apply_backend_flags()`` the fp32 precision of cuDNN convolutions and cuBLAS
   matmuls is "ieee" (no TF32) and the production numerics are bf16 + channels-last.
2. ``throughput``: the real epoch loop (``train_epoch`` with ``build_step``, through
   ltbench.bench.throughput's ``_engine``) in production numerics for packs of 1, 4, 16, 32, 64 on
   CIFAR-10-LT IF 100: ms/step, img/s per model, peak GB per model, and the pack size
   ``--pack-size auto`` would pick with its assumed and with the measured per-model memory.
3. ``grouped_exact_fp64``: on cuDNN in float64 the grouped step's losses, gradients, parameters
   and BN statistics after two SGD steps equal three plain models' to 1e-10, also in a pack
   where one member's batch is NaN (the other members stay exact, the NaN stays in its member).
4. ``pack_vs_alone``: first-step losses and BN statistics of a pack against the runs alone
   (the engine's two step objects) in IEEE fp32 (≤ 1e-5) and in bf16 (≤ 3e-2, see
   :data:`BF16_RTOL`).
5. ``meta_gradient_bf16``: a measurement: ``∂L_meta/∂ε`` of ``meta_gradient`` with the
   θ-forward under bf16 autocast against fp32 on a ResNet-32 trained for a few hundred steps
   (relative error, fraction of L2RW weight signs that agree).
6. ``generator_resume``: the device's data-order generator through a resume checkpoint
   (``ResumeCheckpoint`` + ``GeneratorState``): draws after restoring equal the uninterrupted
   draws.
7. ``cuda_oom``: a real CUDA out-of-memory (memory filled in 1 GiB blocks) is a
   ``torch.OutOfMemoryError``, recorded as ltbench's runner records a failed run, and the
   memory is back at its baseline afterwards.
8. ``ltbench_run``: ``ltbench run`` end to end in subprocesses, each family in a fresh store:
   the loss family packed, the meta family with the meta stage running, the two-stage family
   reusing one stage-1 run, two workers on one device, SIGTERM then resume; records ok in bf16
   on CUDA.
9. ``cifar10_ce_200``: the 200-epoch ``ce`` run of CIFAR-10-LT IF 100 for seeds 0, 1, 2 in one
   pack, then ``ltbench check`` against the published 29.64 % error (cost estimated from check
   2's ms/step; the expensive one).
10. ``compiled_bench``: ``ltbench bench``'s compiled row B3 (``torch.compile``) and CUDA-graph row
    B3g (``reduce-overhead``) with a few steps.

Output, in ``--out``: ``gpu_check.json`` (rewritten after every check, so a run cut short still
reports; checks not reached say PENDING) and, at the end, ``gpu_check.md``: per check the pass
criterion, the measured values and PASS / FAIL / SKIP. Commit both under
``benchmarks/results/`` (README.md, "Proving a GPU machine").
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
JSON_NAME, MARKDOWN_NAME = "gpu_check.json", "gpu_check.md"
PASS, FAIL, SKIP, PENDING = "PASS", "FAIL", "SKIP", "PENDING"

#: Grouped-vs-plain float64 agreement (test_packs.py checks 1e-10 on the CPU).
FP64_RTOL = 1e-10
#: Pack-vs-alone agreement in IEEE fp32 (as tests/test_packs.py).
FP32_RTOL = 1e-5
#: Pack-vs-alone agreement in bf16. bf16 keeps 8 significant bits (unit roundoff 2^-8 ≈ 4e-3);
#: the grouped and the plain convolutions round every activation independently, so two correct
#: kernels differ by about one bf16 rounding per layer, compounded over ResNet-32's 31
#: convolutions before the loss. 3e-2 allows ~8 roundings of difference: a sound pack stays
#: inside it, while a member reading another's channels or statistics is off by O(1).
BF16_RTOL = 3e-2
#: Published top-1 error of ce on CIFAR-10-LT IF 100 (Cao et al. 2019; results/published).
PUBLISHED_CE_ERROR = 29.64
#: ms/step of a pack of 3 for check 9's estimate when check 2 measured nothing: a guess
#: (eager ResNet-32 steps at batch 128 are launch-bound, ~10-15 ms on recent GPUs).
FALLBACK_MS_PER_STEP = 15.0

#: ``--set`` values of a tiny synthetic-lt run (tests/helpers.py TINY_SYNTHETIC).
TINY_SYNTHETIC = {"classes": "4", "n_max": "24", "test_per_class": "5", "batch_size": "16"}


@dataclass(frozen=True)
class Sizes:
    """How large each check runs: ``FULL`` on the GPU, ``QUICK`` for the rehearsal."""

    packs: tuple[int, ...]          # check 2's pack sizes
    bench_steps: int                # steps per timed pass (checks 2, 10)
    bench_warmup: int
    bench_repeats: int
    bench_batch: int
    pack_data: dict[str, str]       # synthetic-lt options of checks 3 and 4
    meta_train_steps: int           # check 5: training steps before measuring
    meta_batches: int               # check 5: batches measured
    meta_per_class: int             # check 5: meta batch = this many images of every class
    run_epochs: int                 # check 8's runs
    sigterm_epochs: int             # check 8's SIGTERM run


FULL = Sizes(packs=(1, 4, 16, 32, 64), bench_steps=20, bench_warmup=10, bench_repeats=2,
             bench_batch=128,
             pack_data={"classes": "10", "n_max": "100", "test_per_class": "10",
                        "batch_size": "128"},
             meta_train_steps=300, meta_batches=8, meta_per_class=10, run_epochs=2,
             sigterm_epochs=4)
QUICK = Sizes(packs=(1, 2), bench_steps=2, bench_warmup=1, bench_repeats=1, bench_batch=8,
              pack_data={**TINY_SYNTHETIC, "batch_size": "8"}, meta_train_steps=4,
              meta_batches=2, meta_per_class=2, run_epochs=1, sigterm_epochs=3)


def ensure_ltbench_importable(scratch: Path) -> None:
    """Make ``import ltbench`` and its entry points work without installing anything.

    When ltbench is installed (e.g. ``pip install -e .``) this does nothing. Otherwise (a bare
    GPU machine) it lays out under ``scratch`` what an editable install provides: a package
    ``ltbench`` of links to this checkout (pyproject's ``package-dir``: ``harness/`` as
    ``ltbench``, ``methods/`` and ``datasets/`` inside it) and a dist-info with pyproject's
    entry points, then puts it on ``sys.path`` and ``PYTHONPATH`` (for the ``ltbench``
    subprocesses and their workers)."""
    import importlib
    import importlib.metadata
    import tomllib

    if importlib.metadata.entry_points(group="ltbench.methods"):
        return
    site = scratch / "site"
    package = site / "ltbench"
    package.mkdir(parents=True)
    for entry in (REPO / "harness").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name in ("methods", "datasets"):
        (package / name).symlink_to(REPO / name)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    info = site / f"ltbench-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: ltbench\nVersion: {project['version']}\n")
    groups = [f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in eps.items())
              for group, eps in project["entry-points"].items()]
    (info / "entry_points.txt").write_text("\n".join(groups))
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()


class Skipped(Exception):
    """Raised by a check that cannot run here; its message is the SKIP reason."""


@dataclass
class Context:
    """What every check gets: the device, the sizes, where data and scratch space are, the
    budget's deadline and the values of the checks that ran before."""

    device: Any
    quick: bool
    sizes: Sizes
    data_root: Path
    scratch: Path
    deadline: float  # time.monotonic()
    measured: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def left_s(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True)
class Check:
    """One check: ``run`` returns (passed, measured values) or raises :class:`Skipped`;
    ``estimate_s`` is its expected cost in seconds (on the H200 in full size)."""

    name: str
    proves: str
    criterion: str
    estimate_s: Callable[[Context], float]
    run: Callable[[Context], tuple[bool, dict[str, Any]]]
    needs_cuda: bool = False
    full_only: bool = False


def costs(full_s: float, quick_s: float) -> Callable[[Context], float]:
    return lambda ctx: quick_s if ctx.quick else full_s


def relative_error(actual, expected) -> float:
    """``||actual - expected|| / ||expected||`` over the concatenated tensors (lists or one)."""
    import torch

    if isinstance(actual, torch.Tensor):
        actual, expected = [actual], [expected]
    a = torch.cat([t.detach().double().flatten().cpu() for t in actual])
    b = torch.cat([t.detach().double().flatten().cpu() for t in expected])
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def release_memory(device) -> None:
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


# --- 1. environment ------------------------------------------------------------------------

def check_environment(ctx: Context) -> tuple[bool, dict[str, Any]]:
    import torch
    import torchvision

    from ltbench.engine.steps import Numerics

    numerics = Numerics.for_device(ctx.device)
    numerics.apply_backend_flags()
    flags = {"cudnn.conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision,
             "cuda.matmul.fp32_precision": torch.backends.cuda.matmul.fp32_precision}
    values: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if ctx.on_cuda else None,
        "production_numerics": f"{numerics.precision_name} + {numerics.memory_format_name}",
        **flags}
    if not ctx.on_cuda:
        values["device"] = platform.processor() or platform.machine()
        return True, values  # apply_backend_flags sets nothing on the CPU
    props = torch.cuda.get_device_properties(ctx.device)
    free, total = torch.cuda.mem_get_info(ctx.device)
    values.update(device=props.name, capability=f"{props.major}.{props.minor}",
                  multiprocessors=props.multi_processor_count,
                  memory_total_gb=total / 1e9, memory_free_gb=free / 1e9,
                  cudnn_benchmark=torch.backends.cudnn.benchmark)
    passed = (all(value == "ieee" for value in flags.values())
              and numerics.precision_name == "bf16" and numerics.channels_last)
    return passed, values


# --- 2. throughput -------------------------------------------------------------------------

def _bench_inputs(ctx: Context, packs: tuple[int, ...]):
    """bench.py's settings, data and ce hyper-parameters at this run's sizes."""
    from ltbench import registry
    from ltbench.bench import throughput as bench
    from ltbench.hparams import resolve_run

    sizes = ctx.sizes
    settings = bench.Settings(device=ctx.device, packs=packs, steps=sizes.bench_steps,
                              warmup=sizes.bench_warmup, repeats=sizes.bench_repeats,
                              workers=0, cpu_compile=False, batch_size=sizes.bench_batch)
    hparams = resolve_run(registry.load("dataset", "cifar10-lt"), registry.load("method", "ce"),
                          {})
    return settings, bench.load_bench_data(ctx.data_root), hparams


def check_throughput(ctx: Context) -> tuple[bool, dict[str, Any]]:
    import torch

    from ltbench.bench import throughput as bench
    from ltbench.engine.steps import Numerics
    from ltbench.run.packing import (BYTES_PER_MODEL_AT_BATCH_128, MAX_AUTO_PACK_SIZE,
                                     auto_pack_size)

    settings, data, hparams = _bench_inputs(ctx, ctx.sizes.packs)
    numerics = Numerics.for_device(ctx.device)
    rows = []
    for models in settings.packs:
        row = bench.BenchRow(f"N={models}", f"pack of {models}", models, "pending")
        bench._reset_peak_memory(ctx.device)
        try:
            seconds, _ = bench._engine(settings, data, hparams, models, numerics,
                                       f"gpu_check throughput N={models}", sys.stderr)
            bench._measured(row, seconds, settings, data, ctx.device)
        except Exception as exc:  # e.g. out of memory at a large N: a finding, report it
            row.status = f"failed: {exception_line(exc)}"
        release_memory(ctx.device)
        rows.append({"models": models, "status": row.status, "ms_per_step": row.ms_per_step,
                     "images_per_s": row.images_per_s,
                     "images_per_s_per_model": row.images_per_s_per_model,
                     "peak_gb_per_model": (row.peak_mem_mb * 2**20 / 1e9 / models
                                           if ctx.on_cuda and row.peak_mem_mb else None)})
    values: dict[str, Any] = {"data": data.source, "numerics": f"{numerics.precision_name} + "
                              f"{numerics.memory_format_name}",
                              "batch_size": settings.batch_size, "rows": rows}
    measured = [r for r in rows if r["status"] == "ok"]
    if ctx.on_cuda and measured:
        largest = measured[-1]
        per_model_gb = largest["peak_gb_per_model"]
        free, _ = torch.cuda.mem_get_info(ctx.device)
        values.update(
            per_model_gb_measured_at_n=largest["models"], per_model_gb_measured=per_model_gb,
            per_model_gb_assumed=BYTES_PER_MODEL_AT_BATCH_128 / 1e9,
            auto_pack_size_assumed=auto_pack_size(ctx.device, 128),
            # the same rule as auto_pack_size, with the measured figure in place of the assumed
            auto_pack_size_measured=max(1, min(MAX_AUTO_PACK_SIZE,
                                               int(0.8 * free // (per_model_gb * 1e9)))))
        print(f"  per-model memory at N={largest['models']}: {per_model_gb:.3f} GB measured, "
              f"{BYTES_PER_MODEL_AT_BATCH_128 / 1e9:.2f} GB assumed; --pack-size auto picks "
              f"{values['auto_pack_size_assumed']} (would pick "
              f"{values['auto_pack_size_measured']} with the measured figure)")
    return len(measured) == len(rows), values


# --- 3. and 4. packs against plain models --------------------------------------------------

PACK_METHODS = ("ce", "focal", "logit-adjust")
#: Per member: learning rate, momentum, weight decay (all different, as packs allow).
PACK_OPTIMISERS = (("0.1", "0.9", "2e-4"), ("0.05", "0.5", "0"), ("0.2", "0.9", "5e-3"))


@dataclass
class PackSetup:
    models: list       # the plain models (their own copies are in the grouped step)
    methods: list
    hparams: list
    batches: list      # (inputs [N·B, 3, H, W], targets [N, B]) per step: a full, the last
    num_classes: int


def pack_setup(ctx: Context, dtype, numerics, nan_member: int | None = None) -> PackSetup:
    """Three runs (ce, focal, logit-adjust; seeds 0-2, their own lr, momentum, weight decay)
    on synthetic-lt at IF 10, and per step every member's own augmented batch of the same
    images: the first full batch, then the epoch's partial last one. ``nan_member``: that
    member's inputs are NaN."""
    import torch

    from ltbench import registry
    from ltbench.engine.augment import DeviceImages
    from ltbench.engine.models import build_backbone
    from ltbench.hparams import resolve_run

    dataset_cls = registry.load("dataset", "synthetic-lt")
    hparams = [resolve_run(dataset_cls, registry.load("method", name),
                           {**ctx.sizes.pack_data, "lr": lr, "momentum": momentum,
                            "weight_decay": decay})
               for name, (lr, momentum, decay) in zip(PACK_METHODS, PACK_OPTIMISERS)]
    data = dataset_cls().load(None, 10.0, "exp", 0, hparams[0])
    counts = torch.tensor(data.class_counts, dtype=torch.float64, device=ctx.device)
    methods = [registry.load("method", name)(counts, h) for name, h in zip(PACK_METHODS, hparams)]
    models = [build_backbone("resnet32", data.num_classes, "linear",
                             torch.Generator().manual_seed(seed)).to(ctx.device, dtype)
              for seed in range(len(PACK_METHODS))]
    first = hparams[0]
    images = DeviceImages(data.train_images, data.train_labels, first["mean"], first["std"],
                          int(first["pad"]), first["pad_mode"], ctx.device,
                          channels_last=numerics.channels_last)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(5))
    chunks = order.to(ctx.device).split(int(first["batch_size"]))
    batches = []
    for step, index in enumerate((chunks[0], chunks[-1])):
        members = len(PACK_METHODS)
        inputs, targets = images.train_batch(
            index.repeat(members), torch.Generator(device=ctx.device).manual_seed(30 + step))
        inputs = inputs.to(dtype)
        if nan_member is not None:
            inputs = inputs.unflatten(0, (members, -1)).clone()
            inputs[nan_member] = math.nan
            inputs = inputs.flatten(0, 1).contiguous(memory_format=numerics.memory_format)
        batches.append((inputs, targets.view(members, len(index))))
    return PackSetup(models, methods, hparams, batches, data.num_classes)


def member_slice(grouped, name: str, tensor, member: int):
    """Member ``member``'s part of the grouped network's ``tensor`` (a parameter, buffer or
    gradient stored under ``name``): the heads stack the models, the rest concatenates them."""
    return tensor[member] if name.startswith("head.") else tensor.chunk(grouped.models)[member]


def grouped_against_plain(ctx: Context, nan_member: int | None) -> dict[str, Any]:
    """Two float64 steps of a grouped pack against the members' plain models stepped by
    ``torch.optim.SGD`` (a learning-rate change before the second): the largest relative
    error of the losses, gradients, parameters and BN statistics over the finite members,
    and whether the NaN member's loss is NaN."""
    import torch

    from ltbench.engine.steps import GroupedStep, Numerics, build_optimizer

    numerics = Numerics(ctx.device.type, bf16=False, channels_last=False)
    setup = pack_setup(ctx, torch.float64, numerics, nan_member)
    grouped = GroupedStep(setup.models, setup.methods, setup.hparams, ctx.device, numerics)
    optimizers = [build_optimizer(model, h) for model, h in zip(setup.models, setup.hparams)]
    worst = {"loss": 0.0, "gradients": 0.0, "parameters": 0.0, "bn_statistics": 0.0}
    nan_loss_is_nan = None
    for step, (inputs, targets) in enumerate(setup.batches):
        if step == 1:
            lrs = [0.01, 0.02, 0.03]
            grouped.set_learning_rates(lrs)
            for optimizer, lr in zip(optimizers, lrs):
                optimizer.param_groups[0]["lr"] = lr
        pack_loss, _, _ = grouped.train_step(inputs, targets, 0, [])
        batch = targets.shape[1]
        for k, (model, method, optimizer) in enumerate(zip(setup.models, setup.methods,
                                                           optimizers)):
            if k == nan_member:
                nan_loss_is_nan = bool(torch.isnan(pack_loss[k]).item())
                continue
            model.train()
            loss = method.loss(model(inputs[k * batch:(k + 1) * batch]), targets[k], 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state = grouped.model.member_state_dict(k)
            names = [name for name, _ in model.named_parameters()]
            buffers = [name for name, _ in model.named_buffers()]
            errors = {
                "loss": relative_error(pack_loss[k] / batch, loss),
                "gradients": relative_error(
                    [member_slice(grouped.model, n, grouped.model.get_parameter(n).grad, k)
                     for n in names], [model.get_parameter(n).grad for n in names]),
                "parameters": relative_error([state[n] for n in names],
                                             [model.get_parameter(n) for n in names]),
                "bn_statistics": relative_error([state[n] for n in buffers],
                                                [model.get_buffer(n) for n in buffers])}
            for what, error in errors.items():
                worst[what] = max(worst[what], error)
    return {**worst, "nan_member": nan_member, "nan_member_loss_is_nan": nan_loss_is_nan}


def check_grouped_exact_fp64(ctx: Context) -> tuple[bool, dict[str, Any]]:
    import torch

    values = {"cudnn": bool(ctx.on_cuda and torch.backends.cudnn.is_available()),
              "all_finite": grouped_against_plain(ctx, None),
              "one_nan_member": grouped_against_plain(ctx, 1)}
    finite_ok = all(values[case][what] <= FP64_RTOL for case in ("all_finite", "one_nan_member")
                    for what in ("loss", "gradients", "parameters", "bn_statistics"))
    return finite_ok and values["one_nan_member"]["nan_member_loss_is_nan"] is True, values


def pack_against_alone(ctx: Context, numerics) -> tuple[dict[str, float], Any]:
    """The first step of the engine's GroupedStep against its SingleModelStep per member
    (float32 weights, ``numerics``): relative errors of the losses and the BN statistics, and
    the pack's losses."""
    import torch

    from ltbench.api import StepContext
    from ltbench.engine.steps import GroupedStep, SingleModelStep

    setup = pack_setup(ctx, torch.float32, numerics)
    grouped = GroupedStep(setup.models, setup.methods, setup.hparams, ctx.device, numerics)
    singles = [SingleModelStep(model, method, h, ctx.device, numerics)
               for model, method, h in zip(setup.models, setup.methods, setup.hparams)]
    contexts = [StepContext(lr=float(h["lr"]), precision=numerics.precision(),
                            meta_batch=lambda: None, seed=seed)
                for seed, h in enumerate(setup.hparams)]
    inputs, targets = setup.batches[0]
    batch = targets.shape[1]
    pack_loss, _, _ = grouped.train_step(inputs, targets, 0, contexts)
    alone_loss, pack_stats, alone_stats = [], [], []
    for k, single in enumerate(singles):
        loss, _, _ = single.train_step(inputs[k * batch:(k + 1) * batch], targets[k:k + 1], 0,
                                       contexts[k:k + 1])
        alone_loss.append(loss)
        state = grouped.model.member_state_dict(k)
        buffers = [name for name, _ in single.model.named_buffers()
                   if not name.endswith("num_batches_tracked")]
        pack_stats += [state[name] for name in buffers]
        alone_stats += [single.model.get_buffer(name) for name in buffers]
    return {"loss": relative_error(pack_loss, torch.cat(alone_loss)),
            "bn_statistics": relative_error(pack_stats, alone_stats)}, pack_loss


def check_pack_vs_alone(ctx: Context) -> tuple[bool, dict[str, Any]]:
    from ltbench.engine.steps import Numerics

    kind = ctx.device.type
    fp32, fp32_loss = pack_against_alone(ctx, Numerics(kind, bf16=False,
                                                        channels_last=ctx.on_cuda))
    bf16, bf16_loss = pack_against_alone(ctx, Numerics(kind, bf16=True, channels_last=True))
    # bf16 against fp32: the rounding autocast adds, the scale of the bf16 bound (and proof
    # that the bf16 step did run in bf16)
    values = {"fp32": fp32, "bf16": bf16, "fp32_rtol": FP32_RTOL, "bf16_rtol": BF16_RTOL,
              "bf16_loss_vs_fp32_loss": relative_error(bf16_loss, fp32_loss)}
    passed = (max(fp32.values()) <= FP32_RTOL and max(bf16.values()) <= BF16_RTOL
              and values["bf16_loss_vs_fp32_loss"] > 0)
    return passed, values


# --- 5. the meta gradient in bf16 ----------------------------------------------------------

def check_meta_gradient_bf16(ctx: Context) -> tuple[bool, dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    from ltbench import registry
    from ltbench.api import StepContext
    from ltbench.engine.augment import DeviceImages
    from ltbench.engine.models import build_backbone
    from ltbench.engine.samplers import EpochSampler
    from ltbench.engine.steps import Numerics
    from ltbench.engine.train import PackMember, build_step, learning_rate, train_epoch
    from ltbench.methods.l2rw import l2rw_weights
    from ltbench.methods.lookahead import meta_gradient

    sizes, device = ctx.sizes, ctx.device
    _, data, hparams = _bench_inputs(ctx, (1,))
    batch = sizes.bench_batch
    count = min(len(data.labels), sizes.meta_train_steps * batch)
    pick = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))[:count]
    numerics = Numerics.for_device(device)
    images = DeviceImages(data.images[pick], data.labels[pick], hparams["mean"], hparams["std"],
                          int(hparams["pad"]), hparams["pad_mode"], device,
                          channels_last=numerics.channels_last)
    counts = torch.tensor(data.class_counts, dtype=torch.float64, device=device)
    member = PackMember(registry.load("method", "ce")(counts, hparams), hparams, 0)
    model = build_backbone("resnet32", len(data.class_counts), "linear",
                           torch.Generator().manual_seed(0))
    step = build_step([model], [member], device, numerics)
    generator = torch.Generator(device=device).manual_seed(1)
    sampler = EpochSampler("instance-balanced", images.labels, len(data.class_counts), 1)
    epochs = math.ceil(sizes.meta_train_steps * batch / count)
    for epoch in range(epochs):
        lr = learning_rate(epoch, hparams)
        step.set_learning_rates([lr])
        context = StepContext(lr=lr, precision=numerics.precision(), meta_batch=lambda: None,
                              seed=0)
        train_epoch(step, images, epoch, batch, [generator], [sampler], [context])
    trained, step_size = step.trained_models()[0], lr
    # A balanced meta batch: the first meta_per_class images of every class.
    labels = data.labels
    meta_index = torch.cat([torch.nonzero(labels == c).flatten()[:sizes.meta_per_class]
                            for c in range(len(data.class_counts))])
    meta_images = DeviceImages(data.images[meta_index], labels[meta_index], hparams["mean"],
                               hparams["std"], int(hparams["pad"]), hparams["pad_mode"],
                               device, channels_last=numerics.channels_last)

    def eps_gradient(inputs, targets, meta_inputs, meta_targets, precision):
        network = copy.deepcopy(trained)  # each forward updates BN statistics: same start
        network.train()
        with precision():
            logits = network(inputs)
        losses = F.cross_entropy(logits.float(), targets, reduction="none")
        eps = torch.zeros_like(losses, requires_grad=True)
        (gradient,) = meta_gradient(
            network, losses, eps, step_size, meta_inputs,
            lambda meta_logits: F.cross_entropy(meta_logits.float(), meta_targets), (eps,))
        return gradient.detach()

    fp32_forward = Numerics.for_device(device, "fp32").precision()
    bf16_forward = Numerics.for_device(device, "bf16").precision()
    draws = torch.Generator(device=device).manual_seed(2)
    errors, agreements, weight_errors = [], [], []
    for _ in range(sizes.meta_batches):
        index = torch.randperm(len(images), generator=draws, device=device)[:batch]
        inputs, targets = images.train_batch(index, draws)
        meta_inputs, meta_targets = meta_images.train_batch(
            torch.arange(len(meta_images), device=device), draws)
        exact = eps_gradient(inputs, targets, meta_inputs, meta_targets, fp32_forward)
        rounded = eps_gradient(inputs, targets, meta_inputs, meta_targets, bf16_forward)
        errors.append(relative_error(rounded, exact))
        agreements.append(((rounded < 0) == (exact < 0)).double().mean().item())
        weight_errors.append(relative_error(l2rw_weights(rounded), l2rw_weights(exact)))
    values = {"trained_steps": epochs * math.ceil(count / batch), "data": data.source,
              "batches": sizes.meta_batches, "batch_size": batch,
              "meta_batch_size": len(meta_images), "step_size": step_size,
              "eps_gradient_relative_error_mean": sum(errors) / len(errors),
              "eps_gradient_relative_error_max": max(errors),
              "l2rw_weight_sign_agreement_mean": sum(agreements) / len(agreements),
              "l2rw_weight_sign_agreement_min": min(agreements),
              "l2rw_weights_relative_error_mean": sum(weight_errors) / len(weight_errors)}
    return all(math.isfinite(e) for e in errors), values


# --- 6. the generator through a checkpoint -------------------------------------------------

def check_generator_resume(ctx: Context) -> tuple[bool, dict[str, Any]]:
    import torch

    from ltbench.engine.checkpoint import GeneratorState, ResumeCheckpoint
    from ltbench.spec import derive_seed

    device = ctx.device

    def draws(generator) -> list:
        """What an epoch draws: the order, then crop offsets and flips (DeviceImages)."""
        return [torch.randperm(12406, generator=generator, device=device),
                torch.randint(0, 9, (128,), generator=generator, device=device),
                torch.randint(0, 2, (128,), generator=generator, device=device),
                torch.rand(128, generator=generator, device=device)]

    generator = torch.Generator(device=device).manual_seed(derive_seed(0, "data"))
    draws(generator)  # an epoch before the checkpoint
    checkpoint = ResumeCheckpoint(ctx.scratch / "generator.pt", "gpu-check-generator", every=0)
    checkpoint.save(0, {"data_order": GeneratorState(generator)})
    uninterrupted = draws(generator)
    restored = torch.Generator(device=device).manual_seed(12345)
    loaded = checkpoint.load({"data_order": GeneratorState(restored)})
    resumed = draws(restored)
    equal = [bool(torch.equal(a, b)) for a, b in zip(resumed, uninterrupted)]
    values = {"generator_device": str(generator.device), "checkpoint_epoch": loaded["epoch"],
              "draws_equal": equal}
    return loaded == {"epoch": 0} and all(equal), values


# --- 7. a real CUDA out-of-memory ----------------------------------------------------------

def _fill_device_memory(device, block_bytes: int, most_blocks: int) -> int:
    """Allocate ``block_bytes`` blocks until CUDA runs out (the blocks stay referenced by this
    frame, as a failed run's tensors stay referenced by its traceback); returns the number of
    blocks allocated if it never ran out within ``most_blocks``."""
    import torch

    blocks = []
    for _ in range(most_blocks):
        blocks.append(torch.empty(block_bytes, dtype=torch.uint8, device=device))
    return len(blocks)


def check_cuda_oom(ctx: Context) -> tuple[bool, dict[str, Any]]:
    import torch

    device = ctx.device
    release_memory(device)
    baseline = torch.cuda.memory_allocated(device)
    free, _ = torch.cuda.mem_get_info(device)
    block = 2**30
    record: dict[str, Any] = {"status": "ok", "error": None}
    is_oom, held_gb = False, 0.0
    try:
        allocated = _fill_device_memory(device, block, free // block + 4)
        record["error"] = f"no out-of-memory after {allocated} GiB"
    except Exception as exc:  # the runner's handler: any exception fails the run
        record = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        is_oom = isinstance(exc, torch.OutOfMemoryError)
        held_gb = (torch.cuda.memory_allocated(device) - baseline) / 1e9
    release_memory(device)  # what the runner does after a failed pack
    after = torch.cuda.memory_allocated(device)
    free_after, _ = torch.cuda.mem_get_info(device)
    values = {"free_before_gb": free / 1e9, "held_at_oom_gb": held_gb,
              "record_status": record["status"],
              "record_error": (record["error"] or "").splitlines()[0][:200],
              "is_torch_OutOfMemoryError": is_oom, "allocated_baseline_bytes": baseline,
              "allocated_after_bytes": after, "free_after_gb": free_after / 1e9}
    return is_oom and record["status"] == "failed" and after == baseline, values


# --- 8. and 9. ltbench run in subprocesses -------------------------------------------------

def ltbench(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """``python -m ltbench ARGS`` in a subprocess, its output captured."""
    return subprocess.run([sys.executable, "-m", "ltbench", *map(str, args)],
                          capture_output=True, text=True, timeout=max(30.0, timeout_s))


def _data_args(ctx: Context) -> list[str]:
    """CIFAR-10-LT IF 100 when the data root has it (and not --quick), else tiny synthetic-lt."""
    from ltbench.bench.throughput import has_cifar10_lt

    if not ctx.quick and has_cifar10_lt(ctx.data_root):
        return ["--datasets", "cifar10-lt", "--imb", "100", "--data-root", str(ctx.data_root)]
    sets = [arg for key, value in TINY_SYNTHETIC.items() for arg in ("--set", f"{key}={value}")]
    return ["--datasets", "synthetic-lt", "--imb", "4", *sets]


def _run_args(ctx: Context, store: Path, methods: str, *extra: str) -> list[str]:
    return ["run", "--methods", methods, "--epochs", str(ctx.sizes.run_epochs), "--results",
            str(store), "--device", ctx.device.type, *_data_args(ctx), *extra]


def _records(store: Path):
    from ltbench.store.result_store import ResultStore

    return ResultStore(store).read()


def exception_line(exc: BaseException) -> str:
    """The traceback's last line, ``Type: message``, with the message's first line only."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}"[:300]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _finished(proc: subprocess.CompletedProcess, values: dict[str, Any]) -> bool:
    values["exit_code"] = proc.returncode
    if proc.returncode != 0:
        values["stderr_last_line"] = _last_line(proc.stderr)
    return proc.returncode == 0


def _run_family(ctx, store: Path, methods: str, *extra: str
                ) -> tuple[subprocess.CompletedProcess, dict[str, Any], bool]:
    """``ltbench run --methods METHODS EXTRA...`` in ``store``: the process, the part's values
    (its command and exit code) and whether it exited 0."""
    values: dict[str, Any] = {"command": " ".join(["--methods", methods, *extra])}
    proc = ltbench(_run_args(ctx, store, methods, *extra), ctx.left_s())
    return proc, values, _finished(proc, values)


def _records_ok(records, expected: int, precision: str, values: dict[str, Any]) -> bool:
    values["records"] = {f"{r['method']} seed={r['seed']}": f"{r['status']} {r['precision']}"
                         for r in records.to_dict("records")}
    return (len(records) == expected and (records["status"] == "ok").all()
            and (records["precision"] == precision).all())


def part_loss_family(ctx, store, precision) -> tuple[bool, dict[str, Any]]:
    proc, values, finished = _run_family(ctx, store, "ce,focal,cb-ce,ldam-drw",
                                         "--pack-size", "4")
    if not finished:
        return False, values
    # ce, focal and cb-ce share the linear head; ldam-drw's cosine head trains apart
    values["packed_three"] = "pack of 3" in proc.stderr
    return _records_ok(_records(store), 4, precision, values) and values["packed_three"], values


def part_meta_family(ctx, store, precision) -> tuple[bool, dict[str, Any]]:
    from ltbench.store.result_store import ResultStore

    # meta-ce's meta stage starts in the last epoch; l2rw and mwn re-weight from epoch 0
    meta_start = f"meta_start_epoch={ctx.sizes.run_epochs - 1}"
    _, values, finished = _run_family(ctx, store, "meta-ce,l2rw,mwn", "--set", meta_start)
    if not finished:
        return False, values
    records = _records(store)
    # the meta stage records its per-class weights: proof that it ran
    values["eps_recorded"] = {r["method"]: ResultStore(store).artifact("eps", r["run_id"])
                              is not None for r in records.to_dict("records")}
    return (_records_ok(records, 3, precision, values)
            and all(values["eps_recorded"].values())), values


def part_two_stage(ctx, store, precision) -> tuple[bool, dict[str, Any]]:
    _, values, finished = _run_family(ctx, store, "crt,tau-norm,ncm", "--set",
                                      "stage2_epochs=1")
    if not finished:
        return False, values
    records = _records(store)
    stage1 = records[records["method"] == "ce"]
    stage2 = records[records["method"] != "ce"]
    values["stage1_runs"] = len(stage1)
    values["stage1_reused"] = bool(len(stage1) == 1 and len(stage2) == 3 and
                                   (stage2["stage1_run_id"] == stage1["run_id"].iloc[0]).all())
    return _records_ok(records, 4, precision, values) and values["stage1_reused"], values


def part_two_workers(ctx, store, precision) -> tuple[bool, dict[str, Any]]:
    workers = ["--jobs-per-gpu", "2"] if ctx.on_cuda else ["--jobs", "2"]
    proc, values, finished = _run_family(ctx, store, "ce", "--seeds", "0,1", "--pack-size", "1",
                                         *workers)
    if not finished:
        return False, values
    values["two_workers"] = "in 2 worker processes" in proc.stderr
    return _records_ok(_records(store), 2, precision, values) and values["two_workers"], values


def part_sigterm_resume(ctx, store, precision) -> tuple[bool, dict[str, Any]]:
    """SIGTERM once the run holds its claim (it checkpoints after its current batch and exits
    3), then the same command resumes it to an ok record with every epoch's curve."""
    from ltbench.store.result_store import ResultStore

    epochs = ctx.sizes.sigterm_epochs
    args = _run_args(ctx, store, "ce", "--checkpoint-every", "0")
    args[args.index("--epochs") + 1] = str(epochs)
    values: dict[str, Any] = {"command": f"--methods ce --epochs {epochs}, SIGTERM, again"}
    process = subprocess.Popen([sys.executable, "-m", "ltbench", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + max(30.0, ctx.left_s())
    claims = store / "claims"
    while not (claims.is_dir() and any(claims.glob("*.lock"))):
        if process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    try:
        _, stopped_err = process.communicate(timeout=max(30.0, ctx.left_s()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        values["stopped"] = "still running after SIGTERM"
        return False, values
    values["stopped_exit_code"] = process.returncode
    values["checkpoint_written"] = any((store / "resume").glob("*.pt"))
    if process.returncode != 3:
        values["stderr_last_line"] = _last_line(stopped_err)
        return False, values
    proc = ltbench(args, ctx.left_s())
    if not _finished(proc, values):
        return False, values
    values["resumed"] = " resumed after " in proc.stderr
    values["resumed_mid_epoch"] = " resumed after batch " in proc.stderr
    records = _records(store)
    curves = ResultStore(store).curves(records["run_id"].iloc[0]) if len(records) else None
    values["curve_epochs"] = None if curves is None else len(curves)
    return (_records_ok(records, 1, precision, values) and values["resumed"]
            and values["checkpoint_written"] and values["curve_epochs"] == epochs), values


RUN_PARTS = (("loss_family_packed", part_loss_family), ("meta_family", part_meta_family),
             ("two_stage_family", part_two_stage), ("two_workers", part_two_workers),
             ("sigterm_resume", part_sigterm_resume))


def check_ltbench_run(ctx: Context) -> tuple[bool, dict[str, Any]]:
    from ltbench.engine.steps import Numerics

    precision = Numerics.for_device(ctx.device).precision_name
    values: dict[str, Any] = {"data": " ".join(_data_args(ctx)[:4]),
                              "expected_precision": precision}
    passed = True
    for name, part in RUN_PARTS:
        started = time.monotonic()
        try:
            ok, part_values = part(ctx, ctx.scratch / "stores" / name, precision)
        except Exception as exc:  # one broken part must not hide the others
            ok, part_values = False, {"error": exception_line(exc)}
        part_values["seconds"] = time.monotonic() - started
        part_values["status"] = PASS if ok else FAIL
        print(f"  {name}: {part_values['status']} ({part_values['seconds']:.0f} s)")
        values[name] = part_values
        passed = passed and ok
    return passed, values


def _ms_per_step_of_three(ctx: Context) -> tuple[float, str]:
    """Check 2's ms/step for a pack of 3, interpolated between its N=1 and N=4 rows; else
    :data:`FALLBACK_MS_PER_STEP`."""
    rows = {row["models"]: row["ms_per_step"] for row in
            ctx.measured.get("throughput", {}).get("rows", []) if row["status"] == "ok"}
    if 1 in rows and 4 in rows:
        return rows[1] + (rows[4] - rows[1]) * 2 / 3, "check 2 (N=1 and N=4, interpolated)"
    if 4 in rows:
        return rows[4], "check 2 (N=4)"
    return FALLBACK_MS_PER_STEP, "no measurement from check 2: a guess"


def cifar_run_estimate_s(ctx: Context) -> float:
    """200 epochs × 98 training steps at a pack of 3's ms/step, 15 % more for the test
    evaluation after every epoch (10 grouped forwards of 1,000 images), plus a minute of
    start-up, data loading and shifted evaluations."""
    ms_per_step, _ = _ms_per_step_of_three(ctx)
    return 200 * 98 * 1.15 * ms_per_step / 1000 + 60


def check_cifar10_ce_200(ctx: Context) -> tuple[bool, dict[str, Any]]:
    from ltbench.bench.throughput import has_cifar10_lt

    if not has_cifar10_lt(ctx.data_root):
        raise Skipped(f"no CIFAR-10 under {ctx.data_root}")
    store = ctx.scratch / "stores" / "cifar10_ce_200"
    ms_per_step, source = _ms_per_step_of_three(ctx)
    values: dict[str, Any] = {"estimate_s": cifar_run_estimate_s(ctx),
                              "ms_per_step_used": ms_per_step, "ms_per_step_from": source}
    started = time.monotonic()
    proc = ltbench(["run", "--methods", "ce", "--seeds", "0,1,2", "--pack-size", "3", "--imb",
                    "100", "--datasets", "cifar10-lt", "--data-root", str(ctx.data_root),
                    "--results", str(store), "--device", ctx.device.type], ctx.left_s())
    values["run_s"] = time.monotonic() - started
    if not _finished(proc, values):
        return False, values
    records = _records(store)
    values["top1_err"] = {f"seed {r['seed']}": r["top1_err"] for r in records.to_dict("records")}
    values["top1_err_best_epoch"] = {f"seed {r['seed']}": r["top1_err_best_epoch"]
                                     for r in records.to_dict("records")}
    values["published_top1_err"] = PUBLISHED_CE_ERROR
    check = ltbench(["check", "--results", str(store), "--methods", "ce"], ctx.left_s())
    values["check_exit_code"] = check.returncode
    values["check_rows"] = [line for line in check.stdout.splitlines()
                            if f"{PUBLISHED_CE_ERROR}" in line]
    return (check.returncode == 0 and len(records) == 3
            and (records["status"] == "ok").all()), values


# --- 10. compiled bench rows ---------------------------------------------------------------

def check_compiled_bench(ctx: Context) -> tuple[bool, dict[str, Any]]:
    import torch

    from ltbench.bench import throughput as bench
    from ltbench.engine.steps import Numerics

    settings, data, hparams = _bench_inputs(ctx, (1,))
    settings = replace(settings, warmup=settings.steps)  # the compile pass: same length
    production = Numerics.for_device(ctx.device)
    eager_rows = [row for row in ctx.measured.get("throughput", {}).get("rows", [])
                  if row["models"] == 1 and row["status"] == "ok"]
    values: dict[str, Any] = {"steps": settings.steps}
    passed = True
    for variant, mode in (("B3", "default"), ("B3g", "reduce-overhead")):
        torch.compiler.reset()  # a fresh compile cache per variant, as ltbench bench
        bench._reset_peak_memory(ctx.device)
        row = bench.BenchRow(variant, f"torch.compile mode={mode}", 1, "pending")
        try:
            seconds, warmup_s = bench._engine(settings, data, hparams, 1,
                                              replace(production, compile_mode=mode),
                                              f"gpu_check {variant}", sys.stderr)
            bench._measured(row, seconds, settings, data, ctx.device)
            row.compile_s = max(0.0, warmup_s - seconds)
        except Exception as exc:  # report this variant, still time the other
            row.status = f"failed: {exception_line(exc)}"
        release_memory(ctx.device)
        values[variant] = {"status": row.status, "ms_per_step": row.ms_per_step,
                           "images_per_s": row.images_per_s, "compile_s": row.compile_s,
                           "speedup_vs_eager": (eager_rows[0]["ms_per_step"] / row.ms_per_step
                                                if eager_rows and row.ms_per_step else None)}
        passed = passed and row.status == "ok"
    return passed, values


CHECKS = (
    Check("environment", "the device, the software and IEEE fp32 after ltbench's flags",
          "on CUDA: cudnn.conv and cuda.matmul fp32_precision are 'ieee' after "
          "Numerics.apply_backend_flags(), production numerics bf16 + channels_last",
          costs(10, 2), check_environment),
    Check("throughput", "the epoch loop's speed and memory per pack size; --pack-size auto",
          "every pack size trains (no error, no OOM); ms/step, img/s/model and peak GB/model "
          "reported", costs(60, 10), check_throughput),
    Check("grouped_exact_fp64", "the grouped network computes each member's own function",
          f"float64: losses, gradients, parameters, BN statistics after 2 SGD steps within "
          f"{FP64_RTOL:g} (relative) of the plain models, also beside a NaN member, whose loss "
          f"is NaN", costs(20, 5), check_grouped_exact_fp64),
    Check("pack_vs_alone", "a pack trains like its runs alone in the engine's numerics",
          f"first-step losses and BN statistics: fp32 (TF32 off) within {FP32_RTOL:g}, bf16 "
          f"within {BF16_RTOL:g} (relative)", costs(20, 5), check_pack_vs_alone),
    Check("meta_gradient_bf16", "how far a bf16 θ-forward moves the meta gradient",
          "a measurement: it runs and the errors are finite; relative error of dL_meta/d(eps) "
          "and L2RW weight-sign agreement reported", costs(40, 5), check_meta_gradient_bf16),
    Check("generator_resume", "the device's random stream survives a resume checkpoint",
          "draws after restoring the checkpointed generator equal the uninterrupted draws "
          "(bit for bit)", costs(5, 1), check_generator_resume),
    Check("cuda_oom", "an out-of-memory is a recorded failure that gives its memory back",
          "torch.OutOfMemoryError caught, recorded as status 'failed', memory_allocated back "
          "to its baseline", costs(15, 1), check_cuda_oom, needs_cuda=True),
    Check("ltbench_run", "ltbench run end to end: packs, meta, two-stage, workers, resume",
          "every part exits 0 (the SIGTERM'd run 3) and its records are ok in the device's "
          "automatic precision (bf16 on CUDA); packing, meta stage, stage-1 reuse, two "
          "workers and the resume are seen", costs(150, 60), check_ltbench_run),
    Check("cifar10_ce_200", "the protocol reproduces the published ce baseline",
          f"3 seeds of ce, 200 epochs, CIFAR-10-LT IF 100 in one pack: 'ltbench check' exits 0 "
          f"against the published {PUBLISHED_CE_ERROR} % error", cifar_run_estimate_s,
          check_cifar10_ce_200, full_only=True),
    Check("compiled_bench", "torch.compile and CUDA-graph replay work on the engine's step",
          "bench rows B3 (torch.compile) and B3g (reduce-overhead) run; ms/step and speed-up "
          "over eager reported", costs(120, 5), check_compiled_bench, needs_cuda=True),
)


# --- the run -------------------------------------------------------------------------------

@dataclass
class Entry:
    """One check's line in gpu_check.json."""

    number: int
    name: str
    proves: str
    criterion: str
    status: str = PENDING
    reason: str | None = None
    estimate_s: float | None = None
    seconds: float | None = None
    values: dict[str, Any] = field(default_factory=dict)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # NumPy and torch scalars
        return _json_value(value.item())
    return str(value)


def write_json(path: Path, meta: dict[str, Any], entries: list[Entry]) -> None:
    """The report so far, written to a temporary name and renamed."""
    document = _json_value({**meta, "checks": [asdict(e) for e in entries]})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "<br>".join(_cell(v) for v in value)
    return str(value).replace("|", "/")


def write_markdown(path: Path, meta: dict[str, Any], entries: list[Entry]) -> None:
    lines = [f"# GPU check: {meta['device_name']}", "",
             f"{meta['created_utc']} · ltbench {meta['ltbench_version']} · torch "
             f"{meta['torch_version']} · data root {meta['data_root']} · "
             f"{'quick' if meta['quick'] else 'full'} · budget {meta['budget_s']:.0f} s, "
             f"used {meta['elapsed_s']:.0f} s", "",
             "| # | check | status | pass criterion | seconds |", "|---|---|---|---|---|"]
    for e in entries:
        seconds = f"{e.seconds:.0f}" if e.seconds is not None else "—"
        status = e.status + (f" ({e.reason})" if e.reason else "")
        lines.append(f"| {e.number} | {e.name} | {_cell(status)} | {_cell(e.criterion)} | "
                     f"{seconds} |")
    for e in entries:
        lines += ["", f"## {e.number}. {e.name}: {e.status}", "", f"Proves: {e.proves}.", "",
                  f"Criterion: {e.criterion}."]
        if e.reason:
            lines += ["", f"Reason: {e.reason}"]
        if e.values:
            lines += ["", "| measured | value |", "|---|---|"]
            lines += [f"| {key} | {_cell(value)} |" for key, value in e.values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_check(check: Check, entry: Entry, ctx: Context) -> None:
    """Run one check guarded, filling ``entry``."""
    print(f"[{entry.number}] {check.name}: {check.criterion}", flush=True)
    started = time.monotonic()
    try:
        passed, values = check.run(ctx)
        entry.status, entry.values = (PASS if passed else FAIL), values
        ctx.measured[check.name] = values
    except Skipped as exc:
        entry.status, entry.reason = SKIP, str(exc)
    except Exception as exc:  # a FAIL with the traceback's last line; the next check runs
        traceback.print_exc()
        entry.status = FAIL
        entry.reason = exception_line(exc)
    finally:
        release_memory(ctx.device)
    entry.seconds = time.monotonic() - started


def skip_reason(check: Check, ctx: Context, selected: bool) -> str | None:
    if not selected:
        return "not selected (--only / --skip)"
    if check.needs_cuda and not ctx.on_cuda:
        return "needs CUDA"
    if check.full_only and ctx.quick:
        return "full run only (not with --quick)"
    return None


def run_all(ctx: Context, selected: set[str], out: Path, meta: dict[str, Any],
            started: float) -> list[Entry]:
    entries = [Entry(n, c.name, c.proves, c.criterion) for n, c in enumerate(CHECKS, 1)]
    json_path = out / JSON_NAME
    write_json(json_path, meta, entries)
    for check, entry in zip(CHECKS, entries):
        reason = skip_reason(check, ctx, check.name in selected)
        if reason is None:
            entry.estimate_s = check.estimate_s(ctx)
            if entry.estimate_s > ctx.left_s():
                reason = (f"estimated {entry.estimate_s:.0f} s, {max(0.0, ctx.left_s()):.0f} s "
                          f"of the budget left")
        if reason is not None:
            entry.status, entry.reason = SKIP, reason
        else:
            run_check(check, entry, ctx)
        print(f"[{entry.number}] {check.name}: {entry.status}"
              + (f" ({entry.reason})" if entry.reason else "")
              + (f" in {entry.seconds:.0f} s" if entry.seconds is not None else ""), flush=True)
        meta["elapsed_s"] = time.monotonic() - started
        write_json(json_path, meta, entries)
    meta["finished"] = True
    write_json(json_path, meta, entries)
    write_markdown(out / MARKDOWN_NAME, meta, entries)
    return entries


class BadArguments(Exception):
    """A bad command-line argument: reported as one ``Error: ...`` line, exit code 2."""


def parse_names(text: str | None, option: str) -> set[str] | None:
    """The check names of ``--only`` / ``--skip`` (None when not given)."""
    if text is None:
        return None
    names = {name.strip() for name in text.split(",") if name.strip()}
    known = {check.name for check in CHECKS}
    unknown = sorted(names - known)
    if unknown or not names:
        raise BadArguments(f"{option}: unknown check '{unknown[0]}' (checks: "
                           f"{', '.join(c.name for c in CHECKS)})" if unknown
                           else f"{option}: no check named")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("LTBENCH_DATA_ROOT", "data")),
                        help="folder holding CIFAR-10 [default: $LTBENCH_DATA_ROOT or ./data]")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="wall-clock budget in seconds [default: 480]")
    parser.add_argument("--device", choices=("cuda", "cpu", "auto"), default="cuda")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and synthetic data: the rehearsal")
    parser.add_argument("--only", help="comma-separated check names to run")
    parser.add_argument("--skip", help="comma-separated check names not to run")
    args = parser.parse_args(argv)
    try:
        only, skipped = parse_names(args.only, "--only"), parse_names(args.skip, "--skip")
        if not (math.isfinite(args.budget_s) and args.budget_s > 0):
            raise BadArguments(f"--budget-s must be a positive number, got {args.budget_s}")
        if args.out.exists() and not args.out.is_dir():
            raise BadArguments(f"--out {args.out} is not a folder")
    except BadArguments as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as scratch_dir:
        scratch = Path(scratch_dir)
        ensure_ltbench_importable(scratch)
        import torch

        from ltbench import __version__
        from ltbench.errors import BadInput
        from ltbench.run.runner import resolve_device

        try:
            device = resolve_device(args.device)
        except BadInput as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        selected = {c.name for c in CHECKS} if only is None else only
        selected -= skipped or set()
        ctx = Context(device, args.quick, QUICK if args.quick else FULL, args.data_root,
                      scratch, started + args.budget_s)
        meta = {"script": "benchmarks/gpu_check.py", "command": sys.argv,
                "ltbench_version": __version__,
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "device": device.type,
                "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                else platform.processor() or platform.machine()),
                "torch_version": torch.__version__, "data_root": str(args.data_root),
                "quick": args.quick, "budget_s": args.budget_s, "elapsed_s": 0.0,
                "finished": False}
        entries = run_all(ctx, selected, args.out, meta, started)
    print(f"wrote {args.out / JSON_NAME} and {args.out / MARKDOWN_NAME}")
    return 1 if any(e.status == FAIL for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
