"""A synthetic dataset in the EgoHands release layout (see DATASETS.md), for demos and tests.

```
OUT/egohands_data/metadata.mat                              # struct array `video` (1 x videos)
OUT/egohands_data/_LABELLED_SAMPLES/<VIDEO_ID>/frame_%04d.jpg
OUT/egohands_data/_LABELLED_SAMPLES/<VIDEO_ID>/polygons.mat # struct array `polygons` (1 x frames)
```
By default all 48 release video ids are written as the 48 entries of ``video``, in name order (the order the
release's ``_LABELLED_SAMPLES`` folders list; the official split goes by position in this struct array, so
a build with the default options needs all 48), each with a few labelled frames (one by default) instead of
the release's 100. Frame numbers are random and increasing, like the release's; ``polygons.mat`` repeats
each video's polygons, as the release does. The wearer's
hands come up from the bottom edge; the partner's come down from the top, behind them. Each visible hand
is annotated as one polygon of float (x, y) in MATLAB's 1-based pixel coordinates; absent hands are empty
slots. Objects are drawn but not annotated, as in EgoHands.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from hodata import manifests
from hodata.demo.blobs import compose_scene

SLOTS = ("myleft", "myright", "yourleft", "yourright")
VIDEO_FIELDS = ("video_id", "partner_video_id", "ego_viewer_id", "partner_id", "location_id", "activity_id",
                "labelled_frames")
SPLIT_FILE = manifests.path("egohands_split.json")


def pick_videos(count: int) -> list[str]:
    """The first ``count`` of the release's 48 video ids in name order."""
    return sorted(json.loads(SPLIT_FILE.read_text())["_ids"])[:count]


def frame_annotation(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One frame: RGB image and the four slots' polygons (float (x, y), 1-based; (0, 0) when absent)."""
    w, h = size
    mine = compose_scene(rng, size, n_objects=int(rng.integers(0, 3)), second_order=0.0)
    img = mine.rgb.copy()
    slots = {s: np.zeros((0, 0)) for s in SLOTS}
    covered = np.zeros((h, w), bool)
    for hand in mine.hands:
        slots["my" + hand.side] = hand.mask
        covered |= hand.mask
    if rng.random() < 0.7:  # the partner's hands, across the table: a flipped scene behind ours
        theirs = compose_scene(rng, size, n_objects=0)
        for hand in theirs.hands:
            full = hand.full[::-1]
            visible = full & ~covered
            img[visible] = theirs.rgb[::-1][visible]
            # facing the camera, the partner's right hand is on the image's left
            slots["your" + ("right" if hand.side == "left" else "left")] = visible
    polys = {}
    for slot, mask in slots.items():
        if mask.size == 0 or mask.sum() < 12:
            polys[slot] = np.zeros((0, 0))
            continue
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = cv2.approxPolyDP(max(contours, key=cv2.contourArea), 0.8, True).reshape(-1, 2).astype(np.float64)
        if c.shape[0] < 3:
            polys[slot] = np.zeros((0, 0))
            continue
        c += rng.uniform(-0.3, 0.3, c.shape)  # annotators click between pixel centres
        polys[slot] = c + 1.0  # MATLAB: 1-based
    return img, polys


def _struct_array(records: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    """A 1 x N MATLAB struct array for scipy.io.savemat."""
    arr = np.zeros((1, len(records)), dtype=[(f, object) for f in fields])
    for i, rec in enumerate(records):
        for f in fields:
            arr[0, i][f] = rec[f]
    return arr


def write(out: Path, frames_per_video: int = 1, videos: int = 48, seed: int = 0, size: tuple[int, int] = (160, 90),
          frames: int | None = None) -> dict:
    """Write ``videos`` x ``frames_per_video`` frames under ``out/egohands_data``; ``frames`` asks for about
    that many in all (at least one per video)."""
    if frames is not None:
        frames_per_video = max(1, math.ceil(frames / videos))
    root = Path(out) / "egohands_data"
    samples = root / "_LABELLED_SAMPLES"
    rng = np.random.default_rng(seed)
    video_records = []
    for vid in pick_videos(videos):
        activity, location, viewer, partner = vid.split("_")
        vdir = samples / vid
        vdir.mkdir(parents=True, exist_ok=True)
        nums = np.sort(rng.choice(np.arange(1, 2800), frames_per_video, replace=False))
        labelled = []
        for num in nums:
            img, polys = frame_annotation(rng, size)
            path = vdir / f"frame_{int(num):04d}.jpg"
            if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise OSError(f"could not write {path}")
            labelled.append({"frame_num": np.array([[float(num)]]), **polys})
        scipy.io.savemat(vdir / "polygons.mat", {"polygons": _struct_array(labelled, SLOTS)})
        video_records.append({
            "video_id": vid, "partner_video_id": f"{activity}_{location}_{partner}_{viewer}",
            "ego_viewer_id": viewer, "partner_id": partner, "location_id": location, "activity_id": activity,
            "labelled_frames": _struct_array(labelled, ("frame_num",) + SLOTS),
        })
    scipy.io.savemat(root / "metadata.mat", {"video": _struct_array(video_records, VIDEO_FIELDS)})
    return {"root": str(root), "build_command": f"hodata build --source egohands --root {root} --out SHARDS"}
