"""Building 1/N of a source per process or machine: ``hodata build ... --part i/N``, joined by ``hodata merge``.

Frames are divided by **group** (a sequence by default, or what the source names as its group through
:meth:`hodata.sources.Source.partition_group`): a group is never cut, so a part holds whole sequences. Every
part lists all frames of the source (the same list in every part: the build's fingerprint says so) and
assigns the groups with a balanced greedy rule: groups sorted by frame count (largest first, then by
name), each to the part with the fewest frames so far (the lowest index on a tie). The assignment depends
only on the frame list, never on the machine, the order the parts run in or how many run at once; the
split of a frame is decided by the source over all frames, so it is the same as in a single build.

Part i writes into the same output folder as the others:

- shards ``<source>-<split>-<i><NNNNNN>.tar`` (shard k of part i has index i * 1,000,000 + k): names never
  collide between parts or with a single build's ``<source>-<split>-NNNNNN.tar``, and keep the pattern
  readers parse (``<source>-<split>-<digits>.tar``, the split right after the source, no '-' in it);
- its record in ``manifest.part-i-of-N.json`` (the same format as ``manifest.json``), which is its resume
  journal as ``manifest.json`` is a single build's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable

from hodata.errors import UserError

PART_STRIDE = 1_000_000  # shard indices per part: part i uses i * PART_STRIDE .. i * PART_STRIDE + 999,999
_PART_ARG = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_PART_MANIFEST = re.compile(r"^manifest\.part-(\d+)-of-(\d+)\.json$")


class BadPart(UserError):
    """A ``--part`` value that is not ``i/N`` with 1 <= i <= N."""


def parse_part(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``: part 2 of 3 (parts count from 1)."""
    m = _PART_ARG.match(str(text))
    if not m:
        raise BadPart(f"--part must be i/N (e.g. 2/3), got {text!r}")
    i, n = int(m[1]), int(m[2])
    if not 1 <= i <= n:
        raise BadPart(f"--part {i}/{n}: i must be between 1 and N")
    if n >= PART_STRIDE:
        raise BadPart(f"--part {i}/{n}: at most {PART_STRIDE - 1} parts")
    return i, n


def part_tag(part: tuple[int, int]) -> str:
    return f"part-{part[0]}-of-{part[1]}"


def part_manifest_name(part: tuple[int, int]) -> str:
    return f"manifest.{part_tag(part)}.json"


def part_of_manifest_name(name: str) -> tuple[int, int] | None:
    """``manifest.part-2-of-3.json`` -> ``(2, 3)``; None for any other name."""
    m = _PART_MANIFEST.match(name)
    return (int(m[1]), int(m[2])) if m else None


def part_manifests(out: Path) -> dict[tuple[int, int], Path]:
    """The part manifests in a folder, by (i, N)."""
    found = {}
    for p in sorted(Path(out).glob("manifest.part-*-of-*.json")):
        part = part_of_manifest_name(p.name)
        if part is not None:
            found[part] = p
    return found


def first_shard_index(part: tuple[int, int] | None) -> int:
    return 0 if part is None else part[0] * PART_STRIDE


def shard_in_part(index: int, part: tuple[int, int] | None) -> bool:
    """Whether a shard index belongs to ``part`` (None: a single build)."""
    return index < PART_STRIDE if part is None else index // PART_STRIDE == part[0]


def assign_groups(frames_per_group: dict[str, int], n: int) -> dict[str, int]:
    """Group -> part (1..n), balanced greedy over groups sorted by size (largest first), then name."""
    load = [0] * n
    out: dict[str, int] = {}
    for group, frames in sorted(frames_per_group.items(), key=lambda kv: (-kv[1], kv[0])):
        k = min(range(n), key=lambda j: (load[j], j))
        out[group] = k + 1
        load[k] += frames
    return out


def select(refs: Iterable, part: tuple[int, int], group_of: Callable) -> tuple[list, list[str]]:
    """The frames of ``part`` (in their order) and the sorted groups it holds."""
    refs = list(refs)
    sizes: dict[str, int] = {}
    for r in refs:
        g = str(group_of(r))
        sizes[g] = sizes.get(g, 0) + 1
    assignment = assign_groups(sizes, part[1])
    mine = sorted(g for g, k in assignment.items() if k == part[0])
    keep = set(mine)
    return [r for r in refs if str(group_of(r)) in keep], mine
