"""The z-buffer behind :func:`hodata.render.render_labels`: numba kernels and the per-thread canvas they draw on.

The pixel rules are documented in :mod:`hodata.render`; this module only makes them fast. Where the time goes
on a 640x480 frame with a MANO hand and a YCB-sized object is per triangle set up and per row of pixels
visited, not per pixel, so the kernels:

- keep a canvas (1/z and label buffers) per thread and image size across calls and clear only the box the
  previous frame touched;
- drop, in one branch-free pass, faces of zero area after snapping and faces whose box holds no pixel centre
  (outside the image or between centres), and sort the rest by their winding in the image;
- draw the faces that wind like a surface seen from outside (negative area in the image) first, then test each
  of the others against the farthest 1/z of every 4x4 tile under its box and skip it when it lies behind all
  of them (what MANO's and closed meshes' far sides do), so the z-buffer result is unchanged;
- test and write 8 pixels of a row at once (an LLVM vector intrinsic: AVX-512 / AVX2 where the CPU has them);
- visit, for a triangle wider than two such steps, only each row's span of it (from its edge equations, a
  pixel of slack each side) rather than its whole box, about twice the pixels a large triangle covers.

None of this changes a pixel: drawing order inside one mesh cannot change its labels, and the tile test
skips only triangles that cannot win a depth test.
"""

from __future__ import annotations

import threading

import numpy as np
from llvmlite import ir
from numba import njit, prange, types, uint64
from numba.extending import intrinsic

SNAP = 256.0  # corners are snapped to 1/SNAP pixel
HALF_UNIT = 0.5 / (SNAP * SNAP)  # edge functions of snapped corners are multiples of 1/SNAP^2
TILE = 4  # side of the depth tiles the far-side test uses
LANES = 8  # pixels tested at once
# Status codes of a mesh the kernel refused (the caller names the mesh).
OK, BAD_FACES, BAD_VERTS = 0, 1, 2


# ------------------------------------------------------------------------------- 8 pixels of one row

def _splat(builder, value, vty):
    undef = ir.Constant(vty, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count))


@intrinsic
def _row8(typingctx, depth, labels, at, x0, xmax, dx0, r0, t0, dx1, r1, t1, dx2, r2, t2, a_iz, row_iz, label):
    """Pixels x0 .. x0 + 7 of one row (buffer index ``at`` is pixel x0): each one inside the triangle
    (edge k: dx_k * x + r_k >= t_k), at most ``xmax``, and nearer (1/z = a_iz * x + row_iz, as float32) than
    the depth buffer takes the label. All 8 lanes are loaded and stored back (unchanged where not taken)."""
    f8 = types.float64
    sig = types.void(depth, labels, types.intp, f8, f8, f8, f8, f8, f8, f8, f8, f8, f8, f8, f8, f8, types.uint8)

    def codegen(context, builder, signature, args):
        (depth, labels, at, x0, xmax, dx0, r0, t0, dx1, r1, t1, dx2, r2, t2, a_iz, row_iz, label) = args
        dptr = context.make_array(signature.args[0])(context, builder, depth).data
        lptr = context.make_array(signature.args[1])(context, builder, labels).data
        dvec_t = ir.VectorType(ir.DoubleType(), LANES)
        fvec_t = ir.VectorType(ir.FloatType(), LANES)
        bvec_t = ir.VectorType(ir.IntType(8), LANES)
        xs = builder.fadd(_splat(builder, x0, dvec_t), ir.Constant(dvec_t, [float(i) for i in range(LANES)]))

        def inside(dx, r, t):
            e = builder.fadd(builder.fmul(_splat(builder, dx, dvec_t), xs), _splat(builder, r, dvec_t))
            return builder.fcmp_ordered(">=", e, _splat(builder, t, dvec_t))

        take = builder.and_(builder.and_(inside(dx0, r0, t0), inside(dx1, r1, t1)), inside(dx2, r2, t2))
        take = builder.and_(take, builder.fcmp_ordered("<=", xs, _splat(builder, xmax, dvec_t)))
        iz = builder.fadd(builder.fmul(_splat(builder, a_iz, dvec_t), xs), _splat(builder, row_iz, dvec_t))
        iz = builder.fptrunc(iz, fvec_t)
        dslot = builder.bitcast(builder.gep(dptr, [at]), fvec_t.as_pointer())
        old = builder.load(dslot, align=4)
        take = builder.and_(take, builder.fcmp_ordered(">", iz, old))
        builder.store(builder.select(take, iz, old), dslot, align=4)
        lslot = builder.bitcast(builder.gep(lptr, [at]), bvec_t.as_pointer())
        builder.store(builder.select(take, _splat(builder, label, bvec_t), builder.load(lslot, align=1)), lslot,
                      align=1)
        return context.get_dummy_value()

    return sig, codegen


