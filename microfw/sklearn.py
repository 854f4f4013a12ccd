"""microfw networks as scikit-learn estimators: ``MicrofwClassifier``, ``MicrofwRegressor``.

Both take a spec (a path, JSON text or dict; default :data:`DEFAULT_SPEC`) and fill in what
the data decides:

* ``input_dim`` is the number of columns of ``X`` (a spec that states another is an error);
* a spec without ``optimizer`` or ``training`` takes those of :data:`DEFAULT_SPEC`;
* a spec **without** ``loss`` lists the hidden layers only, and the estimator appends the
  output layer and loss for the targets: binary classes -> ``linear(1) + sigmoid`` with
  ``bce``; multi-class (any label type: ints, strings...) -> ``linear(k) + softmax`` with
  ``categorical_crossentropy``; multilabel (an indicator matrix) -> ``linear(k) + sigmoid``
  with ``bce``; regression -> ``linear(n_outputs)`` with ``squared_error``;
* a spec **with** ``loss`` is used as it is: its output width must suit the targets (one
  column for binary, ``k`` for ``k`` classes or labels, ``n_outputs`` for regression), and a
  classifier's outputs must be probabilities (or logits for ``bce`` with ``from_logits``).

Flat parameters override the spec for :class:`~sklearn.model_selection.GridSearchCV`; each
left at None keeps the spec's value: ``hidden_units`` (the widths of the hidden ``linear``
layers, as many as the spec has; with the default spec any number, each ``relu``),
``epochs``, ``batch_size``, ``lr`` (the optimizer's), ``random_state`` (the spec's seed:
an int makes fits repeat exactly). ``warm_start=True`` makes ``fit`` continue training the
fitted network; ``partial_fit`` trains one epoch on the data given.

Pickling (as joblib does for parallel search) keeps the parameters and plain fitted data
(``classes_``, ``n_features_in_``, ``feature_names_in_``, ``loss_curve_``); the network
travels as the bytes of microfw's own model file (:meth:`~microfw.Sequential.save`), never
as pickled plugin objects, and an unpickled estimator predicts bit-identically. Needs the
``sklearn`` extra (scikit-learn 1.6 or later). Not supported: ``sample_weight``, sparse
``X``.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from microfw._extras import require

# Without scikit-learn (and its scipy), importing this module is a MissingExtraError.
require("sklearn", "sklearn", "microfw.sklearn (the scikit-learn estimators)")

from scipy.special import expit  # type: ignore[import-untyped]  # noqa: E402
from sklearn.base import (  # type: ignore[import-untyped]  # noqa: E402
    BaseEstimator,
    ClassifierMixin,
    MultiOutputMixin,
    RegressorMixin,
)
from sklearn.utils import check_random_state  # type: ignore[import-untyped]  # noqa: E402
from sklearn.utils.multiclass import (  # type: ignore[import-untyped]  # noqa: E402
    check_classification_targets,
    type_of_target,
)
from sklearn.utils.validation import (  # type: ignore[import-untyped]  # noqa: E402
    check_is_fitted,
    column_or_1d,
    validate_data,
)

import microfw as mf  # noqa: E402
from microfw.nn.modelfile import to_bytes  # noqa: E402
from microfw.spec.models import read_spec  # noqa: E402

__all__ = ["DEFAULT_SPEC", "MicrofwClassifier", "MicrofwRegressor"]

DEFAULT_SPEC: dict[str, Any] = {
    "spec_version": 1,
    "layers": [{"type": "linear", "units": 32, "init": "he", "activation": "relu"}],
    "optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.9},
    "training": {"epochs": 40, "batch_size": 32},
}
"""The spec used when none is given: one hidden layer of 32 ReLU units (He init), SGD with
learning rate 0.01 and momentum 0.9, 40 epochs of mini-batches of 32; float64. The output
layer and loss follow the targets (see the module docstring)."""

_FLOATS = (np.float64, np.float32)


class _MicrofwEstimator(BaseEstimator):  # type: ignore[misc]
    """What the classifier and the regressor share: the spec, the fit loop and pickling."""

    model_: mf.Sequential

    def __init__(
        self,
        spec: str | os.PathLike[str] | dict[str, Any] | None = None,
        *,
        hidden_units: tuple[int, ...] | list[int] | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        random_state: int | np.random.RandomState | None = None,
        warm_start: bool = False,
    ) -> None:
        self.spec = spec
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.warm_start = warm_start

    # -- what each estimator decides ---------------------------------------------------------

    def _learn_targets(self, y: np.ndarray[Any, Any], classes: Any) -> None:
        raise NotImplementedError

    def _encode(self, y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        raise NotImplementedError

    def _head(self) -> tuple[list[Any], Any]:
        """The output layers and loss appended to a spec that leaves them open."""
        raise NotImplementedError

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> Any:
        """Train on ``X`` ``(n_samples, n_features)`` and ``y``; a new network unless
        ``warm_start`` and already fitted. Returns self."""
        return self._fit(X, y, partial=False, classes=None)

    def _fit(self, X: Any, y: Any, *, partial: bool, classes: Any) -> Any:
        fresh = not hasattr(self, "model_") or not (partial or self.warm_start)
        X, y = validate_data(
            self,
            X,
            y,
            reset=fresh,
            dtype=_FLOATS,
            multi_output=True,
            y_numeric=isinstance(self, RegressorMixin),
        )
        if fresh:
            if hasattr(self, "model_"):  # a refit that fails leaves no stale network behind
                del self.model_
            self._learn_targets(y, classes)
        Y = self._encode(y)
        data = self._spec_data(X.shape[1])
        model = mf.build(data) if fresh else self.model_
        if model.output_dim != Y.shape[1]:
            raise ValueError(
                f"the spec's model has {model.output_dim} output(s), the targets need "
                f"{Y.shape[1]}: leave out 'loss' to let {type(self).__name__} add the output "
                "layer, or change the last layer's width"
            )
        training = dict(data.get("training", {}))
        if partial:
            training["epochs"] = 1
        history = model.fit(X, Y, **training)
        self.model_ = model
        self.loss_curve_ = [float(v) for v in history.history.get("loss", [])]
        self.n_iter_ = len(self.loss_curve_)
        return self

    def _spec_data(self, n_features: int) -> dict[str, Any]:
        """The spec as a dict with the data's widths and the flat parameters applied."""
        data = _read_spec(DEFAULT_SPEC if self.spec is None else self.spec)
        for key in ("optimizer", "training"):  # a spec of layers alone trains as the default
            data.setdefault(key, copy.deepcopy(DEFAULT_SPEC[key]))
        layers = list(data.get("layers", []))
        complete = "loss" in data
        if self.hidden_units is not None:
            units = [int(u) for u in self.hidden_units]
            if self.spec is None:
                layers = [{**layers[0], "units": u} for u in units]
            else:
                layers = _set_widths(layers, units, complete)
        if not complete:
            head, loss = self._head()
            layers += head
            data["loss"] = loss
        data["layers"] = layers
        stated = data.get("input_dim")
        if stated is not None and stated != n_features:
            raise ValueError(
                f"X has {n_features} features, but the spec's input_dim is {stated}; leave "
                "input_dim out to take it from X"
            )
        data["input_dim"] = n_features
        training = dict(data.get("training", {}))
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if value is not None:
                training[key] = int(value)
        data["training"] = training
        if self.lr is not None:
            optimizer = data.get("optimizer", "sgd")
            optimizer = {"type": optimizer} if isinstance(optimizer, str) else dict(optimizer)
            data["optimizer"] = {**optimizer, "lr": float(self.lr)}
        if self.random_state is not None:
            if isinstance(self.random_state, int | np.integer):
                data["seed"] = int(self.random_state)
            else:
                data["seed"] = int(check_random_state(self.random_state).randint(2**31 - 1))
        return data

    # -- predicting ------------------------------------------------------------------------------

    def _outputs(self, X: Any) -> np.ndarray[Any, Any]:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=_FLOATS)
        return np.asarray(self.model_.predict(X))

    # -- pickling: the network as model-file bytes ---------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        if "model_" in state:
            state["model_"] = to_bytes(state["model_"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if isinstance(state.get("model_"), bytes):
            state["model_"] = _model_from_bytes(state["model_"])
        super().__setstate__(state)


class MicrofwClassifier(ClassifierMixin, _MicrofwEstimator):  # type: ignore[misc]
    """A microfw network as a scikit-learn classifier (binary, multi-class, multilabel).

    See :mod:`microfw.sklearn` for the parameters. Fitted attributes: ``classes_``,
    ``model_`` (the :class:`~microfw.Sequential`), ``loss_curve_``, ``n_iter_``,
    ``n_features_in_``, ``feature_names_in_`` (when ``X`` has string column names).
    """

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MicrofwClassifier:
        """Train one epoch on ``(X, y)``; ``classes`` (every label) is needed on the first call."""
        if not hasattr(self, "model_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        return self._fit(X, y, partial=True, classes=classes)  # type: ignore[no-any-return]

    def _learn_targets(self, y: np.ndarray[Any, Any], classes: Any) -> None:
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind == "multilabel-indicator":
            self.classes_ = np.arange(y.shape[1])
        elif kind in ("binary", "multiclass"):
            self.classes_ = np.unique(y if classes is None else np.asarray(classes))
        else:
            raise ValueError(
                f"{type(self).__name__} supports binary, multi-class and multilabel targets; "
                f"got {kind}"
            )
        if kind != "multilabel-indicator" and len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class "
                f"({self.classes_[0]!r})"
            )
        self._target_kind = "multilabel" if kind == "multilabel-indicator" else "classes"

    def _encode(self, y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if self._target_kind == "multilabel":
            if y.ndim != 2 or y.shape[1] != len(self.classes_) or not np.isin(y, (0, 1)).all():
                raise ValueError(
                    f"y must be a 0/1 indicator matrix with {len(self.classes_)} columns, as "
                    "when the classifier was fitted"
                )
            return np.asarray(y, dtype=np.float64)
        y = column_or_1d(y, warn=True) if y.ndim == 2 else y
        index = np.searchsorted(self.classes_, y)
        index[index == len(self.classes_)] = 0
        unseen = self.classes_[index] != y
        if unseen.any():
            raise ValueError(
                f"y holds label(s) not among classes_ {self.classes_.tolist()}: "
                f"{np.unique(y[unseen])[:5].tolist()}"
            )
        if len(self.classes_) == 2:
            return index.astype(np.float64)[:, None]
        return np.eye(len(self.classes_))[index]

    def _head(self) -> tuple[list[Any], Any]:
        k = len(self.classes_)
        if self._target_kind == "classes" and k == 2:
            return [{"type": "linear", "units": 1, "activation": "sigmoid"}], "bce"
        if self._target_kind == "classes":
            return [{"type": "linear", "units": k}, "softmax"], "categorical_crossentropy"
        return [{"type": "linear", "units": k, "activation": "sigmoid"}], "bce"

    def _scores(self, X: Any) -> np.ndarray[Any, Any]:
        """Probabilities, one column per output of the network."""
        out = self._outputs(X)
        if self.model_.loss.decision_threshold() == 0.0:  # logits (bce with from_logits)
            out = expit(out)
        return out

    def predict_proba(self, X: Any) -> np.ndarray[Any, Any]:
        """Class probabilities ``(n_samples, n_classes)`` (multilabel: each label's)."""
        p = self._scores(X)
        if self._target_kind == "classes" and len(self.classes_) == 2:
            return np.hstack([1 - p, p])
        return p

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        """The most probable class of each row (multilabel: labels with probability >= 0.5)."""
        p = self._scores(X)
        if self._target_kind == "multilabel":
            return (p >= 0.5).astype(int)
        if len(self.classes_) == 2:
            return np.asarray(self.classes_[(p[:, 0] >= 0.5).astype(int)])
        return np.asarray(self.classes_[np.argmax(p, axis=1)])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MicrofwRegressor(MultiOutputMixin, RegressorMixin, _MicrofwEstimator):  # type: ignore[misc]
    """A microfw network as a scikit-learn regressor (single or multiple outputs).

    See :mod:`microfw.sklearn` for the parameters. The network is trained on standardised
    targets, ``(y - y_mean_) / y_scale_`` (fitted at the first ``fit``/``partial_fit``; a
    constant column keeps scale 1), so that SGD on ``squared_error`` is not thrown off by the
    targets' units; :meth:`predict` maps the network's outputs back. Fitted attributes:
    ``n_outputs_``, ``y_mean_``, ``y_scale_``, ``model_``, ``loss_curve_``, ``n_iter_``,
    ``n_features_in_``, ``feature_names_in_``.
    """

    def partial_fit(self, X: Any, y: Any) -> MicrofwRegressor:
        """Train one epoch on ``(X, y)``, starting a network on the first call."""
        return self._fit(X, y, partial=True, classes=None)  # type: ignore[no-any-return]

    def _learn_targets(self, y: np.ndarray[Any, Any], classes: Any) -> None:
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        self.n_outputs_ = Y.shape[1]
        self.y_mean_ = Y.mean(axis=0)
        scale = Y.std(axis=0)
        self.y_scale_ = np.where(scale > 0, scale, 1.0)

    def _encode(self, y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if Y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {Y.shape[1]} output(s); the regressor was fitted with {self.n_outputs_}"
            )
        return np.asarray((Y - self.y_mean_) / self.y_scale_, dtype=np.float64)

    def _head(self) -> tuple[list[Any], Any]:
        return [{"type": "linear", "units": self.n_outputs_}], "squared_error"

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        """Predictions ``(n_samples,)`` for one output, else ``(n_samples, n_outputs)``."""
        out: np.ndarray[Any, Any] = self._outputs(X) * self.y_scale_ + self.y_mean_
        return out.ravel() if out.shape[1] == 1 else out


def _read_spec(spec: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the spec's data (never the caller's dict), read as ``mf.load_spec``
    reads it (a regular file of bounded size, strict JSON, a :class:`SpecError` if not)."""
    data, _ = read_spec(spec)
    return copy.deepcopy(data)


def _set_widths(layers: list[Any], units: list[int], complete: bool) -> list[Any]:
    """``layers`` with the hidden ``linear`` layers' widths replaced by ``units`` in order
    (a complete spec's last ``linear`` layer is its output layer and keeps its width)."""
    hidden = [
        i
        for i, layer in enumerate(layers)
        if isinstance(layer, dict) and layer.get("type") == "linear"
    ]
    if complete and hidden:
        hidden.pop()
    if len(hidden) != len(units):
        raise ValueError(
            f"hidden_units has {len(units)} width(s) but the spec has {len(hidden)} hidden "
            "linear layer(s)"
        )
    out = list(layers)
    for i, width in zip(hidden, units, strict=True):
        out[i] = {**out[i], "units": width}
    return out


def _model_from_bytes(data: bytes) -> mf.Sequential:
    """The model whose file bytes are ``data`` (checked and loaded by :func:`microfw.load`)."""
    with tempfile.TemporaryDirectory(prefix="microfw-") as tmp:
        path = Path(tmp) / "model.microfw"
        path.write_bytes(data)
        return mf.load(path)
