"""One task of a build: encode a range of one split's frames and write them as shard files.

A build cuts every split into ranges of ``max_samples`` frames, aligned to the split's first frame (frames
``0..M-1``, ``M..2M-1``, ...; a resumed build starts mid-range where its last kept shard ended, and that range
ends where it would have). Each range is one task (or several slices: below). The process that takes it (a
worker, or the builder itself with ``--workers 0``) loads and encodes the range's frames and writes their tar
blocks into a temporary shard file; where the next sample would take the file past ``max_bytes`` it closes the
file and goes on in a new one. It hashes each file as it writes it and returns what the manifest records of
it. The builder then renames each finished file into place, in frame order, journals it, and fsyncs it once a
core is free (:func:`make_all_durable`): no sample's bytes pass between processes, and the builder's cost per
frame is nil, so N workers run at N times one worker's rate (the shard-per-task design of img2dataset).

Where the shards are cut depends only on the frames (their order, which ones are skipped, their sizes),
never on the number of workers or on where an earlier run was stopped.

**Slices.** With shards as tasks, a build of few shards keeps few workers busy (EgoHands' 4,800 frames in
1,000-frame shards are 6 tasks) and every build ends with workers idle while the last shards finish. So with
2+ workers the builder cuts ranges into slices (:func:`plan_tasks`): every range where the build has fewer
than 4 slices' worth of frames per worker, and always the last ``workers`` ranges into 4. A slice's worker
encodes its frames into a temporary file of its own; the worker that finishes a range's last slice (a
shared counter says which) replays the range's slices, in frame order, through the same writer a whole
range goes through (:func:`_write_pieces`), so a sliced range gives the same shard files byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import pickle
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from hodata.schema import key_part
from hodata.errors import DataError
from hodata.frame_encode import Encoded, encode_frame
from hodata.sources import FrameRef, Source


class BuildInterrupted(RuntimeError):
    """Raised by the test hook ``stop_after`` to simulate a build killed midway."""


def plan_ranges(start: int, frames: int, max_samples: int) -> list[tuple[int, int]]:
    """The ranges ``[a, b)`` from frame ``start`` to ``frames``, cut at multiples of ``max_samples``."""
    bounds = [start] + list(range((start // max_samples + 1) * max_samples, frames, max_samples)) + [frames]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


MIN_SLICE_FRAMES = 8  # a slice's least frames: below, a task's fixed costs start to weigh
TAIL_SLICES = 4  # slices of each of the last ``workers`` ranges: the build's end is a quarter shard uneven at most
SLICES_PER_WORKER = 4  # a build with fewer frames than this many full ranges per worker slices every range


@dataclass(frozen=True)
class Task:
    """Frames ``[lo, hi)`` of the range ``[start, end)`` of ``split``: the whole range (``count`` 1), or one of
    its ``count`` slices, which share the counter ``slot``."""

    split: str
    start: int
    end: int
    lo: int
    hi: int
    slot: int = -1
    count: int = 1


def plan_tasks(ranges: list[tuple[str, int, int]], workers: int) -> tuple[list[Task], int]:
    """The tasks for ``ranges`` (in the order they run; each range's slices one after another) and how many
    ranges were sliced. Only with 2+ workers (one has nothing to balance)."""
    if workers < 2:
        return [Task(split, a, b, a, b) for split, a, b in ranges], 0
    frames = sum(b - a for _, a, b in ranges)
    size = max(MIN_SLICE_FRAMES, -(-frames // (SLICES_PER_WORKER * workers)))
    tasks: list[Task] = []
    slots = 0
    for n, (split, a, b) in enumerate(ranges):
        count = -(-(b - a) // size)
        if n >= len(ranges) - workers:
            count = max(count, TAIL_SLICES)
        count = min(count, max(1, (b - a) // MIN_SLICE_FRAMES))
        if count == 1:
            tasks.append(Task(split, a, b, a, b))
            continue
        cuts = slice_starts(a, b, count) + [b]
        tasks.extend(Task(split, a, b, lo, hi, slots, count) for lo, hi in zip(cuts, cuts[1:]))
        slots += 1
    return tasks, slots


def slice_starts(start: int, end: int, count: int) -> list[int]:
    """The first frame of each of the ``count`` slices of the range ``[start, end)``."""
    return [start + (end - start) * j // count for j in range(count)]


def slice_path(ctx: RangeContext, split: str, start: int, lo: int) -> Path:
    """The temporary file of the slice of range ``start`` that begins at frame ``lo``."""
    return ctx.out / temp_name(ctx.source.name, split, ctx.base_index, start, f"s{lo - start}")


class SliceCounter:
    """How many slices of each sliced range are finished, in memory the forked workers share."""

    def __init__(self, slots: int):
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._done = ctx.Array("i", slots, lock=False)
        self._lock = ctx.Lock()

    def finish(self, slot: int, count: int) -> bool:
        """Count one more finished slice of ``slot``; True for the range's last (its files are all written)."""
        with self._lock:
            self._done[slot] += 1
            return self._done[slot] == count


def temp_name(source: str, split: str, base_index: int, start: int, piece: int | str) -> str:
    """The temporary name of a range's ``piece``-th shard file (``s<j>``: its ``j``-th slice's file): the
    split's shard name pattern with this writer's first shard index (so a rerun of the same writer, and no
    other, removes it), then the range."""
    return f"{key_part(source)}-{key_part(split)}-{base_index:06d}.{start:09d}-{piece}.tar.tmp"


class ShardWriter:
    """Writes one shard to a temporary file; ``finish`` ends the tar, closes the file and describes it.

    A plain USTAR tar, exactly what ``webdataset.WebDataset`` reads: the samples' tar blocks
    (:func:`hodata.tar_blocks.tar_blocks`), then tar's end (two zero blocks, padded to a 10 KiB record) as
    ``tarfile`` writes it. Not webdataset's TarWriter: importing webdataset pulls in torch (~0.5 GB and
    seconds per process), which a builder and its workers never need.
    """

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "wb")
        self._sha, self.count = hashlib.sha256(), 0
        self.samples, self.payload = 0, 0
        self.class_pixels: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.quality: dict[str, list[float]] = {}

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as e:
            raise self._error(e) from None
        self._sha.update(data)
        self.count += len(data)

    def _error(self, e: OSError) -> DataError:
        return _write_error(e, self.path)

    def write(self, enc) -> None:
        self._write(enc.data)
        self.samples += 1
        self.payload += enc.nbytes
        for k, v in (enc.class_pixels or {}).items():
            self.class_pixels[k] = self.class_pixels.get(k, 0) + v
        size = f"{enc.size[0]}x{enc.size[1]}"
        self.sizes[size] = self.sizes.get(size, 0) + 1
        for k, v in (enc.quality or {}).items():
            self.quality.setdefault(k, []).append(round(v, 5))

    def finish(self) -> dict[str, Any]:
        end = 2 * tarfile.BLOCKSIZE
        self._write(bytes(end + -(self.count + end) % tarfile.RECORDSIZE))
        try:
            self._file.close()
        except OSError as e:
            raise self._error(e) from None
        info = {"sha256": self._sha.hexdigest(), "bytes": self.count, "samples": self.samples,
                "class_pixels": self.class_pixels, "image_sizes": self.sizes}
        if self.quality:
            info["quality"] = self.quality
        return info

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def make_durable(path: Path) -> None:
    """fsync a finished shard file. A full disk (or any write error the kernel reports now) is a DataError
    naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise _write_error(e, path) from None


def start_writeback(path: Path) -> None:
    """Have the kernel start writing a finished shard to disk now, without waiting for it (POSIX_FADV_DONTNEED
    on dirty pages starts their writeback; pages already written are dropped from the cache): the fsync at the
    build's end then finds little left to write. Best effort; a write error surfaces at that fsync."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError:
        pass


