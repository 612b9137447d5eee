"""EPIC-KITCHENS VISOR (Darkhalil et al., NeurIPS 2022): sparse polygon masks of hands, gloves and the objects
each hand touches in kitchen videos, read as released (DATASETS.md "VISOR").

Layout (``ROOT`` is the deposit folder, or its ``GroundTruth-SparseAnnotations`` itself)::

    ROOT/GroundTruth-SparseAnnotations/
      annotations/{train,val}/<VID>.json          # {"video_annotations": [one entry per frame]}
      rgb_frames/{train,val,test}/<PNN>/<VID>.zip # flat zip of <VID>_frame_%010d.jpg, 1920x1080
      rgb_frames/{train,val,test}/<PNN>/<VID>/<name>   # the same, unzipped (as VISOR-HOS reads them)

Frames are read from each video's zip (one open zip per worker process), or from its unzipped folder when
there is no zip. Every JPEG must be 1920x1080, the size all polygons assume; another size is a bad frame
naming the file (a systematic one trips the build's skip ceiling). The test split ships images only: it is
counted in the manifest and not built. Splits are train / val as shipped (val holds out whole videos).

**Mapping** (``hodata/2``):

- *Hands*: ``left hand`` / ``right hand`` (the side from the name, as VISOR-HOS keys on it) and worn gloves
  (any mask whose ``on_which_hand`` is a list) are hand instances; a glove takes the side of the hand it is on
  (worn on both: side unknown). A glove whose ``on_which_hand`` is a string (``inconclusive``) may or may not
  be on a hand: its pixels are 255 (unknown).
- *Objects*: each hand's contacted mask (``in_contact_object`` = the ``id`` of another mask in the frame) is an
  object instance with ``held_by`` left / right / both. A hand whose contact is the glove it wears takes the
  glove's own contact; a worn glove whose hand is not annotated stands in for it. A contact naming a hand or a
  glove worn on another hand is a hand-hand contact: no object.
- Everything else, other active objects included, is background (0).
- A hand contact of ``none-of-the-above`` (it touches something unsegmented), ``inconclusive``, null, or an id
  absent from the frame says nothing sure about objects: the frame gets ``labels.object`` false, so training
  uses the partial-label (marginal) loss on its 0 pixels, while its sure objects stay 2. 255 off the hands
  would instead throw away the frame's background and, for the model, all it says about what is not a hand.

Each polygon is filled on its own with the pixel-centre rule (the ``centre`` rule of
:func:`hodata.sources.egohands.polygon_window`; pixel (r, c) is the point (c, r)) and an entity's polygons are
united; empty and under-3-point polygons are skipped. Drawing order: unknown gloves, objects, worn gloves,
hands (a hand is in front of what it touches; VISOR documents no z-order), so ``inst.png`` keeps the hand
where masks overlap. How often one entity's own polygons overlap or nest is counted in the manifest.

**Quirks** handled and counted (``source.quirks``): the spelling ``rigth hand`` inside ``on_which_hand``, any
two-entry ``on_which_hand`` read as left + right (as VISOR-HOS does), gloves lacking both ``on_which_hand`` and
``in_contact_object`` (not worn, no contact), ids absent from their frame, empty and under-3-point polygons,
and contact corrections: by default the 11 fixes of VISOR-HOS ``correct.json``
(``hodata/manifests/visor_corrections.json``), replaceable with ``--visor-corrections FILE`` or off with
``none``.

The interpolated dense annotations (``Interpolations-DenseAnnotations``, 854x480) are not built: their
frames are not shipped (VISOR-FrameExtraction cuts them from the videos), and at ~10M masks they need
per-video work units rather than one in-memory plan per frame. The manifest records whether they are present.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from hodata import manifests
from hodata.errors import BadFrame, DataError
from hodata.manifest import file_digest
from hodata.schema import (IGNORE, MAX_INSTANCES, Sample, checked_image_size, instance, label_histogram,
                           seg_from_instances)
from hodata.sources import FrameRef, Option, Source
from hodata.sources.egohands import paint_polygon
from hodata.sources.files import read_file, relative

SPARSE = "GroundTruth-SparseAnnotations"
DENSE = "Interpolations-DenseAnnotations"
LABELLED_SPLITS = ("train", "val")
FACTS = manifests.load("visor.json")
FRAME_SIZE = tuple(FACTS["frame_size"])  # (width, height) every sparse polygon assumes
GLOVE_NAMES = frozenset(FACTS["hos_glove_names"])
DEFAULT_CORRECTIONS = manifests.path("visor_corrections.json")
PACKAGED = "packaged"  # --visor-corrections value naming DEFAULT_CORRECTIONS
HAND_SIDES = {"left hand": "left", "right hand": "right"}
ON_HAND_WORDS = HAND_SIDES | {"rigth hand": "right"}  # a misspelling the release has inside on_which_hand
UNSURE_CONTACTS = ("none-of-the-above", "inconclusive")
NO_CONTACTS = ("hand-not-in-contact", "glove-not-in-contact")
MAPPING = ("hand: left/right hand and worn gloves (list on_which_hand), side from the name / the hand worn on; "
           "object: each hand's contacted mask (through its worn glove); background: the rest; frames with an "
           "unsure contact (none-of-the-above, inconclusive, null, absent id): labels.object false")
EXAMPLES = 5
_FRAME_NAME = re.compile(r"^(?P<vid>P\d{2}_\d{2,3})_frame_(?P<num>\d+)\.jpg$")
_VIDEO = re.compile(r"^P\d{2}_\d{2,3}$")


# -------------------------------------------------------------------------------------------- records


class Notes:
    """Quirk counts with their first examples, summed over everything read."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, key: str, example: str | None = None, n: int = 1) -> None:
        self.counts[key] += n
        if example is not None and len(self.examples.setdefault(key, [])) < EXAMPLES:
            self.examples[key].append(example)

    def merge(self, other: "Notes") -> None:
        for k, v in other.counts.items():
            self.counts[k] += v
        for k, v in other.examples.items():
            mine = self.examples.setdefault(k, [])
            mine.extend(v[: EXAMPLES - len(mine)])

    def as_dict(self) -> dict[str, Any]:
        return {k: {"count": self.counts[k], "examples": self.examples.get(k, [])} for k in sorted(self.counts)}


