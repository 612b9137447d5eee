"""Load, check and encode one frame of a source into the tar blocks of one sample (or a skip record)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from hodata.errors import BadFrame, DataError
from hodata.schema import (SEG_SLOT, VALID_LABELS, Sample, check_inst, check_seg, class_pixel_counts,
                           label_histogram)
from hodata.sources import FrameRef, Source
from hodata.tar_blocks import tar_blocks


class SchemaViolation(RuntimeError):
    """A source produced a sample that breaks the schema: a bug in that source, never a skipped frame."""


def resize_sample(s: Sample, max_side: int) -> Sample:
    """Shrink so the longer side is ``max_side`` (image: area filter, re-encoded; mask: nearest; K scaled)."""
    scale = max_side / max(s.width, s.height)
    if scale >= 1.0:
        return s
    from hodata.schema import decode_image

    w, h = max(1, round(s.width * scale)), max(1, round(s.height * scale))
    img = cv2.resize(decode_image(s.image), (w, h), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if s.image_ext == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise BadFrame("could not re-encode resized image")
    seg = cv2.resize(s.seg, (w, h), interpolation=cv2.INTER_NEAREST)
    if s.inst is not None:
        s.inst = seg if s.inst is s.seg else cv2.resize(s.inst, (w, h), interpolation=cv2.INTER_NEAREST)
    if s.amodal is not None:
        s.amodal = cv2.resize(s.amodal, (w, h), interpolation=cv2.INTER_NEAREST)
    camera = s.camera
    if camera and camera.get("K") is not None:
        sx, sy = w / s.width, h / s.height
        K = np.asarray(camera["K"], dtype=np.float64).copy()
        # pixel centres at integers: x' = (x + 0.5) * s - 0.5
        K[0, 0] *= sx
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1] *= sy
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        camera = dict(camera, K=K.tolist())
    s.extra = dict(s.extra, resized_from=[s.width, s.height])
    s.image, s.seg, s.width, s.height, s.camera = buf.tobytes(), seg, w, h, camera
    return s


@dataclass
class Encoded:
    """A sample ready for a shard (its tar blocks and what the manifest counts of it), or a skip record."""

    split: str
    index: int
    key: str | None = None
    data: bytes | None = None
    class_pixels: dict[str, int] | None = None
    size: tuple[int, int] | None = None
    quality: dict[str, float] | None = None  # e.g. provided-vs-rendered mask IoU, summarised in the manifest
    skipped: dict[str, Any] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes this sample takes in the tar: a 512-byte header per member plus its data padded to 512."""
        return len(self.data) if self.data is not None else 0


def encode_frame(source: Source, index: int, ref: FrameRef, max_side: int | None) -> Encoded:
    """Load, check and encode one frame. A :class:`BadFrame` (the source's word that this frame's files are
    missing or broken) becomes a skip record naming the reason; anything else is a bug or a wrong option and
    propagates, with a note saying which frame it happened on."""
    try:
        s = source.load(ref)
        if max_side:
            s = resize_sample(s, max_side)
    except BadFrame as e:
        return Encoded(ref.split, index, skipped=_skip_record(ref, index, e))
    except Exception as e:
        e.add_note(f"while loading {source.name} frame {ref.split}/{ref.sequence}/{ref.frame}")
        raise
    try:  # a source must produce schema-valid samples: a violation is its bug, not a bad frame
        hist = checked_histogram(s)
        if s.image_ext not in ("jpg", "png"):
            raise ValueError(f"unsupported image type {s.image_ext!r}")
    except ValueError as e:
        raise SchemaViolation(f"{source.name} frame {ref.split}/{ref.sequence}/{ref.frame}: {e}") from None
    counts = class_pixel_counts(s.seg, hist)
    quality = {k: float(v) for k, v in (s.extra.get("mask_agreement") or {}).items() if v is not None}
    return Encoded(ref.split, index, s.key, tar_blocks(s.key, s.members()), counts, (s.width, s.height),
                   quality or None)


def checked_histogram(s: Sample) -> np.ndarray:
    """Check a sample's label map (and instance map) against the schema; return the label map's histogram
    ((256,) int64, every value outside 0/1/2/255 counted zero: there are none once checked).

    Where an instance map differs from the label map, the joint counts :func:`check_inst` makes are the one
    pass over the maps: their columns are the label map's counts, and their label diagonal says whether the
    two maps are equal pixel for pixel (then the sample shares one map for both, encoded once)."""
    if s.inst is None or s.inst is s.seg:
        hist = label_histogram(s.seg)
        check_seg(s.seg, s.width, s.height, hist)
        if s.inst is not None:
            check_inst(s.inst, s.instances, s.seg, hist)
        return hist
    check_seg(s.seg, s.width, s.height, _NO_COUNTS)  # its type and size; its values are counted next
    joint = check_inst(s.inst, s.instances, s.seg)
    columns = joint.sum(axis=0)
    if columns[-1]:  # values that are no label: counted again the long way, to name them
        check_seg(s.seg, s.width, s.height)
    hist = np.zeros(256, np.int64)
    hist[_LABEL_VALUES] = columns[SEG_SLOT[_LABEL_VALUES]]
    if joint[_LABEL_VALUES, SEG_SLOT[_LABEL_VALUES]].sum() == s.seg.size:
        s.inst = s.seg
    return hist


_LABEL_VALUES = np.array(sorted(VALID_LABELS))
_NO_COUNTS = np.zeros(256, np.int64)


def _skip_record(ref: FrameRef, index: int, e: Exception) -> dict[str, Any]:
    rec = {"split": ref.split, "sequence": ref.sequence, "frame": ref.frame, "index": index,
           "reason": str(e), "error": type(e).__name__}
    if isinstance(e, DataError) and e.path:
        rec["file"], rec["message"] = e.path, e.message
    return rec
