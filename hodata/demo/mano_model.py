"""A synthetic MANO-format model for tests and demo data (the real MANO may not be redistributed).

Same file format as the official ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl``: a protocol-2 pickle of a dict with
the 13 official keys and shapes, ``shapedirs`` stored as a chumpy ``Select`` over a ``Ch`` (written through
stand-in classes named ``chumpy.reordering.Select`` / ``chumpy.ch.Ch``, so chumpy is not needed to write it),
``J_regressor`` as a ``csc_matrix`` under the old module path ``scipy.sparse.csc``.

The geometry is a crude hand that articulates like MANO: a palm tube open at the wrist (a 16-vertex ring,
like MANO's) joined to five finger tubes capped at their tips; each finger bends at three joints in MANO's
joint order (index, middle, little, ring, thumb). Like MANO's, the mesh is one consistently wound surface,
open only at the wrist, with MANO's 778 vertices and 1,538 faces.
The left model mirrors the right one in x but, like the official release, ships the right hand's
``shapedirs`` (``left_bug=False`` writes corrected ones).
"""

from __future__ import annotations

import pickle
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse

from hodata.mano import FILE_NAMES, N_JOINTS, N_VERTS, ROOT_PARENT

PALM_RING, FINGER_RING = 16, 8
PALM_RINGS, FINGER_RINGS = 12, 14
# (first joint id, base point, direction, length) in a hand frame: x across the palm, y along the fingers.
FINGERS = (
    (1, (0.028, 0.085, 0.0), (0.1, 1.0, 0.0), 0.070),  # index
    (4, (0.009, 0.090, 0.0), (0.0, 1.0, 0.0), 0.076),  # middle
    (7, (-0.030, 0.078, 0.0), (-0.2, 1.0, 0.0), 0.054),  # little
    (10, (-0.011, 0.087, 0.0), (-0.1, 1.0, 0.0), 0.068),  # ring
    (13, (0.035, 0.025, 0.008), (1.0, 0.8, 0.3), 0.060),  # thumb
)
JOINT_AT = (0.0, 0.45, 0.75)  # MCP / PIP / DIP positions along a finger, as fractions of its length


def synthetic_mano_arrays(side: str = "right", seed: int = 0) -> dict:
    """The model's arrays as plain NumPy (``shapedirs`` with all 20 components): what the pickle encodes."""
    rng = np.random.default_rng(seed)
    verts, faces, weights, joint_rings = _hand_geometry()
    joint_rings = [np.asarray(r) for r in joint_rings]
    regressor = np.zeros((N_JOINTS, N_VERTS))
    for j, ring in enumerate(joint_rings):
        regressor[j, ring] = 1.0 / len(ring)
    centre = verts.mean(axis=0)
    # Shape space: smooth affine deformations (scales, shears) of the template, small as MANO's are.
    shapedirs = np.zeros((N_VERTS, 3, 20))
    for k in range(20):
        A = rng.normal(0.0, 0.04 / (1 + k), (3, 3))
        shapedirs[:, :, k] = (verts - centre) @ A.T
    posedirs = rng.normal(0.0, 2e-4, (N_VERTS, 3, 135))
    components = np.linalg.qr(rng.normal(size=(45, 45)))[0].T  # orthonormal rows, like a PCA basis
    hands_mean = rng.normal(0.0, 0.15, 45)
    arrays = {
        "v_template": verts,
        "f": faces.astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.stack([_parents_uint(), np.arange(N_JOINTS)]).astype(np.int64),
        "hands_components": components,
        "hands_mean": hands_mean,
        "hands_coeffs": rng.normal(0.0, 0.5, (1554, 45)),
        "J": regressor @ verts,
    }
    if side == "left":
        arrays = _mirror(arrays)
    elif side != "right":
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return arrays


def synthetic_mano_dir(out: str | Path, seed: int = 0) -> Path:
    """Write ``MANO_RIGHT.pkl`` and ``MANO_LEFT.pkl`` (with the official left-hand bug) into ``out``; return it."""
    out = Path(out)
    for side, name in FILE_NAMES.items():
        write_synthetic_mano(out / name, side=side, seed=seed)
    return out


