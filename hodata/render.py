"""Label-map rendering: a z-buffer rasterizer (numba) and a pyrender cross-check backend.

Camera convention: OpenCV (x right, y down, z forward; points with z > 0 are in front), pixel centres at
integer coordinates: vertex v projects to u = fx*x/z + cx, v = fy*y/z + cy; pixel (row i, col j) is covered
when its centre (j, i) is inside the projected triangle. Background 0; the nearest surface's label wins.

Both backends draw every face whatever its winding (no back-face culling): MANO is open at the wrist, so its
inside is visible there and must still read as hand. Corners are snapped to 1/256 pixel (as GPUs do) so a
pixel centre exactly on an edge is decided by a fixed tie rule: of two triangles sharing that edge exactly one
takes it (no double or missing pixels along a mesh's seams). Depth is compared as 1/z interpolated linearly
in the image (exact for planar triangles) and stored as float32; on an exact depth tie the mesh listed first
keeps the pixel. Triangles partly behind the camera are clipped at z = NEAR, not dropped or wrapped.
The pyrender backend ignores K's skew term (K[0, 1]); HO3D and FreiHAND intrinsics have none.

:func:`render_silhouettes` draws each mesh alone (amodal masks: what the mesh covers whatever is in front of
it), by the same pixel rules. How the z-buffer is made fast without changing a pixel: :mod:`hodata.zbuffer`.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from hodata import zbuffer

Mesh = tuple  # (vertices (N, 3) float, faces (F, 3) int, label int 1..254)

NEAR = 1e-3  # metres: the clipping plane z = NEAR; geometry closer than 1 mm to the camera is cut away
BACKENDS = ("zbuffer", "pyrender")


def render_labels(K, size, meshes, *, backend: str = "zbuffer") -> np.ndarray:
    """K (3, 3), size (width, height), meshes [(verts, faces, label), ...] in the camera frame, or
    (verts, faces, label, pose) with pose (4, 4) or (3, 4) moving the vertices into it (an object mesh stays as
    loaded; its pose changes per frame) -> (height, width) uint8 label map. backend "zbuffer" (default, fast)
    or "pyrender" (EGL cross-check). Triangles partly behind the camera (z <= near) are clipped, not dropped
    or wrapped."""
    width, height = _check_size(size)
    K = _check_K(K)
    meshes = [_check_mesh(i, mesh) for i, mesh in enumerate(meshes)]
    if backend == "zbuffer":
        out = np.empty((height, width), np.uint8)
        _draw(K, width, height, meshes, out)
        return out
    if backend == "pyrender":
        return _pyrender_labels(K, width, height, *_stack_meshes(meshes))
    raise ValueError(f"unknown render backend {backend!r}; known: {', '.join(BACKENDS)}")


def render_silhouettes(K, size, meshes) -> np.ndarray:
    """Amodal masks: (len(meshes), height, width) bool, mesh i's silhouette as if it were alone in the scene
    (same pixel rules as :func:`render_labels`; the label of each mesh is not used)."""
    width, height = _check_size(size)
    K = _check_K(K)
    meshes = [_check_mesh(i, mesh) for i, mesh in enumerate(meshes)]
    out = np.empty((len(meshes), height, width), np.uint8)
    for i, (verts, faces, _, pose) in enumerate(meshes):
        _draw(K, width, height, [(verts, faces, 1, pose)], out[i], first_index=i)
    return out.view(np.bool_)


def render_labels_batch(Ks, size, frames, *, backend: str = "zbuffer", threads: int | None = None,
                        out: np.ndarray | None = None) -> np.ndarray:
    """Many frames: Ks (B, 3, 3) (or one K), frames: list of mesh lists -> (B, height, width) uint8, each frame
    equal to :func:`render_labels` of it. The z-buffer renders runs of consecutive frames on ``threads`` threads
    (default: numba's thread count; pass 1 where a build already runs one worker process per core). ``out``: a
    (B, height, width) uint8 C-contiguous array to fill and return instead of a new one (reusing it saves
    touching fresh memory on every batch)."""
    width, height = _check_size(size)
    Ks = np.asarray(Ks, dtype=np.float64)
    if Ks.shape == (3, 3):
        Ks = np.broadcast_to(Ks, (len(frames), 3, 3))
    if Ks.shape != (len(frames), 3, 3):
        raise ValueError(f"Ks must be (3, 3) or ({len(frames)}, 3, 3), got {Ks.shape}")
    Ks = np.ascontiguousarray([_check_K(K) for K in Ks]).reshape(len(frames), 3, 3)
    shape = (len(frames), height, width)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, got {out.dtype} {out.shape}")
    if backend != "zbuffer":
        for b, meshes in enumerate(frames):
            out[b] = render_labels(Ks[b], (width, height), meshes, backend=backend)
        return out
    checked = [[_check_mesh(i, mesh) for i, mesh in enumerate(meshes)] for meshes in frames]
    if not any(checked):  # no mesh at all (typed lists need one element to know their type)
        out[...] = 0
        return out
    verts, faces, poses, table, spans = _pack(checked)
    if threads is None:
        from numba import get_num_threads

        threads = get_num_threads()
    n_chunks = max(1, min(int(threads), len(frames)))
    status = zbuffer.render_batch(Ks, verts, faces, poses, table, spans, width, height, NEAR, n_chunks, out)
    bad = np.flatnonzero(status >= 0)
    if len(bad):
        b = int(bad[0])
        mesh, code = divmod(int(status[b]), 4)
        raise ValueError(f"frame {b}: {_refusal(mesh, code, len(checked[b][mesh][0]))}")
    return out


def pyrender_available() -> bool:
    """True when pyrender can make an offscreen (EGL) context here."""
    try:
        _pyrender_context(1, 1)
    except Exception:
        return False
    return True


# ------------------------------------------------------------------------------------------ input checks

def _check_size(size) -> tuple[int, int]:
    width, height = (int(s) for s in size)
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive (width, height), got {size}")
    return width, height


def _check_K(K) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ValueError(f"K must be a finite 3x3 matrix, got shape {K.shape}")
    if abs(K[2, 0]) > 1e-8 or abs(K[2, 1]) > 1e-8 or abs(K[2, 2] - 1.0) > 1e-8:
        raise ValueError(f"K's last row must be [0, 0, 1], got {K[2].tolist()}")
    return np.ascontiguousarray(K)


IDENTITY_POSE = np.eye(3, 4)


def _check_mesh(i: int, mesh) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """(vertices (N, 3) float64, faces (F, 3) int64, label, pose (3, 4) float64), C-contiguous; the kernel
    checks indices and values."""
    if len(mesh) == 3:
        (v, f, label), pose = mesh, IDENTITY_POSE
    else:
        v, f, label, pose = mesh
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape == (4, 4) and np.array_equal(pose[3], (0.0, 0.0, 0.0, 1.0)):
            pose = pose[:3]
        if pose.shape != (3, 4) or not np.isfinite(pose).all():
            raise ValueError(f"mesh {i}: pose must be a finite (4, 4) rigid/affine transform or its top (3, 4)")
        pose = np.ascontiguousarray(pose)
    if not 1 <= int(label) <= 254:
        raise ValueError(f"mesh {i}: label must be 1..254 (0 is background, 255 ignore), got {label}")
    v = np.ascontiguousarray(v, dtype=np.float64).reshape(-1, 3)
    f = np.ascontiguousarray(f, dtype=np.int64).reshape(-1, 3)
    return v, f, int(label), pose


def _refusal(i: int, code: int, n_verts: int) -> str:
    if code == zbuffer.BAD_FACES:
        return f"mesh {i}: faces index vertices outside 0..{n_verts - 1}"
    return f"mesh {i}: vertices contain NaN or inf"


def _draw(K, width, height, meshes, out, first_index: int = 0) -> None:
    """Draw meshes on this thread's canvas and write the label map into out (height, width)."""
    canvas = zbuffer.Canvas.for_thread(width, height)
    canvas.fit(max((len(m[0]) for m in meshes), default=0), max((len(m[1]) for m in meshes), default=0))
    canvas.begin()
    for i, (verts, faces, label, pose) in enumerate(meshes):
        code = canvas.draw(verts, faces, pose, label, K, NEAR, i == 0)
        if code != zbuffer.OK:
            raise ValueError(_refusal(first_index + i, code, len(verts)))
    canvas.copy_out(out)


def _pack(frames):
    """All frames' meshes as typed lists of vertex and face arrays (a face array shared by several meshes is
    listed once), each mesh's pose (M, 3, 4); table rows: vertex array, face array, label; spans rows: each
    frame's first and end mesh."""
    from numba.typed import List

    verts, faces, poses, table, spans = List(), List(), [], [], []
    listed = {}  # id(face array) -> its index in faces
    for meshes in frames:
        spans.append((len(table), len(table) + len(meshes)))
        for v, f, label, pose in meshes:
            if id(f) not in listed:
                listed[id(f)] = len(faces)
                faces.append(f)
            table.append((len(verts), listed[id(f)], label))
            verts.append(v)
            poses.append(pose)
    return (verts, faces, np.array(poses).reshape(-1, 3, 4), np.array(table, np.int64).reshape(-1, 3),
            np.array(spans, np.int64).reshape(-1, 2))


def _stack_meshes(meshes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One vertex array, one face array (indices offset) and one label per face (the pyrender backend)."""
    if not meshes:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.uint8)
    for i, (v, f, _, _) in enumerate(meshes):
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError(_refusal(i, zbuffer.BAD_FACES, len(v)))
        if not np.isfinite(v).all():
            raise ValueError(_refusal(i, zbuffer.BAD_VERTS, len(v)))
    meshes = [(v @ pose[:, :3].T + pose[:, 3], f, label) for v, f, label, pose in meshes]
    offsets = np.cumsum([0] + [len(v) for v, _, _ in meshes[:-1]])
    return (np.concatenate([v for v, _, _ in meshes]),
            np.concatenate([f + o for (_, f, _), o in zip(meshes, offsets)]),
            np.concatenate([np.full(len(f), label, np.uint8) for _, f, label in meshes]))


# ---------------------------------------------------------------------------------- pyrender backend

@lru_cache(maxsize=4)
def _pyrender_context(width: int, height: int):
    """One offscreen renderer per image size per process (making a context costs ~100 ms)."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    import pyrender

    return pyrender.OffscreenRenderer(width, height)


def _pyrender_labels(K, width, height, verts, faces, labels) -> np.ndarray:
    import pyrender
    import trimesh

    renderer = _pyrender_context(width, height)
    scene = pyrender.Scene(bg_color=(0, 0, 0, 0))
    seg_colors = {}
    # pyrender wants the OpenGL camera frame (y up, looking down -z): flip y and z of the geometry.
    gl_verts = verts * np.array([1.0, -1.0, -1.0])
    for label in np.unique(labels):
        f = faces[labels == label]
        # SEG mode culls back faces whatever the flags say: submit each face in both windings.
        both = np.concatenate([f, f[:, ::-1]])
        mesh = trimesh.Trimesh(gl_verts, both, process=False)
        node = scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=False))
        seg_colors[node] = np.array([label, label, label], np.uint8)
    # pyrender samples pixel (i, j) at image point (j + 0.5, i + 0.5): shift the principal point by half a pixel.
    camera = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 0.5,
                                       znear=NEAR, zfar=1e4)
    scene.add(camera, pose=np.eye(4))
    color, _ = renderer.render(scene, flags=pyrender.RenderFlags.SEG, seg_node_map=seg_colors)
    return np.ascontiguousarray(color[:, :, 0])
