"""Per-source facts shipped with the package (split lists, class mappings, release counts), read through
:func:`path` so that a wheel install finds them as an editable checkout does."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def path(name: str) -> Path:
    """The file ``name`` of this folder, as a filesystem path (the package is installed unzipped)."""
    return Path(str(resources.files(__name__).joinpath(name)))


def load(name: str) -> Any:
    return json.loads(path(name).read_text())
