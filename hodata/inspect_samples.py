"""The samples ``hodata inspect`` keeps to draw: a seeded reservoir per source and split, as encoded members.

Keeping the members encoded (the image's own bytes, the label PNGs) holds a few KB per sample where decoded
maps would hold megabytes; they are decoded once, when drawn on the contact sheet or in the HTML gallery.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hodata.schema import decode_seg, side_label_map


@dataclass
class Candidate:
    """A sample kept for the contact sheet and the gallery: its encoded members, decoded when drawn."""

    key: str
    source: str
    split: str
    image: bytes
    seg_png: bytes
    inst_png: bytes | None = None  # only when it passed every check, with ``instances``
    instances: list[dict[str, Any]] = field(default_factory=list)
    amodal_png: bytes | None = None  # only when it passed every check

    @property
    def caption(self) -> str:
        return self.key

    def seg(self) -> np.ndarray:
        return decode_seg(self.seg_png)

    def sides(self) -> np.ndarray:
        """Per-pixel side map (:func:`hodata.schema.side_label_map`); hands of unknown side without inst.png."""
        inst = decode_seg(self.inst_png) if self.inst_png is not None else None
        return side_label_map(self.seg(), inst, self.instances)

    def amodal(self) -> np.ndarray | None:
        return decode_seg(self.amodal_png) if self.amodal_png is not None else None

    def summary(self) -> dict[str, Any]:
        """What a gallery caption says: hands by side, object names, whether it has amodal masks."""
        hands = [i.get("side") or "unknown" for i in self.instances if i.get("class") == "hand"]
        objects = [i.get("name") and str(i["name"]) for i in self.instances if i.get("class") == "object"]
        return {"hands": hands, "objects": objects, "amodal": self.amodal_png is not None,
                "instances": self.inst_png is not None}


class Reservoir:
    """Seeded reservoir sampling (algorithm R): a uniform, reproducible pick of ``k`` items from a stream."""

    def __init__(self, k: int, seed: int | str) -> None:
        self.k, self.rng, self.seen = k, random.Random(seed), 0
        self.items: list[Any] = []

    def slot(self) -> int | None:
        """Where the next item goes (an index into ``items``, or ``len(items)`` to append), or None."""
        self.seen += 1
        if self.k <= 0:
            return None
        if len(self.items) < self.k:
            return len(self.items)
        j = self.rng.randrange(self.seen)
        return j if j < self.k else None

    def put(self, slot: int, item: Any) -> None:
        if slot == len(self.items):
            self.items.append(item)
        else:
            self.items[slot] = item


class GroupedReservoir:
    """One seeded reservoir of ``k`` per (source, split), drawn from in turn, so every source and split shows.

    A uniform draw over a folder with a large and a small source would show only the large one.
    """

    def __init__(self, k: int, seed: int) -> None:
        self.k, self.seed = k, seed
        self.groups: dict[tuple[str, str], Reservoir] = {}

    def slot(self, group: tuple[str, str]) -> int | None:
        if self.k <= 0:
            return None
        if group not in self.groups:
            self.groups[group] = Reservoir(self.k, f"{self.seed}/{group[0]}/{group[1]}")
        return self.groups[group].slot()

    def put(self, group: tuple[str, str], slot: int, item: Any) -> None:
        self.groups[group].put(slot, item)

    def pick(self) -> list[Any]:
        """``k`` items in all: sources take turns, and within a source its splits take turns."""
        by_source: dict[str, list[list[Any]]] = defaultdict(list)
        for source, split in sorted(self.groups):
            by_source[source].append(list(self.groups[(source, split)].items))
        queues = [interleave(splits) for _, splits in sorted(by_source.items())]
        return interleave(queues)[: self.k]


def interleave(queues: list[list[Any]]) -> list[Any]:
    """Round-robin merge: the first item of each queue, then the second of each, and so on."""
    out: list[Any] = []
    for i in range(max(map(len, queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out
