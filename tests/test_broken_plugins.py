"""Broken and unwanted plugin packages: reported by name and package, the others keep working.

Packages are real installed distributions (a dist-info directory and a module on a temporary
``sys.path``), found through the entry-point group exactly as pip-installed ones are.
``test_registry.py`` covers a package failing to import, a non-subclass, an abstract class and
the basic allow-list; here are the other ways a package breaks, several at once, what never
runs, and a layer whose forward disagrees with its declared width.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_packages import SWISH, install
from zip_members import members

import microfw as mf
from microfw.core.registry import ALLOW_ENV, DISABLE_AUTOLOAD_ENV

# Each breaks in its own way; the message expected for it.
BROKEN = {
    "mf-hook-raises": (
        """
        import microfw as mf

        @mf.hookimpl
        def register_losses():
            raise KeyError("no config file")
        """,
        "register_losses() raised KeyError('no config file')",
    ),
    "mf-hook-returns-none": (
        """
        import microfw as mf

        @mf.hookimpl
        def register_layers():
            pass
        """,
        "register_layers() raised TypeError",
    ),
    "mf-instance": (
        """
        import numpy as np
        import microfw as mf

        class Double(mf.Activation):
            '''y = 2x.'''
            name = "double"
            def forward(self, x):
                return 2 * x
            def derivative(self, x, y):
                return np.full_like(x, 2.0)

        @mf.hookimpl
        def register_activations():
            return [Double()]
        """,
        "Double() is an instance; return the class mf_instance.Double itself",
    ),
    "mf-bad-name": (
        """
        import numpy as np
        import microfw as mf

        class Spaced(mf.Activation):
            '''y = x.'''
            name = "my relu"
            def forward(self, x):
                return x
            def derivative(self, x, y):
                return np.ones_like(x)

        @mf.hookimpl
        def register_activations():
            return [Spaced]
        """,
        "has no valid `name` (got 'my relu')",
    ),
    "mf-bad-annotation": (
        """
        from __future__ import annotations
        import numpy as np
        import microfw as mf

        class Scaled(mf.Activation):
            '''y = k x.'''
            name = "scaled"
            k: Scale = 1.0
            def forward(self, x):
                return self.k * x
            def derivative(self, x, y):
                return np.full_like(x, self.k)

        @mf.hookimpl
        def register_activations():
            return [Scaled]
        """,
        "annotations that cannot be resolved: NameError",
    ),
    "mf-exits": (
        """
        import sys
        sys.exit("run me as a script")
        """,
        "failed to import: SystemExit: run me as a script",
    ),
}


def test_every_broken_package_is_reported_and_the_rest_works(site: Path) -> None:
    for dist, (body, _) in BROKEN.items():
        install(site, dist, body)
    install(site, "mf-swish", SWISH)
    registry = mf.Registry()
    with pytest.warns(RuntimeWarning, match="microfw plugin skipped"):
        assert registry.has("activation", "swish")
    reports = {p.package: str(p) for p in registry.problems}
    assert reports.keys() == BROKEN.keys()
    for dist, (_, message) in BROKEN.items():
        assert f"(from {dist})" in reports[dist] and message in reports[dist], reports[dist]
    for name in ("double", "my relu", "scaled"):
        assert not registry.has("activation", name)
    model = mf.Sequential(
        [{"type": "linear", "units": 3, "activation": "swish"}, {"type": "linear", "units": 1}],
        input_dim=2,
        loss="squared_error",
        registry=registry,
    )
    history = model.fit(np.eye(2), np.ones(2), epochs=3)
    assert np.isfinite(history.history["loss"]).all()


def test_a_package_keeps_the_kinds_whose_hook_works(site: Path) -> None:
    install(
        site,
        "mf-half",
        """
        import numpy as np
        import microfw as mf

        class Abs(mf.Activation):
            '''y = |x|.'''
            name = "absolute"
            def forward(self, x):
                return np.abs(x)
            def derivative(self, x, y):
                return np.sign(x)

        @mf.hookimpl
        def register_activations():
            return [Abs]

        @mf.hookimpl
        def register_losses():
            raise RuntimeError("half done")
        """,
    )
    registry = mf.Registry()
    with pytest.warns(RuntimeWarning, match=r"mf_half \(from mf-half\).*half done"):
        assert registry.has("activation", "absolute")
    assert registry.entry("activation", "absolute").provenance.package == "mf-half"


# -- what never runs -------------------------------------------------------------------------

MARKER = """
    import pathlib
    pathlib.Path({path!r}).write_text("imported")
