"""Error types shared by sources and the builder.

``DataError`` is a user-facing problem with the input (missing file, bad layout, corrupt annotation); its
message names the file. ``BadFrame`` is a ``DataError`` confined to one frame: the builder skips that frame
and records the reason in the manifest instead of stopping.
"""

from __future__ import annotations


class DataError(Exception):
    """Bad input; the message is one line that names the file and what is wrong."""

    def __init__(self, message: str, path: object | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class BadFrame(DataError):
    """One frame cannot be used; the build skips it and records why."""
