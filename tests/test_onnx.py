"""ONNX export (microfw.onnx): every registered layer and activation (with parameter variants,
after a fit), every example model and random deep specs, run by onnxruntime and compared with
model.predict; metadata; the dynamic batch; refusal of unmapped plugins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cube_plugin import cube_model

import microfw as mf
from microfw.cli import main
from microfw.onnx import OnnxExportError, export, to_model_proto

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
# The models here pair layers for their numerics, not their training: the spec linter's advice
# (e.g. 'he' initialisation before relu) is beside the point.
pytestmark = pytest.mark.filterwarnings("ignore::microfw.errors.SpecWarning")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SPECS = sorted(ROOT.glob("examples/*/*.json"))
RTOL = {"float64": 1e-12, "float32": 1e-6}
DTYPES = ["float64", "float32"]
REGISTRY = mf.Registry()
# Every activation the installed packages register with an ONNX mapping: all the built-ins
# (test_every_registered_activation_maps_itself fails for one without) and the example
# package's softsign.
ACTIVATIONS = sorted(e.name for e in REGISTRY.entries("activation") if hasattr(e.cls, "to_onnx"))
NORMALISATIONS = ["dropout", "batch_norm", "layer_norm"]
KINDS = ("layer", "activation")
# Parameter variants, each exported after a fit (batch_norm's running statistics then differ
# from their initial 0 and 1, and the affine arrays from 1 and 0).
VARIANTS: list[dict[str, Any]] = [
    {"type": "elu", "alpha": 0.3},
    {"type": "gelu", "approximate": "tanh"},
    {"type": "softplus", "beta": 2.0, "threshold": 3.0},
    {"type": "leaky_relu", "alpha": 0.2},
    {"type": "dropout", "rate": 0.9},
    {"type": "batch_norm", "momentum": 0.5, "eps": 0.1},
    {"type": "batch_norm", "center": False},
    {"type": "batch_norm", "scale": False, "center": False, "eps": 1e-3},
    {"type": "layer_norm", "elementwise_affine": False},
    {"type": "layer_norm", "eps": 0.5},
]


def run_onnx(path: Path, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["Y"], {"X": X})
    return np.asarray(out)


def targets_for(model: mf.Sequential, rng: np.random.Generator, n: int) -> np.ndarray:
    """Targets the model's loss accepts: one-hot rows for categorical cross-entropy, else 0/1."""
    k = model.output_dim
    if model.loss.name == "categorical_crossentropy":
        return np.eye(k)[rng.integers(0, k, n)]
    return rng.integers(0, 2, (n, k)).astype(float)


def assert_matches(
    model: mf.Sequential,
    path: Path,
    X: np.ndarray,
    atol: np.ndarray | float = 0.0,
    rtol: float | None = None,
) -> None:
    """The exported file passes the full checker; onnxruntime agrees with predict: to the
    dtype's RTOL (or ``rtol``), with ``atol`` element-wise where given. Values below the
    dtype's smallest normal number count as 0 (onnxruntime may flush subnormals to 0)."""
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    expected = model.predict(X)
    got = run_onnx(path, X.astype(model.dtype))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    rtol = RTOL[model.dtype.name] if rtol is None else rtol
    error = np.abs(got - expected)
    bound = rtol * np.abs(expected) + atol + np.finfo(model.dtype).tiny
    assert np.all(error <= bound), (
        f"{np.sum(error > bound)} of {error.size} outside: worst at predict "
        f"{expected.flat[np.argmax(error - bound)]!r}, onnx {got.flat[np.argmax(error - bound)]!r}"
    )


def float32_rounding(model: mf.Sequential, X: np.ndarray) -> float:
    """How far a float32 model's predict is from the same model in float64 (its float32
    weights, inputs rounded to float32 alike), relative, at the worst output: the float32
    rounding its own stack compounds. Running statistics are not copied (unfitted models)."""
    wide = mf.build({**model.to_spec().to_dict(), "dtype": "float64"})
    wide.set_weights([w.astype(np.float64) for w in model.get_weights()])
    exact = wide.predict(X.astype(np.float32).astype(np.float64))
    off = np.abs(model.predict(X) - exact) - np.finfo(np.float32).tiny
    return float(np.max(off / np.where(exact == 0, np.inf, np.abs(exact)), initial=0.0))


