"""MANO hand model: read the official ``MANO_{RIGHT,LEFT}.pkl`` without chumpy and pose it with NumPy.

The official files are Python-2 pickles whose ``shapedirs`` is a chumpy object; chumpy does not import on
current Python/NumPy, so :func:`load_mano` unpickles with stand-in classes for every ``chumpy.*`` name and
evaluates them to plain arrays (``Ch`` -> its ``x``, ``Select`` -> a gather of its ``a``). Nothing here imports
torch: sources call it in build worker processes.

Conventions (see DATASETS.md, "MANO model file"):

- joint order 0 wrist, 1-3 index, 4-6 middle, 7-9 little, 10-12 ring, 13-15 thumb;
- ``pose`` is the full 48-D axis-angle vector (root first); ``flat_hand_mean=False`` adds ``hands_mean`` to the
  45 finger values (FreiHAND, DexYCB), ``True`` does not (HO3D);
- output in the model's units (metres), ``trans`` added after skinning (as HO3D, DexYCB and smplx do);
- fingertips are not MANO joints: :data:`TIP_VERTICES` holds each dataset's own vertex ids.

API the sources use (keep the names): :func:`find_mano_file`, :func:`load_mano` (``.faces``,
``.forward(pose, betas, trans, flat_hand_mean=...) -> (vertices (778, 3), joints (16, 3))``, batched with a
leading axis B),
:func:`load_mano_dir`; synthetic look-alike files: :mod:`hodata.demo.mano_model`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse

from hodata.errors import DataError

N_VERTS, N_JOINTS = 778, 16
ROOT_PARENT = 2**32 - 1  # kintree_table's parent entry for the root
KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table",
        "hands_components", "hands_mean")
FILE_NAMES = {"right": "MANO_RIGHT.pkl", "left": "MANO_LEFT.pkl"}
OFFICIAL_MD5 = {"right": "fd5a9d35f914987cf1cc04ffe338caa1", "left": "11aeaca8631aa20db964d4eba491e885"}

# Fingertip vertex ids (thumb, index, middle, ring, little); each dataset picked its own.
TIP_VERTICES = {
    "ho3d": (744, 333, 444, 555, 672),
    "freihand": (744, 320, 443, 555, 672),
    "smplx": (744, 320, 443, 554, 671),
    "manopth": (745, 317, 444, 556, 673),
}
# MANO order + tips (HO3D's handJoints3D order) -> thumb-first order (FreiHAND, DexYCB): ho3d `jointsMapManoToSimple`.
MANO_TO_THUMB_FIRST = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)


# ---------------------------------------------------------------------------------------------- loading

class _ChumpyStandIn:
    """Takes the place of any chumpy class while unpickling; keeps the pickled state as attributes."""

    chumpy_name = "?"

    def __setstate__(self, state):
        if isinstance(state, tuple):  # (dict, slots) form
            state = {k: v for part in state if part for k, v in part.items()}
        self.__dict__.update(state)


def _chumpy_value(obj, path):
    """Evaluate a chumpy stand-in (recursively) to a NumPy array."""
    if not isinstance(obj, _ChumpyStandIn):
        return np.asarray(obj)
    state = obj.__dict__
    if "a" in state and "idxs" in state:  # chumpy.reordering.Select
        base = _chumpy_value(state["a"], path).ravel()
        out = base[np.asarray(state["idxs"]).ravel()]
        shape = state.get("preferred_shape")
        return out.reshape(tuple(shape)) if shape is not None else out
    if "x" in state:  # chumpy.ch.Ch and its plain-value subclasses
        return np.asarray(state["x"])
    raise DataError(f"MANO file holds a chumpy {obj.chumpy_name} this reader cannot evaluate", path)


class _MANOUnpickler(pickle.Unpickler):
    """Maps chumpy classes to stand-ins and old module paths (numpy.core, scipy.sparse.csc) to current ones."""

    def find_class(self, module, name):
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (_ChumpyStandIn,), {"chumpy_name": f"{module}.{name}"})
        if module.startswith("numpy.core"):  # NumPy 2 renamed numpy.core -> numpy._core (the alias warns)
            module = "numpy._core" + module[len("numpy.core"):]
        if module.startswith("scipy.sparse.") and not module.startswith("scipy.sparse._"):
            module = "scipy.sparse"  # scipy.sparse.csc etc. are deprecated aliases
        return super().find_class(module, name)


@dataclass(frozen=True, eq=False)
class ManoModel:
    """One MANO hand (plain arrays, float64) and where it came from."""

    side: str  # "right" or "left"
    v_template: np.ndarray  # (778, 3)
    faces: np.ndarray  # (F, 3) int64
    shapedirs: np.ndarray  # (778, 3, 10)
    posedirs: np.ndarray  # (778, 3, 135)
    J_regressor: np.ndarray  # (16, 778) dense
    weights: np.ndarray  # (778, 16)
    parents: np.ndarray  # (16,) int64, root -1
    hands_components: np.ndarray  # (45, 45), one PCA component per row
    hands_mean: np.ndarray  # (45,)
    path: str = ""
    md5: str = ""
    left_fix_applied: bool = False

    @property
    def official(self) -> bool:
        """True when the file is byte-identical to the MANO v1.2 release the datasets were fitted with."""
        return self.md5 == OFFICIAL_MD5.get(self.side)

    def describe(self) -> dict:
        """Provenance for a build manifest."""
        return {"file": Path(self.path).name, "md5": self.md5, "side": self.side, "official_v1_2": self.official,
                "left_shapedirs_fix": self.left_fix_applied, "faces": int(len(self.faces))}

    # -------------------------------------------------------------------------------------- forward pass
    def full_pose(self, pose, flat_hand_mean: bool = True, pca_components: int | None = None) -> np.ndarray:
        """The 48-D axis-angle pose MANO skins with: (48,) for one hand, (B, 48) for a batch.

        ``pose``: (48,) or (B, 48) values (3 root + 45 finger), or with ``pca_components=n``, (3 + n,) or
        (B, 3 + n): 3 root + n PCA coefficients (finger pose = coeffs @ the first n rows of
        ``hands_components``). ``flat_hand_mean=False`` adds ``hands_mean`` to the finger pose.
        """
        pose = np.asarray(pose, dtype=np.float64)
        want = 48 if pca_components is None else 3 + pca_components
        if pose.ndim not in (1, 2) or pose.shape[-1] != want:
            what = "48 pose values" if pca_components is None else f"{want} pose values with {pca_components} PCA comps"
            raise ValueError(f"expected {what} per hand, shaped ({want},) or (B, {want}); got shape {pose.shape}")
        if pca_components is not None:
            fingers = pose[..., 3:] @ self.hands_components[:pca_components]
            pose = np.concatenate([pose[..., :3], fingers], axis=-1)
        if not flat_hand_mean:
            pose = np.concatenate([pose[..., :3], pose[..., 3:] + self.hands_mean], axis=-1)
        return pose

    def forward(self, pose, betas=None, trans=None, flat_hand_mean: bool = True,
                pca_components: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posed ``(vertices, joints)`` in metres: (778, 3), (16, 3) for one hand; (B, 778, 3), (B, 16, 3) when any
        of ``pose`` (B, 48), ``betas`` (B, k) or ``trans`` (B, 3) has a batch axis (the others broadcast).

        See :meth:`full_pose` for ``pose``; ``betas`` None means the mean shape (extra components beyond the
        model's are ignored); ``trans`` is added after skinning.
        """
        full = self.full_pose(pose, flat_hand_mean, pca_components)
        betas = np.zeros(self.shapedirs.shape[2]) if betas is None else np.asarray(betas, dtype=np.float64)
        trans = np.zeros(3) if trans is None else np.asarray(trans, dtype=np.float64)
        if betas.ndim not in (1, 2) or trans.ndim not in (1, 2) or trans.shape[-1] != 3:
            raise ValueError(f"betas must be (k,) or (B, k) and trans (3,) or (B, 3); got {betas.shape}, {trans.shape}")
        batched = max(full.ndim, betas.ndim, trans.ndim) == 2
        sizes = {a.shape[0] for a in (full, betas, trans) if a.ndim == 2}
        if len(sizes) > 1:
            raise ValueError(f"batch sizes differ: pose {full.shape}, betas {betas.shape}, trans {trans.shape}")
        n = sizes.pop() if sizes else 1
        full, trans = np.broadcast_to(full, (n, 48)), np.broadcast_to(trans, (n, 3))
        n_betas = min(betas.shape[-1], self.shapedirs.shape[2])
        betas = np.broadcast_to(betas[..., :n_betas], (n, n_betas))
        verts, joints = self._skin(full, betas)
        verts, joints = verts + trans[:, None], joints + trans[:, None]
        return (verts, joints) if batched else (verts[0], joints[0])

    def _skin(self, pose: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linear blend skinning of B hands: pose (B, 48), betas (B, k) -> (B, 778, 3), (B, 16, 3)."""
        n, k = betas.shape
        v_shaped = self.v_template + (betas @ self.shapedirs[:, :, :k].reshape(-1, k).T).reshape(n, N_VERTS, 3)
        rest = _matmul_each(self.J_regressor, v_shaped)  # (B, 16, 3) rest-pose joints

        rots = axis_angle_to_matrix(pose.reshape(-1, 3)).reshape(n, N_JOINTS, 3, 3)
        pose_feature = (rots[:, 1:] - np.eye(3)).reshape(n, -1)  # 15 x 9 row-major = 135 per hand
        v_posed = v_shaped + (pose_feature @ self.posedirs.reshape(-1, pose_feature.shape[1]).T).reshape(n, N_VERTS, 3)

        # Global rotation and position of each joint along the kinematic tree (parents precede children).
        g_rot = np.empty((n, N_JOINTS, 3, 3))
        g_pos = np.empty((n, N_JOINTS, 3))
        for j in range(N_JOINTS):
            p = self.parents[j]
            if p < 0:
                g_rot[:, j], g_pos[:, j] = rots[:, j], rest[:, j]
            else:
                g_rot[:, j] = g_rot[:, p] @ rots[:, j]
                g_pos[:, j] = g_pos[:, p] + np.einsum("bac,bc->ba", g_rot[:, p], rest[:, j] - rest[:, p])
        # Skinning transform of each joint maps rest-pose points: x -> R (x - rest) + pos; blend per vertex.
        offset = g_pos - np.einsum("bjac,bjc->bja", g_rot, rest)
        per_joint = np.concatenate([g_rot.reshape(n, N_JOINTS, 9), offset], axis=2)  # (B, 16, 12)
        per_vertex = _matmul_each(self.weights, per_joint)  # (B, 778, 12)
        blend_rot = per_vertex[..., :9].reshape(n, N_VERTS, 3, 3)
        verts = np.einsum("bvac,bvc->bva", blend_rot, v_posed) + per_vertex[..., 9:]
        return verts, g_pos


def _matmul_each(m: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """``m @ batch[i]`` for every i as one matrix product: (R, N) and (B, N, C) -> (B, R, C)."""
    n, rows, cols = batch.shape
    flat = batch.transpose(1, 0, 2).reshape(rows, n * cols)
    return (m @ flat).reshape(m.shape[0], n, cols).transpose(1, 0, 2)


def joints21(vertices: np.ndarray, joints: np.ndarray, tips: str = "ho3d", thumb_first: bool = False) -> np.ndarray:
    """16 MANO joints + 5 fingertip vertices (a dataset's set, see :data:`TIP_VERTICES`) = (21, 3).

    Default order: MANO's joints then tips thumb, index, middle, ring, little (HO3D ``handJoints3D``);
    ``thumb_first=True``: wrist, thumb, index, middle, ring, little, base to tip (FreiHAND, DexYCB).
    """
    out = np.concatenate([joints, vertices[list(TIP_VERTICES[tips])]], axis=0)
    return out[list(MANO_TO_THUMB_FIRST)] if thumb_first else out


def axis_angle_to_matrix(rotvecs: np.ndarray) -> np.ndarray:
    """Rodrigues' formula for (N, 3) axis-angle vectors -> (N, 3, 3); exact identity at angle 0."""
    rotvecs = np.asarray(rotvecs, dtype=np.float64).reshape(-1, 3)
    angle = np.linalg.norm(rotvecs, axis=1)
    safe = np.where(angle < 1e-12, 1.0, angle)
    axis = rotvecs / safe[:, None]
    x, y, z = axis.T
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=1).reshape(-1, 3, 3)
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    rots = np.eye(3) + s * k + (1.0 - c) * (k @ k)
    rots[angle < 1e-12] = np.eye(3)
    return rots


def read_mano_pickle(path: str | Path) -> dict:
    """The raw dict of a MANO pickle with every chumpy member evaluated to an array."""
    path = Path(path)
    if not path.is_file():
        raise DataError("MANO model file not found (download it from mano.is.tue.mpg.de)", path)
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            raw = _MANOUnpickler(fh, encoding="latin1").load()
    except DataError:
        raise
    except Exception as e:  # a truncated or foreign file: say so in one line
        raise DataError(f"not a readable MANO pickle ({type(e).__name__}: {e})", path) from None
    if not isinstance(raw, dict):
        raise DataError(f"MANO pickle holds a {type(raw).__name__}, expected a dict", path)
    return {k: (_chumpy_value(v, path) if isinstance(v, _ChumpyStandIn) else v) for k, v in raw.items()}


def load_mano(path: str | Path, side: str | None = None) -> ManoModel:
    """Read one MANO pickle (no left-hand fix; see :func:`load_mano_dir`). ``side`` defaults from the name."""
    path = Path(path)
    raw = read_mano_pickle(path)
    missing = [k for k in KEYS if k not in raw]
    if missing:
        raise DataError(f"MANO pickle lacks {', '.join(missing)}", path)
    if side is None:
        side = "left" if "left" in path.name.lower() else "right"

    def arr(key, shape, dtype=np.float64):
        value = raw[key]
        a = value.toarray() if scipy.sparse.issparse(value) else np.asarray(value)
        try:
            a = a.astype(dtype)
        except (TypeError, ValueError):
            raise DataError(f"MANO {key} is not numeric ({a.dtype})", path) from None
        if any(want is not None and got != want for got, want in zip(a.shape, shape)) or a.ndim != len(shape):
            raise DataError(f"MANO {key} has shape {a.shape}, expected {shape}", path)
        return a

    kintree = arr("kintree_table", (2, N_JOINTS), np.int64)
    parents = np.where(kintree[0] == ROOT_PARENT, -1, kintree[0])
    if parents[0] != -1 or any(not (0 <= parents[j] < j) for j in range(1, N_JOINTS)):
        raise DataError(f"MANO kintree_table parents {kintree[0].tolist()} are not a tree rooted at joint 0", path)
    faces = arr("f", (None, 3), np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= N_VERTS):
        raise DataError("MANO faces index vertices outside 0..777", path)
    return ManoModel(
        side=side,
        v_template=arr("v_template", (N_VERTS, 3)),
        faces=faces,
        shapedirs=arr("shapedirs", (N_VERTS, 3, None)),
        posedirs=arr("posedirs", (N_VERTS, 3, (N_JOINTS - 1) * 9)),
        J_regressor=arr("J_regressor", (N_JOINTS, N_VERTS)),
        weights=arr("weights", (N_VERTS, N_JOINTS)),
        parents=parents,
        hands_components=arr("hands_components", (45, 45)),
        hands_mean=arr("hands_mean", (45,)),
        path=str(path),
        md5=hashlib.md5(path.read_bytes()).hexdigest(),
    )


def fix_left_shapedirs(left: ManoModel, right: ManoModel) -> ManoModel:
    """The official MANO_LEFT.pkl ships the right hand's shapedirs (smplx #48): negate their x rows.

    Applied only when the two are (near) identical in x, as the widely used fix does; a corrected file is
    returned unchanged. Do not use when reproducing DexYCB (annotated with the unfixed left model).
    """
    if np.abs(left.shapedirs[:, 0, :] - right.shapedirs[:, 0, :]).sum() >= 1.0:
        return left
    shapedirs = left.shapedirs.copy()
    shapedirs[:, 0, :] *= -1.0
    return replace(left, shapedirs=shapedirs, left_fix_applied=True)


MANO_URL = "https://mano.is.tue.mpg.de"


def find_mano_file(mano_dir: str | Path | None, side: str = "right") -> Path:
    """``MANO_{RIGHT,LEFT}.pkl`` from ``mano_dir`` (None: env ``MANO_DIR``): the file itself, the folder holding
    it, or the download's ``models`` folder under it. DataError saying where to get it otherwise."""
    if side not in FILE_NAMES:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    name = FILE_NAMES[side]
    get = f"register at {MANO_URL}, download MANO v1.2 and pass --mano-dir DIR (or set MANO_DIR) with DIR holding {name}"
    where = mano_dir if mano_dir is not None else os.environ.get("MANO_DIR")
    if not where:
        raise DataError(f"rendering MANO needs the {name} model: {get}")
    folder = Path(where)
    if folder.is_file() and folder.name.lower() == name.lower():
        return folder
    for candidate in (folder / name, folder / "models" / name, folder / "mano_v1_2" / "models" / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{name} not found: {get}", folder)


@lru_cache(maxsize=8)
def _load_cached(path: str, side: str, fix_left: bool) -> ManoModel:
    model = load_mano(path, side)
    if side == "left" and fix_left:
        model = fix_left_shapedirs(model, load_mano(Path(path).with_name(FILE_NAMES["right"]), "right"))
    return model


def load_mano_dir(mano_dir: str | Path | None, side: str = "right", fix_left: bool = True) -> ManoModel:
    """The model of one side found by :func:`find_mano_file`, cached per process (build workers reuse it).

    ``fix_left`` applies :func:`fix_left_shapedirs` to the left hand (needs MANO_RIGHT.pkl beside it); pass
    False to reproduce DexYCB.
    """
    path = find_mano_file(mano_dir, side)
    return _load_cached(str(path.resolve()), side, fix_left)

