"""MANO's forward pass as one compiled kernel per batch of hands (numba): what :meth:`hodata.mano.ManoModel.forward`
runs.

The maths is MANO's (see :mod:`hodata.mano`): shape blend, rest joints from ``J_regressor``, Rodrigues per joint,
pose blend from the 15 non-root rotations minus identity, rigid transforms along the kinematic tree, linear blend
skinning. Written as loops over one hand at a time, it costs about a tenth of the same steps as NumPy calls on a
single hand (each call's own overhead, repeated for every joint of the tree, dominated there). Skinning
weights that are zero are skipped: adding an exact zero changes no sum.

The pose blend, the one large product (2,334 x 135), reads its matrix stored as float32 and transposed (one
row per pose feature), accumulating in float64: a build poses one hand per frame between other work, so
the matrix comes from memory each time, and at 1.3 MB instead of 2.5 MB that read costs half (0.25 against
0.45 ms cold on a 2-core cloud VM). float32 keeps MANO's blend shapes to ~7 significant digits, a vertex
error below 1e-7 m (what PyTorch MANO layers, float32 throughout, give up far more of).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def rodrigues(rx, ry, rz, out):
    """Rotation matrix of one axis-angle vector into out (3, 3); exactly the identity below 1e-12 rad."""
    angle = np.sqrt(rx * rx + ry * ry + rz * rz)
    if angle < 1e-12:
        for i in range(3):
            for j in range(3):
                out[i, j] = 1.0 if i == j else 0.0
        return
    x, y, z = rx / angle, ry / angle, rz / angle
    s, c = np.sin(angle), np.cos(angle)
    t = 1.0 - c
    # I + s K + (1 - c) K^2 for K the cross-product matrix of the unit axis (K^2 = a a^T - I)
    out[0, 0] = 1.0 + t * (x * x - 1.0)
    out[0, 1] = -s * z + t * x * y
    out[0, 2] = s * y + t * x * z
    out[1, 0] = s * z + t * x * y
    out[1, 1] = 1.0 + t * (y * y - 1.0)
    out[1, 2] = -s * x + t * y * z
    out[2, 0] = -s * y + t * x * z
    out[2, 1] = s * x + t * y * z
    out[2, 2] = 1.0 + t * (z * z - 1.0)


@njit(cache=True, nogil=True, error_model="numpy")
def _linear_blend(template, dirs, betas, b, out):
    """out[b] = template + dirs @ betas[b], for template (N, 3) and dirs (N * 3, k) flattened per coordinate."""
    for i in range(template.shape[0]):
        for a in range(3):
            acc = template[i, a]
            row = 3 * i + a
            for c in range(betas.shape[1]):
                acc += dirs[row, c] * betas[b, c]
            out[b, i, a] = acc


@njit(cache=True, nogil=True, error_model="numpy")
def shape_blend(betas, v_template, shapedirs, j_template, j_shapedirs, v_shaped, rest):
    """B hand shapes: betas (B, k) -> rest-pose vertices v_shaped (B, 778, 3) and rest joints (B, 16, 3),
    filled in place. shapedirs (778 * 3, k); the joints are linear in the betas too, so they come from the
    regressor applied once to the template (j_template (16, 3)) and to the shape blends (j_shapedirs (48, k)),
    not from a regression over the 778 shaped vertices per hand."""
    for b in range(betas.shape[0]):
        _linear_blend(v_template, shapedirs, betas, b, v_shaped)
        _linear_blend(j_template, j_shapedirs, betas, b, rest)


@njit(cache=True, nogil=True, error_model="numpy")
def skin(pose, v_shaped, rest, posedirs_t, weights, parents, verts, joints):
    """B hands: pose (B, 48) full axis-angle, their shapes v_shaped (B, 778, 3) and rest joints (B, 16, 3)
    (:func:`shape_blend`), the model's posedirs_t (135, 778 * 3) float32 (the transposed pose blend shapes),
    weights (778, 16), parents (16,) with -1 at the root -> verts (B, 778, 3) and the skinned joint positions
    joints (B, 16, 3), both filled in place, without translation."""
    n_verts, n_joints = v_shaped.shape[1], parents.shape[0]
    rots = np.empty((n_joints, 3, 3))
    g_rot = np.empty((n_joints, 3, 3))
    feature = np.empty(9 * (n_joints - 1))
    transform = np.empty((n_joints, 12))  # per joint: rotation (row-major 9) then offset (3)
    pose_offsets = np.empty(3 * n_verts)
    for b in range(pose.shape[0]):
        for j in range(n_joints):
            rodrigues(pose[b, 3 * j], pose[b, 3 * j + 1], pose[b, 3 * j + 2], rots[j])
        for j in range(1, n_joints):
            for a in range(3):
                for c in range(3):
                    feature[9 * (j - 1) + 3 * a + c] = rots[j, a, c] - (1.0 if a == c else 0.0)
        pose_offsets[:] = 0.0
        for f in range(feature.shape[0]):  # feature by feature: the inner loop over rows vectorizes
            weight = feature[f]
            for row in range(3 * n_verts):
                pose_offsets[row] += posedirs_t[f, row] * weight
        # global rotation and position of each joint (parents precede children), then the transform that maps
        # a rest-pose point x to R (x - rest) + position
        for j in range(n_joints):
            p = parents[j]
            if p < 0:
                for a in range(3):
                    for c in range(3):
                        g_rot[j, a, c] = rots[j, a, c]
                    joints[b, j, a] = rest[b, j, a]
            else:
                for a in range(3):
                    for c in range(3):
                        g_rot[j, a, c] = (g_rot[p, a, 0] * rots[j, 0, c] + g_rot[p, a, 1] * rots[j, 1, c]
                                          + g_rot[p, a, 2] * rots[j, 2, c])
                for a in range(3):
                    joints[b, j, a] = joints[b, p, a] + (g_rot[p, a, 0] * (rest[b, j, 0] - rest[b, p, 0])
                                                         + g_rot[p, a, 1] * (rest[b, j, 1] - rest[b, p, 1])
                                                         + g_rot[p, a, 2] * (rest[b, j, 2] - rest[b, p, 2]))
            for a in range(3):
                for c in range(3):
                    transform[j, 3 * a + c] = g_rot[j, a, c]
                transform[j, 9 + a] = joints[b, j, a] - (g_rot[j, a, 0] * rest[b, j, 0]
                                                        + g_rot[j, a, 1] * rest[b, j, 1]
                                                        + g_rot[j, a, 2] * rest[b, j, 2])
        blend = np.empty(12)
        for v in range(n_verts):
            blend[:] = 0.0
            for j in range(n_joints):
                w = weights[v, j]
                if w != 0.0:
                    for e in range(12):
                        blend[e] += w * transform[j, e]
            x = v_shaped[b, v, 0] + pose_offsets[3 * v]
            y = v_shaped[b, v, 1] + pose_offsets[3 * v + 1]
            z = v_shaped[b, v, 2] + pose_offsets[3 * v + 2]
            for a in range(3):
                verts[b, v, a] = blend[3 * a] * x + blend[3 * a + 1] * y + blend[3 * a + 2] * z + blend[9 + a]


@njit(cache=True, nogil=True, error_model="numpy")
def rotations(rotvecs, out):
    """Rotation matrices of (N, 3) axis-angle vectors into out (N, 3, 3)."""
    for i in range(rotvecs.shape[0]):
        rodrigues(rotvecs[i, 0], rotvecs[i, 1], rotvecs[i, 2], out[i])
