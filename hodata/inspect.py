"""``hodata inspect``: read shards end to end and report counts, class balance, provenance and problems.

Every shard is streamed once with :mod:`tarfile` (members grouped into samples by key, the part of the
basename before its first dot, as webdataset does) while its sha256 is computed on the same bytes. Only
counts are kept, plus the few samples a seeded reservoir per source and split picks for the contact sheet
and the HTML gallery (kept as their encoded members), so memory stays flat whatever the size of the data.

Problems (exit code 1): an unreadable or truncated tar, a sample missing its image, ``seg.png`` or
``json``, json that does not parse or is not ``hodata/1`` or ``hodata/2``, a label map (``seg.png``,
``inst.png``, ``amodal.png``) that is not 8-bit single channel or whose size differs from the image, label
values outside 0/1/2/255, amodal values outside its two bits, a malformed json ``instances`` list, an
``inst.png`` whose ids ``instances`` does not list or whose pixels disagree with ``seg.png``, a duplicate
key, a shard whose sha256 or sample count differs from the manifest, a shard the manifest lists but the
folder lacks. Warnings (exit code 0): a folder of shards without ``manifest.json`` (nothing to check the
shards' sha256 and counts against), a build recorded as not complete, a leftover ``*.tar.tmp`` of such a
build (a killed build; rerunning it resumes and removes the file), a shard on disk that the folder's
manifest does not list. A ``*.tar.tmp`` that no in-progress build accounts for is a problem: nothing will
clean it up and its data is in no shard.

``hodata/1`` samples (no ``inst.png``, no ``instances``) are valid; they count as samples without
instances in the side counts.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hodata.errors import DataError
from hodata.inspect_samples import Candidate, GroupedReservoir
from hodata.manifest import MANIFEST_NAME
from hodata.schema import (AMODAL_HAND_BIT, AMODAL_OBJECT_BIT, CLASS_NAMES, IMAGE_EXTS, INSTANCE_CLASSES,
                           MAX_INSTANCES, READABLE_SCHEMAS, SIDES, VALID_LABELS, check_inst, decode_seg, image_size,
                           key_part, label_histogram, make_key)

REPORT_SCHEMA = "hodata-inspect/1"
MAX_LISTED_PROBLEMS = 1000  # kept in the report; the count is always exact
TAR_END_MARKER = 1024  # a complete tar ends with (at least) two 512-byte zero blocks
DEFAULT_SHEET_SAMPLES = 16
DEFAULT_HTML_SAMPLES = 24
FIRST_SKIP_REASONS = 3


# --------------------------------------------------------------------------------------------- findings


@dataclass
class Finding:
    """One problem or warning, naming the shard (or file) and, where it applies, the sample key."""

    kind: str
    where: str
    message: str
    key: str | None = None

    def line(self) -> str:
        return f"{self.where}: " + (f"{self.key}: " if self.key else "") + self.message

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "where": self.where, "key": self.key, "message": self.message}


class Findings:
    """Problems and warnings, capped in number kept but counted exactly."""

    def __init__(self) -> None:
        self.problems: list[Finding] = []
        self.warnings: list[Finding] = []
        self.n_problems = 0
        self.n_warnings = 0

    def problem(self, kind: str, where: object, message: str, key: str | None = None) -> None:
        self.n_problems += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(Finding(kind, str(where), message, key))

    def warning(self, kind: str, where: object, message: str, key: str | None = None) -> None:
        self.n_warnings += 1
        if len(self.warnings) < MAX_LISTED_PROBLEMS:
            self.warnings.append(Finding(kind, str(where), message, key))


# ------------------------------------------------------------------------------------------------ inputs


@dataclass
class Inputs:
    shards: list[Path]  # complete shards to read, in a stable order
    partials: list[Path]  # leftover ``*.tar.tmp`` files
    folders: list[Path]  # folders whose manifest.json (when present) describes the shards


def resolve_inputs(paths: list[Path]) -> Inputs:
    """Expand folders (their ``*.tar``) and quoted globs; a path that matches nothing is a DataError."""
    files: list[Path] = []
    folders: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            folders.append(p)
            files.extend(sorted(p.glob("*.tar")) + sorted(p.glob("*.tar.tmp")))
        elif p.is_file():
            files.append(p)
        elif glob.has_magic(str(p)):
            matches = sorted(Path(m) for m in glob.glob(str(p)))
            if not matches:
                raise DataError("no file matches this pattern", p)
            for m in matches:
                if m.is_dir():
                    folders.append(m)
                    files.extend(sorted(m.glob("*.tar")) + sorted(m.glob("*.tar.tmp")))
                else:
                    files.append(m)
        else:
            raise DataError("no such file or folder", p)
    seen: set[Path] = set()
    shards, partials = [], []
    for f in files:
        r = f.resolve()
        if r in seen:
            continue
        seen.add(r)
        (partials if f.name.endswith(".tar.tmp") else shards).append(f)
    for f in shards + partials:
        if f.parent not in folders:
            folders.append(f.parent)
    folders = _unique_folders(folders)
    if not shards and not partials and not any((d / MANIFEST_NAME).exists() for d in folders):
        raise DataError("no *.tar shards found", paths[0] if len(paths) == 1 else ", ".join(map(str, paths)))
    return Inputs(shards, partials, folders)


def _unique_folders(folders: list[Path]) -> list[Path]:
    out, seen = [], set()
    for d in folders:
        r = d.resolve()
        if r not in seen:
            seen.add(r)
            out.append(d)
    return out


# --------------------------------------------------------------------------------------------- manifests


@dataclass
class ManifestIndex:
    """What the manifests beside the shards promise: per shard file its record, per folder its builds."""

    builds: dict[Path, dict[str, dict]] = field(default_factory=dict)  # folder -> {source: record}
    shards: dict[Path, tuple[str, dict]] = field(default_factory=dict)  # resolved shard path -> (source, entry)

    def build_for_file(self, path: Path) -> tuple[str, dict] | None:
        """The build record whose source prefix names this (partial) shard file."""
        for source, rec in self.builds.get(path.parent.resolve(), {}).items():
            if path.name.startswith(key_part(source) + "-"):
                return source, rec
        return None


def read_manifests(folders: list[Path], findings: Findings) -> ManifestIndex:
    index = ManifestIndex()
    for folder in folders:
        path = folder / MANIFEST_NAME
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text())
            builds = data["builds"]
            if not isinstance(builds, dict):
                raise TypeError("'builds' is not an object")
        except (ValueError, KeyError, TypeError, OSError) as e:
            findings.problem("manifest_unreadable", path, f"manifest does not read ({type(e).__name__}: {e})")
            continue
        index.builds[folder.resolve()] = builds
        for source, rec in builds.items():
            if rec.get("status") != "complete":
                findings.warning("build_incomplete", path, f"build of {source!r} is {rec.get('status', 'unknown')}, "
                                 "not complete (killed or still running?): rerun the same build command to resume")
            for entry in rec.get("shards", []):
                shard = folder / entry["name"]
                index.shards[shard.resolve()] = (source, entry)
                if not shard.exists():
                    findings.problem("shard_missing", shard, f"listed in {path} (source {source!r}) but missing")
    return index


def check_partials(partials: list[Path], index: ManifestIndex, findings: Findings) -> None:
    for p in partials:
        found = index.build_for_file(p)
        if found and found[1].get("status") != "complete":
            findings.warning("partial_shard", p, f"half-written shard of the unfinished {found[0]!r} build "
                             "(read by nothing; the next run of the build removes it)")
        else:
            findings.problem("partial_shard", p, "half-written shard that no unfinished build in manifest.json "
                             "accounts for (a killed build?): rebuild, or delete it")


# ------------------------------------------------------------------------------------------ tar streaming


class _HashingReader(io.RawIOBase):
    """A read-only file that hashes what passes through it and keeps its last bytes."""

    def __init__(self, f) -> None:
        self.f, self.sha, self.count, self.tail = f, hashlib.sha256(), 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        if n:
            view = memoryview(b)[:n]
            self.sha.update(view)
            self.count += n
            self.tail = (self.tail + bytes(view[-TAR_END_MARKER:]))[-TAR_END_MARKER:]
        return n or 0

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


@dataclass
class RawSample:
    key: str
    members: dict[str, bytes]  # extension ("jpg", "seg.png", "json", ...) -> bytes


@dataclass
class TarScan:
    """What reading one tar file found out besides its samples."""

    sha256: str = ""
    nbytes: int = 0
    error: str | None = None  # why the tar could not be read to its end


def split_member_name(name: str) -> tuple[str, str] | None:
    """``dir/base.ext.more`` -> (``dir/base``, ``ext.more``): webdataset's key / extension rule."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{head}/{stem}" if head else stem), ext


