"""Deterministic held-out splits by group (sequence, video, subject), never by random frame.

Neighbouring video frames are near-duplicates, so a frame-level split inflates every score. A group goes
to validation when a stable hash of ``seed/group`` falls below the fraction: the assignment does not
depend on the order or number of the other groups, and a later build reproduces it from the manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable


def hash_unit(text: str) -> float:
    """A stable number in [0, 1) for a string (sha1, not Python's salted hash)."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big") / 2**64


def assign_groups(groups: Iterable[str], val_fraction: float, seed: str = "hodata") -> dict[str, str]:
    """Map each group to "train" or "val". At least one group is held out when there are two or more."""
    groups = sorted(set(groups))
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val fraction must be in [0, 1), got {val_fraction}")
    scores = {g: hash_unit(f"{seed}/{g}") for g in groups}
    out = {g: ("val" if scores[g] < val_fraction else "train") for g in groups}
    if val_fraction > 0 and len(groups) >= 2 and "val" not in out.values():
        out[min(groups, key=lambda g: scores[g])] = "val"
    return out


def load_split_file(path: str | Path) -> dict[str, str]:
    """Read a split file into group -> split.

    Two forms: lists per split ``{"train": [...], "val": [...]}``, or the ``{group: split}`` mapping a build
    records in its manifest (``split_assignment``), so a later build can reproduce an earlier one's split.
    """
    from hodata.errors import DataError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read split file: {e}", path) from e
    if not isinstance(data, dict):
        raise DataError("split file must hold a JSON object", path)
    if data and all(isinstance(v, str) for k, v in data.items() if not k.startswith("_")):
        return {k: v for k, v in data.items() if not k.startswith("_")}
    out: dict[str, str] = {}
    for split, members in data.items():
        if split.startswith("_"):
            continue  # comments / provenance
        for m in members:
            if m in out:
                raise DataError(f"{m!r} is listed in both {out[m]!r} and {split!r}", path)
            out[m] = split
    return out
