"""edgemodels.run.runtime: loading, runtime fallback, file checks, name-bound inputs.

Uses arithmetic toy models (0.2 s to convert) whose outputs are exact functions of the inputs, so a
wrong binding of input_ids/attention_mask shows up as a wrong number, not a tolerance question.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from edgemodels.run import runtime
from edgemodels.run.runtime import ModelLoadError, RuntimeUnavailable


def _expected(ids, mask) -> np.ndarray:
    ids, mask = np.asarray(ids, np.float32), np.asarray(mask, np.float32)
    return np.array([[(ids * mask).sum(), ids.sum(), 2 * mask.sum()]], np.float32)


@pytest.fixture(scope="module")
def toys(tmp_path_factory) -> dict[str, Path]:
    """logits = [sum(ids*mask), sum(ids), 2*sum(mask)]: 'dynamic' [1,None], 'fixed' [1,4], and both
    again with the signature table stripped ('nosig-*'), to exercise the tensor-name fallback."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow.lite.tools import flatbuffer_utils

    out = tmp_path_factory.mktemp("toys")
    paths = {}
    for kind, length in (("dynamic", None), ("fixed", 4)):

        class Toy(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([1, length], tf.int32, name="input_ids"),
                                          tf.TensorSpec([1, length], tf.int32, name="attention_mask")])
            def serve(self, input_ids, attention_mask):
                ids, m = tf.cast(input_ids, tf.float32), tf.cast(attention_mask, tf.float32)
                return {"logits": tf.stack([tf.reduce_sum(ids * m, 1), tf.reduce_sum(ids, 1),
                                            2 * tf.reduce_sum(m, 1)], axis=1)}

        toy = Toy()
        blob = tf.lite.TFLiteConverter.from_concrete_functions([toy.serve.get_concrete_function()], toy).convert()
        paths[kind] = out / f"{kind}.tflite"
        paths[kind].write_bytes(blob)
        fb = flatbuffer_utils.read_model_from_bytearray(bytearray(blob))
        fb.signatureDefs = []
        paths[f"nosig-{kind}"] = out / f"nosig-{kind}.tflite"
        paths[f"nosig-{kind}"].write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(fb)))
    return paths


def _hide(monkeypatch, *modules: str) -> None:
    """Make modules unimportable, as if not installed (find_spec -> None, import -> ImportError)."""
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


# ---------------------------------------------------------------- binding and shapes


@pytest.mark.parametrize("rt", ["ai-edge-litert", "tensorflow"])
def test_inputs_are_bound_by_name_not_position(toys, rt):
    m = runtime.load(toys["dynamic"], runtime=rt)
    assert m.input_names == ("attention_mask", "input_ids") and m.runtime_name == rt
    ids, mask = [[5, 7, 11, 13]], [[1, 1, 0, 1]]
    a = m.run({"input_ids": ids, "attention_mask": mask})
    b = m.run({"attention_mask": mask, "input_ids": ids})  # other dict order
    np.testing.assert_array_equal(a, _expected(ids, mask))
    np.testing.assert_array_equal(b, a)
    swapped = m.run({"input_ids": mask, "attention_mask": ids})
    np.testing.assert_array_equal(swapped, _expected(mask, ids))  # and the values really do differ
    assert not np.array_equal(swapped, a)


def test_dynamic_model_accepts_different_lengths_and_casts_dtypes(toys):
    m = runtime.load(toys["dynamic"])
    assert m.fixed_length is None and m.input_shape("input_ids") == (1, -1)
    for n in (1, 3, 17, 5):
        ids = np.arange(1, n + 1, dtype=np.int64)[None]  # int64 in, cast to the model's int32
        mask = (np.arange(n) % 2 == 0).astype(np.int64)[None]
        np.testing.assert_array_equal(m.run({"input_ids": ids, "attention_mask": mask}), _expected(ids, mask))
    assert m.dummy_feeds(7)["input_ids"].shape == (1, 7)
    assert m.dummy_feeds()["attention_mask"].shape == (1, 128)
    assert m.dummy_feeds()["input_ids"].dtype == np.int32


def test_fixed_model_reports_its_length(toys):
    m = runtime.load(toys["fixed"], num_threads=1)
    assert m.fixed_length == 4 and m.num_threads == 1
    assert m.dummy_feeds(99)["input_ids"].shape == (1, 4)  # the model's length wins
    feeds = m.dummy_feeds()
    np.testing.assert_array_equal(m.run(feeds), _expected(feeds["input_ids"], feeds["attention_mask"]))
    assert m.info == runtime.RuntimeInfo(m.runtime_name, m.runtime_version)


def test_wrong_length_on_fixed_model_is_a_clear_error(toys):
    m = runtime.load(toys["fixed"])
    with pytest.raises(ValueError, match=rf"{toys['fixed']}.*4"):
        m.run({"input_ids": np.ones((1, 6)), "attention_mask": np.ones((1, 6))})


def test_missing_input_is_keyerror_naming_inputs_and_file(toys):
    m = runtime.load(toys["dynamic"])
    with pytest.raises(KeyError) as err:
        m.run({"input_ids": np.ones((1, 3))})
    msg = str(err.value)
    assert "attention_mask" in msg and "input_ids" in msg and str(toys["dynamic"]) in msg