def iter_tar_samples(path: Path, scan: TarScan, findings: Findings) -> Iterator[RawSample]:
    """Stream one tar: yield samples (consecutive members sharing a key), fill ``scan`` at the end."""
    current: RawSample | None = None
    try:
        with open(path, "rb") as raw:
            reader = _HashingReader(raw)
            try:
                with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 20), mode="r|*") as tf:
                    for member in tf:
                        if not member.isfile():
                            continue
                        parts = split_member_name(member.name)
                        f = tf.extractfile(member)
                        data = f.read() if f else b""
                        if len(data) != member.size:
                            raise tarfile.ReadError(f"member {member.name} is cut short")
                        if parts is None:
                            findings.problem("bad_member", path, f"member {member.name!r} has no extension")
                            continue
                        key, ext = parts
                        if current is not None and current.key != key:
                            yield current
                            current = None
                        if current is None:
                            current = RawSample(key, {})
                        if ext in current.members:
                            findings.problem("duplicate_member", path, f"member {ext!r} appears twice", key)
                        current.members[ext] = data
            except (tarfile.TarError, EOFError, OSError, ValueError) as e:
                scan.error = f"{type(e).__name__}: {e}"
            reader.drain()
            if scan.error is None and (reader.count < TAR_END_MARKER or reader.tail.strip(b"\0")):
                scan.error = "no end-of-archive marker (file cut short)"
            scan.sha256, scan.nbytes = reader.sha.hexdigest(), reader.count
    except OSError as e:
        scan.error = f"cannot open ({e.strerror or e})"
    if current is not None and scan.error is None:
        yield current
    elif current is not None:  # the last sample of a truncated tar: its members may be incomplete
        findings.problem("truncated_sample", path, "last sample before the truncation is dropped", current.key)


