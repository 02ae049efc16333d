"""How the engine computes (ltbench.engine.steps.Numerics): precision resolution, IEEE fp32 on
CUDA, fp32 pooled features under bf16 autocast, fp32 meta-learning steps, and what the records
say about it. Runs on the CPU, whose bf16 autocast exercises the same code paths as CUDA's."""

from __future__ import annotations

import contextlib
import functools

import pandas as pd
import pytest
import torch
from helpers import TINY_SYNTHETIC

from ltbench.api import StepContext
from ltbench.engine.grouped import GroupedResNet
from ltbench.engine.imagenet_models import build_torchvision_backbone
from ltbench.engine.models import build_backbone
from ltbench.engine.progress import oversubscription_note
from ltbench.engine.steps import Numerics, cpu_has_native_bf16, use_ieee_fp32
from ltbench.hparams import parse_overrides
from ltbench.methods.jamal import MetaCE
from ltbench.methods.l2rw import LearningToReweight
from ltbench.methods.mwn import MetaWeightNet
from ltbench.run import grid
from ltbench.run.runner import run_grid
from ltbench.store.result_store import ResultStore

CPU = torch.device("cpu")
CPU_BF16 = functools.partial(torch.autocast, device_type="cpu", dtype=torch.bfloat16)


def _images(count: int, seed: int, size: int = 32) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_precision_resolution():
    cuda = torch.device("cuda")  # a device object needs no GPU
    assert Numerics.for_device(cuda) == Numerics("cuda", bf16=True, channels_last=True)
    assert Numerics.for_device(cuda, "fp32") == Numerics("cuda", bf16=False,
                                                         channels_last=True)
    assert Numerics.for_device(CPU, "fp32") == Numerics("cpu", bf16=False, channels_last=False)
    bf16 = Numerics.for_device(CPU, "bf16", deterministic=True)
    assert (bf16.bf16, bf16.channels_last, bf16.deterministic) == (True, True, True)
    assert (bf16.precision_name, bf16.memory_format_name) == ("bf16", "channels_last")
    assert Numerics.for_device(CPU).bf16 == cpu_has_native_bf16()
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32"):
        Numerics.for_device(CPU, "fp16")


def test_bf16_numerics_autocast_on_their_own_device_type():
    conv = torch.nn.Conv2d(3, 4, 3)
    with Numerics("cpu", bf16=True, channels_last=True).precision()():
        assert conv(_images(2, 0)).dtype == torch.bfloat16
    with Numerics("cpu", bf16=False, channels_last=False).precision()():
        assert conv(_images(2, 0)).dtype == torch.float32


