"""A synthetic dataset in FreiHAND v2's release layout (see DATASETS.md "FreiHAND"), for demos and tests.

```
OUT/FreiHAND_pub_v2/training/rgb/%08d.jpg      # 4 x N images: version v of sample s is image v * N + s
OUT/FreiHAND_pub_v2/training/mask/%08d.jpg     # N masks, 3-channel JPEG (0 / 255 before compression)
OUT/FreiHAND_pub_v2/training_{K,mano,xyz,verts,scale}.json
OUT/FreiHAND_pub_v2/evaluation/rgb/%08d.jpg, evaluation_{K,scale}.json
OUT/FreiHAND_pub_v2/evaluation_{xyz,verts,mano}.json, evaluation/segmap/%08d.png   # the eval ground truth
OUT/mano/MANO_RIGHT.pkl, MANO_LEFT.pkl         # a synthetic MANO-format model
```
Hands are posed with the synthetic MANO as FreiHAND does (full pose relative to the hand mean), placed in
the OpenCV camera frame (positive z), and painted over a background that differs per version: green screen
(gs), then three "colourised" backgrounds standing in for hom / sample / auto.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from hodata.demo.blobs import add_noise, hsv_to_rgb, paint_background, skin_colour
from hodata.schema import HAND

N_VERSIONS = 4
EVAL_SAMPLES = 2


def random_hand(rng: np.random.Generator, mano, size: tuple[int, int]) -> dict:
    """One annotation: K, MANO vector (61), joints (21, 3), vertices (778, 3), all in metres / OpenCV frame.
    The joints are FreiHAND's: ``J_regressor`` on the posed mesh plus tip vertices, thumb first."""
    from hodata.mano import regressed_joints

    w, h = size
    f = rng.uniform(0.85, 0.95) * 2 * w
    K = np.array([[f, 0.0, w / 2 + rng.uniform(-4, 4)], [0.0, f, h / 2 + rng.uniform(-4, 4)], [0.0, 0.0, 1.0]])
    pose = np.concatenate([rng.normal(0, 0.8, 3), rng.normal(0, 0.2, 45)])
    beta = rng.normal(0, 0.6, 10)
    verts, _ = mano.forward(pose, beta, np.zeros(3), flat_hand_mean=False)
    target = np.array([rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02), rng.uniform(0.55, 0.7)])
    verts = verts + (target - verts.mean(axis=0))
    xyz = regressed_joints(mano, verts, tips="freihand", thumb_first=True)
    uv_root = (K @ xyz[9])[:2] / xyz[9, 2]
    mano_vec = np.concatenate([pose, beta, uv_root, [K[0, 0] / xyz[9, 2]]])  # scale: root depth = f / scale
    return {"K": K, "mano": mano_vec, "xyz": xyz, "verts": verts, "scale": float(np.linalg.norm(xyz[9] - xyz[10]))}


def version_background(rng: np.random.Generator, version: int, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    if version == 0:  # green screen
        img = np.empty((h, w, 3), np.uint8)
        img[:] = hsv_to_rgb(rng.uniform(55, 65), rng.uniform(180, 230), rng.uniform(120, 200))
        return img
    return paint_background(rng, size)


def paint_hand(rng: np.random.Generator, background: np.ndarray, hand: np.ndarray, skin) -> np.ndarray:
    img = background.copy()
    h, w = hand.shape
    shade = cv2.resize(rng.normal(1.0, 0.07, (max(2, h // 16), max(2, w // 16))).astype(np.float32), (w, h))
    fill = np.clip(np.array(skin, np.float32)[None, None] * shade[..., None], 0, 255).astype(np.uint8)
    img[hand] = fill[hand]
    return add_noise(rng, img, 4.0)


def _jpg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])


def _dump(path: Path, items: list) -> None:
    path.write_text(json.dumps(items))


def _annotation_lists(anns: list[dict]) -> dict[str, list]:
    return {
        "K": [a["K"].tolist() for a in anns],
        "mano": [[a["mano"].tolist()] for a in anns],  # 1 x 61 per sample, as released
        "xyz": [a["xyz"].tolist() for a in anns],
        "verts": [a["verts"].tolist() for a in anns],
        "scale": [a["scale"] for a in anns],
    }


def write(out, samples: int = 8, seed: int = 0, size: tuple[int, int] = (224, 224), frames: int | None = None) -> dict:
    """Write the demo tree under ``out``. ``frames`` (the CLI's name) is an alias for ``samples``, the
    number of annotations; the training set then holds 4 x samples images."""
    from hodata.demo.mano_model import synthetic_mano_dir
    from hodata.mano import load_mano
    from hodata.render import render_labels

    n = int(frames if frames is not None else samples)
    if n < 1:
        raise ValueError(f"need at least one sample, got {n}")
    out = Path(out)
    root = out / "FreiHAND_pub_v2"
    rng = np.random.default_rng(seed)
    mano_dir = Path(synthetic_mano_dir(out / "mano"))
    mano = load_mano(mano_dir / "MANO_RIGHT.pkl", "right")
    faces = np.asarray(mano.faces, np.int64)

    def hand_mask(a: dict) -> np.ndarray:
        return render_labels(a["K"], size, [(a["verts"], faces, HAND)]) == HAND

    train = [random_hand(rng, mano, size) for _ in range(n)]
    for s, a in enumerate(train):
        hand = hand_mask(a)
        skin = skin_colour(rng)
        mask = np.repeat((hand * 255).astype(np.uint8)[..., None], 3, axis=2)
        _jpg(root / "training" / "mask" / f"{s:08d}.jpg", mask)
        for v in range(N_VERSIONS):
            tint = skin if v == 0 else tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in skin)
            img = paint_hand(rng, version_background(rng, v, size), hand, tint)
            _jpg(root / "training" / "rgb" / f"{v * n + s:08d}.jpg", img)
    for key, items in _annotation_lists(train).items():
        _dump(root / f"training_{key}.json", items)

    evaluation = [random_hand(rng, mano, size) for _ in range(EVAL_SAMPLES)]
    for s, a in enumerate(evaluation):
        hand = hand_mask(a)
        _jpg(root / "evaluation" / "rgb" / f"{s:08d}.jpg",
             paint_hand(rng, paint_background(rng, size), hand, skin_colour(rng)))
        seg_dir = root / "evaluation" / "segmap"
        seg_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(seg_dir / f"{s:08d}.png"), (hand * 255).astype(np.uint8))
    ev = _annotation_lists(evaluation)
    for key in ("K", "scale", "xyz", "verts", "mano"):
        _dump(root / f"evaluation_{key}.json", ev[key])

    return {
        "root": str(root), "mano_dir": str(mano_dir), "samples": n, "training_images": N_VERSIONS * n,
        "evaluation_images": EVAL_SAMPLES,
        "build_command": f"hodata build --source freihand --root {root} --mano-dir {mano_dir} --out SHARDS",
    }