# ------------------------------------------------------------------------------------------ sample checks


@dataclass
class SourceStats:
    samples_by_split: Counter = field(default_factory=Counter)
    shards_by_split: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    pixels: Counter = field(default_factory=Counter)  # class name -> pixels
    labels: Counter = field(default_factory=Counter)  # "hand"/"object"/"sides" -> samples that annotate it
    sizes: Counter = field(default_factory=Counter)  # "WxH" -> samples
    members: Counter = field(default_factory=Counter)  # "inst.png"/"amodal.png" -> samples carrying it
    instance_classes: Counter = field(default_factory=Counter)  # "hand"/"object" -> instances listed
    hand_sides: Counter = field(default_factory=Counter)  # "left"/"right"/"unknown" -> hand instances
    frames_with: Counter = field(default_factory=Counter)  # "left"/"right"/"both" -> samples with such hands


def instances_problem(instances: object) -> str | None:
    """Why a json ``instances`` value breaks the schema, or None when it is well formed."""
    if not isinstance(instances, list):
        return f"json instances is a {type(instances).__name__}, not a list"
    ids = []
    for ins in instances:
        if not isinstance(ins, dict):
            return f"json instances holds a {type(ins).__name__}, not an object"
        i = ins.get("id")
        if not isinstance(i, int) or isinstance(i, bool) or not 1 <= i <= MAX_INSTANCES:
            return f"instance id must be an integer 1..{MAX_INSTANCES}, got {i!r}"
        if not isinstance(ins.get("class"), str) or ins["class"] not in INSTANCE_CLASSES:
            return f"instance {i}: class must be one of {sorted(INSTANCE_CLASSES)}, got {ins.get('class')!r}"
        if ins.get("side") not in (None, *SIDES):
            return f"instance {i}: side must be left, right or null, got {ins.get('side')!r}"
        ids.append(i)
    if len(set(ids)) != len(ids):
        return f"instance ids repeat: {ids}"
    return None


