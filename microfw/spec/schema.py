"""The JSON Schema of a model spec, generated from the registry as it stands.

Every registered plugin contributes the JSON schema of its parameters model, with a
``"type": {"const": name}`` property added; ``$defs`` holds one ``<kind>_ref`` per plugin
kind (a bare name of a plugin without required parameters, or one of the plugin objects),
which nested references such as ``init`` point to.
"""

from __future__ import annotations

import warnings
from typing import Any

from microfw.core.interfaces import INTERFACES
from microfw.core.params import PLUGIN_REF_KEY, parameter_hints, params_model
from microfw.core.registry import Entry, Registry, current_registry
from microfw.spec.models import DEFAULT_OPTIMIZER, PLUGIN_FIELDS, SpecSettings

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _link_refs(value: Any) -> Any:
    """Replace the schema of every plugin-reference parameter by ``$ref`` to its kind's list."""
    if isinstance(value, dict):
        if PLUGIN_REF_KEY in value:
            kept = {k: v for k, v in value.items() if k not in (PLUGIN_REF_KEY, "anyOf")}
            return {**kept, "$ref": f"#/$defs/{value[PLUGIN_REF_KEY]}_ref"}
        return {k: _link_refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_link_refs(v) for v in value]
    return value


def _model_schema(model: Any, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    schema: dict[str, Any] = _link_refs(model.model_json_schema(ref_template=ref_template))
    return schema


def json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec for the plugins of ``registry``."""
    registry = registry or current_registry()
    defs: dict[str, Any] = {}
    # Each plugin's schema on its own: one that cannot be expressed is left out and reported.
    usable = {kind: _expressible(registry.entries(kind)) for kind in INTERFACES}
    for kind in INTERFACES:
        entries = usable[kind]
        defs[f"{kind}_ref"] = _ref_schema(entries, [_plugin_def(e, defs) for e in entries])
    layer_entries = usable["layer"] + usable["activation"]
    defs["layers_item"] = _ref_schema(
        layer_entries,
        [
            *(_plugin_def(e, defs, shorthand_activation=True) for e in usable["layer"]),
            *(_plugin_def(e, defs) for e in usable["activation"]),
        ],
    )
    settings = _model_schema(SpecSettings)
    defs.update(settings.pop("$defs", {}))
    properties = dict(settings["properties"])
    properties["layers"] = {
        "type": "array",
        "minItems": 1,
        "items": {"$ref": "#/$defs/layers_item"},
        "description": "The layers, in order: a name or {'type': name, ...} each; a layer's "
        "'activation' key appends that activation.",
    }
    properties["loss"] = {"$ref": "#/$defs/loss_ref", "description": "The training objective."}
    properties["optimizer"] = {
        "$ref": "#/$defs/optimizer_ref",
        "default": DEFAULT_OPTIMIZER,
        "description": "The update rule and its learning-rate schedule.",
    }
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "microfw model spec",
        "type": "object",
        "properties": properties,
        "required": [
            *settings.get("required", []),
            *(f for f in PLUGIN_FIELDS if f != "optimizer"),
        ],
        "additionalProperties": False,
        "$defs": defs,
    }


def _expressible(entries: list[Entry]) -> list[Entry]:
    """The entries whose parameters have a JSON Schema; a ``RuntimeWarning`` names the
    others (e.g. a ``typing.Callable`` parameter) with their package."""
    out = []
    for entry in entries:
        try:
            _plugin_def(entry, {}, shorthand_activation=entry.kind == "layer")
            _ref_schema([entry], [])
        except Exception as exc:
            warnings.warn(
                f"microfw plugin left out of the JSON Schema: {entry.kind} {entry.name!r} from "
                f"{entry.provenance}: its parameters cannot be expressed in JSON Schema "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        out.append(entry)
    return out


def _plugin_def(entry: Entry, defs: dict[str, Any], *, shorthand_activation: bool = False) -> str:
    """Add the object schema of one plugin to ``defs``; return its key."""
    prefix = f"{entry.kind}.{entry.name}"
    key = f"{prefix}+activation" if shorthand_activation else prefix
    schema = _model_schema(params_model(entry.cls), f"#/$defs/{prefix}.{{model}}")
    for name, sub in schema.pop("$defs", {}).items():
        defs[f"{prefix}.{name}"] = sub
    properties = {"type": {"const": entry.name}, **schema.get("properties", {})}
    if shorthand_activation and "activation" not in parameter_hints(entry.cls):
        properties["activation"] = {
            "$ref": "#/$defs/activation_ref",
            "description": "Shorthand: this layer followed by that activation.",
        }
    defs[key] = {
        **schema,
        "title": f"{entry.kind} {entry.name} ({entry.provenance})",
        "properties": properties,
        "required": ["type", *schema.get("required", [])],
        "additionalProperties": False,
    }
    return key


def _ref_schema(entries: list[Entry], keys: list[str]) -> dict[str, Any]:
    """A bare name of a plugin whose parameters all have defaults, or one plugin object."""
    bare = [
        e.name
        for e in entries
        if not any(f.is_required() for f in params_model(e.cls).model_fields.values())
    ]
    return {"anyOf": [{"enum": bare}, *({"$ref": f"#/$defs/{k}"} for k in keys)]}