@dataclass
class Layer:
    """Polygons painted with one value (an instance id, or 255 for unknown)."""

    value: int
    polygons: list[np.ndarray]


@dataclass
class FramePlan:
    """What one frame's annotations say, resolved once in the main process; ``load`` paints it."""

    name: str
    entry: int  # index in video_annotations
    subsequence: str | None = None
    masks: int = 0  # annotations (masks) in the entry
    instances: list[dict[str, Any]] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)  # painted in order: a later layer wins
    objects: list[dict[str, Any]] = field(default_factory=list)
    unsure: list[str] = field(default_factory=list)  # why objects are not known for sure here
    error: str | None = None  # a malformed entry: the frame is skipped with this reason

    @property
    def object_sure(self) -> bool:
        return not self.unsure


@dataclass
class _Mask:
    ann: dict[str, Any]
    index: int
    polygons: list[np.ndarray]
    role: str = "other"  # hand | glove | unknown_glove | other
    sides: tuple[str, ...] = ()
    contact: Any = None  # in_contact_object after corrections (missing key: None)


def parse_polygons(segments: Any, where: str, notes: Notes) -> list[np.ndarray]:
    """``segments`` -> (N, 2) float64 arrays of (x, y) with N >= 3; empty and shorter ones are counted and
    skipped. ValueError when it is not a list of lists of [x, y] numbers."""
    if not isinstance(segments, list):
        raise ValueError(f"segments is {type(segments).__name__}, not a list of polygons")
    out = []
    for poly in segments:
        if not poly:
            notes.add("empty_polygon", where)
            continue
        try:
            arr = np.asarray(poly, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"a polygon is not a list of [x, y] numbers ({e})") from None
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"a polygon is not a list of [x, y] pairs (shape {arr.shape})")
        if not np.isfinite(arr).all():
            raise ValueError("a polygon has non-finite coordinates")
        if arr.shape[0] < 3:
            notes.add("short_polygon", where)
            continue
        out.append(arr)
    return out


