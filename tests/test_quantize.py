"""edgemodels.build.quantize: weight-only int4/int8 with ai-edge-quantizer, the embedding table included (tiny-bert).

tiny-bert's weights are mostly its 30,522 x 32 word-embedding table, so a recipe that left the embeddings in fp32
(ai-edge-quantizer's defaults do) would barely shrink it: the size checks below fail in that case.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_SEQ
from edgemodels.build import convert, modes, quantize
from edgemodels.run import runtime

pytest.importorskip("ai_edge_quantizer")

W8_RTOL = 0.02  # int8 channelwise weights, fp32 compute (measured 6.6e-3 relative to the largest fp32 logit)
W4_RTOL = 0.2  # int4: 16 levels per channel, activations quantized per inference (measured 6.3e-2)


def _tensor_types(blob: bytes) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (TensorType name, shape) for every tensor with a constant buffer."""
    from tensorflow.lite.python import schema_py_generated as fb

    names = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    model = fb.Model.GetRootAsModel(blob, 0)
    sg = model.Subgraphs(0)
    out = {}
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        buf = model.Buffers(t.Buffer())
        if (buf.Size() if hasattr(buf, "Size") else 0) or buf.DataLength():
            out[t.Name().decode()] = (names[t.Type()], tuple(int(x) for x in t.ShapeAsNumpy()))
    return out


def _embedding(types, vocab: int = 30522) -> str:
    [(kind, _)] = [v for v in types.values() if len(v[1]) == 2 and v[1][0] == vocab]
    return kind


def _logits(path, ids_list, seq):
    m = runtime.load(path)
    return np.concatenate([m.run(convert.to_feeds(ids, seq, 0)) for ids in ids_list])


IDS = [[101, 2023, 2003, 102], [101] + list(range(3000, 3012)) + [102], list(range(5000, 5016))]


def test_gather_rewrite_is_the_same_function_bit_exact(tiny, tmp_path):
    fp32 = tiny.artifact("fp32")
    blob, n = quantize.gathers_to_embedding_lookups(fp32.tflite.read_bytes())
    assert n == 1  # the word embeddings; position/type embeddings are folded constants at a fixed length
    ops = dict(convert.inspect(blob).ops)
    assert "EMBEDDING_LOOKUP" in ops
    (tmp_path / "rw.tflite").write_bytes(blob)
    np.testing.assert_array_equal(_logits(tmp_path / "rw.tflite", IDS, TINY_SEQ), _logits(fp32.tflite, IDS, TINY_SEQ))


def test_dynamic_length_gather_rewrite_keeps_the_length_free(tiny, tmp_path):
    fp32 = tiny.artifact("fp32", None)
    blob, n = quantize.gathers_to_embedding_lookups(fp32.tflite.read_bytes())
    assert n >= 1
    (tmp_path / "rw.tflite").write_bytes(blob)
    m, ref = runtime.load(tmp_path / "rw.tflite"), runtime.load(fp32.tflite)
    for ids in ([101, 102], list(range(2000, 2040))):
        feeds = convert.to_feeds(ids, None, 0)
        np.testing.assert_array_equal(m.run(feeds), ref.run(feeds))


@pytest.mark.parametrize("mode,kind,rtol,min_ratio", [("w8", "INT8", W8_RTOL, 2.5), ("w4", "INT4", W4_RTOL, 4.0)])
def test_weight_only_quantizes_the_embeddings_and_stays_close(tiny, mode, kind, rtol, min_ratio):
    fp32, art = tiny.artifact("fp32"), tiny.artifact(mode)
    assert art.manifest["recipe"] == modes.get(mode).recipe.label and art.manifest["quantizer"] != "absent"
    assert art.manifest["key"]["parts"]["source"] == fp32.manifest["key"]["digest"]  # keyed on the fp32 file
    types = _tensor_types(art.tflite.read_bytes())
    assert _embedding(types) == kind  # the 30,522-row table itself, not only the dense layers
    dense = [v[0] for k, v in types.items() if "MatMul" in k and len(v[1]) == 2]
    assert dense and set(dense) == {kind}
    assert _embedding(_tensor_types(fp32.tflite.read_bytes())) == "FLOAT32"
    assert fp32.size_bytes / art.size_bytes >= min_ratio, (fp32.size_bytes, art.size_bytes)
    out, ref = _logits(art.tflite, IDS, TINY_SEQ), _logits(fp32.tflite, IDS, TINY_SEQ)
    assert np.abs(out - ref).max() / np.abs(ref).max() <= rtol


def test_without_the_rewrite_the_embeddings_stay_fp32(tiny):
    """Why the rewrite exists: ai-edge-quantizer 0.10 leaves a GATHER's table alone."""
    blob = quantize.quantize_tflite(tiny.artifact("fp32").tflite.read_bytes(), modes.QuantizerRecipe(4, embeddings=False))
    assert _embedding(_tensor_types(blob)) == "FLOAT32"


def test_converter_mode_cache_keys_are_what_they_were(tiny):
    """fp32/drq/drq-compat/fp16 keys predate the registry (int8 adds its calibration set): baselines key on them."""
    assert set(tiny.artifact("fp32").manifest["key"]["parts"]) == {"trained", "quant", "seq", "max_length", "libs"}
