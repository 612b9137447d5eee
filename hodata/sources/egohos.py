"""EgoHOS (Zhang et al., ECCV 2022): per-pixel hand and interacting-object labels, read as released.

Layout (DATASETS.md)::

    ROOT/{train,val,test_indomain,test_outdomain}/image/<name>.jpg
                                                 /label/<name>.png    # uint8 ids 0..8
                                                 /contact/<name>.png  # not used here

Label ids: 0 background, 1 / 2 left / right hand, 3 / 4 / 5 first-order interacting object of the left /
right / both hands, 6 / 7 / 8 second-order interacting object. Mapping to ``hodata/1``: hands -> 1, first
order -> 2, second order per the ``egohos_second_order`` option: ``ignore`` (255, the default: a
second-order object is an object, but not one the hand holds, so neither answer is safe), ``object`` (2) or
``background`` (0).

Sequence: EgoHOS pools frames from several video collections and its names carry no common video field.
When a name ends in ``_<digits>`` (a frame number) the part before it is taken as the sequence, so frames
cut from one clip stay together; otherwise the sequence is the split name. Either way the official split
folders decide train / val / test, so the sequence is informational only.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

from hodata.errors import BadFrame, DataError
from hodata.label_png import PNGError, decode_label_png
from hodata.label_lookup import lookup2_counts
from hodata.schema import BACKGROUND, HAND, IGNORE, NO_INSTANCE, OBJECT, UNKNOWN_INSTANCE, Sample, instance
from hodata.sources import FrameRef, Option, Source
from hodata.sources.files import read_file, read_image

SPLITS = ("train", "val", "test_indomain", "test_outdomain")
IMAGE_SUFFIX, LABEL_SUFFIX = ".jpg", ".png"
MAX_ID = 8
SECOND_ORDER_MODES = {"ignore": IGNORE, "object": OBJECT, "background": BACKGROUND}
ID_NAMES = {0: "background", 1: "left hand", 2: "right hand", 3: "first-order object, left hand",
            4: "first-order object, right hand", 5: "first-order object, both hands",
            6: "second-order object, left hand", 7: "second-order object, right hand",
            8: "second-order object, both hands"}
_FRAME_SUFFIX = re.compile(r"^(?P<seq>.+?)_(?P<num>\d+)$")


def id_lut(second_order: str) -> np.ndarray:
    """256-entry lookup table from EgoHOS ids to hodata/1 labels (ids above 8 never reach it)."""
    if second_order not in SECOND_ORDER_MODES:
        raise DataError(f"egohos_second_order must be one of {', '.join(SECOND_ORDER_MODES)}, got {second_order!r}")
    lut = np.full(256, IGNORE, np.uint8)
    lut[0] = BACKGROUND
    lut[[1, 2]] = HAND
    lut[[3, 4, 5]] = OBJECT
    lut[[6, 7, 8]] = SECOND_ORDER_MODES[second_order]
    return lut


# EgoHOS id -> instance entry (the instance id is the EgoHOS id itself); second-order ids per the option.
ID_INSTANCES = {1: ("hand", "left", {}), 2: ("hand", "right", {}),
                3: ("object", None, {"held_by": "left", "order": 1}), 4: ("object", None, {"held_by": "right", "order": 1}),
                5: ("object", None, {"held_by": "both", "order": 1}), 6: ("object", None, {"held_by": "left", "order": 2}),
                7: ("object", None, {"held_by": "right", "order": 2}), 8: ("object", None, {"held_by": "both", "order": 2})}


def instance_lut(second_order: str) -> np.ndarray:
    """256-entry lookup from EgoHOS ids to instance ids: ids 1..5 keep their value; 6..8 keep it when
    second-order objects count as objects, else 255 (ignored) or 0 (background)."""
    lut = np.full(256, UNKNOWN_INSTANCE, np.uint8)
    lut[:6] = np.arange(6)
    lut[[6, 7, 8]] = {"object": [6, 7, 8], "ignore": UNKNOWN_INSTANCE, "background": NO_INSTANCE}[second_order]
    return lut


def frame_instances(ids_present: list[int], inst_lut: np.ndarray) -> list[dict]:
    """``instances`` of a frame: one per EgoHOS id present (hands with their side, objects with their hand)."""
    out = []
    for i in ids_present:
        if 1 <= i <= MAX_ID and inst_lut[i] == i:
            cls, side, extra = ID_INSTANCES[i]
            out.append(instance(i, cls, side, None, **extra))
    return out


def sequence_of(name: str, split: str) -> str:
    m = _FRAME_SUFFIX.match(name)
    return m.group("seq") if m else split


class EgoHOSSource(Source):
    name = "egohos"
    OPTIONS = (Option("egohos_second_order", click.Choice(tuple(SECOND_ORDER_MODES)), "ignore",
                      help="How to label 2nd-order interacting objects (ids 6, 7, 8): ignore (255), object or "
                           "background."),)

    def __init__(self, root, options: dict[str, Any] | None = None):
        super().__init__(root, options)
        self.second_order = self.options["egohos_second_order"]
        self.lut = id_lut(self.second_order)
        self.inst_lut = instance_lut(self.second_order)
        self._counts: dict[str, int] = {}

    def splits(self) -> list[str]:
        present = [s for s in SPLITS if (self.root / s).is_dir()]
        if not present:
            raise DataError(f"not an EgoHOS root: none of the split folders {', '.join(SPLITS)} is there",
                            self.root)
        return present

    def frames(self) -> list[FrameRef]:
        refs: list[FrameRef] = []
        for split in self.splits():
            image_dir, label_dir = self.root / split / "image", self.root / split / "label"
            for d in (image_dir, label_dir):
                if not d.is_dir():
                    raise DataError("EgoHOS split folder has no image/ and label/ subfolders", d)
            names = sorted(p.stem for p in image_dir.iterdir() if p.suffix.lower() == IMAGE_SUFFIX)
            if not names:
                raise DataError(f"no {IMAGE_SUFFIX} images", image_dir)
            self._counts[split] = len(names)
            for n in names:
                rel_img = f"{split}/image/{n}{IMAGE_SUFFIX}"
                rel_lab = f"{split}/label/{n}{LABEL_SUFFIX}"
                refs.append(FrameRef(split, sequence_of(n, split), n, (rel_img, rel_lab)))
        return refs

    def load(self, ref: FrameRef) -> Sample:
        rel_img, rel_lab = ref.info
        img_path, lab_path = self.root / rel_img, self.root / rel_lab
        image, (width, height) = read_image(img_path)
        ids = read_label(lab_path, width, height)
        seg, inst, id_counts = lookup2_counts(ids, self.lut, self.inst_lut)  # one pass over the ids
        instances = frame_instances(np.flatnonzero(id_counts).tolist(), self.inst_lut)
        return Sample(
            source=self.name, split=ref.split, sequence=ref.sequence, frame=ref.frame,
            image=image, image_ext="jpg", seg=seg, width=width, height=height,
            labels={"hand": True, "object": True, "sides": True}, objects=[],
            inst=inst, instances=instances,
            provenance={"image": rel_img, "label": rel_lab},
        )

    def describe(self) -> dict[str, Any]:
        return {"frames_per_split": dict(self._counts),
                "mapping": {"ids": ID_NAMES, "hand": [1, 2], "object": [3, 4, 5], "second_order": [6, 7, 8],
                            "second_order_as": self.second_order}}


def read_label(path: Path, width: int, height: int) -> np.ndarray:
    """An EgoHOS label as raw 8-bit ids, checked: one channel, the image's size, ids 0..8 (else BadFrame).

    Palette ("P") PNGs yield their stored indices, which are the ids, never the palette's colours; grey ("L")
    PNGs their values; anything else is rejected. 8-bit files go through :func:`decode_label_png` (zlib-ng:
    ~0.2 ms for a 640x480 label against ~1.9 with Pillow), other depths through Pillow.
    """
    data = read_file(path, "label file")
    try:
        ids = decode_label_png(data)
    except PNGError as e:
        raise BadFrame(f"label does not decode ({e})", path) from None
    if ids is None:
        ids, mode = _read_label_pillow(data, path)
    else:
        mode = "with one channel" if ids.ndim == 2 else f"with {ids.shape[2]} channels"
    if ids is None or ids.dtype != np.uint8 or ids.ndim != 2:
        raise BadFrame(f"label must be an 8-bit single-channel PNG, got one {mode}", path)
    if ids.shape != (height, width):
        raise BadFrame(f"label is {ids.shape[1]}x{ids.shape[0]}, image is {width}x{height}", path)
    top = int(ids.max())
    if top > MAX_ID:
        raise BadFrame(f"label has id {top}, EgoHOS ids are 0..{MAX_ID}", path)
    return ids


def _read_label_pillow(data: bytes, path: Path) -> tuple[np.ndarray | None, str]:
    """A PNG :func:`decode_label_png` leaves to a general decoder: (ids, or None when not grey or palette;
    the mode)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return (np.asarray(im) if im.mode in ("L", "P") else None), f"of mode {im.mode}"
    except Exception as e:  # noqa: BLE001
        raise BadFrame(f"label does not decode ({e})", path) from e
