"""``Sequential``: a stack of layers, a loss and an optimizer, built from a spec or in Python."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TextIO

import numpy as np

from microfw.core.interfaces import Activation, Array, Layer, Loss, Optimizer, to_ref
from microfw.core.registry import Registry, current_registry
from microfw.core.rng import RngKind, make_streams
from microfw.errors import PluginError, Problem, SpecError, short_repr
from microfw.nn.plan import PlanMode, make_plan, plugin_of
from microfw.nn.store import ParameterStore
from microfw.spec.lint import lint
from microfw.spec.lint import warn as warn_lint
from microfw.spec.models import SPEC_VERSION, ModelSpec, Resolved, TrainingSpec, read_spec, resolve
from microfw.train.loop import all_finite, fit
from microfw.train.metrics import accuracy_for, create_metrics, scores

if TYPE_CHECKING:
    from microfw.train.callbacks import Callback
    from microfw.train.loop import History

LayerLike = str | Mapping[str, Any] | Layer | Activation
PluginLike = str | Mapping[str, Any]


def build(
    spec: ModelSpec | Mapping[str, Any] | str | os.PathLike[str],
    registry: Registry | None = None,
    *,
    plan: PlanMode = "fast",
) -> Sequential:
    """Build a model from a spec (a :class:`ModelSpec`, dict, JSON text or path).

    Plugin names are resolved through ``registry`` (default: the current registry); ``plan``
    is as in :class:`Sequential`. Advice from the spec linter (:mod:`microfw.spec.lint`,
    e.g. ``bce`` after a ``linear`` output) comes as :class:`~microfw.SpecWarning` warnings.
    """
    registry = registry or current_registry()
    data, origin = read_spec(spec)
    resolved = resolve(data, registry, source=origin)
    warn_lint(lint(resolved.layers, resolved.layer_paths, resolved.loss), stacklevel=2)
    return Sequential._from_resolved(resolved, registry, plan)


class Sequential:
    """Layers applied in order, trained by minimising ``loss`` with ``optimizer``.

    Args:
        layers: layer or activation names (``"sigmoid"``), dicts (``{"type": "linear",
            "units": 3}``; ``"activation"`` appends that activation), or instances.
            Instances are used as given and (re)built by the model, which also sets how
            they work together: an instance belongs to one model.
        input_dim: number of input features.
        loss: a loss name, dict or instance.
        optimizer: an optimizer name, dict or instance (default ``"sgd"``).
        training: default hyper-parameters of :meth:`fit` (a :class:`TrainingSpec` or dict).
        seed: seed of the random streams (None: fresh entropy).
        rng: ``"pcg64"`` or ``"legacy"`` (initial weights drawn as the seed tutorials did).
        dtype: ``"float64"`` or ``"float32"``, for weights and data.
        registry: where names are looked up (default: the current registry).
        plan: ``"fast"`` (default) runs the training pass with the registered fusion rules;
            ``"plain"`` runs every plugin's plain methods (see :mod:`microfw.nn.plan`). Both
            compute the same maths; :attr:`fusions` lists the rules applied.

    The model owns every array: one flat array of parameters, one of gradients and one of
    state in :attr:`store` (see :mod:`microfw.nn.store`), in ``dtype``.

    Raises :class:`~microfw.SpecError` listing every problem with the arguments.
    """

    def __init__(
        self,
        layers: Sequence[LayerLike],
        *,
        input_dim: int,
        loss: PluginLike | Loss,
        optimizer: PluginLike | Optimizer = "sgd",
        training: TrainingSpec | Mapping[str, Any] | None = None,
        seed: int | None = None,
        rng: RngKind = "pcg64",
        dtype: Literal["float64", "float32"] = "float64",
        registry: Registry | None = None,
        plan: PlanMode = "fast",
    ) -> None:
        data: dict[str, Any] = {
            "spec_version": SPEC_VERSION,
            "input_dim": _python_int(input_dim),
            "layers": list(layers),
            "loss": loss,
            "optimizer": optimizer,
            "seed": _python_int(seed),
            "rng": rng,
            "dtype": dtype,
        }
        if training is not None:
            data["training"] = training
        registry = registry or current_registry()
        self._setup(resolve(data, registry), registry, plan)

    @classmethod
    def _from_resolved(
        cls, resolved: Resolved, registry: Registry, plan: PlanMode = "fast"
    ) -> Sequential:
        self = cls.__new__(cls)
        self._setup(resolved, registry, plan)
        return self

    def _setup(self, resolved: Resolved, registry: Registry, plan: PlanMode) -> None:
        self.registry = registry
        self.plan_mode: PlanMode = plan
        settings = resolved.settings
        self.input_dim: int = settings.input_dim
        self.training: TrainingSpec = settings.training
        self.seed: int | None = settings.seed
        self.rng: RngKind = settings.rng
        self.dtype = np.dtype(settings.dtype)
        self.layers: list[Layer] = resolved.layers
        self.optimizer: Optimizer = resolved.optimizer
        self.streams = make_streams(self.seed, self.rng)
        self.stop_training = False
        self.epochs_trained = 0
        """Epochs completed by :meth:`fit` over the model's life (saved in model files)."""
        self.optimizer_state_loaded = False
        """Whether :func:`microfw.load` restored the optimizer's state (format 3 files)."""
        widths = [self.input_dim]
        for layer in self.layers:
            widths.append(layer.output_dim(widths[-1]))
        self.output_dim: int = widths[-1]
        self.store = ParameterStore(self.dtype, self.streams.init, self.streams.layers)
        self.store.build(
            [
                (f"layers.{i}", layer, n_in)
                for i, (layer, n_in) in enumerate(zip(self.layers, widths, strict=False))
            ]
        )
        overflowed = [_layer_index(n) for n, a in self.store.items() if not np.isfinite(a).all()]
        if overflowed:  # the first such layer
            message = f"initial weights are not finite in {self.dtype}: lower the init scale"
            raise SpecError([Problem(resolved.layer_paths[min(overflowed)], message)])
        self._mirrored = self.store.mirrored  # fixed once the layers are built
        self._params = [a for _, a in self.store.items(trainable=True)]
        self._grads = [self.store.grad(name) for name in self.store.names(trainable=True)]
        self._forward_checked = False
        self.loss = resolved.loss  # after build: plans the training pass

    @property
    def loss(self) -> Loss:
        """The loss; setting it also decides whether it fuses with the last layer."""
        return self._loss

    @loss.setter
    def loss(self, loss: Loss) -> None:
        rules = [] if self.plan_mode == "plain" else [e.rule for e in self.registry.fusions()]
        parameterised = {_layer_index(n) for n, a in self.store.items(trainable=True) if a.size}
        self._plan = make_plan(self.layers, loss, rules, self.plan_mode, parameterised)
        self._loss = loss

    @property
    def fusions(self) -> list[tuple[str, str]]:
        """The fusion rules the training pass uses: ``(layers, rule)`` pairs such as
        ``("layers[0..1]", "linear+relu")`` (none with ``plan="plain"``)."""
        return list(self._plan.applied)

    # -- spec ------------------------------------------------------------------------------

    def to_spec(self) -> ModelSpec:
        """The spec this model corresponds to, every plugin written out in full."""
        return ModelSpec(
            spec_version=SPEC_VERSION,
            input_dim=self.input_dim,
            layers=[to_ref(layer) for layer in self.layers],
            loss=to_ref(self.loss),
            optimizer=to_ref(self.optimizer),
            training=self.training,
            seed=self.seed,
            rng=self.rng,
            dtype="float32" if self.dtype == np.float32 else "float64",
        )

    # -- numerics --------------------------------------------------------------------------

    def forward(self, X: Array, training: bool = False) -> Array:
        """Outputs ``(n_samples, n_outputs)`` of already validated input ``X``, in inference
        mode (as ``predict``, ``evaluate`` and validation run) unless ``training``.

        The output's shape and dtype are checked at the model boundary (a tuple comparison);
        a plugin that returns the wrong shape for some batch is named (:class:`PluginError`).
        """
        out = X
        for layer in self.layers:
            out = layer.forward(out, training)
        self._check_output(X, out)
        return out

    def _check_output(self, X: Array, out: Any) -> None:
        """Refuse an output that is not ``(len(X), output_dim)`` in the model's dtype, naming
        the layer that went wrong (every layer is then run once more, in inference mode)."""
        if (
            isinstance(out, np.ndarray)
            and out.shape == (X.shape[0], self.output_dim)
            and out.dtype == self.dtype
        ):
            return
        self._check_forward(X)
        got = f"{out.dtype}{list(out.shape)}" if isinstance(out, np.ndarray) else short_repr(out)
        raise PluginError(
            f"the model's output for {X.shape[0]} row(s) was {got}, expected "
            f"{self.dtype}{[X.shape[0], self.output_dim]} (a layer's training and inference "
            "results differ in shape)"
        )

    def train_batch(self, X: Array, y: Array) -> tuple[float, Array]:
        """Forward, loss and backward on validated arrays: returns (loss, outputs).

        Fills the gradients in :attr:`store`; does not update the parameters.
        """
        plan = self._plan
        out = X
        for step in plan.steps:
            out = step.forward(out)
        value, dy, out = plan.head(out, y)
        if (
            out.__class__ is not np.ndarray
            or out.shape != (X.shape[0], self.output_dim)
            or out.dtype is not self.dtype
        ):
            self._check_output(X, out)  # returns if all is well after all; else names the plugin
        for step in reversed(plan.steps):
            dy = step.backward(dy)
        if self._mirrored:
            self.store.pull_gradients()
        if self.store.regularized:  # penalties: on the loss value and on the gradients
            value += self.store.add_penalty_gradients()
        return value, out

    def predict(self, X: Any) -> Array:
        """Model outputs for ``X`` ``(n_samples, input_dim)``: ``(n_samples, n_outputs)``."""
        return self.forward(self.check_X(X))

    def evaluate(self, X: Any, y: Any) -> dict[str, float]:
        """``{"loss": ..., "accuracy": ...}`` on ``(X, y)``, in inference mode.

        ``loss`` includes the regularizers' penalties, as in Keras. ``accuracy`` is reported
        when every target is 0 or 1 (see :mod:`microfw.train.metrics`); with ``metrics`` in
        the training section, those metrics instead.
        """
        X, y = self.check_data(X, y)
        out = self.forward(X)
        result = {"loss": self.loss.value(out, y) + self.store.penalty()}
        if self.training.metrics is not None:
            metrics = create_metrics(self.registry, self.training.metrics)
            for metric in metrics:
                metric.start(self.loss, y)
                metric.update(out, y)
            result.update(scores(metrics))
            return result
        accuracy = accuracy_for(y, self.loss)
        if accuracy is not None:
            result["accuracy"] = accuracy(out, y)
        return result

    def compute_gradients(self, X: Any, y: Any) -> tuple[float, list[Array]]:
        """The loss on ``(X, y)`` and its gradients, aligned with :meth:`get_weights`.

        Parameters are not updated.
        """
        value, _ = self.train_batch(*self.check_data(X, y))
        return value, [g.copy() for g in self._grads]

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        validation_data: tuple[Any, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        **overrides: Any,
    ) -> History:
        """Train on ``(X, y)``; ``overrides`` replace fields of :attr:`training` for this call.

        See :func:`microfw.train.loop.fit`.
        """
        return fit(self, X, y, validation_data=validation_data, callbacks=callbacks, **overrides)

    # -- weights ---------------------------------------------------------------------------

    def parameters(self) -> list[Array]:
        """The live trainable arrays, aligned with :meth:`gradients` (optimizers update these)."""
        return self._params

    def gradients(self) -> list[Array]:
        """The live gradient arrays of the last backward pass."""
        return self._grads

    def optimizer_arrays(self) -> tuple[list[Array], list[Array]]:
        """The arrays the optimizer steps, as ``([parameters], [gradients])``: the store's
        two flat arrays, which :meth:`parameters` and :meth:`gradients` are views of."""
        return [self.store.params], [self.store.grads]

    def parameters_changed(self) -> None:
        """Call after changing :attr:`store` parameters in place (an optimizer step, a
        restore): layers written for microfw 0.1 get their own copies updated."""
        if self.store.mirrored:
            self.store.push_parameters()

    def get_weights(self) -> list[Array]:
        """Copies of the trainable arrays, layer by layer (dense: ``W (n_in, n_out)``, ``b``)."""
        return [p.copy() for p in self._params]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Copy ``weights`` (aligned with :meth:`get_weights`) into the model, cast to its dtype.

        Raises ``ValueError`` if the count or a shape differs; nothing is changed then.
        """
        if len(weights) != len(self._params):
            raise ValueError(
                f"set_weights expected {len(self._params)} arrays (shapes "
                f"{[p.shape for p in self._params]}), got {len(weights)}"
            )
        arrays = [np.asarray(w) for w in weights]
        for i, (w, p) in enumerate(zip(arrays, self._params, strict=True)):
            if w.shape != p.shape:
                raise ValueError(
                    f"set_weights: array {i} ({self.weight_names()[i]}) has shape {w.shape}, "
                    f"expected {p.shape}"
                )
        for w, p in zip(arrays, self._params, strict=True):
            np.copyto(p, w, casting="same_kind")
        self.parameters_changed()

    def count_parameters(self, layer: int | None = None) -> int:
        """The number of trainable values in the model, or in ``layers[layer]``."""
        if layer is None:
            return int(self.store.params.size)
        prefix = f"layers.{layer}."
        return sum(a.size for n, a in self.store.items(trainable=True) if n.startswith(prefix))

    def weight_names(self) -> list[str]:
        """Names of the arrays of :meth:`get_weights`: ``layers.<layer index>.<array name>``
        (``layers.0.W``, ``layers.0.b``), as the layers declared them."""
        return self.store.names(trainable=True)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write spec, weights and plugin versions to one file, atomically (:mod:`microfw.io`)."""
        from microfw.nn.modelfile import save

        save(self, path)

    # -- data checks -----------------------------------------------------------------------

    def check_X(self, X: Any) -> Array:
        """``X`` as a 2-D finite array of the model's dtype with ``input_dim`` columns.

        Bool, integer and float arrays (or nested lists) are converted to the model's dtype;
        strings, objects, complex numbers and dates are refused (``ValueError``).
        """
        X = _numeric(X, "X")
        if X.ndim != 2 or X.shape[1] != self.input_dim:
            raise ValueError(
                f"X has shape {X.shape}; expected (n_samples, {self.input_dim}) "
                f"(input_dim={self.input_dim})"
            )
        checked = _finite(_cast(X, self.dtype), "X")
        if not self._forward_checked and checked.shape[0]:
            self._check_forward(checked[:2])
        return checked

    def _check_forward(self, X: Array) -> None:
        """Run the first rows through every layer once, checking each output's shape and dtype.

        A plugin whose forward disagrees with its ``output_dim`` (or changes the dtype) is
        named here, with its package, rather than failing later deep in numpy or not at all.
        """
        out, width = X, self.input_dim
        for i, layer in enumerate(self.layers):
            n_in, width = width, layer.output_dim(width)
            out = layer.forward(out, False)
            expected = f"{self.dtype}{[X.shape[0], width]}"
            got = (
                f"{out.dtype}{list(out.shape)}" if isinstance(out, np.ndarray) else short_repr(out)
            )
            if got != expected:
                plugin = plugin_of(layer)
                raise PluginError(
                    f"layers[{i}]: {plugin.kind} {plugin.name!r} from "
                    f"{self.registry.origin(plugin)}: forward returned {got} for "
                    f"{X.shape[0]} row(s) of width {n_in}, expected {expected} (one row per "
                    "input row, output_dim columns, the model's dtype)"
                )
        self._forward_checked = True

    def check_data(self, X: Any, y: Any) -> tuple[Array, Array]:
        """``(X, y)`` checked and cast as in :meth:`check_X`; a 1-D ``y`` becomes one column.

        At least one row is needed: losses are means over the rows.
        """
        X = self.check_X(X)
        y = _numeric(y, "y")
        shape = y.shape
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        width = self.loss.target_dim(self.output_dim)  # 1 for integer class labels
        if y.shape != (X.shape[0], width):
            labels = (
                f", class labels for loss {self.loss.name!r}" if width != self.output_dim else ""
            )
            raise ValueError(
                f"y has shape {shape}; expected "
                f"({X.shape[0]}, {width}) (X has {X.shape[0]} rows, the model "
                f"{self.output_dim} output(s){labels})"
                + ("; a 1-D y is allowed for one column" if width == 1 else "")
            )
        if not X.shape[0]:
            raise ValueError("no samples: X and y have 0 rows")
        y = _finite(_cast(y, self.dtype), "y")
        self.loss.check_targets(y)
        if width != self.output_dim and y.size and (y.max() >= self.output_dim):
            raise ValueError(
                f"class labels must lie in 0 .. {self.output_dim - 1} for a model with "
                f"{self.output_dim} outputs, got {y.max():g}"
            )
        return X, y

    def __repr__(self) -> str:
        layers = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential([{layers}], input_dim={self.input_dim}, loss={self.loss!r})"

    def summary(self, file: TextIO | None = None) -> None:
        """Print the layer table ``microfw validate`` prints (to ``file``, default stdout)."""
        from microfw.nn.summary import summary_text

        print(summary_text(self), file=file)

    def _repr_html_(self) -> str:
        """The layer table, for Jupyter."""
        from microfw.nn.summary import summary_html

        return summary_html(self)