def _on_hand_sides(value: Any, where: str, notes: Notes) -> tuple[str, tuple[str, ...]]:
    """``on_which_hand`` -> (role, sides): ``glove`` with its sides, ``unknown_glove`` or ``other``."""
    if isinstance(value, list) and value:
        words = [str(v) for v in value]
        if any(w not in HAND_SIDES for w in words):
            notes.add("on_which_hand_spelling", f"{where}: {words}")
        if len(words) == 2:  # VISOR-HOS reads any two entries as left + right
            notes.add("glove_on_both_hands", where)
            return "glove", ("left", "right")
        if len(words) == 1 and words[0] in ON_HAND_WORDS:
            return "glove", (ON_HAND_WORDS[words[0]],)
        notes.add("on_which_hand_unreadable", f"{where}: {words}")
        return "unknown_glove", ()
    if isinstance(value, str):
        notes.add("on_which_hand_string", f"{where}: {value}")
        return "unknown_glove", ()
    return "other", ()


def plan_frame(entry: Any, index: int, corrections: dict[str, dict[str, str]], notes: Notes,
               overlaps: bool = True) -> FramePlan:
    """Resolve one ``video_annotations`` entry into instances and paint layers (see the module docstring)."""
    try:
        image, anns = entry["image"], entry["annotations"]
        name = str(image["name"])
        if not isinstance(anns, list):
            raise TypeError("annotations is not a list")
    except (KeyError, TypeError) as e:
        return FramePlan(name=f"entry {index + 1}", entry=index, error=f"malformed entry ({type(e).__name__}: {e})")
    plan = FramePlan(name=name, entry=index, subsequence=image.get("subsequence"), masks=len(anns))
    fixes = corrections.get(name, {})
    masks: list[_Mask] = []
    try:
        for k, ann in enumerate(anns):
            where = f"{name} mask {k + 1} ({ann.get('name')!r})"
            mask = _Mask(ann, k, parse_polygons(ann.get("segments", []), name, notes), contact=ann.get("in_contact_object"))
            label = str(ann.get("name"))
            if label in fixes:
                mask.contact = fixes[label]
                notes.add("correction_applied", f"{name} {label}")
            if label in HAND_SIDES:
                mask.role, mask.sides = "hand", (HAND_SIDES[label],)
            elif label in GLOVE_NAMES and "on_which_hand" not in ann:
                if "in_contact_object" not in ann:
                    notes.add("glove_lacking_both_keys", where)
                else:
                    notes.add("glove_lacking_on_which_hand", where)
            else:
                mask.role, mask.sides = _on_hand_sides(ann.get("on_which_hand"), where, notes)
            masks.append(mask)
    except (AttributeError, ValueError) as e:
        plan.error = f"malformed annotation ({e})"
        return plan
    for label in set(fixes) - {str(m.ann.get("name")) for m in masks}:
        notes.add("correction_not_applied", f"{name} {label}")
    if overlaps:
        _count_overlaps(masks, name, notes)

    by_id = {str(m.ann.get("id")): m for m in masks}
    held: dict[int, set[str]] = {}  # mask index -> sides of the hands touching it

    def resolve(contact: Any, sides: tuple[str, ...], via_glove: bool, who: str) -> None:
        if contact in NO_CONTACTS:
            return
        if contact is None or contact in UNSURE_CONTACTS or not isinstance(contact, str):
            reason = contact if contact in UNSURE_CONTACTS else "null"
            plan.unsure.append(f"{who}: {reason}")
            notes.add(f"contact_{reason}", name)
            return
        target = by_id.get(contact)
        if target is None:
            plan.unsure.append(f"{who}: id {contact} absent from the frame")
            notes.add("contact_dangling", f"{name} {who} -> {contact}")
            return
        if target.role == "glove" and not via_glove and set(sides) <= set(target.sides):
            notes.add("contact_via_worn_glove")
            resolve(target.contact, sides, True, f"{who} via {target.ann.get('name')}")
        elif target.role in ("hand", "glove"):
            notes.add("contact_with_a_hand", f"{name} {who} -> {target.ann.get('name')}")
        elif target.role == "unknown_glove":
            plan.unsure.append(f"{who}: a glove that may be worn")
            notes.add("contact_unknown_glove", name)
        else:
            held.setdefault(target.index, set()).update(sides)

    hands = [m for m in masks if m.role == "hand"]
    for m in hands:
        resolve(m.contact, m.sides, False, str(m.ann.get("name")))
    annotated_sides = {m.sides[0] for m in hands}
    for m in masks:  # a worn glove whose hand is not annotated stands in for it
        if m.role == "glove" and not set(m.sides) <= annotated_sides:
            notes.add("glove_stands_in_for_hand", name)
            resolve(m.contact, m.sides, True, str(m.ann.get("name")))

    next_id = 1
    layers: dict[str, list[Layer]] = {"unknown": [], "object": [], "glove": [], "hand": []}
    for m in masks:
        if m.role == "unknown_glove" and m.polygons:
            layers["unknown"].append(Layer(IGNORE, m.polygons))
    for m in sorted([m for m in masks if m.role in ("hand", "glove")], key=lambda m: (m.role != "hand", m.index)) \
            + [m for m in masks if m.index in held]:
        if not m.polygons:
            continue
        if next_id > MAX_INSTANCES:
            plan.error = f"more than {MAX_INSTANCES} instances"
            return plan
        common = {"visor_id": str(m.ann.get("id")), "class_id": m.ann.get("class_id"),
                  "exhaustive": m.ann.get("exhaustive")}
        if m.role in ("hand", "glove"):
            side = m.sides[0] if len(m.sides) == 1 else None
            extra = {"glove": m.role == "glove"} | ({"on_hands": list(m.sides)} if m.role == "glove" else {})
            plan.instances.append(instance(next_id, "hand", side, str(m.ann.get("name")), **extra, **common))
            layers[m.role].append(Layer(next_id, m.polygons))
        else:
            sides = held[m.index]
            held_by = "both" if sides == {"left", "right"} else next(iter(sides))
            plan.instances.append(instance(next_id, "object", None, str(m.ann.get("name")), held_by=held_by, **common))
            plan.objects.append({"name": str(m.ann.get("name")), "held_by": held_by, "visor_id": common["visor_id"]})
            layers["object"].append(Layer(next_id, m.polygons))
        next_id += 1
    plan.layers = layers["unknown"] + layers["object"] + layers["glove"] + layers["hand"]
    return plan


