"""Learning on data hotrain was not tuned on: small held objects among clutter and look-alike distractors.

A look-alike task unlike the demo, built from the demo's drawing blocks (``hodata.demo.blobs``): skin-toned
hands hold small saturated objects (1-3 % of the frame's pixels, in hue families the demo never uses), on a
muted background with grey clutter and with distractor blobs in the objects' own colours that are NOT objects
(they lie away from the hands; labelled background). Frames are written in EgoHOS's release layout, built into
shards with ``hodata build``, trained with ``hotrain fit`` and scored with ``hotrain eval`` on a held-out split
(``test_indomain``: frames never trained or validated on).

    python scripts/learn_small_objects.py --out work/small                   # --preset small, both stages
    python scripts/learn_small_objects.py --out work/small --variant readme  # hand, then handobj --init
    python scripts/learn_small_objects.py --out work/small --variant all     # every variant, one table

Each variant prints one JSON line: its commands, training seconds and held-out IoUs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from hodata.demo.blobs import (SIDES, Hand, Obj, Scene, _shade, _touching, add_noise, blob_shape, hand_shape,
                               hsv_to_rgb, paint_background, saturated_colour, skin_colour)
from hodata.demo.egohos import write_frames

# OpenCV hue families (0..179) of the held objects and of the distractors; the demo uses 60-120 and 140-162.
OBJECT_HUES = (22, 90, 132, 172)
OBJECT_SHARE = (0.01, 0.03)  # fraction of the frame's pixels the held objects cover (before occlusion)


# ------------------------------------------------------------------------------------------------ scenes


def _grey_clutter(rng: np.random.Generator, img: np.ndarray, n: int) -> None:
    h, w = img.shape[:2]
    for _ in range(n):
        colour = hsv_to_rgb(rng.uniform(0, 180), rng.uniform(0, 25), rng.uniform(50, 230))
        half = (rng.uniform(3, 0.18 * w), rng.uniform(3, 0.18 * h))
        m = blob_shape((w, h), (rng.uniform(0, w), rng.uniform(0, h)), half, rng.uniform(0, 180), rng.random() < 0.6)
        _shade(rng, img, m > 0, colour, 0.3)


def _small_blob(rng: np.random.Generator, size: tuple[int, int], centre, area: float) -> np.ndarray:
    aspect = rng.uniform(0.6, 1.6)
    a = math.sqrt(area / math.pi * aspect)
    return blob_shape(size, centre, (a, area / math.pi / a), rng.uniform(0, 180), rect=bool(rng.random() < 0.5))


def small_object_scene(rng: np.random.Generator, size: tuple[int, int] = (160, 120)) -> Scene:
    """One frame: 1-2 hands, each holding a small object with probability 0.85, 1-3 distractors, clutter."""
    w, h = size
    sides = list(SIDES) if rng.random() < 0.5 else [str(rng.choice(SIDES))]
    shapes = {s: hand_shape(rng, size, s) for s in sides}
    hands_full = np.zeros((h, w), bool)
    for s in sides:
        hands_full |= shapes[s][0] > 0
    holders = [s for s in sides if rng.random() < 0.85]
    share = rng.uniform(*OBJECT_SHARE)
    objects = []
    for s in holders:
        tips, palm = shapes[s][1], np.array(shapes[s][2])
        tip = np.array(tips[int(rng.integers(0, len(tips)))])
        out = (tip - palm) / (np.linalg.norm(tip - palm) + 1e-6)
        area = share * w * h / len(holders)
        full = _small_blob(rng, size, tip + out * math.sqrt(area / math.pi) * 0.6, area)
        objects.append(Obj(order=1, touches=(s,), full=full > 0, mask=full > 0,
                           colour=saturated_colour(rng, OBJECT_HUES)))
    distractors = []
    near_hands = cv2.dilate(hands_full.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(20):  # somewhere away from the hands
            m = _small_blob(rng, size, (rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h),
                            rng.uniform(*OBJECT_SHARE) * w * h / 2) > 0
            if not (m & near_hands).any():
                distractors.append(m)
                break

    img = paint_background(rng, size)
    _grey_clutter(rng, img, int(rng.integers(4, 10)))
    for m in distractors:
        _shade(rng, img, m, saturated_colour(rng, OBJECT_HUES), 0.5)
    for o in objects:
        _shade(rng, img, o.full, o.colour, 0.5)
    for s in sides:
        _shade(rng, img, shapes[s][0] > 0, skin_colour(rng), 0.35)
    img = add_noise(rng, img, 5.0)

    scene = Scene(rgb=img)
    covered = np.zeros((h, w), bool)
    for s in reversed(sides):  # the right hand is drawn last: it covers the left one
        full = shapes[s][0] > 0
        scene.hands.insert(0, Hand(side=s, full=full, mask=full & ~covered, tips=shapes[s][1], palm=shapes[s][2]))
        covered |= full
    for o in objects:
        o.mask = o.full & ~hands_full
        o.touches = tuple(s for s in sides if _touching(shapes[s][0], o.full.astype(np.uint8))) or o.touches
        scene.objects.append(o)
    return scene


def write_dataset(out: Path, frames: int, seed: int, size: tuple[int, int]) -> dict[str, float]:
    """Frames in EgoHOS's release layout (image/label/contact per split); returns the object pixel share."""
    share = write_frames(out, frames, seed, lambda rng: small_object_scene(rng, size), prefix="small")
    return {"frames": frames, "object_pixel_share": share}


