"""Label-map rendering: z-buffer rasterizer (numba) and a pyrender cross-check backend.

API FIXED BY THE LEAD (HO3D/FreiHAND sources call these; implement the bodies, keep the names).
Camera convention: OpenCV (x right, y down, z forward; points with z > 0 are in front), pixel centres at
integer coordinates: vertex v projects to u = fx*x/z + cx, v = fy*y/z + cy; pixel (row i, col j) is covered
when its centre (j, i) is inside the projected triangle. Background 0; the nearest surface's label wins.

Both backends draw every face whatever its winding (no back-face culling): MANO is open at the wrist, so its
inside is visible there and must still read as hand. Corners are snapped to 1/256 pixel (as GPUs do) so a
pixel centre exactly on an edge is decided by a fixed tie rule: of two triangles sharing that edge exactly one
takes it (no double or missing pixels along a mesh's seams). Depth is compared as 1/z interpolated linearly
in the image (exact for planar triangles); on an exact depth tie the mesh listed first keeps the pixel.
The pyrender backend ignores K's skew term (K[0, 1]); HO3D and FreiHAND intrinsics have none.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from numba import njit

Mesh = tuple  # (vertices (N, 3) float, faces (F, 3) int, label int 1..254)

NEAR = 1e-3  # metres: the clipping plane z = NEAR; geometry closer than 1 mm to the camera is cut away
BACKENDS = ("zbuffer", "pyrender")


def render_labels(K, size, meshes, *, backend: str = "zbuffer") -> np.ndarray:
    """K (3, 3), size (width, height), meshes [(verts, faces, label), ...] in the camera frame ->
    (height, width) uint8 label map. backend "zbuffer" (default, fast) or "pyrender" (EGL cross-check).
    Triangles partly behind the camera (z <= near) are clipped, not dropped or wrapped."""
    width, height = _check_size(size)
    K = _check_K(K)
    verts, faces, labels = _stack_meshes(meshes)
    if backend == "zbuffer":
        out = np.zeros((height, width), np.uint8)
        inv_depth = np.zeros((height, width), np.float64)  # 0 = nothing drawn (1/z of infinity)
        if len(faces):
            _raster_mesh(verts, faces, labels, K, NEAR, out, inv_depth)
        return out
    if backend == "pyrender":
        return _pyrender_labels(K, width, height, verts, faces, labels)
    raise ValueError(f"unknown render backend {backend!r}; known: {', '.join(BACKENDS)}")


def render_labels_batch(Ks, size, frames, *, backend: str = "zbuffer") -> np.ndarray:
    """Many frames: Ks (B, 3, 3) (or one K), frames: list of mesh lists -> (B, height, width) uint8."""
    width, height = _check_size(size)
    Ks = np.asarray(Ks, dtype=np.float64)
    if Ks.shape == (3, 3):
        Ks = np.broadcast_to(Ks, (len(frames), 3, 3))
    if Ks.shape != (len(frames), 3, 3):
        raise ValueError(f"Ks must be (3, 3) or ({len(frames)}, 3, 3), got {Ks.shape}")
    out = np.zeros((len(frames), height, width), np.uint8)
    for b, meshes in enumerate(frames):
        out[b] = render_labels(Ks[b], (width, height), meshes, backend=backend)
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
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ValueError(f"K must be a finite 3x3 matrix, got shape {K.shape}")
    if not np.allclose(K[2], (0.0, 0.0, 1.0)):
        raise ValueError(f"K's last row must be [0, 0, 1], got {K[2].tolist()}")
    return K


def _stack_meshes(meshes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One vertex array, one face array (indices offset) and one label per face."""
    verts, faces, labels, offset = [], [], [], 0
    for i, (v, f, label) in enumerate(meshes):
        v = np.asarray(v, dtype=np.float64).reshape(-1, 3)
        f = np.asarray(f, dtype=np.int64).reshape(-1, 3)
        if not 1 <= int(label) <= 254:
            raise ValueError(f"mesh {i}: label must be 1..254 (0 is background, 255 ignore), got {label}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError(f"mesh {i}: faces index vertices outside 0..{len(v) - 1}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"mesh {i}: vertices contain NaN or inf")
        verts.append(v)
        faces.append(f + offset)
        labels.append(np.full(len(f), int(label), np.uint8))
        offset += len(v)
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.uint8)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(labels)


# ---------------------------------------------------------------------------------- z-buffer (numba)

@njit(cache=True, nogil=True)
def _owns_edge(du, dv):
    """Tie rule for a pixel centre exactly on an edge (direction du, dv of a positively wound triangle):
    exactly one of two triangles sharing the edge takes it (the edge runs opposite ways in the two)."""
    return dv < 0.0 or (dv == 0.0 and du > 0.0)


