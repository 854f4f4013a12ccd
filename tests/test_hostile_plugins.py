"""Plugin packages that try to escape the registry's isolation (issue 11, items 2 and 3), and
look-alike names.

Each package is a real installed distribution on a temporary ``sys.path`` (``site``); the
registry must report it with its package and keep every other plugin working.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_packages import SWISH, install
from subprocesses import run_module

import microfw as mf

# Each escapes in its own way; the message expected for it.
ESCAPES = {
    "mf-bad-signature": (  # pluggy refuses it when registering: it used to break every lookup
        """
        import microfw as mf

        @mf.hookimpl
        def register_activations(config):
            return []
        """,
        "cannot be registered: PluginValidationError",
    ),
    "mf-hook-exits": (  # used to end the caller's process at the first lookup
        """
        import sys
        import microfw as mf

        @mf.hookimpl
        def register_losses():
            sys.exit(3)
        """,
        "register_losses() raised SystemExit(3)",
    ),
    "mf-name-raises": (
        """
        import numpy as np
        import microfw as mf

        class Meta(type(mf.Activation)):
            @property
            def name(cls):
                raise RuntimeError("no name today")

        class Nameless(mf.Activation, metaclass=Meta):
            "y = x."
            def forward(self, x):
                return x
            def derivative(self, x, y):
                return np.ones_like(x)

        @mf.hookimpl
        def register_activations():
            return [Nameless]
        """,
        "cannot be inspected (RuntimeError: no name today)",
    ),
    "mf-class-raises": (
        """
        import microfw as mf

        class Shifty:
            @property
            def __class__(self):
                raise RuntimeError("who am I")
            def __repr__(self):
                raise RuntimeError("no repr either")

        @mf.hookimpl
        def register_layers():
            return [Shifty()]
        """,
        "cannot be inspected (RuntimeError: who am I)",
    ),
}


def env_with(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROFW_")}
    return {**env, "PYTHONPATH": str(site)}


def test_every_escaping_package_is_reported_and_the_rest_works(site: Path) -> None:
    for dist, (body, _) in ESCAPES.items():
        install(site, dist, body)
    install(site, "mf-swish", SWISH)
    registry = mf.Registry()
    with pytest.warns(RuntimeWarning, match="microfw plugin skipped"):
        assert registry.has("activation", "swish")
    reports = {p.package: str(p) for p in registry.problems}
    assert reports.keys() == ESCAPES.keys()
    for dist, (_, message) in ESCAPES.items():
        assert f"(from {dist})" in reports[dist] and message in reports[dist], reports[dist]
    model = mf.build(
        {
            "spec_version": 1,
            "input_dim": 2,
            "layers": [
                {"type": "linear", "units": 3, "activation": "swish"},
                {"type": "linear", "units": 1},
            ],
            "loss": "squared_error",
            "optimizer": "sgd",
        },
        registry,
    )
    history = model.fit(np.eye(2), np.ones(2), epochs=2)
    assert np.isfinite(history.history["loss"]).all()


def test_a_fusion_hook_that_exits_or_returns_junk_is_reported_and_the_rules_stay(
    site: Path,
) -> None:
    install(
        site,
        "mf-fusions-exit",
        "import sys\nimport microfw as mf\n\n@mf.hookimpl\n"
        "def register_fusions():\n    sys.exit(4)\n",
    )
    install(
        site,
        "mf-fusions-junk",
        "import microfw as mf\n\n@mf.hookimpl\n"
        "def register_fusions():\n    return ['linear+relu']\n",
    )
    registry = mf.Registry()
    builtin = {entry.rule.label() for entry in mf.Registry(autoload=False).fusions()}
    with pytest.warns(RuntimeWarning, match="microfw plugin skipped"):
        assert {entry.rule.label() for entry in registry.fusions()} == builtin
    reports = {p.package: str(p) for p in registry.problems}
    assert "register_fusions() raised SystemExit(4)" in reports["mf-fusions-exit"]
    assert "'linear+relu' is not a Fusion or LossFusion" in reports["mf-fusions-junk"]


def test_the_command_line_lists_a_package_with_a_bad_hook_signature(site: Path) -> None:
    install(site, "mf-bad-signature", ESCAPES["mf-bad-signature"][0])
    install(site, "mf-swish", SWISH)
    result = run_module("microfw", "plugins", env=env_with(site))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "swish" in result.stdout and "sgd" in result.stdout
    problem = "mf_bad_signature (from mf-bad-signature): cannot be registered"
    (line,) = [line for line in result.stdout.splitlines() if problem in line]
    assert "'config'" in line  # the argument pluggy refused, on the same line


# -- look-alike names -----------------------------------------------------------------------

LOOKALIKES = """
    import numpy as np
    import microfw as mf

    def identity(name):
        class Identity(mf.Activation):
            "y = x."
            def forward(self, x):
                return x
            def derivative(self, x, y):
                return np.ones_like(x)
        Identity.name = name
        return Identity

    @mf.hookimpl
    def register_activations():
        names = ("reIu", "ReLU", "relu.", "Sigm0id", "Linear", "my_relu")
        return [identity(n) for n in names]
