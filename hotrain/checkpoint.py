"""Checkpoints: atomic writes, loads with ``weights_only=True``, and the RNG states an exact resume needs.

Everything stored is a tensor, a number, a string, or a plain list/tuple/dict of those (torch >= 2.6 refuses
anything else under ``weights_only=True``): the config is a plain dict, numpy's RNG state is a tensor.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hodata.errors import DataError


def save_atomic(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write to a temporary file next to ``path`` and rename it over ``path``: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU (``weights_only=True``); a clear error naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint not found", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated files, foreign pickles, ... all mean the same to the user
        raise DataError(f"not a loadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                        path) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise DataError("not a hotrain checkpoint (no 'model' / 'config' entries)", path)
    return ckpt


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
