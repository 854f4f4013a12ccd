"""The JSON Schema of a model spec, generated from the registry as it stands.

Every registered plugin contributes the JSON schema of its parameters model, with a
``"type": {"const": name}`` property added; ``$defs`` holds one ``<kind>_ref`` per plugin
kind (a bare name of a plugin without required parameters, or one of the plugin objects),
which nested references such as ``init`` point to.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

from microfw.interfaces import INTERFACES
from microfw.params import parameter_hints, params_model
from microfw.registry import Entry, Registry, current_registry
from microfw.spec import DEFAULT_OPTIMIZER, PLUGIN_FIELDS, SpecSettings

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_PLUGIN_REF = re.compile(r"#/\$defs/[a-z]+_ref")
_PLACEHOLDER = "x-microfw-ref"


class _Generator(GenerateJsonSchema):
    """Pydantic's generator, hiding the ``#/$defs/<kind>_ref`` references of plugin params.

    Pydantic resolves every ``$ref`` against its own definitions and fails on these, which only
    :func:`json_schema` defines; they travel under a placeholder key and are put back after.
    """

    def generate_inner(self, schema: Any) -> JsonSchemaValue:
        out = super().generate_inner(schema)
        if isinstance(out, dict) and _PLUGIN_REF.fullmatch(str(out.get("$ref", ""))):
            out = {(_PLACEHOLDER if k == "$ref" else k): v for k, v in out.items()}
        return out


def _restore_refs(value: Any) -> Any:
    if isinstance(value, dict):
        return {("$ref" if k == _PLACEHOLDER else k): _restore_refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_refs(v) for v in value]
    return value


def _model_schema(model: Any, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=ref_template, schema_generator=_Generator)
    return _restore_refs(schema)


def json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec for the plugins of ``registry``."""
    registry = registry or current_registry()
    defs: dict[str, Any] = {}
    for kind in INTERFACES:
        entries = registry.entries(kind)
        defs[f"{kind}_ref"] = _ref_schema(entries, [_plugin_def(e, defs) for e in entries])
    layer_entries = registry.entries("layer") + registry.entries("activation")
    defs["layers_item"] = _ref_schema(
        layer_entries,
        [
            *(_plugin_def(e, defs, shorthand_activation=True) for e in registry.entries("layer")),
            *(_plugin_def(e, defs) for e in registry.entries("activation")),
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
    bare = [e.name for e in entries if not _model_schema(params_model(e.cls)).get("required")]
    return {"anyOf": [{"enum": bare}, *({"$ref": f"#/$defs/{k}"} for k in keys)]}
