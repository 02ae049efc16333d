"""Device placement of ltbench's CUDA path, checked on a CPU-only machine with fake tensors.

Under ``torch._subclasses.fake_tensor.FakeTensorMode`` every tensor has a shape, a dtype and a
device but no data, and an op whose tensor operands lie on two devices raises (a 0-dim CPU
tensor excepted, as on a real GPU; see ``MIXED_DEVICES``). The mode takes real inputs
(``allow_non_fake_inputs``): the CPU data and freshly built CPU models enter it as fake CPU
tensors, so whatever the code under test forgets to move to the device, or creates without
``device=``, meets a device tensor and raises. The outputs are also checked to lie on the
device. (One op is laxer than CUDA: a fake CPU tensor indexed by device indices gives a CPU
tensor where CUDA raises; the mistake surfaces at the next op that meets a device tensor.)
Two fake devices:

* ``cuda:0`` for the forward paths: every method's loss on the plain ResNet-32 and on the
  grouped network, the ``DeviceImages`` batches and the two-stage classifiers, with the
  engine's CUDA :class:`~ltbench.engine.steps.Numerics` (channels-last, the bf16 autocast
  factory);
* ``lazy:0`` for everything that back-propagates (a training step with its optimiser step,
  the meta methods' look-ahead ``torch.autograd.grad``, ``PackSGD``): the autograd engine of a
  CUDA build of torch refuses a backward over ``cuda`` tensors when no driver is present
  ("hasPrimaryContext expects a valid device index"), while it runs a ``lazy`` graph on the CPU
  thread. For placement the two are the same: any non-CPU device mixed with CPU tensors
  raises. The steps get the CUDA numerics explicitly (``Numerics.for_device`` keys them on
  ``device.type == "cuda"``). ``torch.autocast`` has no ``lazy`` backend, so there the heads'
  ``autocast(device_type="lazy", enabled=False)`` is a null context (the same: no autocast is
  active; fixture ``autocast_off_on_lazy``).

What this cannot check, and why (none of it is placement):

* bf16: ``torch.autocast("cuda")`` disables itself without a driver (its warning is
  filtered), so the forwards run in fp32; dtypes are not checked.
* generators: a CUDA ``torch.Generator`` needs a driver, and fake random ops ignore the
  generator's device, so CPU generators stand in for the engine's device generators, whose
  placement stays unchecked.
* host reads: ``.cpu().numpy()`` of a fake tensor has no values, so the evaluation counts,
  τ selection on a validation split (tau-norm and post-hoc LA run without one, τ fixed) and
  NCM's ``class_centroids`` (``torch.bincount``, whose output size depends on the labels'
  values: ``DynamicOutputShapeException``) are out of reach; NCM is checked up to its features
  and its head on fake centroids.
* module moves: the mode memoises every fake tensor it makes through a weak reference, and
  ``Module.to``/``to_empty`` must swap a fake parameter, which ``torch.utils.swap_tensors``
  refuses for a weakly referenced tensor; so that modules built inside the mode (the grouped
  network, cRT's head, MW-Net's weighting network) can move, the mode here keeps that memo
  in a plain dict (strong references; the fakes of one test live until it ends).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_SYNTHETIC
from torch._subclasses.fake_tensor import FakeTensorMode

from ltbench import registry
from ltbench.api import LTData, Method, StepContext
from ltbench.datasets.synthetic_lt import SyntheticLT
from ltbench.engine.augment import DeviceImages
from ltbench.engine.grouped import GroupedResNet
from ltbench.engine.models import build_backbone
from ltbench.engine.steps import GroupedStep, Numerics, SingleModelStep, grouped_input
from ltbench.engine.train import MetaBatches
from ltbench.hparams import parse_overrides
from ltbench.methods.ce import CrossEntropy
from ltbench.methods.jamal import MetaCE
from ltbench.methods.ncm import NearestClassMean
from ltbench.methods.two_stage import image_features
from ltbench.run import grid
from ltbench.spec import RunSpec

FAKE_CUDA = torch.device("cuda", 0)
FAKE_ACCELERATOR = torch.device("lazy", 0)
CUDA_NUMERICS = Numerics.for_device(FAKE_CUDA)
BATCH = 8
PACK = 2
#: How a fake op on two devices fails: torch 2.14 raises FakeTensorDeviceMismatchError (or the
#: convolution's own check), torch 2.11 a RuntimeError naming both devices.
MIXED_DEVICES = "Expected all tensors to be on the same device|found two different devices"
#: Long enough that the staged methods' epochs (``EpochOf(160)`` of 200) fall inside it.
EPOCHS = 10

METHODS = sorted(registry.plugins("method"))
TRAINED_ALONE = [name for name in METHODS if registry.load("method", name).stage1 is None]
GROUPABLE = [name for name in TRAINED_ALONE if registry.load("method", name).groupable()]
TWO_STAGE = [name for name in METHODS if name not in TRAINED_ALONE]

pytestmark = pytest.mark.filterwarnings(
    "ignore:User provided device_type of 'cuda', but CUDA is not available",
    "ignore:CUDA is not available or torch_xla is imported")


@contextlib.contextmanager
def fake_devices() -> Iterator[None]:
    """Fake tensors on any device; real inputs become fake CPU tensors (module docstring)."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    mode.fake_tensor_converter.meta_converter.tensor_memo = {}
    with mode:
        yield