def cancellation_atol(ref: Any, dtype: str, x: np.ndarray) -> np.ndarray | float:
    """The absolute difference allowed besides RTOL for the activation ``ref`` at inputs ``x``:
    0, except for gelu where 1 + tanh(.) (float32 and float64) or 1 + erf(.) (float32) cancels,
    i.e. x below about -3.7 (float64, tanh), -1.6 (float32). predict's own value is then a few
    units of the dtype's epsilon times |x| / 2, set by how NumPy's tanh (and, in float32 with
    numba, the C library's erff) round near -1, which the graph cannot reproduce bit for bit:
    it rounds as the correctly rounded function would. 4 units of that are allowed there."""
    params = ref if isinstance(ref, dict) else {"type": ref}
    if params["type"] != "gelu" or (params.get("approximate") != "tanh" and dtype == "float64"):
        return 0.0
    atol: np.ndarray = 4 * np.finfo(dtype).eps * np.abs(x.astype(dtype) / 2)
    return atol


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec_path", EXAMPLE_SPECS, ids=lambda p: p.stem)
def test_every_example_model_exports_and_matches(
    spec_path: Path, dtype: str, tmp_path: Path
) -> None:
    data = json.loads(spec_path.read_text())
    model = mf.build({**data, "dtype": dtype})
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, model.input_dim))
    model.fit(X, targets_for(model, rng, 64), epochs=20, validation_split=0.0)  # briefly
    export(model, tmp_path / "model.onnx")
    assert_matches(model, tmp_path / "model.onnx", rng.normal(size=(50, model.input_dim)))


