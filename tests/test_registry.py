"""The plugin registry: inline plugins, a fresh Registry per test, fake installed packages."""

from __future__ import annotations

import numpy as np
import pytest
from fake_packages import SWISH, install

import microfw as mf
from microfw.core.registry import ALLOW_ENV, DISABLE_AUTOLOAD_ENV, using


class Softsign(mf.Activation):
    """y = x / (1 + |x|)."""

    name = "softsign"

    def forward(self, x):
        return x / (1 + np.abs(x))

    def derivative(self, x, y):
        return 1 / (1 + np.abs(x)) ** 2


class Cube(mf.Activation):
    """y = x^3."""

    name = "cube"
    scale: float = 1.0

    def forward(self, x):
        return self.scale * x**3

    def derivative(self, x, y):
        return 3 * self.scale * x**2


@pytest.fixture
def empty() -> mf.Registry:
    return mf.Registry(entry_points=False)


@pytest.fixture
def full() -> mf.Registry:
    return mf.Registry(autoload=False)


def test_register_in_process_is_usable_by_name_with_provenance(empty):
    empty.register(Softsign)
    assert empty.get("activation", "softsign") is Softsign
    entry = empty.entry("activation", "softsign")
    assert entry.provenance.package == __name__
    assert entry.provenance.version is None
    act = empty.create("activation", "softsign")
    assert isinstance(act, Softsign)
    np.testing.assert_allclose(act.forward(np.array([1.0, -3.0])), [0.5, -0.75])


def test_entry_of_and_origin_name_only_the_class_registered_under_the_name(empty):
    class Lookalike(Softsign):  # the same kind and name, another class
        pass

    empty.register(Softsign)
    assert empty.entry_of("activation", "softsign", Softsign) is empty.entry(
        "activation", "softsign"
    )
    assert empty.entry_of("activation", "softsign", Lookalike) is None
    assert empty.entry_of("activation", "nothing", Softsign) is None
    assert empty.origin(Softsign()) == f"package {__name__}"
    assert empty.origin(Lookalike()) == f"module {__name__} (not registered)"


def test_register_decorator_goes_to_the_registry_in_use(empty):
    with using(empty):

        @mf.register
        class Twice(mf.Activation):
            """y = 2x."""

            name = "twice"

            def forward(self, x):
                return 2 * x

            def derivative(self, x, y):
                return np.full_like(x, 2.0)

    assert empty.names("activation") == ["twice"]


def test_builtins_arrive_through_the_entry_point_group(full):
    entry = full.entry("activation", "sigmoid")
    assert entry.provenance.package == "microfw"
    assert entry.provenance.version == mf.__version__
    assert entry.provenance.source == "microfw_plugins.activations"
    assert entry.cls.__module__ == "microfw_plugins.activations"


def test_duplicate_name_names_both_classes_and_packages(full):
    class FakeSigmoid(Softsign):
        name = "sigmoid"

    with pytest.raises(mf.DuplicatePluginError) as info:
        full.register(FakeSigmoid, package="my-pkg")
    message = str(info.value)
    assert "'sigmoid'" in message
    assert "microfw_plugins.activations.Sigmoid from microfw" in message
    assert "FakeSigmoid from my-pkg" in message
    # The failed registration leaves the registry as it was.
    assert full.get("activation", "sigmoid").__module__ == "microfw_plugins.activations"


def test_layers_and_activations_share_a_namespace(full):
    class LinearAct(Softsign):
        name = "linear"

    with pytest.raises(mf.DuplicatePluginError, match="'linear' is registered twice"):
        full.register(LinearAct)

    class SigmoidLayer(full.get("layer", "linear")):
        name = "sigmoid"

    with pytest.raises(mf.DuplicatePluginError, match="'sigmoid' is registered twice"):
        full.register(SigmoidLayer)


def test_registering_the_same_class_twice_is_harmless(empty):
    empty.register(Softsign)
    empty.register(Softsign)
    assert empty.names("activation") == ["softsign"]


def test_unknown_name_gives_did_you_mean_and_available(full):
    with pytest.raises(mf.PluginNotFoundError) as info:
        full.get("activation", "sigmod")
    message = str(info.value)
    assert "unknown activation 'sigmod'" in message
    assert "did you mean 'sigmoid'?" in message
    assert "relu" in message


def test_unknown_kind_is_a_value_error(full):
    with pytest.raises(ValueError, match="unknown plugin kind 'activations'"):
        full.names("activations")


def test_register_rejects_non_plugin_classes(empty):
    with pytest.raises(mf.PluginError, match="must subclass one of"):
        empty.register(int)  # type: ignore[arg-type]


def test_params_are_validated_with_paths(empty):
    empty.register(Cube)
    assert empty.create("activation", {"type": "cube", "scale": 2}).scale == 2
    with pytest.raises(mf.SpecError) as info:
        empty.create("activation", {"type": "cube", "scale": "big", "sclae": 1})
    paths = {p.path for p in info.value.problems}
    assert paths == {"scale", "sclae"}
    assert "unknown parameter" in str(info.value)


