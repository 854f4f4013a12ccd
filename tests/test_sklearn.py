"""scikit-learn estimators (microfw.sklearn): scikit-learn's own estimator checks with no
expected failures, pipelines, grid search on two processes, cross-validation, pickling."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.datasets import load_iris, make_multilabel_classification, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import microfw as mf
from microfw.sklearn import DEFAULT_SPEC, MicrofwClassifier, MicrofwRegressor

ROOT = Path(__file__).resolve().parents[1]


@parametrize_with_checks(
    [MicrofwClassifier(), MicrofwRegressor()],
    expected_failed_checks=lambda estimator: {},  # none
)
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


def test_tags_skip_nothing_mlp_runs() -> None:
    """The tags scikit-learn's checks read are those of MLPClassifier / MLPRegressor, except
    sparse input (which microfw does not take) and the regressor's multi_output, which adds
    check_regressor_multioutput (MLPRegressor supports several outputs without the tag)."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    for ours, theirs in (
        (MicrofwClassifier(), MLPClassifier()),
        (MicrofwRegressor(), MLPRegressor()),
    ):
        a, b = ours.__sklearn_tags__(), theirs.__sklearn_tags__()
        b.input_tags.sparse = False
        b.target_tags.multi_output = isinstance(ours, MicrofwRegressor)
        assert a.input_tags == b.input_tags
        assert a.target_tags == b.target_tags
        assert a.classifier_tags == b.classifier_tags
        assert a.regressor_tags == b.regressor_tags
        assert a.non_deterministic == b.non_deterministic


def iris() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    return X, np.array(["setosa", "versicolor", "virginica"])[y]  # string labels