def random_spec(rng: np.random.Generator, dtype: str) -> dict[str, Any]:
    """A deep random stack: 3-8 linear layers of 1-16 units, each followed by dropout, a
    batch_norm or a layer_norm a quarter of the time, then a random activation (or none), with
    or without bias; a softmax head half the time."""
    layers: list[Any] = []
    for _ in range(int(rng.integers(3, 9))):
        layer: dict[str, Any] = {"type": "linear", "units": int(rng.integers(2, 17))}
        layer["use_bias"] = bool(rng.random() < 0.8)
        if rng.random() < 0.3:
            layer["init"] = {"type": "normal", "std": float(rng.uniform(0.1, 1.0))}
            layer["bias_init"] = {"type": "normal", "std": 0.5}
        layers.append(layer)
        if rng.random() < 0.25:
            layers.append(str(rng.choice(NORMALISATIONS)))
        if rng.random() < 0.85:
            name = str(rng.choice(ACTIVATIONS))
            layers.append({"type": "leaky_relu", "alpha": 0.1} if name == "leaky_relu" else name)
    softmax = rng.random() < 0.5
    layers += ["softmax"] if softmax else [{"type": "linear", "units": 1}, "sigmoid"]
    return {
        "spec_version": 1,
        "input_dim": int(rng.integers(1, 12)),
        "layers": layers,
        "loss": "categorical_crossentropy" if softmax else "bce",
        "seed": int(rng.integers(0, 2**31)),
        "dtype": dtype,
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(12))
def test_random_deep_specs_match(seed: int, dtype: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    spec = random_spec(rng, dtype)
    model = mf.build(spec)
    X = rng.normal(scale=2.0, size=(40, model.input_dim))
    export(model, tmp_path / "random.onnx")
    # In float32, a unit in the last place that the graph rounds otherwise (an exp, a Gemm's
    # sum) grows through the stack as predict's own float32 rounding does: 1e-6, or within 4
    # times predict's own distance from the model in float64 where that is larger (that
    # distance reached 1.6e-5 over 300 seeds, the graph's from predict 1.6 times it at most).
    rtol = max(RTOL[dtype], 4 * float32_rounding(model, X)) if dtype == "float32" else None
    assert_matches(model, tmp_path / "random.onnx", X, rtol=rtol)


def ref_id(ref: Any) -> str:
    return ref if isinstance(ref, str) else ",".join(f"{k}={ref[k]}" for k in ref)


def after_linear(ref: Any, n_in: int, units: int, dtype: str, **spec: Any) -> mf.Sequential:
    """A model of a linear layer (``n_in`` -> ``units``) then ``ref``, squared error."""
    layers = [{"type": "linear", "units": units}, ref]
    return mf.build(
        {
            "spec_version": 1,
            "input_dim": n_in,
            "layers": layers,
            "loss": "squared_error",
            "dtype": dtype,
            **spec,
        }
    )


EXTREME_ACTIVATIONS = [*ACTIVATIONS, "softmax", *(v for v in VARIANTS if v["type"] in ACTIVATIONS)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", EXTREME_ACTIVATIONS, ids=ref_id)
def test_each_activation_matches_at_extreme_inputs(
    activation: Any, dtype: str, tmp_path: Path
) -> None:
    """Through a linear layer with identity weights: inputs from -1e4 to 1e4, where sigmoid's
    exponent is capped, exp overflows or underflows (silu, softplus, elu, mish...), softplus
    passes its threshold, tanh, erf, softsign and softmax saturate, and near 0 (expm1, log1p)."""
    model = after_linear(activation, 4, 4, dtype)
    model.set_weights([np.eye(4), np.zeros(4)])
    values = np.concatenate([-np.logspace(-3, 4, 30), [0.0], np.logspace(-3, 4, 30)])
    X = np.random.default_rng(0).permutation(np.resize(values, 244)).reshape(61, 4)
    dense = np.random.default_rng(1).normal(scale=4.0, size=(500, 4))  # every region of each
    export(model, tmp_path / "act.onnx")
    for inputs in (X, dense):
        atol = cancellation_atol(activation, dtype, inputs)
        assert_matches(model, tmp_path / "act.onnx", inputs, atol=atol)


def builtin(entry: Any) -> bool:
    return bool(entry.provenance.package == "microfw")


def fitted_model(ref: Any, dtype: str, seed: int = 0) -> tuple[mf.Sequential, Any]:
    """``ref`` after a linear layer of 5 units (3 inputs), as the model's last layer, briefly
    fitted (with random targets: weights, biases, gamma, beta and running statistics all move
    from their initial values); and fresh inputs of another scale than the training ones."""
    model = after_linear(
        ref,
        3,
        5,
        dtype,
        seed=seed,
        optimizer={"type": "sgd", "lr": 0.01},
        training={"batch_size": 16},
    )
    rng = np.random.default_rng(seed)
    X = rng.normal(2.0, 3.0, size=(96, 3))
    model.fit(X, rng.normal(size=(96, model.output_dim)), epochs=5, validation_split=0.0)
    return model, rng.normal(1.0, 4.0, size=(300, 3))


def pre_activation(model: mf.Sequential, X: np.ndarray) -> np.ndarray:
    """The first (linear) layer's output: the input of the layer under test."""
    W, b = model.get_weights()[:2]
    out: np.ndarray = X.astype(model.dtype) @ W + b
    return out


def affine_atol(layer: Any, dtype: str) -> np.ndarray | float:
    """The absolute difference allowed besides RTOL for a float32 layer_norm with beta: 1e-6
    of |beta|. Where gamma xhat + beta cancels, the unit in the last place by which the row's
    variance differs (NumPy's einsum adds the squares in its own order, dependent on the CPU's
    SIMD width; the graph adds them in float64 and rounds) shows relative to |y|, as in any
    float32 computation of it. Not needed in float64 (1e-12 leaves the room)."""
    if dtype != "float32" or layer.name != "layer_norm" or layer.beta is None:
        return 0.0
    atol: np.ndarray = RTOL[dtype] * np.abs(layer.beta)
    return atol


def check_exports(ref: Any, kind: str, dtype: str, tmp_path: Path, seed: int = 0) -> None:
    model, X = fitted_model(ref, dtype, seed)
    path = tmp_path / "plugin.onnx"
    export(model, path)
    if kind == "activation":
        atol = cancellation_atol(ref, dtype, pre_activation(model, X))
    else:
        atol = affine_atol(model.layers[-1], dtype)
    assert_matches(model, path, X, atol=atol)


def check_maps_itself(entry: Any, dtype: str, tmp_path: Path) -> None:
    """A built-in must export (with its example_params) and agree with predict after a fit;
    an installed plugin without a mapping is not claimed (a model using it is refused)."""
    if not hasattr(entry.cls, "to_onnx"):
        assert not builtin(entry), f"built-in {entry.kind} {entry.name!r} has no to_onnx"
        pytest.skip(f"{entry.kind} {entry.name!r} from {entry.provenance.package}: no mapping")
    check_exports({"type": entry.name, **entry.cls.example_params}, entry.kind, dtype, tmp_path)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_registered_layer_maps_itself(layer_entry: Any, dtype: str, tmp_path: Path) -> None:
    check_maps_itself(layer_entry, dtype, tmp_path)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_registered_activation_maps_itself(
    activation_entry: Any, dtype: str, tmp_path: Path
) -> None:
    check_maps_itself(activation_entry, dtype, tmp_path)


def test_every_builtin_layer_and_activation_is_registered_and_mapped() -> None:
    """The fan-out above covers these (a new built-in joins it, and must map itself)."""
    names = {(e.kind, e.name) for e in REGISTRY.entries() if builtin(e) and e.kind in KINDS}
    mapped = {
        (e.kind, e.name)
        for e in REGISTRY.entries()
        if e.kind in KINDS and hasattr(e.cls, "to_onnx")
    }
    assert {("layer", n) for n in ["linear", "softmax", *NORMALISATIONS]} <= names
    assert names <= mapped


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ref", VARIANTS, ids=ref_id)
def test_parameter_variants_export_and_match(
    ref: dict[str, Any], dtype: str, tmp_path: Path
) -> None:
    kind = "activation" if ref["type"] in ACTIVATIONS else "layer"
    check_exports(ref, kind, dtype, tmp_path)


def test_batch_norm_exports_its_running_statistics_not_the_batch_ones(tmp_path: Path) -> None:
    model, X = fitted_model({"type": "batch_norm", "momentum": 0.3}, "float64")
    layer = model.layers[1]
    assert not np.allclose(layer.running_mean, 0) and not np.allclose(layer.running_var, 1)
    export(model, tmp_path / "bn.onnx")
    for rows in (X[:1], X):  # one row: no batch statistics to fall back on
        assert_matches(model, tmp_path / "bn.onnx", rows)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 2, 7, 8, 13, 64, 131, 300])
