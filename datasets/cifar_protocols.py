"""The reference CIFAR training protocols, shared by CIFAR-10/100-LT and synthetic-lt.

A protocol is the defaults a dataset offers under a name (``Dataset.protocols``, chosen with
``--set protocol=X``; :func:`ltbench.hparams.resolve_run`): the reference's backbone, schedule,
optimiser, augmentation and normalisation. Epoch-valued entries are
:class:`~ltbench.hparams.EpochOf` so that ``--epochs`` rescales them.
"""

from __future__ import annotations

from ltbench.hparams import EpochOf

#: The LDAM-DRW CIFAR protocol (kaidic/LDAM-DRW : cifar_train.py; protocols.md §2.1):
#: ResNet-32, 200 epochs, batch 128, SGD momentum 0.9 without Nesterov, weight decay 2e-4,
#: lr 0.1 with a 5-epoch linear warm-up (0.02, 0.04, ... per epoch), x0.01 at epochs 160 and
#: 180 (0-based), RandomCrop(32, padding=4) with zero padding + horizontal flip, normalisation
#: mean (0.4914, 0.4822, 0.4465) / std (0.2023, 0.1994, 0.2010). Test set evaluated every epoch.
LDAM_CIFAR = {
    "backbone": "resnet32",
    "epochs": 200,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 2e-4,
    "warmup_epochs": EpochOf(5),
    "lr_milestones": (EpochOf(160), EpochOf(180)),
    "lr_decay": 0.01,
    "pad": 4,
    "pad_mode": "zero",
    "mean": (0.4914, 0.4822, 0.4465),
    "std": (0.2023, 0.1994, 0.2010),
    "eval_every": 1,
    "meta_per_class": 0,
}

#: The Jamal et al. CIFAR protocol (abdullahjamal/Longtail_DA : C-LT/main.py; protocols.md §2.1,
#: §3.7): the same ResNet-32 with a linear head, 200 epochs, batch 100, SGD momentum 0.9 with
#: Nesterov, weight decay 5e-4, lr 0.1 without warm-up, x0.01 at 0-based epochs 159 and 179 (the
#: reference calls ``adjust_learning_rate(optimizer, epoch + 1)`` and decays at e >= 160 / 180),
#: 4-pixel reflect padding + crop + flip, normalisation mean (125.3, 123.0, 113.9)/255 and std
#: (63.0, 62.1, 66.7)/255, test set evaluated every epoch. ``meta_per_class`` = 10 images per
#: class are removed from the training split first as the balanced meta set (datasets.md §2.5).
JAMAL_CIFAR = {
    "backbone": "resnet32",
    "epochs": 200,
    "batch_size": 100,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "warmup_epochs": EpochOf(0),
    "lr_milestones": (EpochOf(159), EpochOf(179)),
    "lr_decay": 0.01,
    "pad": 4,
    "pad_mode": "reflect",
    "mean": (125.3 / 255, 123.0 / 255, 113.9 / 255),
    "std": (63.0 / 255, 62.1 / 255, 66.7 / 255),
    "eval_every": 1,
    "meta_per_class": 10,
}
