"""Random-number isolation: the data stream's randomness never depends on training's, and back.

Checkpoints store every rank's global RNG states (:func:`hotrain.checkpoint.rng_state`); an exact resume
restores them and re-creates the epoch's loader, which must then draw exactly what it drew the first time.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Callable, Iterable

import numpy as np
import torch

from hotrain.checkpoint import rng_state, set_rng_state


@contextmanager
def preserved_rng():
    """Run a block without touching the global RNGs (python, numpy, torch CPU) that training uses."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


class IsolatedRNG:
    """Iterate ``make()``'s iterable with its own global-RNG states, seeded from ``seed``.

    Whatever randomness the data pipeline draws from the global generators (transforms v2 use torch's,
    DataLoader draws its worker base seed from it) then depends only on the seed and on how many batches were
    drawn, never on training (dropout) or on when the loader was made: a resumed run that re-creates an
    epoch's loader and skips the done batches sees exactly the batches of an uninterrupted run.
    """

    def __init__(self, make: Callable[[], Iterable], seed: int):
        with preserved_rng():
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            self._it = iter(make())
            self._state = rng_state()

    def __iter__(self):
        return self

    def __next__(self):
        outer = rng_state()
        set_rng_state(self._state)
        try:
            return next(self._it)
        finally:
            self._state = rng_state()
            set_rng_state(outer)
