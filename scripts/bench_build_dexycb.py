#!/usr/bin/env python
"""Benchmark ``hodata build --source dexycb`` (masks rendered end to end: MANO + YCB posing, z-buffer render,
PNG, tar) against a plain single-process loop.

Data: the DexYCB look-alike (``hodata.demo.dexycb``: 640x480, 2 subjects x 2 sequences x 2 serials,
``--frames`` / 8 frames per sequence and serial), with its synthetic MANO models, generated once into ``--data``.

- baseline: one process walks subjects / sequences / serials / frames, reads ``meta.yml``, the intrinsics and
  betas with PyYAML, poses the hand with the same MANO convention (manopth's PCA, hand mean) and renders hand,
  grasped object and the other objects with the same ``render_labels``, maps the others to ignore (255), encodes
  the label map with PIL (twice: as ``seg.png`` and as ``inst.png``, the members the build writes) and writes
  jpg + seg.png + inst.png + json with ``webdataset.TarWriter``;
- project: ``hodata.shards.build`` of ``DexYCBSource`` (rendered masks, defaults: s0, others ignored) at each
  ``--workers`` value (on top: decodes every image to the end, checks every map, records the agreement with the
  shipped ``seg``, hashes and fsyncs shards, rewrites the manifest).

Every label map of every project run must equal the baseline's, frame by frame, or the script stops. Rates:
frames/s on the wall clock and frames per CPU second (this process and its workers together), the per-core
figure; the ratio to the baseline of each.

  .venv/bin/python scripts/bench_build_dexycb.py --frames 256 --workers 0,2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import png_bytes  # noqa: E402

# -------------------------------------------------------------------------------------------- DexYCB


def make_dexycb(data: Path, frames: int) -> tuple[Path, Path, int]:
    """The DexYCB look-alike under ``data`` (reused when already there): (root, mano_dir, frames)."""
    from hodata.demo import dexycb as demo

    per = max(1, -(-frames // 8))  # 2 subjects x 2 sequences x 2 serials
    stamp = data / ".bench.json"
    want = {"source": "dexycb", "frames_per_serial": per}
    if not (stamp.exists() and json.loads(stamp.read_text()) == want):
        shutil.rmtree(data, ignore_errors=True)
        t0 = time.time()
        demo.write(data, frames=per, seed=0)
        stamp.write_text(json.dumps(want))
        print(f"generated {8 * per} DexYCB look-alike frames in {time.time() - t0:.0f} s -> {data}")
    else:
        print(f"reusing {8 * per} DexYCB look-alike frames in {data}")
    return data / "DexYCB", data / "mano", 8 * per


def dexycb_baseline(root: Path, mano_dir: Path, out: Path, max_samples: int) -> dict[str, np.ndarray]:
    """The plain render-and-write loop (one process). Returns {"<sequence>/<frame>": label map} of what it wrote."""
    import trimesh
    import yaml

    from hodata.mano import load_mano
    from hodata.render import render_labels
    from hodata.sources.dexycb import MANO_CONVENTION, SUBJECTS, YCB_CLASSES

    models = {side: load_mano(mano_dir / f"MANO_{side.upper()}.pkl") for side in ("right", "left")}
    meshes_of: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    lut = np.arange(256, dtype=np.uint8)
    lut[3:] = 255  # objects other than the grasped one: ignore
    out.mkdir(parents=True, exist_ok=True)
    segs: dict[str, np.ndarray] = {}
    writer, in_shard, index = None, 0, 0
    for subject in SUBJECTS:
        if not (root / subject).is_dir():
            continue
        for seq_dir in sorted(p for p in (root / subject).iterdir() if p.is_dir()):
            meta = yaml.safe_load((seq_dir / "meta.yml").read_text())
            side, grasp = meta["mano_sides"][0], meta["ycb_grasp_ind"]
            betas = np.asarray(yaml.safe_load((root / "calibration" / f"mano_{meta['mano_calib'][0]}" / "mano.yml")
                                              .read_text())["betas"], np.float64)
            for ycb_id in meta["ycb_ids"]:
                if ycb_id not in meshes_of:
                    mesh = trimesh.load(root / "models" / YCB_CLASSES[ycb_id] / "textured_simple.obj", force="mesh",
                                        process=False, skip_materials=True)
                    meshes_of[ycb_id] = (np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64))
            for serial in meta["serials"]:
                c = yaml.safe_load((root / "calibration" / "intrinsics" / f"{serial}_640x480.yml").read_text())["color"]
                K = np.array([[c["fx"], 0, c["ppx"]], [0, c["fy"], c["ppy"]], [0, 0, 1]], np.float64)
                for f in range(meta["num_frames"]):
                    image = (seq_dir / serial / f"color_{f:06d}.jpg").read_bytes()
                    with np.load(seq_dir / serial / f"labels_{f:06d}.npz") as z:
                        pose_m, pose_y = z["pose_m"][0].astype(np.float64), z["pose_y"].astype(np.float64)
                    meshes = []
                    if np.any(pose_m != 0):
                        verts, _ = MANO_CONVENTION.forward(models[side], pose_m[:48], betas, pose_m[48:51])
                        meshes.append((verts, np.asarray(models[side].faces, np.int64), 1))
                    for k, ycb_id in enumerate(meta["ycb_ids"]):
                        if np.any(pose_y[k] != 0):
                            meshes.append((*meshes_of[ycb_id], 2 if k == grasp else 3, pose_y[k]))
                    seg = lut[render_labels(K, (640, 480), meshes)]
                    sequence, frame = f"{subject}/{seq_dir.name}/{serial}", f"{f:06d}"
                    if writer is None or in_shard >= max_samples:
                        if writer is not None:
                            writer.close()
                        writer = wds.TarWriter(str(out / f"dexycb-{index:06d}.tar"), encoder=False)
                        index, in_shard = index + 1, 0
                    json_meta = {"schema": "hodata/2", "source": "dexycb", "sequence": sequence, "frame": frame,
                                 "width": 640, "height": 480, "camera": {"K": K.tolist(), "serial": serial}}
                    writer.write({"__key__": f"dexycb/{sequence.replace('/', '_')}/{frame}", "jpg": image,
                                  "seg.png": png_bytes(seg), "inst.png": png_bytes(seg), "json": json.dumps(json_meta).encode()})
                    segs[f"{sequence}/{frame}"] = seg
                    in_shard += 1
    if writer is not None:
        writer.close()
    return segs


def dexycb_project(root: Path, mano_dir: Path, out: Path, workers: int, max_samples: int) -> int:
    from hodata.shards import BuildConfig, build
    from hodata.sources import open_source

    src = open_source("dexycb", root, {"mano_dir": str(mano_dir)})
    rec = build(src, BuildConfig(out=out, workers=workers, max_samples=max_samples, progress=False,
                                 command=["bench_build", "--source", "dexycb"]))
    return rec["totals"]["samples"]


def project_segs(out: Path) -> dict[str, np.ndarray]:
    """{"<sequence>/<frame>": seg.png} of every sample in a build's shards, read from the tars."""
    import tarfile

    from hodata.schema import decode_seg

    segs = {}
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as tf:
            members: dict[str, dict[str, bytes]] = {}
            for m in tf:
                if m.isfile():
                    key, ext = m.name.split(".", 1)
                    members.setdefault(key, {})[ext] = tf.extractfile(m).read()
        for parts in members.values():
            meta = json.loads(parts["json"])
            segs[f"{meta['sequence']}/{meta['frame']}"] = decode_seg(parts["seg.png"])
    return segs


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (worker processes), user + system."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed_cpu(fn, *args):
    t0, c0 = time.perf_counter(), cpu_seconds()
    result = fn(*args)
    return result, time.perf_counter() - t0, cpu_seconds() - c0


