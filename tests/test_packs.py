"""Packs: N runs trained as one grouped network equal the N runs trained alone.

The oracle is the plain engine: :class:`CifarResNet` models with ``torch.optim.SGD`` stepped one
at a time (:class:`SingleModelStep`; :func:`train`). Relative errors are over a run's whole
vector (all its gradients, parameters or BN statistics) unless said otherwise.

* float64: the grouped network's logits, gradients and BN statistics, and the grouped step's
  per-step losses, gradients, parameters and BN statistics over several SGD steps, equal the
  plain ones tensor by tensor to 1e-10 … 1e-12: the grouped network computes the same function
  and the fused per-model SGD the same update.
* float32 (CPU, as CI runs): grouped and plain convolutions are different kernels that round
  differently, and at initialisation this network amplifies rounding (a plain fp32 gradient is
  up to 3e-3 from the float64 one, depending on the seed), so fp32 agreement is checked where
  rounding has not yet been amplified: the first step's losses and BN statistics (≤ 1e-5), both
  gradients within the fp32 floor of the exact one, and for whole runs the first losses (≤ 1e-5)
  and the final per-class accuracies (exact).
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ltbench import registry
from ltbench.api import StepContext
from ltbench.engine.augment import DeviceImages
from ltbench.engine.grouped import GroupedOptionAShortcut, GroupedResNet, PackSGD, member_view
from ltbench.engine.models import OptionAShortcut, build_backbone
from ltbench.engine.progress import RunProgress
from ltbench.engine.steps import GroupedStep, Numerics, SingleModelStep, build_optimizer
from ltbench.engine.train import PackMember, train_alone, train_pack
from ltbench.hparams import resolve_run

CPU = torch.device("cpu")
FP32 = Numerics("cpu", bf16=False, channels_last=False)
RTOL = 1e-5
#: Measured distance of a fp32 ResNet-32 gradient at initialisation from the float64 one, plain
#: or grouped (up to 2.7e-3 on these batches), with margin.
FP32_GRADIENT_FLOOR = 1e-2
#: Tiny synthetic-lt: 4 classes, counts 24/11/5/2 at IF 10 (42 images: 16 + 16 + 10 per epoch).
DATA_OPTIONS = {"classes": "4", "n_max": "24", "test_per_class": "5", "batch_size": "16"}


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_close(actual, expected, what: str, rtol: float = RTOL) -> None:
    """``||actual - expected|| ≤ rtol · ||expected||`` over all the tensors given (one tensor or
    a list, compared as one concatenated vector)."""
    if isinstance(actual, torch.Tensor):
        actual, expected = [actual], [expected]
    error = relative_error(actual, expected)
    assert error <= rtol, f"{what}: relative error {error:.3g}"


def relative_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    """``||actual - expected|| / ||expected||`` of the concatenated tensors."""
    a = torch.cat([t.detach().double().flatten() for t in actual])
    b = torch.cat([t.detach().double().flatten() for t in expected])
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def member_slice(grouped: GroupedResNet, name: str, tensor: torch.Tensor, k: int):
    """Model ``k``'s part of the grouped ``tensor`` stored under ``name``, by hand: the heads
    stack the models, everything else concatenates them along dimension 0."""
    return tensor[k] if name.startswith("head.") else tensor.chunk(grouped.models)[k]


def hparams_for(method: str, **overrides: str) -> dict:
    return resolve_run(registry.load("dataset", "synthetic-lt"), registry.load("method", method),
                       {**DATA_OPTIONS, **overrides})


def tiny_data(method: str = "ce"):
    dataset = registry.load("dataset", "synthetic-lt")()
    return dataset.load(None, 10.0, "exp", 0, hparams_for(method))


def recording(method_cls: type) -> type:
    """``method_cls`` that also keeps every batch loss it returns (detached)."""

    class Recording(method_cls):
        def __init__(self, class_counts, hparams):
            super().__init__(class_counts, hparams)
            self.batch_losses: list[torch.Tensor] = []

        def loss(self, logits, targets, epoch):
            value = super().loss(logits, targets, epoch)
            self.batch_losses.append(value.detach())
            return value

    return Recording


def make_method(name: str, hparams: dict, counts: list[int], record: bool = False):
    cls = registry.load("method", name)
    return (recording(cls) if record else cls)(torch.tensor(counts, dtype=torch.float64), hparams)


# --- the grouped network -------------------------------------------------------------------

@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_grouped_network_equals_separate_models_in_float64(head):
    """Logits, every gradient and every BN running statistic, tensor by tensor."""
    models = [build_backbone("resnet32", 7, head, generator(seed)).double() for seed in (1, 2, 3)]
    grouped = GroupedResNet.from_models(models)
    for k, model in enumerate(models):  # starts from exactly each model's parameters
        state = grouped.member_state_dict(k)
        assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())

    inputs = [torch.randn(5, 3, 32, 32, generator=generator(10 + k), dtype=torch.float64)
              for k in range(3)]
    targets = [torch.randint(0, 7, (5,), generator=generator(20 + k)) for k in range(3)]
    logits = grouped(torch.cat(inputs, dim=1))
    assert tuple(logits.shape) == (3, 5, 7) and logits.dtype == torch.float64
    sum(F.cross_entropy(logits[k], targets[k]) for k in range(3)).backward()
    for k, model in enumerate(models):
        alone = model(inputs[k])
        assert_close(logits[k], alone, f"logits of model {k}", rtol=1e-12)
        F.cross_entropy(alone, targets[k]).backward()
        for name, param in model.named_parameters():
            assert_close(member_slice(grouped, name, grouped.get_parameter(name).grad, k),
                         param.grad, f"gradient {name} of model {k}", rtol=1e-12)
        state = grouped.member_state_dict(k)
        for name, buffer in model.named_buffers():
            assert_close(state[name], buffer, f"{name} of model {k}", rtol=1e-12)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_grouped_shortcut_keeps_the_memory_format(memory_format):
    """Layer 2.0's shortcut (16 → 32 channels, stride 2) of 3 models: every model's block is
    its own OptionAShortcut, exactly, and the output has the input's memory format (CUDA's
    channels-last network would otherwise convert formats around every such block)."""
    x = torch.randn(2, 3 * 16, 8, 8, generator=generator(3)).contiguous(
        memory_format=memory_format)
    out = GroupedOptionAShortcut(32, 3)(x)
    alone = OptionAShortcut(32)
    assert tuple(out.shape) == (2, 3 * 32, 4, 4)
    assert out.is_contiguous(memory_format=memory_format)
    assert torch.equal(out, torch.cat([alone(block) for block in x.chunk(3, dim=1)], dim=1))

def test_pack_sgd_equals_torch_sgd_per_model():
    """Different lr, momentum and weight decay per model, with and without Nesterov: every
    parameter after every step is bit for bit torch.optim.SGD's (CPU, fp32)."""
    for nesterov in (False, True):
        models = [build_backbone("resnet32", 3, "linear", generator(seed)) for seed in (4, 5)]
        settings = [(0.1, 0.9, 2e-4), (0.03, 0.5, 5e-3)]
        grouped = GroupedResNet.from_models(models)
        optimizer = PackSGD(grouped, *zip(*settings), nesterov=nesterov)
        oracles = [torch.optim.SGD(m.parameters(), lr=lr, momentum=mom, weight_decay=wd,
                                   nesterov=nesterov) for m, (lr, mom, wd) in zip(models, settings)]
        for step in range(3):
            if step == 2:  # a learning-rate change between steps, as at an epoch boundary
                optimizer.set_learning_rates([0.01, 0.2])
                oracles[0].param_groups[0]["lr"], oracles[1].param_groups[0]["lr"] = 0.01, 0.2
            for name, param in grouped.named_parameters():
                param.grad = torch.randn(param.shape, generator=generator(100 * step + len(name)))
                views = member_view(name, param.grad, 2)
                for model, view in zip(models, views):
                    model.get_parameter(name).grad = view.clone()
            optimizer.step()
            for oracle in oracles:
                oracle.step()
            for k, model in enumerate(models):
                state = grouped.member_state_dict(k)
                for name, param in model.named_parameters():
                    assert torch.equal(state[name], param), f"{name} of model {k}, step {step}"


