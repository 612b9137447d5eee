"""``<out>/manifest.json``: provenance of every build written into an output folder.

One file per output folder, one record per source (``builds[<source>]``), so several sources can be built
into the same folder and trained on together. Updated atomically (temp file + rename) under a file lock
after every finished shard, so it doubles as the resume journal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "hodata-manifest/1"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def options_fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit() -> str | None:
    """The commit of the hodata checkout this code runs from, when it is a git checkout."""
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
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = self.out / MANIFEST_NAME

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except ValueError as e:
            from hodata.errors import DataError

            raise DataError(f"manifest is not valid JSON ({e}); move it away to rebuild", self.path) from e

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update(self, source: str, record: dict[str, Any]) -> None:
        """Replace the record of one source, keeping the others (atomic write under a lock)."""
        with self._locked():
            data = self.read() or {"schema": MANIFEST_SCHEMA, "builds": {}}
            data.setdefault("builds", {})[source] = record
            data["updated"] = utc_now()
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
            os.replace(tmp, self.path)


def find_manifests(paths: list[Path]) -> list[Path]:
    """manifest.json files beside the given shards / in the given folders."""
    found: list[Path] = []
    for p in paths:
        d = p if p.is_dir() else p.parent
        m = d / MANIFEST_NAME
        if m.exists() and m not in found:
            found.append(m)
    return found
