"""Every registered plugin, built-in or installed, passes microfw's contract checks."""

from __future__ import annotations

import pytest

from microfw import testing
from microfw.core.interfaces import INTERFACES

EXPECTED_CHECKS = {
    "layer": {
        "check_schema",
        "check_shapes_and_dtypes",
        "check_layer_gradient",
        "check_inference_mode",
        "check_fast_paths",
    },
    "activation": {
        "check_schema",
        "check_shapes_and_dtypes",
        "check_elementwise",
        "check_activation_gradient",
        "check_fast_paths",
    },
    "loss": {"check_schema", "check_shapes_and_dtypes", "check_loss_gradient", "check_fast_paths"},
    "initializer": {"check_schema", "check_initializer"},
    "optimizer": {"check_schema", "check_optimizer"},
    "schedule": {"check_schema", "check_schedule"},
    "regularizer": {"check_schema", "check_regularizer"},
    "metric": {"check_schema", "check_metric"},
}


def test_check_plugin_passes(plugin_entry, registry):
    ran = testing.check_plugin(plugin_entry.cls, registry=registry)
    assert set(ran) == EXPECTED_CHECKS[plugin_entry.kind]


def test_every_registered_fusion_rule_agrees_with_the_plain_methods(fusion_entry):
    testing.check_fusion(fusion_entry.rule)


def test_the_builtin_fusion_rules_are_registered(registry):
    labels = {f.rule.label() for f in registry.fusions()}
    dense = {f"linear+{a}" for a in ("sigmoid", "tanh", "relu", "leaky_relu", "identity", "relu6")}
    assert labels == dense | {
        "linear",
        "sigmoid+bce",
        "softmax+categorical_crossentropy",
        "softmax+sparse_categorical_crossentropy",
    }


def test_check_plugin_by_name(plugin_entry, registry):
    testing.check_plugin(plugin_entry.name, registry=registry, kind=plugin_entry.kind)


def test_registry_loads_without_problems(registry):
    registry.entries()
    assert registry.problems == []


def test_the_documented_builtin_names_are_registered(registry):
    names = {(e.kind, e.name) for e in registry.entries() if e.provenance.package == "microfw"}
    documented = (
        {("layer", n) for n in ("linear", "softmax")}
        | {("activation", n) for n in ("sigmoid", "relu", "tanh", "leaky_relu", "identity")}
        | {("loss", n) for n in ("squared_error", "bce", "categorical_crossentropy")}
        | {
            ("initializer", n)
            for n in ("plain", "xavier", "he", "glorot_uniform", "glorot_normal", "normal", "zeros")
        }
        | {("optimizer", n) for n in ("sgd", "adam", "adamw", "rmsprop", "adagrad")}
        | {
            ("schedule", n)
            for n in (
                "constant",
                "step",
                "exponential",
                "inverse_time",
                "cosine",
                "polynomial",
                "piecewise_constant",
                "warmup",
            )
        }
        | {("regularizer", n) for n in ("l1", "l2", "l1_l2")}
    )
    assert documented <= names, sorted(documented - names)


def test_every_checker_is_dispatched():
    dispatched = set().union(*EXPECTED_CHECKS.values())
    public = {n for n in dir(testing) if n.startswith("check_") and n != "check_plugin"}
    assert dispatched == public - {"check_fusion"}
    assert set(EXPECTED_CHECKS) == set(INTERFACES)


@pytest.mark.parametrize(
    ("kind", "ref"),
    [
        ("layer", {"type": "linear", "units": 2, "use_bias": False, "init": "he"}),
        ("activation", {"type": "leaky_relu", "alpha": 0.3}),
        ("loss", {"type": "bce", "from_logits": True}),
        ("loss", {"type": "bce", "eps": 1e-3}),
        ("initializer", {"type": "normal", "std": 0.3}),
        ("optimizer", {"type": "sgd", "lr": 0.1, "momentum": 0.9}),
        ("optimizer", {"type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}),
        ("schedule", {"type": "inverse_time", "decay": 0.1, "power": 0.5, "per": "step"}),
        ("schedule", {"type": "cosine", "t_max": 7, "lr_min": 0.01}),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={v[k]}" for k in v),
)
def test_parameter_variants_pass(kind, ref, registry):
    testing.check_plugin(registry.create(kind, ref), registry=registry)
