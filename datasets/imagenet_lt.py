"""ImageNet-LT (Liu et al., Large-Scale Long-Tailed Recognition in an Open World, CVPR 2019,
arXiv:1904.05160): 1,000 classes, 115,846 training images (1,280 … 5 per class), tested on the
50,000 ILSVRC-2012 validation images (datasets.md §1, §3.2).

Layout: ``<data root>/ImageNet_LT/`` with ``ImageNet_LT_train.txt`` and ``ImageNet_LT_test.txt``
and the ImageNet-2012 images below it at the lists' paths (``train/<wnid>/…``,
``val/<wnid>/…``); see :mod:`.split_lists` for everything the split-list datasets share.

Protocols (protocols.md §2.2; augmentation of ``facebookresearch/classifier-balancing :
data/dataloader.py``: RandomResizedCrop 224 + flip + ColorJitter 0.4/0.4/0.4, test Resize 256 +
CenterCrop 224, ImageNet mean/std, datasets.md §5):

* ``decoupling`` (default; Kang et al., ICLR 2020, arXiv:1910.09217, stage 1,
  ``config/ImageNet_LT/feat_*.yaml``): ResNeXt-50 32x4d, 90 epochs, batch 512, SGD lr 0.2,
  momentum 0.9, weight decay 5e-4, cosine to 0;
* ``lade`` (Hong et al., CVPR 2021, arXiv:2012.00321; ``hyperconnect/LADE :
  config/ImageNet_LT/lade.yaml`` and README): the same with 180 epochs, batch 256, lr 0.05.

ltbench evaluates the test list every 5 epochs and after the last (the references evaluate their
validation list every epoch; the headline number is the final epoch's either way).
"""

from __future__ import annotations

from .reference_counts import IMAGENET_LT_TRAIN
from .split_lists import FixedSplitDataset, KnownFile, imagenet_protocol

#: ImageNet normalisation (facebookresearch/classifier-balancing : data/dataloader.py).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ColorJitter(brightness, contrast, saturation) strength of the same file (hue 0).
IMAGENET_JITTER = 0.4

_DECOUPLING = imagenet_protocol(
    backbone="resnext50_32x4d", epochs=90, batch_size=512, lr=0.2, weight_decay=5e-4,
    color_jitter=IMAGENET_JITTER, mean=IMAGENET_MEAN, std=IMAGENET_STD)


class ImageNetLT(FixedSplitDataset):
    name = "imagenet-lt"
    folder = "ImageNet_LT"
    summary = ("ImageNet-LT: 1,000 classes, 115,846 training images (1,280 ... 5), test = "
               "ILSVRC-2012 val (50/class); split lists, decoded cache ('data prepare')")
    paper = ("Liu et al., Large-Scale Long-Tailed Recognition in an Open World, CVPR 2019, "
             "arXiv:1904.05160 (split lists of facebookresearch/classifier-balancing)")
    natural_imb_factor = 256.0
    lists = {
        "train": KnownFile("ImageNet_LT_train.txt", 115_846,
                           "efdbdad4f050237c310b2f354cf95a8b1d7c8d57a63c4ea4bb6bf2bcb012f37f"),
        "test": KnownFile("ImageNet_LT_test.txt", 50_000,
                          "d1590191cf8a71fada7b1aaedaa2d139a2aea93ff2f1b755319d0bd8dbaa55d5"),
    }
    reference_counts = IMAGENET_LT_TRAIN
    default_protocol = "decoupling"
    protocols = {
        "decoupling": _DECOUPLING,
        "lade": {**_DECOUPLING, "epochs": 180, "batch_size": 256, "lr": 0.05},
    }