"""


def test_look_alike_names_are_refused_and_reported(site: Path) -> None:
    install(site, "mf-lookalikes", LOOKALIKES)
    registry = mf.Registry()
    with pytest.warns(RuntimeWarning, match="looks like"):
        names = registry.names("activation")
    assert "my_relu" in names  # a distinct name is fine
    for name in ("reIu", "ReLU", "relu.", "Sigm0id"):
        assert name not in names
    assert "Linear" not in names
    reports = [str(p) for p in registry.problems]
    assert len(reports) == 5
    assert any("'reIu' looks like the activation 'relu' from microfw" in r for r in reports)
    assert any("'Linear' looks like the layer 'linear'" in r for r in reports)
    assert registry.entry("activation", "relu").provenance.package == "microfw"


def test_registering_a_look_alike_in_a_script_is_an_error() -> None:
    class Shouting(mf.Activation):
        """y = x."""

        name = "RELU"

        def forward(self, x: Any) -> Any:
            return x

        def derivative(self, x: Any, y: Any) -> Any:
            return np.ones_like(x)

    registry = mf.Registry()
    with pytest.raises(mf.PluginError, match="'RELU' looks like the activation 'relu'"):
        registry.register(Shouting)
    assert not registry.has("activation", "RELU")
    assert registry.has("activation", "relu")


def test_no_two_builtin_names_look_alike() -> None:
    from microfw.core.registry import skeleton

    entries = mf.Registry(autoload=False).entries()
    shapes = [(e.kind in ("layer", "activation") or e.kind, skeleton(e.name)) for e in entries]
    assert len(set(shapes)) == len(shapes)


# -- a plugin whose parameters have no JSON Schema -------------------------------------------

CALLABLE_PARAMETER = """
    from typing import Callable
    import numpy as np
    import microfw as mf

    def double(x):
        return 2 * x

    class Mapped(mf.Activation):
        "y = f(x), for a Python function f."
        name = "mapped"
        f: Callable[[float], float] = double
        def forward(self, x):
            return self.f(x)
        def derivative(self, x, y):
            return np.full_like(x, 2.0)

    @mf.hookimpl
    def register_activations():
        return [Mapped]
"""


def test_a_parameter_without_a_json_schema_leaves_out_its_plugin_only(site: Path) -> None:
    install(site, "mf-callable", CALLABLE_PARAMETER)
    install(site, "mf-swish", SWISH)
    registry = mf.Registry()
    with pytest.warns(RuntimeWarning, match=r"'mapped' from mf-callable 1.2.3: its parameters"):
        schema = mf.json_schema(registry)
    assert "activation.swish" in schema["$defs"]
    assert "activation.mapped" not in schema["$defs"]
    assert "mapped" not in schema["$defs"]["activation_ref"]["anyOf"][0]["enum"]
    result = run_module("microfw", "schema", env=env_with(site))
    assert result.returncode == 0, result.stderr
    assert "'mapped' from mf-callable 1.2.3" in result.stderr and "Traceback" not in result.stderr
    assert "activation.swish" in json.loads(result.stdout)["$defs"]