def write_synthetic_mano(path: str | Path, side: str = "right", seed: int = 0, left_bug: bool = True) -> Path:
    """Write ``path`` (a MANO-format pickle) and return it. The left model takes the right one's shapedirs
    unless ``left_bug=False`` (see :func:`hodata.mano.fix_left_shapedirs`)."""
    path = Path(path)
    arrays = synthetic_mano_arrays(side, seed)
    if side == "left" and left_bug:
        arrays["shapedirs"] = synthetic_mano_arrays("right", seed)["shapedirs"]
    full = arrays["shapedirs"]
    select_idxs = np.arange(full.size).reshape(full.shape)[:, :, :10].ravel()
    payload = dict(arrays)
    payload["shapedirs"] = _fake_object(_Select, a=_fake_object(_Ch, x=full), idxs=select_idxs,
                                        preferred_shape=(N_VERTS, 3, 10))
    csc = scipy.sparse.csc_matrix(arrays["J_regressor"])
    payload["J_regressor"] = _fake_object(_CscMatrix, data=csc.data, indices=csc.indices, indptr=csc.indptr,
                                          _shape=csc.shape, maxprint=50)
    payload["bs_style"], payload["bs_type"] = "lbs", "lrotmin"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with _fake_modules(), open(partial, "wb") as fh:
        pickle.dump(payload, fh, protocol=2)
    partial.replace(path)
    return path


# ------------------------------------------------------------------------------------------- geometry

def _parents_uint() -> np.ndarray:
    parents = np.array([ROOT_PARENT, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], dtype=np.int64)
    return parents