@njit(cache=True, nogil=True)
def _raster_triangle(u0, v0, iz0, u1, v1, iz1, u2, v2, iz2, label, out, inv_depth):
    """Fill one projected triangle (image coords, 1/z per corner) into the label and 1/z buffers."""
    # Snap corners to 1/256 pixel (as GPUs do) so edge functions at pixel centres are exact:
    # a centre on an edge is then decided by the tie rule, not by rounding noise.
    u0, v0 = np.round(u0 * 256.0) / 256.0, np.round(v0 * 256.0) / 256.0
    u1, v1 = np.round(u1 * 256.0) / 256.0, np.round(v1 * 256.0) / 256.0
    u2, v2 = np.round(u2 * 256.0) / 256.0, np.round(v2 * 256.0) / 256.0
    area = (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0)
    if area == 0.0:
        return
    if area < 0.0:  # either winding is drawn: reorder to a positive one
        u1, v1, iz1, u2, v2, iz2 = u2, v2, iz2, u1, v1, iz1
        area = -area
    height, width = out.shape
    x_lo = max(0, int(np.ceil(min(u0, u1, u2))))
    x_hi = min(width - 1, int(np.floor(max(u0, u1, u2))))
    y_lo = max(0, int(np.ceil(min(v0, v1, v2))))
    y_hi = min(height - 1, int(np.floor(max(v0, v1, v2))))
    if x_lo > x_hi or y_lo > y_hi:
        return
    own0 = _owns_edge(u2 - u1, v2 - v1)  # edge opposite corner 0
    own1 = _owns_edge(u0 - u2, v0 - v2)
    own2 = _owns_edge(u1 - u0, v1 - v0)
    # Edge function k at pixel (x, y) is dx_k * x + dy_k * y + c_k (exact: corners are on a 1/256 grid).
    dx0, dy0, c0 = v1 - v2, u2 - u1, u1 * v2 - v1 * u2
    dx1, dy1, c1 = v2 - v0, u0 - u2, u2 * v0 - v2 * u0
    dx2, dy2, c2 = v0 - v1, u1 - u0, u0 * v1 - v0 * u1
    inv_area = 1.0 / area
    for y in range(y_lo, y_hi + 1):
        r0, r1, r2 = dy0 * y + c0, dy1 * y + c1, dy2 * y + c2
        # The row's inside is one interval: bound it from each edge, then test exactly one pixel beyond.
        left, right = float(x_lo), float(x_hi)
        if x_hi - x_lo > 8:  # small boxes: testing every pixel is cheaper than three divisions
            left, right = _row_bounds(dx0, r0, left, right)
            left, right = _row_bounds(dx1, r1, left, right)
            left, right = _row_bounds(dx2, r2, left, right)
            if left > right:
                continue
        for x in range(max(x_lo, int(left)), min(x_hi, int(right)) + 1):
            e0, e1, e2 = dx0 * x + r0, dx1 * x + r1, dx2 * x + r2
            if e0 < 0.0 or e1 < 0.0 or e2 < 0.0:
                continue
            if (e0 == 0.0 and not own0) or (e1 == 0.0 and not own1) or (e2 == 0.0 and not own2):
                continue
            iz = (e0 * iz0 + e1 * iz1 + e2 * iz2) * inv_area
            if iz > inv_depth[y, x]:
                inv_depth[y, x] = iz
                out[y, x] = label


@njit(cache=True, nogil=True)
def _row_bounds(dx, r, left, right):
    """Narrow [left, right] to where dx * x + r >= 0, padded by a pixel against rounding in the division."""
    if dx > 0.0:
        left = max(left, np.floor(-r / dx) - 1.0)
    elif dx < 0.0:
        right = min(right, np.ceil(-r / dx) + 1.0)
    elif r < 0.0:
        right = left - 1.0
    return left, right


@njit(cache=True, nogil=True)
def _project(p, K):
    z = p[2]
    u = (K[0, 0] * p[0] + K[0, 1] * p[1]) / z + K[0, 2]
    v = (K[1, 1] * p[1]) / z + K[1, 2]
    return u, v, 1.0 / z


@njit(cache=True, nogil=True)
def _raster_mesh(verts, faces, labels, K, near, out, inv_depth):
    n = verts.shape[0]
    uv = np.empty((n, 3))
    for i in range(n):
        z = verts[i, 2]
        if z > near:
            uv[i, 0], uv[i, 1], uv[i, 2] = _project(verts[i], K)
    poly = np.empty((4, 3))
    for t in range(faces.shape[0]):
        a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
        if verts[a, 2] > near and verts[b, 2] > near and verts[c, 2] > near:
            _raster_triangle(uv[a, 0], uv[a, 1], uv[a, 2], uv[b, 0], uv[b, 1], uv[b, 2],
                             uv[c, 0], uv[c, 1], uv[c, 2], labels[t], out, inv_depth)
            continue
        # Clip against z = near (Sutherland-Hodgman, one plane): 0, 3 or 4 corners survive.
        m = 0
        for k in range(3):
            p = verts[faces[t, k]]
            q = verts[faces[t, (k + 1) % 3]]
            if p[2] > near:
                poly[m] = p
                m += 1
            if (p[2] > near) != (q[2] > near):
                s = (near - p[2]) / (q[2] - p[2])
                poly[m] = p + s * (q - p)
                poly[m, 2] = near
                m += 1
        if m < 3:
            continue
        u0, v0, iz0 = _project(poly[0], K)
        for k in range(1, m - 1):  # fan
            u1, v1, iz1 = _project(poly[k], K)
            u2, v2, iz2 = _project(poly[k + 1], K)
            _raster_triangle(u0, v0, iz0, u1, v1, iz1, u2, v2, iz2, labels[t], out, inv_depth)


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
