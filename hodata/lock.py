"""Who may write an output folder: one lock file per writer role, taken with ``flock``.

- A whole build of source S takes ``<out>/.hodata-S.lock`` exclusively: no other build of S, no part of S
  and no merge of S runs on that folder meanwhile. Builds of other sources may (they share only
  ``manifest.json``, which is rewritten under its own short lock).
- A part ``i/N`` of S takes ``.hodata-S.lock`` shared (the parts of one build run side by side, also from
  several machines on a shared file system) and ``.hodata-S.part-i-of-N.lock`` exclusively.
- ``hodata merge`` takes ``.hodata-S.lock`` exclusively for every S it joins: no part is half-written
  while it reads them.

A second writer refuses at once with one line naming the holder (pid, host, command), or waits with
``--wait``. The kernel releases an ``flock`` when its holder exits in any way, ``kill -9`` included; the
descriptors are closed in forked worker processes, so a lock ends with its holder. The holder writes its pid
and command into the lock files it holds exclusively, for the message. Lock files are never deleted:
removing one while another process waits on it would let two writers in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from hodata.errors import DataError, UserError

LOCK_PREFIX = ".hodata-"


class FolderBusy(UserError):
    """Another hodata process is writing the same output folder (in a role that excludes this one)."""


def source_lock_path(out: Path, source: str) -> Path:
    return Path(out) / f"{LOCK_PREFIX}{source}.lock"


def part_lock_path(out: Path, source: str, tag: str) -> Path:
    return Path(out) / f"{LOCK_PREFIX}{source}.{tag}.lock"


def _holder_info(command: list[str] | None) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(map(str, command or sys.argv))}


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or not info.get("pid"):
        return "another hodata process"
    return f"pid {info['pid']} on {info.get('host', '?')} since {info.get('since', '?')}: {info.get('command', '?')}"


def _held_by_others(path: Path) -> bool:
    """True when some process holds ``path`` locked (probed with a non-blocking shared lock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


class _Lock:
    def __init__(self, path: Path, exclusive: bool):
        self.path, self.exclusive, self.fd = path, exclusive, -1

    def open(self) -> None:
        try:  # O_CLOEXEC: a subprocess (git, the user's tools) never inherits it
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise DataError(f"cannot write in the output folder ({e.strerror})", self.path.parent) from None

    def try_lock(self, block: bool) -> bool:
        flags = (fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH) | (0 if block else fcntl.LOCK_NB)
        try:
            fcntl.flock(self.fd, flags)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def write_holder(self, command: list[str] | None) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(_holder_info(command)).encode(), 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _who(out: Path, source: str, lock: _Lock) -> str:
    """The holder(s) that keep ``lock`` from being taken, as a phrase."""
    if lock.exclusive and lock.path == source_lock_path(out, source):
        parts = sorted(p for p in Path(out).glob(f"{LOCK_PREFIX}{source}.part-*.lock") if _held_by_others(p))
        if parts:
            tag = parts[0].name[len(LOCK_PREFIX) + len(source) + 1: -len(".lock")]
            more = f" (and {len(parts) - 1} more part(s))" if len(parts) > 1 else ""
            return f"{tag} of a {source} build ({_describe_holder(parts[0])}){more}"
    return _describe_holder(lock.path)


@contextlib.contextmanager
def writer_lock(out: Path, source: str, *, part_tag: str | None = None, merging: bool = False,
                wait: bool = False, command: list[str] | None = None) -> Iterator[None]:
    """Hold the right to write ``source`` into ``out`` (a whole build, one part, or a merge).

    Raises :class:`FolderBusy` with one line naming the holder, unless ``wait``: then says once on stderr
    whom it waits for and blocks until the holder is gone.
    """
    from hodata.workers import close_in_workers

    out = Path(out)
    locks = [_Lock(source_lock_path(out, source), exclusive=part_tag is None)]
    if part_tag is not None:
        locks.append(_Lock(part_lock_path(out, source, part_tag), exclusive=True))
    role = "merge" if merging else (f"build {part_tag}" if part_tag else "build")
    try:
        for lock in locks:
            lock.open()
            close_in_workers(lock.fd)
            if not lock.try_lock(block=False):
                holder = _who(out, source, lock)
                if not wait:
                    raise FolderBusy(f"{out}: {source} is being written by {holder}; this {role} would clash with "
                                     "it: wait for it to end, or pass --wait")
                print(f"waiting for {holder} to finish writing {source} in {out} ...", file=sys.stderr, flush=True)
                lock.try_lock(block=True)
            if lock.exclusive:
                lock.write_holder(command)
        yield
    finally:
        for lock in reversed(locks):
            if lock.fd >= 0:
                close_in_workers(lock.fd, keep=False)
                lock.close()
