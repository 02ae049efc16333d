"""Expanding ``ltbench run`` options into the runs they denote.

Everything the user typed is validated here, before anything is loaded or written: names,
imbalance factors, seeds and ``--set`` keys. A problem raises :class:`BadInput` with one line.
"""

from __future__ import annotations

import difflib
import math

from .. import hparams as hp
from .. import registry
from ..errors import BadInput
from ..integers import parse_int_list
from ..spec import MAX_SPLIT_SEED, RunSpec, check_profile


def parse_imb_factors(text: str) -> list[float]:
    """``'200,100,50'`` → ``[200.0, 100.0, 50.0]``; each a finite number >= 1 (n_max / n_min)."""
    factors = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise BadInput(f"imbalance factor '{part}' is not a number") from None
        if not math.isfinite(value) or value < 1:
            raise BadInput(f"imbalance factor {part} must be a finite number >= 1 "
                           f"(the ratio n_max/n_min, e.g. 100, not 0.01)")
        factors.append(value)
    if not factors:
        raise BadInput(f"no imbalance factor in '{text}'")
    return list(dict.fromkeys(factors))


def parse_seeds(text: str) -> list[int]:
    """``'0,1,2'`` → ``[0, 1, 2]``: training seeds, integers in 0 … 2^63 - 1 (the store's
    int64 ``seed`` column; every generator is seeded through
    :func:`~ltbench.spec.derive_seed`, which takes any integer)."""
    return parse_int_list(text, "seed")


#: The imbalance factor of a run without ``--imb`` on a dataset built for any factor.
DEFAULT_IMB_FACTOR = 100.0


def expand(methods: list[str], datasets: list[str], imb_factors: list[float] | None,
           seeds: list[int],
           *, profile: str = "exp", split_seed: int = 0, overrides: dict[str, str] | None = None,
           epochs: int | None = None, all_methods: bool = False) -> list[RunSpec]:
    """The runs of the grid datasets × imbalance factors × methods × seeds, in that order.

    With ``all_methods`` a method that does not support a dataset is left out of that
    dataset's runs; a method named explicitly for a dataset it does not support is an error.
    A ``--set`` key must be known to at least one (dataset, method) pair of the grid. A method
    that uses a meta set needs ``meta_per_class >= 1``, and every subset must be drawable
    (e.g. a meta set under the ``ldam`` protocol needs unselected images in every class).
    ``imb_factors=None`` (no ``--imb``) gives each dataset its ``natural_imb_factor``, or
    :data:`DEFAULT_IMB_FACTOR` when it has none.
    """
    overrides = overrides or {}
    check_profile(profile)
    if not 0 <= split_seed <= MAX_SPLIT_SEED:
        raise BadInput(f"split seed must be in 0 ... {MAX_SPLIT_SEED}, got {split_seed}")
    specs: list[RunSpec] = []
    known_keys: set[str] = set()
    for dataset in datasets:
        dataset_cls = registry.load("dataset", dataset)
        factors = imb_factors or [dataset_cls.natural_imb_factor or DEFAULT_IMB_FACTOR]
        for method in methods:
            method_cls = registry.load("method", method)
            # A method tied to a protocol (e.g. jamal's meta set) runs only where it exists.
            has_protocol = method_cls.protocol in (None, *dataset_cls.protocols)
            if not has_protocol:
                if all_methods:
                    continue
                raise BadInput(f"method '{method}' does not support dataset '{dataset}'")
            resolved = hp.resolve_run(dataset_cls, method_cls, overrides, epochs)
            known_keys.update(resolved)
            if method_cls.uses_meta_set and resolved.get("meta_per_class", 0) < 1:
                raise BadInput(f"method '{method}' needs a balanced meta set, but protocol "
                               f"'{resolved['protocol']}' of '{dataset}' has meta_per_class "
                               f"{resolved.get('meta_per_class', 0)}; use --set protocol=jamal")
            for imb in factors:
                # Raises for a factor that leaves a class empty, or a meta set that cannot
                # be drawn, before anything runs.
                dataset_cls().check_subset(imb, profile, resolved)
                for seed in seeds:
                    specs.append(RunSpec(method, dataset, imb, profile, split_seed, seed,
                                         resolved))
    unknown = sorted(set(overrides) - known_keys)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known_keys), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise BadInput(f"unknown hyper-parameter '{unknown[0]}' for this grid{hint}")
    if not specs:
        raise BadInput("the grid is empty: no method supports the chosen datasets")
    # Datasets × factors × methods × seeds reads like the tables; the loop above nests
    # methods outside factors so hyper-parameters resolve once per pair.
    order = {(d, i): k for k, (d, i) in enumerate(
        dict.fromkeys((s.dataset, s.imb_factor) for s in specs))}
    specs.sort(key=lambda s: order[(s.dataset, s.imb_factor)])
    return specs


def schedule_notes(specs: list[RunSpec], overrides: dict[str, str] | None = None) -> list[str]:
    """One line per dataset, protocol and epoch count of ``specs`` whose schedule is too short to
    keep its shape (:func:`ltbench.hparams.rescaled_epochs`): which methods, and the fewest
    epochs that would keep it. Their runs rescale proportionally, so stages merge."""
    overrides = overrides or {}
    short: dict[tuple[str, str, int, int], list[str]] = {}
    for dataset, method, protocol, epochs in dict.fromkeys(
            (s.dataset, s.method, s.hparams["protocol"], s.epochs) for s in specs):
        needed = hp.schedule_shortfall(registry.load("dataset", dataset),
                                       registry.load("method", method), overrides, epochs)
        if needed is not None:
            short.setdefault((dataset, protocol, epochs, needed), []).append(method)
    return [f"note: {epochs} epochs cannot keep the shape of the {protocol} schedule of "
            f"{', '.join(methods)} on {dataset} (it needs {needed}): its stages merge"
            for (dataset, protocol, epochs, needed), methods in short.items()]
