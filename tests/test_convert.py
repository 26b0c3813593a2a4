"""edgemodels.build.convert: every compression mode gives a loadable FlatBuffer that agrees with the TF model.

The reference is the Keras model the artifacts were converted from. Tolerances are relative to the
largest reference logit: random-init tiny-bert emits logits of about 0.02, so absolute tolerances such
as 1e-2 would accept almost anything. Measured values (TF 2.21, ai-edge-litert 2.3) are in comments.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_SEQ
from edgemodels.build import convert, models
from edgemodels.run import runtime

FP32_RTOL = 1e-4  # same float graph, only kernel/order differences (measured ~5e-7)
FP16_RTOL = 1e-2  # fp16 weights: 11-bit mantissa, ~5e-4 relative per weight (measured ~4e-4)
DRQ_RTOL = 0.1  # int8 weights + activations quantized on the fly per batch (measured ~1.5e-2)
INT8_RTOL = 0.25  # int8 activations too, calibrated on 54 texts (measured ~3.5e-2)
TOLERANCES = {"fp32": FP32_RTOL, "fp16": FP16_RTOL, "drq": DRQ_RTOL, "drq-compat": DRQ_RTOL, "int8": INT8_RTOL}


def _rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def _texts_ids(tiny, art, max_length: int) -> list[list[int]]:
    """Token ids of 12 data-set texts plus a 2-token and an over-long input."""
    tok = models.load_tokenizer(art.tokenizer_dir)
    texts = [line.split(",")[0] for line in tiny.csv.read_text().splitlines()[1:13]]
    texts += ["", " ".join(["growth"] * 60)]
    return models.encode(tok, texts, max_length)


def _tf_logits(tf_model, feeds) -> np.ndarray:
    ids = feeds["input_ids"]
    return tf_model(input_ids=ids, attention_mask=feeds["attention_mask"], token_type_ids=np.zeros_like(ids),
                    training=False).logits.numpy()


# ---------------------------------------------------------------- pure helpers


def test_modes_and_check_mode():
    assert {"fp32", "drq", "drq-compat", "fp16", "int8", "w8", "w4", "pruned-w4"} <= set(convert.MODES)
    assert convert.check_mode("drq") == "drq"
    with pytest.raises(ValueError, match="valid: fp32, drq, drq-compat, fp16, int8, w8, w4"):
        convert.check_mode("int4")


def test_to_feeds_pads_truncates_and_masks():
    f = convert.to_feeds([5, 6, 7], 5, pad=0)
    np.testing.assert_array_equal(f["input_ids"], [[5, 6, 7, 0, 0]])
    np.testing.assert_array_equal(f["attention_mask"], [[1, 1, 1, 0, 0]])
    assert f["input_ids"].dtype == np.int32 and f["attention_mask"].dtype == np.int32
    f = convert.to_feeds([1, 2, 3, 4, 5, 6], 4, pad=9)
    np.testing.assert_array_equal(f["input_ids"], [[1, 2, 3, 4]])
    np.testing.assert_array_equal(f["attention_mask"], [[1, 1, 1, 1]])
    f = convert.to_feeds([3, 4], None, pad=9)  # dynamic: the input's own length, no padding
    np.testing.assert_array_equal(f["input_ids"], [[3, 4]])
    np.testing.assert_array_equal(f["attention_mask"], [[1, 1]])


def test_representative_feeds_can_be_iterated_again():
    gen = convert.representative_feeds([[1, 2], [3, 4, 5]], 4, pad=0)
    first, second = list(gen()), list(gen())  # the converter may call it more than once
    assert len(first) == len(second) == 2
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert first[1]["input_ids"].shape == (1, 4)
    dyn = list(convert.representative_feeds([[1, 2], [3, 4, 5]], None, pad=0)())
    assert [f["input_ids"].shape for f in dyn] == [(1, 2), (1, 3)]


# ---------------------------------------------------------------- export / convert errors


def test_export_signature_and_int8_needs_representative_set(tiny_tf_model, tmp_path):
    import tensorflow as tf

    sm = convert.export_saved_model(tiny_tf_model, tmp_path / "sm", 8)
    sig = tf.saved_model.load(str(sm)).signatures["serving_default"]
    specs = sig.structured_input_signature[1]
    assert set(specs) == {"input_ids", "attention_mask"}  # no token_type_ids: zeros inside the graph
    assert all(s.shape.as_list() == [1, 8] and s.dtype == tf.int32 for s in specs.values())
    assert list(sig.structured_outputs) == ["logits"]
    with pytest.raises(convert.ConversionError, match="representative"):
        convert.convert(sm, "int8", None)
    with pytest.raises(ValueError, match="unknown quantization mode"):
        convert.convert(sm, "int4")
    with pytest.raises(convert.ConversionError, match="made by ai-edge-quantizer"):
        convert.convert(sm, "w4")  # a recipe mode: edgemodels.build.quantize, from the fp32 .tflite
    with pytest.raises(OSError, match=str(tmp_path / "absent")):
        convert.convert(tmp_path / "absent", "fp32")


@pytest.mark.parametrize("mode,seq", [("fp32", 8), ("drq", 8), ("drq", None)])
def test_saving_only_the_signature_converts_to_the_same_bytes(tiny_tf_model, tmp_path, mode, seq):
    """export_saved_model saves the variables and the serving signature, not the Keras model (several times
    faster to save and to convert): the .tflite must be byte-identical to converting the whole model's SavedModel."""
    import tensorflow as tf

    ours = convert.export_saved_model(tiny_tf_model, tmp_path / "ours", seq)

    @tf.function(input_signature=[tf.TensorSpec([1, seq], tf.int32, name="input_ids"),
                                  tf.TensorSpec([1, seq], tf.int32, name="attention_mask")])
    def serve(input_ids, attention_mask):  # the earlier export: the same function, the whole model saved
        return {"logits": tiny_tf_model(input_ids=input_ids, attention_mask=attention_mask,
                                        token_type_ids=tf.zeros_like(input_ids), training=False).logits}

    whole = tmp_path / "whole"
    tf.saved_model.save(tiny_tf_model, str(whole), signatures={"serving_default": serve})
    assert convert.convert(ours, mode) == convert.convert(whole, mode)


