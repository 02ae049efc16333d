"""Grouping the pending runs of a grid into packs: runs trained together as one grouped network.

The run stays the unit of identity and storage; the pack is only the unit of execution
(architecture.md §5.1): a run's numbers do not depend on the pack it lands in, its record is
written on its own, and nothing about packing enters its run id.

Runs can share a pack when they load the same data (dataset, imbalance factor, profile, split
seed, the dataset's data options), build the same network (backbone, head kind) and step in
lockstep over the same batches (:data:`PACK_SHARED_HPARAMS`: epochs, batch size, evaluation
period, augmentation, normalisation, Nesterov). They may differ in method, seed, learning-rate
schedule, momentum, weight decay and the methods' own hyper-parameters. Methods with their own
``training_loss`` (the meta-learning methods: their look-ahead steps through one plain model)
always train alone, in packs of one.
"""

from __future__ import annotations

import hashlib
from typing import Hashable

from .. import registry
from ..hparams import PACK_SHARED_HPARAMS
from ..spec import RunSpec, canonical_json

#: Backbones the grouped network implements (:class:`ltbench.engine.grouped.GroupedResNet`);
#: runs of any other backbone train alone.
GROUPED_BACKBONES = ("resnet32",)

#: Estimated training memory of one ResNet-32 at batch 128 in bf16, activations and
#: optimizer state (architecture.md §7: ~0.35 GB of activations per model), with headroom.
#: Not measured on a GPU in this repository yet.
BYTES_PER_MODEL_AT_BATCH_128 = 0.5e9
#: Largest automatic pack (the bench measures N up to 64; beyond 32 the gain is unmeasured).
MAX_AUTO_PACK_SIZE = 32


def pack_key(spec: RunSpec) -> Hashable:
    """Runs with equal keys can train in one pack; a run that trains alone (its method is not
    :meth:`~ltbench.api.Method.groupable` or is a two-stage method, or its backbone is not in
    :data:`GROUPED_BACKBONES`) gets its run id as key (a pack of one)."""
    method_cls = registry.load("method", spec.method)
    if (not method_cls.groupable() or method_cls.stage1 is not None
            or spec.hparams.get("backbone") not in GROUPED_BACKBONES):
        return ("alone", spec.run_id)
    dataset_cls = registry.load("dataset", spec.dataset)
    data_options = {key: spec.hparams.get(key) for key in dataset_cls.data_keys}
    shared = {key: spec.hparams[key] for key in PACK_SHARED_HPARAMS}
    return (spec.dataset, float(spec.imb_factor), spec.profile, spec.split_seed,
            canonical_json(data_options), canonical_json(shared), method_cls.head)


def pack_id(pack: list[RunSpec]) -> str:
    """The name of a pack's worker spec file and resume checkpoint: a run's own id, or for
    several runs a digest of their ids (a pack of other members is another pack)."""
    if len(pack) == 1:
        return pack[0].run_id
    return "pack-" + hashlib.sha256(" ".join(s.run_id for s in pack).encode()).hexdigest()[:16]


def plan_packs(specs: list[RunSpec], pack_size: int) -> list[list[RunSpec]]:
    """``specs`` cut into packs of at most ``pack_size`` compatible runs.

    Deterministic: runs keep the grid's order within a key, keys are taken in the order of
    their first run, and every key is chunked in that order; so an unchanged pending set gives
    the same packs, and ``pack_size = 1`` gives one pack per run in grid order.
    """
    if pack_size < 1:
        raise ValueError(f"pack size must be at least 1, got {pack_size}")
    by_key: dict[Hashable, list[RunSpec]] = {}
    for spec in specs:
        by_key.setdefault(pack_key(spec) if pack_size > 1 else spec.run_id, []).append(spec)
    return [members[start:start + pack_size] for members in by_key.values()
            for start in range(0, len(members), pack_size)]


def auto_pack_size(device, batch_size: int) -> int:
    """The pack size ``--pack-size auto`` picks: 1 on CPU (a grouped network gains nothing
    there); on CUDA as many models as fit in 80 % of the free memory at
    :data:`BYTES_PER_MODEL_AT_BATCH_128` per model (scaled by the batch size), at most
    :data:`MAX_AUTO_PACK_SIZE`."""
    if device.type != "cuda":
        return 1
    import torch

    free_bytes, _ = torch.cuda.mem_get_info(device)
    per_model = BYTES_PER_MODEL_AT_BATCH_128 * batch_size / 128
    return max(1, min(MAX_AUTO_PACK_SIZE, int(0.8 * free_bytes // per_model)))
