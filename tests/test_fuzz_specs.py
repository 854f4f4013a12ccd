"""Hostile specs, generated: every input either builds a model or raises a ``SpecError``.

Any other exception (a ``TypeError`` from a constructor, a ``RecursionError``, numpy refusing
an array of 10**30 elements...) is a bug. Valid specs are mutated field by field (wrong types,
huge and negative numbers, NaN and infinity, unknown and misspelt names and keys, deep nesting,
long strings, unicode) and checked both as Python data and as JSON text (where NaN and
infinity are written ``NaN`` and ``Infinity``, which Python's ``json`` reads).

The CI profile runs a few thousand examples in all, the same ones every run (derandomized, see
``conftest.py``). For a long run with fresh draws, set the examples per test:
``MICROFW_FUZZ_EXAMPLES=10000 python -m pytest tests/test_fuzz_specs.py
--hypothesis-show-statistics``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import microfw as mf
from microfw.spec.models import MAX_PARAMETERS

settings.register_profile(
    "microfw-ci",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "microfw-fuzz",
    parent=settings.get_profile("microfw-ci"),
    derandomize=False,
    max_examples=int(os.environ.get("MICROFW_FUZZ_EXAMPLES", "0")) or 1000,
)
# Applied per test rather than loaded globally, so other modules keep their own settings.
FUZZ = settings.get_profile(
    "microfw-fuzz" if os.environ.get("MICROFW_FUZZ_EXAMPLES") else "microfw-ci"
)

BASES: list[dict[str, Any]] = [
    {
        "spec_version": 1,
        "input_dim": 2,
        "layers": [
            {"type": "linear", "units": 3, "init": "xavier"},
            {"type": "sigmoid"},
            {"type": "linear", "units": 1, "init": "xavier"},
            "sigmoid",
        ],
        "loss": "squared_error",
        "optimizer": {"type": "sgd", "lr": 1.0, "schedule": {"type": "exponential", "rate": 0.9}},
        "training": {"epochs": 10, "batch_size": None, "shuffle": True, "validation_split": 0.0},
        "seed": 48,
        "rng": "pcg64",
    },
    {
        "spec_version": 1,
        "input_dim": 4,
        "layers": [
            {"type": "linear", "units": 8, "activation": "relu"},
            {"type": "linear", "units": 3, "init": {"type": "normal", "std": 0.1}},
            "softmax",
        ],
        "loss": {"type": "categorical_crossentropy", "eps": 1e-7},
        "optimizer": {
            "type": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "nesterov": True,
            "schedule": {"type": "cosine", "t_max": 50, "lr_min": 0.0, "per": "step"},
        },
        "training": {"epochs": 3, "batch_size": 16, "shuffle": False, "validation_split": 0.2},
        "seed": 7,
        "dtype": "float32",
    },
    {
        "spec_version": 1,
        "input_dim": 3,
        "layers": [
            {
                "type": "linear",
                "units": 5,
                "init": "he",
                "bias_init": {"type": "normal", "std": 0.5},
                "activation": {"type": "leaky_relu", "alpha": 0.1},
            },
            {"type": "linear", "units": 1, "use_bias": False, "init": "glorot_uniform"},
        ],
        "loss": {"type": "bce", "from_logits": True},
        "optimizer": {"type": "sgd", "schedule": {"type": "step", "step_size": 10, "gamma": 0.5}},
        "seed": 48,
        "rng": "legacy",
    },
    {
        "spec_version": 1,
        "input_dim": 2,
        "layers": ["tanh"],
        "loss": "squared_error",
        "optimizer": {"type": "sgd", "schedule": {"type": "inverse_time", "decay": 0.1}},
    },
]

NAMES = sorted({e.name for e in mf.default_registry().entries()})
KEYS = sorted(
    {"type", "self", "params", "activation", "units", "init", "bias_init", "use_bias", "lr"}
    | {"spec_version", "input_dim", "layers", "loss", "optimizer", "training", "seed", "rng"}
    | {"dtype", "epochs", "batch_size", "shuffle", "validation_split", "schedule", "std"}
)


def misspell(word: str, data: st.DataObject) -> str:
    """A typo of ``word``: a letter dropped, doubled, swapped or changed, or the case changed."""
    i = data.draw(st.integers(0, max(len(word) - 1, 0)))
    how = data.draw(st.sampled_from(["drop", "double", "swap", "change", "upper"]))
    if not word or how == "upper":
        return word.upper() or "X"
    if how == "drop":
        return word[:i] + word[i + 1 :]
    if how == "double":
        return word[: i + 1] + word[i:]
    if how == "swap" and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + data.draw(st.characters()) + word[i + 1 :]


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` alternating lists and dicts."""
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"type": leaf}
    return leaf