# ---------------------------------------------------------------- artifacts vs TF


@pytest.mark.parametrize("mode,seq", [(m, TINY_SEQ) for m in TOLERANCES] + [("fp32", None), ("drq", None)])
def test_tflite_matches_tf_within_tolerance(tiny, tiny_tf_model, mode, seq):
    art = tiny.artifact(mode, seq)
    m = runtime.load(art.tflite)
    assert m.fixed_length == seq
    pad = art.manifest["pad_id"]
    errs = []
    for ids in _texts_ids(tiny, art, seq or 40):
        feeds = convert.to_feeds(ids, seq, pad)
        out, ref = m.run(feeds), _tf_logits(tiny_tf_model, feeds)
        assert out.shape == ref.shape == (1, 3)
        errs.append(_rel_err(out, ref))
    assert max(errs) <= TOLERANCES[mode], f"{mode}/{seq}: relative errors {np.round(errs, 6)}"


@pytest.mark.parametrize("mode", ["fp32", "drq"])
def test_dynamic_length_model_accepts_different_lengths(tiny, tiny_tf_model, mode):
    art = tiny.artifact(mode, None)
    assert art.manifest["seq"] == "dynamic"
    m = runtime.load(art.tflite)
    assert m.fixed_length is None
    outs = {}
    for n in (3, TINY_SEQ, 40, 7):  # 40 > the fixed models' 16: a dynamic model is not capped
        feeds = convert.to_feeds([101] + list(range(2000, 2000 + n - 2)) + [102], None, 0)
        assert feeds["input_ids"].shape == (1, n)
        outs[n] = m.run(feeds)
        assert _rel_err(outs[n], _tf_logits(tiny_tf_model, feeds)) <= TOLERANCES[mode]
    assert not np.array_equal(outs[3], outs[40])  # the length really changed the computation


def test_every_mode_loads_in_tensorflow_runtime_too(tiny):
    pytest.importorskip("tensorflow")
    for mode in TOLERANCES:
        art = tiny.artifact(mode)
        feeds = runtime.load(art.tflite).dummy_feeds()
        a = runtime.load(art.tflite).run(feeds)
        b = runtime.load(art.tflite, runtime="tensorflow").run(feeds)
        # int8 kernels differ between runtimes (XNNPACK vs TF's builtin): measured 2e-2 apart
        assert _rel_err(b, a) <= TOLERANCES[mode], mode


# ---------------------------------------------------------------- op versions and sizes


def _ops(art) -> dict[str, set[int]]:
    info = convert.inspect(art.tflite.read_bytes())
    assert [f"{n}:v{v}" for n, v in info.ops] == art.manifest["ops"]
    out: dict[str, set[int]] = {}
    for name, v in info.ops:
        out.setdefault(name, set()).add(v)
    return out


def test_drq_writes_fully_connected_v12_and_drq_compat_v9(tiny):
    for seq in (TINY_SEQ, None):
        drq, compat = _ops(tiny.artifact("drq", seq)), _ops(tiny.artifact("drq-compat", seq))
        assert 12 in drq["FULLY_CONNECTED"]  # per-channel dense weights: tflite-runtime 2.14 cannot load
        assert compat["FULLY_CONNECTED"] == {9}  # per-tensor: what a 32-bit Pi 3 runtime loads
        assert "DEQUANTIZE" in drq and "DEQUANTIZE" in compat


def test_fp32_has_no_quantization_ops_and_int8_has(tiny):
    fp32, int8 = _ops(tiny.artifact("fp32")), _ops(tiny.artifact("int8"))
    assert not {"DEQUANTIZE", "QUANTIZE"} & set(fp32)
    assert "QUANTIZE" in int8


def test_compressed_sizes_relative_to_fp32(tiny):
    size = {m: tiny.artifact(m).size_bytes for m in TOLERANCES}
    for m in TOLERANCES:
        art = tiny.artifact(m)
        assert art.size_bytes == art.tflite.stat().st_size
        wb = convert.inspect(art.tflite.read_bytes()).weight_bytes
        assert 0.8 * art.size_bytes < wb <= art.size_bytes, m  # the weights dominate the file
    ratio = {m: size[m] / size["fp32"] for m in size}
    assert 0.45 < ratio["fp16"] < 0.55, ratio
    for m in ("drq", "drq-compat", "int8"):
        assert 0.2 < ratio[m] < 0.3, ratio  # int8 weights: about a quarter of fp32
