"""The one way ltbench writes a file in place: atomically, and safely on shared storage.

:func:`atomic_write` writes to a fresh temporary file in the target's folder and renames it over
the target, so a reader sees the old file or the whole new one, never a part, and a failure
leaves the target as it was (the temporary file removed). Results folders are often
group-writable (a lab's share on a Slurm cluster), so the temporary file must not be something
another user could have planted: its name is random (``secrets``, not the pid) and it is created
with ``O_CREAT | O_EXCL | O_NOFOLLOW``, which refuses an existing file or symlink instead of
writing through it. ``os.replace`` replaces a symlink at the target itself rather than the file
it points to. The new file gets the mode ``open()`` would give it (0o666 less the umask), so a
shared store keeps its group permissions.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator

#: Attempts at a fresh temporary name before giving up (a clash of 64 random bits is
#: practically impossible; a second one means someone is planting names).
_ATTEMPTS = 3
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(
    os, "O_CLOEXEC", 0)


def _create_temporary(target: Path) -> tuple[int, Path]:
    attempts_left = _ATTEMPTS
    while True:
        path = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(path, _FLAGS, 0o666), path
        except FileExistsError:
            attempts_left -= 1
            if not attempts_left:
                raise


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_write(path: str | Path, text: bool = False, durable: bool = True) -> Iterator[IO]:
    """A binary (or, with ``text``, UTF-8 text) handle whose content replaces ``path`` when
    the block exits normally; on an exception ``path`` is untouched and the exception
    propagates. ``durable``: fsync the file and the folder's entry before returning (records,
    checkpoints, models); off for files that are cheap to rebuild (report pages)."""
    target = Path(path)
    descriptor, tmp = _create_temporary(target)
    try:
        with (open(descriptor, "w", encoding="utf-8", newline="") if text
              else open(descriptor, "wb")) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(target.parent)


def write_text(path: str | Path, content: str, durable: bool = True) -> None:
    """``path`` replaced by the UTF-8 ``content`` (:func:`atomic_write`)."""
    with atomic_write(path, text=True, durable=durable) as handle:
        handle.write(content)


def write_bytes(path: str | Path, content: bytes, durable: bool = True) -> None:
    """``path`` replaced by ``content`` (:func:`atomic_write`)."""
    with atomic_write(path, durable=durable) as handle:
        handle.write(content)
