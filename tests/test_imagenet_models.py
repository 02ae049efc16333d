"""The ImageNet-scale backbones, pretrained weights, the cosine schedule and the split lr."""

from __future__ import annotations

import math

import pytest
import torch

from ltbench.engine.imagenet_models import TorchvisionResNet, pretrained_state
from ltbench.engine.models import NormedLinear, build_backbone
from ltbench.engine.steps import build_optimizer
from ltbench.engine.train import learning_rate
from ltbench.errors import BadInput


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,params", [
    # torchvision's documented sizes with the 1000-class fc (pytorch/vision : torchvision/models,
    # ``_meta["num_params"]``): ResNet-50 25,557,032; ResNeXt-50 32x4d 25,028,904;
    # ResNet-152 60,192,808.
    ("resnet50", 25_557_032), ("resnext50_32x4d", 25_028_904), ("resnet152", 60_192_808),
    # ResNet-10: stem 9,536 (7x7x3x64 conv + BN) + stages 73,984 + 230,144 + 919,040 +
    # 3,673,088 (two 3x3 convs + BNs each, and a 1x1 conv + BN projection in stages 2-4)
    # + fc 512,000 + 1,000.
    ("resnet10", 5_418_792),
])
def test_backbone_sizes(name, params):
    model = build_backbone(name, 1000, "linear", torch.Generator().manual_seed(0))
    assert isinstance(model, TorchvisionResNet) and count(model) == params


def test_resnet10_is_one_basic_block_per_stage_with_a_512_feature():
    model = build_backbone("resnet10", 7, "cosine", torch.Generator().manual_seed(0))
    assert [len(getattr(model.trunk, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert isinstance(model.head, NormedLinear) and model.head.weight.shape == (512, 7)
    with torch.no_grad():
        features = model.eval().features(torch.zeros(2, 3, 64, 64))
        logits = model(torch.zeros(2, 3, 64, 64))
    assert features.shape == (2, 512) and logits.shape == (2, 7)
    assert logits.abs().max() <= 1.0 + 1e-6  # cosine head


def test_initialisation_comes_only_from_the_generator():
    state = torch.get_rng_state()
    first = build_backbone("resnet10", 5, "linear", torch.Generator().manual_seed(3))
    second = build_backbone("resnet10", 5, "linear", torch.Generator().manual_seed(3))
    other = build_backbone("resnet10", 5, "linear", torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), state)
    for (name, a), b, c in zip(first.state_dict().items(), second.state_dict().values(),
                               other.state_dict().values()):
        assert torch.equal(a, b), name
    conv = first.trunk.conv1.weight
    assert not torch.equal(conv, other.trunk.conv1.weight)
    # Kaiming normal, fan_out = 64 * 7 * 7: std sqrt(2 / 3136) = 0.02525.
    assert conv.std().item() == pytest.approx(math.sqrt(2 / 3136), rel=0.05)
    # The linear head: U(±1/sqrt(512)).
    assert first.head.weight.abs().max() <= 1 / math.sqrt(512)
    assert first.trunk.bn1.weight.eq(1).all() and first.trunk.bn1.bias.eq(0).all()


def test_pretrained_weights_from_a_file_load_into_the_trunk(tmp_path):
    import torchvision.models

    source = torchvision.models.resnet50()
    torch.nn.init.constant_(source.conv1.weight, 0.125)
    torch.save(source.state_dict(), tmp_path / "r50.pth")
    model = build_backbone("resnet50", 3, "linear", torch.Generator().manual_seed(0),
                           pretrained=str(tmp_path / "r50.pth"))
    assert model.trunk.conv1.weight.eq(0.125).all()
    assert torch.equal(model.trunk.layer4[2].bn3.running_var, source.layer4[2].bn3.running_var)
    assert model.head.weight.shape == (3, 2048)  # the head is new, not the file's fc


def test_unusable_pretrained_weights_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="cannot read a state_dict"):
        pretrained_state("resnet152", str(tmp_path / "missing.pth"))
    with pytest.raises(BadInput, match="no pretrained weights for backbone 'resnet10'"):
        pretrained_state("resnet10", "imagenet")
    # ResNet-50 has 318 trunk tensors: 317 missing, and conv1.weight of the wrong shape.
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(BadInput, match=r"the weights do not fit resnet50 \(318 problems, e.g. "
                                       r"missing bn1.bias; missing bn1.num_batches_tracked"):
        pretrained_state("resnet50", str(tmp_path / "wrong.pth"))
    (tmp_path / "notes.txt").write_text("not weights")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for path in (tmp_path / "notes.txt", tmp_path / "tensor.pt", tmp_path):
        with pytest.raises(BadInput, match=f"pretrained={path}: cannot read a state_dict"):
            pretrained_state("resnet50", str(path))


def test_cosine_schedule_per_epoch():
    hparams = {"lr": 0.2, "warmup_epochs": 0, "epochs": 4, "lr_schedule": "cosine",
               "lr_decay": 0.1, "lr_milestones": []}
    # CosineAnnealingLR(T_max=4, eta_min=0) stepped once per epoch: 0.2 (1 + cos(pi e / 4)) / 2.
    assert [learning_rate(e, hparams) for e in range(4)] == pytest.approx(
        [0.2, 0.170710678, 0.1, 0.029289322])
    warm = {**hparams, "warmup_epochs": 2, "epochs": 6}
    assert [learning_rate(e, warm) for e in range(6)] == pytest.approx(
        [0.1, 0.2, 0.2, 0.170710678, 0.1, 0.029289322])


def test_backbone_lr_factor_splits_the_learning_rate():
    model = build_backbone("resnet10", 3, "linear", torch.Generator().manual_seed(0))
    hparams = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False,
               "backbone_lr_factor": 0.01}
    optimizer = build_optimizer(model, hparams)
    backbone, head = optimizer.param_groups
    assert (backbone["lr_factor"], head["lr_factor"]) == (0.01, 1.0)
    assert sum(p.numel() for p in head["params"]) == 512 * 3 + 3
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == count(model)
    plain = build_optimizer(model, {**hparams, "backbone_lr_factor": 1.0})
    assert len(plain.param_groups) == 1
