"""Checkpoints: atomic writes, checked loads with ``weights_only=True``, and the RNG states an exact resume needs.

Everything stored is a tensor, a number, a string, or a plain list/tuple/dict of those (torch >= 2.6 refuses
anything else under ``weights_only=True``): the config is a plain dict, numpy's RNG state is a tensor.

Every checkpoint written carries ``digest``: the sha256 of its model state (each tensor's name, dtype, shape
and bytes, in name order, computed on the CPU) and one of all its other entries (optimizer and RNG states,
config, step). :func:`load` recomputes both, so flipped bytes in the weights
are refused even where the file still unpickles; it also refuses non-finite weights, an unknown model and a
file that is not a hotrain checkpoint, each in one line naming the file. A checkpoint of an older hotrain,
without a digest, loads after a one-line note.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from hodata.atomic import write_atomic

from hodata.errors import DataError

DIGEST_KIND = ("model_sha256: model state, name, dtype, shape, bytes per tensor, in name order; "
               "sha256: every entry but the digest")
_TEMP = re.compile(r"^\..+\.pt\.tmp\.(\d+)$")  # what save_atomic writes: .<name>.pt.tmp.<pid>


class CheckpointError(DataError):
    """A checkpoint that cannot be used (one line naming the file)."""


class Checkpoint(dict):
    """A loaded checkpoint: its entries, and ``path``, the file it came from (for messages)."""

    path: Path


def model_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order (on the CPU)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tree_digest(obj: Any) -> str:
    """sha256 over a checkpoint's entries (nested dicts in key order, lists in order; tensors as in
    :func:`model_digest`, everything else by ``repr``): optimizer state, RNG states, config, step."""
    h = hashlib.sha256()

    def walk(x: Any, at: str) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{at}\0T{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(f"{at}\0D{len(x)}\0".encode())
            for k in sorted(x, key=lambda k: (type(k).__name__, str(k))):
                walk(x[k], f"{at}/{k!r}")
        elif isinstance(x, (list, tuple)):
            h.update(f"{at}\0L{len(x)}\0".encode())
            for i, v in enumerate(x):
                walk(v, f"{at}/{i}")
        else:
            h.update(f"{at}\0{x!r}\0".encode())

    walk(obj, "")
    return h.hexdigest()


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files of :func:`save_atomic` in ``folder`` whose writer is gone (a killed save); only
    that naming pattern, and never one whose process still runs."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not _alive(int(m[1])):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes one checkpoint at a time: a temp of its own is left over
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def save_atomic(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write to a temporary file next to ``path`` and rename it over ``path``: a kill never leaves half a file
    (and the next save removes a temp file a killed one left). A checkpoint with a ``model`` state gets its
    ``digest``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    if isinstance(obj.get("model"), dict):
        body = {k: v for k, v in obj.items() if k != "digest"}
        obj = body | {"digest": {"model_sha256": model_digest(obj["model"]), "sha256": tree_digest(body),
                                 "kind": DIGEST_KIND}}
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")  # the pattern remove_stale_temps knows
    return write_atomic(path, lambda f: torch.save(obj, f), fsync=True, tmp=tmp)


RESUME_KEYS = ("optimizer", "scheduler", "step")  # what --resume needs beyond the model (best.pt has none)


def load(path: str | os.PathLike, need: Iterable[str] = (), why: str = "") -> Checkpoint:
    """Load a checkpoint on the CPU (``weights_only=True``) and check it (see the module docstring); ``need``:
    entries the caller needs (``why`` says for what). Every problem is a :class:`CheckpointError`."""
    from hotrain.model import MODELS

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    if path.stat().st_size == 0:
        raise CheckpointError("checkpoint is empty (0 bytes)", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated files, foreign pickles, ... all mean the same to the user
        first = (str(e).splitlines() or [""])[0].split(". ")[0][:160]
        raise CheckpointError(f"not a loadable checkpoint, truncated or not a torch file ({type(e).__name__}: "
                              f"{first})", path) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError("not a hotrain checkpoint (no 'model' / 'config' entries)", path)
    state, cfg = ckpt["model"], ckpt["config"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("not a hotrain checkpoint ('model' is not a dict of tensors)", path)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), str):
        raise CheckpointError("not a hotrain checkpoint ('config' names no model)", path)
    if cfg["model"] not in MODELS:
        raise CheckpointError(f"unknown model {cfg['model']!r} (this hotrain has {', '.join(MODELS)})", path)
    missing = [k for k in need if k not in ckpt]
    if missing:
        raise CheckpointError(f"no {', '.join(missing)} entry: {why or 'needed here'}", path)
    digest = ckpt.get("digest")
    if isinstance(digest, dict) and "model_sha256" in digest:
        if model_digest(state) != digest["model_sha256"]:
            raise CheckpointError("model tensors differ from the checkpoint's digest (the file is damaged)", path)
        if "sha256" in digest and tree_digest({k: v for k, v in ckpt.items() if k != "digest"}) != digest["sha256"]:
            raise CheckpointError("checkpoint entries (optimizer, RNG or config) differ from its digest "
                                  "(the file is damaged)", path)
    else:
        print(f"[hotrain] note: {path}: no tensor digest (written by an older hotrain): weights not verified",
              file=sys.stderr, flush=True)
    bad = non_finite_tensor(state)
    if bad:
        raise CheckpointError(f"tensor {bad} holds NaN or infinite values: the weights are unusable", path)
    out = Checkpoint(ckpt)
    out.path = path
    return out


def non_finite_tensor(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, else None."""
    for name, t in state.items():  # aminmax: one pass, no mask; NaN propagates to both, inf shows at an end
        if t.is_floating_point() and t.numel() and not all(bool(torch.isfinite(v)) for v in t.aminmax()):
            return name
    return None


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