class DispatchedOps(TorchDispatchMode):
    """Records every aten operator call (the operator and its arguments) while active."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[torch._ops.OpOverload, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args))
        return func(*args, **(kwargs or {}))


def non_overlapping_and_dense(tensor: torch.Tensor) -> bool:
    """c10's definition: the dimensions of size > 1, ordered by stride, tile memory exactly."""
    expected = 1
    for size, stride in sorted(((size, stride) for size, stride
                                in zip(tensor.shape, tensor.stride()) if size != 1),
                               key=lambda dim: dim[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def fused_foreach_route(lists: list[list[torch.Tensor]]) -> bool:
    """The condition under which a ``torch._foreach_*`` call on CUDA runs the fused
    multi-tensor kernels (aten/src/ATen/native/ForeachUtils.h,
    ``check_fast_path_restrictions``): every tensor dense and non-overlapping, with the
    dtype and device of the first list's first tensor, and the tensors at one index of all
    lists of equal sizes and of equal strides in every dimension of size > 1."""
    first = lists[0][0]
    for tensors in lists:
        for lead, tensor in zip(lists[0], tensors, strict=True):
            if (tensor.dtype, tensor.device) != (first.dtype, first.device) \
                    or not non_overlapping_and_dense(tensor) or tensor.shape != lead.shape \
                    or any(size != 1 and a != b for size, a, b
                           in zip(tensor.shape, lead.stride(), tensor.stride())):
                return False
    return True


def pack_sgd_with_gradients(device: torch.device, nesterov: bool):
    """PackSGD over a channels-last grouped network of 3 models (different lr, momentum and
    weight decay) on ``device``, and a function that sets real gradients (a backward, so
    their layout is autograd's)."""
    models = [build_backbone("resnet32", 4, "linear", generator(seed)) for seed in (0, 1, 2)]
    grouped = GroupedResNet.from_models(models).to(device, memory_format=torch.channels_last)
    optimizer = PackSGD(grouped, [0.1, 0.05, 0.2], [0.9, 0.5, 0.9], [2e-4, 0.0, 5e-3], nesterov)
    inputs = torch.randn(2, 9, 32, 32, generator=generator(7)).to(
        device, memory_format=torch.channels_last)

    def backward() -> None:
        optimizer.zero_grad()
        grouped(inputs).sum().backward()

    return optimizer, backward


@pytest.mark.parametrize("nesterov", [False, True])
def test_pack_sgd_step_is_a_few_fused_foreach_calls(nesterov):
    """Every operator one PackSGD.step dispatches, recorded on CPU with a TorchDispatchMode
    (channels-last parameters, as on CUDA): the step is 3 (first step) or 4 multi-tensor
    ``_foreach_*`` calls (one more with Nesterov) over all 95 parameters, and nothing else
    but the gradients' [N, …] views; and every call's tensor lists meet the fused-kernel
    condition (:func:`fused_foreach_route`), so none broadcasts.

    This proves on CPU what decides the CUDA route (CPU foreach kernels are always per-tensor
    loops), as torch 2.14's ForeachUtils.h states it. Only a GPU shows the launches
    themselves (the CUDA test below: a few multi_tensor_apply kernels per step instead of
    ~380 per-tensor ones) and that the GPU machine's torch applies the same condition."""
    optimizer, backward = pack_sgd_with_gradients(CPU, nesterov)
    nesterov_call = ["aten._foreach_addcmul.Scalar"] if nesterov else []
    expected = [["aten._foreach_addcmul.Scalar", *nesterov_call, "aten._foreach_addcmul_.Scalar"],
                ["aten._foreach_addcmul.Scalar", "aten._foreach_mul_.List",
                 "aten._foreach_add_.List", *nesterov_call, "aten._foreach_addcmul_.Scalar"]]
    for step_calls in expected:  # the first step (no momentum buffers yet), then a later one
        backward()
        with DispatchedOps() as ops:
            optimizer.step()
        foreach = [(func, args) for func, args in ops.calls
                   if func.__name__.startswith("_foreach")]
        assert [str(func) for func, _ in foreach] == step_calls
        others = [func for func, _ in ops.calls if not func.__name__.startswith("_foreach")]
        # one [N, …] view per gradient but the heads' two, which are [N, …] already
        assert set(others) == {torch.ops.aten.view.default} and len(others) == 95 - 2
        for func, args in foreach:
            lists = [arg for arg in args if isinstance(arg, list)]
            assert len(lists) in (2, 3) and all(len(tensors) == 95 for tensors in lists)
            assert any(not t.is_contiguous() for t in lists[0])  # channels-last strides
            assert fused_foreach_route(lists), f"{func} takes the per-tensor route"


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="counts CUDA kernel launches; this machine has no CUDA device")
def test_pack_sgd_step_launches_only_fused_kernels_on_cuda():
    """On CUDA one (later, Nesterov) PackSGD step launches only multi_tensor_apply kernels,
    at most 4 per foreach call (95 tensors in chunks), where the per-tensor route launches
    one kernel per parameter and call (5 · 95)."""
    optimizer, backward = pack_sgd_with_gradients(torch.device("cuda"), nesterov=True)
    for _ in range(2):
        backward()
        optimizer.step()
    backward()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        optimizer.step()
        torch.cuda.synchronize()
    kernels = [event.name for event in prof.events()
               if event.device_type == torch.autograd.DeviceType.CUDA]
    assert kernels and all("multi_tensor_apply_kernel" in name for name in kernels), kernels
    assert len(kernels) <= 5 * 4


def float64_gradient(model: torch.nn.Module, method, inputs, targets) -> list[torch.Tensor]:
    """The gradients of ``method``'s loss at a float64 copy of ``model`` (the rounding-free
    reference)."""
    reference = copy.deepcopy(model).double()
    method.loss(reference(inputs.double()), targets, 0).backward()
    return [p.grad for p in reference.parameters()]


STEP_METHODS = ("ce", "focal", "logit-adjust")


def step_setup(dtype: torch.dtype):
    """Three runs (ce, focal, logit-adjust; different seeds, learning rates, momentum and
    weight decay) as one GroupedStep, their models, methods and hparams, and an augmented
    synthetic-lt batch per step for all three: 16, 16 and the partial last 10."""
    data = tiny_data()
    settings = (("0.1", "0.9", "2e-4"), ("0.05", "0.5", "0"), ("0.2", "0.9", "5e-3"))
    hparams = [hparams_for(n, lr=lr, momentum=m, weight_decay=wd)
               for n, (lr, m, wd) in zip(STEP_METHODS, settings)]
    methods = [make_method(n, h, data.class_counts) for n, h in zip(STEP_METHODS, hparams)]
    models = [build_backbone("resnet32", 4, "linear", generator(seed)).to(dtype)
              for seed in (0, 1, 2)]
    grouped = GroupedStep(copy.deepcopy(models), methods, hparams, CPU, FP32)
    images = DeviceImages(data.train_images, data.train_labels, hparams[0]["mean"],
                          hparams[0]["std"], 4, "zero", CPU, channels_last=False)
    order = torch.randperm(len(images), generator=generator(5))
    batches = []
    for step, index in enumerate(order.split(16)):
        inputs, targets = images.train_batch(index.repeat(3), generator(30 + step))
        batches.append((inputs.to(dtype), targets.view(3, len(index))))
    assert [t.shape[1] for _, t in batches] == [16, 16, 10]
    return grouped, models, methods, hparams, batches


@pytest.mark.slow
def test_grouped_step_equals_plain_sgd_steps_in_float64():
    """Per-step losses, every gradient, every parameter after the update and every BN running
    statistic of the grouped step equal those of three plain models stepped by
    ``torch.optim.SGD`` (float64, tensor by tensor, 1e-10), over a full batch and then the
    partial last batch after a learning-rate change (the momentum buffers in use)."""
    grouped, models, methods, hparams, batches = step_setup(torch.float64)
    optimizers = [build_optimizer(model, h) for model, h in zip(models, hparams)]
    for step, (inputs, targets) in enumerate(batches[1:]):
        if step == 1:
            grouped.set_learning_rates([0.01, 0.02, 0.03])
            for optimizer, lr in zip(optimizers, (0.01, 0.02, 0.03)):
                optimizer.param_groups[0]["lr"] = lr
        pack_loss, pack_correct, scored = grouped.train_step(inputs, targets, 0, [])
        batch = targets.shape[1]
        assert scored == [batch] * 3
        for k, (model, method, optimizer) in enumerate(zip(models, methods, optimizers)):
            model.train()
            logits = model(inputs[k * batch:(k + 1) * batch])
            loss = method.loss(logits, targets[k], 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            where = f"run {k}, step {step}"
            assert_close(pack_loss[k] / batch, loss, f"loss of {where}", rtol=1e-10)
            assert pack_correct[k].item() == (logits.argmax(1) == targets[k]).sum().item()
            state = grouped.model.member_state_dict(k)
            for name, param in model.named_parameters():
                grad = member_slice(grouped.model, name, grouped.model.get_parameter(name).grad, k)
                assert_close(grad, param.grad, f"gradient {name} of {where}", rtol=1e-10)
                assert_close(state[name], param, f"{name} of {where}", rtol=1e-10)
            for name, buffer in model.named_buffers():
                assert_close(state[name], buffer, f"{name} of {where}", rtol=1e-10)


@pytest.mark.slow
def test_grouped_step_equals_single_model_steps_in_float32():
    """The engine's two step objects on the first batch, fp32: losses and BN running
    statistics agree to 1e-5 and the correct counts exactly. The gradients of both are within
    :data:`FP32_GRADIENT_FLOOR` of the float64 gradient: at initialisation some seeds' BN
    layers amplify rounding (the plain fp32 gradient of seed 0 is 2e-3 away from the exact
    one), which the float64 test above removes."""
    grouped, models, methods, hparams, batches = step_setup(torch.float32)
    singles = [SingleModelStep(m, method, h, CPU, FP32)
               for m, method, h in zip(models, methods, hparams)]
    contexts = [StepContext(lr=float(h["lr"]), precision=FP32.precision(),
                            meta_batch=lambda: None, seed=0) for h in hparams]
    inputs, targets = batches[0]
    batch = targets.shape[1]
    exact = [float64_gradient(single.model, method, inputs[k * batch:(k + 1) * batch],
                              targets[k])
             for k, (single, method) in enumerate(zip(singles, methods))]
    pack_loss, pack_correct, _ = grouped.train_step(inputs, targets, 0, contexts)
    for k, single in enumerate(singles):
        loss, correct, _ = single.train_step(inputs[k * batch:(k + 1) * batch], targets[k:k + 1],
                                             0, contexts[k:k + 1])
        assert_close(pack_loss[k], loss, f"loss of run {k}")
        assert pack_correct[k].item() == correct.item()
        state = grouped.model.member_state_dict(k)
        names = [n for n, _ in single.model.named_parameters()]
        plain_grads = [single.model.get_parameter(n).grad for n in names]
        pack_grads = [member_slice(grouped.model, n, grouped.model.get_parameter(n).grad, k)
                      for n in names]
        assert relative_error(plain_grads, exact[k]) <= FP32_GRADIENT_FLOOR
        assert relative_error(pack_grads, exact[k]) <= FP32_GRADIENT_FLOOR
        buffers = [n for n, _ in single.model.named_buffers()]
        assert_close([state[n] for n in buffers], [single.model.get_buffer(n) for n in buffers],
                     f"BN running statistics of run {k}")


def test_both_steps_release_the_gradients_before_the_forward():
    """One model and a pack: when a step's forward runs, no parameter holds the previous
    step's gradient (so a CUDA-graphed forward never runs while those buffers are
    referenced); after the step every parameter has its new one."""
    grouped, models, methods, hparams, batches = step_setup(torch.float32)
    single = SingleModelStep(models[0], methods[0], hparams[0], CPU, FP32)
    context = StepContext(lr=float(hparams[0]["lr"]), precision=FP32.precision(),
                          meta_batch=lambda: None, seed=0)
    for step, runs in ((single, 1), (grouped, 3)):
        holding_gradients = []
        step.model.register_forward_pre_hook(lambda module, args: holding_gradients.append(
            sum(p.grad is not None for p in module.parameters())))
        for inputs, targets in batches[:2]:
            batch = targets.shape[1]
            step.train_step(inputs[:runs * batch], targets[:runs], 0, [context] * runs)
            assert all(p.grad is not None for p in step.model.parameters())
        assert holding_gradients == [0, 0]

# --- the training loop ---------------------------------------------------------------------

@pytest.mark.parametrize("names, seeds, lrs", [
    (("ce", "focal", "ce-drw"), (0, 1, 2), ("0.002", "0.001", "0.003")),
    (("ldam", "ldam-drw"), (3, 4), ("0.002", "0.001")),
])
@pytest.mark.slow
def test_pack_trains_like_the_runs_alone(names, seeds, lrs):
    """train_pack against train_alone() for each run, fp32, 3 epochs (DRW switches at epoch 2):
    the same batches, schedule and evaluation epochs; the first two steps' losses agree to
    1e-5, and the test accuracies of both evaluations exactly.

    Small learning rates keep this tiny set (42 images, batch 16, no warm-up) from amplifying
    fp32 rounding too fast: at initialisation the plain fp32 gradient is already up to 2e-3
    from the exact one, so the two kernels' losses drift apart step by step (by 3e-5 at the
    third step here; 1e-4 with lr 0.1); exact per-step agreement is checked in float64
    above."""
    data = tiny_data(names[0])
    hparams = [hparams_for(name, lr=lr, epochs="3", eval_every="2")
               for name, lr in zip(names, lrs)]
    packed = [make_method(n, h, data.class_counts, record=True) for n, h in zip(names, hparams)]
    progress = RunProgress("pack", stream=io.StringIO())
    results = train_pack(data, [PackMember(m, h, s) for m, h, s in zip(packed, hparams, seeds)],
                         CPU, progress, numerics=FP32)
    assert progress.done == progress.total == 3 * 3
    for k, (name, h, seed) in enumerate(zip(names, hparams, seeds)):
        alone_method = make_method(name, h, data.class_counts, record=True)
        alone = train_alone(data, alone_method, h, seed, CPU, numerics=FP32)
        assert results[k].status == alone.status == "ok"
        assert results[k].epochs_completed == alone.epochs_completed == 3
        assert len(packed[k].batch_losses) == len(alone_method.batch_losses) == 9
        assert_close(torch.stack(packed[k].batch_losses[:2]),
                     torch.stack(alone_method.batch_losses[:2]), f"first losses of {name}")
        np.testing.assert_array_equal(results[k].curves["lr"], alone.curves["lr"])
        np.testing.assert_array_equal(results[k].curves["test_acc"], alone.curves["test_acc"])
        np.testing.assert_array_equal(results[k].per_class_correct, alone.per_class_correct)
        assert results[k].per_class_total.tolist() == alone.per_class_total.tolist() == [5] * 4
    # every run trained on its own stream: the first losses differ between runs
    assert len({m.batch_losses[0].item() for m in packed}) == len(names)


def test_a_diverged_run_stops_and_the_others_go_on():
    data = tiny_data()
    hparams = [hparams_for("ce", epochs="3"), hparams_for("ce", epochs="3", lr="1e30")]
    methods = [make_method("ce", h, data.class_counts) for h in hparams]
    ok, diverged = train_pack(data, [PackMember(m, h, 0) for m, h in zip(methods, hparams)], CPU)
    assert diverged.status == "diverged" and diverged.epochs_completed < 3
    assert diverged.error == f"non-finite training loss in epoch {diverged.epochs_completed}"
    assert len(diverged.curves) == diverged.epochs_completed + 1
    assert ok.status == "ok" and ok.epochs_completed == 3 and len(ok.curves) == 3
    assert np.isfinite(ok.curves["train_loss"]).all() and ok.per_class_correct.sum() > 0


def test_runs_that_cannot_share_a_pack_are_rejected():
    data = tiny_data()
    ce = hparams_for("ce")
    with pytest.raises(ValueError, match="batch_size"):
        other = hparams_for("ce", batch_size="8")
        train_pack(data, [PackMember(make_method("ce", h, data.class_counts), h, 0)
                          for h in (ce, other)], CPU)
    with pytest.raises(ValueError, match="head"):
        ldam = hparams_for("ldam")
        train_pack(data, [PackMember(make_method("ce", ce, data.class_counts), ce, 0),
                          PackMember(make_method("ldam", ldam, data.class_counts), ldam, 0)], CPU)
    meta_hparams = hparams_for("l2rw", protocol="jamal", n_max="40")
    meta = make_method("l2rw", meta_hparams, data.class_counts)
    with pytest.raises(ValueError, match="train alone"):
        GroupedStep([build_backbone("resnet32", 4, "linear", generator(s)) for s in (0, 1)],
                    [meta, meta], [meta_hparams] * 2, CPU, FP32)


def test_channels_last_grouped_step_equals_contiguous():
    """The channels-last layout (the CUDA default) of the grouped input, network and test
    forward, checked on CPU: the first step's losses and the evaluation counts agree."""
    results = {}
    for channels_last in (False, True):
        numerics = Numerics("cpu", bf16=False, channels_last=channels_last)
        grouped, _, _, _, batches = step_setup(torch.float32)
        grouped = GroupedStep([build_backbone("resnet32", 4, "linear", generator(s))
                               for s in (0, 1, 2)], grouped.methods,
                              [hparams_for(n) for n in STEP_METHODS], CPU, numerics)
        inputs, targets = batches[0]
        inputs = inputs.contiguous(memory_format=numerics.memory_format)
        loss, _, _ = grouped.train_step(inputs, targets, 0, [])
        data = tiny_data()
        test = DeviceImages(data.test_images, data.test_labels, hparams_for("ce")["mean"],
                            hparams_for("ce")["std"], 0, "zero", CPU, channels_last=channels_last)
        results[channels_last] = (loss, grouped.evaluate(test, 4))
    assert_close(results[True][0], results[False][0], "first-step losses")
    np.testing.assert_array_equal(results[True][1].correct, results[False][1].correct)
    np.testing.assert_allclose(results[True][1].calibration, results[False][1].calibration,
                               rtol=1e-5)
    assert results[True][1].correct.shape == (3, 4)
    assert results[True][1].correct.sum(axis=1).max() <= 20