def decode_label_member(data: bytes, name: str) -> np.ndarray:
    """Decode an 8-bit label PNG member (``inst.png``, ``amodal.png``); ValueError naming the member."""
    try:
        return decode_seg(data)
    except ValueError as e:  # decode_seg's message names seg.png
        raise ValueError(str(e).replace("seg.png", name)) from None


class Inspector:
    """Accumulates counts over every sample of every shard; keeps nothing else but the reservoirs."""

    def __init__(self, findings: Findings, reservoir: GroupedReservoir) -> None:
        self.findings = findings
        self.reservoir = reservoir
        self.sources: dict[str, SourceStats] = defaultdict(SourceStats)
        self.first_shard_of_key: dict[str, str] = {}
        self.shard_rows: list[dict[str, Any]] = []

    def inspect_shard(self, path: Path, expected: tuple[str, dict] | None) -> None:
        scan = TarScan()
        samples = 0
        for raw in iter_tar_samples(path, scan, self.findings):
            samples += 1
            self.check_sample(path, raw)
        if scan.error:
            self.findings.problem("unreadable_tar", path, f"unreadable or truncated tar: {scan.error}")
        sha_ok = None
        if expected is not None:
            source, entry = expected
            if entry.get("sha256") and scan.sha256:
                sha_ok = entry["sha256"] == scan.sha256
            if sha_ok is False:
                self.findings.problem("sha256_mismatch", path, f"sha256 {scan.sha256[:16]}... differs from the "
                                      f"manifest's {entry['sha256'][:16]}... (file changed or corrupted)")
            if entry.get("samples") is not None and entry["samples"] != samples:
                self.findings.problem("sample_count_mismatch", path,
                                      f"{samples} samples read, manifest says {entry['samples']}")
        self.shard_rows.append({"shard": str(path), "samples": samples, "bytes": scan.nbytes, "sha256": scan.sha256,
                                "in_manifest": expected is not None, "sha256_matches": sha_ok,
                                "readable": scan.error is None})

    def check_sample(self, path: Path, raw: RawSample) -> None:
        problem, key, where = self.findings.problem, raw.key, path
        if key in self.first_shard_of_key:
            first = self.first_shard_of_key[key]
            problem("duplicate_key", where, "duplicate key" + ("" if first == str(path) else f" (also in {first})"), key)
        else:
            self.first_shard_of_key[key] = str(path)
        if key.rpartition("/")[2].startswith("_"):
            problem("bad_key", where, "key starts with '_' (webdataset reads it as metadata)", key)
        image_ext = next((e for e in IMAGE_EXTS if e in raw.members), None)
        missing = [m for m, ok in (("jpg/png", image_ext), ("seg.png", "seg.png" in raw.members),
                                   ("json", "json" in raw.members)) if not ok]
        if missing:
            problem("missing_member", where, f"missing {', '.join(missing)} (has {', '.join(sorted(raw.members))})", key)

        meta = self._read_meta(where, raw)
        source = str(meta.get("source") or key.split("/")[0]) if meta else key.split("/")[0]
        split = str(meta.get("split") or "?") if meta else (key.split("/") + ["?"])[1]
        stats = self.sources[source]
        stats.samples_by_split[split] += 1
        stats.shards_by_split[split].add(str(path))
        if meta:
            labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
            for name in ("hand", "object", "sides"):
                stats.labels[name] += bool(labels.get(name))

        size = None
        if image_ext:
            try:
                size = image_size(raw.members[image_ext])
                stats.sizes[f"{size[0]}x{size[1]}"] += 1
            except Exception as e:  # noqa: BLE001 - PIL raises many types for bad bytes
                problem("bad_image", where, f"{image_ext} does not decode ({type(e).__name__}: {e})", key)
            if size and meta and (meta.get("width"), meta.get("height")) != size:
                problem("size_mismatch", where, f"image is {size[0]}x{size[1]}, json says "
                        f"{meta.get('width')}x{meta.get('height')}", key)
        seg = None
        if "seg.png" in raw.members:
            try:
                seg = decode_seg(raw.members["seg.png"])
            except ValueError as e:
                problem("bad_seg", where, str(e), key)
        if seg is not None:
            counts = label_histogram(seg)
            for v in VALID_LABELS:
                stats.pixels[CLASS_NAMES[v]] += int(counts[v])
            bad = [v for v in np.flatnonzero(counts).tolist() if v not in VALID_LABELS]
            if bad:
                stats.pixels["other"] += int(counts.sum() - sum(int(counts[v]) for v in VALID_LABELS))
                problem("bad_labels", where, f"seg.png has values outside 0/1/2/255: {bad[:8]}", key)
            if size and (seg.shape[1], seg.shape[0]) != size:
                problem("size_mismatch", where, f"seg.png is {seg.shape[1]}x{seg.shape[0]}, "
                        f"image is {size[0]}x{size[1]}", key)
                seg = None
        instances = self._check_instances(where, key, meta, stats)
        inst_ok = self._check_inst(where, raw, seg, size, instances, stats)
        amodal_ok = self._check_amodal(where, raw, size, stats)
        if seg is not None and size is not None:
            group = (source, split)
            slot = self.reservoir.slot(group)
            if slot is not None:
                self.reservoir.put(group, slot, Candidate(
                    key, source, split, raw.members[image_ext], raw.members["seg.png"],
                    raw.members["inst.png"] if inst_ok else None, instances if inst_ok else [],
                    raw.members["amodal.png"] if amodal_ok else None))

    def _check_instances(self, where: Path, key: str, meta: dict | None, stats: SourceStats) -> list[dict] | None:
        """The json ``instances`` (``[]`` when absent, as in hodata/1), counted per class and side; None when
        malformed or when the json itself is unusable."""
        if not meta:
            return None
        if "instances" not in meta:
            return []
        instances = meta["instances"]
        why = instances_problem(instances)
        if why:
            self.findings.problem("bad_instances", where, why, key)
            return None
        sides = set()
        for ins in instances:
            stats.instance_classes[ins["class"]] += 1
            if ins["class"] == "hand":
                side = ins.get("side") or "unknown"
                stats.hand_sides[side] += 1
                sides.add(side)
        for side in SIDES:
            stats.frames_with[side] += side in sides
        stats.frames_with["both"] += set(SIDES) <= sides
        return instances

    def _check_inst(self, where: Path, raw: RawSample, seg: np.ndarray | None, size: tuple[int, int] | None,
                    instances: list[dict] | None, stats: SourceStats) -> bool:
        """Check ``inst.png`` on its own and against ``seg.png`` and ``instances``; True when it passes."""
        if "inst.png" not in raw.members:
            return False
        stats.members["inst.png"] += 1
        try:
            inst = decode_label_member(raw.members["inst.png"], "inst.png")
        except ValueError as e:
            self.findings.problem("bad_inst", where, str(e), raw.key)
            return False
        if size and (inst.shape[1], inst.shape[0]) != size:
            self.findings.problem("size_mismatch", where, f"inst.png is {inst.shape[1]}x{inst.shape[0]}, "
                                  f"image is {size[0]}x{size[1]}", raw.key)
            return False
        if seg is None or instances is None:
            return False  # the broken member is already named; nothing sound to compare with
        try:
            check_inst(inst, instances, seg)
        except ValueError as e:
            self.findings.problem("inst_mismatch", where, f"inst.png: {e}", raw.key)
            return False
        return True

    def _check_amodal(self, where: Path, raw: RawSample, size: tuple[int, int] | None, stats: SourceStats) -> bool:
        if "amodal.png" not in raw.members:
            return False
        stats.members["amodal.png"] += 1
        try:
            amodal = decode_label_member(raw.members["amodal.png"], "amodal.png")
        except ValueError as e:
            self.findings.problem("bad_amodal", where, str(e), raw.key)
            return False
        if size and (amodal.shape[1], amodal.shape[0]) != size:
            self.findings.problem("size_mismatch", where, f"amodal.png is {amodal.shape[1]}x{amodal.shape[0]}, "
                                  f"image is {size[0]}x{size[1]}", raw.key)
            return False
        allowed = AMODAL_HAND_BIT | AMODAL_OBJECT_BIT
        bad = [v for v in np.flatnonzero(label_histogram(amodal)).tolist() if v & ~allowed]
        if bad:
            self.findings.problem("bad_amodal", where, f"amodal.png has values outside bits 0-1 (hand, object): "
                                  f"{bad[:8]}", raw.key)
            return False
        return True

    def _read_meta(self, where: Path, raw: RawSample) -> dict[str, Any] | None:
        if "json" not in raw.members:
            return None
        try:
            meta = json.loads(raw.members["json"])
        except ValueError as e:
            self.findings.problem("bad_json", where, f"json does not parse ({e})", raw.key)
            return None
        if not isinstance(meta, dict):
            self.findings.problem("bad_json", where, "json is not an object", raw.key)
            return None
        if meta.get("schema") not in READABLE_SCHEMAS:
            self.findings.problem("bad_schema", where, f"json schema is {meta.get('schema')!r}, not one of "
                                  f"{', '.join(READABLE_SCHEMAS)}", raw.key)
        try:
            expected_key = make_key(meta["source"], meta["split"], meta["sequence"], meta["frame"])
        except (KeyError, ValueError):
            self.findings.problem("bad_json", where, "json lacks source/split/sequence/frame", raw.key)
        else:
            if expected_key != raw.key:
                self.findings.problem("key_mismatch", where, f"key differs from the json's {expected_key!r}", raw.key)
        return meta


