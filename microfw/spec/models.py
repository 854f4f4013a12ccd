"""The model spec: pydantic models of the JSON document, validated against the live registry.

:func:`resolve` is the one place where plugin names become objects; :func:`load_spec`
validates a document through it and :func:`microfw.build` / :class:`microfw.Sequential`
construct models through it. Every problem is collected before anything is raised, so a
:class:`~microfw.SpecError` lists them all, each with its path (``layers[2].units``).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeGuard, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from microfw import _json as strict_json
from microfw._files import read_regular
from microfw.core.activation_layer import ActivationLayer
from microfw.core.interfaces import Activation, Layer, Loss, Optimizer, Plugin, to_ref
from microfw.core.params import parameter_hints, problems_from_pydantic
from microfw.core.registry import Registry, current_registry, unknown_name_message
from microfw.core.rng import RngKind
from microfw.errors import (
    NotRegularFileError,
    Problem,
    SpaceError,
    SpecError,
    TooLargeError,
    join_path,
    join_path_problem,
)

SPEC_VERSION: Literal[1] = 1
MAX_PARAMETERS = 10_000_000
"""The most parameters a spec may ask for (80 MB of float64 weights), checked before any array
is made. The count is an upper bound from the widths: ``n_in * n_out + n_out`` for every layer
except element-wise activations (exact for ``linear``)."""
MAX_LAYERS = 1000
"""The most layers a spec may hold, counted after a layer's ``"activation"`` key has added
its activation: building and checking stay quick and linear in the layers."""
MAX_SPEC_BYTES = 2**22
"""The largest spec file read (4 MiB), and the largest ``spec.json`` in a model file."""
MAX_WIDTH = 2**31 - 1
"""The widest input or layer output (the largest int32): wider data could not be held."""
MAX_BLAS_THREADS = 1024
"""The most BLAS threads ``training.blas_threads`` may ask for."""
PLUGIN_FIELDS = ("layers", "loss", "optimizer")
DEFAULT_OPTIMIZER = "sgd"

_CONFIG = ConfigDict(
    extra="forbid", strict=True, frozen=True, allow_inf_nan=False, use_attribute_docstrings=True
)

_Model = TypeVar("_Model", bound=BaseModel)

PluginData = str | dict[str, Any]
"""A plugin reference as spec data: a bare name or ``{"type": name, **params}``."""


class TrainingSpec(BaseModel):
    """Hyper-parameters of :meth:`~microfw.Sequential.fit`; each can be overridden per call."""

    model_config = _CONFIG

    epochs: Annotated[int, Field(ge=0)] = 1
    """Passes over the training data."""
    batch_size: Annotated[int, Field(gt=0)] | None = None
    """Rows per mini-batch; null trains on the full batch."""
    shuffle: bool = True
    """Reshuffle the rows every epoch (skipped when one batch holds them all)."""
    validation_split: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Fraction of the rows held out, at random, to report ``val_loss``."""
    blas_threads: Literal["auto"] | Annotated[int, Field(gt=0, le=MAX_BLAS_THREADS)] | None = "auto"
    """BLAS threads while training: "auto" (one for small batches, else the fastest count
    as timed during the fit), a count, or null to leave BLAS as it is."""
    metrics: list[str | dict[str, Any]] | None = None
    """Metric plugins fit and evaluate report (``["accuracy", "f1"]``; validation ones
    prefixed ``val_``); null reports accuracy where the targets are 0/1 or class labels."""

    def updated(self, **overrides: Any) -> TrainingSpec:
        """A copy with ``overrides`` applied; :class:`~microfw.SpecError` lists every problem."""
        problems: list[Problem] = []
        out = _validate_model(TrainingSpec, {**dict(self), **overrides}, "", problems)
        if out is None:
            raise SpecError(problems, source="(fit arguments)")
        return out


