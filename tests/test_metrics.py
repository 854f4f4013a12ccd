"""Metrics as plugins: each equals sklearn.metrics on the same predictions, accumulates over
batches, and reaches History, evaluate and the CLI as the spec chooses."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import microfw as mf
from microfw.train.metrics import create_metrics

sk = pytest.importorskip("sklearn.metrics")

RNG = np.random.default_rng(3)
NAMES = ["accuracy", "precision", "recall", "f1", "roc_auc", "r2", "mae"]


def _score(name, loss, y_pred, y_true, batches=(0, 9, 30, 61)):
    (metric,) = create_metrics(mf.default_registry(), [name])
    metric.start(mf.default_registry().create("loss", loss), y_true)
    for lo, hi in itertools.pairwise(batches):
        metric.update(y_pred[lo:hi], y_true[lo:hi])
    return metric.result()


def _binary(n=61):
    y = (RNG.uniform(size=(n, 1)) < 0.4).astype(float)
    p = np.clip(0.3 * y + RNG.uniform(0, 0.7, (n, 1)), 0, 1)
    p[:6] = 0.5  # ties, and the threshold itself
    return p, y


def test_binary_metrics_equal_sklearn_on_one_output():
    p, y = _binary()
    labels, truth = (p[:, 0] >= 0.5).astype(int), y[:, 0].astype(int)
    expected = {
        "accuracy": sk.accuracy_score(truth, labels),
        "precision": sk.precision_score(truth, labels),
        "recall": sk.recall_score(truth, labels),
        "f1": sk.f1_score(truth, labels),
        "roc_auc": sk.roc_auc_score(truth, p[:, 0]),
        "r2": sk.r2_score(y, p),
        "mae": sk.mean_absolute_error(y, p),
    }
    for name, value in expected.items():
        assert _score(name, "bce", p, y) == pytest.approx(value, rel=1e-12, abs=1e-15), name


def test_from_logits_the_threshold_is_zero():
    p, y = _binary()
    z = np.log(p + 1e-9) - np.log1p(-p + 1e-9)
    labels = (z[:, 0] >= 0).astype(int)
    loss = {"type": "bce", "from_logits": True}
    assert _score("precision", loss, z, y) == pytest.approx(sk.precision_score(y[:, 0], labels))
    assert _score("roc_auc", loss, z, y) == pytest.approx(sk.roc_auc_score(y[:, 0], z[:, 0]))


def test_two_class_softmax_outputs_with_one_hot_rows_or_labels():
    n = 61
    truth = (RNG.uniform(size=n) < 0.5).astype(int)
    logits = RNG.normal(size=(n, 2)) + np.eye(2)[truth]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = p.argmax(axis=1)
    for loss, y in (
        ("categorical_crossentropy", np.eye(2)[truth]),
        ("sparse_categorical_crossentropy", truth[:, None].astype(float)),
    ):
        assert _score("accuracy", loss, p, y) == pytest.approx(sk.accuracy_score(truth, labels))
        assert _score("f1", loss, p, y) == pytest.approx(sk.f1_score(truth, labels), rel=1e-12)
        assert _score("recall", loss, p, y) == pytest.approx(sk.recall_score(truth, labels))
        assert _score("roc_auc", loss, p, y) == pytest.approx(sk.roc_auc_score(truth, p[:, 1]))


def test_multilabel_columns_are_micro_averaged_and_roc_auc_macro():
    y = (RNG.uniform(size=(61, 3)) < 0.5).astype(float)
    p = np.clip(0.4 * y + RNG.uniform(0, 0.6, (61, 3)), 0, 1)
    labels = (p >= 0.5).astype(int)
    for name, func in (
        ("precision", sk.precision_score),
        ("recall", sk.recall_score),
        ("f1", sk.f1_score),
    ):
        assert _score(name, "bce", p, y) == pytest.approx(
            func(y, labels, average="micro"), rel=1e-12
        )
    assert _score("roc_auc", "bce", p, y) == pytest.approx(sk.roc_auc_score(y, p), rel=1e-12)


def test_regression_metrics_on_two_outputs_with_a_large_offset():
    y = 1e6 + RNG.normal(size=(61, 2)) * [1.0, 3.0]
    p = y + RNG.normal(size=(61, 2)) * 0.5
    assert _score("r2", "mse", p, y) == pytest.approx(sk.r2_score(y, p), rel=1e-9)
    assert _score("mae", "mse", p, y) == pytest.approx(sk.mean_absolute_error(y, p), rel=1e-12)
    const = np.ones((61, 1))
    assert _score("r2", "mse", const, const) == sk.r2_score(const, const) == 1.0


def test_class_metrics_refuse_continuous_targets_and_undefined_auc():
    y = RNG.normal(size=(20, 1))
    with pytest.raises(ValueError, match="'f1' scores classes"):
        _score("f1", "mse", y, y, (0, 20))
    with pytest.raises(ValueError, match="one class only"):
        _score("roc_auc", "bce", np.full((20, 1), 0.3), np.ones((20, 1)), (0, 20))
    assert _score("precision", "bce", np.zeros((20, 1)), np.ones((20, 1)), (0, 20)) == 0.0


# -- in fit, evaluate, the spec and the CLI ---------------------------------------------------

SPEC = {
    "spec_version": 1,
    "input_dim": 2,
    "layers": [
        {"type": "linear", "units": 8, "init": "he"},
        "relu",
        {"type": "linear", "units": 1},
        "sigmoid",
    ],
    "loss": "bce",
    "optimizer": {"type": "sgd", "lr": 0.5},
    "training": {"epochs": 3, "batch_size": 16, "metrics": ["accuracy", "f1", "roc_auc"]},
    "seed": 0,
}


def _data(n=80):
    X = RNG.normal(size=(n, 2))
    return X, (X[:, 0] + X[:, 1] > 0).astype(float)


def test_history_and_evaluate_report_the_chosen_metrics():
    X, y = _data()
    model = mf.build(SPEC)
    history = model.fit(X[:60], y[:60], validation_data=(X[60:], y[60:]))
    keys = [
        "loss",
        "accuracy",
        "f1",
        "roc_auc",
        "val_loss",
        "val_accuracy",
        "val_f1",
        "val_roc_auc",
        "lr",
    ]
    assert sorted(history.history) == sorted(keys)
    p = model.predict(X[60:])
    assert history.history["val_f1"][-1] == pytest.approx(sk.f1_score(y[60:], p[:, 0] >= 0.5))
    assert history.history["val_roc_auc"][-1] == pytest.approx(sk.roc_auc_score(y[60:], p[:, 0]))
    scores = model.evaluate(X[60:], y[60:])
    assert sorted(scores) == ["accuracy", "f1", "loss", "roc_auc"]
    assert scores["f1"] == history.history["val_f1"][-1]
    plain = mf.build({**SPEC, "training": {"epochs": 1}})
    assert sorted(plain.evaluate(X, y)) == ["accuracy", "loss"]  # no metrics: as before
    assert sorted(plain.fit(X, y, metrics=["r2"]).history) == ["loss", "lr", "r2"]


def test_the_spec_names_metrics_through_the_registry():
    with pytest.raises(mf.SpecError) as info:
        mf.build({**SPEC, "training": {"metrics": ["f1", "f2", {"type": "f1"}]}})
    text = str(info.value)
    assert "training.metrics[1]" in text and "f1" in text
    assert "training.metrics[2]" in text and "listed twice" in text


def test_a_third_party_metric_registers_like_any_plugin():
    class Balanced(mf.Metric):
        """(recall of class 1 + recall of class 0) / 2."""

        name = "balanced_accuracy"

        def start(self, loss, y_true):
            self.hits = np.zeros(2)
            self.counts = np.zeros(2)

        def update(self, y_pred, y_true):
            truth = (y_true[:, 0] >= 0.5).astype(int)
            right = (y_pred[:, 0] >= 0.5).astype(int) == truth
            np.add.at(self.hits, truth, right)
            np.add.at(self.counts, truth, 1)

        def result(self):
            return float(np.mean(self.hits / self.counts))

    registry = mf.Registry()
    registry.register(Balanced)
    mf.testing.check_plugin(Balanced, registry=registry)
    X, y = _data()
    model = mf.build(
        {**SPEC, "training": {"epochs": 2, "metrics": ["balanced_accuracy"]}}, registry
    )
    model.fit(X, y)
    p = model.predict(X)[:, 0] >= 0.5
    assert model.evaluate(X, y)["balanced_accuracy"] == pytest.approx(
        sk.balanced_accuracy_score(y, p)
    )


def test_the_cli_reports_the_metrics(tmp_path, capsys):
    from microfw.cli import main

    X, y = _data()
    data = tmp_path / "d.csv"
    np.savetxt(data, np.column_stack([X, y]), delimiter=",", header="a,b,y", comments="")
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "run"
    assert (
        main(["fit", str(spec), "--data", str(data), "--target", "y", "--out", str(out), "--quiet"])
        == 0
    )
    assert "f1" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert {"accuracy", "f1", "roc_auc"} <= set(history["history"])
    model = next(out.glob("*.microfw"))
    assert main(["evaluate", str(model), "--data", str(data), "--target", "y", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert sorted(scores) == ["accuracy", "f1", "loss", "roc_auc"]


def test_early_stopping_maximises_a_greater_is_better_metric_and_minimises_mae():
    stop = mf.EarlyStopping(monitor="val_f1", patience=1)
    model = mf.build(SPEC)
    stop.set_model(model)
    stop.on_train_begin({})
    assert stop.sign == 1.0
    regression = mf.build({**SPEC, "loss": "mse", "training": {"metrics": ["mae", "r2"]}})
    for monitor, sign in (("val_mae", -1.0), ("r2", 1.0)):
        stop = mf.EarlyStopping(monitor=monitor)
        stop.set_model(regression)
        stop.on_train_begin({})
        assert stop.sign == sign


def test_callbacks_in_a_fit_monitor_the_chosen_metrics_the_right_way_up(tmp_path):
    """Each callback may monitor a metric the fit reports (``val_f1`` from the spec's
    metrics), and in ``auto`` maximises it: the checkpoint keeps the best f1, not the worst."""
    X, y = _data()
    model = mf.build(SPEC)
    stop = mf.EarlyStopping(monitor="val_f1", patience=1000)
    plateau = mf.ReduceLROnPlateau(monitor="val_f1", patience=1000)
    best = mf.ModelCheckpoint(tmp_path / "best.microfw", monitor="val_f1", save_best_only=True)
    history = model.fit(X, y, epochs=6, validation_data=(X, y), callbacks=[stop, plateau, best])
    assert (stop.sign, plateau.sign, best.sign) == (1.0, 1.0, 1.0)
    assert best.best == max(history.history["val_f1"])
    with pytest.raises(KeyError, match=r"monitors 'val_f2'.*available: .*val_f1"):
        model.fit(X, y, epochs=1, validation_data=(X, y), callbacks=[mf.EarlyStopping("val_f2")])


BALANCED_PACKAGE = """
    import numpy as np
    import microfw as mf

    class Youden(mf.Metric):
        '''recall of class 1 + recall of class 0 - 1.'''
        name = "youden"
        def start(self, loss, y_true):
            self.hits, self.counts = np.zeros(2), np.zeros(2)
        def update(self, y_pred, y_true):
            truth = (y_true[:, 0] >= 0.5).astype(int)
            np.add.at(self.hits, truth, (y_pred[:, 0] >= 0.5).astype(int) == truth)
            np.add.at(self.counts, truth, 1)
        def result(self):
            return float(np.sum(self.hits / self.counts) - 1)

    @mf.hookimpl
    def register_metrics():
        return [Youden]
"""


def test_an_installed_package_adds_a_metric_through_its_entry_point(site):
    from fake_packages import install

    install(site, "microfw-youden", BALANCED_PACKAGE)
    registry = mf.Registry()
    entry = registry.entry("metric", "youden")
    assert entry.provenance.package == "microfw-youden"
    mf.testing.check_plugin("youden", registry=registry, kind="metric")
    X, y = _data()
    model = mf.build({**SPEC, "training": {"epochs": 2, "metrics": ["youden"]}}, registry)
    history = model.fit(X, y, validation_data=(X, y))
    p = model.predict(X)[:, 0] >= 0.5
    expected = sk.balanced_accuracy_score(y, p, adjusted=True)
    assert history.history["val_youden"][-1] == pytest.approx(expected)