def test_normalisations_round_as_numpy_where_x_minus_mean_cancels(
    width: int, dtype: str, tmp_path: Path
) -> None:
    """Rows far from 0 with features close to their mean (1e3 + N(0, 1)): x - mean keeps few
    digits, so any other rounding of the mean (a row sum in another order, for layer_norm;
    a scale-and-shift for batch_norm) would show at 1e-12. The widths cover NumPy's pairwise
    summation's branches (under 8, up to 128 in blocks of 8, beyond in halves)."""
    rng = np.random.default_rng(width)
    for layer in ({"type": "layer_norm", "elementwise_affine": False}, "layer_norm", "batch_norm"):
        model = mf.build(
            {"spec_version": 1, "input_dim": width, "layers": [layer], "loss": "squared_error"}
            | {"dtype": dtype}
        )
        # gamma from N(0, 1), beta 0: y = gamma xhat cancels nowhere, unlike gamma xhat + beta
        weights = [rng.normal(size=w.shape) * (i == 0) for i, w in enumerate(model.get_weights())]
        model.set_weights(weights)
        if layer == "batch_norm":
            bn = model.layers[0]
            bn.running_mean[...] = 1000 + rng.normal(size=width) * 1e-3
            bn.running_var[...] = rng.uniform(0.5, 2.0, width)
        export(model, tmp_path / "norm.onnx")
        X = 1000 + rng.normal(size=(200, width))
        assert_matches(model, tmp_path / "norm.onnx", X)