def _ring(centre, axis, radii, n, phase=0.0):
    """n points on an ellipse around ``centre`` in the plane normal to ``axis``."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.asarray(centre) + radii[0] * np.cos(t)[:, None] * e1 + radii[1] * np.sin(t)[:, None] * e2


def _tube_faces(first: int, rings: int, n: int) -> list[tuple[int, int, int]]:
    faces = []
    for r in range(rings - 1):
        for k in range(n):
            a, b = first + r * n + k, first + r * n + (k + 1) % n
            c, d = a + n, b + n
            faces += [(a, b, d), (a, d, c)]
    return faces


def _fan(apex: int, ring_first: int, n: int, flip: bool) -> list[tuple[int, int, int]]:
    faces = [(apex, ring_first + (k + 1) % n, ring_first + k) for k in range(n)]
    return [f[::-1] for f in faces] if flip else faces


def _hand_geometry():
    """Template vertices (778, 3), faces (1538, 3), skinning weights (778, 16) and each joint's vertex ring.

    One surface, open only at the wrist, like MANO's (for V vertices and a 16-edge wrist hole, a single
    surface has 2V - 18 triangles: 1,538 for 778): a palm tube whose top joins the four finger tubes through
    a knuckle strip, the thumb tube stitched into a hole in the palm's side, every finger capped at its tip.
    """
    verts, faces, weights, rings = [], [], [], [None] * N_JOINTS

    def add(points, joint_weights):
        start = sum(len(v) for v in verts)
        verts.append(np.asarray(points, float))
        weights.append(np.broadcast_to(joint_weights, (len(points), N_JOINTS)).copy())
        return start

    wrist_only = np.eye(N_JOINTS)[0]
    # Palm: a flattened tube from the wrist (open ring, y = 0) to the knuckles.
    for r in range(PALM_RINGS):
        y = 0.095 * r / (PALM_RINGS - 1)
        width = 0.032 + 0.012 * min(1.0, 2 * y / 0.095)
        add(_ring((0.0, y, 0.0), (0, 1, 0), (width, 0.013), PALM_RING), wrist_only)
    rings[0] = list(range(PALM_RING))
    faces += _tube_faces(0, PALM_RINGS, PALM_RING)

    base_rings = {}  # first joint of a finger -> its first (MCP) ring, open towards the palm
    for joint, base, direction, length in FINGERS:
        direction = np.asarray(direction, float) / np.linalg.norm(direction)
        chain = (joint, joint + 1, joint + 2)
        stops = [f * length for f in JOINT_AT]
        ts = np.concatenate([np.linspace(0, stops[1], 6)[:-1], np.linspace(stops[1], stops[2], 4)[:-1],
                             np.linspace(stops[2], length, 6)])
        assert len(ts) == FINGER_RINGS
        first = None
        for t in ts:
            seg = int(np.searchsorted(stops, t, side="right")) - 1
            w = np.zeros(N_JOINTS)
            w[chain[seg]] = 1.0
            radius = 0.0085 * (1.0 - 0.25 * t / length)
            start = add(_ring(np.asarray(base) + t * direction, direction, (radius, radius * 0.9), FINGER_RING), w)
            first = start if first is None else first
            if t in stops:
                rings[chain[stops.index(t)]] = list(range(start, start + FINGER_RING))
        base_rings[joint] = list(range(first, first + FINGER_RING))
        faces += _tube_faces(first, FINGER_RINGS, FINGER_RING)
        tip = add([np.asarray(base) + (length + 0.006) * direction], np.eye(N_JOINTS)[chain[2]])
        faces += _fan(tip, first + (FINGER_RINGS - 1) * FINGER_RING, FINGER_RING, flip=True)

    v = np.concatenate(verts)
    faces += _knuckle_strip(v, base_rings)
    faces = _attach_thumb(v, faces, base_rings[13])
    v, w, faces, rings = _drop_unused(v, np.concatenate(weights), faces, rings)
    # Fill up to MANO's 778 vertices by splitting palm triangles at their centroids (1 vertex, +2 faces each);
    # the palm tube's faces come first in the list.
    n_palm = (PALM_RINGS - 1) * PALM_RING * 2 - 8
    picks = np.linspace(0, n_palm - 1, N_VERTS - len(v)).astype(int)
    for k in picks:
        a, b, c = faces[k]
        centroid = len(v)
        v = np.vstack([v, v[[a, b, c]].mean(axis=0)])
        w = np.vstack([w, w[[a, b, c]].mean(axis=0)])
        faces[k] = (a, b, centroid)
        faces += [(b, c, centroid), (c, a, centroid)]
    return v, np.asarray(faces, np.int64), w, rings


def _zip(a: list[int], b: list[int], key: np.ndarray) -> list[tuple[int, int, int]]:
    """Triangles filling the strip between vertex chains ``a`` and ``b``, which run side by side in the same
    direction (``key`` increasing along both): always advance the chain whose next vertex comes first, so the
    strip is covered without overlaps. Winding: a[i] -> a[i + 1] and b[j + 1] -> b[j]."""
    i = j = 0
    out = []
    while i < len(a) - 1 or j < len(b) - 1:
        if j == len(b) - 1 or (i < len(a) - 1 and key[a[i + 1]] <= key[b[j + 1]]):
            out.append((a[i], a[i + 1], b[j]))
            i += 1
        else:
            out.append((a[i], b[j + 1], b[j]))
            j += 1
    return out


def _knuckle_strip(v: np.ndarray, base_rings: dict) -> list[tuple[int, int, int]]:
    """Close the palm's top between its last ring and the first rings of the four fingers.

    Seen along the fingers, the palm's top ring is an ellipse around four finger circles side by side. The
    front half (-z) is one strip between the ring's front arc (+x to -x) and the fingers' front halves
    chained from +x to -x (the edge from one finger to the next is the web between them); the back half
    mirrors it. Ring vertex k sits at angle 2 pi k / n from +x towards -z, on palm and finger rings alike.
    """
    top = [(PALM_RINGS - 1) * PALM_RING + k for k in range(PALM_RING)]
    fingers = sorted((j for j in base_rings if j != 13), key=lambda j: -v[base_rings[j]].mean(axis=0)[0])
    half, quarter = PALM_RING // 2, FINGER_RING // 2
    front_b = [base_rings[j][m] for j in fingers for m in range(quarter + 1)]
    back_b = [base_rings[j][m % FINGER_RING] for j in reversed(fingers) for m in range(quarter, FINGER_RING + 1)]
    x = v[:, 0]
    return (_zip(top[:half + 1], front_b, -x)
            + _zip(top[half:] + [top[0]], back_b, x))


def _attach_thumb(v: np.ndarray, faces: list, thumb_ring: list[int]) -> list[tuple[int, int, int]]:
    """Open a 2 x 2 quad hole in the palm's side wall next to the thumb's base and stitch the thumb's first
    ring to its 8-vertex rim (the hole's centre vertex is dropped later, unused)."""
    rows, cols = (2, 3), (PALM_RING - 2, PALM_RING - 1)  # quads (ring r..r+1, k..k+1) facing the thumb
    gone = set()
    for r in rows:
        for k in cols:
            first = (r * PALM_RING + k) * 2  # _tube_faces order: ring by ring, 2 faces per quad
            gone.update((first, first + 1))
    kept = [f for i, f in enumerate(faces) if i not in gone]

    def at(r, k):
        return r * PALM_RING + k % PALM_RING

    r0, k0 = rows[0], cols[0]
    rim = [at(r0, k0), at(r0, k0 + 1), at(r0, k0 + 2), at(r0 + 1, k0 + 2), at(r0 + 2, k0 + 2),
           at(r0 + 2, k0 + 1), at(r0 + 2, k0), at(r0 + 1, k0)]  # the removed patch's boundary, its winding
    return kept + _stitch_loops(v, rim, thumb_ring)


def _stitch_loops(v: np.ndarray, rim: list[int], ring: list[int]) -> list[tuple[int, int, int]]:
    """A collar of 2n triangles between two n-vertex loops that wind the same way around their common axis,
    vertex i of ``rim`` facing the vertex of ``ring`` that makes the rungs shortest overall."""
    n = len(rim)
    cost = [np.linalg.norm(v[rim] - v[np.roll(ring, -s)], axis=1).sum() for s in range(n)]
    turned = list(np.roll(ring, -int(np.argmin(cost))))
    out = []
    for i in range(n):
        a, b, c, d = rim[i], rim[(i + 1) % n], turned[i], turned[(i + 1) % n]
        out += [(a, b, c), (b, d, c)]
    return out


def _drop_unused(v, w, faces, rings):
    """Remove vertices no face uses and renumber faces and joint rings."""
    used = np.zeros(len(v), bool)
    used[np.asarray(faces).ravel()] = True
    new_id = np.cumsum(used) - 1
    faces = [tuple(int(new_id[i]) for i in f) for f in faces]
    rings = [[int(new_id[i]) for i in ring] for ring in rings]
    return v[used], w[used], faces, rings


def _mirror(arrays: dict) -> dict:
    """The left hand: mirror x. Axis-angle vectors mirror as (a, b, c) -> (a, -b, -c)."""
    out = dict(arrays)
    flip = np.array([-1.0, 1.0, 1.0])
    out["v_template"] = arrays["v_template"] * flip
    out["J"] = arrays["J"] * flip
    out["f"] = arrays["f"][:, ::-1].copy()
    out["shapedirs"] = arrays["shapedirs"] * flip[None, :, None]
    out["posedirs"] = arrays["posedirs"] * flip[None, :, None]
    aa = np.tile([1.0, -1.0, -1.0], 15)
    out["hands_components"] = arrays["hands_components"] * aa
    out["hands_mean"] = arrays["hands_mean"] * aa
    out["hands_coeffs"] = arrays["hands_coeffs"]
    return out


# ------------------------------------------------------------------------- pickling under foreign names

class _Ch:
    pass


class _Select:
    pass


class _CscMatrix:
    pass


_FAKE_NAMES = {_Ch: ("chumpy.ch", "Ch"), _Select: ("chumpy.reordering", "Select"),
               _CscMatrix: ("scipy.sparse.csc", "csc_matrix")}


def _fake_object(cls, **state):
    """An instance whose pickled state is ``state`` (chumpy objects also carry their bookkeeping fields)."""
    obj = cls.__new__(cls)
    if cls in (_Ch, _Select):
        state = {**state, "_dirty_vars": set(), "_itr": None, "_make_dense": False, "_make_sparse": False,
                 "_depends_on_deps": {}}
    obj.__dict__.update(state)
    return obj


@contextmanager
def _fake_modules():
    """Let pickle find the stand-ins under their real dotted names, then put sys.modules back as it was."""
    saved, renamed = {}, {}
    for cls, (module, name) in _FAKE_NAMES.items():
        renamed[cls] = (cls.__module__, cls.__qualname__)
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            mod_name = ".".join(parts[:i])
            if mod_name not in saved:
                saved[mod_name] = sys.modules.get(mod_name)
                if i == len(parts) or mod_name not in sys.modules:
                    sys.modules[mod_name] = types.ModuleType(mod_name)
        setattr(sys.modules[module], name, cls)
        cls.__module__, cls.__qualname__ = module, name
    try:
        yield
    finally:
        for cls, (module, qualname) in renamed.items():
            cls.__module__, cls.__qualname__ = module, qualname
        for mod_name, mod in saved.items():
            if mod is None:
                sys.modules.pop(mod_name, None)
            else:
                sys.modules[mod_name] = mod