# ----------------------------------------------------------------------------------------- the kernels

@njit(cache=True, nogil=True, error_model="numpy")
def _snap(value):
    return np.rint(value * SNAP) * (1.0 / SNAP)


@njit(cache=True, nogil=True, error_model="numpy")
def _project(verts, pose, K, near, proj, front):
    """Every vertex moved by pose (3, 4) into the camera frame (proj[:, 3:6]), its snapped image position and 1/z
    (proj[:, 0:3]); front[i]: in front of the near plane. False when a vertex is not finite."""
    fx, sk, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    finite = True
    for i in range(verts.shape[0]):
        px, py, pz = verts[i, 0], verts[i, 1], verts[i, 2]
        x = pose[0, 0] * px + pose[0, 1] * py + pose[0, 2] * pz + pose[0, 3]
        y = pose[1, 0] * px + pose[1, 1] * py + pose[1, 2] * pz + pose[1, 3]
        z = pose[2, 0] * px + pose[2, 1] * py + pose[2, 2] * pz + pose[2, 3]
        finite &= np.isfinite(x + y + z)
        front[i] = z > near
        iz = 1.0 / z
        proj[i, 0] = _snap((fx * x + sk * y) * iz + cx)
        proj[i, 1] = _snap(fy * y * iz + cy)
        proj[i, 2] = iz
        proj[i, 3], proj[i, 4], proj[i, 5] = x, y, z
    return finite


@njit(cache=True, nogil=True, error_model="numpy")
def _faces_in_range(faces, n):
    flat = faces.ravel()
    lo, hi = n, -1
    for i in range(flat.shape[0]):
        lo = min(lo, flat[i])
        hi = max(hi, flat[i])
    return flat.shape[0] == 0 or (lo >= 0 and hi < n)


@njit(cache=True, nogil=True, error_model="numpy")
def _sort_faces(faces, proj, front, width, height, lists):
    """Split faces (branch-free) into lists[0]: wound clockwise in the image (seen from outside for the usual
    outward winding), lists[1]: counter-clockwise, lists[2]: crossing the near plane; drop faces of zero area
    and faces whose box holds no pixel centre."""
    n_cw = n_ccw = n_clip = 0
    x_last, y_last = width - 1.0, height - 1.0
    for t in range(faces.shape[0]):
        # unsigned indices: no negative-index wraparound in the gathers (_faces_in_range checked them)
        a, b, c = uint64(faces[t, 0]), uint64(faces[t, 1]), uint64(faces[t, 2])
        whole = front[a] & front[b] & front[c]
        u0, v0, u1, v1, u2, v2 = proj[a, 0], proj[a, 1], proj[b, 0], proj[b, 1], proj[c, 0], proj[c, 1]
        area = (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0)
        x_lo = max(0.0, np.ceil(min(u0, u1, u2)))
        x_hi = min(x_last, np.floor(max(u0, u1, u2)))
        y_lo = max(0.0, np.ceil(min(v0, v1, v2)))
        y_hi = min(y_last, np.floor(max(v0, v1, v2)))
        live = whole & (x_lo <= x_hi) & (y_lo <= y_hi)
        lists[0, uint64(n_cw)] = t
        n_cw += np.int64(live & (area < 0.0))
        lists[1, uint64(n_ccw)] = t
        n_ccw += np.int64(live & (area > 0.0))
        lists[2, uint64(n_clip)] = t
        n_clip += np.int64(not whole)
    return n_cw, n_ccw, n_clip


