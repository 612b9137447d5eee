"""A synthetic dataset in EgoHOS's release layout (see DATASETS.md), for demos and tests.

```
OUT/{train,val,test_indomain,test_outdomain}/image/<name>.jpg
                                            /label/<name>.png     # uint8 ids 0..8, lossless
                                            /contact/<name>.png   # 1 = hand pixel in contact with an object
```
Ids: 0 background, 1 left hand, 2 right hand, 3 / 4 / 5 first-order object of the left / right / both
hands, 6 / 7 / 8 second-order object reached through the left / right / both hands' first-order object.
Names imitate the release's ``<video>_<frame number>`` style so the source's sequence rule is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from hodata.demo.blobs import Scene, compose_scene

SPLITS = ("train", "val", "test_indomain", "test_outdomain")
SPLIT_SHARES = {"val": 0.15, "test_indomain": 0.10, "test_outdomain": 0.05}  # train takes the rest (~70%)
HAND_IDS = {"left": 1, "right": 2}
FRAMES_PER_CLIP = 6  # consecutive demo frames share one made-up video name


def split_counts(frames: int) -> dict[str, int]:
    """Frames per split, about 70/15/10/5 with at least 2 in every split."""
    if frames < 2 * len(SPLITS):
        raise ValueError(f"need at least {2 * len(SPLITS)} frames for the four EgoHOS splits, got {frames}")
    counts = {s: max(2, round(frames * share)) for s, share in SPLIT_SHARES.items()}
    return {"train": frames - sum(counts.values()), **counts}


def object_id(order: int, touches: tuple[str, ...]) -> int:
    """EgoHOS id of an object: 3/4/5 (first order, left/right/both), 6/7/8 (second order)."""
    which = 2 if len(set(touches)) > 1 else (0 if touches[0] == "left" else 1)
    return (3 if order == 1 else 6) + which


def egohos_label(scene: Scene) -> np.ndarray:
    h, w = scene.rgb.shape[:2]
    label = np.zeros((h, w), np.uint8)
    for o in scene.objects:
        label[o.mask] = object_id(o.order, o.touches)
    for hd in scene.hands:
        label[hd.mask] = HAND_IDS[hd.side]
    return label


def contact_map(scene: Scene, px: int = 2) -> np.ndarray:
    """1 where a hand pixel lies within ``px`` pixels of a first-order object."""
    h, w = scene.rgb.shape[:2]
    near = np.zeros((h, w), np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    for o in scene.objects:
        if o.order == 1:
            near |= cv2.dilate(o.full.astype(np.uint8), k)
    hands = np.zeros((h, w), bool)
    for hd in scene.hands:
        hands |= hd.mask
    return (near.astype(bool) & hands).astype(np.uint8)


def write(out: Path, frames: int = 48, seed: int = 0, size: tuple[int, int] = (160, 120)) -> dict:
    """Write ``frames`` synthetic frames under ``out`` in the EgoHOS layout; deterministic given ``seed``."""
    out = Path(out)
    write_frames(out, frames, seed, lambda rng: compose_scene(rng, size, n_objects=int(rng.choice([0, 1, 1, 2, 2]))))
    return {"root": str(out), "build_command": f"hodata build --source egohos --root {out} --out SHARDS"}


def write_frames(out: Path, frames: int, seed: int, make_scene: Callable[[np.random.Generator], Scene],
                 prefix: str = "demo") -> float:
    """Write the scenes ``make_scene`` draws as EgoHOS frames (image, label, contact per split, clip-style names);
    returns the share of all pixels that are objects."""
    rng = np.random.default_rng(seed)
    index, object_px, all_px = 0, 0, 0
    for split, count in split_counts(frames).items():
        dirs = {d: out / split / d for d in ("image", "label", "contact")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            clip, frame_no = divmod(index, FRAMES_PER_CLIP)
            name = f"{prefix}{seed:02d}v{clip:03d}_{30 * frame_no + 15:06d}"
            index += 1
            scene = make_scene(rng)
            bgr = cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR)
            if not cv2.imwrite(str(dirs["image"] / f"{name}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise OSError(f"could not write {dirs['image'] / name}.jpg")
            label = egohos_label(scene)
            object_px, all_px = object_px + int((label >= 3).sum()), all_px + label.size
            cv2.imwrite(str(dirs["label"] / f"{name}.png"), label)
            cv2.imwrite(str(dirs["contact"] / f"{name}.png"), contact_map(scene))
    return object_px / max(1, all_px)