def run_dexycb(args, work: Path, workers: list[int]) -> None:
    data = args.data or Path(tempfile.gettempdir()) / f"hodata_bench_dexycb_{args.frames}"
    root, mano_dir, n = make_dexycb(data, args.frames)
    for f in root.rglob("*.*"):  # warm the page cache so neither side pays for the first read
        f.read_bytes()
    # compile the renderer's kernels and load the models once, outside the timings
    dexycb_baseline(root, mano_dir, work / "warm", args.max_samples)
    shutil.rmtree(work / "warm")
    best: dict[str, tuple[float, float]] = {}  # side -> (best wall s, best CPU s)
    for r in range(args.repeats):
        want, t, c = timed_cpu(dexycb_baseline, root, mano_dir, work / "baseline", args.max_samples)
        best["baseline"] = (min(best.get("baseline", (t, c))[0], t), min(best.get("baseline", (t, c))[1], c))
        print(f"round {r + 1}: baseline {len(want) / t:.1f} frames/s", end="", flush=True)
        for w in workers:
            out = work / f"project_w{w}"
            got, t, c = timed_cpu(dexycb_project, root, mano_dir, out, w, args.max_samples)
            if got != len(want):
                raise SystemExit(f"sample counts differ: project {got}, baseline {len(want)}")
            segs = project_segs(out)
            differ = [k for k in want if k not in segs or not np.array_equal(segs[k], want[k])]
            if differ:
                raise SystemExit(f"project and baseline label maps differ on {len(differ)} frames, e.g. {differ[0]}")
            prev = best.get(f"w{w}", (t, c))
            best[f"w{w}"] = (min(prev[0], t), min(prev[1], c))
            print(f", --workers {w} {got / t:.1f}", end="", flush=True)
            shutil.rmtree(out)
        print()
        shutil.rmtree(work / "baseline")
    bt, bc = best["baseline"]
    print(f"\nbest of {args.repeats}, {n} DexYCB look-alike frames at 640x480 (rendered masks), "
          f"{os.cpu_count()} cores:")
    print(f"  baseline (plain loop, PIL png, 1 process): {n / bt:6.1f} frames/s wall, {n / bc:6.1f} frames/s per core")
    for w in workers:
        t, c = best[f"w{w}"]
        print(f"  hodata build --workers {w}:                {n / t:6.1f} frames/s wall ({bt / t:.2f}x), "
              f"{n / c:6.1f} frames/s per core ({bc / c:.2f}x baseline)")
    print(f"\ndata: {data}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=256, help="frames in the generated look-alike (multiple of 8)")
    ap.add_argument("--data", type=Path, default=None, help="dataset folder (generated when missing; kept)")
    ap.add_argument("--workers", default="0,2", help="comma-separated --workers values to time")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best time of each side counts")
    ap.add_argument("--max-samples", type=int, default=100, help="samples per shard")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_build_dexycb_"))
    try:
        run_dexycb(args, work, workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