# ------------------------------------------------------------------------------------- polygon overlaps


def _bbox(p: np.ndarray) -> np.ndarray:
    return np.concatenate([p.min(axis=0), p.max(axis=0)])


def _inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon for many points."""
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    px, py = points[:, :1], points[:, 1:]
    crosses = (y0 <= py) != (y1 <= py)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (px < xc)).sum(axis=1) % 2 == 1


def _edge_boxes(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = np.roll(p, -1, axis=0)
    return p, q, np.concatenate([np.minimum(p, q), np.maximum(p, q)], axis=1)


def _near(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    return (boxes[:, 0] <= box[2]) & (boxes[:, 2] >= box[0]) & (boxes[:, 1] <= box[3]) & (boxes[:, 3] >= box[1])


def _edges_cross(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether an edge of ``a`` properly crosses an edge of ``b`` (touching and collinear runs do not count)."""
    a0, a1, abox = _edge_boxes(a)
    b0, b1, bbox = _edge_boxes(b)
    ka, kb = _near(abox, _bbox(b)), _near(bbox, _bbox(a))  # only edges near the other outline can cross it
    a0, a1, b0, b1 = a0[ka], a1[ka], b0[kb][None], b1[kb][None]

    def orient(o, u, v):
        return np.sign((u[..., 0] - o[..., 0]) * (v[..., 1] - o[..., 1]) - (u[..., 1] - o[..., 1]) * (v[..., 0] - o[..., 0]))

    for s in range(0, len(a0), 512):  # bounded memory for long outlines
        p, q = a0[s:s + 512, None, :], a1[s:s + 512, None, :]
        if np.any((orient(p, q, b0) * orient(p, q, b1) < 0) & (orient(b0, b1, p) * orient(b0, b1, q) < 0)):
            return True
    return False


