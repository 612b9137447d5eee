"""SIGTERM handled like Ctrl-C while a build or merge runs, so both end the same clean way.

Python turns SIGINT into KeyboardInterrupt; SIGTERM (``kill``, a batch scheduler's time limit) would end the
process at once, without closing the worker pool or the half-written shard. While :func:`terminate_as_interrupt`
is active, SIGTERM raises :class:`Interrupted` (a KeyboardInterrupt) in the main thread instead: the builder's
cleanup runs (workers terminated quietly, the half shard removed; finished shards stay in the manifest), and the
command line prints one line and exits with 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

RESUME_HINT = "interrupted: rerun the same command to resume"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(e: BaseException) -> int:
    """128 + the signal number, as a shell reports a process ended by that signal."""
    return 128 + int(getattr(e, "signum", signal.SIGINT))


def _raise(signum, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active (in the main thread), SIGTERM raises :class:`Interrupted`; elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