def test_nested_references_resolve_and_report_paths(full):
    layer = full.create("layer", {"type": "linear", "units": 2, "init": {"type": "xavier"}})
    assert type(layer.init).name == "xavier"
    assert layer.get_params()["init"] == {"type": "xavier"}
    with pytest.raises(mf.SpecError) as info:
        full.create("layer", {"type": "linear", "units": 0, "init": "xavir"})
    by_path = {p.path: p.message for p in info.value.problems}
    assert set(by_path) == {"units", "init"}
    assert "did you mean 'xavier'" in by_path["init"]


def test_a_spec_s_nested_references_are_made_by_the_registry_not_the_constructor(full, monkeypatch):
    """Registry.create resolves a layer's ``init`` (given or by default) and a schedule's
    ``after`` before the constructor runs: with the constructor's resolver (for plugins built
    directly in Python) switched off, a spec still builds, through the registry that builds it."""
    from microfw.core import params

    def no_resolver(kind, reference):
        raise AssertionError(f"the constructor resolved the {kind} {reference!r}")

    made: list[str] = []
    create = full.create

    def create_and_record(kind, reference):
        made.append(kind)
        return create(kind, reference)

    monkeypatch.setattr(params, "_resolver", [no_resolver])
    monkeypatch.setattr(full, "create", create_and_record)
    layer = full.create("layer", {"type": "linear", "units": 2, "init": {"type": "he"}})
    assert (type(layer.init).name, type(layer.bias_init).name) == ("he", "zeros")  # a default
    assert made == ["layer", "initializer", "initializer"]
    after = {"type": "cosine", "t_max": 10}
    schedule = full.create("schedule", {"type": "warmup", "warmup": 3, "after": after})
    assert schedule.get_params()["after"] == {**after, **schedule.after.get_params()}
    spec = {
        "spec_version": 1,
        "input_dim": 2,
        "layers": [{"type": "linear", "units": 3, "init": "he", "activation": "relu"}],
        "loss": "squared_error",
        "optimizer": {"type": "sgd", "schedule": {"type": "warmup", "warmup": 2}},
    }
    with using(full):
        model = mf.build(spec)
    assert type(model.layers[0].init).name == "he"
    with pytest.raises(mf.SpecError, match="the constructor resolved the initializer 'he'"):
        full.get("layer", "linear")(units=2, init="he")  # built directly: the resolver's job


def test_create_rejects_other_reference_shapes(full):
    with pytest.raises(mf.SpecError, match="expected a loss name"):
        full.create("loss", 3)
    with pytest.raises(mf.SpecError, match="type: missing"):
        full.create("loss", {"units": 3})


# -- third-party packages on the path --------------------------------------------------------


def test_installed_package_is_found_with_provenance(site):
    install(site, "mf-swish", SWISH)
    registry = mf.Registry()
    entry = registry.entry("activation", "swish")
    assert (entry.provenance.package, entry.provenance.version) == ("mf-swish", "1.2.3")
    assert registry.has("activation", "sigmoid")


def test_disable_autoload_keeps_builtins_only(site, monkeypatch):
    install(site, "mf-swish", SWISH)
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    registry = mf.Registry()
    assert not registry.has("activation", "swish")
    assert registry.has("activation", "sigmoid")


def test_allow_list_filters_packages(site, monkeypatch):
    install(site, "mf-swish", SWISH)
    assert not mf.Registry(allow=["someone-else"]).has("activation", "swish")
    assert mf.Registry(allow=["mf_swish"]).has("activation", "swish")
    monkeypatch.setenv(ALLOW_ENV, "other,mf-swish")
    assert mf.Registry().has("activation", "swish")


def test_broken_packages_are_reported_and_the_others_keep_working(site):
    install(site, "mf-broken", "raise RuntimeError('boom')\n")
    install(
        site,
        "mf-wrong",
        """
        import microfw as mf

        class NotAnActivation:
            name = "nope"

        class Abstract(mf.Activation):
            name = "abstract"

        @mf.hookimpl
        def register_activations():
            return [NotAnActivation, Abstract]
        """,
    )
    install(site, "mf-swish", SWISH)
    registry = mf.Registry()
    with pytest.warns(RuntimeWarning, match="microfw plugin skipped"):
        assert registry.has("activation", "swish")
    messages = [str(p) for p in registry.problems]
    assert any(
        "mf_broken (from mf-broken): failed to import: RuntimeError: boom" in m for m in messages
    )
    assert any(
        "from mf-wrong" in m and "does not subclass microfw.Activation" in m for m in messages
    )
    assert any("is abstract: implement derivative, forward" in m for m in messages)
    assert not registry.has("activation", "nope")


def test_register_refuses_an_unusable_class_at_once(empty):
    class Unnamed(mf.Activation):
        """y = x."""

        def forward(self, x):
            return x

        def derivative(self, x, y):
            return np.ones_like(x)

    class Abstract(mf.Activation):
        """No forward."""

        name = "abstract"

    with pytest.raises(mf.PluginError, match=r"cannot register .*Unnamed: .*no valid `name`"):
        empty.register(Unnamed)
    with pytest.raises(mf.PluginError, match=r"is abstract: implement derivative, forward"):
        empty.register(Abstract)
    assert empty.names("activation") == []
