"""The ``hodata/1`` sample schema shared by hodata (writer) and hotrain (reader).

One WebDataset sample per frame, key ``source/split/sequence/frame`` (no dots), members:

- ``jpg`` or ``png``: the RGB image bytes (the source's own bytes unless a resize was asked);
- ``seg.png``: 8-bit single-channel label map of the image's size: 0 bg, 1 hand, 2 object, 255 ignore;
- ``json``: metadata (see :func:`make_meta`).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

SCHEMA = "hodata/1"
BACKGROUND, HAND, OBJECT, IGNORE = 0, 1, 2, 255
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
    hands: list[dict[str, Any]] = field(default_factory=list)  # e.g. [{"side": "right"}]
    objects: list[dict[str, Any]] = field(default_factory=list)  # e.g. [{"name": "003_cracker_box"}]
    camera: dict[str, Any] | None = None  # {"K": 3x3 list} where known
    provenance: dict[str, Any] = field(default_factory=dict)  # source files relative to the root
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific facts (e.g. mask agreement)

    @property
    def key(self) -> str:
        return make_key(self.source, self.split, self.sequence, self.frame)

    def meta(self) -> dict[str, Any]:
        return make_meta(self)


def make_meta(s: Sample) -> dict[str, Any]:
    meta = {
        "schema": SCHEMA,
        "source": s.source,
        "split": s.split,
        "sequence": str(s.sequence),
        "frame": str(s.frame),
        "width": int(s.width),
        "height": int(s.height),
        "labels": {"hand": bool(s.labels.get("hand", False)), "object": bool(s.labels.get("object", False))},
        "hands": s.hands,
        "objects": s.objects,
        "camera": s.camera,
        "provenance": s.provenance,
    }
    if s.extra:
        meta["extra"] = s.extra
    return meta


def label_histogram(seg: np.ndarray) -> np.ndarray:
    """Pixel count of each 8-bit value (256,) int64; cv2's histogram is ~5x faster than np.unique/bincount."""
    seg = np.ascontiguousarray(seg, dtype=np.uint8)
    if seg.size >= 1 << 24:  # calcHist counts in float32: exact only below 2^24 per bin
        return np.bincount(seg.ravel(), minlength=256).astype(np.int64)
    return cv2.calcHist([seg], [0], None, [256], [0, 256]).ravel().astype(np.int64)


def check_seg(seg: np.ndarray, width: int, height: int, hist: np.ndarray | None = None) -> None:
    """Raise ValueError when a label map breaks the schema."""
    if seg.dtype != np.uint8 or seg.ndim != 2:
        raise ValueError(f"label map must be 2-D uint8, got {seg.dtype} {seg.shape}")
    if seg.shape != (height, width):
        raise ValueError(f"label map is {seg.shape[1]}x{seg.shape[0]}, image is {width}x{height}")
    hist = label_histogram(seg) if hist is None else hist
    present = np.flatnonzero(hist)
    bad = present[~np.isin(present, VALID_LABELS)]
    if bad.size:
        raise ValueError(f"label map has values outside 0/1/2/255: {bad[:8].tolist()}")


def encode_seg(seg: np.ndarray) -> bytes:
    """Lossless single-channel PNG (cv2 compression 1: the fastest; labels compress well anyway)."""
    # run-length strategy: label maps are long runs; half the size of the default at the same speed
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(seg, dtype=np.uint8), params)
    if not ok:
        raise ValueError("could not encode label map")
    return buf.tobytes()


def decode_seg(data: bytes) -> np.ndarray:
    """Decode ``seg.png`` as raw 8-bit values (never through a colour/palette conversion)."""
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


def checked_image_size(data: bytes, path) -> tuple[int, int]:
    """(width, height) of an image that decodes to the end (a cheap 1/8-scale decode catches truncation).

    Raises BadFrame naming ``path`` when it does not decode.
    """
    from PIL import Image

    from hodata.errors import BadFrame

    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            im.draft("L", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
    except Exception as e:  # noqa: BLE001 - PIL raises several types for a broken file
        raise BadFrame(f"image does not decode ({e})", path) from e
    return size


def class_pixel_counts(seg: np.ndarray, hist: np.ndarray | None = None) -> dict[str, int]:
    counts = label_histogram(seg) if hist is None else hist
    return {CLASS_NAMES[v]: int(counts[v]) for v in VALID_LABELS} | {"other": int(counts.sum() - sum(counts[v] for v in VALID_LABELS))}


def dumps_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
