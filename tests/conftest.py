"""Shared fixtures: the real CIFAR root, when provided."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def read_cache(tmp_path_factory) -> Path:
    """The stores' read caches (ltbench.store.read_cache) and the rendered plots
    (ltbench.api.plots) of the whole session, subprocesses included, in temporary folders
    rather than the user's."""
    folder = tmp_path_factory.mktemp("read_cache")
    os.environ["LTBENCH_READ_CACHE"] = str(folder)
    os.environ["LTBENCH_PLOT_CACHE"] = str(tmp_path_factory.mktemp("plot_cache"))
    return folder


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The folder holding the official CIFAR python folders, from ``LTBENCH_DATA_ROOT``."""
    root = os.environ.get("LTBENCH_DATA_ROOT")
    if not root:
        pytest.skip("real CIFAR not provided: set LTBENCH_DATA_ROOT to a folder made by "
                    "../shared/data/materialize_cifar.py (.ci/run does)")
    path = Path(root)
    if not (path / "cifar-10-batches-py").is_dir():
        pytest.fail(f"LTBENCH_DATA_ROOT={root} has no cifar-10-batches-py folder")
    return path
