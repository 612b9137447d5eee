"""MANO hand model: read the official ``MANO_{RIGHT,LEFT}.pkl`` without chumpy and pose it (:mod:`hodata.skinning`).

The official files are Python-2 pickles whose ``shapedirs`` is a chumpy object; chumpy does not import on
current Python/NumPy, so :func:`load_mano` unpickles with stand-in classes for every ``chumpy.*`` name and
evaluates them to plain arrays (``Ch`` -> its ``x``, ``Select`` -> a gather of its ``a``). Nothing here imports
torch: sources call it in build worker processes.

Conventions (see DATASETS.md, "MANO model file"):

- joint order 0 wrist, 1-3 index, 4-6 middle, 7-9 little, 10-12 ring, 13-15 thumb;
- ``pose`` is the full 48-D axis-angle vector (root first); ``flat_hand_mean=False`` adds ``hands_mean`` to the
  45 finger values (FreiHAND, DexYCB), ``True`` does not (HO3D);
- output in the model's units (metres), ``trans`` added after skinning (as HO3D, DexYCB and smplx do);
- fingertips are not MANO joints: :data:`TIP_VERTICES` holds each dataset's own vertex ids;
- keypoints: HO3D and DexYCB (manopth) take the skinned joint positions, FreiHAND's toolkit regresses them from
  the posed mesh (:func:`regressed_joints`); :class:`ManoConvention` states each dataset's choices in one place.

Functions the sources call: :func:`find_mano_file`, :func:`load_mano` (``.faces``,
``.forward(pose, betas, trans, flat_hand_mean=...) -> (vertices (778, 3), joints (16, 3))``, batched with a
leading axis B),
:func:`load_mano_dir`, :func:`load_mano_checked` (find, load, check once when a source opens); synthetic
look-alike files: :mod:`hodata.demo.mano_model`.

Reading a model file is safe and strict:

- the unpickler resolves only the names a MANO file holds (numpy array, dtype and scalar reconstruction, SciPy's
  ``csc_matrix``, ``set`` / ``object`` / ``copy_reg._reconstructor``, latin-1 ``_codecs.encode`` of Python-3
  protocol 0-2 pickles, and every ``chumpy.*`` name as an inert stand-in); any other global (``os.system``,
  ``builtins.eval``, ...) is refused before it is called, with a :class:`~hodata.errors.DataError` naming the file
  and the global;
- junk, foreign or damaged files (not a pickle, not a dict, missing keys, wrong shapes, non-numeric or
  non-finite values, a template not hand-sized in metres) are refused in one line;
- the hand's side is read from the model itself (:func:`model_handedness`) and must match the side asked for.
"""

from __future__ import annotations

import _compat_pickle
import copyreg
import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
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

