"""ONNX export (microfw.onnx): every example model and random deep specs, run by onnxruntime
and compared with model.predict; metadata; the dynamic batch; refusal of unmapped plugins."""

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

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SPECS = sorted(ROOT.glob("examples/*/*.json"))
RTOL = {"float64": 1e-12, "float32": 1e-6}
# Every activation the installed packages register; the example package's softsign included.
ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu", "identity", "softsign"]


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


def assert_matches(model: mf.Sequential, path: Path, X: np.ndarray) -> None:
    """The exported file passes the full checker; onnxruntime agrees with predict."""
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    expected = model.predict(X)
    got = run_onnx(path, X.astype(model.dtype))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL[model.dtype.name], atol=0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
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
    """A deep random stack: 3-8 linear layers of 1-16 units, each followed by a random
    activation (or none), with or without bias; a softmax head half the time."""
    layers: list[Any] = []
    for _ in range(int(rng.integers(3, 9))):
        layer: dict[str, Any] = {"type": "linear", "units": int(rng.integers(2, 17))}
        layer["use_bias"] = bool(rng.random() < 0.8)
        if rng.random() < 0.3:
            layer["init"] = {"type": "normal", "std": float(rng.uniform(0.1, 1.0))}
            layer["bias_init"] = {"type": "normal", "std": 0.5}
        layers.append(layer)
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


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(12))
def test_random_deep_specs_match(seed: int, dtype: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    spec = random_spec(rng, dtype)
    model = mf.build(spec)
    X = rng.normal(scale=2.0, size=(40, model.input_dim))
    export(model, tmp_path / "random.onnx")
    assert_matches(model, tmp_path / "random.onnx", X)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", [*ACTIVATIONS, "softmax"])
def test_each_activation_matches_at_extreme_inputs(
    activation: str, dtype: str, tmp_path: Path
) -> None:
    """Through a linear layer with identity weights: inputs from -1e4 to 1e4, where sigmoid's
    exponent is capped and tanh, softsign and softmax saturate."""
    model = mf.build(
        {
            "spec_version": 1,
            "input_dim": 4,
            "layers": [{"type": "linear", "units": 4}, activation],
            "loss": "squared_error",
            "dtype": dtype,
        }
    )
    model.set_weights([np.eye(4), np.zeros(4)])
    values = np.concatenate([-np.logspace(-3, 4, 30), [0.0], np.logspace(-3, 4, 30)])
    X = np.random.default_rng(0).permutation(np.resize(values, 244)).reshape(61, 4)
    export(model, tmp_path / "act.onnx")
    assert_matches(model, tmp_path / "act.onnx", X)


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
