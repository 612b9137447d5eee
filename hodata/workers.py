"""Run a per-frame function over many frames in worker processes; results come back in frame order.

What makes ``--workers N`` scale with the cores:

- **Batches.** Each task carries several frames, so the per-task cost (pickling the call, a wake-up of the
  parent) is paid once per batch, not once per frame.
- **No helper threads.** The parent sends batches and receives results itself, on pipes it waits on with
  ``multiprocessing.connection.wait``; the workers take batches from one shared pipe, so a free worker takes
  the next one. ``multiprocessing.Pool`` hands every task and result through two threads of the parent that
  take turns with it for the GIL: measured, 0.13 CPU-ms per frame in those threads and ~0.1 more in the
  parent's own, on 2 cores that beside 2 workers is what kept 2 workers below 1.8x one.
- **Warm start.** Before it forks the pool, the parent runs the caller's warm-up (by default the first item
  itself). Everything loaded lazily on a first frame (imports such as trimesh, JIT-compiled kernels read from
  numba's cache, meshes, models) is then loaded once and shared by every forked worker instead of being
  loaded again in each.
- **One thread per worker.** OpenCV defaults to a thread per core; N workers on N cores would then run
  N x cores threads that preempt one another. Even alone (``workers=0``) its pool costs more than it gives on
  a frame's small images: measured on HO3D frames, 6 CPU-ms a frame with it against 4 without, and slower
  on the wall clock too. Workers run OpenCV (and the libraries that read the usual
  thread-count variables) with one thread each.
- **No copy-on-write storm.** Objects the parent holds are frozen out of the cyclic garbage collector
  before the fork (``gc.freeze``): a collection in a worker would otherwise touch every one of them and copy
  the pages they live on into that worker (hundreds of MB when torch is loaded, and the CPU time to copy).
- **Small results.** A task's output is meant to be small: a build's workers write their shard files
  themselves and return only what the manifest records of them (:mod:`hodata.shard_tasks`).
- **Bounded window.** At most ``4 * workers`` batches are in flight, so memory stays flat however many
  frames there are, and results are yielded in submission order, so the output is deterministic.
- **Signals and deaths.** Workers ignore SIGINT (Ctrl-C reaches the whole process group; the parent handles
  it and terminates them) and die quietly on SIGTERM: an interrupted build prints no worker tracebacks. A
  worker closes the builder's folder-lock descriptors at start, so a lock ends with its holder; when the
  builder is killed outright (``kill -9``) its workers read the end of their task pipe and exit. A worker
  that dies (the OOM killer, a crash in a native library) is an error naming its exit code, not a lost task
  the parent waits on forever; an exception in a worker is raised in the parent with the worker's traceback
  as a note.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
from typing import Any, Callable, Iterable, Iterator, TypeVar


T = TypeVar("T")
R = TypeVar("R")

BATCH_FRAMES = 8  # frames per task: pool overhead per frame becomes negligible, load stays balanced
WINDOW_PER_WORKER = 4  # batches in flight per worker: one running, the rest queued (room while the parent fsyncs a shard)
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")

_STATE: dict[str, Any] = {}
_CLOSE_IN_WORKERS: set[int] = set()  # file descriptors a forked worker must not keep open (folder locks)


def close_in_workers(fd: int, keep: bool = True) -> None:
    """Register (or, with ``keep=False``, forget) a descriptor that forked workers close at start: a lock
    held through it must end with its holder, not live on in a worker."""
    (_CLOSE_IN_WORKERS.add if keep else _CLOSE_IN_WORKERS.discard)(fd)


@contextlib.contextmanager
def single_threaded_libraries() -> Iterator[None]:
    """While it lasts: OpenCV with one thread, and one thread for the libraries that read the usual
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


