"""Files written whole or not at all: a hidden temporary name beside the target, then a rename over it.

A reader (or a rerun after a kill) sees the old file or the complete new one, never a part of it; the temporary
file is removed when writing fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def temp_path(path: Path) -> Path:
    """The default temporary name of ``path``: hidden, in its folder, owned by this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, fsync: bool = False,
                 tmp: Path | None = None) -> Path:
    """Call ``write`` on the open temporary file, then rename it over ``path`` (after an fsync if asked)."""
    path = Path(path)
    tmp = tmp or temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after the rename
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    return write_atomic(path, lambda f: f.write(data), fsync=fsync)
