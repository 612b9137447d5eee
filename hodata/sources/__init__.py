"""Dataset sources. Each module knows one dataset's on-disk layout and nothing about tar files.

A source lists its frames cheaply (:meth:`Source.frames`, in a deterministic order, each tagged with its
split) and turns one frame into a :class:`hodata.schema.Sample` (:meth:`Source.load`, run in worker
processes). ``load`` raises :class:`hodata.errors.BadFrame` for a frame that cannot be used; the builder
skips it and records the reason.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hodata.errors import DataError
from hodata.schema import Sample

# name -> "module:Class"; imported lazily so one source's heavy dependencies never slow another.
REGISTRY: dict[str, str] = {
    "egohos": "hodata.sources.egohos:EgoHOSSource",
    "egohands": "hodata.sources.egohands:EgoHandsSource",
    "ho3d": "hodata.sources.ho3d:HO3DSource",
    "freihand": "hodata.sources.freihand:FreiHANDSource",
}


@dataclass(frozen=True)
class FrameRef:
    """A cheap, picklable handle on one frame: enough for ``Source.load`` to find its files."""

    split: str
    sequence: str
    frame: str
    info: tuple = field(default=())  # source-specific (paths relative to the root, indices, ...)


class Source(ABC):
    """One dataset. Subclasses set ``name`` and implement ``frames`` and ``load``."""

    name: str = ""

    def __init__(self, root: str | Path, options: dict[str, Any] | None = None):
        self.root = Path(root)
        self.options = dict(options or {})
        if not self.root.exists():
            raise DataError(f"{self.name} root does not exist", self.root)
        if not self.root.is_dir():
            raise DataError(f"{self.name} root is not a directory", self.root)

    @abstractmethod
    def frames(self) -> list[FrameRef]:
        """Every frame to build, in a deterministic order. Raises DataError on a wrong layout."""

    @abstractmethod
    def load(self, ref: FrameRef) -> Sample:
        """Read one frame and derive its label map. Raises BadFrame for an unusable frame."""

    def build_options(self) -> dict[str, Any]:
        """The options that change this source's output (recorded and compared on resume)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Provenance for the manifest: what was read (counts, annotation checksums), split assignment."""
        return {}


def source_names() -> list[str]:
    return sorted(REGISTRY)


def open_source(name: str, root: str | Path, options: dict[str, Any] | None = None) -> Source:
    if name not in REGISTRY:
        raise DataError(f"unknown source {name!r}; known: {', '.join(source_names())}")
    module_name, cls_name = REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(root, options or {})