@njit(cache=True, nogil=True, error_model="numpy")
def _clip(proj, face, near, K, poly, tri):
    """Clip one face (camera-frame corners in proj[:, 3:6]) against z = near (Sutherland-Hodgman, one plane);
    write the surviving polygon's fan as projected triangles (u, v, 1/z per corner) into tri; return how many
    (0, 1 or 2)."""
    m = 0
    for k in range(3):
        p, q = face[k], face[(k + 1) % 3]
        pz, qz = proj[p, 5], proj[q, 5]
        if pz > near:
            poly[m, 0], poly[m, 1], poly[m, 2] = proj[p, 3], proj[p, 4], pz
            m += 1
        if (pz > near) != (qz > near):
            s = (near - pz) / (qz - pz)
            poly[m, 0] = proj[p, 3] + s * (proj[q, 3] - proj[p, 3])
            poly[m, 1] = proj[p, 4] + s * (proj[q, 4] - proj[p, 4])
            poly[m, 2] = near
            m += 1
    if m < 3:
        return 0
    for k in range(m):
        x, y, z = poly[k, 0], poly[k, 1], poly[k, 2]
        poly[k, 0] = _snap((K[0, 0] * x + K[0, 1] * y) / z + K[0, 2])
        poly[k, 1] = _snap(K[1, 1] * y / z + K[1, 2])
        poly[k, 2] = 1.0 / z
    for k in range(m - 2):
        for j in range(3):
            c = 0 if j == 0 else k + j
            tri[k, 3 * j], tri[k, 3 * j + 1], tri[k, 3 * j + 2] = poly[c, 0], poly[c, 1], poly[c, 2]
    return m - 2


@njit(cache=True, nogil=True, error_model="numpy")
def _span(dx, r, t, x_lo, x_hi):
    """The columns of one row that can pass edge test dx * x + r >= t, as (first, last) within x_lo..x_hi
    (first > last: none). One pixel of slack each side absorbs the division's rounding; the exact test is
    still made per pixel, so the span only saves visiting pixels that cannot pass."""
    if dx == 0.0:
        return (x_lo, x_hi) if r >= t else (x_hi + 1, x_hi)
    at = min(max((t - r) / dx, x_lo - 2.0), x_hi + 2.0)  # clamped before it becomes an int
    if dx > 0.0:
        return max(x_lo, int(np.floor(at)) - 1), x_hi
    return x_lo, min(x_hi, int(np.ceil(at)) + 1)


@njit(cache=True, nogil=True, error_model="numpy")
def _fill_spans(depth, labels, stride, x_lo, x_hi, y_lo, y_hi, dx0, dy0, c0, t0, dx1, dy1, c1, t1, dx2, dy2, c2,
                t2, b_iz, c_iz, a_iz, label):
    """Draw a triangle wider than two 8-pixel steps row by row over each row's span (:func:`_span`) instead
    of its whole box, which for a large triangle is about twice the pixels it covers."""
    for y in range(y_lo, y_hi + 1):
        yf = float(y)
        r0, r1, r2 = dy0 * yf + c0, dy1 * yf + c1, dy2 * yf + c2
        row_iz = b_iz * yf + c_iz
        x0, x1 = _span(dx0, r0, t0, x_lo, x_hi)
        x0, x1 = _span(dx1, r1, t1, x0, x1)
        x0, x1 = _span(dx2, r2, t2, x0, x1)
        x_last = float(x1)
        for x in range(x0, x1 + 1, LANES):
            _row8(depth, labels, y * stride + x, float(x), x_last, dx0, r0, t0, dx1, r1, t1, dx2, r2, t2,
                  a_iz, row_iz, label)


