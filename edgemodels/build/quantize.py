"""int4/int8 weights for a fp32 .tflite with ai-edge-quantizer, the embedding tables included.

Why a graph rewrite first: the TFLite converter lowers a Keras embedding (`tf.gather` on a [vocab, hidden]
variable) to GATHER, and ai-edge-quantizer 0.10 quantizes weights only for FULLY_CONNECTED, BATCH_MATMUL,
CONV_2D and EMBEDDING_LOOKUP (its GATHER support is for activations, and fails on a weight-only config:
"_materialize_standard_op_with_same_as_input_scale only supports UniformQuantParams"). So every GATHER whose
table is a constant fp32 [rows, cols] tensor of at least `MIN_TABLE_ELEMENTS` becomes
RESHAPE(ids -> [-1]) -> EMBEDDING_LOOKUP(ids, table) -> RESHAPE(-> ids shape + [cols]), the same function
(checked bit-exact on fp32 by tests/test_quantize.py), which the quantizer's recipes do cover. The library
then does all the quantizing; this module only rewrites the graph and picks the recipe.

Which recipe (measured on MiniLM-L6: docs/measurements.md#w4-recipe): int4 is the quantizer's *dynamic* recipe
(LiteRT's hybrid kernels read the int4 weights; its weight-only int4 re-expands the tables at every inference, 16x
slower), channelwise (one scale per output channel, per row of an embedding table): blockwise-32 costs 6.5 % more
bytes for 0.7 accuracy point, and bytes are what int4 is for. int8 is weight-only: expanded once at load, so fp32
speed, and it loads on tflite-runtime 2.14 (a Pi 3), which no int4 file does.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from edgemodels.errors import EdgeModelsError
from edgemodels.build.modes import QuantizerRecipe

MIN_TABLE_ELEMENTS = 1024
"""Smaller gathers (none in these models after constant folding) are left in fp32: nothing to gain."""


class QuantizeError(EdgeModelsError, RuntimeError):
    pass


class QuantizerMissing(EdgeModelsError):
    pass


def _schema():
    from tensorflow.lite.python import schema_py_generated as fb

    return fb


def _opcode_index(model, fb, builtin: int, version: int = 1) -> int:
    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == builtin:
            return i
    oc = fb.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _const_tensor(model, sg, fb, name: str, values: np.ndarray) -> int:
    buf = fb.BufferT()
    buf.data = np.frombuffer(values.astype("<i4").tobytes(), np.uint8)
    model.buffers.append(buf)
    t = fb.TensorT()
    t.shape, t.type, t.buffer, t.name = [len(values)], fb.TensorType.INT32, len(model.buffers) - 1, name.encode()
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _tensor(sg, fb, name: str, shape: list[int], signature: list[int], ttype: int, model) -> int:
    buf = fb.BufferT()
    model.buffers.append(buf)
    t = fb.TensorT()
    t.shape, t.shapeSignature, t.type, t.buffer, t.name = shape, signature, ttype, len(model.buffers) - 1, name.encode()
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def gathers_to_embedding_lookups(tflite: bytes, min_elements: int = MIN_TABLE_ELEMENTS) -> tuple[bytes, int]:
    """(the model with each constant-table GATHER as EMBEDDING_LOOKUP between reshapes, how many rewritten)."""
    import flatbuffers

    fb = _schema()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(tflite, 0))
    if any(getattr(b, "offset", 0) for b in model.buffers):
        raise QuantizeError("models over 2 GB (external buffers) are not rewritten")
    gather = fb.BuiltinOperator.GATHER
    rewritten = 0
    for sg in model.subgraphs:
        new_ops = []
        for op in sg.operators:
            oc = model.operatorCodes[op.opcodeIndex]
            if max(oc.builtinCode, oc.deprecatedBuiltinCode) != gather:
                new_ops.append(op)
                continue
            table_t, ids_t = sg.tensors[op.inputs[0]], sg.tensors[op.inputs[1]]
            data = model.buffers[table_t.buffer].data if table_t.buffer < len(model.buffers) else None
            opts = op.builtinOptions
            axis, batch_dims = (getattr(opts, "axis", 0), getattr(opts, "batchDims", 0)) if opts else (0, 0)
            ids_sig = list(ids_t.shapeSignature if ids_t.shapeSignature is not None and len(ids_t.shapeSignature)
                           else ids_t.shape)
            table_shape = list(table_t.shape)
            if (data is None or len(data) == 0 or table_t.type != fb.TensorType.FLOAT32 or len(table_shape) != 2
                    or int(np.prod(table_shape)) < min_elements or axis != 0 or batch_dims != 0
                    or ids_t.type != fb.TensorType.INT32 or sum(d < 0 for d in ids_sig) > 1):
                new_ops.append(op)
                continue
            cols = table_shape[1]
            base = table_t.name.decode() if isinstance(table_t.name, bytes) else str(table_t.name)
            flat_shape = _const_tensor(model, sg, fb, f"{base}/edgemodels_flat_shape", np.array([-1]))
            n_ids = int(np.prod(ids_t.shape))
            flat_ids = _tensor(sg, fb, f"{base}/edgemodels_flat_ids", [n_ids], [-1 if min(ids_sig) < 0 else n_ids],
                               fb.TensorType.INT32, model)
            rows = _tensor(sg, fb, f"{base}/edgemodels_rows", [n_ids, cols],
                           [-1 if min(ids_sig) < 0 else n_ids, cols], fb.TensorType.FLOAT32, model)
            out_shape = _const_tensor(model, sg, fb, f"{base}/edgemodels_out_shape", np.array(ids_sig + [cols]))

            r1 = fb.OperatorT()
            r1.opcodeIndex, r1.inputs, r1.outputs = _opcode_index(model, fb, fb.BuiltinOperator.RESHAPE), \
                [op.inputs[1], flat_shape], [flat_ids]
            lookup = fb.OperatorT()
            lookup.opcodeIndex = _opcode_index(model, fb, fb.BuiltinOperator.EMBEDDING_LOOKUP)
            lookup.inputs, lookup.outputs = [flat_ids, op.inputs[0]], [rows]
            r2 = fb.OperatorT()
            r2.opcodeIndex, r2.inputs, r2.outputs = _opcode_index(model, fb, fb.BuiltinOperator.RESHAPE), \
                [rows, out_shape], list(op.outputs)
            new_ops += [r1, lookup, r2]
            rewritten += 1
        sg.operators = new_ops
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), rewritten


def recipe(spec: QuantizerRecipe) -> list[dict]:
    """The ai-edge-quantizer recipe: every supported op's weights (EMBEDDING_LOOKUP tables included)."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.recipe_manager import RecipeManager

    rm = RecipeManager()
    add = rm.add_dynamic_config if spec.dynamic else rm.add_weight_only_config
    add(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=spec.bits,
        granularity=qtyping.QuantGranularity[spec.granularity])
    return rm.get_quantization_recipe()


def quantize_tflite(fp32_tflite: bytes, spec: QuantizerRecipe) -> bytes:
    """`fp32_tflite` with int weights everywhere ai-edge-quantizer puts them (embedding tables too if asked)."""
    try:
        from ai_edge_quantizer import quantizer
    except ImportError as exc:
        raise QuantizerMissing(f"mode needs ai-edge-quantizer ({exc}); install it: pip install -e '.[build]' "
                               "(or pip install ai-edge-quantizer==0.10.0)") from None

    model = gathers_to_embedding_lookups(fp32_tflite)[0] if spec.embeddings else fp32_tflite
    # The quantizer prints progress bars and a size summary on stdout; the pipeline reports sizes itself.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            result = quantizer.Quantizer(bytearray(model), recipe(spec)).quantize()
        except Exception as exc:  # the quantizer raises ValueError/RuntimeError/KeyError; say which recipe
            raise QuantizeError(f"ai-edge-quantizer failed on {spec.label}: {exc}") from exc
    return bytes(result.quantized_model)


def quantizer_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ai-edge-quantizer")
    except metadata.PackageNotFoundError:
        return "absent"
