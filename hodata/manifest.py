"""``<out>/manifest.json``: provenance of every build written into an output folder.

One file per output folder, one record per source (``builds[<source>]``), so several sources can be built
into the same folder and trained on together. Updated atomically (temp file + rename) under a file lock
while a build runs (:mod:`hodata.shards` says when), so it doubles as the resume journal. A part of a build (``--part i/N``) keeps
its record in ``manifest.part-i-of-N.json`` in the same format until ``hodata merge`` joins the parts.

Everything read back from a manifest is checked before it is used: a manifest of a newer format is refused,
and a record whose shard names are not plain file names of this folder (``../x``, ``/abs``, ``a/b``) is
refused as a whole, so nothing outside the folder is ever opened or deleted because a file said so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

from hodata.errors import DataError

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "hodata-manifest/1"
_SCHEMA_VERSION = re.compile(r"^hodata-manifest/(\d+)$")
SHARD_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*\.tar$")  # what shard_name makes: no dot, no slash
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def options_fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@functools.cache
def git_commit() -> str | None:
    """The commit of the hodata checkout this code runs from, when it is a git checkout. Asked once per
    process (two git commands, ~10 ms): the code a process runs is the code it imported."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def file_digest(path: Path, chunk: int = 1 << 22) -> dict[str, Any]:
    """Size and sha256 of a file, streamed (annotation files reach ~700 MB, shards more)."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            n += len(block)
    return {"bytes": n, "sha256": h.hexdigest()}


class Manifest:
    """One manifest file of an output folder: ``manifest.json``, or a part's ``manifest.part-i-of-N.json``."""

    def __init__(self, out: str | Path, name: str = MANIFEST_NAME):
        self.out = Path(out)
        self.path = self.out / name
        self.tmp = self.path.with_name(self.path.name + ".tmp")

    def read(self) -> dict[str, Any]:
        """The manifest's content, checked: {} when there is none; DataError (one line) when it is damaged,
        not a hodata manifest, or written by a newer hodata."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"manifest does not read ({e}); move it away to rebuild", self.path) from None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DataError(f"manifest is not valid JSON ({e}); move it away to rebuild", self.path) from None
        check_manifest(data, self.path)
        return data

    def builds(self) -> dict[str, dict[str, Any]]:
        """``builds`` of the manifest, each record checked (:func:`check_record`)."""
        builds = self.read().get("builds", {})
        for source, rec in builds.items():
            check_record(rec, source, self.path)
        return builds

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update(self, source: str, record: dict[str, Any] | None, compact: bool = False) -> None:
        """Replace the record of one source (None: remove it), keeping the others (atomic write under a lock).
        A manifest left without records is removed. ``compact``: one line, no indentation (what a build's
        journal writes while it runs: json's C encoder, ~10x faster than the indented form the final record
        gets)."""
        with self._locked():
            data = self.read() or {"schema": MANIFEST_SCHEMA, "builds": {}}
            builds = data.setdefault("builds", {})
            if record is None:
                builds.pop(source, None)
                if not builds:
                    self.path.unlink(missing_ok=True)
                    return
            else:
                builds[source] = record
            data["updated"] = utc_now()
            if compact:
                text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
            else:
                text = json.dumps(data, indent=1, sort_keys=True, default=str)
            self.tmp.write_text(text)
            os.replace(self.tmp, self.path)

    def remove_stale_tmp(self) -> None:
        """Remove the temp file a killed writer left (written and renamed only under the lock, so one seen
        while holding the lock is stale)."""
        with self._locked():
            self.tmp.unlink(missing_ok=True)


def check_manifest(data: Any, path: Path) -> None:
    """A manifest this hodata reads: a JSON object of format ``hodata-manifest/1`` with a ``builds`` object."""
    if not isinstance(data, dict):
        raise DataError("not a hodata manifest (the file holds no JSON object); move it away to rebuild", path)
    schema = data.get("schema", MANIFEST_SCHEMA)
    m = _SCHEMA_VERSION.match(str(schema))
    if m is None:
        raise DataError(f"not a hodata manifest (format {schema!r}); move it away to rebuild", path)
    if int(m[1]) > int(_SCHEMA_VERSION.match(MANIFEST_SCHEMA)[1]):
        raise DataError(f"written by a newer hodata (format {schema}; this hodata reads {MANIFEST_SCHEMA}): "
                        "upgrade hodata, or build into another --out", path)
    if not isinstance(data.get("builds", {}), dict):
        raise DataError("manifest's 'builds' is not an object; move it away to rebuild", path)


def check_record(rec: Any, source: str, path: Path) -> None:
    """A build record whose shard list can be acted on: plain shard file names of this folder, sha256 digests,
    splits and frame ranges of the right types. Anything else refuses the whole manifest, in one line."""
    def bad(what: str) -> DataError:
        return DataError(f"build record of {source!r} is damaged: {what}; refusing this manifest "
                         "(move it away to rebuild)", path)

    if not isinstance(rec, dict):
        raise bad("not an object")
    shards = rec.get("shards", [])
    if not isinstance(shards, list):
        raise bad("'shards' is not a list")
    for sh in shards:
        if not isinstance(sh, dict):
            raise bad("a shard entry is not an object")
        name = sh.get("name")
        if not isinstance(name, str) or not SHARD_FILE_NAME.match(name):
            raise bad(f"shard name {name!r} is not a shard file name in this folder")
        if not isinstance(sh.get("sha256"), str) or not _SHA256.match(sh["sha256"]):
            raise bad(f"shard {name}: sha256 {sh.get('sha256')!r} is not a sha256 digest")
        if not isinstance(sh.get("split"), str):
            raise bad(f"shard {name}: split is not a string")
        frames = sh.get("frames")
        if not (isinstance(frames, list) and len(frames) == 2 and all(type(v) is int and v >= 0 for v in frames)):
            raise bad(f"shard {name}: frames {frames!r} is not a [start, end] pair")
    skipped = rec.get("skipped", [])
    if not isinstance(skipped, list) or not all(isinstance(x, dict) and isinstance(x.get("split"), str)
                                                and type(x.get("index")) is int for x in skipped):
        raise bad("'skipped' is not a list of {split, index, ...} entries")


def shard_path(out: Path, name: str) -> Path:
    """``out / name`` for a shard name read from a manifest, after :func:`check_record` passed it: a plain file
    name, and (when it exists) a file that resolves inside ``out``."""
    if not SHARD_FILE_NAME.match(name):
        raise DataError(f"shard name {name!r} is not a shard file name in this folder", out)
    path = Path(out) / name
    if path.is_symlink() and Path(out).resolve() not in path.resolve().parents:
        raise DataError(f"shard {name} is a link to a file outside the output folder ({path.resolve()})", path)
    return path


def find_manifests(paths: list[Path]) -> list[Path]:
    """manifest.json files beside the given shards / in the given folders."""
    found: list[Path] = []
    for p in paths:
        d = p if p.is_dir() else p.parent
        m = d / MANIFEST_NAME
        if m.exists() and m not in found:
            found.append(m)
    return found
