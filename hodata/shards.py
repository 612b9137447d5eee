"""Write ``hodata/2`` samples from any source into WebDataset tar shards, resumably.

Shards are ``<out>/<source>-<split>-NNNNNN.tar``: every ``max_samples`` frames of a split (fewer samples
where frames were skipped), cut earlier where a shard would pass ``max_bytes``. Each range of frames is one
task (:mod:`hodata.shard_tasks`; with 2+ workers, ranges are also cut into slices, so that every worker has
work however few shards there are), run by a worker process (``workers``, :mod:`hodata.workers`) or by the
builder itself: it encodes the frames and writes and hashes the shard file under a temporary name. The
builder renames finished files into place in frame order, so the output is deterministic whatever the number
of workers, and records each file's sha256 and the frames it covers in the build's record, which is
journalled to the manifest after the first shard, then at most every ``journal_every_s`` seconds, and when a
run ends (an error or an interrupt included; a hard kill loses at most that much work). Shards are fsynced
once a core is free (the build's tail, when fewer tasks are left than workers) and in any case before the
record says complete: an fsync while workers write stalls them (the filesystem's journal commit), and a
journalled shard that a power loss took is found by its sha256 on resume and rebuilt. A rerun of the same
command keeps the complete shards whose sha256 still matches, skips their frames without reading them, and
rebuilds the rest. Tar members carry a fixed mtime, so a resumed build is byte-identical to an
uninterrupted one.

A part of a build (``--part i/N``, :mod:`hodata.parts`) does the same for its share of the frames, under its
own shard names and manifest; :mod:`hodata.merge` joins the parts. Every run holds the folder's writer lock
(:mod:`hodata.lock`) from start to end.
"""

from __future__ import annotations

import contextlib
import heapq
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hodata import __version__
from hodata.errors import DataError
from hodata.frame_encode import SchemaViolation, encode_frame  # noqa: F401 - SchemaViolation: part of this API
from hodata.interrupt import terminate_as_interrupt
from hodata.lock import writer_lock
from hodata.manifest import Manifest, file_digest, git_commit, options_fingerprint, shard_path, utc_now
from hodata.outdir import clear_other_layouts, prepare_out, remove_record, remove_stale_temp_shards
from hodata.parts import first_shard_index, parse_part, part_manifest_name, part_tag, select
from hodata.schema import SCHEMA, key_part
from hodata.shard_tasks import (BuildInterrupted, Piece, RangeContext, RangeResult, SliceCounter, Task,
                                make_all_durable, plan_ranges, plan_tasks, start_writeback, write_range)
from hodata.sources import FrameRef, Source
from hodata.workers import ordered_map

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_MAX_BYTES = 512 * 1024**2
# A build stops once more than this share of its frames was skipped: a wrong option or a broken model skips
# every frame, and must not end as a "complete" build. Tiny builds may always skip a few frames.
DEFAULT_MAX_SKIP_FRACTION = 0.01
MIN_SKIPS_ALLOWED = 10
FIRST_REASONS = 3
# A rewrite of the manifest costs in proportion to the shards it lists (their per-sample agreement figures
# included): after every shard, a build of hundreds of shards would spend more time journalling than encoding.
DEFAULT_JOURNAL_EVERY_S = 10.0


@dataclass
class BuildConfig:
    out: Path
    max_samples: int = DEFAULT_MAX_SAMPLES
    max_bytes: int = DEFAULT_MAX_BYTES
    max_side: int | None = None
    workers: int = 0
    overwrite: bool = False
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    progress: bool = True
    limit: int | None = None  # build only the first N frames per split (smoke tests, previews)
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION
    part: tuple[int, int] | None = None  # (i, N): build part i of N (hodata.parts), joined by hodata merge
    wait: bool = False  # wait for another writer of the folder instead of refusing
    # the resume journal (the manifest record) is rewritten after a finished shard at most this often; an
    # interrupted or failed run writes it before it ends, so only a hard kill loses up to this much work
    journal_every_s: float = DEFAULT_JOURNAL_EVERY_S

    def skips_allowed(self, frames: int) -> int:
        return max(MIN_SKIPS_ALLOWED, int(self.max_skip_fraction * frames))


class TooManySkipped(DataError):
    """More frames were skipped than ``--max-skip-fraction`` allows."""


def shard_name(source: str, split: str, index: int) -> str:
    return f"{key_part(source)}-{key_part(split)}-{index:06d}.tar"


def sha256_file(path: Path) -> str:
    return file_digest(path)["sha256"]


# ----------------------------------------------------------------------------------------------- build