def make_all_durable(paths: list[Path]) -> None:
    """:func:`make_durable` for several files at once, one thread each: the filesystem commits their fsyncs
    together (one journal commit where one by one costs one each). Raises the first file's DataError."""
    if len(paths) == 1:
        make_durable(paths[0])
    elif paths:
        with ThreadPoolExecutor(min(len(paths), 16)) as pool:
            for _ in pool.map(make_durable, paths):
                pass


def _write_error(e: OSError, path: Path) -> DataError:
    return DataError(f"cannot write this shard ({e.strerror or e}); free some space or choose another --out", path)


@dataclass
class Piece:
    """One finished shard file of a range (``temp`` None: frames that were all skipped, no file), ``end``
    the frame after the last it covers, ``skips`` the skip records of the frames it covers."""

    temp: str | None
    end: int
    info: dict[str, Any] = field(default_factory=dict)
    skips: list[dict] = field(default_factory=list)


@dataclass
class RangeResult:
    split: str
    start: int
    end: int
    pieces: list[Piece]
    stopped: bool = False  # the range was abandoned: its skips alone passed what the build allows


@dataclass
class RangeContext:
    """What every range task needs; reaches the workers by fork, never pickled."""

    source: Source
    by_split: dict[str, list[FrameRef]]
    out: Path
    base_index: int  # this writer's first shard index (a part's shards have their own)
    max_samples: int
    max_bytes: int
    max_side: int | None
    skips_allowed: int
    slices: SliceCounter | None = None  # where ranges are sliced (plan_tasks)
    on_frame: Callable[[], None] = lambda: None  # progress: called after every frame
    stop_after: list[int] | None = None  # test hook: [samples left]; raise BuildInterrupted at 0