# ------------------------------------------------------------------------------------------------ variants

TINY = ["--preset", "tiny", "--weights", "none", "--no-progress"]  # a variant's "--preset small" overrides it
# name -> stages; each stage is (stage, extra fit options); a later stage starts from the previous one's last.pt
FOCUS, DICE, BALANCE, OHEM = ["--focus-crops", "0.5"], ["--dice-weight", "1"], ["--class-balance"], ["--ohem", "0.25"]
LRASPP = ["--model", "lraspp_mobilenet_v3_large"]
VARIANTS: dict[str, list[tuple[str, list[str]]]] = {
    "small": [("hand", ["--preset", "small"]), ("handobj", ["--preset", "small"])],
    "readme": [("hand", []), ("handobj", [])],
    "scratch": [("handobj", [])],
    "scratch_300": [("handobj", ["--steps", "300", "--steps-per-epoch", "150", "--eval-every", "150"])],
    "focus": [("hand", FOCUS), ("handobj", FOCUS)],
    "balanced": [("hand", BALANCE), ("handobj", BALANCE)],
    "ohem": [("hand", OHEM), ("handobj", OHEM)],
    "dice": [("hand", DICE), ("handobj", DICE)],
    "focus_dice": [("hand", FOCUS + DICE), ("handobj", FOCUS + DICE)],
    "focus_balanced": [("hand", FOCUS + BALANCE), ("handobj", FOCUS + BALANCE)],
    "lraspp": [("hand", LRASPP), ("handobj", LRASPP)],
    "lraspp_dice": [("hand", LRASPP + DICE), ("handobj", LRASPP + DICE)],
    "lraspp_focus": [("hand", LRASPP + FOCUS), ("handobj", LRASPP + FOCUS)],
    "lraspp_balanced": [("hand", LRASPP + BALANCE), ("handobj", LRASPP + BALANCE)],
    "lraspp_scratch_300": [("handobj", LRASPP + ["--steps", "300", "--steps-per-epoch", "150", "--eval-every", "150"])],
}
RECOMMENDED = "small"


def sh(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run ``cmd`` (output appended to ``log``); returns (wall seconds, CPU seconds of it and its children)."""
    t0, c0 = time.perf_counter(), _child_cpu()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode:
        sys.exit(f"command failed ({res.returncode}), see {log}: {' '.join(cmd)}")
    return time.perf_counter() - t0, _child_cpu() - c0


def _child_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_variant(name: str, shards: Path, work: Path, hotrain: list[str], seed: int) -> dict:
    out = work / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log = out / "commands.log"
    seconds, cpu, commands, prev = 0.0, 0.0, [], None
    for i, (stage, extra) in enumerate(VARIANTS[name]):
        run_dir = out / f"{i}_{stage}"
        cmd = [*hotrain, "fit", "--shards", str(shards), "--stage", stage, "--out", str(run_dir), *TINY,
               "--seed", str(seed), *extra] + (["--init", str(prev / "last.pt")] if prev else [])
        wall, used = sh(cmd, log)
        seconds, cpu = seconds + wall, cpu + used
        commands.append(" ".join(["hotrain", *cmd[len(hotrain):]]))
        prev = run_dir
    ev = out / "eval_test"
    sh([*hotrain, "eval", "--checkpoint", str(prev / "last.pt"), "--shards", str(shards), "--split", "test_indomain",
        "--out", str(ev), "--num-workers", "0"], log)
    report = json.loads((ev / "report.json").read_text())
    return {"variant": name, "train_wall_s": round(seconds, 1), "train_cpu_s": round(cpu, 1),
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "held_out_iou": {k: (round(v, 3) if v is not None else None) for k, v in report["iou"].items()},
            "commands": commands}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("work/small_objects"))
    p.add_argument("--variant", default=RECOMMENDED, help=f"one of {', '.join(VARIANTS)}, or all")
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--size", default="160x120", help="frame size WxH")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--data-seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for training (OMP_NUM_THREADS)")
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    bin_dir = Path(sys.executable).parent
    hodata = [str(bin_dir / "hodata")]
    hotrain = [sys.executable, "-m", "hotrain"]
    size = tuple(int(v) for v in args.size.lower().split("x"))
    data_dir, shards = args.out / "egohos_small", args.out / "shards"
    stamp = args.out / "data.json"
    want = {"frames": args.frames, "size": list(size), "seed": args.data_seed}
    if not stamp.exists() or json.loads(stamp.read_text()).get("want") != want:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(shards, ignore_errors=True)
        stats = write_dataset(data_dir, args.frames, args.data_seed, size)
        args.out.mkdir(parents=True, exist_ok=True)
        sh([*hodata, "build", "--source", "egohos", "--root", str(data_dir), "--out", str(shards), "--max-samples",
            "64", "--quiet"], args.out / "build.log")
        stamp.write_text(json.dumps({"want": want, **stats}))
    print(json.dumps({"data": json.loads(stamp.read_text())}), flush=True)
    for name in (list(VARIANTS) if args.variant == "all" else args.variant.split(",")):
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        print(json.dumps(run_variant(name, shards, args.out, hotrain, args.seed)), flush=True)


if __name__ == "__main__":
    main()
