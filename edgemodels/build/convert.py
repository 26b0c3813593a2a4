"""TFLite FlatBuffers from a fine-tuned Keras classifier, in the compression modes the suite compares.

The SavedModel path is used: faster and lighter on memory than converting from concrete functions
(docs/measurements.md#savedmodel-export). Signatures take `input_ids` and `attention_mask` only ([1, seq] int32,
or [1, None] for a dynamic-length model); token types are zeros inside the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from edgemodels.build import modes
from edgemodels.errors import EdgeModelsError

MODES: Mapping[str, str] = MappingProxyType({name: m.description for name, m in modes.MODES.items()})
"""Mode name -> one-line description (a view of edgemodels.build.modes.MODES, the registry)."""


class ConversionError(EdgeModelsError, RuntimeError):
    pass


def check_mode(mode: str) -> str:
    return modes.get(mode).name


def export_saved_model(model, out_dir: Path, seq: int | None) -> Path:
    """A SavedModel whose serving signature fixes batch 1 and `seq` tokens (None = dynamic)."""
    import tensorflow as tf

    takes_token_types = "token_type_ids" in getattr(model, "input_signature", {})

    @tf.function(input_signature=[
        tf.TensorSpec([1, seq], tf.int32, name="input_ids"),
        tf.TensorSpec([1, seq], tf.int32, name="attention_mask"),
    ])
    def serve(input_ids, attention_mask):
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, training=False)
        if takes_token_types:
            kwargs["token_type_ids"] = tf.zeros_like(input_ids)
        return {"logits": model(**kwargs).logits}

    # Only the variables and the serving signature are saved, not the Keras model: saving the model traces every
    # layer's call function, and the converter then works through that whole function library: several times the
    # CPU for a byte-identical .tflite (tests/test_convert.py checks the identity on tiny-bert;
    # docs/measurements.md#savedmodel-export).
    holder = tf.Module()
    holder.weights = list(model.variables)
    tf.saved_model.save(holder, str(out_dir), signatures={"serving_default": serve})
    return out_dir


Feeds = Mapping[str, np.ndarray]


def convert(saved_model_dir: Path, mode: str,
            representative: Callable[[], Iterator[Feeds]] | None = None) -> bytes:
    import tensorflow as tf

    opts = modes.get(mode).converter
    if opts is None:
        raise ConversionError(f"{mode} is made by ai-edge-quantizer from the {modes.get(mode).source} .tflite "
                              "(edgemodels.build.quantize), not by the TFLite converter")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if opts.optimize:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if opts.per_tensor_dense:
        # Private switch, present since TF 2.9: per-tensor dense weights -> FULLY_CONNECTED v9.
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    if opts.float16:
        conv.target_spec.supported_types = [tf.float16]
    if opts.int8_activations:
        if representative is None:
            raise ConversionError(f"{mode} needs a representative data set (training examples)")
        conv.representative_dataset = lambda: ({k: np.asarray(v, np.int32) for k, v in f.items()}
                                               for f in representative())
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return conv.convert()
    except Exception as exc:  # the converter raises a zoo of types; say which model and mode
        raise ConversionError(f"{saved_model_dir}: conversion to {mode} failed: {exc}") from exc


def representative_feeds(ids: Iterable[list[int]], seq: int | None, pad: int) -> Callable[[], Iterator[Feeds]]:
    """Feeds shaped like the model's signature: padded to `seq`, or at their own length when dynamic."""
    ids = [list(x) for x in ids]

    def gen() -> Iterator[Feeds]:
        for x in ids:
            yield to_feeds(x, seq, pad)

    return gen


def to_feeds(ids: list[int], seq: int | None, pad: int) -> dict[str, np.ndarray]:
    n = len(ids) if seq is None else min(len(ids), seq)
    length = n if seq is None else seq
    input_ids = np.full((1, length), pad, np.int32)
    input_ids[0, :n] = ids[:n]
    mask = np.zeros((1, length), np.int32)
    mask[0, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@dataclass(frozen=True)
class FlatbufferInfo:
    ops: tuple[tuple[str, int], ...]  # (builtin op name, version), sorted
    weight_bytes: int  # bytes of constant buffers (the weights), excluding the graph itself


def inspect(tflite: bytes) -> FlatbufferInfo:
    """Builtin op codes/versions (what decides whether an older runtime loads it) and weight bytes."""
    from tensorflow.lite.python import schema_py_generated as fb

    model = fb.Model.GetRootAsModel(tflite, 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    ops = set()
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        ops.add((names.get(code, str(code)), int(oc.Version())))
    weight_bytes = 0
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        size = buf.Size() if hasattr(buf, "Size") else 0  # >2 GB models keep data outside the buffer
        weight_bytes += size or buf.DataLength()
    return FlatbufferInfo(tuple(sorted(ops)), int(weight_bytes))
