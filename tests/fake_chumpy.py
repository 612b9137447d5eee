"""A fake ``chumpy`` that exists only while a test pickles a MANO-format model with it.

The official MANO pickles hold ``shapedirs`` as a ``chumpy.reordering.Select`` over a ``chumpy.ch.Ch``
(DATASETS.md, "MANO model file"). Real chumpy does not import on current Python / NumPy, so the fixture files
are written through look-alike classes: same module and class names, instances whose ``__dict__`` is the
state real chumpy pickles, and ``Ch.__getstate__`` dropping ``_parents`` and ``_cache`` as chumpy's does.
``Select`` subclasses ``Ch`` as in chumpy (``Select`` -> ``Permute`` -> ``Ch``), so it inherits that.

:func:`fake_chumpy` puts the package (``chumpy``, ``chumpy.ch``, ``chumpy.reordering``) into ``sys.modules``
and takes it out again on exit, restoring whatever was there; :func:`write_chumpy_mano` uses it to write a
protocol-2 pickle of a model dict whose ``shapedirs`` is such a ``Select``.
"""

from __future__ import annotations

import pickle
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

# What chumpy keeps in every instance besides its own fields (pickled) and its graph links (not pickled).
BOOKKEEPING = {"_dirty_vars": set, "_itr": lambda: None, "_make_dense": lambda: False,
               "_make_sparse": lambda: False, "_depends_on_deps": dict}
NOT_PICKLED = ("_parents", "_cache")
MODULES = ("chumpy", "chumpy.ch", "chumpy.reordering")


def _make_modules() -> dict[str, types.ModuleType]:
    """Fresh ``chumpy`` package modules holding ``Ch`` and ``Select`` under their real dotted names."""

    class Ch:
        def __init__(self, x):
            self.__dict__.update({k: make() for k, make in BOOKKEEPING.items()})
            self.__dict__.update({"_parents": {}, "_cache": {}})  # live-graph state chumpy does not pickle
            self.x = np.asarray(x, dtype=np.float64)

        def __getstate__(self):
            return {k: v for k, v in self.__dict__.items() if k not in NOT_PICKLED}

    class Select(Ch):
        def __init__(self, a, idxs, preferred_shape):
            self.__dict__.update({k: make() for k, make in BOOKKEEPING.items()})
            self.__dict__.update({"_parents": {}, "_cache": {}})
            self.a = a
            self.idxs = np.asarray(idxs, dtype=np.int64)
            self.preferred_shape = tuple(preferred_shape)

    package = types.ModuleType("chumpy")
    package.__path__ = []  # a package, so "chumpy.ch" is a submodule of it
    ch = types.ModuleType("chumpy.ch")
    reordering = types.ModuleType("chumpy.reordering")
    for cls, module in ((Ch, ch), (Select, reordering)):
        cls.__module__, cls.__qualname__ = module.__name__, cls.__name__
        setattr(module, cls.__name__, cls)
    package.ch, package.reordering, package.Ch = ch, reordering, Ch
    return {"chumpy": package, "chumpy.ch": ch, "chumpy.reordering": reordering}


@contextmanager
def fake_chumpy() -> Iterator[types.ModuleType]:
    """Install the fake ``chumpy`` package in ``sys.modules``; yield it; remove it (restoring what was there)."""
    saved = {name: sys.modules.get(name) for name in MODULES}
    modules = _make_modules()
    sys.modules.update(modules)
    try:
        yield modules["chumpy"]
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def shapedirs_select(chumpy: types.ModuleType, full: np.ndarray, n: int = 10):
    """``Select`` of the first ``n`` components of a (778, 3, K) ``Ch``, as in the official files."""
    idxs = np.arange(full.size).reshape(full.shape)[:, :, :n].ravel()
    return chumpy.reordering.Select(chumpy.ch.Ch(full), idxs, full.shape[:2] + (n,))


def write_chumpy_mano(path: str | Path, arrays: dict) -> Path:
    """Pickle (protocol 2) the model dict ``arrays`` with ``shapedirs`` (778, 3, K) stored as a chumpy
    ``Select`` of its first 10 components; the fake chumpy is gone again when this returns."""
    path = Path(path)
    with fake_chumpy() as chumpy:
        payload = dict(arrays)
        payload["shapedirs"] = shapedirs_select(chumpy, np.asarray(arrays["shapedirs"]))
        payload["bs_style"], payload["bs_type"] = "lbs", "lrotmin"
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path
