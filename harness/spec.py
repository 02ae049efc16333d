"""The identity of one run.

A run is fully described by the fields that can change its numbers: method, dataset, imbalance
factor, count profile, subset seed, training seed, the resolved hyper-parameters and the
harness's major.minor version. Its id is a hash of exactly those fields as canonical JSON, so
it never depends on paths, devices, launch order or the order of names on the command line
(DomainBed hashed its data path into job names, so moving the data re-ran everything).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from . import HARNESS_VERSION
from .errors import BadInput


#: The largest split seed: the legacy ``RandomState`` that draws CIFAR-LT subsets
#: (:func:`ltbench.datasets.profiles.select_subset`) takes seeds below 2^32.
MAX_SPLIT_SEED = 2 ** 32 - 1

#: The count profiles a run's ``profile`` may name (datasets.md §2.2):
#: :func:`ltbench.datasets.profiles.class_counts` gives their per-class counts.
PROFILES = ("exp", "step")


def check_profile(profile: str) -> None:
    """:class:`BadInput` unless ``profile`` is one of :data:`PROFILES`."""
    if profile not in PROFILES:
        raise BadInput(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, floats by ``repr`` (shortest round-trip form)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed for an independent random stream named by ``parts`` (e.g. (seed, 'init'))."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class RunSpec:
    method: str
    dataset: str
    imb_factor: float
    profile: str
    split_seed: int
    seed: int
    hparams: dict[str, Any] = field(hash=False)
    harness_version: str = HARNESS_VERSION

    def identity(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "dataset": self.dataset,
            "imb_factor": float(self.imb_factor),
            "profile": self.profile,
            "split_seed": int(self.split_seed),
            "seed": int(self.seed),
            "hparams": self.hparams,
            "harness_version": self.harness_version,
        }

    @property
    def run_id(self) -> str:
        return hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()[:16]

    @property
    def epochs(self) -> int:
        return int(self.hparams["epochs"])

    def describe(self) -> str:
        return (f"{self.dataset} imb={format_imb(self.imb_factor)} {self.method} "
                f"seed={self.seed}")


def format_imb(imb: float) -> str:
    """100.0 → '100', 12.5 → '12.5'."""
    return str(int(imb)) if float(imb).is_integer() else repr(float(imb))