def _count_overlaps(masks: list[_Mask], name: str, notes: Notes) -> None:
    """Count entities whose own polygons overlap (edges cross) or nest (one inside another)."""
    for m in masks:
        if len(m.polygons) < 2:
            continue
        notes.add("entity_with_several_polygons")
        boxes = [_bbox(p) for p in m.polygons]
        cross = nest = False
        for i in range(len(m.polygons)):
            for j in range(i + 1, len(m.polygons)):
                bi, bj = boxes[i], boxes[j]
                if bi[0] > bj[2] or bj[0] > bi[2] or bi[1] > bj[3] or bj[1] > bi[3]:
                    continue
                pi, pj = m.polygons[i], m.polygons[j]
                if _edges_cross(pi, pj):
                    cross = True
                elif _inside(pj[:1], pi)[0] or _inside(pi[:1], pj)[0]:
                    nest = True
        if cross:
            notes.add("entity_polygons_overlap", f"{name} {m.ann.get('name')!r}")
        if nest:
            notes.add("entity_polygons_nest", f"{name} {m.ann.get('name')!r}")


# ---------------------------------------------------------------------------------------------- reading


def load_corrections(value: Any) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """The corrections option -> ({frame name: {hand name: id}}, what was read, for the manifest)."""
    if value is None or str(value) == "none":
        return {}, {"file": None, "entries": 0}
    path = DEFAULT_CORRECTIONS if str(value) == PACKAGED else Path(value)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the corrections file ({e})", path) from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for k, v in data.items() if not k.startswith("_")):
        raise DataError("corrections must be a JSON object {frame name: {hand name: mask id}}", path)
    fixes = {k: {str(h): str(i) for h, i in v.items()} for k, v in data.items() if not k.startswith("_")}
    shown = "packaged: hodata/manifests/visor_corrections.json" if path == DEFAULT_CORRECTIONS else str(path)
    return fixes, {"file": shown, "sha256": file_digest(path)["sha256"], "entries": len(fixes)}


