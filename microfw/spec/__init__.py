"""The JSON spec: pydantic models of the document, ``resolve()`` and the JSON Schema."""