"""


@pytest.mark.parametrize(
    ("env", "allow"),
    [
        ({DISABLE_AUTOLOAD_ENV: "1"}, None),
        ({ALLOW_ENV: "mf-swish"}, None),
        ({}, ["mf-swish"]),
        ({}, []),
        ({ALLOW_ENV: "mf-eager"}, ["mf-swish"]),  # the argument wins over the environment
    ],
    ids=["autoload off", "env allow-list", "argument", "empty argument", "argument over env"],
)
def test_a_package_left_out_is_never_imported(
    site: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], allow: list[str] | None
) -> None:
    marker = site / "imported.txt"
    install(site, "mf-eager", MARKER.format(path=str(marker)))
    install(site, "mf-swish", SWISH)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    registry = mf.Registry(allow=allow)
    assert registry.has("activation", "sigmoid")  # microfw's own plugins always load
    assert registry.has("activation", "swish") == (allow == ["mf-swish"] or ALLOW_ENV in env)
    assert not marker.exists()
    assert "mf_eager" not in sys.modules


def test_nothing_is_imported_before_the_first_lookup(site: Path) -> None:
    marker = site / "imported.txt"
    install(site, "mf-eager", MARKER.format(path=str(marker)))
    registry = mf.Registry()
    assert not marker.exists()
    registry.names("activation")
    assert marker.read_text() == "imported"


def test_allow_list_names_are_normalised(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(site, "mf-swish", SWISH)
    monkeypatch.setenv(ALLOW_ENV, " other , MF_Swish ,")
    assert mf.Registry().has("activation", "swish")
    assert mf.Registry(allow=["MF.SWISH"]).has("activation", "swish")


def test_a_name_clash_names_both_packages_and_the_allow_list_resolves_it(site: Path) -> None:
    install(site, "mf-swish", SWISH)
    install(site, "mf-swish-fork", SWISH)
    with pytest.raises(mf.DuplicatePluginError) as info:
        mf.Registry().has("activation", "swish")
    message = str(info.value)
    assert "mf-swish 1.2.3" in message and "mf-swish-fork 1.2.3" in message
    assert mf.Registry(allow=["mf-swish-fork"]).entry("activation", "swish").provenance.package == (
        "mf-swish-fork"
    )


def test_a_model_needing_a_package_left_out_names_it(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(site, "mf-swish", SWISH)
    with_swish = mf.Registry()
    model = mf.Sequential(
        [{"type": "linear", "units": 1}, "swish"],
        input_dim=2,
        loss="squared_error",
        registry=with_swish,
    )
    path = site / "model.microfw"
    model.save(path)
    monkeypatch.setenv(ALLOW_ENV, "someone-else")
    with pytest.raises(mf.ModelFileError) as info:
        mf.load(path, mf.Registry())
    assert "activation 'swish' (from mf-swish 1.2.3)" in str(info.value)
    assert "MICROFW_PLUGINS" in str(info.value)
    assert b'"package": "mf-swish"' in members(path)["meta.json"]


# -- a forward that disagrees with the declared width ----------------------------------------

WRONG_SHAPES = """
    import numpy as np
    import microfw as mf

    class Duplicate(mf.Layer):
        '''y = [x, x], but declares output_dim = n_in.'''
        name = "duplicate"
        def output_dim(self, n_in):
            return n_in
        def forward(self, x, training=True):
            return np.hstack([x, x])
        def backward(self, dy):
            return dy[:, : dy.shape[1] // 2]

    class FirstRow(mf.Layer):
        '''y = x[:1]: drops rows.'''
        name = "first_row"
        def forward(self, x, training=True):
            return x[:1]
        def backward(self, dy):
            return dy

    class Single(mf.Activation):
        '''y = x in float32, whatever the model's dtype.'''
        name = "single"
        def forward(self, x):
            return x.astype(np.float32)
        def derivative(self, x, y):
            return np.ones_like(x)

    @mf.hookimpl
    def register_layers():
        return [Duplicate, FirstRow]

    @mf.hookimpl
    def register_activations():
        return [Single]
"""

ENTRY_POINTS = {
    "fit": lambda m, X, y: m.fit(X, y, epochs=1),
    "predict": lambda m, X, y: m.predict(X),
    "evaluate": lambda m, X, y: m.evaluate(X, y),
    "compute_gradients": lambda m, X, y: m.compute_gradients(X, y),
}


@pytest.mark.parametrize("call", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ("duplicate", r"layers\[1\]: layer 'duplicate' .* returned float64\[2, 6\] .* 2 row"),
        ("first_row", r"layers\[1\]: layer 'first_row' .* returned float64\[1, 3\]"),
        ("single", r"layers\[1\]: activation 'single' .* returned float32\[2, 3\]"),
    ],
)
def test_a_forward_returning_the_wrong_shape_or_dtype_is_named_with_its_package(
    site: Path, layer: str, message: str, call: str
) -> None:
    install(site, "mf-wrong-shapes", WRONG_SHAPES)
    registry = mf.Registry()
    model = mf.Sequential(
        [{"type": "linear", "units": 3}, layer, {"type": "linear", "units": 1}],
        input_dim=2,
        loss="squared_error",
        registry=registry,
    )
    before = model.get_weights()
    X, y = np.ones((5, 2)), np.ones(5)
    with pytest.raises(mf.PluginError, match=message) as info:
        ENTRY_POINTS[call](model, X, y)
    assert "from package mf-wrong-shapes 1.2.3" in str(info.value)
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)
    # The same registry still builds and runs models without the broken layer.
    fine = mf.Sequential(
        [{"type": "linear", "units": 1}], input_dim=2, loss="squared_error", registry=registry
    )
    ENTRY_POINTS[call](fine, X, y)


def test_the_forward_check_runs_once() -> None:
    calls = []

    class Counted(mf.Activation):
        """y = x."""

        name = "counted"

        def forward(self, x: Any) -> Any:
            calls.append(x.shape)
            return x

        def derivative(self, x: Any, y: Any) -> Any:
            return np.ones_like(x)

    registry = mf.Registry()
    registry.register(Counted)
    model = mf.Sequential(["counted"], input_dim=2, loss="squared_error", registry=registry)
    X = np.zeros((7, 2))
    model.predict(X)
    model.predict(X)
    model.evaluate(X, X)
    assert calls == [(2, 2), (7, 2), (7, 2), (7, 2)]


class Float64Weights(mf.default_registry().get("layer", "linear")):  # type: ignore[misc]
    """y = x W + b, keeping a float64 copy of W whatever the model's dtype."""

    name = "float64_weights"

    def build(self, n_in: int, store: Any) -> None:
        super().build(n_in, store)
        self.W = self.W.astype(np.float64)


def test_a_layer_computing_in_another_dtype_is_named() -> None:
    model = mf.Sequential(
        [Float64Weights(units=2)], input_dim=2, loss="squared_error", dtype="float32"
    )
    with pytest.raises(
        mf.PluginError,
        match=r"layers\[0\]: layer 'float64_weights' from .*: forward returned float64\[2, 2\] "
        r"for 2 row\(s\) of width 2, expected float32\[2, 2\]",
    ):
        model.predict(np.ones((3, 2)))
    # In float64 the same layer runs (its copy of W is the contract kit's to catch).
    mf.Sequential([Float64Weights(units=2)], input_dim=2, loss="squared_error").predict(
        np.ones((3, 2))
    )
