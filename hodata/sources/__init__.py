"""Dataset sources: one module per dataset, one line per source in :data:`REGISTRY`.

A source knows one dataset's on-disk layout and nothing about tar files. It

- lists its frames cheaply (:meth:`Source.frames`: light :class:`FrameRef` records in a deterministic order,
  each tagged with its split),
- turns one frame into a :class:`hodata.schema.Sample` (:meth:`Source.load`, run in worker processes),
- declares its own options (:attr:`Source.OPTIONS`: typed, validated, with help; the ``hodata build`` command
  line is generated from them, so a source's flags reach that source only),
- describes its provenance for the manifest (:meth:`Source.describe`).

``load`` raises :class:`hodata.errors.BadFrame` for a frame whose files are missing or do not decode: the
builder skips that frame and records why. Any other exception is a bug or a wrong option and stops the build.

Adding a dataset is one module with a :class:`Source` subclass and one ``register(...)`` line below.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import click

from hodata.errors import DataError
from hodata.schema import Sample


@dataclass(frozen=True)
class SourceEntry:
    """One registered source: where its class lives and, when it has one, its demo-data generator."""

    name: str
    target: str  # "module:Class", imported only when the source is used
    demo: str | None = None  # module with ``write(out, seed=..., [frames=...]) -> dict``

    def load_class(self) -> type["Source"]:
        module_name, cls_name = self.target.split(":")
        return getattr(importlib.import_module(module_name), cls_name)


REGISTRY: dict[str, SourceEntry] = {}


def register(name: str, target: str, demo: str | None = None) -> None:
    """Add a source; its heavy dependencies load only when ``--source name`` is asked for."""
    REGISTRY[name] = SourceEntry(name, target, demo)


register("egohos", "hodata.sources.egohos:EgoHOSSource", demo="hodata.demo.egohos")
register("egohands", "hodata.sources.egohands:EgoHandsSource", demo="hodata.demo.egohands")
register("ho3d", "hodata.sources.ho3d:HO3DSource", demo="hodata.demo.ho3d")
register("freihand", "hodata.sources.freihand:FreiHANDSource", demo="hodata.demo.freihand")
register("visor", "hodata.sources.visor:VISORSource", demo="hodata.demo.visor")
register("dexycb", "hodata.sources.dexycb:DexYCBSource", demo="hodata.demo.dexycb")


# ------------------------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class Option:
    """One option a source accepts: the key in its options mapping, its type, default and help.

    ``type`` is a click parameter type (``click.Choice``, ``click.FloatRange``, ``click.Path``, ``int``, ...):
    the same conversion and validation run for the command line and for options passed from Python.
    ``record`` options change the output and go into the build's fingerprint; the others (model folders,
    say) are recorded by the source's :meth:`Source.describe` with their checksums instead.
    """

    name: str
    type: Any
    default: Any = None
    help: str = ""
    envvar: str | None = None
    record: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def param_type(self) -> click.ParamType:
        return click.types.convert_type(self.type)

    def click_option(self) -> click.Option:
        return click.Option([self.flag, self.name], type=self.param_type, default=None, envvar=self.envvar,
                            show_envvar=self.envvar is not None,
                            help=self.help + (f"  [default: {self.default}]" if self.default is not None else ""))

    def convert(self, value: Any, source: str) -> Any:
        """The typed value, or DataError naming the source and the flag."""
        if value is None:
            return self.default
        try:
            return self.param_type.convert(value, None, None)
        except click.BadParameter as e:
            raise DataError(f"{source}: {self.flag}: {e.format_message()}") from None


def resolve_options(source: str, declared: tuple[Option, ...], given: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Every declared option with its converted value (default when not given); unknown names are an error."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    known = {o.name: o for o in declared}
    unknown = sorted(set(given) - set(known))
    if unknown:
        flags = ", ".join("--" + u.replace("_", "-") for u in unknown)
        choices = ", ".join(o.flag for o in declared) or "none"
        raise DataError(f"{source} does not take {flags} (its options: {choices})")
    return MappingProxyType({name: opt.convert(given.get(name), source) for name, opt in known.items()})


# ------------------------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class FrameRef:
    """A cheap, picklable handle on one frame: enough for ``Source.load`` to find its files."""

    split: str
    sequence: str
    frame: str
    info: tuple = field(default=())  # source-specific (paths relative to the root, indices, ...)


class Source(ABC):
    """One dataset. Subclasses set ``name``, declare ``OPTIONS`` and implement ``frames`` and ``load``."""

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    LICENCE: ClassVar[str | None] = None  # the dataset's terms as its release states them

    def __init__(self, root: str | Path, options: Mapping[str, Any] | None = None):
        self.root = Path(root)
        self.options = resolve_options(self.name, self.OPTIONS, options)
        if not self.root.exists():
            raise DataError(f"{self.name} root does not exist", self.root)
        if not self.root.is_dir():
            raise DataError(f"{self.name} root is not a directory", self.root)

    @abstractmethod
    def frames(self) -> list[FrameRef]:
        """Every frame to build, in a deterministic order. Raises DataError on a wrong layout."""

    @abstractmethod
    def load(self, ref: FrameRef) -> Sample:
        """Read one frame and derive its label maps. Raises BadFrame for an unusable frame."""

    def build_options(self) -> dict[str, Any]:
        """The options that change this source's output (recorded and compared on resume)."""
        return {o.name: _plain(self.options[o.name]) for o in self.OPTIONS if o.record}

    def describe(self) -> dict[str, Any]:
        """Provenance for the manifest: what was read (counts, annotation checksums), split assignment."""
        return {}

    def partition_group(self, ref: FrameRef) -> str:
        """The unit ``hodata build --part i/N`` never cuts (default: the sequence); a source may name a larger
        one (the scene or subject its split holds out together)."""
        return ref.sequence


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def source_names() -> list[str]:
    return sorted(REGISTRY)


def demo_layouts() -> list[str]:
    return sorted(n for n, e in REGISTRY.items() if e.demo)


def source_class(name: str) -> type[Source]:
    if name not in REGISTRY:
        raise DataError(f"unknown source {name!r}; known: {', '.join(source_names())}")
    return REGISTRY[name].load_class()


def open_source(name: str, root: str | Path, options: Mapping[str, Any] | None = None) -> Source:
    return source_class(name)(root, options or {})
