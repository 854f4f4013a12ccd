"""``microfw fit --resume MODEL`` continues a saved run bit-identically."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from zip_members import edit_json, members, npz, replace

import microfw as mf
from microfw.cli import main

SPEC = {
    "spec_version": 1,
    "input_dim": 2,
    "layers": [
        {"type": "linear", "units": 4, "activation": "tanh"},
        {"type": "linear", "units": 1},
        "sigmoid",
    ],
    "loss": "bce",
    "optimizer": {
        "type": "adam",
        "lr": 0.05,
        "schedule": {"type": "cosine", "t_max": 10, "per": "step"},
    },
    "training": {"epochs": 6, "batch_size": 3, "shuffle": True},
    "seed": 5,
}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    spec = tmp_path / "xor.json"
    spec.write_text(json.dumps(SPEC))
    data = tmp_path / "xor.csv"
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 2))
    rows = [f"{float(a)!r},{float(b)!r},{int(a * b > 0)}" for a, b in X]
    data.write_text("x1,x2,y\n" + "\n".join(rows) + "\n")
    return spec, data


def test_fit_resume_continues_bit_identically(tmp_path, files, capsys):
    spec, data = files
    common = ["--data", str(data), "--target", "y", "--quiet"]
    assert main(["fit", str(spec), *common, "--out", str(tmp_path / "straight")]) == 0
    assert main(["fit", str(spec), *common, "--epochs", "3", "--out", str(tmp_path / "half")]) == 0
    half = tmp_path / "half" / "model.microfw"
    assert main(["fit", "--resume", str(half), *common, "--epochs", "3"]) == 0
    capsys.readouterr()
    resumed, straight = mf.load(half), mf.load(tmp_path / "straight" / "model.microfw")
    assert resumed.epochs_trained == straight.epochs_trained == 6
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "fit needs a SPEC or --resume MODEL"),
        (["SPEC", "--resume", "MODEL"], "fit needs a SPEC or --resume MODEL"),
        (["--resume", "MODEL", "--seed", "3"], "--seed draws new initial weights"),
    ],
)
def test_fit_resume_misuse_is_one_line(tmp_path, files, capsys, argv, message):
    spec, data = files
    path = tmp_path / "m.microfw"
    mf.build(SPEC).save(path)
    argv = [str(spec) if a == "SPEC" else str(path) if a == "MODEL" else a for a in argv]
    code = main(["fit", *argv, "--data", str(data), "--target", "y", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_fit_resume_of_a_file_without_optimizer_state_warns(tmp_path, files, capsys):
    _, data = files
    path = tmp_path / "old.microfw"
    mf.build(SPEC).save(path)
    edit_json(path, "meta.json", lambda meta: meta.update(format_version=2))
    with np.load(io.BytesIO(members(path)["weights.npz"]), allow_pickle=False) as weights:
        arrays = {n: weights[n] for n in weights.files if not n.startswith("optimizer.")}
    replace(path, **{"weights.npz": npz(**arrays)})
    code = main(["fit", "--resume", str(path), "--data", str(data), "--target", "y", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0
    assert "saved without optimizer state" in err
