"""Label-map render speed: hodata's numba z-buffer against pyrender (EGL, SEG mode), same scenes, same run.

A synthetic MANO hand (778 vertices) and a YCB-sized object (icosphere, 20,480 faces) at 640x480, posed
differently in every frame. Prints ms/frame for each, the speed ratio and the per-class IoU between them.

    PYOPENGL_PLATFORM=egl .venv/bin/python scripts/bench_render.py [--frames 50]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from hodata.demo.mano_model import synthetic_mano_dir  # noqa: E402
from hodata.mano import load_mano_dir  # noqa: E402
from hodata.render import pyrender_available, render_labels  # noqa: E402

K = np.array([[617.0, 0.0, 318.3], [0.0, 617.0, 242.1], [0.0, 0.0, 1.0]])
SIZE = (640, 480)


def scenes(n: int, seed: int = 0) -> list[list]:
    mano = load_mano_dir(synthetic_mano_dir(Path(tempfile.mkdtemp(prefix="bench-mano-"))), "right")
    obj = trimesh.creation.icosphere(subdivisions=5, radius=0.05)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pose = np.r_[[2.8, 0.0, 0.0] + rng.normal(0, 0.3, 3), rng.normal(0, 0.3, 45)]
        verts, joints = mano.forward(pose, rng.normal(0, 1, 10), trans=[*rng.normal(0, 0.03, 2), 0.5])
        centre = joints[[4, 5, 6]].mean(axis=0) + [*rng.normal(0, 0.02, 2), rng.uniform(-0.06, 0.06)]
        out.append([(verts, mano.faces, 1), (obj.vertices + centre, obj.faces, 2)])
    return out


def timed(frames: list[list], backend: str) -> tuple[float, float, list[np.ndarray]]:
    """(wall s/frame, CPU s/frame of this process, all threads: llvmpipe's included, label maps)."""
    render_labels(K, SIZE, frames[0], backend=backend)  # warm-up: numba compile / GL context
    wall, cpu = time.perf_counter(), time.process_time()
    maps = [render_labels(K, SIZE, meshes, backend=backend) for meshes in frames]
    n = len(frames)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n, maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50)
    args = parser.parse_args()
    frames = scenes(args.frames)
    print(f"{args.frames} frames of {SIZE[0]}x{SIZE[1]}, hand 1,538 faces + object 20,480 faces; ms/frame:")
    t_ours, c_ours, ours = timed(frames, "zbuffer")
    print(f"zbuffer (numba)    wall {t_ours * 1e3:7.2f}  cpu {c_ours * 1e3:7.2f}")
    if not pyrender_available():
        print("pyrender: no offscreen (EGL) context here; no baseline to compare")
        return
    t_ref, c_ref, ref = timed(frames, "pyrender")
    print(f"pyrender SEG (EGL) wall {t_ref * 1e3:7.2f}  cpu {c_ref * 1e3:7.2f}")
    print(f"speed ratio pyrender / zbuffer: wall {t_ref / t_ours:.1f}x, cpu {c_ref / c_ours:.1f}x")
    a, b = np.stack(ours), np.stack(ref)
    for label, name in ((1, "hand"), (2, "object")):
        inter = np.count_nonzero((a == label) & (b == label))
        union = np.count_nonzero((a == label) | (b == label))
        print(f"IoU {name:6s} {inter / union:.5f}  ({union / len(frames):.0f} px/frame)")
    print(f"pixels that differ: {np.count_nonzero(a != b) / a.size:.2e} of all")


if __name__ == "__main__":
    main()
