"""Shards checked against the ``manifest.json`` that ``hodata build`` wrote beside them.

Each source record of a manifest lists its shards with their size and sha256 (``hodata.manifest``). A shard
read by ``hotrain`` is one of:

- *known*: its folder has a ``manifest.json`` that lists it: size and sha256 are checked;
- *unverified*: no manifest beside it, not listed in it, or a URL / ``pipe:`` command: read as is, after one
  warning line that says how many shards are not verified.

Two ways of checking a known shard: :func:`check_file` reads it once and compares (``fit`` does this once per
run for every shard a rank reads, before training starts, so a damaged shard is skipped before a single sample
of it is drawn), and :class:`HashingReader` hashes the bytes as the tar reader consumes them (``eval`` reads
every shard exactly once, so the check costs no extra pass over the file).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from hodata.errors import DataError
from hodata.manifest import MANIFEST_NAME, Manifest, file_digest, shard_path

CHUNK = 1 << 22


@dataclass(frozen=True)
class Expected:
    """What the manifest says a shard is."""

    bytes: int
    sha256: str
    manifest: str


@dataclass
class ShardIndex:
    """Expected size and sha256 of every shard a manifest lists, by real path, and the shards no manifest lists."""

    known: dict[str, Expected] = field(default_factory=dict)
    unverified: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # path -> manifest, of listed shards not on disk

    def expected(self, url: str) -> Expected | None:
        return self.known.get(_key(url))

    def warning(self) -> str | None:
        """One line about the shards that cannot be verified, or None."""
        if not self.unverified:
            return None
        first = self.unverified[0]
        return (f"{len(self.unverified)} shard(s) not verified (no {MANIFEST_NAME} beside them lists them, "
                f"e.g. {first}): a damaged one is read as is")


def _key(url: str) -> str:
    return os.path.realpath(url)


def index_shards(urls: list[str], split: str | None = None) -> ShardIndex:
    """Read the manifests of the folders that hold ``urls`` (a damaged manifest: DataError, one line).

    With ``split``: the shards of that split a manifest lists but its folder lacks go into ``missing``."""
    index = ShardIndex()
    folders: dict[str, dict[str, tuple[str, Expected]]] = {}
    for url in urls:
        if not os.path.exists(url) and (url.startswith("pipe:") or ":" in url.split("/")[0]):
            index.unverified.append(url)  # remote or piped: nothing to compare on this side
            continue
        folder = os.path.dirname(_key(url))
        if folder not in folders:
            folders[folder] = _read_manifest(Path(folder))
        listed = folders[folder].get(os.path.basename(_key(url)))
        if listed is None:
            index.unverified.append(url)
        else:
            index.known[_key(url)] = listed[1]
    if split is not None:
        for folder in folders:
            index.missing.update(missing_in_folder(folder, split))
    return index


def _read_manifest(folder: Path) -> dict[str, tuple[str, Expected]]:
    """Shard name -> (split, expected) of every shard the folder's manifest lists."""
    if not (folder / MANIFEST_NAME).is_file():
        return {}
    manifest = Manifest(folder)
    out: dict[str, tuple[str, Expected]] = {}
    for rec in manifest.builds().values():  # every record checked: names are plain file names of the folder
        for sh in rec.get("shards", []):
            shard_path(folder, sh["name"])
            size = sh.get("bytes")
            out[sh["name"]] = (sh["split"], Expected(int(size) if type(size) is int else -1, sh["sha256"],
                                                     str(manifest.path)))
    return out


def quick_problem(url: str, exp: Expected) -> str | None:
    """What a stat() already shows is wrong with a known shard (missing, empty, other size), or None."""
    try:
        size = os.stat(url).st_size
    except FileNotFoundError:
        return f"shard is missing (listed in {exp.manifest})"
    except OSError as e:
        return f"shard cannot be read ({e.strerror})"
    if size == 0:
        return f"shard is empty (0 bytes; {exp.manifest} lists {exp.bytes})"
    if exp.bytes >= 0 and size != exp.bytes:
        return f"shard is {size} bytes, {exp.manifest} lists {exp.bytes} (truncated or changed)"
    return None


def check_file(url: str, exp: Expected) -> str | None:
    """Why a known shard is damaged (one phrase), or None when its size and sha256 are the manifest's."""
    problem = quick_problem(url, exp)
    if problem:
        return problem
    try:
        sha256 = file_digest(Path(url))["sha256"]
    except OSError as e:
        return f"shard cannot be read ({e.strerror})"
    return None if sha256 == exp.sha256 else _mismatch(exp)


def _mismatch(exp: Expected) -> str:
    return f"shard's sha256 differs from the one in {exp.manifest} (damaged or changed since the build)"


class HashingReader:
    """A file object that hashes what is read from it; :meth:`finish` reads the rest and compares."""

    def __init__(self, f: BinaryIO, url: str, exp: Expected):
        self.f, self.url, self.exp = f, url, exp
        self.h, self.n = hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.h.update(data)
        self.n += len(data)
        return data

    def finish(self) -> None:
        """Hash what the tar reader left (end-of-archive padding) and raise DataError on a mismatch."""
        while self.read(CHUNK):
            pass
        if self.h.hexdigest() != self.exp.sha256:
            raise DataError(_mismatch(self.exp), self.url)

    def close(self) -> None:
        self.f.close()

    def __getattr__(self, name: str) -> Any:  # tarfile asks for e.g. ``name``
        return getattr(self.f, name)


def missing_in_folder(folder: str, split: str) -> dict[str, str]:
    """Shards of ``split`` that the manifest in ``folder`` lists and the folder lacks: path -> manifest."""
    if not os.path.isdir(folder):
        return {}
    return {os.path.join(folder, name): exp.manifest for name, (sh_split, exp) in _read_manifest(Path(folder)).items()
            if sh_split == split and not os.path.exists(os.path.join(folder, name))}
