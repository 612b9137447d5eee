"""One task of a build: encode a range of one split's frames and write them as shard files.

A build cuts every split into ranges of ``max_samples`` frames, aligned to the split's first frame
(frames ``0..M-1``, ``M..2M-1``, ...; a resumed build starts mid-range where its last kept shard ended, and
that range ends where it would have). Each range is one task. The process that takes it (a worker, or the
builder itself with ``--workers 0``) loads and encodes the range's frames and writes their tar blocks into
a temporary shard file; where the next sample would take the file past ``max_bytes`` it closes the file and
goes on in a new one. It hashes each file as it writes it and returns what the manifest records of it. The
builder then renames each finished file into place, in frame order, journals it, and fsyncs it once a core is
free (:func:`make_all_durable`): no sample's bytes pass between processes, and the builder's cost per frame
is nil, so N workers run at N times one worker's rate (the shard-per-task design of img2dataset).

Where the shards are cut depends only on the frames (their order, which ones are skipped, their sizes),
never on the number of workers or on where an earlier run was stopped.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hodata.schema import key_part
from hodata.errors import DataError
from hodata.frame_encode import encode_frame
from hodata.sources import FrameRef, Source


class BuildInterrupted(RuntimeError):
    """Raised by the test hook ``stop_after`` to simulate a build killed midway."""


def plan_ranges(start: int, frames: int, max_samples: int) -> list[tuple[int, int]]:
    """The ranges ``[a, b)`` from frame ``start`` to ``frames``, cut at multiples of ``max_samples``."""
    bounds = [start] + list(range((start // max_samples + 1) * max_samples, frames, max_samples)) + [frames]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def temp_name(source: str, split: str, base_index: int, start: int, piece: int) -> str:
    """The temporary name of a range's ``piece``-th shard file: the split's shard name pattern with this
    writer's first shard index (so a rerun of the same writer, and no other, removes it), then the range."""
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
    on_frame: Callable[[], None] = lambda: None  # progress: called after every frame
    stop_after: list[int] | None = None  # test hook: [samples left]; raise BuildInterrupted at 0


def write_range(ctx: RangeContext, task: tuple[str, int, int]) -> RangeResult:
    """Encode the frames ``[start, end)`` of ``split`` and write them into temporary shard files in
    ``ctx.out``; on an error the file being written is removed (except for the test hook's imitated kill)."""
    split, start, end = task
    refs = ctx.by_split[split]
    pieces: list[Piece] = []
    skips: list[dict] = []
    writer: ShardWriter | None = None
    skipped = 0
    try:
        for i in range(start, end):
            enc = encode_frame(ctx.source, i, refs[i], ctx.max_side)
            ctx.on_frame()
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

