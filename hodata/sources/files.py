"""Reading one frame's files with one clear error: every source's loads go through these.

A missing, unreadable, empty or undecodable file is a :class:`~hodata.errors.BadFrame` naming it (the
builder skips the frame and records why); nothing here lets a decoder's own exception escape.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hodata.errors import BadFrame
from hodata.schema import checked_image_size


def read_file(path: Path | str, what: str, missing_ok: bool = False) -> bytes | None:
    """The bytes of one frame's file; BadFrame naming it when it is missing (None with ``missing_ok``) or
    unreadable."""
    try:
        with open(path, "rb") as f:  # a str or a Path, taken as it is (no Path parsing per frame)
            return f.read()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise BadFrame(f"{what} is missing", path) from None
    except OSError as e:
        raise BadFrame(f"{what} is unreadable ({e.strerror or e})", path) from None


def read_image(path: Path | str, what: str = "image") -> tuple[bytes, tuple[int, int]]:
    """An image's bytes and (width, height), checked to decode to the end; BadFrame otherwise."""
    data = read_file(path, what)
    return data, checked_image_size(data, path)


def decode_array(data: bytes, path: Path, what: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """cv2-decode image bytes (a mask, a label map); BadFrame naming the file when empty or undecodable."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if arr is None:
        raise BadFrame(f"{what} does not decode" + (" (empty file)" if not data else ""), path)
    return arr


def relative(root: Path, path: Path) -> str:
    """``path`` relative to the dataset root, in POSIX form (what provenance records)."""
    return Path(path).relative_to(root).as_posix()
