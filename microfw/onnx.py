"""Export a model to ONNX: ``export(model, "model.onnx")`` or ``microfw export MODEL OUT.onnx``.

The graph computes exactly :meth:`~microfw.Sequential.predict`: input ``"X"``
``(batch, input_dim)``, output ``"Y"`` ``(batch, output_dim)``, both in the model's dtype
(float64 models export a double graph), the batch dimension dynamic (named ``"batch"``).
The loss is not part of it: a classifier's output is its probabilities (or logits, for
``bce`` with ``from_logits``), as from ``predict``. The model's ``metadata_props`` carry
``microfw_version``, ``spec`` (the JSON spec) and ``plugins`` (JSON: every plugin the model
uses with its kind, package and version).

**Plugins map themselves.** A layer or activation class provides an optional method::

    def to_onnx(self, ctx: microfw.onnx.OnnxContext, x: str) -> str:
        '''Add the nodes computing this plugin's forward on tensor ``x``; return the output.'''

For instance ``y = x / (1 + |x|)``::

    def to_onnx(self, ctx, x):
        return ctx.node("Div", [x, ctx.node("Add", [ctx.node("Abs", [x]), ctx.constant(1.0)])])

``ctx.node`` adds an operator, ``ctx.constant`` an initializer in the model's dtype, and
``ctx.weights(self)`` returns a layer's trained arrays (as in ``model.get_weights()``). An
activation's ``to_onnx`` is called through the layer that wraps it. A model using a plugin
without ``to_onnx`` is refused (:class:`OnnxExportError` naming the plugin and its package)
and no file is written. Needs the ``onnx`` extra (onnx; onnxruntime to run the result).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

import microfw as mf
from microfw._extras import require
from microfw._files import atomic_write
from microfw.errors import OnnxExportError
from microfw.spec.models import plugins_of

if TYPE_CHECKING:
    import onnx

OPSET = 17
"""The ONNX operator set the graph uses (supported by onnxruntime 1.12 and later)."""
IR_VERSION = 8
"""The ONNX IR version of the file (the one that came with opset 17)."""
INPUT, OUTPUT, BATCH = "X", "Y", "batch"


class OnnxContext:
    """What a plugin's ``to_onnx(ctx, x)`` receives: it adds nodes and constants to the graph.

    Attributes: ``dtype`` (the model's NumPy dtype), ``opset`` (:data:`OPSET`).
    """

    def __init__(self, model: mf.Sequential) -> None:
        self.model = model
        self.dtype: np.dtype[Any] = np.dtype(model.dtype)
        self.opset = OPSET
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = {INPUT, OUTPUT}
        self._weights = _weights_by_layer(model)

    def fresh(self, hint: str) -> str:
        """A tensor name not used yet, starting with ``hint``."""
        name, i = hint, 0
        while name in self._used:
            i += 1
            name = f"{hint}_{i}"
        self._used.add(name)
        return name

    def constant(self, value: Any, hint: str = "const", dtype: Any = None) -> str:
        """Add ``value`` (a number or array) as an initializer; its name. In the model's dtype
        unless ``dtype`` says otherwise (e.g. ``np.int64`` for a shape)."""
        from onnx import numpy_helper

        name = self.fresh(hint)
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op_type: str, inputs: Sequence[str], hint: str = "", **attributes: Any) -> str:
        """Add one operator of the default domain with ``inputs``; the name of its output."""
        from onnx import helper

        output = self.fresh(hint or op_type.lower())
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [output], name=output, **attributes)
        )
        return output

    def weights(self, layer: mf.Layer) -> list[np.ndarray[Any, Any]]:
        """The trained arrays of ``layer`` (one of the model's), as ``model.get_weights()``."""
        for candidate, arrays in self._weights:
            if candidate is layer:
                return arrays
        raise OnnxExportError(f"{layer!r} is not one of the exported model's layers")

    def call(self, plugin: Any, x: str) -> str:
        """``plugin.to_onnx(self, x)``, or :class:`OnnxExportError` naming the plugin."""
        to_onnx = getattr(plugin, "to_onnx", None)
        origin = self.model.registry.origin(plugin)
        if to_onnx is None:
            raise OnnxExportError(
                f"cannot export to ONNX: {plugin.kind} {plugin.name!r} from {origin} has no "
                "ONNX mapping (a to_onnx(ctx, x) method, see microfw.onnx); nothing was written"
            )
        out = to_onnx(self, x)
        if not isinstance(out, str):
            raise OnnxExportError(
                f"{plugin.kind} {plugin.name!r} from {origin}: to_onnx returned {out!r}, "
                "expected the name of its output tensor"
            )
        return out


def to_model_proto(model: mf.Sequential) -> onnx.ModelProto:
    """The ONNX model computing ``model.predict``, checked by ``onnx.checker`` (full check)."""
    helper, checker, tensor_type = _onnx()
    ctx = OnnxContext(model)
    x = INPUT
    for layer in model.layers:
        x = ctx.call(layer, x)
    ctx.nodes.append(helper.make_node("Identity", [x], [OUTPUT], name=OUTPUT))
    elem = tensor_type(ctx.dtype)
    graph = helper.make_graph(
        ctx.nodes,
        "microfw",
        [helper.make_tensor_value_info(INPUT, elem, [BATCH, model.input_dim])],
        [helper.make_tensor_value_info(OUTPUT, elem, [BATCH, model.output_dim])],
        initializer=ctx.initializers,
    )
    proto: onnx.ModelProto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="microfw",
        producer_version=mf.__version__,
        doc_string="microfw Sequential model: Y = predict(X)",
    )
    proto.ir_version = IR_VERSION
    helper.set_model_props(proto, metadata(model))
    checker.check_model(proto, full_check=True)
    return proto


def export(model: mf.Sequential, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as an ONNX file at ``path``, atomically (see the module docstring).

    Raises :class:`OnnxExportError` (nothing written) if a plugin has no ONNX mapping.
    """
    data = to_model_proto(model).SerializeToString()
    atomic_write(path, data)


def metadata(model: mf.Sequential) -> dict[str, str]:
    """The ``metadata_props`` of the export: microfw version, spec and plugin versions."""
    plugins = []
    for kind, name, cls in plugins_of([*model.layers, model.loss, model.optimizer]):
        entry = model.registry.entry_of(kind, name, cls)
        plugins.append(
            {
                "kind": kind,
                "name": name,
                "package": entry.provenance.package if entry else cls.__module__,
                "version": entry.provenance.version if entry else None,
            }
        )
    unique = list({json.dumps(p, sort_keys=True): p for p in plugins}.values())
    return {
        "microfw_version": mf.__version__,
        "spec": model.to_spec().to_json(indent=None),
        "plugins": json.dumps(unique),
    }


def _weights_by_layer(model: mf.Sequential) -> list[tuple[mf.Layer, list[np.ndarray[Any, Any]]]]:
    """Each layer with its arrays of ``model.get_weights()`` (named ``layers.<i>.<j>``)."""
    per_layer: list[list[np.ndarray[Any, Any]]] = [[] for _ in model.layers]
    for name, array in zip(model.weight_names(), model.get_weights(), strict=True):
        per_layer[int(name.split(".")[1])].append(array)
    return list(zip(model.layers, per_layer, strict=True))


def _onnx() -> tuple[Any, Any, Any]:
    """onnx's ``helper`` and ``checker``, and a NumPy dtype -> ONNX element type function."""
    onnx = require("onnx", "onnx", "ONNX export")
    helper, checker = onnx.helper, onnx.checker
    return helper, checker, helper.np_dtype_to_tensor_dtype