NUMBERS = (
    st.integers(-3, 40)
    | st.integers()
    | st.sampled_from([0, -1, 2**31, 2**32, 2**63, -(2**63), 10**9, 10**30, MAX_PARAMETERS + 1])
    # Past float's range (an OverflowError if made a float) and near the 4300-digit limit.
    | st.sampled_from([10**309, -(10**309), 10**4000])
    | st.floats()  # NaN, infinities, -0.0, subnormals, 1e308
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 0.5, 1.0])
)
TEXT = (
    st.sampled_from(NAMES + KEYS + ["", " ", "float16", "legacy", "pcg64", "epoch", "step"])
    | st.text(max_size=12)  # unicode, combining marks, emoji, control characters
    | st.integers(100, 200_000).map(lambda n: "é" * n)  # very long strings
)
LEAVES = st.none() | st.booleans() | NUMBERS | TEXT
JSON = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6) | TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
VALUES = JSON | st.integers(1, 3000).map(nested)  # deep nesting, beyond the recursion limit


def paths(root: Any) -> list[tuple[Any, ...]]:
    """Every place in a JSON tree, as key/index tuples (``()`` is the root), without recursion.

    Places deeper than 20 levels (inside a deeply nested value) are left out.
    """
    out: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        out.append(path)
        if len(path) < 20 and isinstance(node, dict):
            stack += [((*path, k), v) for k, v in node.items()]
        elif len(path) < 20 and isinstance(node, list):
            stack += [((*path, i), v) for i, v in enumerate(node)]
    return sorted(out, key=len)


def mutate(spec: Any, data: st.DataObject) -> Any:
    """One mutation at a random place: replace, delete, add a key, or misspell a key or name."""
    path = data.draw(st.sampled_from(paths(spec)))
    parent: Any = None
    node = spec
    for part in path:
        parent, node = node, node[part]
    op = data.draw(st.sampled_from(["replace", "delete", "add", "misspell"]))
    if op == "replace" or (op == "delete" and parent is None):
        value = data.draw(VALUES)
        if parent is None:
            return value
        parent[path[-1]] = value
    elif op == "delete":
        del parent[path[-1]]
    elif op == "add" and isinstance(node, dict | list):
        value = data.draw(VALUES)
        if isinstance(node, dict):
            node[data.draw(st.sampled_from(KEYS) | st.text(max_size=8))] = value
        else:
            node.insert(data.draw(st.integers(0, len(node))), value)
    elif op == "misspell" and parent is not None:
        if isinstance(parent, dict):
            parent[misspell(path[-1], data)] = parent.pop(path[-1])
        elif isinstance(node, str):
            parent[path[-1]] = misspell(node, data)
    return spec