def _group_by_split(refs: list[FrameRef]) -> dict[str, list[FrameRef]]:
    by_split: dict[str, list[FrameRef]] = {}
    for r in refs:
        by_split.setdefault(r.split, []).append(r)
    return by_split


def build(source: Source, cfg: BuildConfig, stop_after: int | None = None,
          on_shard: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Build (or resume) ``source`` into ``cfg.out``; return the manifest record of this source (of this
    part with ``cfg.part``).

    The folder is locked for this writer (:mod:`hodata.lock`) for the whole run; SIGTERM ends it like Ctrl-C
    (:mod:`hodata.interrupt`). ``stop_after`` (tests) raises BuildInterrupted once that many samples were
    written in this run, leaving the half-written shard's temp file behind as a killed process would.
    """
    if cfg.part:
        cfg.part = parse_part(f"{cfg.part[0]}/{cfg.part[1]}")  # the same checks as --part
    out = prepare_out(cfg.out)
    tag = part_tag(cfg.part) if cfg.part else None
    with writer_lock(out, key_part(source.name), part_tag=tag, wait=cfg.wait, command=cfg.command), \
            terminate_as_interrupt():
        return _build_locked(source, cfg, out, stop_after, on_shard)


def _build_locked(source: Source, cfg: BuildConfig, out: Path, stop_after: int | None,
                  on_shard: Callable[[dict], None] | None) -> dict[str, Any]:
    refs = source.frames()
    if not refs:
        raise DataError(f"no frames found for source {source.name}", source.root)
    by_split = _group_by_split(refs)
    if cfg.limit:
        by_split = {k: v[: cfg.limit] for k, v in by_split.items()}
    frames_total = {k: len(v) for k, v in by_split.items()}
    options = {"max_samples": cfg.max_samples, "max_bytes": cfg.max_bytes, "max_side": cfg.max_side,
               "limit": cfg.limit, **source.build_options()}
    # the same for every part of one build: merge compares it
    fingerprint = options_fingerprint({"schema": SCHEMA, "version": __version__, "source": source.name,
                                       "root": str(Path(source.root).resolve()), "options": options,
                                       "frames": frames_total})
    part_info = None
    if cfg.part:
        mine, groups = select([r for v in by_split.values() for r in v], cfg.part, source.partition_group)
        by_split = _group_by_split(mine)
        part_info = {"index": cfg.part[0], "count": cfg.part[1], "groups": groups,
                     "frames": {k: len(v) for k, v in by_split.items()}}
        manifest = Manifest(out, part_manifest_name(cfg.part))
    else:
        manifest = Manifest(out)
    clear_other_layouts(out, source.name, cfg.part, cfg.overwrite)
    previous = manifest.builds().get(source.name)
    if previous and previous.get("fingerprint") != fingerprint:
        if not cfg.overwrite:
            other = previous.get("hodata_version")
            made = (f"by hodata {other} (this is {__version__}; shards are cut and encoded differently)"
                    if other and other != __version__ else "with other options or data")
            raise DataError(f"{out} already holds a {source.name} build made {made}; "
                            "pass --overwrite to replace it, or choose another --out", manifest.path)
        remove_record(out, manifest, source.name, previous)
        previous = None
    # what a killed run of this writer left: never read as complete (the lock says no such run is alive)
    remove_stale_temp_shards(out, source.name, cfg.part)
    manifest.remove_stale_tmp()

    record = {
        "status": "in_progress",
        "fingerprint": fingerprint,
        "command": cfg.command,
        "options": options | {"workers": cfg.workers},
        "hodata_version": __version__,
        "git_commit": git_commit(),
        "schema": SCHEMA,
        "source": {"name": source.name, "root": str(Path(source.root).resolve()), "licence": source.LICENCE}
        | source.describe(),
        "started": (previous or {}).get("started") or utc_now(),
        "runs": (previous or {}).get("runs", 0) + 1,
        "shards": [],
        "skipped": [],
        "splits": {},
    }
    if part_info:
        record["part"] = part_info
        record["frames_total"] = frames_total
    kept_shards, kept_skips = _verified_prefix(out, previous)
    t0 = time.time()
    progress = _Progress(sum(len(v) for v in by_split.values()), cfg.progress,
                         source.name + (f" {cfg.part[0]}/{cfg.part[1]}" if cfg.part else ""))
    splits: dict[str, _SplitShards] = {}
    journal = _Journal(manifest, source.name, record, cfg.journal_every_s)
    base_index = first_shard_index(cfg.part)
    for split, split_refs in by_split.items():
        shards = kept_shards.get(split, [])
        start = shards[-1]["frames"][1] if shards else 0
        record["shards"].extend(shards)
        record["skipped"].extend(s for s in kept_skips.get(split, []) if s["index"] < start)
        if shards:
            progress.log(f"{split}: kept {len(shards)} complete shard(s) covering {start} frames")
        splits[split] = _SplitShards(out, source.name, split, base_index + len(shards), start, record, journal,
                                     progress, on_shard)
    progress.advance(sum(w.shard_start for w in splits.values()), resumed=True)
    # every range of frames not covered by a kept shard; the longest first (the short ones, a split's last
    # range and a resumed build's first, then fill the last gaps: a small build ends with its workers even)
    ranges = [(split, a, b) for split, refs in by_split.items()
              for a, b in plan_ranges(splits[split].shard_start, len(refs), cfg.max_samples)]
    ranges.sort(key=lambda t: t[1] - t[2])
    tasks, sliced = plan_tasks(ranges, cfg.workers)  # with 2+ workers, ranges cut into slices where it helps
    total_frames = sum(len(v) for v in by_split.values())
    allowed = cfg.skips_allowed(total_frames)
    frames_done = _FrameCount(cfg.workers > 0)
    ctx = RangeContext(source, by_split, out, base_index, cfg.max_samples, cfg.max_bytes, cfg.max_side, allowed,
                       slices=SliceCounter(sliced) if sliced else None,
                       on_frame=frames_done.add if cfg.workers > 0 else lambda: progress.advance(1),
                       stop_after=None if stop_after is None else [stop_after])
    if stop_after is not None and cfg.workers > 0:
        raise ValueError("the stop_after test hook needs workers=0")
    skipped = len(record["skipped"])
    try:
        results = ordered_map(write_range, ctx, tasks, cfg.workers, batch=1,
                              warm=lambda: _warm_up(source, by_split, tasks, cfg.max_side),
                              on_wait=lambda: progress.advance(frames_done.take()))
        with contextlib.closing(results):  # on an error: the workers are stopped before the clean-up below
            for done, result in enumerate(results, 1):
                progress.advance(frames_done.take())
                if 0 < len(tasks) - done < cfg.workers:  # a worker has no task left: its core can sync
                    journal.sync()  # (after the last result, the sync below takes these with the last shards)
                if result is None:  # a slice whose range the worker of another slice wrote
                    continue
                for piece in splits[result.split].in_order(result):
                    splits[result.split].add(piece)
                    skipped += len(piece.skips)
                    if skipped > allowed:
                        _fail_on_skips(record, splits, manifest, source.name, skipped, total_frames, cfg)
        for split_shards in splits.values():
            split_shards.finish()
        journal.sync()  # every shard on disk before the record says complete
        if not record["shards"] and total_frames:  # (a part may hold no frame at all: nothing to fail)
            _fail_on_skips(record, splits, manifest, source.name, skipped, total_frames, cfg)
        order = {split: i for i, split in enumerate(by_split)}
        record["shards"].sort(key=lambda sh: (order[sh["split"]], sh["frames"][0]))
        record["skipped"].sort(key=lambda sk: (order[sk["split"]], sk["index"]))
        for split, split_refs in by_split.items():
            record["splits"][split] = _split_summary(record, split, len(split_refs))
    except BuildInterrupted:  # the test hook imitates a kill: the half shard stays behind as .tmp
        raise
    except BaseException:  # an error or an interrupt: remove the unfinished shards (a rerun rebuilds them)
        remove_stale_temp_shards(out, source.name, cfg.part)
        if record["status"] == "in_progress":  # (a failure on skips has written its record already)
            with contextlib.suppress(OSError):  # the error that ended the run is the one to report
                journal.write()
        raise
    finally:  # the manifest keeps every finished shard; a .tmp is never read as complete
        progress.close()
    record["status"] = "complete"
    record["finished"] = utc_now()
    record["elapsed_s_last_run"] = round(time.time() - t0, 3)
    record["totals"] = _totals(record, by_split)
    manifest.update(source.name, record)
    return record


def _fail_on_skips(record, splits, manifest, source_name, skipped, total, cfg) -> None:
    """Record every skip so far (the manifest says why the build stopped), then raise TooManySkipped."""
    for w in splits.values():
        w.finish()
    record["status"] = "failed"
    why = (f"no sample could be built: all {skipped} frame(s) tried were skipped" if not record["shards"] and
           skipped >= total else f"{skipped} of {total} frames skipped, more than --max-skip-fraction "
           f"{cfg.max_skip_fraction} allows ({cfg.skips_allowed(total)})")
    record["failure"] = why
    manifest.update(source_name, record)
    reasons = "; ".join(f"{s['file']}: {s['message']}" if s.get("file") else f"{s['sequence']}/{s['frame']}: {s['reason']}"
                        for s in record["skipped"][:FIRST_REASONS])
    raise TooManySkipped(f"{source_name}: {why}; first: {reasons}. Fix the input or options "
                         f"(every reason is in {manifest.path})")


class _Journal:
    """The build's manifest record as its resume journal: rewritten (compact) after a finished shard when
    ``every_s`` seconds have passed since the last rewrite, and on demand. It also holds the shards not yet
    fsynced, for :meth:`sync`."""

    def __init__(self, manifest: Manifest, source_name: str, record: dict, every_s: float):
        self.manifest, self.source_name, self.record, self.every_s = manifest, source_name, record, every_s
        self.last = float("-inf")
        self.unsynced: list[Path] = []

    def shard_done(self, path: Path) -> None:
        start_writeback(path)
        self.unsynced.append(path)
        if time.monotonic() - self.last >= self.every_s:
            self.write()

    def write(self) -> None:
        self.manifest.update(self.source_name, self.record, compact=True)
        self.last = time.monotonic()

    def sync(self) -> None:
        """fsync the shards renamed since the last call. A file the disk fails to take (ENOSPC, EIO) is a
        DataError naming it; that batch is removed from the folder and from the record (a rerun rebuilds it)."""
        if not self.unsynced:
            return
        try:
            make_all_durable(self.unsynced)
        except DataError:
            names = {p.name for p in self.unsynced}
            self.record["shards"][:] = [sh for sh in self.record["shards"] if sh["name"] not in names]
            for path in self.unsynced:
                path.unlink(missing_ok=True)
            raise
        finally:
            self.unsynced = []


class _SplitShards:
    """Takes one split's finished shard files in frame order: renames each into place under the split's next
    shard name and records it (with the skipped frames it covers) in the build's record."""

    def __init__(self, out, source_name, split, next_index, shard_start, record, journal, progress, on_shard):
        self.out, self.source_name, self.split, self.index = out, source_name, split, next_index
        self.shard_start, self.record, self.journal = shard_start, record, journal
        self.progress, self.on_shard = progress, on_shard
        self.skips: list[dict] = []  # skipped frames since the last shard: they go with the next one
        self.next_range, self.waiting = shard_start, {}

    def in_order(self, result: RangeResult) -> list[Piece]:
        """The pieces of the ranges that are now complete in frame order (a range that finishes before an
        earlier one waits for it)."""
        self.waiting[result.start] = result
        pieces = []
        while self.next_range in self.waiting:
            done = self.waiting.pop(self.next_range)
            pieces.extend(done.pieces)
            self.next_range = done.end
        return pieces

    def add(self, piece: Piece) -> None:
        for rec in piece.skips:
            self.progress.log(f"skipped {rec['sequence']}/{rec['frame']}: {rec['reason']}")
        self.skips.extend(piece.skips)
        if piece.temp is None:  # frames that were all skipped: no file
            return
        name = shard_name(self.source_name, self.split, self.index)
        os.replace(self.out / piece.temp, self.out / name)
        info = {"name": name, **piece.info, "split": self.split, "frames": [self.shard_start, piece.end],
                "skipped": len(self.skips)}
        self.record["shards"].append(info)
        self.record["skipped"].extend(self.skips)
        self.journal.shard_done(self.out / name)
        self.progress.log(f"{name}: {info['samples']} samples, {info['bytes'] / 1e6:.1f} MB"
                          + (f", {len(self.skips)} skipped" if self.skips else ""))
        if self.on_shard:
            self.on_shard(info)
        self.index, self.shard_start, self.skips = self.index + 1, piece.end, []

    def finish(self) -> None:
        """Record the skipped frames no shard covers (the split's last frames, all skipped)."""
        self.record["skipped"].extend(self.skips)
        self.skips = []


class _FrameCount:
    """Frames encoded so far, counted where they are encoded (a worker, through shared memory) and taken
    by the builder for its progress bar."""

    def __init__(self, shared: bool):
        self._value = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Value("q", 0) \
            if shared else None
        self._taken = 0

    def add(self) -> None:
        with self._value.get_lock():
            self._value.value += 1

    def take(self) -> int:
        """The frames counted since the last call."""
        if self._value is None:
            return 0
        now = self._value.value
        new, self._taken = now - self._taken, now
        return new


def _warm_up(source: Source, by_split: dict[str, list[FrameRef]], tasks: list[Task], max_side: int | None) -> None:
    """Encode the first frame to build in this process before the workers are forked: what loads lazily on
    a first frame (imports, compiled kernels, meshes, models) is then loaded once for all of them."""
    if tasks:
        first = tasks[0]
        encode_frame(source, first.lo, by_split[first.split][first.lo], max_side)


def _verified_prefix(out: Path, previous: dict | None) -> tuple[dict[str, list], dict[str, list]]:
    """Per split, the leading run of recorded shards whose files exist with the recorded sha256 (names were
    checked to be plain file names of ``out`` when the manifest was read)."""
    kept: dict[str, list] = {}
    skips: dict[str, list] = {}
    if not previous:
        return kept, skips
    broken: set[str] = set()
    for sh in previous.get("shards", []):
        split = sh["split"]
        path = shard_path(out, sh["name"])
        if split in broken or not path.is_file() or sha256_file(path) != sh["sha256"]:
            broken.add(split)
            path.unlink(missing_ok=True)  # will be rebuilt from its first frame
            continue
        kept.setdefault(split, []).append(sh)
    for s in previous.get("skipped", []):
        skips.setdefault(s["split"], []).append(s)
    return kept, skips


def _split_summary(record: dict, split: str, frames: int) -> dict[str, int]:
    shards = [s for s in record["shards"] if s["split"] == split]
    return {"frames": frames, "samples": sum(s["samples"] for s in shards), "shards": len(shards),
            "skipped": sum(1 for s in record["skipped"] if s["split"] == split)}


def _totals(record: dict, by_split: dict[str, list[FrameRef]] | None = None) -> dict[str, Any]:
    pixels: dict[str, int] = {}
    for sh in record["shards"]:
        for k, v in sh["class_pixels"].items():
            pixels[k] = pixels.get(k, 0) + v
    totals = {"shards": len(record["shards"]), "samples": sum(s["samples"] for s in record["shards"]),
              "bytes": sum(s["bytes"] for s in record["shards"]), "skipped": len(record["skipped"]),
              "class_pixels": pixels}
    quality: dict[str, list[float]] = {}
    for sh in record["shards"]:
        for k, v in sh.get("quality", {}).items():
            quality.setdefault(k, []).extend(v)
    if quality:  # data-quality figures, e.g. IoU between provided and rendered masks
        totals["quality"] = {k: {"mean": float(np.mean(v)), "p01": float(np.percentile(v, 1)),
                                 "min": float(np.min(v)), "frames": len(v)} for k, v in quality.items()}
    if quality and by_split is not None:
        # The 20 lowest values by sample key, from shards whose list of a figure has one value per written sample
        # (a sample without it would shift the positions): written frames are the shard's frame range less its skips.
        from hodata.schema import make_key

        skipped = {(s["split"], s["index"]) for s in record["skipped"]}
        ranked: dict[str, list[tuple[float, str, int]]] = {}
        for sh in record["shards"]:
            split, (start, end) = sh["split"], sh["frames"]
            written = [i for i in range(start, end) if (split, i) not in skipped]
            for k, values in sh.get("quality", {}).items():
                if len(values) == len(written) == sh["samples"]:
                    ranked.setdefault(k, []).extend((v, split, i) for v, i in zip(values, written))
        for k, items in ranked.items():
            # keys only for the frames at or below the 20th lowest value (ties are ordered by key)
            cut = heapq.nsmallest(20, (v for v, _, _ in items))[-1]
            pairs = sorted((v, make_key(record["source"]["name"], split, by_split[split][i].sequence,
                                        by_split[split][i].frame)) for v, split, i in items if v <= cut)
            totals["quality"][k]["worst"] = [{"frame": key, "value": v} for v, key in pairs[:20]]
            totals["quality"][k]["ranked_frames"] = len(items)
    return totals


class _Progress:
    """A rich progress bar (frames/s, ETA) on a terminal; plain periodic lines otherwise."""

    def __init__(self, total: int, enabled: bool, label: str):
        self.enabled, self.total, self.done, self.t0, self.last = enabled, total, 0, time.time(), 0.0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn)

            self.bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]} frames/s"), TimeRemainingColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, rate="-")

    def advance(self, n: int, resumed: bool = False) -> None:
        self.done += n
        if resumed:
            self.t0 = time.time()
            self.base = self.done
        rate = (self.done - getattr(self, "base", 0)) / max(time.time() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, rate=f"{rate:.0f}")
        elif self.enabled and time.time() - self.last > 5 and not resumed:
            self.last = time.time()
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            print(f"  {self.done}/{self.total} frames, {rate:.0f} frames/s, ETA {eta:.0f} s", file=sys.stderr)

    def log(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(msg)
        else:
            print(msg, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
