"""A test-only activation, ``cube``, registered in a private registry as if from a package."""

from __future__ import annotations

from typing import Any

import microfw as mf


class Cube(mf.Activation):
    """y = x^3."""

    name = "cube"

    def forward(self, x: Any) -> Any:
        return x**3

    def derivative(self, x: Any, y: Any) -> Any:
        return 3 * x**2


def cube_model() -> mf.Sequential:
    """A 2-1 linear model followed by ``cube``, built in a registry (``model.registry``) where
    ``cube`` comes from the package ``cube-plugins``; the default registry lacks it."""
    with_cube = mf.Registry()
    with_cube.register(Cube, package="cube-plugins")
    return mf.Sequential(
        [{"type": "linear", "units": 1}, "cube"],
        input_dim=2,
        loss="squared_error",
        registry=with_cube,
    )