@pytest.fixture
def restored_fp32_settings():
    """Put the process-wide fp32 settings back after a test that changes them."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = (conv.fp32_precision, matmul.fp32_precision)
    yield
    conv.fp32_precision, matmul.fp32_precision = before


@pytest.mark.skipif(not hasattr(torch.backends.cudnn, "conv"),
                    reason="this torch has only the legacy allow_tf32 flags")
def test_fp32_numerics_switch_tf32_off(restored_fp32_settings):
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # torch's own default for convolutions
    Numerics("cpu", bf16=False, channels_last=False).apply_backend_flags()
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # nothing is set for CPU runs
    Numerics("cuda", bf16=False, channels_last=True).apply_backend_flags()
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    use_ieee_fp32()  # idempotent, and never reads a legacy flag (that raises once set)


def _bf16_pooled_reference(activations: torch.Tensor) -> torch.Tensor:
    return activations.float().mean(dim=(2, 3))


@pytest.mark.parametrize("backbone", ["resnet32", "resnet10", "grouped"])
def test_pooled_features_stay_fp32_under_bf16_autocast(backbone):
    generator = torch.Generator().manual_seed(0)
    if backbone == "resnet32":
        model, x = build_backbone("resnet32", 10, "linear", generator), _images(4, 1)
    elif backbone == "resnet10":
        model = build_torchvision_backbone("resnet10", 10, "linear", generator, "none")
        x = _images(2, 1, size=64)
    else:
        members = [build_backbone("resnet32", 10, "linear", torch.Generator().manual_seed(s))
                   for s in (0, 1)]
        model, x = GroupedResNet.from_models(members), _images(4, 1).repeat(1, 2, 1, 1)
    model.eval()
    captured = {}
    last_stage = model.layer3 if backbone != "resnet10" else model.trunk.layer4
    last_stage.register_forward_hook(lambda module, args, out: captured.update(out=out))
    with torch.no_grad(), CPU_BF16():
        features = model.features(x)
    activations = captured["out"]
    assert activations.dtype == torch.bfloat16 and features.dtype == torch.float32
    expected = _bf16_pooled_reference(activations)
    if backbone == "grouped":
        expected = expected.unflatten(1, (2, -1)).transpose(0, 1)
    assert torch.allclose(features, expected, rtol=1e-6, atol=1e-6)
    # A bf16 mean would have rounded them to 8 significant bits.
    assert not torch.equal(features, features.bfloat16().float())


def _meta_step(method_cls, name: str, precision, **overrides):
    (spec,) = grid.expand([name], ["synthetic-lt"], [10.0], [0],
                          overrides=parse_overrides([f"{k}={v}" for k, v in overrides.items()]))
    counts = torch.tensor([40.0, 20.0, 10.0, 4.0], dtype=torch.float64)
    method = method_cls(counts, spec.hparams)
    model = build_backbone("resnet32", 4, method.head, torch.Generator().manual_seed(3))
    model.train()
    x, y = _images(8, 4), torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    meta_x, meta_y = _images(4, 5), torch.tensor([0, 1, 2, 3])
    step = StepContext(lr=0.1, precision=precision, meta_batch=lambda: (meta_x, meta_y), seed=0)
    loss, _, _ = method.training_loss(model, x, y, 0, step)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()], method


@pytest.mark.parametrize("method_cls,name", [(MetaCE, "meta-ce"),
                                             (LearningToReweight, "l2rw"),
                                             (MetaWeightNet, "mwn")])
def test_meta_learning_steps_run_in_fp32_whatever_the_forward_precision(method_cls, name):
    overrides = {"meta_start_epoch": "0"} if method_cls is MetaCE else {}
    fp32_loss, fp32_grads, fp32_method = _meta_step(method_cls, name, contextlib.nullcontext,
                                                    **overrides)
    bf16_loss, bf16_grads, bf16_method = _meta_step(method_cls, name, CPU_BF16, **overrides)
    assert torch.equal(bf16_loss, fp32_loss)
    assert all(torch.equal(a, b) for a, b in zip(bf16_grads, fp32_grads))
    summaries = [m.artifacts()["eps_summary"] for m in (fp32_method, bf16_method)]
    assert summaries[0].equals(summaries[1])


def test_the_meta_step_control_bf16_does_change_a_plain_forward():
    """The equality above means something: the same context changes a stage-1 step."""
    fp32_loss, _, _ = _meta_step(MetaCE, "meta-ce", contextlib.nullcontext,
                                 meta_start_epoch="1")
    bf16_loss, _, _ = _meta_step(MetaCE, "meta-ce", CPU_BF16, meta_start_epoch="1")
    assert not torch.equal(bf16_loss, fp32_loss)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_records_state_the_numerics(tmp_path, precision):
    (spec,) = grid.expand(["ce"], ["synthetic-lt"], [4.0], [0],
                          overrides=parse_overrides(TINY_SYNTHETIC), epochs=1)
    store = ResultStore(tmp_path)
    store.ensure_writable()
    run_grid([spec], store, tmp_path, CPU, numerics=Numerics.for_device(CPU, precision))
    row = store.read().iloc[0]
    assert row["status"] == "ok"
    assert (row["precision"], row["memory_format"], row["deterministic"]) == (
        precision, "contiguous" if precision == "fp32" else "channels_last", False)


def test_compile_modes_are_checked():
    assert Numerics.for_device(CPU, "fp32", compile_mode="default").compile_mode == "default"
    with pytest.raises(ValueError, match="compile mode must be one of default, reduce-overhead"):
        Numerics.for_device(CPU, compile_mode="fast")


@pytest.mark.slow
def test_a_compiled_run_matches_the_eager_one_and_says_so(tmp_path):
    """``--compile default`` (torch.compile with inductor, which builds C++ on CPU) trains the
    same run as eager and its record names the mode. Inductor fuses and reorders fp32
    arithmetic, and the epoch's SGD steps (lr 0.1) grow that rounding: measured 4e-4 relative
    on the epoch's mean loss, so 1 % is the bound."""
    (spec,) = grid.expand(["ce"], ["synthetic-lt"], [4.0], [0],
                          overrides=parse_overrides(TINY_SYNTHETIC), epochs=1)
    stores = {}
    for mode in (None, "default"):
        stores[mode] = ResultStore(tmp_path / str(mode))
        stores[mode].ensure_writable()
        run_grid([spec], stores[mode], tmp_path, CPU,
                 numerics=Numerics.for_device(CPU, "fp32", compile_mode=mode))
    eager, compiled = (stores[mode].read().iloc[0] for mode in (None, "default"))
    assert (eager["status"], compiled["status"]) == ("ok", "ok")
    assert pd.isna(eager["compile_mode"]) and compiled["compile_mode"] == "default"
    losses = [stores[mode].curves(spec.run_id)["train_loss"].iloc[0] for mode in stores]
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)


def test_oversubscription_is_named_only_beyond_the_cores(monkeypatch):
    monkeypatch.setattr("ltbench.engine.progress.usable_cores", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (2.4, 0.0, 0.0))
    assert oversubscription_note() == ""
    monkeypatch.setattr("os.getloadavg", lambda: (3.52, 0.0, 0.0))
    assert oversubscription_note() == " (machine oversubscribed: load 3.5 on 2 cores)"


def test_cpu_pool_workers_share_the_cores(monkeypatch):
    from ltbench.run import launchers

    monkeypatch.setattr(launchers, "usable_cores", lambda: 16)
    assert [launchers.worker_threads(n) for n in (1, 2, 3, 16, 40)] == [16, 8, 5, 1, 1]
