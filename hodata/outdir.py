"""The output folder of a build: checked before anything is written, and cleared of what a killed run or a
replaced build left there. Called with the folder's writer lock held (:mod:`hodata.lock`), which is what
makes removing another run's files safe: only a run that cannot be alive any more can have left them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hodata.errors import DataError
from hodata.lock import part_lock_path, _held_by_others
from hodata.manifest import MANIFEST_NAME, Manifest, shard_path
from hodata.parts import part_manifests, part_tag, shard_in_part
from hodata.schema import key_part


def prepare_out(out: Path) -> Path:
    """``--out`` as a writable folder (created when missing), or one line naming what is wrong with it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("--out is a file, not a folder", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the output folder ({e.strerror or e})", out) from None
    if not writable(out):
        raise DataError("the output folder is not writable", out)
    return out


def writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def remove_stale_temp_shards(out: Path, source: str, part: tuple[int, int] | None) -> list[Path]:
    """Remove the half-written shards (``*.tar.tmp``) of ``source`` in this role: a single build's, or one
    part's own (another part may be writing its own right now). Returns what was removed."""
    # a shard's temporary name, or a range task's (hodata.shard_tasks.temp_name: the writer's first index, then
    # the range's first frame and the file's number within it, or s and a slice's first frame)
    pattern = re.compile(rf"^{re.escape(key_part(source))}-[^-]+-(\d+)(?:\.\d+-s?\d+)?\.tar\.tmp$")
    removed = []
    for p in Path(out).glob(f"{key_part(source)}-*.tar.tmp"):
        m = pattern.match(p.name)
        if m and shard_in_part(int(m[1]), part):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def remove_record(out: Path, manifest: Manifest, source: str, record: dict) -> None:
    """Delete a build's shards (names checked to stay in ``out``) and then its record."""
    for sh in record.get("shards", []):
        shard_path(out, sh["name"]).unlink(missing_ok=True)
    manifest.update(source, None)


def clear_other_layouts(out: Path, source: str, part: tuple[int, int] | None, overwrite: bool) -> None:
    """Make sure the folder holds no build of ``source`` laid out otherwise than this one: a whole build
    when building parts, parts when building whole, or parts of another count. With ``overwrite`` such
    builds are removed; without, one line says what is there and what to do."""
    whole = Manifest(out)
    whole_rec = whole.builds().get(source)
    found: list[tuple[Manifest, dict, str]] = []  # (manifest, record, what it is)
    if whole_rec is not None:
        merged = whole_rec.get("parts")
        if part is None and merged:
            found.append((whole, whole_rec, f"a merge of {len(merged)} parts ({MANIFEST_NAME})"))
        elif part is not None and not merged:
            found.append((whole, whole_rec, f"a whole build ({MANIFEST_NAME})"))
        elif part is not None and merged and len(merged) != part[1]:
            found.append((whole, whole_rec, f"a merge of {len(merged)} parts ({MANIFEST_NAME})"))
    for p, path in part_manifests(out).items():
        if part is not None and p[1] == part[1]:
            continue
        m = Manifest(out, path.name)
        rec = m.builds().get(source)
        if rec is not None:
            found.append((m, rec, f"part {p[0]}/{p[1]} ({path.name})"))
    if not found:
        return
    what = ", ".join(w for _, _, w in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    mine = f"part {part[0]}/{part[1]}" if part else "a whole build"
    if not overwrite:
        hint = (f"join the parts with `hodata merge {out}`, " if part is None and all(m is not whole for m, _, _ in found)
                else "")
        raise DataError(f"already holds {source} as {what}; {mine} would mix layouts: {hint}pass --overwrite "
                        "to replace it, or choose another --out", out)
    for m, rec, w in found:
        tag = part_tag((rec["part"]["index"], rec["part"]["count"])) if isinstance(rec.get("part"), dict) else None
        if tag and _held_by_others(part_lock_path(out, source, tag)):
            raise DataError(f"cannot replace {source} {w}: that part is being built right now", m.path)
        remove_record(out, m, source, rec)