def test_pipeline_with_string_labels() -> None:
    X, y = iris()
    pipe = make_pipeline(StandardScaler(), MicrofwClassifier(random_state=0))
    pipe.fit(X, y)
    clf = pipe[-1]
    assert clf.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert pipe.score(X, y) > 0.9
    proba = pipe.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(pipe.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert clf.model_.layers[-1].name == "softmax"  # the head follows the targets
    assert clf.model_.loss.name == "categorical_crossentropy"
    assert clf.n_features_in_ == 4 and clf.n_iter_ == DEFAULT_SPEC["training"]["epochs"]


def test_grid_search_two_jobs_tunes_flat_parameters() -> None:
    X, y = iris()
    grid = GridSearchCV(
        make_pipeline(StandardScaler(), MicrofwClassifier(random_state=0, epochs=15)),
        {
            "microfwclassifier__lr": [0.001, 0.03],
            "microfwclassifier__hidden_units": [(4,), (16, 8)],
        },
        cv=3,
        n_jobs=2,
    )
    grid.fit(X, y)
    assert grid.best_params_["microfwclassifier__lr"] == 0.03  # 15 epochs at 0.001 underfit
    assert grid.best_score_ > 0.85
    widths = [layer.get_params().get("units") for layer in grid.best_estimator_[-1].model_.layers]
    assert [w for w in widths if w is not None][:-1] == list(
        grid.best_params_["microfwclassifier__hidden_units"]
    )


def test_cross_val_score_regressor() -> None:
    X, y = make_regression(n_samples=200, n_features=5, noise=5.0, random_state=0)
    scores = cross_val_score(
        make_pipeline(StandardScaler(), MicrofwRegressor(random_state=0)), X, 10 * y + 300, cv=3
    )
    assert scores.shape == (3,) and scores.min() > 0.9  # targets standardised internally


def test_multi_output_regression_and_multilabel() -> None:
    X, Y = make_regression(n_samples=150, n_features=4, n_targets=3, random_state=1)
    reg = MicrofwRegressor(random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (150, 3) and reg.score(X, Y) > 0.9
    X, Y = make_multilabel_classification(n_samples=150, n_classes=4, random_state=0)
    clf = MicrofwClassifier(random_state=0).fit(StandardScaler().fit_transform(X), Y)
    assert clf.classes_.tolist() == [0, 1, 2, 3]
    assert clf.model_.loss.name == "bce" and clf.model_.output_dim == 4
    pred = clf.predict(StandardScaler().fit_transform(X))
    assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}


def test_binary_head_and_predict_proba() -> None:
    X, y = iris()
    keep = y != "setosa"
    clf = MicrofwClassifier(random_state=0).fit(StandardScaler().fit_transform(X[keep]), y[keep])
    assert clf.model_.output_dim == 1 and clf.model_.loss.name == "bce"
    proba = clf.predict_proba(StandardScaler().fit_transform(X[keep]))
    assert proba.shape == (100, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_random_state_repeats_fits_exactly() -> None:
    X, y = iris()
    a = MicrofwClassifier(random_state=7).fit(X, y).predict_proba(X)
    b = MicrofwClassifier(random_state=7).fit(X, y).predict_proba(X)
    c = MicrofwClassifier(random_state=8).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rs = np.random.RandomState(3)  # a RandomState draws the seed
    assert MicrofwClassifier(random_state=rs).fit(X, y).model_.seed is not None


def pickle_globals(data: bytes) -> set[str]:
    """``module.name`` of every class or function a pickle loads (the unpickler's requests)."""
    found: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            found.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recorder(io.BytesIO(data)).load()
    return found


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_pickle_round_trip_through_model_bytes(kind: str) -> None:
    X, y = iris()
    est: Any = (
        MicrofwClassifier(random_state=0, hidden_units=(8, 4)).fit(X, y)
        if kind == "classifier"
        else MicrofwRegressor(random_state=0).fit(X[:, 1:], X[:, 0])
    )
    X_pred = X if kind == "classifier" else X[:, 1:]
    data = pickle.dumps(est)
    # Only the estimator class, NumPy's array reconstruction and plain builtins: no plugin,
    # no microfw model object; the network is the bytes of its model file.
    allowed_modules = ("builtins", "copyreg", "_codecs", "numpy")
    for ref in pickle_globals(data):
        assert ref == f"microfw.sklearn.{type(est).__name__}" or ref.startswith(allowed_modules), (
            ref
        )
    state = est.__getstate__()
    assert isinstance(state["model_"], bytes) and state["model_"][:2] == b"PK"
    again = pickle.loads(data)
    assert isinstance(again.model_, mf.Sequential)
    np.testing.assert_array_equal(again.predict(X_pred), est.predict(X_pred))  # bit-identical
    assert again.get_params() == est.get_params()


def test_get_set_params_clone() -> None:
    spec = {"spec_version": 1, "layers": [{"type": "linear", "units": 5, "activation": "tanh"}]}
    est = MicrofwClassifier(spec, epochs=3, lr=0.1, hidden_units=(6,))
    params = est.get_params()
    assert params["spec"] is spec and params["epochs"] == 3 and params["warm_start"] is False
    twin = clone(est).set_params(epochs=5, batch_size=8)
    assert twin.epochs == 5 and twin.batch_size == 8 and est.epochs == 3
    X, y = iris()
    est.fit(X, y)
    assert spec == {  # never modified
        "spec_version": 1,
        "layers": [{"type": "linear", "units": 5, "activation": "tanh"}],
    }
    first = est.model_.to_spec().to_dict()
    assert first["layers"][0]["units"] == 6  # hidden_units override the spec's widths
    assert first["layers"][1]["type"] == "tanh"
    assert first["optimizer"]["lr"] == 0.1 and first["training"]["epochs"] == 3
    # What the spec leaves out comes from DEFAULT_SPEC: momentum, batches of 32.
    assert first["optimizer"]["momentum"] == DEFAULT_SPEC["optimizer"]["momentum"]
    assert first["training"]["batch_size"] == DEFAULT_SPEC["training"]["batch_size"]


def test_complete_spec_from_a_file_is_used_as_it_is() -> None:
    path = ROOT / "examples/iris_petals/iris_petals.json"  # input_dim 2, sigmoid, bce
    X, y = iris()
    X2 = X[:, 2:]
    clf = MicrofwClassifier(str(path), epochs=300).fit(X2, y == "virginica")
    assert clf.model_.to_spec().to_dict()["layers"][0]["init"]["type"] == "plain"
    assert clf.score(X2, y == "virginica") > 0.9
    with pytest.raises(ValueError, match="input_dim is 2"):
        MicrofwClassifier(str(path)).fit(X, y == "virginica")
    with pytest.raises(ValueError, match=r"1 output.*targets need 3"):
        MicrofwClassifier(str(path), epochs=1).fit(X2, y)
    with pytest.raises(ValueError, match=r"hidden_units has 1 width.*0 hidden"):
        MicrofwClassifier(str(path), hidden_units=(3,)).fit(X2, y == "virginica")


def test_a_spec_is_read_as_load_spec_reads_it(tmp_path: Path) -> None:
    """A byte-order mark is accepted; a key given twice or text that is not JSON is a
    SpecError naming the file, as for ``mf.load_spec``."""
    X, y = iris()
    path = tmp_path / "spec.json"
    path.write_bytes(
        b"\xef\xbb\xbf" + (ROOT / "examples/iris_petals/iris_petals.json").read_bytes()
    )
    clf = MicrofwClassifier(str(path), epochs=2).fit(X[:, 2:], y == "virginica")
    assert clf.model_.input_dim == 2
    path.write_text('{"spec_version": 1, "seed": 1, "seed": 2}')
    with pytest.raises(
        mf.SpecError, match=r"spec\.json: 1 problem.*\n  - seed: key .seed. appears more than once"
    ):
        MicrofwClassifier(str(path)).fit(X, y == "virginica")
    path.write_text("{not json")
    with pytest.raises(mf.SpecError, match="not valid JSON"):
        MicrofwClassifier(str(path)).fit(X, y == "virginica")


def test_json_text_spec_and_logits_output() -> None:
    spec = json.dumps(
        {
            "spec_version": 1,
            "layers": [
                {"type": "linear", "units": 8, "activation": "tanh"},
                {"type": "linear", "units": 1},
            ],
            "loss": {"type": "bce", "from_logits": True},
            "optimizer": {"type": "sgd", "lr": 0.5},
            "training": {"epochs": 100},
            "seed": 0,
        }
    )
    X, y = iris()
    X = StandardScaler().fit_transform(X)
    clf = MicrofwClassifier(spec).fit(X, y == "setosa")
    proba = clf.predict_proba(X)[:, 1]
    z = clf.model_.predict(X)[:, 0]
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-z)))  # logits become probabilities
    assert clf.score(X, y == "setosa") == 1.0


