"""Proving, before any work starts, that ltbench can write where it will.

Permission bits say little: root ignores them, and a folder can refuse writes for other reasons
(an immutable attribute, a read-only mount, a path that runs through a regular file). The one
reliable test is to write, so :func:`check_writable` creates a probe file and removes it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from ..errors import BadInput


def check_writable(folder: Path, what: str) -> None:
    """:class:`BadInput` (one line, ``what`` naming the folder, e.g. ``"--out"``) unless a file
    can be created in ``folder`` or, when it does not exist yet, in its nearest existing
    ancestor (so that it can be created). Nothing is left behind, nothing is created."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == folder:
            raise BadInput(f"{what} {folder} is a file")
        raise BadInput(f"{what} {folder} cannot be created: {existing} is a file")
    probe = existing / f".ltbench-probe-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
        probe.unlink()
    except OSError as exc:
        where = "" if existing == folder else f" (in {existing})"
        raise BadInput(f"{what} {folder} is not writable{where}: "
                       f"{exc.strerror or exc}") from None