# Fingertip vertex ids (thumb, index, middle, ring, little); each dataset picked its own. manopth (DexYCB) takes
# a different middle tip on the left hand.
TIP_VERTICES = {
    "ho3d": (744, 333, 444, 555, 672),
    "freihand": (744, 320, 443, 555, 672),
    "smplx": (744, 320, 443, 554, 671),
    "manopth": (745, 317, 444, 556, 673),
    "manopth_left": (745, 317, 445, 556, 673),
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


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """What Python 3 protocol 0-2 pickles call (as ``_codecs.encode``) to rebuild bytes; latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not how a MANO file stores bytes")
    return text.encode("latin1", errors)


# (module, name) -> what it resolves to: exactly what MANO_{RIGHT,LEFT}.pkl and re-saves of it reference.
_ARRAY_NAMES = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"{core}.{mod}", name): None for core in ("numpy.core", "numpy._core") for mod, name in _ARRAY_NAMES},
    **{(mod, "csc_matrix"): scipy.sparse.csc_matrix
       for mod in ("scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc")},
    **{(mod, "_reconstructor"): copyreg._reconstructor for mod in ("copy_reg", "copyreg")},
    **{(mod, "object"): object for mod in ("__builtin__", "builtins")},
    **{(mod, "set"): set for mod in ("__builtin__", "builtins")},
    ("_codecs", "encode"): _latin1_encode,
}


class _MANOUnpickler(pickle.Unpickler):
    """Resolves only the globals a MANO file holds (see :data:`_ALLOWED`); chumpy classes become stand-ins.
    Anything else is refused before it can be called: a DataError naming the file and the global."""

    def __init__(self, fh, path):
        super().__init__(fh, encoding="latin1")
        self.path = path

    def find_class(self, module, name):
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (_ChumpyStandIn,), {"chumpy_name": f"{module}.{name}"})
        key = (module, name)
        if key not in _ALLOWED:
            now = _compat_pickle.NAME_MAPPING.get(key) or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
            shown = f"{module}.{name}" + (f" ({now[0]}.{now[1]})" if now != key else "")  # Python 2 names
            raise DataError(f"refused: the pickle calls {shown}, which a MANO model file never holds "
                            "(it could run code); nothing was loaded", self.path)
        found = _ALLOWED[key]
        if found is None:  # numpy.core.* -> numpy._core.* (NumPy 2 renamed it; the old alias warns)
            return super().find_class("numpy._core" + module[module.index("core") + 4:], name)
        return found


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
        """Linear blend skinning of B hands: pose (B, 48), betas (B, k) -> (B, 778, 3), (B, 16, 3); compiled
        kernels (:mod:`hodata.skinning`)."""
        from hodata.skinning import skin  # numba: loaded by the sources that pose hands, not by every import

        n = betas.shape[0]
        m = self._kernel_arrays
        v_shaped, rest = self._shapes(np.ascontiguousarray(betas, dtype=np.float64))
        verts, joints = np.empty((n, N_VERTS, 3)), np.empty((n, N_JOINTS, 3))
        skin(np.ascontiguousarray(pose, dtype=np.float64), v_shaped, rest, m["posedirs_t"], m["weights"],
             m["parents"], verts, joints)
        return verts, joints

    def _shapes(self, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rest-pose vertices (B, 778, 3) and joints (B, 16, 3) of B shapes. The last result is kept: the
        frames of a sequence pose one hand, whose betas repeat (read-only arrays, one slot swapped whole)."""
        from hodata.skinning import shape_blend

        key = (betas.shape, betas.tobytes())
        last = self._last_shape[0]
        if last is not None and last[0] == key:
            return last[1], last[2]
        m = self._kernel_arrays
        n, k = betas.shape
        v_shaped, rest = np.empty((n, N_VERTS, 3)), np.empty((n, N_JOINTS, 3))
        shape_blend(betas, m["v_template"], m["shapedirs"][:, :k], m["J_template"], m["J_shapedirs"][:, :k],
                    v_shaped, rest)
        v_shaped.flags.writeable = rest.flags.writeable = False
        self._last_shape[0] = (key, v_shaped, rest)
        return v_shaped, rest

    @cached_property
    def _last_shape(self) -> list:
        return [None]

    @cached_property
    def _kernel_arrays(self) -> dict[str, np.ndarray]:
        """The model's arrays as the skinning kernels read them: C-contiguous float64, blend shapes flattened to
        one row per vertex coordinate, the joint regressor applied to the template and to the shape blends; the
        pose blend shapes float32 and transposed (see :mod:`hodata.skinning`)."""
        def c(a):
            return np.ascontiguousarray(a, dtype=np.float64)

        posedirs_t = np.ascontiguousarray(self.posedirs.reshape(N_VERTS * 3, -1).T, dtype=np.float32)
        j_shapedirs = np.einsum("jv,vak->jak", self.J_regressor, self.shapedirs).reshape(N_JOINTS * 3, -1)
        return {"v_template": c(self.v_template), "shapedirs": c(self.shapedirs.reshape(N_VERTS * 3, -1)),
                "posedirs_t": posedirs_t, "J_template": c(self.J_regressor @ self.v_template),
                "J_shapedirs": c(j_shapedirs), "weights": c(self.weights),
                "parents": np.ascontiguousarray(self.parents, dtype=np.int64)}


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


def tip_set(tips: str, side: str) -> str:
    """The :data:`TIP_VERTICES` key a dataset uses for a hand of ``side`` (only manopth's differs by side)."""
    return f"{tips}_left" if side == "left" and f"{tips}_left" in TIP_VERTICES else tips


def regressed_joints(model: "ManoModel", vertices: np.ndarray, tips: str = "freihand",
                     thumb_first: bool = True) -> np.ndarray:
    """21 keypoints the way FreiHAND's toolkit computes them (``utils/model.py`` ``_calc_coords``): the 16 joints
    are ``J_regressor`` applied to the *posed* mesh (translation included), not the skinned joint positions
    that :meth:`ManoModel.forward` returns; the tips are mesh vertices. (B, 778, 3) or (778, 3) -> (B, 21, 3)
    or (21, 3), thumb-first by default (FreiHAND's order)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    batched = vertices.ndim == 3
    verts = vertices if batched else vertices[None]
    joints = _matmul_each(model.J_regressor, verts)
    out = np.concatenate([joints, verts[:, list(TIP_VERTICES[tips])]], axis=1)
    if thumb_first:
        out = out[:, list(MANO_TO_THUMB_FIRST)]
    return out if batched else out[0]


@dataclass(frozen=True)
class ManoConvention:
    """How one dataset poses MANO and where its keypoints come from, stated explicitly and recorded in the
    build manifest (:meth:`describe`).

    ``use_pca`` / ``ncomps``: the finger pose is ``ncomps`` PCA coefficients (``coeffs @ hands_components[:ncomps]``)
    or the full 45 axis-angle values; ``flat_hand_mean``: False adds ``hands_mean``; ``fix_left``: the left-hand
    shapedirs fix (:func:`fix_left_shapedirs`); ``joints``: "skinned" (the joint positions of the skinning
    transforms: HO3D's patched ``lbs.py``, manopth) or "regressed" (``J_regressor`` on the posed mesh: FreiHAND,
    :func:`regressed_joints`); ``tips``: the :data:`TIP_VERTICES` set; ``thumb_first``: keypoint order
    (wrist, thumb .. little) instead of MANO's joints then tips.
    """

    use_pca: bool
    ncomps: int
    flat_hand_mean: bool
    fix_left: bool
    joints: str
    tips: str
    thumb_first: bool
    units: str = "metres"
    trans: str = "added after skinning"

    def __post_init__(self):
        if self.joints not in ("skinned", "regressed"):
            raise ValueError(f"joints must be 'skinned' or 'regressed', got {self.joints!r}")
        if self.tips not in TIP_VERTICES:
            raise ValueError(f"unknown fingertip set {self.tips!r}; known: {', '.join(TIP_VERTICES)}")

    def forward(self, model: "ManoModel", pose, betas, trans) -> tuple[np.ndarray, np.ndarray]:
        """Posed (vertices, 16 skinned joints) of one hand, in metres: ``pose`` is 3 root values + 45 finger
        values (or ``ncomps`` PCA coefficients), ``trans`` added after skinning."""
        return model.forward(pose, betas, trans, flat_hand_mean=self.flat_hand_mean,
                             pca_components=self.ncomps if self.use_pca else None)

    def keypoints(self, model: "ManoModel", vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
        """The dataset's 21 keypoints of a posed hand (its joint convention, tips and order)."""
        tips = tip_set(self.tips, model.side)
        if self.joints == "regressed":
            return regressed_joints(model, vertices, tips, self.thumb_first)
        return joints21(vertices, joints, tips, self.thumb_first)

    def describe(self) -> dict:
        return {"use_pca": self.use_pca, "ncomps": self.ncomps, "flat_hand_mean": self.flat_hand_mean,
                "left_shapedirs_fix": self.fix_left, "joints": self.joints, "tips": self.tips,
                "tip_vertices": {side: list(TIP_VERTICES[tip_set(self.tips, side)]) for side in FILE_NAMES},
                "keypoint_order": "thumb-first (wrist, thumb, index, middle, ring, little)" if self.thumb_first
                else "MANO joints, then tips (thumb, index, middle, ring, little)",
                "units": self.units, "trans": self.trans}


def axis_angle_to_matrix(rotvecs: np.ndarray) -> np.ndarray:
    """Rodrigues' formula for (N, 3) axis-angle vectors -> (N, 3, 3); exact identity at angle 0."""
    from hodata.skinning import rotations

    rotvecs = np.ascontiguousarray(rotvecs, dtype=np.float64).reshape(-1, 3)
    out = np.empty((len(rotvecs), 3, 3))
    rotations(rotvecs, out)
    return out


def read_mano_pickle(path: str | Path) -> dict:
    """The raw dict of a MANO pickle with every chumpy member evaluated to an array."""
    path = Path(path)
    if not path.is_file():
        raise DataError("MANO model file not found (download it from mano.is.tue.mpg.de)", path)
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            raw = _MANOUnpickler(fh, path).load()
    except DataError:
        raise
    except Exception as e:  # a truncated, empty or foreign file: say so in one line
        why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise DataError(f"not a readable MANO pickle ({why})", path) from None
    if not isinstance(raw, dict):
        raise DataError(f"MANO pickle holds a {type(raw).__name__}, expected a dict", path)
    out = {}
    for key, value in raw.items():
        try:
            out[key] = _chumpy_value(value, path) if isinstance(value, _ChumpyStandIn) else value
        except DataError:
            raise
        except Exception as e:  # a damaged chumpy member (indices out of range, a wrong shape)
            why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise DataError(f"MANO {key} (a chumpy object) cannot be evaluated ({why})", path) from None
    return out


def load_mano(path: str | Path, side: str | None = None) -> ManoModel:
    """Read one MANO pickle (no left-hand fix; see :func:`load_mano_dir`). ``side`` defaults from the name; the
    model must be a hand of that side (:func:`model_handedness`). DataError, naming the file, for anything else."""
    path = Path(path)
    if side is None:
        side = "left" if "left" in path.name.lower() else "right"
    if side not in FILE_NAMES:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    raw = read_mano_pickle(path)
    missing = [k for k in KEYS if k not in raw]
    if missing:
        raise DataError(f"MANO pickle lacks {', '.join(missing)}", path)

    def arr(key, shape, dtype=np.float64):
        value = raw[key]
        try:
            a = value.toarray() if scipy.sparse.issparse(value) else np.asarray(value)
            a = a.astype(dtype)
        except (TypeError, ValueError, AttributeError):
            what = getattr(getattr(value, "dtype", None), "name", type(value).__name__)
            raise DataError(f"MANO {key} is not numeric ({what})", path) from None
        if any(want is not None and got != want for got, want in zip(a.shape, shape)) or a.ndim != len(shape):
            raise DataError(f"MANO {key} has shape {a.shape}, expected {shape}", path)
        if dtype == np.float64 and not np.isfinite(a).all():
            raise DataError(f"MANO {key} holds NaN or inf", path)
        return a

    kintree = arr("kintree_table", (2, N_JOINTS), np.int64)
    parents = np.where(kintree[0] == ROOT_PARENT, -1, kintree[0])
    if parents[0] != -1 or any(not (0 <= parents[j] < j) for j in range(1, N_JOINTS)):
        raise DataError(f"MANO kintree_table parents {kintree[0].tolist()} are not a tree rooted at joint 0", path)
    faces = arr("f", (None, 3), np.int64)
    if not len(faces) or faces.min() < 0 or faces.max() >= N_VERTS:
        raise DataError("MANO faces are empty or index vertices outside 0..777", path)
    model = ManoModel(
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
    with np.errstate(all="ignore"):  # a damaged template may overflow: refused just below
        extent = float(np.linalg.norm(np.ptp(model.v_template, axis=0)))
    if not HAND_EXTENT_M[0] <= extent <= HAND_EXTENT_M[1]:
        raise DataError(f"MANO template spans {extent:.4g} (bounding-box diagonal); a hand in metres spans "
                        f"{HAND_EXTENT_M[0]}-{HAND_EXTENT_M[1]}: not a MANO model in metres", path)
    found = model_handedness(model)
    if found != side:
        raise DataError(f"this is a {found}-hand model (the thumb lies on the {found} hand's side of the palm), "
                        f"but it was given as the {side} one ({FILE_NAMES[side]})", path)
    return model


# Bounding-box diagonal of a plausible hand template, metres (MANO's is about 0.2 m).
HAND_EXTENT_M = (0.05, 1.0)
# |handedness score| below this: the thumb lies (almost) in the palm plane and the side cannot be told.
HANDEDNESS_MIN = 0.05


def handedness_score(model: ManoModel) -> float:
    """The side of the palm the thumb is on, from the template joints J = J_regressor @ v_template: the triple
    product (index MCP - wrist) x (little MCP - wrist) . (thumb - wrist), thumb = the mean of its three joints,
    over the product of the three lengths (the sine of the thumb's angle out of the palm plane, in [-1, 1]).

    A right hand's thumb sits on its palm side of the plane through wrist, index and little MCP joints, which
    that cross product points to; mirroring a hand (a left model is a right one mirrored) flips the sign. The
    official MANO_RIGHT template scores about +0.19 (its thumb joints lie some 15 degrees out of the palm plane,
    on the palm side); the synthetic right model about +0.13; their mirrors the negatives. Rotations, moves and
    scale do not change it.
    """
    with np.errstate(all="ignore"):
        joints = model.J_regressor @ model.v_template
        wrist = joints[0]
        a, b = joints[1] - wrist, joints[7] - wrist
        thumb = joints[13:16].mean(axis=0) - wrist
        scale = np.linalg.norm(a) * np.linalg.norm(b) * np.linalg.norm(thumb)
        score = float(np.cross(a, b) @ thumb / scale) if scale > 0 else 0.0
    return score if np.isfinite(score) else 0.0


def model_handedness(model: ManoModel) -> str:
    """"right" or "left", read from the model's geometry (:func:`handedness_score`); DataError when the thumb is
    too close to the palm plane to tell (not a MANO-like hand)."""
    score = handedness_score(model)
    if abs(score) < HANDEDNESS_MIN:
        raise DataError(f"cannot tell which hand this model is (handedness score {score:+.3f}): not a MANO hand",
                        model.path or None)
    return "right" if score > 0 else "left"


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


def load_mano_checked(mano: str | Path | None, side: str = "right", fix_left: bool = True) -> ManoModel:
    """For a source to call once when it opens (before any frame): find the model file (``mano``: the file, its
    folder, the download folder, or None for env ``MANO_DIR``), load it through the allow-listed unpickler,
    validate keys, shapes and values, and check it is a ``side`` hand; the result is cached per process, so
    later calls (in build workers too) cost nothing. Every problem is a DataError of one line naming the file,
    for the build to stop on instead of skipping every frame."""
    if side not in FILE_NAMES:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return load_mano_dir(mano, side, fix_left)

