"""Run claims: at most one process trains a run at a time, across processes and hosts.

Before training a run, a worker creates ``<results>/claims/<run_id>.lock`` with
``O_CREAT | O_EXCL`` (atomic on POSIX file systems, NFS v3+ included), holding its owner as
JSON: host, pid, start time and a random token. While it trains, a daemon thread touches the
file's mtime every :data:`HEARTBEAT_S` seconds. A claim is *stale* when its owner is a dead
process on this host, or when its heartbeat is older than ``stale_after`` seconds (an owner on
another host that died, or a frozen one); a stale claim is taken over.

Takeover is a rename of the stale lock to a unique tombstone name, which succeeds for exactly
one of several racing takers. The taker then re-reads the tombstone: if it holds another token
than the one it judged stale (a second taker replaced the lock in between), the lock is put
back with ``os.link`` (which, like ``O_EXCL``, never overwrites). Whatever races remain are
closed at publish time: a worker publishes a result only while :meth:`Claim.held` is true, so a
run is never recorded twice.

The lock is released (removed) only by its owner, after the run's record is published or the
run is abandoned; a killed owner leaves it behind, to be taken over as stale.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

#: Seconds between heartbeats of a held claim.
HEARTBEAT_S = 30.0
#: A claim whose heartbeat is older than this is stale, whoever owns it.
STALE_AFTER_S = 10 * HEARTBEAT_S

HOST = socket.gethostname()


def claims_dir(results: Path) -> Path:
    return Path(results) / "claims"


def _read_owner(path: Path) -> dict | None:
    """The owner recorded in a lock file; None if it is gone, ``{}`` if unreadable (a writer
    killed between create and write: judged by its mtime alone)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def is_stale(owner: dict, heartbeat_age_s: float, stale_after: float) -> bool:
    """Whether a claim with this owner and heartbeat age may be taken over."""
    if heartbeat_age_s > stale_after:
        return True
    if owner.get("host") == HOST and isinstance(owner.get("pid"), int):
        return not _pid_alive(owner["pid"])
    return False


class Claim:
    """A held claim on one run; use as a context manager, or call :meth:`release`."""

    def __init__(self, path: Path, token: str, heartbeat_s: float):
        self.path = path
        self.token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name=f"claim-heartbeat-{path.stem}")
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if not self.held():
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def held(self) -> bool:
        """Whether the lock file still names this claim (no one took it over)."""
        owner = _read_owner(self.path)
        return owner is not None and owner.get("token") == self.token

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, if it is still this claim's."""
        self._stop.set()
        self._thread.join()
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create(path: Path, token: str) -> bool:
    """Create the lock with ``O_EXCL``; False if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    owner = {"host": HOST, "pid": os.getpid(), "token": token,
             "claimed_utc": datetime.now(timezone.utc).isoformat()}
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(owner, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _take_over_if_stale(path: Path, stale_after: float) -> None:
    """Remove ``path`` if its claim is stale (see the module docstring for the race rules)."""
    owner = _read_owner(path)
    if owner is None:
        return
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return
    if not is_stale(owner, age, stale_after):
        return
    tombstone = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, tombstone)
    except FileNotFoundError:
        return  # another taker moved it first
    moved = _read_owner(tombstone)
    if moved is not None and moved.get("token") != owner.get("token"):
        try:  # we moved a fresh claim made after our judgement: give it back
            os.link(tombstone, path)
        except FileExistsError:
            pass  # a third process claimed meanwhile; the owners' held() checks decide
    tombstone.unlink(missing_ok=True)


def acquire(results: Path, run_id: str, *, stale_after: float = STALE_AFTER_S,
            heartbeat_s: float = HEARTBEAT_S) -> Claim | None:
    """Claim ``run_id`` in the store at ``results``; None if another live owner holds it."""
    folder = claims_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.lock"
    token = uuid.uuid4().hex
    for _ in range(2):  # one takeover attempt, then give up to whoever won the race
        if _create(path, token):
            return Claim(path, token, heartbeat_s)
        _take_over_if_stale(path, stale_after)
    return None


def describe_owner(results: Path, run_id: str) -> str:
    """``host:pid`` of the claim on ``run_id``, for messages."""
    owner = _read_owner(claims_dir(results) / f"{run_id}.lock") or {}
    return f"{owner.get('host', '?')}:{owner.get('pid', '?')}"
