"""The sample schema shared by hodata (writer) and hotrain (reader): ``hodata/2``, a superset of ``hodata/1``.

One WebDataset sample per frame, key ``source/split/sequence/frame`` (no dots), members:

- ``jpg`` or ``png``: the RGB image bytes (the source's own bytes unless a resize was asked);
- ``seg.png``: 8-bit single-channel label map of the image's size: 0 bg, 1 hand, 2 object, 255 ignore
  (unchanged from ``hodata/1``: every reader of ``seg.png`` keeps working);
- ``inst.png`` (``hodata/2``): 8-bit single-channel instance map of the image's size: 0 no instance, k = the
  instance with ``id`` k in the json's ``instances``, 255 unknown;
- ``amodal.png`` (``hodata/2``, rendered sources on request): 8-bit, bit 0 = the hand's full silhouette, bit 1 =
  the object's, each drawn without occlusion;
- ``json``: metadata (see :func:`make_meta`); ``hodata/2`` adds ``instances``
  (``[{"id", "class": "hand"|"object", "side": "left"|"right"|None, "name"}, ...]``) and ``labels.sides``.

The two maps agree: a pixel of a hand instance is 1 in ``seg.png``, a pixel of an object instance is 2. A
``hodata/1`` sample reads as a ``hodata/2`` sample without instances: every hand pixel of unknown side.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from hodata.label_png import PNGError, decode_label_png, encode_label_png

SCHEMA = "hodata/2"
READABLE_SCHEMAS = ("hodata/1", "hodata/2")  # what readers accept; hodata/1 has no instances
BACKGROUND, HAND, OBJECT, IGNORE = 0, 1, 2, 255
NO_INSTANCE, UNKNOWN_INSTANCE = 0, 255
MAX_INSTANCES = 254  # ids 1..254 (0 none, 255 unknown)
INSTANCE_CLASSES = {"hand": HAND, "object": OBJECT}
SIDES = ("left", "right")
# Per-pixel side map (:func:`side_label_map`): what the 4-class "sides" stage trains on.
SIDE_BACKGROUND, LEFT_HAND, RIGHT_HAND, SIDE_OBJECT, HAND_UNKNOWN_SIDE = 0, 1, 2, 3, 4
AMODAL_HAND_BIT, AMODAL_OBJECT_BIT = 1, 2
VALID_LABELS = (BACKGROUND, HAND, OBJECT, IGNORE)
CLASS_NAMES = {BACKGROUND: "background", HAND: "hand", OBJECT: "object", IGNORE: "ignore"}
IMAGE_EXTS = ("jpg", "png")

_KEY_PART = re.compile(r"[^A-Za-z0-9_\-]+")


def key_part(text: object) -> str:
    """Make one key component safe: no dots (webdataset reads them as extensions), no slashes."""
    s = _KEY_PART.sub("-", str(text)).strip("-")
    if not s:
        raise ValueError(f"empty key component from {text!r}")
    return s


def make_key(source: str, split: str, sequence: str, frame: str) -> str:
    key = "/".join(key_part(p) for p in (source, split, sequence, frame))
    if key.startswith("_"):
        raise ValueError(f"key {key!r} starts with '_' (webdataset metadata)")
    return key


@dataclass
class Sample:
    """One normalized frame, as a source produces it and the shard writer stores it."""

    source: str
    split: str
    sequence: str
    frame: str
    image: bytes  # encoded image bytes (passed through untouched)
    image_ext: str  # "jpg" or "png"
    seg: np.ndarray  # HxW uint8 with values in VALID_LABELS
    width: int
    height: int
    labels: dict[str, bool]  # which classes the source really annotates, e.g. {"hand": True, "object": False}
    hands: list[dict[str, Any]] = field(default_factory=list)  # hodata/1 summary, e.g. [{"side": "right"}]
    objects: list[dict[str, Any]] = field(default_factory=list)  # e.g. [{"name": "003_cracker_box"}]
    camera: dict[str, Any] | None = None  # {"K": 3x3 list} where known
    provenance: dict[str, Any] = field(default_factory=dict)  # source files relative to the root
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific facts (e.g. mask agreement)
    # HxW uint8 instance map (0 none, k instance id, 255 unknown); ``seg`` itself where the ids are the labels
    inst: np.ndarray | None = None
    instances: list[dict[str, Any]] = field(default_factory=list)  # [{"id", "class", "side", "name", ...}]
    amodal: np.ndarray | None = None  # HxW uint8 bit mask (AMODAL_HAND_BIT | AMODAL_OBJECT_BIT), on request

    def __post_init__(self) -> None:
        if not self.hands and self.instances:
            self.hands = hands_summary(self.instances)

    @property
    def key(self) -> str:
        return make_key(self.source, self.split, self.sequence, self.frame)

    def meta(self) -> dict[str, Any]:
        return make_meta(self)

    def members(self) -> dict[str, bytes]:
        """The tar members of this sample (without ``__key__``): image, label maps, json."""
        out = {self.image_ext: self.image, "seg.png": encode_seg(self.seg)}
        if self.inst is not None:  # where the instance ids are the labels (HO3D) ``inst`` is ``seg``: encoded once
            out["inst.png"] = out["seg.png"] if self.inst is self.seg else encode_seg(self.inst)
        if self.amodal is not None:
            out["amodal.png"] = encode_seg(self.amodal)
        out["json"] = dumps_meta(self.meta())
        return out


def instance(id: int, cls: str, side: str | None = None, name: str | None = None, **extra: Any) -> dict[str, Any]:
    """One entry of ``instances``; ``extra`` holds source facts (e.g. ``held_by`` for an object)."""
    if cls not in INSTANCE_CLASSES:
        raise ValueError(f"instance class must be one of {sorted(INSTANCE_CLASSES)}, got {cls!r}")
    if side not in (None, *SIDES):
        raise ValueError(f"instance side must be left, right or None, got {side!r}")
    if not 1 <= int(id) <= MAX_INSTANCES:
        raise ValueError(f"instance id must be 1..{MAX_INSTANCES}, got {id}")
    return {"id": int(id), "class": cls, "side": side, "name": name, **extra}


def seg_from_instances(inst: np.ndarray, instances: list[dict[str, Any]]) -> np.ndarray:
    """The ``seg.png`` label map an instance map implies: hand instances 1, object instances 2, 0 -> 0, 255 -> 255."""
    return apply_lut(inst, instance_class_lut(instances))


def apply_lut(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[values]`` for an 8-bit map and a 256-entry uint8 table (:func:`hodata.label_lookup.lookup`: a word
    of 8 pixels at a time, 2-3x faster than cv2.LUT and ~9x numpy indexing on label maps)."""
    from hodata.label_lookup import lookup  # numba: loaded where maps are mapped, not by every reader

    lut = np.ascontiguousarray(lut, dtype=np.uint8)
    if lut.shape != (256,):
        return lut[np.asarray(values, dtype=np.uint8)]
    return lookup(values, lut)


