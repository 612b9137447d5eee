"""A synthetic dataset in the EPIC-KITCHENS VISOR release layout (see DATASETS.md "VISOR"), for demos and tests.

```
OUT/VISOR/GroundTruth-SparseAnnotations/annotations/{train,val}/<VID>.json
OUT/VISOR/GroundTruth-SparseAnnotations/rgb_frames/{train,val,test}/<PNN>/<VID>.zip   # flat zips of JPEGs
```
Frames are 1920x1080 JPEGs, the size every VISOR polygon assumes, painted in flat colours so that each is a
few tens of KB. Scenes come from :func:`hodata.demo.blobs.compose_scene` on a 240x135 grid, scaled by 8; each
mask's outline becomes one polygon (pixel-centre coordinates), and the image is painted from those same
polygons. Per frame: the hands (``left hand`` / ``right hand``) with their contacts, the objects they touch,
other active objects (which the mapping leaves as background) and, spread over the frames, the release's
quirks: a glove worn on a hand (the hand's contact is the glove, whose own contact holds), an object of two
polygons, ``none-of-the-above`` and dangling contacts, empty and 2-point polygons, a glove lacking both
``on_which_hand`` and ``in_contact_object``, and a glove whose ``on_which_hand`` spells ``rigth hand``. The
test split holds images only, as released.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hodata.demo.blobs import compose_scene, hsv_to_rgb, mask_outline, saturated_colour, skin_colour
from hodata.sources.egohands import paint_polygon

SPARSE = "GroundTruth-SparseAnnotations"
SIZE = (1920, 1080)
SCALE = 8
GRID = (SIZE[0] // SCALE, SIZE[1] // SCALE)
VIDEOS = {"train": ("P01_01", "P02_107"), "val": ("P03_04",), "test": ("P04_101",)}
HAND_CLASS = {"left": 300, "right": 301}
OBJECTS = (("plate", 3), ("knife", 4), ("cup", 13), ("sponge", 16), ("pan", 7), ("bowl", 8))
OTHER_ACTIVE = (("tap", 0), ("spoon", 2), ("lid", 6))


def frame_name(vid: str, num: int) -> str:
    return f"{vid}_frame_{num:010d}.jpg"


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("could not encode JPEG")
    return buf.tobytes()


def write_video(root: Path, split: str, vid: str, entries: list[dict] | None, images: dict[str, bytes],
                zipped: bool = True) -> None:
    """One video in the release layout: ``<VID>.json`` (unless ``entries`` is None, as for test) and its
    frames, as a flat zip or (``zipped=False``) as the unzipped folder VISOR-HOS reads."""
    sparse = Path(root) / SPARSE
    if entries is not None:
        adir = sparse / "annotations" / split
        adir.mkdir(parents=True, exist_ok=True)
        (adir / f"{vid}.json").write_text(json.dumps({"video_annotations": entries}))
    fdir = sparse / "rgb_frames" / split / vid.split("_")[0]
    fdir.mkdir(parents=True, exist_ok=True)
    if zipped:
        with zipfile.ZipFile(fdir / f"{vid}.zip", "w", zipfile.ZIP_STORED) as zf:  # JPEGs do not deflate
            for name, data in sorted(images.items()):
                zf.writestr(name, data)
    else:
        (fdir / vid).mkdir(exist_ok=True)
        for name, data in images.items():
            (fdir / vid / name).write_bytes(data)


def entry(vid: str, num: int, seq: int, annotations: list[dict]) -> dict:
    name = frame_name(vid, num)
    return {"image": {"name": name, "video": vid, "subsequence": f"{vid}_seq_{seq:05d}", "image_path": f"{vid}/{name}"},
            "annotations": annotations}


def mask(id_: str, name: str, class_id: int, segments: list, **keys: Any) -> dict:
    return {"id": id_, "name": name, "class_id": class_id, "exhaustive": "y", "segments": segments, **keys}


def _polygon(small: np.ndarray) -> list[list[float]]:
    """An outline on the 240x135 grid -> a polygon in 1920x1080 pixel-centre coordinates."""
    full = small * SCALE + (SCALE - 1) / 2
    return [[round(float(x), 2), round(float(y), 2)] for x, y in full]


def _outline(m: np.ndarray) -> list[list[float]]:
    return _polygon(mask_outline(m, 0.6)) if m.sum() >= 6 else []


def _frame(rng: np.random.Generator, k: int, ids) -> tuple[np.ndarray, list[dict]]:
    """One frame: the RGB image and its annotations; ``k`` (the frame's global index) picks its quirks."""
    n_hands = 1 if k % 3 == 1 and k % 7 != 4 else 2
    scene = compose_scene(rng, GRID, n_hands=n_hands, n_objects=1 + int(k % 2 == 0),
                          second_order=0.6, noise=0.0)
    anns: list[dict] = []
    paint: list[tuple[list, tuple[int, int, int]]] = []  # (polygons, colour) in drawing order
    hands = {h.side: h for h in scene.hands}
    object_of: dict[str, str] = {}
    for j, o in enumerate(scene.objects):
        name, class_id = (OBJECTS if o.order == 1 else OTHER_ACTIVE)[(k + j) % 3 + 3 * (o.order == 1 and j % 2)]
        part = o.mask.copy()
        segments = [_outline(part)]
        if o.order == 1 and k % 2 == 0:  # an object of two polygons: cut across its middle
            rows = np.flatnonzero(part.any(axis=1))
            if rows.size >= 6:
                cut = rows[rows.size // 2]
                top, bottom = part.copy(), part.copy()
                top[cut:] = False
                bottom[:cut + 1] = False
                segments = [_outline(top), _outline(bottom)]
        if k % 4 == 3 and j == 0:  # the release has empty and 2-point polygons
            segments += [[], [[10.0, 10.0], [20.0, 20.0]]]
        oid = ids()
        anns.append(mask(oid, name, class_id, segments))
        paint.append((segments, o.colour))
        if o.order == 1:
            for side in o.touches:
                object_of[side] = oid
    glove_side = "right" if "right" in hands and k % 3 == 0 else None
    for side in ("left", "right"):
        h = hands.get(side)
        if h is None:
            continue
        contact = object_of.get(side, "hand-not-in-contact")
        if k % 5 == 1 and side == min(hands):  # it touches something left unsegmented
            if contact in object_of.values():
                anns[:] = [a for a in anns if a["id"] != contact]  # painted, but not annotated
            contact = "none-of-the-above"
        if k % 5 == 2 and side == "left":
            contact = ids()  # an id that names no mask of the frame
        colour = skin_colour(rng)
        if side == glove_side or (k % 7 == 4 and side == "left"):  # a glove over the fingers and palm
            palm_y = int(round(h.palm[1]))
            upper, lower = h.mask.copy(), h.mask.copy()
            upper[palm_y + 1:] = False
            lower[:palm_y + 1] = False
            gid = ids()
            on = ["left hand", "rigth hand"] if side == "left" else [f"{side} hand"]  # the release's spelling
            glove_name = "oven glove" if side == "left" else "rubber glove"
            anns.append(mask(gid, glove_name, 60, [_outline(upper)], on_which_hand=on,
                             in_contact_object=contact if contact in object_of.values() else "glove-not-in-contact"))
            paint.append(([_outline(upper)], hsv_to_rgb(rng.uniform(95, 130), 160, 200)))
            anns.append(mask(ids(), f"{side} hand", HAND_CLASS[side], [_outline(lower)], in_contact_object=gid))
            paint.append(([_outline(lower)], colour))
        else:
            anns.append(mask(ids(), f"{side} hand", HAND_CLASS[side], [_outline(h.mask)], in_contact_object=contact))
            paint.append(([_outline(h.mask)], colour))
    if k % 4 == 2:  # a glove lying on the counter, lacking both keys (VISOR-HOS patches them to null)
        x, y = 40 + 60 * (k % 3), 900
        poly = [[x, y], [x + 150.0, y], [x + 150.0, y + 90.0], [x, y + 90.0]]
        anns.insert(0, mask(ids(), "glove", 60, [poly]))
        paint.insert(0, ([poly], saturated_colour(rng, (90,))))
    img = _background(rng)
    layer = np.zeros(SIZE[::-1], np.uint8)
    for v, (segments, colour) in enumerate(paint, 1):
        for s in segments:
            if len(s) >= 3:
                paint_polygon(layer, v, np.asarray(s, np.float64))
        img[layer == v] = colour
    rng.shuffle(anns)  # the release keeps no order among a frame's masks
    return img, anns


def _background(rng: np.random.Generator) -> np.ndarray:
    """A flat kitchen counter and wall in muted colours (flat: the 1080p JPEG stays small)."""
    w, h = SIZE
    img = np.empty((h, w, 3), np.uint8)
    img[:] = hsv_to_rgb(rng.uniform(0, 180), rng.uniform(10, 40), rng.uniform(120, 200))
    cut = int(h * rng.uniform(0.25, 0.4))
    img[:cut] = hsv_to_rgb(rng.uniform(0, 180), rng.uniform(5, 30), rng.uniform(60, 140))
    return img


def write(out: Path, seed: int = 0, frames: int | None = None) -> dict:
    """Write about ``frames`` labelled frames (default 9) over 2 train videos and 1 val video, plus 2
    test images, under ``out/VISOR``."""
    frames = 9 if frames is None else max(3, frames)
    root = Path(out) / "VISOR"
    rng = np.random.default_rng(seed)
    ids = lambda: rng.bytes(16).hex()  # noqa: E731 - VISOR mask ids are 32 hex digits
    labelled = [(s, v) for s in ("train", "val") for v in VIDEOS[s]]
    per_video = math.ceil(frames / len(labelled))
    k = 0
    for split, vid in labelled:
        nums = np.sort(rng.choice(np.arange(1, 60000), per_video, replace=False))
        entries, images = [], {}
        for i, num in enumerate(nums):
            img, anns = _frame(rng, k, ids)
            k += 1
            entries.append(entry(vid, int(num), i // 2 + 1, anns))
            images[frame_name(vid, int(num))] = encode_jpeg(img)
        write_video(root, split, vid, entries[::-1], images)  # entries in no particular order, as released
    for vid in VIDEOS["test"]:
        write_video(root, "test", vid, None, {frame_name(vid, n): encode_jpeg(_background(rng)) for n in (101, 202)})
    return {"root": str(root), "build_command": f"hodata build --source visor --root {root} --out SHARDS"}