# ------------------------------------------------------------------------------------------------ report


def build_report(inputs: Inputs, index: ManifestIndex, insp: Inspector, findings: Findings,
                 sheet: Path | None) -> dict[str, Any]:
    splits, balance, labels, sizes, instances = [], {}, {}, {}, {}
    for source in sorted(insp.sources):
        st = insp.sources[source]
        for split in sorted(st.samples_by_split):
            splits.append({"source": source, "split": split, "shards": len(st.shards_by_split[split]),
                           "samples": st.samples_by_split[split]})
        total = sum(st.pixels.values())
        balance[source] = {"pixels": dict(st.pixels),
                           "fractions": {k: (v / total if total else 0.0) for k, v in st.pixels.items()}}
        n = sum(st.samples_by_split.values())
        labels[source] = {"samples": n, "hand": st.labels["hand"], "object": st.labels["object"],
                          "sides": st.labels["sides"]}
        sizes[source] = dict(st.sizes.most_common())
        instances[source] = {
            "samples": n, "with_inst_png": st.members["inst.png"], "with_amodal_png": st.members["amodal.png"],
            "instances": {c: st.instance_classes[c] for c in INSTANCE_CLASSES},
            "hand_sides": {s: st.hand_sides[s] for s in (*SIDES, "unknown")},
            "frames_with_hand": {s: st.frames_with[s] for s in (*SIDES, "both")},
        }
    rows_by_path = {Path(r["shard"]).resolve(): r for r in insp.shard_rows}
    provenance = [build_provenance(folder, source, rec, rows_by_path)
                  for folder, builds in index.builds.items() for source, rec in sorted(builds.items())]
    return {
        "schema": REPORT_SCHEMA,
        "inputs": {"shards": [str(p) for p in inputs.shards], "partials": [str(p) for p in inputs.partials],
                   "manifests": [str(f / MANIFEST_NAME) for f in index.builds]},
        "totals": {"shards": len(insp.shard_rows), "samples": sum(r["samples"] for r in insp.shard_rows),
                   "bytes": sum(r["bytes"] for r in insp.shard_rows)},
        "shards": insp.shard_rows,
        "splits": splits,
        "class_balance": balance,
        "labels": labels,
        "instances": instances,
        "image_sizes": sizes,
        "provenance": provenance,
        "problem_count": findings.n_problems,
        "warning_count": findings.n_warnings,
        "problems": [f.as_dict() for f in findings.problems],
        "warnings": [f.as_dict() for f in findings.warnings],
        "contact_sheet": str(sheet) if sheet else None,
        "html_report": None,
    }