def write_range(ctx: RangeContext, task: Task) -> RangeResult | None:
    """Run one task of :func:`plan_tasks`. A whole range: encode its frames and write them into temporary
    shard files in ``ctx.out``. A slice: see :func:`write_slice`."""
    if task.count > 1:
        return write_slice(ctx, task)
    refs = ctx.by_split[task.split]
    return _write_pieces(ctx, task.split, task.start, task.end, _encoded(ctx, refs, range(task.start, task.end)))


def _encoded(ctx: RangeContext, refs: list[FrameRef], indices: range) -> Iterator[Encoded]:
    for i in indices:
        enc = encode_frame(ctx.source, i, refs[i], ctx.max_side)
        ctx.on_frame()
        yield enc


def write_slice(ctx: RangeContext, task: Task) -> RangeResult | None:
    """Encode a slice's frames into its own temporary file (the encoded samples, pickled one after another);
    then, if it is its range's last slice to finish, write the range from all its slices' files. Returns the
    range's result from that last slice, None from the others."""
    split, start, end = task.split, task.start, task.end
    out = _SliceFile(slice_path(ctx, split, start, task.lo))
    try:
        for enc in _encoded(ctx, ctx.by_split[split], range(task.lo, task.hi)):
            out.add(enc)
        out.close()
    except BaseException:
        out.abort()
        raise
    if not ctx.slices.finish(task.slot, task.count):
        return None
    paths = [slice_path(ctx, split, start, lo) for lo in slice_starts(start, end, task.count)]
    try:
        return _write_pieces(ctx, split, start, end, _replayed(paths))
    finally:
        for p in paths:
            p.unlink(missing_ok=True)


class _SliceFile:
    """A slice's temporary file: its encoded frames pickled one after another. A write error (a full disk) is
    a DataError naming the file."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._file = open(path, "wb")
        except OSError as e:
            raise _write_error(e, path) from None

    def add(self, enc: Encoded) -> None:
        try:
            pickle.dump(enc, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError as e:
            raise _write_error(e, self.path) from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as e:
            raise _write_error(e, self.path) from None

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self.path.unlink(missing_ok=True)


def _replayed(paths: list[Path]) -> Iterator[Encoded]:
    """The encoded samples of a range's slice files, in frame order (files this build wrote moments ago, in
    the folder it holds the lock of)."""
    for path in paths:
        with open(path, "rb") as f:
            while True:
                try:
                    yield pickle.load(f)
                except EOFError:
                    break


def _write_pieces(ctx: RangeContext, split: str, start: int, end: int, frames: Iterable[Encoded]) -> RangeResult:
    """Write a range's encoded frames into temporary shard files, cut at ``max_bytes``; on an error the file
    being written is removed (except for the test hook's imitated kill)."""
    pieces: list[Piece] = []
    skips: list[dict] = []
    writer: ShardWriter | None = None
    skipped = 0
    try:
        for enc in frames:
            i = enc.index
            if enc.skipped:
                skips.append(enc.skipped)
                skipped += 1
                if skipped > ctx.skips_allowed:  # the build fails on these alone: stop spending time on it
                    if writer is not None:
                        writer.abort()
                    return RangeResult(split, start, end, pieces + [Piece(None, i + 1, skips=skips)], stopped=True)
                continue
            if writer is not None and writer.payload + enc.nbytes + 1024 > ctx.max_bytes:
                pieces.append(Piece(writer.path.name, i, writer.finish(), skips))  # the skips so far precede i
                skips, writer = [], None
            if writer is None:
                name = temp_name(ctx.source.name, split, ctx.base_index, start, len(pieces))
                writer = ShardWriter(ctx.out / name)
            writer.write(enc)
            if ctx.stop_after is not None:
                ctx.stop_after[0] -= 1
                if ctx.stop_after[0] <= 0:
                    writer = None  # left behind half-written, as a killed process leaves it
                    raise BuildInterrupted("stopped after the requested samples (test hook)")
        if writer is not None:
            pieces.append(Piece(writer.path.name, end, writer.finish(), skips))
            writer = None
        elif skips:
            pieces.append(Piece(None, end, skips=skips))
        return RangeResult(split, start, end, pieces)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise

