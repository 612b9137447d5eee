"""Helpers that sources rendering MANO hands share (HO3D, FreiHAND); no dataset knowledge here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def find_right_mano(mano_dir: Any) -> Path:
    """MANO_RIGHT.pkl from --mano-dir (or env MANO_DIR); DataError saying where to get it otherwise."""
    from hodata.mano import find_mano_file  # loaded only by sources that render

    return Path(find_mano_file(mano_dir, "right"))


def mano_vertices(model: Any, pose: Any, betas: Any, trans: Any, flat_hand_mean: bool) -> np.ndarray:
    """(778, 3) vertices of one posed MANO hand: full 48-D pose, 10 betas, ``trans`` added after skinning."""
    verts, _ = model.forward(np.asarray(pose, np.float64).reshape(48), np.asarray(betas, np.float64).reshape(10),
                             np.asarray(trans, np.float64).reshape(3), flat_hand_mean=flat_hand_mean)
    return verts


def mask_iou(a: np.ndarray, b: np.ndarray) -> float | None:
    """IoU of two boolean masks, rounded to 4 places; None when both are empty (undefined)."""
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return None
    return round(int(np.count_nonzero(a & b)) / union, 4)
