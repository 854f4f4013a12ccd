"""Plugin parameters: the annotated class attributes of a plugin become a pydantic model.

A plugin declares its parameters as annotated class attributes, for example
``alpha: float = 0.01``. :func:`params_model` turns them into a strict pydantic model
(unknown keys rejected, no NaN or infinity, no silent string-to-number coercion). A
parameter annotated with an interface (``init: Initializer = ref("xavier")``) is a
reference to another plugin: a name, ``{"type": name, **params}`` or an instance.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, cast, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    WithJsonSchema,
    create_model,
)

from microfw.errors import Problem, SpecError, join_path_problem

_MODEL_ATTR = "__microfw_params_model__"
_HINTS_ATTR = "__microfw_parameter_hints__"
PLUGIN_REF_KEY = "x-microfw-plugin"
"""Marks the JSON schema of a parameter that refers to a plugin of the kind it names."""


def ref(name: str) -> Any:
    """A default that names a plugin, e.g. ``init: Initializer = ref("xavier")``.

    In a spec, :meth:`Registry.create` makes it before the plugin's constructor runs; a plugin
    built directly in Python resolves it through the registry in use.
    """
    return name


def interface_of(annotation: Any) -> type | None:
    """The interface class if ``annotation`` is one (a plugin reference), else None.

    ``Interface | None`` (an optional reference, such as ``kernel_regularizer: Regularizer |
    None = None``) gives the interface too; :func:`is_optional_reference` tells the two apart.
    """
    if isinstance(annotation, type) and annotation.__dict__.get("__microfw_interface__", False):
        return annotation
    if is_optional_reference(annotation):
        inner = next(a for a in get_args(annotation) if a is not type(None))
        return cast(type, inner)
    return None


def is_optional_reference(annotation: Any) -> bool:
    """Whether ``annotation`` is ``Interface | None`` (a plugin reference that may be null)."""
    if get_origin(annotation) not in (typing.Union, types.UnionType):
        return False
    args = get_args(annotation)
    others = [a for a in args if a is not type(None)]
    return (
        len(args) == 2
        and len(others) == 1
        and isinstance(others[0], type)
        and others[0].__dict__.get("__microfw_interface__", False)
    )


Resolver = Callable[[str, Any], Any]
_resolver: list[Resolver] = []


def set_reference_resolver(resolver: Resolver) -> None:
    """Install the function that turns a nested plugin reference into an instance:
    ``resolver(kind, reference)``, used when a plugin is built directly in Python (a spec's
    references arrive as instances, made by ``Registry.create``). The registry installs itself
    when it is imported, so this floor needs no import of it."""
    _resolver[:] = [resolver]


def _reference_field(interface: type, optional: bool = False) -> Any:
    kind = interface.kind  # type: ignore[attr-defined]

    def resolve(value: Any) -> Any:
        if isinstance(value, interface) or (optional and value is None):
            return value
        if not _resolver:
            raise TypeError(f"no registry to resolve the {kind} reference {value!r}")
        return _resolver[0](kind, value)

    # A self-contained schema, so pydantic's own generator accepts it; microfw.spec.schema swaps
    # it for a reference to the registered plugins of that kind.
    schema: dict[str, Any] = {
        "anyOf": [{"type": "string"}, {"type": "object"}],
        PLUGIN_REF_KEY: kind,
    }
    if optional:
        schema = {"anyOf": [{"type": "null"}, schema]}
    return typing.Annotated[Any, BeforeValidator(resolve), WithJsonSchema(schema)]


def parameter_hints(cls: type) -> dict[str, Any]:
    """The parameters a plugin class declares (annotated, non-ClassVar, public attributes).

    Worked out once per class (``typing.get_type_hints`` is slow) and cached on it.
    """
    cached = cls.__dict__.get(_HINTS_ATTR)
    if cached is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        cached = {
            name: hint
            for name, hint in hints.items()
            if not name.startswith("_")
            and get_origin(hint) is not ClassVar
            and hint is not ClassVar
        }
        setattr(cls, _HINTS_ATTR, cached)
    return dict(cached)


def params_model(cls: type) -> type[BaseModel]:
    """The pydantic model of ``cls``'s parameters, built once and cached on the class."""
    cached = cls.__dict__.get(_MODEL_ATTR)
    if cached is not None:
        return cast(type[BaseModel], cached)
    fields: dict[str, Any] = {}
    for name, hint in parameter_hints(cls).items():
        interface = interface_of(hint)
        annotation = (
            _reference_field(interface, is_optional_reference(hint))
            if interface is not None
            else hint
        )
        default = getattr(cls, name, ...)
        fields[name] = (annotation, default)
    model = create_model(
        f"{cls.__name__}Params",
        __config__=ConfigDict(
            extra="forbid",
            strict=True,
            allow_inf_nan=False,
            validate_default=True,
            arbitrary_types_allowed=True,
        ),
        __doc__=(cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else None,
        **fields,
    )
    setattr(cls, _MODEL_ATTR, model)
    return model


def validate_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """Validate ``params`` against ``cls``'s schema; raise :class:`SpecError` listing every problem.

    Nested plugin references come back as instances.
    """
    model = params_model(cls)
    try:
        validated = model.model_validate(params)
    except ValidationError as exc:
        raise SpecError(problems_from_pydantic(exc)) from None
    return {name: getattr(validated, name) for name in type(validated).model_fields}


def problems_from_pydantic(exc: ValidationError) -> list[Problem]:
    """Translate pydantic's errors into :class:`Problem` items with ``a.b[2].c`` paths.

    A value that every member of a union refused comes as one error per member, each ending
    its location with the member's tag (``literal['auto']``, ``constrained-int``): those
    become one problem at the field's own path, the messages joined with "or".
    """
    errors = exc.errors(include_url=False)
    members: dict[tuple[Any, ...], int] = {}
    for err in errors:
        members[_union_key(err)] = members.get(_union_key(err), 0) + 1
    problems: list[Problem] = []
    merged: dict[tuple[Any, ...], int] = {}
    for err in errors:
        key = _union_key(err)
        is_member = members[key] > 1
        loc = err["loc"][:-1] if is_member else err["loc"]
        path = ""
        for part in loc:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path = f"{path}.{part}" if path else str(part)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown parameter"
        elif err["type"] == "string_unicode":
            message = "not valid Unicode text (a lone surrogate such as \\ud800)"
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, SpecError):
            problems.extend(join_path_problem(path, inner) for inner in ctx_error.problems)
            continue
        if is_member and key in merged:  # another member's refusal of the same value
            first = problems[merged[key]]
            text = f"{first.message}, or {message[0].lower()}{message[1:]}"
            problems[merged[key]] = Problem(path, text, first.value, first.has_value)
            continue
        if is_member:
            merged[key] = len(problems)
        problems.append(Problem(path, message, err.get("input"), err["type"] != "missing"))
    return problems


def _union_key(err: Any) -> tuple[Any, ...]:
    """Errors of the members of one union share it: the location before the member's tag
    and the very value refused (an error not from a union has a key of its own)."""
    loc = err["loc"]
    tag = loc[-1] if loc else None
    is_tag = isinstance(tag, str) and (not tag.isidentifier() or tag in _TYPE_TAGS)
    if not is_tag or err["type"] == "extra_forbidden":
        return ("own", id(err))
    return (tuple(loc[:-1]), id(err.get("input")))


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "bytes", "list", "dict", "tuple"})
"""Tags pydantic gives plain types among a union's members (others, such as
``literal['auto']`` or ``constrained-int``, are not identifiers)."""