@njit(cache=True, nogil=True, error_model="numpy")
def _raster(faces, todo, n_todo, clipped, label, K, near, proj, depth, labels, stride, width, height,
            tiles, far_test, box, poly, tri):
    """Draw the faces todo[:n_todo]: clipped ones through _clip, the others from proj. With far_test, a
    triangle lying behind the farthest 1/z of every tile under its box is skipped. Grows box (x0, x1, y0, y1)
    to what was drawn."""
    tiles_per_row = stride // TILE
    bx0, bx1, by0, by1 = box[0], box[1], box[2], box[3]
    for it in range(n_todo):
        t = todo[it]
        a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
        count = _clip(proj, faces[t], near, K, poly, tri) if clipped else 1
        for k in range(count):
            if clipped:
                u0, v0, iz0, u1, v1, iz1, u2, v2, iz2 = (tri[k, 0], tri[k, 1], tri[k, 2], tri[k, 3], tri[k, 4],
                                                         tri[k, 5], tri[k, 6], tri[k, 7], tri[k, 8])
            else:
                u0, v0, iz0 = proj[a, 0], proj[a, 1], proj[a, 2]
                u1, v1, iz1 = proj[b, 0], proj[b, 1], proj[b, 2]
                u2, v2, iz2 = proj[c, 0], proj[c, 1], proj[c, 2]
            area = (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0)
            if area == 0.0:
                continue
            if area < 0.0:  # either winding is drawn: reorder to a positive one
                u1, v1, iz1, u2, v2, iz2 = u2, v2, iz2, u1, v1, iz1
                area = -area
            x_lo = max(0, int(np.ceil(min(u0, u1, u2))))
            x_hi = min(width - 1, int(np.floor(max(u0, u1, u2))))
            y_lo = max(0, int(np.ceil(min(v0, v1, v2))))
            y_hi = min(height - 1, int(np.floor(max(v0, v1, v2))))
            if x_lo > x_hi or y_lo > y_hi:
                continue
            # Edge k (opposite corner k): E_k(x, y) = dx_k * x + dy_k * y + c_k, exact on the snap grid. A pixel
            # centre exactly on an edge belongs to the triangle that owns the edge (dv < 0, or dv == 0 and du > 0
            # along the edge): of two triangles sharing it exactly one does.
            dx0, dy0, c0 = v1 - v2, u2 - u1, u1 * v2 - v1 * u2
            dx1, dy1, c1 = v2 - v0, u0 - u2, u2 * v0 - v2 * u0
            dx2, dy2, c2 = v0 - v1, u1 - u0, u0 * v1 - v0 * u1
            # 1/z is a plane in the image (exact for planar triangles): (A x + B y + C) / area
            A = dx0 * iz0 + dx1 * iz1 + dx2 * iz2
            B = dy0 * iz0 + dy1 * iz1 + dy2 * iz2
            C = c0 * iz0 + c1 * iz1 + c2 * iz2
            if far_test:
                # Skipped when the nearest 1/z any of its pixels can get (the largest corner's, with room for
                # rounding in the plane) is below the farthest 1/z of every tile under its box; compared
                # multiplied by area, so hidden triangles cost no division.
                top = max(iz0, iz1, iz2) * (1.0 + 1e-7) * area + 1e-15 * (abs(A) * width + abs(B) * height + abs(C))
                hidden = True
                for ty in range(y_lo // TILE, y_hi // TILE + 1):
                    for tx in range(x_lo // TILE, x_hi // TILE + 1):
                        if tiles[ty * tiles_per_row + tx] * area <= top:
                            hidden = False
                            break
                    if not hidden:
                        break
                if hidden:
                    continue
            inv_area = 1.0 / area
            a_iz, b_iz, c_iz = A * inv_area, B * inv_area, C * inv_area
            bx0, bx1, by0, by1 = min(bx0, x_lo), max(bx1, x_hi), min(by0, y_lo), max(by1, y_hi)
            t0 = 0.0 if (dx0 > 0.0 or (dx0 == 0.0 and dy0 > 0.0)) else HALF_UNIT
            t1 = 0.0 if (dx1 > 0.0 or (dx1 == 0.0 and dy1 > 0.0)) else HALF_UNIT
            t2 = 0.0 if (dx2 > 0.0 or (dx2 == 0.0 and dy2 > 0.0)) else HALF_UNIT
            if x_hi - x_lo >= 2 * LANES:  # wide: only each row's span of the triangle
                _fill_spans(depth, labels, stride, x_lo, x_hi, y_lo, y_hi, dx0, dy0, c0, t0, dx1, dy1, c1, t1,
                            dx2, dy2, c2, t2, b_iz, c_iz, a_iz, label)
                continue
            x_last = float(x_hi)
            for y in range(y_lo, y_hi + 1):
                yf = float(y)
                r0, r1, r2 = dy0 * yf + c0, dy1 * yf + c1, dy2 * yf + c2
                row_iz = b_iz * yf + c_iz
                for x in range(x_lo, x_hi + 1, LANES):
                    _row8(depth, labels, y * stride + x, float(x), x_last, dx0, r0, t0, dx1, r1, t1, dx2, r2, t2,
                          a_iz, row_iz, label)
    box[0], box[1], box[2], box[3] = bx0, bx1, by0, by1


@njit(cache=True, nogil=True, error_model="numpy")
def _update_tiles(depth, stride, tiles, box):
    """Farthest (least) 1/z of every tile that meets box (padding pixels hold +inf)."""
    if box[1] < box[0]:
        return
    tiles_per_row = stride // TILE
    for ty in range(box[2] // TILE, box[3] // TILE + 1):
        base = ty * TILE * stride
        for tx in range(box[0] // TILE, box[1] // TILE + 1):
            m = np.float32(np.inf)
            for r in range(TILE):
                for j in range(TILE):
                    m = min(m, depth[base + r * stride + tx * TILE + j])
            tiles[ty * tiles_per_row + tx] = m


@njit(cache=True, nogil=True, error_model="numpy")
def draw_mesh(verts, faces, pose, label, K, near, depth, labels, stride, width, height, tiles, box, first,
              proj, front, lists, poly, tri):
    """Draw one mesh (its vertices moved by pose (3, 4) into the camera frame) onto the canvas; returns OK,
    BAD_FACES or BAD_VERTS (then nothing was drawn)."""
    n = verts.shape[0]
    if not _faces_in_range(faces, n):
        return BAD_FACES
    if not _project(verts, pose, K, near, proj[:n], front[:n]):
        return BAD_VERTS
    n_cw, n_ccw, n_clip = _sort_faces(faces, proj, front, width, height, lists)
    mesh_box = np.array([width, -1, height, -1])
    _raster(faces, lists[2], n_clip, True, label, K, near, proj, depth, labels, stride, width, height,
            tiles, False, mesh_box, poly, tri)
    _raster(faces, lists[0], n_cw, False, label, K, near, proj, depth, labels, stride, width, height,
            tiles, not first, mesh_box, poly, tri)
    _update_tiles(depth, stride, tiles, mesh_box)
    _raster(faces, lists[1], n_ccw, False, label, K, near, proj, depth, labels, stride, width, height,
            tiles, True, mesh_box, poly, tri)
    box[0], box[1] = min(box[0], mesh_box[0]), max(box[1], mesh_box[1])
    box[2], box[3] = min(box[2], mesh_box[2]), max(box[3], mesh_box[3])
    return OK


@njit(cache=True, nogil=True, error_model="numpy")
def clear(depth, labels, stride, tiles, box, width, height):
    """Reset what the last frame touched (box) to background and forget it."""
    if box[1] >= box[0]:
        for y in range(box[2], box[3] + 1):
            row = y * stride
            depth[row + box[0]:row + box[1] + 1] = 0.0
            labels[row + box[0]:row + box[1] + 1] = 0
        tiles_per_row = stride // TILE
        for ty in range(box[2] // TILE, box[3] // TILE + 1):
            tiles[ty * tiles_per_row + box[0] // TILE:ty * tiles_per_row + box[1] // TILE + 1] = 0.0
    box[0], box[1], box[2], box[3] = width, -1, height, -1


@njit(cache=True, nogil=True, error_model="numpy")
def copy_out(labels, stride, box, out):
    """The canvas into out (height, width): the drawn box copied, background everywhere else (out's old
    contents do not matter)."""
    height, width = out.shape
    if box[1] < box[0]:
        out[:, :] = 0
        return
    out[:box[2], :] = 0
    out[box[3] + 1:, :] = 0
    for y in range(box[2], box[3] + 1):
        out[y, :box[0]] = 0
        out[y, box[0]:box[1] + 1] = labels[y * stride + box[0]:y * stride + box[1] + 1]
        out[y, box[1] + 1:] = 0


# ------------------------------------------------------------------------------------------- canvases

@njit(cache=True, nogil=True, error_model="numpy")
def canvas_arrays(width, height):
    """depth (1/z, float32) and labels of a width x height image, rows of ``stride`` pixels padded to whole
    tiles, plus LANES spare pixels at the end (padding: depth +inf, never drawn); the tiles' farthest 1/z;
    the touched box (x0, x1, y0, y1), empty."""
    stride = -(-width // TILE) * TILE
    rows = -(-height // TILE) * TILE
    depth = np.full(stride * rows + LANES, np.inf, np.float32)
    for y in range(height):
        depth[y * stride:y * stride + width] = 0.0
    labels = np.zeros(stride * rows + LANES, np.uint8)
    tiles = np.zeros((rows // TILE) * (stride // TILE), np.float32)
    return depth, labels, stride, tiles, np.array([width, -1, height, -1])


class Canvas:
    """One thread's reusable buffers for one image size, and scratch space that grows with the meshes."""

    _local = threading.local()

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.depth, self.labels, self.stride, self.tiles, self.box = canvas_arrays(width, height)
        self.proj, self.front = np.empty((0, 6)), np.empty(0, np.bool_)
        self.lists = np.empty((3, 0), np.int32)
        self.poly, self.tri = np.empty((4, 3)), np.empty((2, 9))

    @classmethod
    def for_thread(cls, width: int, height: int) -> "Canvas":
        """This thread's canvas of that size (the four most recently used sizes are kept)."""
        canvases = getattr(cls._local, "canvases", None)
        if canvases is None:
            canvases = cls._local.canvases = {}
        canvas = canvases.pop((width, height), None) or cls(width, height)
        canvases[(width, height)] = canvas
        while len(canvases) > 4:
            canvases.pop(next(iter(canvases)))
        return canvas

    def fit(self, n_verts: int, n_faces: int) -> None:
        if self.proj.shape[0] < n_verts:
            self.proj, self.front = np.empty((n_verts, 6)), np.empty(n_verts, np.bool_)
        if self.lists.shape[1] < n_faces:
            self.lists = np.empty((3, n_faces), np.int32)

    def begin(self) -> None:
        clear(self.depth, self.labels, self.stride, self.tiles, self.box, self.width, self.height)

    def draw(self, verts, faces, pose, label, K, near, first) -> int:
        return draw_mesh(verts, faces, pose, np.uint8(label), K, near, self.depth, self.labels, self.stride,
                         self.width, self.height, self.tiles, self.box, first, self.proj, self.front, self.lists,
                         self.poly, self.tri)

    def copy_out(self, out) -> None:
        copy_out(self.labels, self.stride, self.box, out)


# ------------------------------------------------------------------------------------------ many frames

@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def render_batch(Ks, verts, faces, poses, meshes, frames, width, height, near, n_chunks, out):
    """Frames split into n_chunks runs of consecutive frames, one canvas per run, runs in parallel.
    verts, faces: typed lists of arrays, poses (M, 3, 4); meshes rows: index into verts, index into faces,
    label; frames rows: first mesh, end mesh. Returns per frame -1, or (mesh index within the frame) * 4 + status."""
    n_frames = frames.shape[0]
    status = np.full(n_frames, -1, np.int64)
    per = (n_frames + n_chunks - 1) // n_chunks
    max_v = max_f = 1
    for m in range(meshes.shape[0]):
        max_v = max(max_v, verts[meshes[m, 0]].shape[0])
        max_f = max(max_f, faces[meshes[m, 1]].shape[0])
    for chunk in prange(n_chunks):
        lo, hi = chunk * per, min(n_frames, (chunk + 1) * per)
        if lo >= hi:
            continue
        depth, labels, stride, tiles, box = canvas_arrays(width, height)
        proj, front = np.empty((max_v, 6)), np.empty(max_v, np.bool_)
        lists = np.empty((3, max_f), np.int32)
        poly, tri = np.empty((4, 3)), np.empty((2, 9))
        for b in range(lo, hi):
            clear(depth, labels, stride, tiles, box, width, height)
            for m in range(frames[b, 0], frames[b, 1]):
                code = draw_mesh(verts[meshes[m, 0]], faces[meshes[m, 1]], poses[m], np.uint8(meshes[m, 2]), Ks[b],
                                 near, depth, labels, stride, width, height, tiles, box, m == frames[b, 0], proj,
                                 front, lists, poly, tri)
                if code != OK:
                    status[b] = (m - frames[b, 0]) * 4 + code
                    break
            copy_out(labels, stride, box, out[b])
    return status