def depth(value: Any) -> int:
    """Nesting depth, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(node, dict):
            stack += [(v, d + 1) for v in node.values()]
        elif isinstance(node, list):
            stack += [(v, d + 1) for v in node]
    return deepest


def check(source: Any) -> None:
    """The property: a working model (within the limits) or a SpecError with located problems."""
    try:
        model = mf.build(source)
    except mf.SpecError as exc:
        event("SpecError")
        assert exc.problems
        assert all(isinstance(p.path, str) and p.message for p in exc.problems)
        str(exc).encode("utf-8")  # printable: lone surrogates from JSON text come out escaped
        assert len(str(exc)) < 2000 * len(exc.problems)  # long values are cut
        return
    event("built")
    assert sum(p.size for p in model.parameters()) <= MAX_PARAMETERS
    assert all(np.isfinite(p).all() for p in model.parameters())
    assert mf.load_spec(model.to_spec().to_json()) == model.to_spec()
    if model.input_dim <= 10_000:  # a wide input through activations alone builds for free
        assert model.predict(np.zeros((1, model.input_dim))).shape == (1, model.output_dim)


def check_as_data_and_text(spec: Any) -> None:
    if isinstance(spec, str):
        return  # a string is a path to a spec file; a JSON document that is a string is no spec
    check(spec)
    # Beyond ~900 levels json.dumps itself gives up; the text route is tested separately.
    if isinstance(spec, dict) and depth(spec) < 500:
        check(json.dumps(spec, allow_nan=True))


@FUZZ
@given(data=st.data())
def test_mutated_specs_build_or_raise_a_spec_error(data: st.DataObject) -> None:
    spec = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    for _ in range(data.draw(st.integers(1, 3))):
        spec = mutate(spec, data)
    check_as_data_and_text(spec)


@FUZZ
@given(value=JSON)
def test_any_json_document_builds_or_raises_a_spec_error(value: Any) -> None:
    check_as_data_and_text(value)


@FUZZ
@given(base=st.sampled_from(BASES), value=VALUES, data=st.data())
def test_any_value_at_any_place_builds_or_raises_a_spec_error(
    base: dict[str, Any], value: Any, data: st.DataObject
) -> None:
    spec = copy.deepcopy(base)
    path = data.draw(st.sampled_from(paths(spec)[1:]))
    node = spec
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    check_as_data_and_text(spec)


def test_the_bases_are_valid() -> None:
    for base in BASES:
        mf.build(base)
        mf.build(json.dumps(base))


@pytest.mark.parametrize("levels", [1000, 100_000])
def test_deeply_nested_json_text_is_a_spec_error(levels: int) -> None:
    text = '{"spec_version": 1, "layers": ' + "[" * levels + "]" * levels + "}"
    with pytest.raises(mf.SpecError) as info:
        mf.load_spec(text)
    assert info.value.problems


@pytest.mark.parametrize(
    ("field", "literal", "path"),
    [
        ('"lr": 1.0', '"lr": NaN', "optimizer.lr"),
        ('"rate": 0.9', '"rate": Infinity', "optimizer.schedule.rate"),
        ('"validation_split": 0.0', '"validation_split": -Infinity', "training.validation_split"),
        ('"seed": 48', '"seed": NaN', "seed"),
    ],
)
def test_json_nan_and_infinity_literals_are_refused_with_their_path(
    field: str, literal: str, path: str
) -> None:
    text = json.dumps(BASES[0])
    assert field in text
    with pytest.raises(mf.SpecError) as info:
        mf.load_spec(text.replace(field, literal))
    assert [p.path for p in info.value.problems] == [path]


def test_a_huge_model_is_refused_before_any_array_is_made() -> None:
    spec = copy.deepcopy(BASES[0])
    spec["layers"][0]["units"] = 10**9
    tracemalloc.start()
    try:
        with pytest.raises(mf.SpecError) as info:
            mf.build(spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000  # bytes: a 2 x 10**9 float64 weight would be 16 GB
    (problem,) = info.value.problems
    assert problem.path == "layers[0]"
    assert "3e+09 parameters" in problem.message and "MAX_PARAMETERS" in problem.message


def test_the_parameter_limit_is_exact_for_linear_layers() -> None:
    # 9999 * 1000 weights + 1000 biases = MAX_PARAMETERS exactly.
    assert MAX_PARAMETERS == 9999 * 1000 + 1000
    spec = {
        "spec_version": 1,
        "input_dim": 9999,
        "layers": [{"type": "linear", "units": 1000, "init": "zeros"}],
        "loss": "squared_error",
    }
    assert sum(p.size for p in mf.build(spec).parameters()) == MAX_PARAMETERS
    spec["layers"].append({"type": "linear", "units": 1})
    with pytest.raises(mf.SpecError, match="limit is 10,000,000") as info:
        mf.build(spec)
    assert [p.path for p in info.value.problems] == ["layers[1]"]
    # Element-wise activations have no parameters: a wide input through one is fine.
    mf.build({**spec, "input_dim": 10**7, "layers": ["relu"]})


@pytest.mark.parametrize("key", ["self", 1, None, "__class__"])
def test_odd_parameter_keys_are_listed_problems(key: Any) -> None:
    spec = copy.deepcopy(BASES[0])
    spec["layers"][0][key] = 1
    spec["optimizer"][key] = 2
    spec["optimizer"]["lr"] = -1.0
    with pytest.raises(mf.SpecError) as info:
        mf.build(spec)
    shown = key if isinstance(key, str) else f"[{key!r}]"
    assert {p.path: p.message for p in info.value.problems}.keys() == {
        f"layers[0].{shown}" if isinstance(key, str) else f"layers[0]{shown}",
        f"optimizer.{shown}" if isinstance(key, str) else f"optimizer{shown}",
        "optimizer.lr",
    }


def test_long_and_deep_values_are_cut_in_messages() -> None:
    spec = copy.deepcopy(BASES[0])
    spec["layers"][1] = "s" * 1_000_000
    spec["loss"] = {"type": nested(5000)}
    spec["seed"] = nested(5000)
    with pytest.raises(mf.SpecError) as info:
        mf.build(spec)
    assert {p.path for p in info.value.problems} == {"layers[1]", "loss.type", "seed"}
    assert len(str(info.value)) < 2000


@pytest.mark.parametrize("value", [[1, 2], 3, 2.5, True, None, ()])
def test_a_spec_that_is_not_an_object_is_a_spec_error(value: Any) -> None:
    with pytest.raises(mf.SpecError, match="expected a JSON object"):
        mf.load_spec(value)


def test_a_spec_file_that_is_not_utf8_is_a_spec_error(tmp_path: Any) -> None:
    path = tmp_path / "spec.json"
    path.write_bytes(b'{"spec_version": 1, "x": "\xff"}')
    with pytest.raises(mf.SpecError, match="not UTF-8 text: byte 26"):
        mf.load_spec(path)
