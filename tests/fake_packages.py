"""Real installed plugin distributions for tests: a dist-info directory and a module on a
temporary ``sys.path`` entry (the ``site`` fixture), found through the entry-point group as
pip-installed ones are."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

SWISH = """
    import numpy as np
    import microfw as mf

    class Swish(mf.Activation):
        '''y = x sigmoid(x).'''
        name = "swish"
        def forward(self, x):
            return x / (1 + np.exp(-x))
        def derivative(self, x, y):
            s = 1 / (1 + np.exp(-x))
            return s + x * s * (1 - s)

    @mf.hookimpl
    def register_activations():
        return [Swish]
"""
"""A working plugin module registering the activation ``swish``."""


def install(root: Path, dist: str, body: str) -> str:
    """Install distribution ``dist`` (version 1.2.3) with one module under ``root``."""
    module = dist.replace("-", "_")
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{module}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[microfw]\n{module} = {module}\n")
    importlib.invalidate_caches()
    return module