@pytest.fixture(autouse=True)
def cudnn_benchmark_restored(monkeypatch):
    """``Numerics.prepare`` on a cuda device turns cuDNN's autotuner on for the process."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)


@pytest.fixture
def autocast_off_on_lazy(monkeypatch):
    """``torch.autocast`` taking ``device_type="lazy", enabled=False`` as a null context."""
    autocast = torch.autocast

    def autocast_or_nothing(device_type: str, *args, enabled: bool = True, **kwargs):
        if device_type == FAKE_ACCELERATOR.type and not enabled:
            return contextlib.nullcontext()
        return autocast(device_type, *args, enabled=enabled, **kwargs)

    monkeypatch.setattr(torch, "autocast", autocast_or_nothing)


def spec_of(name: str) -> RunSpec:
    (spec,) = grid.expand([name], ["synthetic-lt"], [4.0], [0],
                          overrides=parse_overrides(TINY_SYNTHETIC), epochs=EPOCHS)
    return spec


def data_of(spec: RunSpec) -> LTData:
    return SyntheticLT().load(None, 4.0, "exp", 0, spec.hparams)


def method_on(device: torch.device, cls: type[Method], spec: RunSpec, data: LTData) -> Method:
    """``cls`` built as the engine builds it: float64 class counts on the device."""
    counts = torch.tensor(data.class_counts, dtype=torch.float64, device=device)
    return cls(counts, spec.hparams)


def last_epoch(spec: RunSpec) -> int:
    """The last epoch, where every stage of a staged method (DRW, Jamal, fine-tuning) has
    begun."""
    last = int(spec.hparams["epochs"]) - 1
    stage_starts = [int(spec.hparams[key]) for key in ("drw_epoch", "meta_start_epoch")
                    if key in spec.hparams]
    assert all(start <= last for start in stage_starts), (spec.method, stage_starts)
    return last


def backbone(head: str, seed: int = 0) -> torch.nn.Module:
    return build_backbone("resnet32", 4, head, torch.Generator().manual_seed(seed))


def train_images(data: LTData, spec: RunSpec, device: torch.device) -> DeviceImages:
    hp = spec.hparams
    return DeviceImages(data.train_images, data.train_labels, hp["mean"], hp["std"],
                        int(hp["pad"]), hp["pad_mode"], device, CUDA_NUMERICS.channels_last)


def no_meta_set() -> None:
    return None


def step_context(data: LTData, spec: RunSpec, device: torch.device) -> StepContext:
    """The engine's context of one run: its meta-set batches when it has a meta set."""
    meta_batch: Callable[[], tuple[torch.Tensor, torch.Tensor] | None] = no_meta_set
    if data.meta_images is not None:
        hp = spec.hparams
        meta_images = DeviceImages(data.meta_images, data.meta_labels, hp["mean"], hp["std"],
                                   int(hp["pad"]), hp["pad_mode"], device,
                                   CUDA_NUMERICS.channels_last)
        meta_batch = MetaBatches(meta_images, int(hp.get("meta_batch_size", BATCH)),
                                 torch.Generator().manual_seed(1))
    return StepContext(lr=0.1, precision=CUDA_NUMERICS.precision(), meta_batch=meta_batch,
                       seed=0)


