"""Label-map render speed: hodata's z-buffer against pyrender used as its authors intend, same frames, same run.

Scenes: a synthetic MANO hand (778 vertices, 1,538 faces) posed differently in every frame at about 0.5 m,
and a YCB-sized object (an icosphere of radius 5 cm: 5,120 faces, or 20,480 with --subdivisions 5) in a new
pose near the fingers, at 640x480.

hodata: ``render_labels(K, size, [(hand, faces, 1), (object, faces, 2, [R | t])])`` per frame: the object mesh as
loaded, with its pose, as pyrender gets it.

pyrender (EGL, llvmpipe here), the scene built once: one OffscreenRenderer, one Scene, one IntrinsicsCamera(fx,
fy, cx + 0.5, cy + 0.5) (pyrender samples pixel centres at +0.5; znear 5 cm and zfar 10 m bracket the scenes,
for depth precision); the object a Mesh whose node pose is set per
frame; RenderFlags.SEG with a seg_node_map; faces submitted in both windings (SEG culls back faces, and MANO is
open at the wrist). The hand, which deforms, is updated per frame in one of two ways, both timed:
"node" replaces its mesh node with a new Mesh (public API), "buffer" writes the new positions into the
existing vertex buffer (glBufferSubData). The faster one is the baseline.

Timing: best of --rounds interleaved rounds (every side once per round, so load from other processes hits all
sides alike); frames/s per CPU second of this process (all its threads, so llvmpipe's worker threads count) is
the per-core figure, wall-clock frames/s beside it. Agreement: per-class IoU between the two label maps, pooled
over all frames, and the worst single frame.

    PYOPENGL_PLATFORM=egl .venv/bin/python scripts/bench_render.py [--frames 200] [--rounds 3] [--subdivisions 4]
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
from hodata.mano import axis_angle_to_matrix, load_mano_dir  # noqa: E402
from hodata.render import pyrender_available, render_labels, render_labels_batch  # noqa: E402

K = np.array([[617.0, 0.0, 318.3], [0.0, 617.0, 242.1], [0.0, 0.0, 1.0]])
SIZE = (640, 480)
HAND, OBJECT = 1, 2
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])  # pyrender's camera looks down -z with y up


def make_frames(n: int, subdivisions: int, seed: int = 0):
    """(hand faces, object vertices, object faces, [(hand vertices (778, 3), object R (3, 3), t (3,)), ...])."""
    mano = load_mano_dir(synthetic_mano_dir(Path(tempfile.mkdtemp(prefix="bench-mano-"))), "right")
    obj = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.05)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        pose = np.r_[[2.8, 0.0, 0.0] + rng.normal(0, 0.3, 3), rng.normal(0, 0.3, 45)]
        hand, joints = mano.forward(pose, rng.normal(0, 1, 10), trans=[*rng.normal(0, 0.03, 2), 0.5])
        centre = joints[[4, 5, 6]].mean(axis=0) + [*rng.normal(0, 0.02, 2), rng.uniform(-0.06, 0.06)]
        frames.append((hand, axis_angle_to_matrix(rng.normal(0, 1, 3))[0], centre))
    return mano.faces, np.asarray(obj.vertices), np.asarray(obj.faces), frames


class Zbuffer:
    """hodata's renderer, one call per frame as the dataset sources make it."""

    def __init__(self, hand_faces, obj_verts, obj_faces):
        self.hand_faces, self.obj_verts, self.obj_faces = hand_faces, obj_verts, obj_faces

    def meshes(self, frame):
        hand, R, t = frame
        pose = np.empty((3, 4))
        pose[:, :3], pose[:, 3] = R, t
        return [(hand, self.hand_faces, HAND), (self.obj_verts, self.obj_faces, OBJECT, pose)]

    def __call__(self, frame) -> np.ndarray:
        return render_labels(K, SIZE, self.meshes(frame))


class Pyrender:
    """pyrender with its scene built once; ``update`` "node" (new hand Mesh per frame) or "buffer" (new
    positions written into the hand's vertex buffer)."""

    def __init__(self, hand_faces, obj_verts, obj_faces, hand0, update: str):
        import pyrender

        self.pyrender, self.update = pyrender, update
        self.renderer = pyrender.OffscreenRenderer(*SIZE)
        self.scene = pyrender.Scene(bg_color=(0, 0, 0, 0))
        self.hand_faces = np.concatenate([hand_faces, hand_faces[:, ::-1]])
        both = np.concatenate([obj_faces, obj_faces[:, ::-1]])
        self.obj_node = self.scene.add(pyrender.Mesh([pyrender.Primitive(positions=obj_verts.astype(np.float32),
                                                                         indices=both)]))
        self.hand_node = self.scene.add(self._hand_mesh(hand0))
        camera = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 0.5,
                                           znear=0.05, zfar=10.0)
        self.scene.add(camera, pose=np.eye(4))
        self._render()  # uploads the buffers

    def _hand_mesh(self, hand):
        positions = (hand * [1.0, -1.0, -1.0]).astype(np.float32)
        return self.pyrender.Mesh([self.pyrender.Primitive(positions=positions, indices=self.hand_faces)])

    def _render(self) -> np.ndarray:
        seg = {self.hand_node: (HAND,) * 3, self.obj_node: (OBJECT,) * 3}
        color, _ = self.renderer.render(self.scene, flags=self.pyrender.RenderFlags.SEG, seg_node_map=seg)
        return color[:, :, 0]

    def __call__(self, frame) -> np.ndarray:
        hand, R, t = frame
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = R, t
        self.scene.set_pose(self.obj_node, OPENCV_TO_OPENGL @ pose)
        if self.update == "node":
            self.scene.remove_node(self.hand_node)
            self.hand_node = self.scene.add(self._hand_mesh(hand))
        else:
            from OpenGL import GL

            positions = np.ascontiguousarray(hand * [1.0, -1.0, -1.0], dtype=np.float32)
            self.renderer._platform.make_current()  # this renderer's GL context (two are alive here)
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.hand_node.mesh.primitives[0]._buffers[0])
            GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, positions.nbytes, positions)
        return self._render()


