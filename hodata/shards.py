"""Write ``hodata/2`` samples from any source into WebDataset tar shards, resumably.

Shards are ``<out>/<source>-<split>-NNNNNN.tar``, cut at ``max_samples`` samples or ``max_bytes`` bytes.
Each is written as ``<name>.tmp`` and renamed when complete; its sha256 and the range of frames it covers
go into the build's record, which is journalled to the manifest after the first shard, then at most every
``journal_every_s`` seconds, and when a run ends (an error or an interrupt included; a hard kill loses at most
that much work). A rerun of the same command keeps the complete shards whose sha256 still
matches, skips their frames without reading them, and rebuilds the rest. Tar members carry a fixed mtime,
so a resumed build is byte-identical to an uninterrupted one.

A part of a build (``--part i/N``, :mod:`hodata.parts`) does the same for its share of the frames, under its
own shard names and manifest; :mod:`hodata.merge` joins the parts. Every run holds the folder's writer lock
(:mod:`hodata.lock`) from start to end.

Frames are decoded and their masks derived in worker processes (``workers``, :mod:`hodata.workers`);
results come back in frame order through a bounded window, so output is deterministic and memory stays flat.
"""
from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np

from hodata import __version__
from hodata.errors import BadFrame, DataError
from hodata.interrupt import terminate_as_interrupt
from hodata.lock import writer_lock
from hodata.manifest import Manifest, file_digest, git_commit, options_fingerprint, shard_path, utc_now
from hodata.outdir import clear_other_layouts, prepare_out, remove_record, remove_stale_temp_shards
from hodata.parts import first_shard_index, parse_part, part_manifest_name, part_tag, select
from hodata.schema import SCHEMA, Sample, check_inst, check_seg, class_pixel_counts, key_part, label_histogram
from hodata.sources import FrameRef, Source
from hodata.tar_blocks import tar_blocks
from hodata.workers import ordered_map, spill_folder

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


class BuildInterrupted(RuntimeError):
    """Raised by the test hook ``stop_after`` to simulate a build killed midway."""


class SchemaViolation(RuntimeError):
    """A source produced a sample that breaks the schema: a bug in that source, never a skipped frame."""


class TooManySkipped(DataError):
    """More frames were skipped than ``--max-skip-fraction`` allows."""


def shard_name(source: str, split: str, index: int) -> str:
    return f"{key_part(source)}-{key_part(split)}-{index:06d}.tar"


def sha256_file(path: Path) -> str:
    return file_digest(path)["sha256"]


# ----------------------------------------------------------------------------------------------- encoding


def resize_sample(s: Sample, max_side: int) -> Sample:
    """Shrink so the longer side is ``max_side`` (image: area filter, re-encoded; mask: nearest; K scaled)."""
    scale = max_side / max(s.width, s.height)
    if scale >= 1.0:
        return s
    from hodata.schema import decode_image

    w, h = max(1, round(s.width * scale)), max(1, round(s.height * scale))
    img = cv2.resize(decode_image(s.image), (w, h), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if s.image_ext == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise BadFrame("could not re-encode resized image")
    seg = cv2.resize(s.seg, (w, h), interpolation=cv2.INTER_NEAREST)
    if s.inst is not None:
        s.inst = seg if s.inst is s.seg else cv2.resize(s.inst, (w, h), interpolation=cv2.INTER_NEAREST)
    if s.amodal is not None:
        s.amodal = cv2.resize(s.amodal, (w, h), interpolation=cv2.INTER_NEAREST)
    camera = s.camera
    if camera and camera.get("K") is not None:
        sx, sy = w / s.width, h / s.height
        K = np.asarray(camera["K"], dtype=np.float64).copy()
        # pixel centres at integers: x' = (x + 0.5) * s - 0.5
        K[0, 0] *= sx
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1] *= sy
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        camera = dict(camera, K=K.tolist())
    s.extra = dict(s.extra, resized_from=[s.width, s.height])
    s.image, s.seg, s.width, s.height, s.camera = buf.tobytes(), seg, w, h, camera
    return s


