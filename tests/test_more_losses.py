"""mse, mae, huber, sparse_categorical_crossentropy and the reduction of bce and squared_error:
values from the published formulas (torch's losses with reduction="mean"), and scikit-learn's
multi-output MLPs reproduced step by step."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import microfw as mf

RNG = np.random.default_rng(11)


def _loss(ref):
    return mf.default_registry().create("loss", ref)


def test_mse_mae_huber_are_the_means_over_every_element():
    p, y = RNG.normal(size=(7, 3)), RNG.normal(size=(7, 3))
    d = p - y
    assert _loss("mse").value(p, y) == pytest.approx(np.mean(d**2), rel=1e-13)
    np.testing.assert_allclose(_loss("mse").grad(p, y), 2 * d / d.size, rtol=1e-13)
    assert _loss("mae").value(p, y) == pytest.approx(np.mean(np.abs(d)), rel=1e-13)
    np.testing.assert_allclose(_loss("mae").grad(p, y), np.sign(d) / d.size, rtol=1e-13)
    for delta in (0.3, 1.0, 5.0):
        huber = _loss({"type": "huber", "delta": delta})
        terms = np.where(np.abs(d) <= delta, 0.5 * d**2, delta * (np.abs(d) - 0.5 * delta))
        assert huber.value(p, y) == pytest.approx(terms.mean(), rel=1e-13)
        np.testing.assert_allclose(huber.grad(p, y), np.clip(d, -delta, delta) / d.size)


def test_mse_is_squared_error_times_two_over_k():
    # squared_error is 1/(2m) sum (the seeds' cost); mse is 1/(mk) sum.
    p, y = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 3))
    assert _loss("mse").value(p, y) == pytest.approx(_loss("squared_error").value(p, y) * 2 / 3)


def test_huber_is_quadratic_then_linear_at_delta():
    huber = _loss({"type": "huber", "delta": 2.0})
    zero = np.zeros((1, 1))
    assert huber.value(np.array([[2.0]]), zero) == 2.0  # d^2/2 = delta (|d| - delta/2) = 2
    assert huber.value(np.array([[10.0]]), zero) == 2.0 * (10 - 1)
    assert huber.grad(np.array([[10.0]]), zero)[0, 0] == 2.0


def test_reduction_sum_over_outputs_divides_by_samples_only():
    p = RNG.uniform(0.1, 0.9, (5, 3))
    y = (RNG.uniform(size=(5, 3)) > 0.5).astype(float)
    mean, summed = _loss("bce"), _loss({"type": "bce", "reduction": "sum_over_outputs"})
    assert summed.value(p, y) == pytest.approx(3 * mean.value(p, y), rel=1e-13)
    np.testing.assert_allclose(summed.grad(p, y), 3 * mean.grad(p, y), rtol=1e-13)
    expected = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) / 5
    assert summed.value(p, y) == pytest.approx(expected, rel=1e-13)
    default, per_element = (
        _loss("squared_error"),
        _loss({"type": "squared_error", "reduction": "mean"}),
    )
    assert default.reduction == "sum_over_outputs"
    assert per_element.value(p, y) == pytest.approx(np.sum((p - y) ** 2) / (2 * 15), rel=1e-13)
    np.testing.assert_allclose(per_element.grad(p, y), (p - y) / 15, rtol=1e-13)
    logits = _loss({"type": "bce", "from_logits": True, "reduction": "sum_over_outputs"})
    z = np.log(p / (1 - p))
    assert logits.value(z, y) == pytest.approx(expected, rel=1e-12)


# -- sparse_categorical_crossentropy ---------------------------------------------------------


def test_sparse_cce_equals_the_one_hot_loss_on_labels():
    p = RNG.uniform(0.05, 1, (6, 4))
    p /= p.sum(axis=1, keepdims=True)
    labels = RNG.integers(0, 4, 6)
    sparse, dense = _loss("sparse_categorical_crossentropy"), _loss("categorical_crossentropy")
    onehot = np.eye(4)[labels]
    assert sparse.value(p, labels[:, None].astype(float)) == pytest.approx(
        -np.mean(np.log(p[np.arange(6), labels])), rel=1e-13
    )
    assert sparse.value(p, labels[:, None].astype(float)) == pytest.approx(dense.value(p, onehot))
    np.testing.assert_allclose(sparse.grad(p, labels[:, None].astype(float)), dense.grad(p, onehot))
    assert sparse.target_dim(4) == 1


def _classifier(loss, seed=5):
    return mf.Sequential(
        [
            {"type": "linear", "units": 6, "init": "he"},
            "relu",
            {"type": "linear", "units": 3},
            "softmax",
        ],
        input_dim=2,
        loss=loss,
        optimizer={"type": "sgd", "lr": 0.2},
        training={"epochs": 5, "batch_size": 8},
        seed=seed,
    )


def test_a_model_trains_on_integer_labels_as_on_one_hot_rows():
    X = RNG.normal(size=(40, 2))
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    sparse, dense = (
        _classifier("sparse_categorical_crossentropy"),
        _classifier("categorical_crossentropy"),
    )
    assert ("layers[3]", "softmax+sparse_categorical_crossentropy") in sparse.fusions
    hs = sparse.fit(X, labels)  # a 1-D y of labels
    hd = dense.fit(X, np.eye(3)[labels])
    np.testing.assert_allclose(hs.history["loss"], hd.history["loss"], rtol=1e-12)
    np.testing.assert_allclose(sparse.get_weights()[0], dense.get_weights()[0], rtol=1e-10)
    assert sparse.evaluate(X, labels)["loss"] == pytest.approx(
        dense.evaluate(X, np.eye(3)[labels])["loss"], rel=1e-12
    )
    plain = mf.build({**sparse.to_spec().model_dump(), "seed": 5}, plan="plain")
    plain.set_weights(_classifier("sparse_categorical_crossentropy").get_weights())
    hp = plain.fit(X, labels)
    np.testing.assert_allclose(hp.history["loss"], hs.history["loss"], rtol=1e-6)


def test_sparse_labels_are_checked():
    model = _classifier("sparse_categorical_crossentropy")
    X = RNG.normal(size=(4, 2))
    with pytest.raises(ValueError, match="integer class labels"):
        model.fit(X, np.array([0, 1, 1.5, 2]))
    with pytest.raises(ValueError, match=r"0 \.\. 2"):
        model.fit(X, np.array([0, 1, 3, 2]))
    with pytest.raises(ValueError, match=r"expected \(4, 1\)"):
        model.fit(X, np.eye(3)[[0, 1, 2, 0]])
    with pytest.raises(mf.SpecError, match="at least 2 outputs"):
        mf.Sequential(
            [{"type": "linear", "units": 1}], input_dim=2, loss="sparse_categorical_crossentropy"
        )


# -- scikit-learn's multi-output MLPs, step by step --------------------------------------------


def _sklearn_run(estimator, X, y, steps, **first):
    """Weights after one partial_fit (the start), then the loss of each later step and the end."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.partial_fit(X, y, **first)
        start = [
            w.copy()
            for pair in zip(estimator.coefs_, estimator.intercepts_, strict=True)
            for w in pair
        ]
        losses = []
        for _ in range(steps):
            estimator.partial_fit(X, y)
            losses.append(estimator.loss_)
    end = [w for pair in zip(estimator.coefs_, estimator.intercepts_, strict=True) for w in pair]
    return start, losses, end


