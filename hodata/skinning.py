"""MANO's forward pass as one compiled kernel per batch of hands (numba): what :meth:`hodata.mano.ManoModel.forward`
runs.

The maths is MANO's (see :mod:`hodata.mano`): shape blend, rest joints from ``J_regressor``, Rodrigues per joint,
pose blend from the 15 non-root rotations minus identity, rigid transforms along the kinematic tree, linear blend
skinning. Written as loops over one hand at a time, it costs about a tenth of the same steps as NumPy calls on a
single hand (each call's own overhead, repeated for every joint of the tree, dominated there). The pose blend,
the one large product (2,334 x 135), stays a BLAS matrix-vector product. Skinning weights that are zero are
skipped: adding an exact zero changes no sum.
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
def skin(pose, betas, v_template, shapedirs, posedirs, j_regressor, weights, parents, verts, joints):
    """B hands: pose (B, 48) full axis-angle, betas (B, k), the model's arrays (shapedirs (778 * 3, k),
    posedirs (778 * 3, 135), j_regressor (16, 778), weights (778, 16), parents (16,) with -1 at the root) ->
    verts (B, 778, 3) and the skinned joint positions joints (B, 16, 3), both filled in place, without
    translation."""
    n_verts, n_joints, k = v_template.shape[0], parents.shape[0], betas.shape[1]
    v_shaped = np.empty((n_verts, 3))
    rest = np.empty((n_joints, 3))
    rots = np.empty((n_joints, 3, 3))
    g_rot = np.empty((n_joints, 3, 3))
    feature = np.empty(9 * (n_joints - 1))
    transform = np.empty((n_joints, 12))  # per joint: rotation (row-major 9) then offset (3)
    for b in range(pose.shape[0]):
        for v in range(n_verts):
            for a in range(3):
                acc = v_template[v, a]
                row = 3 * v + a
                for c in range(k):
                    acc += shapedirs[row, c] * betas[b, c]
                v_shaped[v, a] = acc
        for j in range(n_joints):
            for a in range(3):
                acc = 0.0
                for v in range(n_verts):
                    acc += j_regressor[j, v] * v_shaped[v, a]
                rest[j, a] = acc
            rodrigues(pose[b, 3 * j], pose[b, 3 * j + 1], pose[b, 3 * j + 2], rots[j])
        for j in range(1, n_joints):
            for a in range(3):
                for c in range(3):
                    feature[9 * (j - 1) + 3 * a + c] = rots[j, a, c] - (1.0 if a == c else 0.0)
        pose_offsets = np.dot(posedirs, feature)  # (778 * 3,)
        # global rotation and position of each joint (parents precede children), then the transform that maps
        # a rest-pose point x to R (x - rest) + position
        for j in range(n_joints):
            p = parents[j]
            if p < 0:
                for a in range(3):
                    for c in range(3):
                        g_rot[j, a, c] = rots[j, a, c]
                    joints[b, j, a] = rest[j, a]
            else:
                for a in range(3):
                    for c in range(3):
                        g_rot[j, a, c] = (g_rot[p, a, 0] * rots[j, 0, c] + g_rot[p, a, 1] * rots[j, 1, c]
                                          + g_rot[p, a, 2] * rots[j, 2, c])
                for a in range(3):
                    joints[b, j, a] = joints[b, p, a] + (g_rot[p, a, 0] * (rest[j, 0] - rest[p, 0])
                                                         + g_rot[p, a, 1] * (rest[j, 1] - rest[p, 1])
                                                         + g_rot[p, a, 2] * (rest[j, 2] - rest[p, 2]))
            for a in range(3):
                for c in range(3):
                    transform[j, 3 * a + c] = g_rot[j, a, c]
                transform[j, 9 + a] = joints[b, j, a] - (g_rot[j, a, 0] * rest[j, 0] + g_rot[j, a, 1] * rest[j, 1]
                                                        + g_rot[j, a, 2] * rest[j, 2])
        blend = np.empty(12)
        for v in range(n_verts):
            blend[:] = 0.0
            for j in range(n_joints):
                w = weights[v, j]
                if w != 0.0:
                    for e in range(12):
                        blend[e] += w * transform[j, e]
            x = v_shaped[v, 0] + pose_offsets[3 * v]
            y = v_shaped[v, 1] + pose_offsets[3 * v + 1]
            z = v_shaped[v, 2] + pose_offsets[3 * v + 2]
            for a in range(3):
                verts[b, v, a] = blend[3 * a] * x + blend[3 * a + 1] * y + blend[3 * a + 2] * z + blend[9 + a]


@njit(cache=True, nogil=True, error_model="numpy")
def rotations(rotvecs, out):
    """Rotation matrices of (N, 3) axis-angle vectors into out (N, 3, 3)."""
    for i in range(rotvecs.shape[0]):
        rodrigues(rotvecs[i, 0], rotvecs[i, 1], rotvecs[i, 2], out[i])
