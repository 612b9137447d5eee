"""Left and right hands end to end: EgoHOS look-alike shards, ``hand`` then ``sides`` (tiny preset), held-out IoUs.

Builds ``hodata demo --layout egohos`` frames (left hands sit left in the frame, as a camera wearer's do; the
script checks it on the shards), trains ``--stage hand``, then ``--stage sides --init`` from it, and scores the
held-out ``test_indomain`` split. Two side-blind references on the same held-out frames:

- ``unswapped flip``: the same ``sides`` run with a horizontal flip that does NOT swap left and right labels
  (mirrored left hands are then taught as left: the side cannot be learned from appearance or position);
- ``one side for all``: the trained model's hand pixels all called right (what a model that cannot tell sides
  and picks one gets): left IoU 0, right IoU below the model's.

    python scripts/learn_sides.py --out work/sides          # about 5 CPU minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def sh(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stdout[-2000:]}{res.stderr[-2000:]}")


def left_hands_sit_left(shards: Path) -> float:
    """Fraction of hand instances whose side matches the frame half holding most of their pixels."""
    from hodata.schema import decode_inst

    agree = total = 0
    for shard in sorted(shards.glob("*.tar")):
        with tarfile.open(shard) as tf:
            members = {m.name: m for m in tf.getmembers()}
            for name, m in members.items():
                if not name.endswith(".json"):
                    continue
                meta = json.loads(tf.extractfile(m).read())
                inst_name = name[: -len("json")] + "inst.png"
                if inst_name not in members:
                    continue
                inst = decode_inst(tf.extractfile(members[inst_name]).read())
                for ins in meta.get("instances", []):
                    if ins["class"] != "hand" or ins["side"] is None:
                        continue
                    xs = np.nonzero(inst == ins["id"])[1]
                    if len(xs):
                        total += 1
                        agree += (xs.mean() < inst.shape[1] / 2) == (ins["side"] == "left")
    return agree / max(total, 1)


@contextmanager
def unswapped_flip():
    """The sides stage with a plain horizontal flip (left stays left in the mirror): a side-blind reference."""
    from hotrain import stages

    saved = stages.STAGES["sides"]
    stages.STAGES["sides"] = dataclasses.replace(saved, flip_pairs=())
    try:
        yield
    finally:
        stages.STAGES["sides"] = saved


def fit(**options) -> float:
    from hotrain.train import fit as run_fit

    t0 = time.perf_counter()
    run_fit({"preset": "tiny", "weights": "none", "progress": False, **options})
    return time.perf_counter() - t0


def held_out(checkpoint: Path, shards: Path, out: Path) -> dict:
    from hotrain.evaluate import run_eval

    return run_eval(checkpoint, str(shards), split="test_indomain", out=out, num_workers=0)


def one_side_for_all(report: dict) -> dict:
    """IoUs if every pixel the model calls a hand (either side) were called right."""
    m = np.asarray(report["confusion_matrix"], dtype=np.float64)
    merged = m.copy()
    merged[:, 2] += merged[:, 1]
    merged[:, 1] = 0
    tp = np.diag(merged)
    union = merged.sum(0) + merged.sum(1) - tp
    return {"left_hand": float(tp[1] / union[1]) if union[1] else None,
            "right_hand": float(tp[2] / union[2]) if union[2] else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("work/sides"))
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    w = args.out
    shutil.rmtree(w, ignore_errors=True)
    hodata = str(Path(sys.executable).parent / "hodata")
    sh([hodata, "demo", "--layout", "egohos", "--out", str(w / "egohos"), "--frames", str(args.frames)])
    sh([hodata, "build", "--source", "egohos", "--root", str(w / "egohos"), "--out", str(w / "shards"),
        "--max-samples", "32", "--quiet"])
    shards = w / "shards"
    placed = left_hands_sit_left(shards)
    common = {"shards": str(shards), "seed": args.seed}
    t_hand = fit(stage="hand", out=str(w / "hand"), **common)
    t_sides = fit(stage="sides", init=str(w / "hand" / "last.pt"), out=str(w / "sides"), **common)
    with unswapped_flip():
        t_blind = fit(stage="sides", init=str(w / "hand" / "last.pt"), out=str(w / "sides_unswapped"), **common)
    sides = held_out(w / "sides" / "last.pt", shards, w / "eval_sides")
    blind = held_out(w / "sides_unswapped" / "last.pt", shards, w / "eval_unswapped")
    r = lambda v: None if v is None else round(v, 3)  # noqa: E731
    print(json.dumps({
        "hand_instances_on_their_side_of_the_frame": round(placed, 3),
        "seconds": {"hand": round(t_hand, 1), "sides": round(t_sides, 1), "sides_unswapped": round(t_blind, 1)},
        "held_out_test_indomain": {
            "sides": {k: r(sides["iou"][k]) for k in ("left_hand", "right_hand", "object")}
            | {k: sides["left_right"][k] for k in ("left_as_right", "right_as_left", "left_pixels", "right_pixels")},
            "unswapped_flip": {k: r(blind["iou"][k]) for k in ("left_hand", "right_hand", "object")}
            | {k: blind["left_right"][k] for k in ("left_as_right", "right_as_left")},
            "one_side_for_all": {k: r(v) for k, v in one_side_for_all(sides).items()},
        },
        "commands": [f"hodata demo --layout egohos --out {w}/egohos --frames {args.frames}",
                     f"hodata build --source egohos --root {w}/egohos --out {shards} --max-samples 32",
                     f"hotrain fit --shards {shards} --stage hand --preset tiny --weights none --out {w}/hand",
                     f"hotrain fit --shards {shards} --stage sides --init {w}/hand/last.pt --preset tiny "
                     f"--weights none --out {w}/sides",
                     f"hotrain eval --checkpoint {w}/sides/last.pt --shards {shards} --split test_indomain"],
    }, indent=1))


if __name__ == "__main__":
    main()