@dataclass
class Encoded:
    """A sample ready for the shard writer (made in a worker), or a skip record.

    ``data`` is the sample's complete tar blocks (a header and padded data per member), built in the worker:
    the main process only appends them to the shard file and hashes them.
    """

    split: str
    index: int
    key: str | None = None
    data: bytes | None = None
    class_pixels: dict[str, int] | None = None
    size: tuple[int, int] | None = None
    quality: dict[str, float] | None = None  # e.g. provided-vs-rendered mask IoU, summarised in the manifest
    skipped: dict[str, Any] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes this sample takes in the tar: a 512-byte header per member plus its data padded to 512."""
        return len(self.data) if self.data is not None else 0


def encode_frame(source: Source, index: int, ref: FrameRef, max_side: int | None) -> Encoded:
    """Load, check and encode one frame. A :class:`BadFrame` (the source's word that this frame's files are
    missing or broken) becomes a skip record naming the reason; anything else is a bug or a wrong option and
    propagates, with a note saying which frame it happened on."""
    try:
        s = source.load(ref)
        if max_side:
            s = resize_sample(s, max_side)
    except BadFrame as e:
        return Encoded(ref.split, index, skipped=_skip_record(ref, index, e))
    except Exception as e:
        e.add_note(f"while loading {source.name} frame {ref.split}/{ref.sequence}/{ref.frame}")
        raise
    hist = label_histogram(s.seg)
    try:  # a source must produce schema-valid samples: a violation is its bug, not a bad frame
        check_seg(s.seg, s.width, s.height, hist)
        if s.inst is not None:
            check_inst(s.inst, s.instances, s.seg, hist)
        if s.image_ext not in ("jpg", "png"):
            raise ValueError(f"unsupported image type {s.image_ext!r}")
    except ValueError as e:
        raise SchemaViolation(f"{source.name} frame {ref.split}/{ref.sequence}/{ref.frame}: {e}") from None
    counts = class_pixel_counts(s.seg, hist)
    quality = {k: float(v) for k, v in (s.extra.get("mask_agreement") or {}).items() if v is not None}
    return Encoded(ref.split, index, s.key, tar_blocks(s.key, s.members()), counts, (s.width, s.height),
                   quality or None)


def _skip_record(ref: FrameRef, index: int, e: Exception) -> dict[str, Any]:
    rec = {"split": ref.split, "sequence": ref.sequence, "frame": ref.frame, "index": index,
           "reason": str(e), "error": type(e).__name__}
    if isinstance(e, DataError) and e.path:
        rec["file"], rec["message"] = e.path, e.message
    return rec


def _encode_item(ctx: tuple[Source, int | None], item: tuple[str, int, FrameRef]) -> Encoded:
    source, max_side = ctx
    return encode_frame(source, item[1], item[2], max_side)


def encode_ordered(source: Source, items: Iterable[tuple[str, int, FrameRef]], workers: int,
                   max_side: int | None) -> Iterator[Encoded]:
    """Encode (split, index, ref) items in order; with workers, in batches through a bounded window, the
    encoded bytes passed back through files (:func:`hodata.workers.spill_folder`)."""
    if workers <= 0:
        yield from ordered_map(_encode_item, (source, max_side), items, 0)
        return
    with spill_folder() as spill:
        yield from ordered_map(_encode_item, (source, max_side), items, workers, spill_dir=spill)


# ------------------------------------------------------------------------------------------ shard writer


class ShardWriter:
    """Writes one shard to ``<name>.tmp``; ``finish`` ends the tar, fsyncs and renames it into place.

    A plain USTAR tar, exactly what ``webdataset.WebDataset`` reads: the samples' tar blocks as the workers
    built them (:func:`tar_blocks`), then tar's end (two zero blocks, padded to a 10 KiB record) as
    ``tarfile`` writes it. Not webdataset's TarWriter: importing webdataset pulls in torch (~0.5 GB and
    seconds per process), which a builder and its workers never need.
    """

    def __init__(self, out: Path, name: str):
        self.path, self.tmp = out / name, out / (name + ".tmp")
        self._file = open(self.tmp, "wb")
        self._sha, self.count = hashlib.sha256(), 0
        self.samples, self.payload = 0, 0
        self.class_pixels: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.quality: dict[str, list[float]] = {}

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha.update(data)
        self.count += len(data)

    def write(self, enc: Encoded) -> None:
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
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        info = {"name": self.path.name, "sha256": self._sha.hexdigest(), "bytes": self.count,
                "samples": self.samples, "class_pixels": self.class_pixels, "image_sizes": self.sizes}
        if self.quality:
            info["quality"] = self.quality
        return info

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


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
            raise DataError(f"{out} already holds a {source.name} build made with other options or data; "
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
    splits: dict[str, _SplitWriter] = {}
    journal = _Journal(manifest, source.name, record, cfg.journal_every_s)
    first_index = first_shard_index(cfg.part)
    for split, split_refs in by_split.items():
        shards = kept_shards.get(split, [])
        start = shards[-1]["frames"][1] if shards else 0
        record["shards"].extend(shards)
        record["skipped"].extend(s for s in kept_skips.get(split, []) if s["index"] < start)
        if shards:
            progress.log(f"{split}: kept {len(shards)} complete shard(s) covering {start} frames")
        splits[split] = _SplitWriter(out, source.name, split, first_index + len(shards), start, cfg, record,
                                     journal, progress, on_shard)
    progress.advance(sum(w.shard_start for w in splits.values()), resumed=True)

    def todo():  # every frame not covered by a kept shard, split after split, in order
        for split, split_refs in by_split.items():
            for i in range(splits[split].shard_start, len(split_refs)):
                yield split, i, split_refs[i]

    written = 0
    total_frames = sum(len(v) for v in by_split.values())
    allowed = cfg.skips_allowed(total_frames)
    skipped = len(record["skipped"])
    current: _SplitWriter | None = None
    try:
        # one worker pool for the whole build; results come back in frame order
        for enc in encode_ordered(source, todo(), cfg.workers, cfg.max_side):
            progress.advance(1)
            if current is None or current.split != enc.split:
                if current is not None:
                    current.finish(len(by_split[current.split]))
                current = splits[enc.split]
            if enc.skipped:
                current.skip(enc.skipped)
                skipped += 1
                if skipped > allowed:
                    _fail_on_skips(record, splits, manifest, source.name, skipped, total_frames, cfg)
                continue
            current.add(enc)
            written += 1
            if stop_after is not None and written >= stop_after:
                raise BuildInterrupted(f"stopped after {written} samples (test hook)")
        if current is not None:
            current.finish(len(by_split[current.split]))
        if not record["shards"] and total_frames:  # (a part may hold no frame at all: nothing to fail)
            _fail_on_skips(record, splits, manifest, source.name, skipped, total_frames, cfg)
        for split, split_refs in by_split.items():
            record["splits"][split] = _split_summary(record, split, len(split_refs))
    except BuildInterrupted:  # the test hook imitates a kill: the half shard stays behind as .tmp
        raise
    except BaseException:  # an error or an interrupt: remove the half shard (a rerun rebuilds it), journal the rest
        for w in splits.values():
            w.abort()
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
        record["skipped"].extend(w.skips)
        w.skips = []
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
    ``every_s`` seconds have passed since the last rewrite, and on demand."""

    def __init__(self, manifest: Manifest, source_name: str, record: dict, every_s: float):
        self.manifest, self.source_name, self.record, self.every_s = manifest, source_name, record, every_s
        self.last = float("-inf")

    def shard_done(self) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.write()

    def write(self) -> None:
        self.manifest.update(self.source_name, self.record, compact=True)
        self.last = time.monotonic()