def a_batch(images: DeviceImages, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return images.train_batch(torch.arange(BATCH, device=device), torch.Generator())


def plain_loss_on_fake_cuda(cls: type[Method], spec: RunSpec) -> tuple[torch.Tensor, ...]:
    """``cls``'s ``training_loss`` on the plain network, forward only, at every stage."""
    data = data_of(spec)
    with fake_devices():
        method = method_on(FAKE_CUDA, cls, spec, data)
        model, forward = CUDA_NUMERICS.prepare(backbone(cls.head), FAKE_CUDA)
        inputs, targets = a_batch(train_images(data, spec, FAKE_CUDA), FAKE_CUDA)
        context = step_context(data, spec, FAKE_CUDA)
        outputs = []
        for epoch in (0, last_epoch(spec)):
            loss, logits, scored = method.training_loss(forward, inputs, targets, epoch, context)
            outputs += [loss, logits, scored]
    return tuple(outputs)


def single_model_step_on_fake_accelerator(cls: type[Method], spec: RunSpec,
                                          prepare=lambda method: None) -> tuple[torch.Tensor, ...]:
    """One engine training step (forward, backward, SGD step) of ``cls`` in its last epoch,
    where every stage has begun; ``prepare(method)`` may alter the method first."""
    data = data_of(spec)
    with fake_devices():
        method = method_on(FAKE_ACCELERATOR, cls, spec, data)
        prepare(method)
        step = SingleModelStep(backbone(cls.head), method, spec.hparams, FAKE_ACCELERATOR,
                               CUDA_NUMERICS)
        inputs, targets = a_batch(train_images(data, spec, FAKE_ACCELERATOR), FAKE_ACCELERATOR)
        context = step_context(data, spec, FAKE_ACCELERATOR)
        outputs = step.train_step(inputs, targets[None], last_epoch(spec), [context])[:2]
    return outputs + tuple(step.model.parameters()) + tuple(step.model.buffers())


@contextlib.contextmanager
def raises_mixed_devices(device: torch.device) -> Iterator[None]:
    """Expect the fake op that mixes a CPU tensor with one on ``device``."""
    with pytest.raises(RuntimeError, match=MIXED_DEVICES) as caught:
        yield
    assert "cpu" in str(caught.value) and str(device) in str(caught.value)


def assert_on(device: torch.device, tensors) -> None:
    misplaced = [tuple(t.shape) for t in tensors if t.device != device]
    assert not misplaced, f"tensors of shapes {misplaced} are not on {device}"


# --- the augmentation ---------------------------------------------------------------------

@pytest.mark.parametrize("pad_mode", ["zero", "reflect"])
def test_device_images_serve_batches_on_the_device(pad_mode):
    spec = spec_of("ce")
    data = data_of(spec)
    hp = spec.hparams
    with fake_devices():
        images = DeviceImages(data.train_images, data.train_labels, hp["mean"], hp["std"], 4,
                              pad_mode, FAKE_CUDA, channels_last=True)
        inputs, targets = a_batch(images, FAKE_CUDA)
        evaluated = list(images.eval_batches(5))
    assert inputs.shape == (BATCH, 3, 32, 32) and inputs.dtype == torch.float32
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    assert len(evaluated) == -(-len(data.train_labels) // 5)
    assert_on(FAKE_CUDA, [inputs, targets] + [t for batch in evaluated for t in batch])


# --- every method's loss and training step ------------------------------------------------

@pytest.mark.parametrize("name", GROUPABLE)
def test_loss_on_the_plain_network_stays_on_cuda(name):
    outputs = plain_loss_on_fake_cuda(registry.load("method", name), spec_of(name))
    assert outputs[0].shape == () and outputs[1].shape == (BATCH, 4)
    assert_on(FAKE_CUDA, outputs)


@pytest.mark.parametrize("name", TRAINED_ALONE)
def test_training_step_of_every_method_stays_on_the_device(name, autocast_off_on_lazy):
    """Meta methods included: their look-ahead, meta batches and weighting networks."""
    outputs = single_model_step_on_fake_accelerator(registry.load("method", name), spec_of(name))
    assert_on(FAKE_ACCELERATOR, outputs)


def test_grouped_forward_and_every_groupable_loss_stay_on_cuda():
    heads = {name: registry.load("method", name).head for name in GROUPABLE}
    for head in sorted(set(heads.values())):
        names = [name for name in GROUPABLE if heads[name] == head]
        specs = [spec_of(name) for name in names]
        data = data_of(specs[0])
        with fake_devices():
            methods = [method_on(FAKE_CUDA, registry.load("method", name), spec, data)
                       for name, spec in zip(names, specs)]
            grouped = GroupedResNet.from_models([backbone(head, seed) for seed in range(PACK)])
            model, forward = CUDA_NUMERICS.prepare(grouped, FAKE_CUDA)
            images = train_images(data, specs[0], FAKE_CUDA)
            per_run = torch.stack([a_batch(images, FAKE_CUDA)[0] for _ in range(PACK)])
            logits = forward(grouped_input(per_run, CUDA_NUMERICS.memory_format))
            targets = a_batch(images, FAKE_CUDA)[1]
            losses = [method.loss(logits[n % PACK], targets, epoch)
                      for n, method in enumerate(methods)
                      for epoch in (0, last_epoch(specs[n]))]
        assert logits.shape == (PACK, BATCH, 4) and len(losses) == 2 * len(names)
        assert_on(FAKE_CUDA, [logits] + losses)


def test_grouped_step_with_pack_sgd_stays_on_the_device(autocast_off_on_lazy):
    names = ["ce", "focal"]
    specs = [spec_of(name) for name in names]
    data = data_of(specs[0])
    with fake_devices():
        methods = [method_on(FAKE_ACCELERATOR, registry.load("method", name), spec, data)
                   for name, spec in zip(names, specs)]
        step = GroupedStep([backbone("linear", seed) for seed in range(len(names))], methods,
                           [spec.hparams for spec in specs], FAKE_ACCELERATOR, CUDA_NUMERICS)
        images = train_images(data, specs[0], FAKE_ACCELERATOR)
        inputs, targets = images.train_batch(torch.arange(2 * BATCH, device=FAKE_ACCELERATOR),
                                             torch.Generator())
        step.set_active([True, False])
        step.set_learning_rates([0.1, 0.0])
        outputs = []
        for epoch in (0, 1):  # the second PackSGD step uses the momentum buffers
            outputs += step.train_step(inputs, targets.view(2, -1), epoch, [])[:2]
        outputs += list(step.model.parameters()) + step.optimizer.state_dict()["momentum_buffers"]
    assert_on(FAKE_ACCELERATOR, outputs)


# --- the two-stage classifiers ------------------------------------------------------------

@pytest.mark.parametrize("name", [name for name in TWO_STAGE if name != "ncm"])
def test_two_stage_classifier_stays_on_cuda(name):
    cls = registry.load("method", name)
    spec = spec_of(name)
    data = data_of(spec)
    assert data.val_images is None  # τ fixed: its selection reads accuracies on the host
    with fake_devices():
        method = method_on(FAKE_CUDA, cls, spec, data)
        stage1 = backbone("linear").to(FAKE_CUDA)
        model, forward = CUDA_NUMERICS.prepare(
            method.build_classifier(stage1, data, FAKE_CUDA, seed=0), FAKE_CUDA)
        inputs, targets = a_batch(train_images(data, spec, FAKE_CUDA), FAKE_CUDA)
        with CUDA_NUMERICS.precision()():
            logits = forward(inputs)
        loss = method.loss(logits, targets, 0)
    assert logits.shape == (BATCH, 4)
    assert_on(FAKE_CUDA, [logits, loss] + list(model.parameters()) + list(model.buffers()))


@pytest.mark.parametrize("name", [name for name in TWO_STAGE
                                  if "stage2_epochs" in registry.load("method", name).defaults])
def test_two_stage_training_step_stays_on_the_device(name, autocast_off_on_lazy):
    cls = registry.load("method", name)
    spec = spec_of(name)
    data = data_of(spec)
    with fake_devices():
        method = method_on(FAKE_ACCELERATOR, cls, spec, data)
        stage1 = backbone("linear").to(FAKE_ACCELERATOR)
        classifier = method.build_classifier(stage1, data, FAKE_ACCELERATOR, seed=0)
        step = SingleModelStep(classifier, method, method.stage2_hparams(), FAKE_ACCELERATOR,
                               CUDA_NUMERICS)
        inputs, targets = a_batch(train_images(data, spec, FAKE_ACCELERATOR), FAKE_ACCELERATOR)
        outputs = step.train_step(inputs, targets[None], 0,
                                  [step_context(data, spec, FAKE_ACCELERATOR)])[:2]
        outputs += tuple(step.model.parameters())
    assert_on(FAKE_ACCELERATOR, outputs)


def test_ncm_features_and_head_stay_on_cuda():
    """Up to ``class_centroids`` (see the module docstring): the features NCM averages and its
    head on fake centroids of the right shapes."""
    spec = spec_of("ncm")
    data = data_of(spec)
    with fake_devices():
        stage1 = backbone("linear").to(FAKE_CUDA)
        features, labels = image_features(stage1, data.train_images, data.train_labels,
                                          spec.hparams, FAKE_CUDA)
        head = NearestClassMean(features.mean(dim=0), torch.zeros(4, 64, device=FAKE_CUDA))
        scores = head(features)
    assert features.shape == (len(data.train_labels), 64)
    assert scores.shape == (len(data.train_labels), 4)
    assert_on(FAKE_CUDA, [features, labels, scores])


# --- the check catches a misplaced tensor -------------------------------------------------

class CpuWeightedCE(CrossEntropy):
    """A planted mistake: class weights created without ``device=``, so on the CPU."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits, targets, weight=torch.ones(logits.shape[1]))


def test_a_cpu_tensor_created_inside_a_loss_is_caught():
    with raises_mixed_devices(FAKE_CUDA):
        plain_loss_on_fake_cuda(CpuWeightedCE, spec_of("ce"))


def test_a_cpu_tensor_in_a_meta_step_is_caught(autocast_off_on_lazy):
    """Jamal's class-balanced weights left on the CPU meet the device's per-example losses."""

    def weights_on_cpu(method: MetaCE) -> None:
        method.class_weights = method.class_weights.cpu()

    with raises_mixed_devices(FAKE_ACCELERATOR):
        single_model_step_on_fake_accelerator(MetaCE, spec_of("meta-ce"), weights_on_cpu)


def test_a_module_left_on_the_cpu_is_caught():
    spec = spec_of("ce")
    data = data_of(spec)
    with raises_mixed_devices(FAKE_CUDA):
        with fake_devices():
            inputs, _ = a_batch(train_images(data, spec, FAKE_CUDA), FAKE_CUDA)
            backbone("linear")(inputs)


def test_the_registered_methods_are_all_covered():
    assert {"ce", "ldam-drw", "lade"} <= set(GROUPABLE)
    assert {"meta-ce", "meta-ldam", "l2rw", "mwn", "meta-set-finetune"} <= (
        set(TRAINED_ALONE) - set(GROUPABLE))
    assert set(TWO_STAGE) == {"crt", "lws", "tau-norm", "ncm", "pc-softmax",
                              "logit-adjust-posthoc"}