def test_partial_fit_and_warm_start() -> None:
    X, y = iris()
    X = StandardScaler().fit_transform(X)
    clf = MicrofwClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:50], y[:50], classes=np.unique(y))  # only one class in this batch
    assert clf.n_iter_ == 1 and clf.classes_.tolist() == sorted(set(y))
    before = clf.model_.get_weights()
    clf.partial_fit(X[50:], y[50:])
    assert clf.model_ is not None and not np.array_equal(before[0], clf.model_.get_weights()[0])
    with pytest.raises(ValueError, match="not among classes_"):
        clf.partial_fit(X[:2], np.array(["rose", "setosa"]))

    warm = MicrofwClassifier(random_state=0, epochs=5, warm_start=True).fit(X, y)
    model = warm.model_
    weights = model.get_weights()
    warm.fit(X, y)
    assert warm.model_ is model and not np.array_equal(weights[0], model.get_weights()[0])
    cold = MicrofwClassifier(random_state=0, epochs=5).fit(X, y)
    model = cold.model_
    cold.fit(X, y)
    assert cold.model_ is not model  # without warm_start every fit starts afresh
    np.testing.assert_array_equal(cold.model_.get_weights()[0], model.get_weights()[0])


def test_feature_names_in_from_a_dataframe() -> None:
    pd = pytest.importorskip("pandas")
    X, y = iris()
    frame = pd.DataFrame(X, columns=["sl", "sw", "pl", "pw"])
    clf = MicrofwClassifier(random_state=0, epochs=2).fit(frame, y)
    assert clf.feature_names_in_.tolist() == ["sl", "sw", "pl", "pw"]
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame.rename(columns={"sl": "other"}))


def test_one_class_and_continuous_targets_are_refused() -> None:
    X = np.random.default_rng(0).normal(size=(10, 2))
    clf = MicrofwClassifier(epochs=1).fit(X, [0, 1] * 5)
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X, X[:, 0])
    with pytest.raises(NotFittedError):  # the failed refit left no stale network
        clf.predict(X)
    with pytest.raises(ValueError, match=r"at least 2 classes.*1 class"):
        MicrofwClassifier().fit(X, ["a"] * 10)
    with pytest.raises(ValueError, match="Unknown label type"):
        MicrofwClassifier().fit(X, X[:, 0])