def _mlp_kwargs():
    return dict(
        hidden_layer_sizes=(5,),
        activation="tanh",
        solver="sgd",
        learning_rate_init=0.1,
        momentum=0.0,
        alpha=0.0,
        batch_size=1000,
        shuffle=False,
        random_state=0,
    )


def test_a_two_output_mlp_regressor_is_reproduced():
    neural_network = pytest.importorskip("sklearn.neural_network")
    X = RNG.normal(size=(30, 3))
    y = np.column_stack([X[:, 0] - X[:, 1], np.sin(X[:, 2])])
    start, losses, end = _sklearn_run(neural_network.MLPRegressor(**_mlp_kwargs()), X, y, 6)
    model = mf.Sequential(
        [{"type": "linear", "units": 5}, "tanh", {"type": "linear", "units": 2}],
        input_dim=3,
        loss={"type": "squared_error", "reduction": "sum_over_outputs"},
        optimizer={"type": "sgd", "lr": 0.1},
        training={"epochs": 6, "shuffle": False},
    )
    model.set_weights(start)
    history = model.fit(X, y)
    for ours, theirs in zip(model.get_weights(), end, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)
    # scikit-learn reports the loss averaged over the outputs too (its gradient sums them).
    np.testing.assert_allclose(np.array(history.history["loss"]) / 2, losses, rtol=1e-10)


def test_a_multilabel_mlp_classifier_is_reproduced():
    neural_network = pytest.importorskip("sklearn.neural_network")
    X = RNG.normal(size=(30, 3))
    y = np.column_stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 2] > 0.5]).astype(int)
    classifier = neural_network.MLPClassifier(**_mlp_kwargs())
    start, losses, end = _sklearn_run(classifier, X, y, 6, classes=np.arange(3))
    model = mf.Sequential(
        [{"type": "linear", "units": 5}, "tanh", {"type": "linear", "units": 3}, "sigmoid"],
        input_dim=3,
        loss={"type": "bce", "reduction": "sum_over_outputs"},
        optimizer={"type": "sgd", "lr": 0.1},
        training={"epochs": 6, "shuffle": False},
    )
    model.set_weights(start)
    history = model.fit(X, y)
    for ours, theirs in zip(model.get_weights(), end, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-10)


def test_the_cli_trains_on_a_label_column_with_the_sparse_loss(tmp_path, capsys):
    import json

    from microfw.cli import main

    X = RNG.normal(size=(40, 2))
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    data = tmp_path / "d.csv"
    np.savetxt(data, np.column_stack([X, labels]), delimiter=",", header="a,b,y", comments="")
    spec = _classifier("sparse_categorical_crossentropy").to_spec().to_dict()
    (tmp_path / "s.json").write_text(json.dumps(spec))
    out = tmp_path / "run"
    args = ["fit", str(tmp_path / "s.json"), "--data", str(data), "--target", "y", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    assert "accuracy" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    np.savetxt(bad, np.column_stack([X, labels + 1]), delimiter=",", header="a,b,y", comments="")
    bad_args = ["fit", str(tmp_path / "s.json"), "--data", str(bad), "--target", "y", "--quiet"]
    assert main([*bad_args, "--out", str(out)]) == 1