def read_video_json(path: Path) -> list:
    """``<VID>.json`` -> its ``video_annotations`` list; DataError naming the file otherwise."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read annotation file ({e})", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("video_annotations"), list):
        raise DataError("has no list 'video_annotations'", path)
    return data["video_annotations"]


def frame_number(name: str) -> int | None:
    m = _FRAME_NAME.match(name)
    return int(m.group("num")) if m else None


# ----------------------------------------------------------------------------------------------- source


class VISORSource(Source):
    name = "visor"
    LICENCE = "CC BY-NC 4.0"
    OPTIONS = (
        Option("visor_corrections", click.Path(path_type=Path, dir_okay=False), Path(PACKAGED),
               help="Contact corrections {frame: {hand: mask id}} applied before mapping; 'packaged': the 11 "
                    "VISOR-HOS fixes shipped with hodata (manifests/visor_corrections.json); 'none' for none."),
    )

    def __init__(self, root, options: dict[str, Any] | None = None):
        super().__init__(root, options)
        if (self.root / SPARSE).is_dir():
            self.sparse = self.root / SPARSE
        elif (self.root / "annotations").is_dir() and (self.root / "rgb_frames").is_dir():
            self.sparse = self.root  # ROOT is GroundTruth-SparseAnnotations itself
        else:
            raise DataError(f"not a VISOR root: expected {SPARSE}/ with annotations/ and rgb_frames/ "
                            "(the data.bris deposit)", self.root)
        self.corrections, self._corrections_read = load_corrections(self.options["visor_corrections"])
        self._plans: dict[tuple[str, str], list[FramePlan]] | None = None  # (split, video) -> plans by frame
        self._videos: dict[tuple[str, str], dict[str, Any]] = {}
        self._zip: tuple[int, Path, zipfile.ZipFile] | None = None  # (pid, path, open zip) of this process
        self._describe: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------- index
    def _frames_source(self, split: str, vid: str) -> tuple[str, str]:
        """("zip", relative zip path) or ("dir", relative folder) holding a video's frames."""
        base = self.sparse / "rgb_frames" / split / vid.split("_")[0]
        if (base / f"{vid}.zip").is_file():
            return "zip", relative(self.root, base / f"{vid}.zip")
        if (base / vid).is_dir():
            return "dir", relative(self.root, base / vid)
        raise DataError(f"frames of {vid} are missing: expected {vid}.zip (or its unzipped folder {vid}/)", base)

    def _read_video(self, split: str, vid: str, notes: Notes) -> list[FramePlan]:
        path = self.sparse / "annotations" / split / f"{vid}.json"
        entries = read_video_json(path)
        plans, seen = [], set()
        for i, entry in enumerate(entries):
            plan = plan_frame(entry, i, self.corrections, notes)
            num = frame_number(plan.name)
            if plan.error is None and (num is None or not plan.name.startswith(f"{vid}_")):
                plan.error = f"image name {plan.name!r} is not {vid}_frame_<number>.jpg"
            if plan.error is None and plan.name in seen:
                plan.error = f"frame {plan.name} is annotated twice"
                notes.add("duplicate_frame", plan.name)
            seen.add(plan.name)
            plans.append(plan)
        # entries come in no guaranteed order: by frame number, malformed ones last
        plans.sort(key=lambda p: (frame_number(p.name) is None, frame_number(p.name) or 0, p.entry))
        return plans

    def frames(self) -> list[FrameRef]:
        notes = Notes()
        refs: list[FrameRef] = []
        self._plans = {}
        digests: dict[str, Any] = {}
        per_split: dict[str, dict[str, Any]] = {}
        owner: dict[str, str] = {}
        for split in LABELLED_SPLITS:
            adir = self.sparse / "annotations" / split
            files = sorted(adir.glob("*.json")) if adir.is_dir() else []
            counts = {"videos": 0, "frames": 0, "masks": 0, "partial_object_frames": 0, "frames_from_zip": 0,
                      "frames_from_folder": 0}
            for path in files:
                vid = path.stem
                if not _VIDEO.match(vid):
                    raise DataError("annotation file name is not a VISOR video id (PNN_NN or PNN_NNN)", path)
                if vid in owner:
                    raise DataError(f"video {vid} is annotated in both {owner[vid]} and {split}", path)
                owner[vid] = split
                kind, where = self._frames_source(split, vid)
                plans = self._read_video(split, vid, notes)
                self._plans[(split, vid)] = plans
                self._videos[(split, vid)] = {"kind": kind, "where": where, "json": relative(self.root, path)}
                digests[relative(self.root, path)] = file_digest(path)
                counts["videos"] += 1
                counts["frames"] += len(plans)
                counts["frames_from_" + ("zip" if kind == "zip" else "folder")] += len(plans)
                for i, plan in enumerate(plans):
                    counts["masks"] += plan.masks
                    counts["partial_object_frames"] += int(plan.error is None and not plan.object_sure)
                    frame = f"frame_{frame_number(plan.name):010d}" if frame_number(plan.name) is not None \
                        else f"entry_{plan.entry + 1:06d}"
                    refs.append(FrameRef(split, vid, frame, (i,)))
            per_split[split] = counts
        if not refs:
            raise DataError(f"no annotated frames: expected annotations/train/*.json and annotations/val/*.json "
                            f"under {SPARSE}", self.sparse)
        test_dir = self.sparse / "rgb_frames" / "test"
        test_videos = sorted({p.stem for p in test_dir.glob("*/*") if p.suffix == ".zip" or p.is_dir()}) \
            if test_dir.is_dir() else []
        per_split["test"] = {"videos": len(test_videos), "built": False,
                             "labels": "none shipped: the test split releases images only"}
        self._describe = {
            "annotation_files": digests,
            "corrections": self._corrections_read | {"applied": notes.counts["correction_applied"]},
            "splits": per_split,
            "release": FACTS["release"],
            "split_rule": "train / val as shipped (annotations/<split>/; val holds out whole videos); test not built",
            "frame_size": list(FRAME_SIZE),
            "mapping": MAPPING,
            "raster": "pixel centres inside each polygon (even-odd), polygons of one entity united",
            "quirks": notes.as_dict(),
            "dense_annotations": {"present": (self.sparse.parent / DENSE).is_dir(), "built": False,
                                  "why": "frames not shipped; interpolated annotations are not read"},
        }
        return refs

    def build_options(self) -> dict[str, Any]:
        return {"visor_corrections": self._corrections_read.get("file"),
                "visor_corrections_sha256": self._corrections_read.get("sha256")}

    def _plan(self, ref: FrameRef) -> FramePlan:
        if self._plans is None:  # a fresh process that did not list the frames (spawn start method)
            self.frames()
        return self._plans[(ref.split, ref.sequence)][ref.info[0]]

    # --------------------------------------------------------------------------------------------- load
    def _read_member(self, zip_rel: str, member: str) -> tuple[bytes, str]:
        path = self.root / zip_rel
        label = f"{path}:{member}"
        pid = os.getpid()
        if self._zip is None or self._zip[0] != pid or self._zip[1] != path:
            if self._zip is not None and self._zip[0] == pid:
                self._zip[2].close()
            self._zip = None  # a zip opened by another process shares its file offset: never reuse it
            try:
                self._zip = (pid, path, zipfile.ZipFile(path))
            except (OSError, zipfile.BadZipFile) as e:
                raise BadFrame(f"frames zip does not open ({e})", path) from None
        zf = self._zip[2]
        for candidate in (member, f"{path.stem}/{member}"):
            try:
                return zf.read(candidate), label
            except KeyError:
                continue
            except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:  # CRC error, truncated member
                raise BadFrame(f"frame does not read from the zip ({e})", label) from None
        raise BadFrame("frame is not in the video's zip", label)

    def load(self, ref: FrameRef) -> Sample:
        plan = self._plan(ref)
        video = self._videos[(ref.split, ref.sequence)]
        json_path = self.root / video["json"]
        if plan.error:
            raise BadFrame(f"{plan.name}: {plan.error}", json_path)
        if video["kind"] == "zip":
            image, label = self._read_member(video["where"], plan.name)
            image_rel = f"{video['where']}:{plan.name}"
        else:
            image_rel = f"{video['where']}/{plan.name}"
            label = self.root / image_rel
            image = read_file(label, "image")
        width, height = checked_image_size(image, label)
        if (width, height) != FRAME_SIZE:
            raise BadFrame(f"image is {width}x{height}; VISOR polygons are in {FRAME_SIZE[0]}x{FRAME_SIZE[1]} pixels",
                           label)
        inst = np.zeros((height, width), np.uint8)
        for layer in plan.layers:
            for poly in layer.polygons:
                paint_polygon(inst, layer.value, poly, "centre")
        present = set(np.flatnonzero(label_histogram(inst)).tolist())
        instances = [i for i in plan.instances if i["id"] in present]  # a mask drawn over entirely is gone
        seg = seg_from_instances(inst, instances)
        extra = {"subsequence": plan.subsequence}
        if plan.unsure:
            extra["object_unsure"] = plan.unsure
        return Sample(
            source=self.name, split=ref.split, sequence=ref.sequence, frame=ref.frame,
            image=image, image_ext="jpg", seg=seg, width=width, height=height,
            labels={"hand": True, "object": plan.object_sure, "sides": True},
            objects=[o for o in plan.objects if any(i["visor_id"] == o["visor_id"] for i in instances)],
            inst=inst, instances=instances,
            provenance={"image": image_rel, "annotations": video["json"], "entry": plan.entry},
            extra=extra,
        )

    def describe(self) -> dict[str, Any]:
        return dict(self._describe)
