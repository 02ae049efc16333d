"""Places-LT (Liu et al., CVPR 2019, arXiv:1904.05160): 365 classes, 62,500 training images
(4,980 … 5 per class), tested on 36,500 Places-365 validation images (datasets.md §1, §3.2).

Layout: ``<data root>/Places_LT/`` with ``Places_LT_train.txt`` and ``Places_LT_test.txt`` and
the Places-365 images below it at the lists' paths (``train/<class>/…``, ``val/…``); see
:mod:`.split_lists`.

Protocol ``lade`` (default; ``hyperconnect/LADE : config/Places_LT/ce.yaml`` @ 150181e4,
protocols.md §2.3): ResNet-152 initialised from ImageNet pre-training, 30 epochs, batch 128, SGD
momentum 0.9, weight decay 5e-4, classifier lr 0.1 and backbone lr 0.001
(``backbone_lr_factor`` 0.01), x0.1 every 10 epochs, ImageNet augmentation and normalisation
(``facebookresearch/classifier-balancing : data/dataloader.py``, the same pipeline as
ImageNet-LT). Deviation: the reference loads Caffe-converted ResNet-152 weights
(``caffe: True``); ltbench uses torchvision's ImageNet weights (``pretrained=imagenet``), or the
state_dict file given with ``--set pretrained=PATH``.
"""

from __future__ import annotations

from ltbench.hparams import EpochOf

from .imagenet_lt import IMAGENET_JITTER, IMAGENET_MEAN, IMAGENET_STD
from .reference_counts import PLACES_LT_TRAIN
from .split_lists import FixedSplitDataset, KnownFile, imagenet_protocol


class PlacesLT(FixedSplitDataset):
    name = "places-lt"
    folder = "Places_LT"
    summary = ("Places-LT: 365 classes, 62,500 training images (4,980 ... 5), test 36,500 "
               "(100/class); ImageNet-pretrained ResNet-152; decoded cache ('data prepare')")
    paper = ("Liu et al., Large-Scale Long-Tailed Recognition in an Open World, CVPR 2019, "
             "arXiv:1904.05160 (split lists of facebookresearch/classifier-balancing)")
    natural_imb_factor = 996.0
    lists = {
        "train": KnownFile("Places_LT_train.txt", 62_500,
                           "726c4871dcbf07ce2f857703bfe32e9a83ffbf52d704239f6d95c4f4f4c247f7"),
        "test": KnownFile("Places_LT_test.txt", 36_500,
                          "44eee8441c8098c59195465abede425721bc35525d75209f9433b161a6eb37bc"),
    }
    reference_counts = PLACES_LT_TRAIN
    default_protocol = "lade"
    protocols = {
        "lade": imagenet_protocol(
            backbone="resnet152", pretrained="imagenet", epochs=30, batch_size=128, lr=0.1,
            backbone_lr_factor=0.01, weight_decay=5e-4, lr_schedule="step",
            lr_milestones=(EpochOf(10), EpochOf(20)), lr_decay=0.1,
            color_jitter=IMAGENET_JITTER, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    }