def _layer_index(name: str) -> int:
    """The layer index of a store array's full name (``layers.<i>.<array>``)."""
    return int(name.split(".", 2)[1])


def _python_int(value: Any) -> Any:
    """NumPy integers (e.g. ``X.shape[1]`` of an array library) as Python ints; others as given."""
    return int(value) if isinstance(value, np.integer) else value


def _numeric(value: Any, name: str) -> np.ndarray[Any, Any]:
    """``value`` as an array of bools, integers or floats; anything else is a ``ValueError``."""
    try:
        a = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{name} could not be read as an array: {exc}") from None
    if a.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} has dtype {a.dtype}; expected numbers (bool, integer or float), e.g. "
            f"np.asarray({name}, dtype=float) after checking the values"
        )
    return a


def _cast(a: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> Array:
    # Values beyond float32's range become inf here, which _finite reports.
    with np.errstate(over="ignore"):
        return a.astype(dtype, copy=False)


def _finite(a: Array, name: str) -> Array:
    with np.errstate(over="ignore", invalid="ignore"):  # data may be large: no warning
        finite = all_finite(a)
    if not finite:
        bad = np.argwhere(~np.isfinite(a))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(
            f"{name} contains non-finite values (first at index {where})"
            + (" after conversion to float32" if a.dtype == np.float32 else "")
        )
    return a
