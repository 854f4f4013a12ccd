"""The JSON spec: pydantic models of the document, ``resolve()`` and the JSON Schema.

The limits a spec is held to are named here, as error messages and the README name them.
"""

from microfw.spec.models import (
    MAX_BLAS_THREADS,
    MAX_LAYERS,
    MAX_PARAMETERS,
    MAX_SPEC_BYTES,
    MAX_WIDTH,
)

__all__ = ["MAX_BLAS_THREADS", "MAX_LAYERS", "MAX_PARAMETERS", "MAX_SPEC_BYTES", "MAX_WIDTH"]
