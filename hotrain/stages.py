"""Training stages: the classes a model predicts, how stored labels become training targets, what a flip swaps.

A stage is one entry of :data:`STAGES`. Its ``stored`` table maps each value of the label map it reads
(``seg.png`` for ``hand`` / ``handobj``; :func:`hodata.schema.side_label_map` of ``seg.png`` + ``inst.png`` for
``sides``) to a class or to a *label set*: a pixel known only to be one of several classes (a hand of unknown
side is a left or a right hand). Targets are class ids ``0..C-1``, then set ids ``C..``, and 255 (ignore). The
loss scores a set by the marginal ``-log(sum of its classes' probabilities)``; evaluation leaves set pixels out.

``object_unlabelled`` names the set that a background pixel becomes in a sample whose source does not annotate
objects (its 0 pixels only say "not hand"); the loss applies it per sample from the json's ``labels.object``.

``flip_pairs`` are classes that a horizontal flip turns into each other: the training flip relabels them and
flip test-time augmentation swaps their scores back (:func:`flip_swap_permutation`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from hodata.schema import IGNORE

# A class that a widened head gains starts from the background row with its bias lowered by this: p_new starts at
# about exp(-4) ~ 2 % of p_bg, so the narrower model's predictions are kept at the start.
OBJECT_BIAS_OFFSET = 4.0
# Where a class's classifier row starts when a checkpoint without that class is widened (head surgery).
ROW_ORIGINS = {"left_hand": "hand", "right_hand": "hand", "object": "background"}


@dataclass(frozen=True)
class Stage:
    name: str
    classes: tuple[str, ...]
    help: str
    stored: dict[int, str]  # stored label value -> class or label-set name (values not listed: ignore)
    labels: str = "seg"  # the stored map: "seg" (seg.png: 0 bg, 1 hand, 2 object) or "sides" (side_label_map)
    sets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # label set -> the classes it may be
    object_unlabelled: str | None = None  # the set of a background pixel where the source labels no objects
    flip_pairs: tuple[tuple[str, str], ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def target_ids(self) -> dict[str, int]:
        """Class and set names -> target ids (classes 0..C-1, then the sets in order)."""
        names = list(self.classes) + [s for s in self.sets if s not in self.classes]
        return {n: i for i, n in enumerate(names)}

    @cached_property
    def target_lut(self) -> np.ndarray:
        """256-entry uint8 lookup: stored label value -> target id (255 where not listed)."""
        lut = np.full(256, IGNORE, np.uint8)
        for value, name in self.stored.items():
            lut[value] = self.target_ids[name]
        return lut

    @cached_property
    def set_members(self) -> dict[int, tuple[int, ...]]:
        """Set id -> the class ids it may be."""
        return {self.target_ids[s]: tuple(self.classes.index(c) for c in cs) for s, cs in self.sets.items()}

    @property
    def object_unlabelled_id(self) -> int | None:
        return None if self.object_unlabelled is None else self.target_ids[self.object_unlabelled]

    @cached_property
    def membership(self) -> np.ndarray:
        """(targets, C) bool: target t may be class c (a class only itself; a set each of its members)."""
        m = np.zeros((len(self.target_ids), self.num_classes), bool)
        for c in range(self.num_classes):
            m[c, c] = True
        for s, members in self.set_members.items():
            m[s, list(members)] = True
        return m

    @cached_property
    def flip_lut(self) -> np.ndarray | None:
        """256-entry uint8 lookup of what each target becomes in the mirrored image; None when nothing swaps."""
        if not self.flip_pairs:
            return None
        swap = {a: b for pair in self.flip_pairs for a, b in (pair, pair[::-1])}
        lut = np.arange(256, dtype=np.uint8)
        for name, t in self.target_ids.items():
            if name in self.classes:
                lut[t] = self.target_ids[swap.get(name, name)]
            else:  # a set mirrors to the set of its mirrored members
                mirrored = {swap.get(c, c) for c in self.sets[name]}
                lut[t] = next(self.target_ids[s] for s, cs in self.sets.items() if set(cs) == mirrored)
        return lut


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("hand", ("background", "hand"), "background / hand; object pixels count as not-hand",
              stored={0: "background", 1: "hand", 2: "background"}),
        Stage("handobj", ("background", "hand", "object"),
              "background / hand / object (start from a hand checkpoint with --init)",
              stored={0: "background", 1: "hand", 2: "object"}, sets={"not_hand": ("background", "object")},
              object_unlabelled="not_hand"),
        Stage("sides", ("background", "left_hand", "right_hand", "object"),
              "background / left hand / right hand / object (start from a hand or handobj checkpoint with --init)",
              labels="sides", stored={0: "background", 1: "left_hand", 2: "right_hand", 3: "object", 4: "hand"},
              sets={"hand": ("left_hand", "right_hand"), "not_hand": ("background", "object")},
              object_unlabelled="not_hand", flip_pairs=(("left_hand", "right_hand"),)),
    )
}


def get_stage(name: str | Stage) -> Stage:
    if isinstance(name, Stage):
        return name
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGES)}")
    return STAGES[name]


def stage_of_classes(classes: list[str] | tuple[str, ...]) -> Stage | None:
    """The registered stage with exactly these class names (in order), if any."""
    return next((s for s in STAGES.values() if list(s.classes) == list(classes)), None)


def default_classes(num_classes: int) -> list[str]:
    """Class names of a checkpoint that records only its class count (the stage with that many classes)."""
    for s in STAGES.values():
        if s.num_classes == num_classes:
            return list(s.classes)
    return [str(i) for i in range(num_classes)]


def flip_swap_permutation(classes: list[str] | tuple[str, ...]) -> list[int]:
    """``perm[c]``: the class that class ``c`` becomes in the horizontally mirrored image (an involution).

    For flip test-time augmentation: the scores of the mirrored frame, flipped back, belong to the original
    frame's classes as ``scores_back[:, perm]``. Identity for classes without a side.
    """
    classes = list(classes)
    swap = {a: b for s in STAGES.values() for pair in s.flip_pairs for a, b in (pair, pair[::-1])}
    return [classes.index(swap[c]) if swap.get(c) in classes else i for i, c in enumerate(classes)]


def head_rows(old_classes: list[str] | tuple[str, ...], new_classes: list[str] | tuple[str, ...]
              ) -> list[tuple[int, float]]:
    """Head surgery plan: for each new class, (row of the old head it starts from, offset added to its bias).

    A class the old head has keeps its row. Otherwise its row comes from :data:`ROW_ORIGINS`: classes that
    split an old class no longer predicted (left and right hand from hand) share its row with the bias lowered by
    log(k), so their summed probability equals the old class's; a new class beside a kept one (object beside
    background) starts from it with the bias lowered by :data:`OBJECT_BIAS_OFFSET`.
    """
    old, new = list(old_classes), list(new_classes)
    plan: list[tuple[int, float]] = []
    for c in new:
        if c in old:
            plan.append((old.index(c), 0.0))
            continue
        origin = ROW_ORIGINS.get(c)
        if origin not in old:
            raise ValueError(f"cannot initialise class {c!r} from a head with classes {old}")
        if origin in new:
            plan.append((old.index(origin), -OBJECT_BIAS_OFFSET))
        else:
            k = sum(ROW_ORIGINS.get(n) == origin and n not in old for n in new)
            plan.append((old.index(origin), -math.log(k)))
    return plan