class _Pool:
    """``workers`` forked processes serving batches: one task pipe they all read from (whichever is free takes
    the next batch), one result pipe each. The calling thread sends, receives and waits on them itself: no
    helper threads passing results to it under the GIL, which is what ``multiprocessing.Pool`` costs per task.
    A worker that dies (killed, crashed) is an error here, not a task silently lost."""

    def __init__(self, workers: int, fn: Callable, context: Any):
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.tasks, self._task_w = ctx.Pipe(duplex=False)
        self._read_lock = ctx.Lock()
        results = [ctx.Pipe(duplex=False) for _ in range(workers)]
        self.results = [r for r, _ in results]
        self.procs = []
        for i, (_, res_w) in enumerate(results):
            # a worker keeps only its own ends: with every write end of the task pipe gone with the builder,
            # a worker waiting for a task reads end-of-file and exits
            others = [self._task_w] + self.results + [w for j, (_, w) in enumerate(results) if j != i]
            proc = ctx.Process(target=_serve, args=(self.tasks, self._read_lock, res_w, others, fn, context),
                               daemon=True)
            proc.start()
            self.procs.append(proc)
        for _, res_w in results:
            res_w.close()
        self.tasks.close()

    def send(self, seq: int, batch: list) -> None:
        self._task_w.send((seq, batch))

    def receive(self, timeout: float | None = None) -> list[tuple[int, BaseException | None, Any]]:
        """The results ready within ``timeout`` seconds (None: wait for at least one); raises when a worker
        died."""
        sentinels = {p.sentinel: p for p in self.procs}
        ready = mp.connection.wait(self.results + list(sentinels), timeout)
        out = []
        for r in ready:
            if r in sentinels:
                continue
            try:
                out.append(r.recv())
            except EOFError:
                pass  # its worker is gone: reported below unless it said why first
        if not out and ready:
            dead = [p for p in self.procs if p.exitcode is not None]
            if dead:
                raise RuntimeError(f"a build worker ended unexpectedly (exit code {dead[0].exitcode}); the frames "
                                   "it held were not built (out of memory? see the system log)")
        return out

    def close(self, finished: bool) -> None:
        """End the workers: let them finish and exit when all went well, else stop them now."""
        with contextlib.suppress(OSError):
            if finished:
                for _ in self.procs:
                    self._task_w.send(None)
            self._task_w.close()
        for p in self.procs:
            if not finished:
                p.terminate()
            p.join()
        for r in self.results:
            r.close()


def _serve(tasks, read_lock, results, others: list, fn: Callable, context: Any) -> None:
    """A worker's life: take a batch, run it, send back (sequence number, error or None, result)."""
    for conn in others:
        conn.close()
    _init_worker(fn, context)
    while True:
        try:
            with read_lock:
                task = tasks.recv()
        except (EOFError, OSError):
            return  # the builder is gone
        if task is None:
            return
        seq, batch = task
        try:
            reply = (seq, None, _run_batch(batch))
        except BaseException as e:  # noqa: BLE001 - sent to the builder, which raises it
            reply = (seq, _portable(e), None)
        try:
            results.send(reply)
        except (BrokenPipeError, OSError):
            return  # the builder is gone
        except Exception as e:  # noqa: BLE001 - a result that does not pickle is this batch's error
            results.send((seq, _portable(e), None))


def _portable(e: BaseException) -> BaseException:
    """``e`` as the builder can receive it (pickled), with the worker's traceback as a note."""
    import pickle
    import traceback

    tb = "".join(traceback.format_exception(e))
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:  # noqa: BLE001 - any exception that does not survive pickling is described instead
        e = RuntimeError(f"{type(e).__name__}: {e}")
    e.add_note(f"in a build worker:\n{tb}")
    return e


def ordered_map(fn: Callable[[Any, T], R], context: Any, items: Iterable[T], workers: int,
                batch: int = BATCH_FRAMES, warm: Callable[[], None] | None = None,
                on_wait: Callable[[], None] | None = None, wait_s: float = 0.5) -> Iterator[R]:
    """``fn(context, item)`` for every item, yielded in order; in ``workers`` forked processes when > 0.

    ``context`` (e.g. an opened source) reaches the workers by fork, never pickled. ``warm``: run in this
    process before the fork, to load what loads lazily (without it, the first item is run here). ``on_wait``:
    called every ``wait_s`` seconds while no result comes (e.g. to refresh a progress bar).
    """
    if workers <= 0:  # in this process, OpenCV on one thread too: its pool's threads cost more than they give
        with single_threaded_libraries():
            for item in items:
                yield fn(context, item)
        return
    items = iter(items)
    if warm is not None:
        with single_threaded_libraries():
            warm()
    else:  # one item here, before the fork: it loads what loads lazily once for every worker
        first = next(items, None)
        if first is None:
            return
        yield fn(context, first)
    batches = _batches(items, batch)
    window = WINDOW_PER_WORKER * workers
    gc.freeze()
    finished = False
    try:
        with single_threaded_libraries():
            pool = _Pool(workers, fn, context)
        try:
            sent = yielded = 0
            ready: dict[int, Any] = {}

            def take(results) -> None:
                for seq, error, result in results:
                    if error is not None:
                        raise error
                    ready[seq] = result

            more = True
            while True:
                while more and sent - yielded < window:
                    b = next(batches, None)
                    if b is None:
                        more = False
                        break
                    # results first: a send can wait for room in the task pipe, and a worker must never wait
                    # for room in its result pipe meanwhile
                    take(pool.receive(timeout=0))
                    pool.send(sent, b)
                    sent += 1
                if yielded == sent:
                    break
                while yielded not in ready:
                    got = pool.receive(timeout=None if on_wait is None else wait_s)
                    if not got and on_wait is not None:
                        on_wait()
                    take(got)
                yield from ready.pop(yielded)
                yielded += 1
            finished = True
        finally:
            pool.close(finished)
    finally:
        gc.unfreeze()