def instance_class_lut(instances: list[dict[str, Any]]) -> np.ndarray:
    """256-entry lookup from instance id to hodata label (ids not listed: 255)."""
    lut = np.full(256, IGNORE, np.uint8)
    lut[NO_INSTANCE] = BACKGROUND
    for ins in instances:
        lut[int(ins["id"])] = INSTANCE_CLASSES[ins["class"]]
    return lut


def hands_summary(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hodata/1 ``hands`` list (one entry per hand instance, with its side) from ``instances``."""
    return [{k: v for k, v in i.items() if k not in ("id", "class", "name")} for i in instances
            if i.get("class") == "hand"]


def make_meta(s: Sample) -> dict[str, Any]:
    has_inst = s.inst is not None
    meta = {
        "schema": SCHEMA,
        "source": s.source,
        "split": s.split,
        "sequence": str(s.sequence),
        "frame": str(s.frame),
        "width": int(s.width),
        "height": int(s.height),
        "labels": {"hand": bool(s.labels.get("hand", False)), "object": bool(s.labels.get("object", False)),
                   "sides": bool(s.labels.get("sides", has_inst))},
        "hands": s.hands,
        "objects": s.objects,
        "instances": s.instances,
        "camera": s.camera,
        "provenance": s.provenance,
    }
    if s.extra:
        meta["extra"] = s.extra
    return meta


def label_histogram(seg: np.ndarray) -> np.ndarray:
    """Pixel count of each 8-bit value (256,) int64, in one pass (:func:`hodata.label_counts.counts`)."""
    from hodata.label_counts import counts  # numba: loaded where maps are checked, not by every reader

    return counts(seg)


_NOT_A_LABEL = np.ones(256, bool)
_NOT_A_LABEL[list(VALID_LABELS)] = False


def check_seg(seg: np.ndarray, width: int, height: int, hist: np.ndarray | None = None) -> None:
    """Raise ValueError when a label map breaks the schema."""
    if seg.dtype != np.uint8 or seg.ndim != 2:
        raise ValueError(f"label map must be 2-D uint8, got {seg.dtype} {seg.shape}")
    if seg.shape != (height, width):
        raise ValueError(f"label map is {seg.shape[1]}x{seg.shape[0]}, image is {width}x{height}")
    hist = label_histogram(seg) if hist is None else hist
    bad = np.flatnonzero(hist[_NOT_A_LABEL])
    bad = np.flatnonzero(_NOT_A_LABEL)[bad] if bad.size else bad
    if bad.size:
        raise ValueError(f"label map has values outside 0/1/2/255: {bad[:8].tolist()}")


def encode_seg(seg: np.ndarray) -> bytes:
    """Lossless 8-bit single-channel PNG, fast to write (:mod:`hodata.label_png`); decode with :func:`decode_seg`."""
    return encode_label_png(np.asarray(seg, dtype=np.uint8))


def decode_seg(data: bytes) -> np.ndarray:
    """Decode ``seg.png`` as raw 8-bit values (never through a colour/palette conversion): through
    :func:`hodata.label_png.decode_label_png` (~0.4 ms for a 640x480 map against ~1 ms with OpenCV), OpenCV
    for a PNG of another kind."""
    try:
        arr = decode_label_png(data)
    except PNGError as e:
        raise ValueError(f"seg.png does not decode ({e})") from None
    if arr is None:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("seg.png does not decode")
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"seg.png must be 8-bit single channel, got {arr.dtype} {arr.shape}")
    return arr


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes to HxWx3 uint8 RGB."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError("image does not decode")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes, read from the header where possible."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


_JPEG_END = b"\xff\xd9"  # EOI marker; inside a JPEG's entropy-coded data 0xFF is never followed by 0xD9
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk (length 0, type, CRC)


def checked_image_size(data: bytes, path) -> tuple[int, int]:
    """(width, height) of an image that is complete: its header parses (a JPEG's read directly,
    :func:`hodata.jpeg_header.jpeg_frame_size`; others by Pillow) and its data ends the way the format ends (a
    JPEG with its end-of-image marker, a PNG with its IEND chunk), which a truncated or half-written file does
    not. An image that ends otherwise (trailing bytes after a JPEG's marker, another format) is
    decoded to the end instead, at 1/8 scale where the format allows: that decode costs a third of a full
    one (~0.7 ms at 640x480), more than everything else the builder does to a frame besides its masks.

    Raises BadFrame naming ``path`` when it does not parse, is cut short or does not decode.
    """
    from PIL import Image

    from hodata.errors import BadFrame
    from hodata.jpeg_header import jpeg_frame_size

    if data.endswith(_JPEG_END):
        size = jpeg_frame_size(data)
        if size is not None:
            return size
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            ends = {"JPEG": _JPEG_END, "PNG": _PNG_END}.get(im.format)
            if ends is not None and data.endswith(ends):
                return size
            im.draft("L", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
    except Exception as e:  # noqa: BLE001 - PIL raises several types for a broken file
        raise BadFrame(f"image does not decode ({e})", path) from e
    return size


# seg value -> column of the joint counts check_inst makes: the four labels, then any other value
SEG_SLOT = np.full(256, 4, np.int64)
SEG_SLOT[[BACKGROUND, HAND, OBJECT, IGNORE]] = [0, 1, 2, 3]


def check_inst(inst: np.ndarray, instances: list[dict[str, Any]], seg: np.ndarray,
               seg_hist: np.ndarray | None = None) -> np.ndarray:
    """Raise ValueError when an instance map breaks the schema or disagrees with ``seg`` (one counting pass
    over both maps: :func:`hodata.label_counts.pair_counts`). When ``inst`` is ``seg`` itself (the ids are
    the labels) its histogram is all it takes: ``seg_hist`` where the caller has it, else counted here.

    Returns the joint counts, (256, 5) int64: pixels per instance id (row) and seg value (column
    ``SEG_SLOT[value]``: 0, 1, 2, 255, then any other value)."""
    from hodata.label_counts import counts, pair_counts

    if inst.dtype != np.uint8 or inst.ndim != 2:
        raise ValueError(f"instance map must be 2-D uint8, got {inst.dtype} {inst.shape}")
    if inst.shape != seg.shape:
        raise ValueError(f"instance map is {inst.shape[1]}x{inst.shape[0]}, label map is {seg.shape[1]}x{seg.shape[0]}")
    ids = [int(i.get("id", -1)) for i in instances]
    if len(set(ids)) != len(ids):
        raise ValueError(f"instance ids repeat: {ids}")
    for ins in instances:
        instance(ins.get("id", -1), ins.get("class"), ins.get("side"))  # validates id, class and side
    if inst is seg:  # ids are the labels: the joint counts are the diagonal of one histogram
        joint = np.zeros((256, 5), np.int64)
        joint[np.arange(256), SEG_SLOT] = counts(seg) if seg_hist is None else seg_hist
    else:
        joint = pair_counts(inst, seg, SEG_SLOT)  # [instance id, seg column]
    per_id = joint.sum(axis=1)
    present = np.flatnonzero(per_id)
    unlisted = [int(v) for v in present if v not in (NO_INSTANCE, UNKNOWN_INSTANCE) and v not in ids]
    if unlisted:
        raise ValueError(f"instance map has ids {unlisted[:8]} that instances does not list")
    # each listed instance's pixels must carry its class in seg; pixels of no / unknown instance are free
    for ins in instances:
        i = int(ins["id"])
        if per_id[i] != joint[i, SEG_SLOT[INSTANCE_CLASSES[ins["class"]]]]:
            raise ValueError("instance map and label map disagree (a hand instance pixel must be 1, an object's 2)")
    return joint


def decode_inst(data: bytes) -> np.ndarray:
    """Decode ``inst.png`` as raw 8-bit ids (same rules as :func:`decode_seg`)."""
    return decode_seg(data)


def side_label_map(seg: np.ndarray, inst: np.ndarray | None, instances: list[dict[str, Any]] | None) -> np.ndarray:
    """Per-pixel sides: 0 background, 1 left hand, 2 right hand, 3 object, 4 hand of unknown side, 255 ignore.

    A hand pixel takes the side of the hand instance at that pixel; where there is no instance map
    (``hodata/1``), no instance, an unknown instance or an instance without a side, it is 4 (unknown side).
    """
    out = np.full(seg.shape, IGNORE, np.uint8)
    out[seg == BACKGROUND] = SIDE_BACKGROUND
    out[seg == OBJECT] = SIDE_OBJECT
    hand = seg == HAND
    out[hand] = HAND_UNKNOWN_SIDE
    if inst is not None and instances:
        lut = np.full(256, HAND_UNKNOWN_SIDE, np.uint8)
        for ins in instances:
            if ins.get("class") == "hand" and ins.get("side") in SIDES:
                lut[int(ins["id"])] = LEFT_HAND if ins["side"] == "left" else RIGHT_HAND
        out[hand] = lut[inst[hand]]
    return out


def class_pixel_counts(seg: np.ndarray, hist: np.ndarray | None = None) -> dict[str, int]:
    counts = label_histogram(seg) if hist is None else hist
    return {CLASS_NAMES[v]: int(counts[v]) for v in VALID_LABELS} | {"other": int(counts.sum() - sum(counts[v] for v in VALID_LABELS))}


def dumps_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