def test_model_without_signatures_binds_tensor_names(toys):
    m = runtime.load(toys["nosig-fixed"])
    assert m.input_names == ("serving_default_attention_mask:0", "serving_default_input_ids:0")
    ids, mask = [[1, 2, 3, 4]], [[1, 0, 1, 0]]
    out = m.run({"serving_default_input_ids:0": ids, "serving_default_attention_mask:0": mask})
    np.testing.assert_array_equal(out, _expected(ids, mask))


def test_model_without_signatures_accepts_a_new_length(toys):
    m = runtime.load(toys["nosig-dynamic"])
    a, i = m.input_names
    for ids, mask in (([1, 2, 3], [1, 1, 0]), ([1, 2, 3, 4, 5], [1, 1, 0, 1, 1])):
        np.testing.assert_array_equal(m.run({i: [ids], a: [mask]}), _expected(ids, mask))


# ---------------------------------------------------------------- bad files


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.tflite")):
        runtime.load(tmp_path / "nope.tflite")


@pytest.mark.parametrize("content", [b"", b"TFL3", b"hello world, not a model", b"PK\x03\x04" + b"\0" * 64])
def test_non_tflite_file_is_modelloaderror_naming_it(tmp_path, content):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content)
    with pytest.raises(ModelLoadError, match=rf"{bad}: not a TFLite FlatBuffer"):
        runtime.load(bad)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_file_is_modelloaderror_naming_it(toys, tmp_path, keep):
    blob = toys["dynamic"].read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(ModelLoadError, match=str(cut)):
        runtime.load(cut, runtime="ai-edge-litert")


_LOAD_TRUNCATED = r"""
import json, sys
from edgemodels.run import runtime
out = {}
for path in sys.argv[1:]:
    try:
        runtime.load(path, runtime="tensorflow")
        out[path] = "loaded"
    except runtime.ModelLoadError as exc:
        out[path] = "ModelLoadError" if path in str(exc) else "unnamed"
print(json.dumps(out))
"""


def test_truncated_file_with_tensorflow_runtime_is_modelloaderror(toys, tmp_path):
    pytest.importorskip("tensorflow")
    blob = toys["dynamic"].read_bytes()
    paths = []
    for cut in (1, 8, len(blob) // 2):
        p = tmp_path / f"cut{cut}.tflite"
        p.write_bytes(blob[:-cut])
        paths.append(str(p))
    # in a subprocess: some truncations crash the TF interpreter outright
    proc = subprocess.run([sys.executable, "-c", _LOAD_TRUNCATED, *paths], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {p: "ModelLoadError" for p in paths}


# ---------------------------------------------------------------- runtime selection


def test_available_lists_installed_runtimes_in_preference_order_without_importing_tf():
    code = ("import sys, json; from edgemodels.run import runtime; "
            "print(json.dumps([[r.name, r.version] for r in runtime.available()] + ['tensorflow' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    *found, tf_imported = json.loads(proc.stdout)
    names = [n for n, _ in found]
    assert names == [r for r in runtime.RUNTIMES if r in names]
    assert "ai-edge-litert" in names and all(v for _, v in found)
    assert tf_imported is False


def test_default_is_first_available(toys):
    first = runtime.available()[0].name
    assert runtime.load(toys["dynamic"]).runtime_name == first


def test_falls_back_to_tensorflow_when_litert_not_installed(toys, monkeypatch):
    pytest.importorskip("tensorflow")
    _hide(monkeypatch, "ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
          "tflite_runtime.interpreter")
    assert [r.name for r in runtime.available()] == ["tensorflow"]
    m = runtime.load(toys["dynamic"])
    assert m.runtime_name == "tensorflow"
    np.testing.assert_array_equal(m.run({"input_ids": [[2, 3]], "attention_mask": [[1, 1]]}), _expected([2, 3], [1, 1]))


def test_falls_back_when_preferred_runtime_is_installed_but_broken(toys, monkeypatch):
    pytest.importorskip("tensorflow")
    real = runtime._import

    def broken_litert(name):
        if name != "tensorflow":
            raise RuntimeUnavailable(f"runtime {name!r} is not installed (numpy ABI mismatch)")
        return real(name)

    monkeypatch.setattr(runtime, "_import", broken_litert)
    assert runtime.load(toys["dynamic"]).runtime_name == "tensorflow"


@pytest.mark.parametrize("name,module,hint", [
    ("ai-edge-litert", "ai_edge_litert", "pip install ai-edge-litert"),
    ("tflite-runtime", "tflite_runtime", "pip install tflite-runtime"),
    ("tensorflow", "tensorflow", "pip install tensorflow"),
])
def test_named_runtime_missing_says_how_to_install(toys, monkeypatch, name, module, hint):
    _hide(monkeypatch, module, f"{module}.interpreter", f"{module}.lite", f"{module}.lite.python",
          f"{module}.lite.python.interpreter")
    with pytest.raises(RuntimeUnavailable, match=hint) as err:
        runtime.load(toys["dynamic"], runtime=name)
    assert repr(name) in str(err.value)


def test_no_runtime_at_all(toys, monkeypatch):
    monkeypatch.setattr(runtime, "available", lambda: [])
    with pytest.raises(RuntimeUnavailable, match="ai-edge-litert, tflite-runtime, tensorflow"):
        runtime.load(toys["dynamic"])


def test_unknown_runtime_name_lists_valid(toys):
    with pytest.raises(ValueError, match="valid: ai-edge-litert, tflite-runtime, tensorflow"):
        runtime.load(toys["dynamic"], runtime="onnx")
