"""Run a per-frame function over many frames in worker processes; results come back in frame order.

What makes ``--workers N`` scale with the cores:

- **Batches.** Each task carries several frames, so the per-task cost of the pool (pickling the call,
  waking the result thread) is paid once per batch, not once per frame.
- **Warm start.** The parent runs the first batch itself before it forks the pool. Everything loaded lazily
  on a first frame (imports such as trimesh, JIT-compiled kernels read from numba's cache, meshes, models) is
  then loaded once and shared by every forked worker instead of being loaded again in each.
- **One thread per worker.** OpenCV defaults to a thread per core; N workers on N cores would then run
  N x cores threads that preempt one another. Workers run OpenCV (and the libraries that read the usual
  thread-count variables) with one thread each.
- **No copy-on-write storm.** Objects the parent holds are frozen out of the cyclic garbage collector
  before the fork (``gc.freeze``): a collection in a worker would otherwise touch every one of them and copy
  the pages they live on into that worker (hundreds of MB when torch is loaded, and the CPU time to copy).
- **Bounded window.** At most ``2 * workers`` batches are in flight, so memory stays flat however many
  frames there are, and results are yielded in submission order, so the output is deterministic.
- **Signals.** Workers ignore SIGINT (Ctrl-C reaches the whole process group; the parent handles it and
  terminates them) and die quietly on SIGTERM: an interrupted build prints no worker tracebacks. A worker
  closes the builder's folder-lock descriptors at start, so a lock ends with its holder; when the builder is
  killed outright (``kill -9``) its workers see their task queue close and end after the batch in hand.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import signal
from collections import deque
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BATCH_FRAMES = 8  # frames per task: pool overhead per frame becomes negligible, load stays balanced
WINDOW_PER_WORKER = 2  # batches in flight per worker: one running, one queued behind it
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")

_STATE: dict[str, Any] = {}
_CLOSE_IN_WORKERS: set[int] = set()  # file descriptors a forked worker must not keep open (folder locks)


def close_in_workers(fd: int, keep: bool = True) -> None:
    """Register (or, with ``keep=False``, forget) a descriptor that forked workers close at start: a lock
    held through it must end with its holder, not live on in a worker."""
    (_CLOSE_IN_WORKERS.add if keep else _CLOSE_IN_WORKERS.discard)(fd)


@contextlib.contextmanager
def single_threaded_libraries() -> Iterator[None]:
    """While the pool runs: OpenCV with one thread, and one thread for the libraries that read the usual
    thread-count variables when they start. Set in the parent *before* the fork, so no OpenCV pool thread
    exists at the fork: a child that reconfigures a thread pool inherited mid-use can deadlock (seen with
    ``cv2.setNumThreads`` in a worker). numba is left alone for the same reason (asking it for a thread count
    starts its threading layer); the kernels the sources call are single-threaded. OpenBLAS stays
    single-threaded at the matrix sizes the sources use (measured: no change with one thread forced).
    """
    import cv2

    saved_env = {k: os.environ.get(k) for k in THREAD_ENV}
    saved_cv2 = cv2.getNumThreads()
    os.environ.update({k: "1" for k in THREAD_ENV})
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(saved_cv2)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _init_worker(fn: Callable, context: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for fd in list(_CLOSE_IN_WORKERS):
        try:
            os.close(fd)
        except OSError:
            pass
    _STATE["fn"], _STATE["context"] = fn, context


def _run_batch(batch: list) -> list:
    fn, context = _STATE["fn"], _STATE["context"]
    return [fn(context, item) for item in batch]


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ordered_map(fn: Callable[[Any, T], R], context: Any, items: Iterable[T], workers: int,
                batch: int = BATCH_FRAMES) -> Iterator[R]:
    """``fn(context, item)`` for every item, yielded in order; in ``workers`` forked processes when > 0.

    ``context`` (e.g. an opened source) reaches the workers by fork, never pickled.
    """
    if workers <= 0:
        for item in items:
            yield fn(context, item)
        return
    batches = _batches(items, batch)
    first = next(batches, None)
    if first is None:
        return
    for item in first:  # warm start: load lazily loaded state once, here, before the workers are forked
        yield fn(context, item)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    gc.freeze()
    try:
        make_pool = mp.get_context(method).Pool
        with single_threaded_libraries(), make_pool(workers, _init_worker, (fn, context)) as pool:
            window: deque = deque()
            for b in batches:
                window.append(pool.apply_async(_run_batch, (b,)))
                if len(window) >= WINDOW_PER_WORKER * workers:
                    yield from window.popleft().get()
            while window:
                yield from window.popleft().get()
    finally:
        gc.unfreeze()