class _SplitWriter:
    """Cuts one split's sample stream into shards and records each finished shard in the build's record."""

    def __init__(self, out, source_name, split, next_index, shard_start, cfg, record, journal, progress, on_shard):
        self.out, self.source_name, self.split, self.index = out, source_name, split, next_index
        self.shard_start, self.cfg, self.record, self.journal = shard_start, cfg, record, journal
        self.progress, self.on_shard = progress, on_shard
        self.writer: ShardWriter | None = None
        self.skips: list[dict] = []

    def skip(self, rec: dict) -> None:
        self.skips.append(rec)
        self.progress.log(f"skipped {rec['sequence']}/{rec['frame']}: {rec['reason']}")

    def add(self, enc: "Encoded") -> None:
        w = self.writer
        if w and (w.samples >= self.cfg.max_samples or w.payload + enc.nbytes + 1024 > self.cfg.max_bytes):
            self._close(enc.index)  # frames skipped before this one belong to the closed shard
        if self.writer is None:
            self.writer = ShardWriter(self.out, shard_name(self.source_name, self.split, self.index))
        self.writer.write(enc)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        # an interrupt between a shard file's creation and its writer's registration leaves the file unowned
        (self.out / (shard_name(self.source_name, self.split, self.index) + ".tmp")).unlink(missing_ok=True)

    def finish(self, end: int) -> None:
        if self.writer:
            self._close(end)
        elif self.skips:  # trailing frames all skipped: record them, write no empty shard
            self.record["skipped"].extend(self.skips)
            self.skips = []

    def _close(self, end: int) -> None:
        info = self.writer.finish() | {"split": self.split, "frames": [self.shard_start, end],
                                       "skipped": len(self.skips)}
        self.record["shards"].append(info)
        self.record["skipped"].extend(self.skips)
        self.journal.shard_done()
        self.progress.log(f"{info['name']}: {info['samples']} samples, {info['bytes'] / 1e6:.1f} MB"
                          + (f", {len(self.skips)} skipped" if self.skips else ""))
        if self.on_shard:
            self.on_shard(info)
        self.writer, self.index, self.shard_start, self.skips = None, self.index + 1, end, []


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