class SpecSettings(BaseModel):
    """The spec's fields that are not plugin references."""

    model_config = _CONFIG

    spec_version: Literal[1]
    """Format of this document (currently 1)."""

    @field_validator("spec_version", mode="before")
    @classmethod
    def _an_integer(cls, value: Any) -> Any:
        # Literal[1] alone takes true and 1.0, which equal 1 in Python: not a version number.
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("Input should be the integer 1")
        return value

    input_dim: Annotated[int, Field(gt=0, le=MAX_WIDTH)]
    """Number of input features (columns of ``X``)."""
    training: TrainingSpec = TrainingSpec()
    """Default hyper-parameters of fit()."""
    seed: Annotated[int, Field(ge=0)] | None = None
    """Seed of every random stream; null draws fresh entropy (not reproducible)."""
    rng: RngKind = "pcg64"
    """``legacy`` draws initial weights as the seed tutorials did (``RandomState``)."""
    dtype: Literal["float64", "float32"] = "float64"
    """Floating-point type of weights and data."""


class ModelSpec(SpecSettings):
    """A validated spec with every plugin written out in full (``{"type": name, **params}``).

    Obtain one from :func:`load_spec` or :meth:`~microfw.Sequential.to_spec`; constructing it
    directly checks the structure only, not the plugins (build or load it to check those).
    A ``ModelSpec`` is a pydantic model, not JSON data: :meth:`to_dict` gives the document
    (what ``json.dumps`` accepts) and :meth:`to_json` its text; :func:`load_spec` reads either
    back equal to the spec.
    """

    layers: list[PluginData]
    """The layers, in order."""
    loss: PluginData
    """The training objective."""
    optimizer: PluginData = DEFAULT_OPTIMIZER
    """The update rule and its learning-rate schedule."""

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON document of plain Python data.

        Only ``dict`` (string keys), ``list``, ``str``, ``int``, ``float`` (finite), ``bool``
        and ``None``: ``json.dumps`` accepts it, and ``load_spec(spec.to_dict()) == spec``.
        Every plugin is written out in full, as ``{"type": name, **params}``.
        """
        data: dict[str, Any] = self.model_dump(mode="json")
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """The spec as JSON text (``json.dumps(self.to_dict(), indent=indent)``), the form a
        model file stores; ``load_spec(spec.to_json()) == spec``."""
        return json.dumps(self.to_dict(), indent=indent)


@dataclass
class Resolved:
    """A spec turned into objects: settings and plugin instances (no arrays allocated yet)."""

    settings: SpecSettings
    layers: list[Layer]
    loss: Loss
    optimizer: Optimizer
    layer_paths: list[str]
    """Where each layer came from in the spec (``layers[2]``, ``layers[2].activation``)."""

    def to_spec(self) -> ModelSpec:
        """The corresponding :class:`ModelSpec`."""
        return ModelSpec(
            **dict(self.settings),
            layers=[to_ref(layer) for layer in self.layers],
            loss=to_ref(self.loss),
            optimizer=to_ref(self.optimizer),
        )


def load_spec(
    source: str | os.PathLike[str] | Mapping[str, Any] | ModelSpec,
    registry: Registry | None = None,
) -> ModelSpec:
    """Read and validate a spec: a path, JSON text, a dict or a :class:`ModelSpec`.

    A string starting with ``{`` is JSON text, any other string a path. Raises
    :class:`~microfw.SpecError` listing every problem.
    """
    data, origin = read_spec(source)
    return resolve(data, registry, source=origin).to_spec()


def resolve(
    data: Mapping[str, Any], registry: Registry | None = None, *, source: str | None = None
) -> Resolved:
    """Validate spec data and create its plugins; entries may also be plugin instances.

    Layer names resolve among layers first, then among activations (wrapped in an
    :class:`~microfw.core.activation_layer.ActivationLayer`). Widths are checked with
    :meth:`Layer.output_dim` and :meth:`Loss.check_output_dim` before any array exists.
    """
    registry = registry or current_registry()
    problems: list[Problem] = []
    settings = _validate_model(
        SpecSettings, {k: v for k, v in data.items() if k not in PLUGIN_FIELDS}, "", problems
    )
    layers = _resolve_layers(data.get("layers"), "layers" in data, registry, problems)
    if "loss" in data:
        loss = _create(registry, "loss", data["loss"], "loss", problems)
    else:
        problems.append(Problem("loss", "missing: the loss, e.g. 'squared_error'"))
        loss = None
    optimizer = _create(
        registry, "optimizer", data.get("optimizer", DEFAULT_OPTIMIZER), "optimizer", problems
    )
    if settings is not None and settings.training.metrics is not None:
        _check_metrics(settings.training.metrics, registry, problems)
    if settings is not None and settings.rng == "legacy" and (settings.seed or 0) >= 2**32:
        message = "the legacy RNG (numpy RandomState) needs a seed below 2**32"
        problems.append(Problem("seed", message, settings.seed, True))
    input_dim = data.get("input_dim")
    if layers is not None and _is_positive_int(input_dim) and input_dim <= MAX_WIDTH:
        _check_widths(input_dim, layers, loss, problems)
    if problems:
        raise SpecError(problems, source=source)
    assert settings is not None and layers is not None
    return Resolved(
        settings,
        [layer for _, layer in layers],
        loss,
        optimizer,
        [path for path, _ in layers],
    )


def _check_metrics(refs: list[Any], registry: Registry, problems: list[Problem]) -> None:
    """Every metric of the training section exists, builds, and appears once."""
    seen: dict[str, int] = {}
    for i, ref in enumerate(refs):
        path = f"training.metrics[{i}]"
        metric = _create(registry, "metric", ref, path, problems)
        if metric is None:
            continue
        if metric.name in seen:
            message = (
                f"{metric.name!r} is listed twice (also training.metrics[{seen[metric.name]}])"
            )
            problems.append(Problem(path, message))
        seen.setdefault(metric.name, i)


def read_spec(source: Any) -> tuple[dict[str, Any], str | None]:
    """The raw data of a spec given as a path, JSON text, dict or ModelSpec, and its path."""
    if isinstance(source, ModelSpec):
        return source.to_dict(), None
    if isinstance(source, Mapping):
        return dict(source), None
    if source is None or isinstance(source, bool | int | float | list | tuple):
        raise SpecError([Problem("", "expected a JSON object", source, True)])
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"a spec is a path, JSON text or a dict, not {type(source).__name__}")
    return read_json_object(source)


def read_json_object(
    source: str | os.PathLike[str],
    *,
    error: type[SpecError] | type[SpaceError] = SpecError,
    constants: bool = True,
) -> tuple[dict[str, Any], str | None]:
    """The JSON object in ``source`` (JSON text starting with ``{``, or a path), and the path.

    The file must be a regular one of at most :data:`MAX_SPEC_BYTES`, in UTF-8 (a byte-order
    mark allowed); the JSON strict (no key twice; NaN and Infinity only with ``constants``).
    Raises ``error`` (:class:`SpecError` or :class:`SpaceError`) naming the file and the
    path, or ``OSError`` (a file missing or unreadable).
    """
    # JSON text may start with a byte-order mark (as some editors write) and blank space.
    if isinstance(source, str) and source.lstrip(_BLANK).startswith("{"):
        text, origin = source.lstrip(_BLANK), None
    else:
        origin = os.fspath(source)
        try:  # a regular file of bounded size: a FIFO would block, /dev/zero never end
            text = read_regular(origin, MAX_SPEC_BYTES).decode("utf-8-sig")
        except (NotRegularFileError, TooLargeError) as exc:
            raise error([Problem("", str(exc.strerror))], source=origin) from None
        except UnicodeDecodeError as exc:
            message = f"not UTF-8 text: byte {exc.start} cannot be decoded"
            raise error([Problem("", message)], source=origin) from None
    try:
        data = strict_json.loads(text, constants=constants)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise error([Problem("", message)], source=origin) from None
    except strict_json.JSONTextError as exc:  # a key given twice, an integer too long
        raise error([Problem(exc.path, exc.message)], source=origin) from None
    except RecursionError:
        message = "JSON nested too deeply to read"
        raise error([Problem("", message)], source=origin) from None
    if not isinstance(data, dict):
        raise error([Problem("", "expected a JSON object", data, True)], source=origin)
    return data, origin


_BLANK = "\ufeff \t\r\n"


def _validate_model(
    model: type[_Model], data: Mapping[str, Any], path: str, problems: list[Problem]
) -> _Model | None:
    """``data`` validated as ``model``; None, with every problem added to ``problems``, if
    it is invalid."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        allowed = {"": list(model.model_fields)}
        if model is SpecSettings:
            allowed[""] += PLUGIN_FIELDS
            allowed["training"] = list(TrainingSpec.model_fields)
        found = problems_from_pydantic(exc)
        problems.extend(_prefix(path, _suggest_keys(found, allowed)))
        return None


def _resolve_layers(
    items: Any, present: bool, registry: Registry, problems: list[Problem]
) -> list[tuple[str, Layer]] | None:
    """The layers with the path each came from, or None if any problem was found."""
    if not present:
        problems.append(Problem("layers", "missing: the list of layers"))
        return None
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        problems.append(Problem("layers", "expected a non-empty list of layers", items, True))
        return None
    if len(items) > MAX_LAYERS:
        message = f"{len(items):,} layers; the limit is {MAX_LAYERS:,} (microfw.spec.MAX_LAYERS)"
        problems.append(Problem("layers", message))
        return None
    before = len(problems)
    out: list[tuple[str, Layer]] = []
    first_use: dict[int, int] = {}
    for i, item in enumerate(items):
        if isinstance(item, Plugin):
            # Each layer owns its arrays: one instance cannot sit at two places.
            j = first_use.setdefault(id(item), i)
            if j != i:
                message = f"the same instance as layers[{j}]; create a new one"
                problems.append(Problem(f"layers[{i}]", message, item, True))
                continue
        out.extend(_resolve_layer(registry, item, f"layers[{i}]", problems))
    if len(out) > MAX_LAYERS:
        message = (
            f"{len(out):,} layers once each 'activation' key adds its layer; the limit is "
            f"{MAX_LAYERS:,} (microfw.spec.MAX_LAYERS)"
        )
        problems.append(Problem("layers", message))
    return out if len(problems) == before else None


def _resolve_layer(
    registry: Registry, item: Any, path: str, problems: list[Problem]
) -> list[tuple[str, Layer]]:
    if isinstance(item, Layer):
        return [(path, item)]
    if isinstance(item, Activation):
        return [(path, ActivationLayer(item))]
    if isinstance(item, str):
        name, params, name_path = item, {}, path
    elif isinstance(item, Mapping):
        params = dict(item)
        name, name_path = params.pop("type", None), join_path(path, "type")
        if name is None:
            problems.append(Problem(name_path, "missing: the layer or activation name"))
            return []
    else:
        message = "expected a layer or activation name, {'type': name, ...} or an instance"
        problems.append(Problem(path, message, item, True))
        return []
    if not isinstance(name, str) or not (
        registry.has("layer", name) or registry.has("activation", name)
    ):
        available = sorted([*registry.names("layer"), *registry.names("activation")])
        message = unknown_name_message("layer or activation", name, available)
        problems.append(Problem(name_path, message))
        return []
    kind = "layer" if registry.has("layer", name) else "activation"
    activation: Any = None
    takes_activation = "activation" in parameter_hints(registry.get(kind, name))
    shorthand = kind == "layer" and not takes_activation and "activation" in params
    if shorthand:
        activation = params.pop("activation")  # shorthand: this layer, then that activation
        if activation is None:  # not silently "no activation": omit the key for that
            message = "expected an activation name or object (omit the key for none)"
            problems.append(Problem(join_path(path, "activation"), message, None, True))
    layer = _create(registry, kind, {"type": name, **params} if params else name, path, problems)
    out: list[tuple[str, Layer]] = []
    if layer is not None:
        out.append((path, layer if kind == "layer" else ActivationLayer(layer)))
    if activation is not None:
        act_path = join_path(path, "activation")
        act = _create(registry, "activation", activation, act_path, problems)
        if act is not None:
            out.append((act_path, ActivationLayer(act)))
    return out


def _create(registry: Registry, kind: str, ref: Any, path: str, problems: list[Problem]) -> Any:
    """``registry.create`` with its problems prefixed by ``path``; None if it failed."""
    try:
        return registry.create(kind, ref)
    except SpecError as exc:
        found = exc.problems
        name = ref.get("type") if isinstance(ref, Mapping) else None
        if isinstance(name, str) and registry.has(kind, name):
            allowed = list(parameter_hints(registry.get(kind, name)))
            if kind == "layer" and "activation" not in allowed:
                allowed.append("activation")
            found = _suggest_keys(found, {"": allowed})
        problems.extend(_prefix(path, found))
        return None


def _check_widths(
    input_dim: int, layers: list[tuple[str, Layer]], loss: Loss | None, problems: list[Problem]
) -> None:
    width = input_dim
    parameters = 0
    for path, layer in layers:
        try:
            out = layer.output_dim(width)
        except (ValueError, ArithmeticError) as exc:  # OverflowError: a float of a huge width
            message = f"cannot take an input of width {magnitude(width)}: {exc}"
            problems.append(Problem(path, message))
            return
        if not _is_positive_int(out):
            message = f"output width must be a positive integer for input width {magnitude(width)}"
            problems.append(Problem(path, message, out, True))
            return
        if not isinstance(layer, ActivationLayer):
            parameters += width * out + out
            if parameters > MAX_PARAMETERS:
                message = (
                    f"the model would have about {magnitude(parameters)} parameters up to "
                    f"here (input width {magnitude(width)}, output width {magnitude(out)}); "
                    f"the limit is {MAX_PARAMETERS:,} (microfw.spec.MAX_PARAMETERS)"
                )
                problems.append(Problem(path, message))
                return
        if out > MAX_WIDTH:
            message = (
                f"output width {magnitude(out)} is more than {MAX_WIDTH:,} (microfw.spec.MAX_WIDTH)"
            )
            problems.append(Problem(path, message))
            return
        width = out
    if loss is not None:
        try:
            loss.check_output_dim(width)
        except (ValueError, ArithmeticError) as exc:
            message = f"{exc} (the last layer gives {magnitude(width)} output(s))"
            problems.append(Problem("loss", message))


def magnitude(n: int) -> str:
    """An integer for a message: exact up to 1e6, else ``3e+09``, even past float's range."""
    if abs(n) < 10**6:
        return str(n)
    if abs(n) < 10**300:
        return f"{n:.3g}"
    return f"{'-' if n < 0 else ''}1e+{int(abs(n).bit_length() * math.log10(2))} or more"


def _suggest_keys(problems: list[Problem], allowed: dict[str, list[str]]) -> list[Problem]:
    """Add a did-you-mean to "unknown key" problems; ``allowed`` maps a path to its keys."""
    out = []
    for p in problems:
        parent, _, key = p.path.rpartition(".")
        if p.message == "unknown parameter" and parent in allowed and "[" not in key:
            close = difflib.get_close_matches(key, allowed[parent], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown key{hint} (allowed: {', '.join(allowed[parent])})"
            p = Problem(p.path, message, p.value, p.has_value)
        out.append(p)
    return out


def _prefix(prefix: str, problems: list[Problem]) -> list[Problem]:
    return [join_path_problem(prefix, p) for p in problems]


def _is_positive_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def plugins_of(objects: Sequence[Plugin]) -> list[tuple[str, str, type[Plugin]]]:
    """Every ``(kind, name, class)`` used by ``objects`` and the plugins nested in their
    parameters."""
    seen: list[tuple[str, str, type[Plugin]]] = []
    stack = deque(objects)  # popleft: linear in the number of layers
    while stack:
        obj = stack.popleft()
        if isinstance(obj, ActivationLayer):
            obj = obj.activation
        key = (obj.kind, obj.name, type(obj))
        if key not in seen:
            seen.append(key)
        stack.extend(v for k in obj.get_params() if isinstance(v := getattr(obj, k), Plugin))
    return seen
