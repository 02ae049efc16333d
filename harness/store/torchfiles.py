"""Torch files of a results folder (resume checkpoints, stage-1 models), verified before use.

``torch.save`` writes a zip archive with a CRC-32 per member (the pickle, each tensor's
storage), but ``torch.load`` does not check them: a flipped bit in a weight loads as another
number (measured with torch 2.14). :func:`load` checks every member's CRC-32 first, over the
very bytes it then loads, so a damaged file raises :class:`DamagedTorchFile` instead.
Files saved by earlier versions carry the same CRCs, so they are verified too.

This module imports torch only inside :func:`load`: :func:`damage` serves the store's readers,
which must start without it.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, BinaryIO


class DamagedTorchFile(Exception):
    """A torch file whose archive is malformed or fails a member's CRC-32."""


def _archive_damage(source: BinaryIO) -> str | None:
    try:
        with zipfile.ZipFile(source) as archive:
            bad = archive.testzip()  # reads every member, checking its CRC-32
    except Exception as exc:  # zipfile raises several types on a malformed archive
        return f"not a readable zip archive ({type(exc).__name__}: {exc})"
    return None if bad is None else f"member {bad} fails its CRC-32"


def damage(path: Path) -> str | None:
    """Why the torch file ``path`` is damaged, or None; ``FileNotFoundError`` if it is gone."""
    with open(path, "rb") as handle:
        return _archive_damage(handle)


def load(path: Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` of a verified file;
    :class:`DamagedTorchFile` if it is damaged."""
    import torch

    data = io.BytesIO(Path(path).read_bytes())
    reason = _archive_damage(data)
    if reason is not None:
        raise DamagedTorchFile(f"{path}: {reason}")
    data.seek(0)
    return torch.load(data, map_location="cpu", weights_only=True)
