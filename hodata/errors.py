"""Error types shared by both packages.

``UserError`` is the base of every error that means bad input or a configuration that cannot run: the
command line shows its message as one line, without a traceback. ``DataError`` is a problem with the input
(missing file, bad layout, corrupt annotation); its message names the file. ``BadFrame`` is a ``DataError``
confined to one frame: the builder skips that frame and records the reason in the manifest instead of
stopping. Anything that is not a ``UserError`` is a bug and propagates with its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration; the message is one line saying what is wrong and, where it helps, what to do."""


class DataError(UserError):
    """Bad input; the message is one line that names the file and what is wrong."""

    def __init__(self, message: str, path: object | None = None):
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class BadFrame(DataError):
    """One frame cannot be used; the build skips it and records why."""
