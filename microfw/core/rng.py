"""Random streams: one seed, independent streams per use, and the seed tutorials' legacy draws.

``seed`` feeds one :class:`numpy.random.SeedSequence` whose spawned children drive
initialisation, shuffling and the validation split, so that changing e.g. ``shuffle`` never
changes the initial weights. ``"rng": "legacy"`` draws the initial weights from
``numpy.random.RandomState(seed)`` instead, through :class:`LegacyRNG`, which reproduces the
seed tutorials' ``np.random.seed(s); np.random.randn(n_out, n_in)`` draws.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from microfw.core.interfaces import RNG, Array

RngKind = Literal["pcg64", "legacy"]


class LegacyRNG:
    """An :class:`~microfw.core.interfaces.RNG` over ``RandomState`` using the tutorials' layout.

    The tutorials store a dense weight as ``(n_out, n_in)``; microfw as ``(n_in, n_out)``. For a
    2-D shape the adapter draws the reversed shape and returns its transpose, so an initializer
    asking for ``(n_in, n_out)`` receives exactly the numbers the tutorials drew. Other shapes
    (biases) are drawn as asked: ``randn(n_out, 1)`` and ``randn(n_out)`` give the same values.
    """

    def __init__(self, state: np.random.RandomState) -> None:
        self.state = state

    def standard_normal(self, size: tuple[int, ...]) -> Array:
        """Standard normal values of ``size``; 2-D shapes drawn transposed (see the class)."""
        if len(size) == 2:
            return np.ascontiguousarray(self.state.standard_normal(size[::-1]).T)
        return self.state.standard_normal(size)

    def uniform(self, low: float, high: float, size: tuple[int, ...]) -> Array:
        """Uniform values in ``[low, high)`` of ``size``; 2-D shapes drawn transposed."""
        if len(size) == 2:
            return np.ascontiguousarray(self.state.uniform(low, high, size[::-1]).T)
        return self.state.uniform(low, high, size)


@dataclass(frozen=True)
class Streams:
    """The independent random streams of one model."""

    init: RNG
    shuffle: np.random.Generator
    split: np.random.Generator
    layers: np.random.SeedSequence
    """Where layers' own streams (dropout masks) derive from, one per name
    (:func:`named_stream`)."""


def make_streams(seed: int | None, kind: RngKind = "pcg64") -> Streams:
    """Spawn the init, shuffle and split streams from ``seed`` (None: fresh OS entropy).

    With ``kind="legacy"`` the init stream is ``LegacyRNG(RandomState(seed))``; shuffling and
    splitting still use spawned PCG64 streams (the tutorials never shuffled).
    """
    sequence = np.random.SeedSequence(seed)
    # A fourth child leaves the first three (and so every earlier stream) unchanged.
    init_seq, shuffle_seq, split_seq, layer_seq = sequence.spawn(4)
    init: RNG
    if kind == "legacy":
        init = LegacyRNG(np.random.RandomState(seed))
    else:
        init = np.random.default_rng(init_seq)
    shuffle, split = np.random.default_rng(shuffle_seq), np.random.default_rng(split_seq)
    return Streams(init, shuffle, split, layer_seq)


def named_stream(seeds: np.random.SeedSequence, name: str) -> np.random.Generator:
    """A generator derived from ``seeds`` and ``name`` alone: the same name always starts in
    the same state, whatever other streams were made or drawn from before."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    child = np.random.SeedSequence(seeds.entropy, spawn_key=(*seeds.spawn_key, key))
    return np.random.default_rng(child)