def build_provenance(folder: Path, source: str, rec: dict[str, Any],
                     rows_by_path: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    """One build record of a manifest, as the report shows it (fields a manifest lacks come out None/empty)."""
    src = rec.get("source") if isinstance(rec.get("source"), dict) else {}
    skipped = rec.get("skipped") or []
    totals = rec.get("totals") if isinstance(rec.get("totals"), dict) else {}
    shards = []
    for entry in rec.get("shards") or []:
        row = rows_by_path.get((folder / str(entry.get("name"))).resolve())
        shards.append({"name": entry.get("name"), "split": entry.get("split"), "samples": entry.get("samples"),
                       "bytes": entry.get("bytes"), "sha256": entry.get("sha256"),
                       "verified": None if row is None else row["sha256_matches"]})
    return {
        "source": source, "manifest": str(folder / MANIFEST_NAME), "status": rec.get("status"),
        "command": " ".join(map(str, rec.get("command") or [])), "hodata_version": rec.get("hodata_version"),
        "git_commit": rec.get("git_commit"), "schema": rec.get("schema"), "root": src.get("root"),
        "licence": src.get("licence") or src.get("license") or rec.get("licence"),
        "started": rec.get("started"), "finished": rec.get("finished"), "options": rec.get("options") or {},
        "checksums": find_checksums(src), "split_assignment": src.get("split_assignment"),
        "source_record": src, "mask_agreement": totals.get("quality") or rec.get("mask_agreement") or {},
        "shards": shards, "skipped": len(skipped),
        "first_skips": [f"{s.get('sequence')}/{s.get('frame')}: {s.get('reason')}"
                        for s in skipped[:FIRST_SKIP_REASONS]],
        "skips": [{k: s.get(k) for k in ("split", "sequence", "frame", "reason", "file")}
                  for s in skipped[:MAX_LISTED_PROBLEMS]],
    }


def find_checksums(record: Any, path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every sha256 a source record holds: ``{"file", "sha256", "bytes"}``, named by the file where it says which.

    Sources record annotation digests as ``{name: {"sha256", "bytes", ...}}`` or as ``<x>_sha256`` (with the
    file in ``<x>_file`` or ``<x>``) beside other facts; both are found wherever they sit.
    """
    out: list[dict[str, Any]] = []
    if not isinstance(record, dict):
        return out
    for k, v in record.items():
        if isinstance(v, dict) and isinstance(v.get("sha256"), str):
            base = k[: -len("_digest")] if k.endswith("_digest") else k
            named = record.get(base) if base != k else None
            out.append({"file": named if isinstance(named, str) else "/".join(path + (k,)),
                        "sha256": v["sha256"], "bytes": v.get("bytes")})
        elif isinstance(v, dict):
            out.extend(find_checksums(v, path + (k,)))
        elif k.endswith("_sha256") and isinstance(v, str):
            base = k[: -len("_sha256")]
            named = record.get(f"{base}_file", record.get(base))
            out.append({"file": named if isinstance(named, str) else "/".join(path + (base,)), "sha256": v,
                        "bytes": None})
    return out


# --------------------------------------------------------------------------------------------------- run


def inspect_paths(paths: list[Path], n_samples: int = 0, seed: int = 0) -> tuple[dict[str, Any], list[Candidate]]:
    """Read everything under ``paths``; return the report and up to ``n_samples`` samples to draw."""
    inputs = resolve_inputs([Path(p) for p in paths])
    findings = Findings()
    index = read_manifests(inputs.folders, findings)
    check_partials(inputs.partials, index, findings)
    warn_unverifiable(inputs, index, findings)
    insp = Inspector(findings, GroupedReservoir(n_samples, seed))
    for shard in inputs.shards:
        expected = index.shards.get(shard.resolve())
        if expected is None and shard.parent.resolve() in index.builds:
            findings.warning("not_in_manifest", shard, f"not listed in {shard.parent / MANIFEST_NAME}")
        insp.inspect_shard(shard, expected)
    return build_report(inputs, index, insp, findings, None), insp.reservoir.pick()


def warn_unverifiable(inputs: Inputs, index: ManifestIndex, findings: Findings) -> None:
    """A warning per folder of shards without a manifest: their sha256 and counts have nothing to match.

    A warning, not a problem: shards copied without their manifest still read, and every sample in them
    is checked; what cannot be told is whether a shard is missing or was changed since it was built.
    """
    for folder in inputs.folders:
        if folder.resolve() in index.builds or (folder / MANIFEST_NAME).exists():
            continue  # an unreadable manifest is already a problem
        n = sum(1 for s in inputs.shards if s.parent.resolve() == folder.resolve())
        if n:
            findings.warning("no_manifest", folder, f"no {MANIFEST_NAME} beside {n} shard(s): their sha256 and "
                             "sample counts are not checked, and a missing shard cannot be noticed")


def check_outputs(inputs_paths: list[Path], outputs: list[Path | None]) -> None:
    """Refuse an output path that is one of the inputs (a shard or a manifest): no output overwrites an input."""
    outs = [Path(o) for o in outputs if o is not None]
    if not outs:
        return
    inputs = resolve_inputs([Path(p) for p in inputs_paths])
    taken = {p.resolve() for p in inputs.shards + inputs.partials}
    taken |= {(f / MANIFEST_NAME).resolve() for f in inputs.folders}
    for o in outs:
        if o.resolve() in taken:
            raise DataError("is an input of this inspection; choose another output path", o)


def run_inspect(paths: list[Path], n_samples: int = 0, sheet: Path | None = None, seed: int = 0,
                as_json: bool = False, html: Path | None = None) -> int:
    """The ``hodata inspect`` command: print the report, write the contact sheet and the HTML page;
    1 when problems exist."""
    if n_samples and sheet is None and html is None:
        raise DataError("--samples needs --out sheet.png or --html report.html")
    if not n_samples and html is not None:
        n_samples = DEFAULT_HTML_SAMPLES
    elif not n_samples and sheet is not None:
        n_samples = DEFAULT_SHEET_SAMPLES
    check_outputs(paths, [sheet, html])
    report, candidates = inspect_paths(paths, n_samples, seed)

    def warn(kind: str, where: Path, message: str) -> None:
        report["warnings"].append(Finding(kind, str(where), message).as_dict())
        report["warning_count"] += 1

    if sheet is not None:
        from hodata.contact_sheet import write_contact_sheet

        if candidates:
            write_contact_sheet(candidates, Path(sheet))
            report["contact_sheet"] = str(sheet)
        else:
            warn("no_sheet", sheet, "no readable sample to draw")
    if html is not None:
        from hodata.inspect_html import write_html_report

        if not candidates:
            warn("no_gallery", html, "no readable sample to show in the gallery")
        report["html_report"] = str(html)
        write_html_report(report, candidates, Path(html))
    from hodata.inspect_report import print_report

    print_report(report, as_json)
    return 1 if report["problem_count"] else 0
