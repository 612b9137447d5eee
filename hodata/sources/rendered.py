"""Pieces the sources that render MANO hands and YCB objects share (HO3D, FreiHAND, DexYCB).

No dataset knowledge here: MANO by side with an explicit left-hand fix, YCB meshes cached per process, the
agreement of two masks. Reading a frame's files with clear errors is :mod:`hodata.sources.files`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import click

from hodata.errors import BadFrame, DataError
from hodata.schema import AMODAL_HAND_BIT, AMODAL_OBJECT_BIT
from hodata.sources import Option

YCB_MESH_NAME = "textured_simple.obj"


class FlagOption(Option):
    """An on/off option: ``--name`` alone turns it on (the shared :class:`Option` takes a value)."""

    def click_option(self) -> click.Option:
        return click.Option([self.flag, self.name], is_flag=True, default=None, help=self.help)


AMODAL = FlagOption("amodal", click.BOOL, False,
                    "Also write amodal.png: bit 0 = the hand's full silhouette, bit 1 = the object's, each "
                    "rendered alone (no occlusion).")


def load_mano(mano_dir: Any, side: str, fix_left: bool):
    """The MANO model of one side from ``--mano-dir`` (or env MANO_DIR), found, loaded and checked now
    (:func:`hodata.mano.load_mano_checked`: allow-listed unpickler, validated arrays, handedness).

    ``fix_left`` applies the left-hand shapedirs fix (see :func:`hodata.mano.fix_left_shapedirs`); it must be
    stated explicitly, since datasets differ (DexYCB was annotated with the unfixed MANO_LEFT). A missing,
    foreign or damaged file is a DataError here, at open time, so a build never starts on a bad model.
    """
    from hodata.mano import load_mano_checked  # loaded only by sources that render

    return load_mano_checked(mano_dir, side, fix_left=fix_left)


def mano_file(mano_dir: Any, side: str) -> Path:
    """Where the MANO model of one side is (DataError saying where to get it otherwise)."""
    from hodata.mano import find_mano_file

    return Path(find_mano_file(mano_dir, side))


def mano_vertices(model: Any, pose: Any, betas: Any, trans: Any, flat_hand_mean: bool) -> np.ndarray:
    """(778, 3) vertices of one posed MANO hand: full 48-D pose, 10 betas, ``trans`` added after skinning."""
    verts, _ = model.forward(np.asarray(pose, np.float64).reshape(48), np.asarray(betas, np.float64).reshape(10),
                             np.asarray(trans, np.float64).reshape(3), flat_hand_mean=flat_hand_mean)
    return verts


class YCBMeshes:
    """YCB object meshes (``<ycb_dir>/<name>/textured_simple.obj``, metres), loaded once per process."""

    def __init__(self, ycb_dir: Path | None):
        if ycb_dir is not None and not Path(ycb_dir).is_dir():
            raise DataError(f"YCB models folder does not exist (expected <name>/{YCB_MESH_NAME} inside)", ycb_dir)
        self.dir = None if ycb_dir is None else Path(ycb_dir)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def path(self, name: str) -> Path:
        return self.dir / name / YCB_MESH_NAME

    def get(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(vertices (N, 3) float64, faces (F, 3) int64) of one model; BadFrame when missing or broken."""
        if name not in self._cache:
            import trimesh

            path = self.path(name)
            if not path.is_file():
                raise BadFrame(f"YCB model {name} is missing", path)
            try:
                mesh = trimesh.load(path, force="mesh", process=False, skip_materials=True)
            except Exception as e:  # noqa: BLE001 - trimesh raises many types for a bad file
                raise BadFrame(f"YCB model does not load ({type(e).__name__}: {e})", path) from None
            if not len(getattr(mesh, "faces", ())):
                raise BadFrame("YCB model has no faces", path)
            self._cache[name] = (np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64))
        return self._cache[name]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float | None:
    """IoU of two boolean masks, rounded to 4 places; None when both are empty (undefined)."""
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return None
    return round(int(np.count_nonzero(a & b)) / union, 4)


def mask_agreement(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float | None]:
    """Per-class IoU of provided vs rendered masks (``{"hand_iou": (provided, rendered), ...}``), plus ``min_iou``:
    the frame's lowest per-class IoU, where a class empty in both counts as agreeing (1.0), so every frame that
    has both masks carries it (the build manifest ranks frames by it)."""
    return _with_min({name: mask_iou(a, b) for name, (a, b) in pairs.items()})


def label_agreement(provided: np.ndarray, rendered: np.ndarray, classes: dict[str, int]) -> dict[str, float | None]:
    """:func:`mask_agreement` of two label maps for the classes named (``{"hand_iou": 1, ...}``): the same
    figures, from one counting pass over both maps (:func:`hodata.label_counts.pair_counts`)."""
    from hodata.label_counts import pair_counts

    slot = np.full(256, len(classes), np.int64)  # rendered value -> its class's column; other values last
    for column, label in enumerate(classes.values()):
        slot[label] = column
    joint = pair_counts(provided, rendered, slot)
    out: dict[str, float | None] = {}
    for column, (name, label) in enumerate(classes.items()):
        both = int(joint[label, column])
        union = int(joint[label].sum() + joint[:, column].sum()) - both
        out[name] = round(both / union, 4) if union else None
    return _with_min(out)


def _with_min(ious: dict[str, float | None]) -> dict[str, float | None]:
    ious["min_iou"] = min((v for v in ious.values() if v is not None), default=1.0)
    return ious


def amodal_map(shape: tuple[int, int], hand: np.ndarray | None, obj: np.ndarray | None) -> np.ndarray:
    """The ``amodal.png`` bit map: bit 0 the hand's full silhouette, bit 1 the object's (either may be absent)."""
    out = np.zeros(shape, np.uint8)
    if hand is not None:
        out[hand] |= AMODAL_HAND_BIT
    if obj is not None:
        out[obj] |= AMODAL_OBJECT_BIT
    return out