def timed(side, frames) -> tuple[float, float]:
    """(CPU s, wall s) for all frames; each map is dropped as soon as it is made (as a build does)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for frame in frames:
        side(frame)
    return time.process_time() - cpu, time.perf_counter() - wall


def iou_report(ours: list, ref: list) -> list[str]:
    lines = []
    for label, name in ((HAND, "hand"), (OBJECT, "object")):
        inter = union = 0
        worst = 1.0
        for a, b in zip(ours, ref):
            i, u = np.count_nonzero((a == label) & (b == label)), np.count_nonzero((a == label) | (b == label))
            inter, union = inter + i, union + u
            if u:
                worst = min(worst, i / u)
        lines.append(f"IoU {name:6s} pooled {inter / union:.6f}  worst frame {worst:.6f}  "
                     f"({union / len(ours):,.0f} px/frame)")
    differ = sum(np.count_nonzero(a != b) for a, b in zip(ours, ref))
    lines.append(f"pixels that differ: {differ / len(ours):.1f} per frame")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subdivisions", type=int, default=4, help="object icosphere: 4 -> 5,120 faces, 5 -> 20,480")
    args = parser.parse_args()
    hand_faces, obj_verts, obj_faces, frames = make_frames(args.frames, args.subdivisions)
    print(f"{args.frames} frames of {SIZE[0]}x{SIZE[1]}: hand {len(hand_faces):,} faces, object {len(obj_faces):,} "
          f"faces; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    ours = Zbuffer(hand_faces, obj_verts, obj_faces)
    sides = {"hodata zbuffer": ours}
    if pyrender_available():
        for update in ("node", "buffer"):
            sides[f"pyrender SEG ({update})"] = Pyrender(hand_faces, obj_verts, obj_faces, frames[0][0], update)
    else:
        print("pyrender: no offscreen (EGL) context here; no baseline to compare")
    for side in sides.values():  # warm-up: numba compile or load, GL buffers
        for frame in frames[:3]:
            side(frame)
    best = {name: (np.inf, np.inf) for name in sides}
    for _ in range(args.rounds):
        for name, side in sides.items():
            cpu, wall = timed(side, frames)
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    n = len(frames)
    print(f"best of {args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.2f} at end")
    print(f"{'':24s} {'frames/CPU-s':>13s} {'frames/s wall':>14s} {'ms CPU/frame':>13s}")
    for name, (cpu, wall) in best.items():
        print(f"{name:24s} {n / cpu:13,.0f} {n / wall:14,.0f} {cpu / n * 1e3:13.3f}")
    if len(sides) > 1:
        base = min((name for name in sides if name.startswith("pyrender")), key=lambda name: best[name][0])
        ratio_cpu = best[base][0] / best["hodata zbuffer"][0]
        ratio_wall = best[base][1] / best["hodata zbuffer"][1]
        print(f"speed ratio hodata / {base}: {ratio_cpu:.1f}x per CPU second, {ratio_wall:.1f}x wall")
        ref_side = sides[base]
        for line in iou_report([ours(f) for f in frames], [ref_side(f) for f in frames]):
            print(line)
    # The batch API on all numba threads (runs of frames, one canvas per thread), into a reused buffer.
    from numba import get_num_threads

    meshes = [ours.meshes(f) for f in frames]
    buffer = np.empty((n, SIZE[1], SIZE[0]), np.uint8)
    render_labels_batch(K, SIZE, meshes[:4], out=buffer[:4])
    best_wall = best_cpu = np.inf
    for _ in range(args.rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        render_labels_batch(K, SIZE, meshes, out=buffer)
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
    same = all(np.array_equal(buffer[i], ours(frames[i])) for i in range(0, n, max(1, n // 20)))
    print(f"render_labels_batch on {get_num_threads()} threads: {n / best_wall:,.0f} frames/s wall, "
          f"{best_cpu / n * 1e3:.3f} ms CPU/frame (same maps: {same})")

if __name__ == "__main__":
    main()
