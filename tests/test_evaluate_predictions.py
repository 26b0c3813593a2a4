"""evaluate() against predictions computed without it: a .tflite whose class is a known function of the tokens.

Why: evaluate() was tested for internal consistency and against the same interpreter's argmax, on tiny-bert
random inits that predict one class for every tweet; throwing the predictions away (always "negative")
survived. Here the expected class of each tweet is computed from its token ids in numpy, and covers all three.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_SEQ, write_tiny_csv
from edgemodels.build import convert, data, models
from edgemodels.run import evaluate


def _token_class_tflite(path) -> None:
    """logits = 5 x one_hot((first word's id + second word's id) % 3): no weights, exact in fp32."""
    tf = pytest.importorskip("tensorflow")

    class TokenClass(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, TINY_SEQ], tf.int32, name="input_ids"),
                                      tf.TensorSpec([1, TINY_SEQ], tf.int32, name="attention_mask")])
        def serve(self, input_ids, attention_mask):
            cls = tf.math.floormod(input_ids[:, 1] + input_ids[:, 2], 3)
            return {"logits": 5.0 * tf.one_hot(cls, 3) + 0.0 * tf.cast(attention_mask[:, :3], tf.float32)}

    m = TokenClass()
    tf.saved_model.save(m, str(path / "sm"), signatures={"serving_default": m.serve})
    (path / "model.tflite").write_bytes(convert.convert(path / "sm", "fp32", None))


def test_evaluate_matches_predictions_computed_from_the_tokens(tmp_path):
    split = data.load(f"csv:{write_tiny_csv(tmp_path / 'ev.csv', n=90, seed=5)}", "all")
    tok_dir = models.resolve("tiny-bert", cache_root=tmp_path).tokenizer_path
    _token_class_tflite(tmp_path)
    ids = models.encode(models.load_tokenizer(tok_dir), split.texts(), TINY_SEQ)
    expected = np.array([(x[1] + x[2]) % 3 for x in ids], dtype=np.int64)
    assert set(expected.tolist()) == {0, 1, 2}  # not vacuous: "always negative" would be visibly wrong
    y = split.label_ids()
    acc = evaluate.evaluate(tmp_path / "model.tflite", split, tokenizer_dir=tok_dir, max_length=TINY_SEQ,
                            pad=models.pad_id(models.load_tokenizer(tok_dir)), runtime_name="ai-edge-litert")
    cm = np.zeros((3, 3), np.int64)
    np.add.at(cm, (y, expected), 1)
    assert acc.confusion == tuple(tuple(int(v) for v in r) for r in cm)
    assert acc.accuracy == pytest.approx(float(np.mean(expected == y))) and acc.n == len(y)
