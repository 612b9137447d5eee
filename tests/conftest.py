"""Shared test setup: headless rendering, and a tiny in-memory source for builder tests."""

from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