def test_graph_optimisations_do_not_change_the_results(tmp_path: Path) -> None:
    """onnxruntime's graph rewrites (e.g. Div(1, s) then Mul into one Div) would round
    otherwise: every built-in in one model gives the same bits optimised or not."""
    layers: list[Any] = [{"type": "linear", "units": 6}]
    for name in [*ACTIVATIONS, *VARIANTS, *NORMALISATIONS]:
        layers += [name, {"type": "linear", "units": 6}]
    model = mf.build(
        {"spec_version": 1, "input_dim": 3, "layers": layers, "loss": "squared_error", "seed": 5}
    )
    export(model, tmp_path / "all.onnx")
    X = np.random.default_rng(5).normal(scale=3.0, size=(200, 3))
    results = []
    for level in (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    ):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(
            str(tmp_path / "all.onnx"), options, providers=["CPUExecutionProvider"]
        )
        results.append(session.run(["Y"], {"X": X})[0])
    np.testing.assert_array_equal(results[0], results[1])


def test_interface_metadata_and_dynamic_batch(tmp_path: Path) -> None:
    model = mf.build(
        {
            "spec_version": 1,
            "input_dim": 3,
            "layers": [
                {"type": "linear", "units": 4, "activation": "softsign"},
                {"type": "linear", "units": 2, "use_bias": False},
            ],
            "loss": "squared_error",
            "seed": 3,
        }
    )
    path = tmp_path / "m.onnx"
    export(model, path)
    proto = onnx.load(str(path))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("X", "Y")
    for value, width in ((inp, 3), (out, 2)):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and dims[1].dim_value == width
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["microfw_version"] == mf.__version__
    assert json.loads(meta["spec"]) == model.to_spec().to_dict()
    plugins = {(p["kind"], p["name"]): p for p in json.loads(meta["plugins"])}
    assert plugins["activation", "softsign"]["package"] == "microfw-softsign"
    assert plugins["activation", "softsign"]["version"] == "0.1.0"
    assert {("layer", "linear"), ("loss", "squared_error"), ("optimizer", "sgd")} <= set(plugins)
    assert ("initializer", "xavier") in plugins
    rng = np.random.default_rng(1)
    for n in (1, 7, 300):  # any batch size, the same file
        X = rng.normal(size=(n, 3))
        np.testing.assert_allclose(run_onnx(path, X), model.predict(X), rtol=1e-12, atol=0)


def test_a_plugin_without_mapping_is_refused_by_name_and_nothing_written(
    tmp_path: Path,
) -> None:
    model = cube_model()
    path = tmp_path / "cube.onnx"
    with pytest.raises(
        OnnxExportError,
        match=r"activation 'cube' from package cube-plugins.*"
        r"has no ONNX mapping",
    ):
        export(model, path)
    assert list(tmp_path.iterdir()) == []


def test_export_leaves_an_existing_file_untouched_on_refusal(tmp_path: Path) -> None:
    path = tmp_path / "cube.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(OnnxExportError):
        export(cube_model(), path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["cube.onnx"]


def test_a_mapping_returning_no_tensor_name_is_named(tmp_path: Path) -> None:
    class Broken(mf.Activation):
        """y = x (with a broken ONNX mapping)."""

        name = "broken_identity"

        def forward(self, x: Any) -> Any:
            return x.copy()

        def derivative(self, x: Any, y: Any) -> Any:
            return np.ones_like(x)

        def to_onnx(self, ctx: Any, x: str) -> Any:
            return None

    registry = mf.Registry()
    registry.register(Broken, package="broken-pkg")
    model = mf.Sequential(
        [{"type": "linear", "units": 1}, "broken_identity"],
        input_dim=2,
        loss="squared_error",
        registry=registry,
    )
    with pytest.raises(OnnxExportError, match=r"broken_identity.*broken-pkg.*returned None"):
        to_model_proto(model)


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = mf.build(ROOT / "examples/xor/xor_2_3_1.json")
    model.save(tmp_path / "xor.microfw")
    assert main(["export", str(tmp_path / "xor.microfw"), str(tmp_path / "xor.onnx")]) == 0
    assert "xor.onnx" in capsys.readouterr().out
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    assert_matches(model, tmp_path / "xor.onnx", X)


def test_cli_export_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "missing.microfw"), str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("microfw: error:") and err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()
