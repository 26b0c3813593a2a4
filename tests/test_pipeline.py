"""edgemodels.build.pipeline (+ the evaluate and train stages it drives) on tiny-bert and a 60-row CSV."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SEQ, write_tiny_csv
from edgemodels.errors import EdgeModelsError
from edgemodels.store import cache
from edgemodels.build import data, models, pipeline, train
from edgemodels.run import evaluate
from edgemodels.build.pipeline import BuildRequest

# ---------------------------------------------------------------- pipeline.build


def test_second_build_is_a_cache_hit_with_the_same_path(tiny):
    first = tiny.artifact("drq")
    assert first.cache_hit is False  # the session cache started empty
    again = pipeline.build(tiny.request("drq"), tiny.store)
    assert again.cache_hit is True and again.tflite == first.tflite
    assert again.manifest == first.manifest


def test_manifest_fields(tiny):
    art = tiny.artifact("drq")
    mf = art.manifest
    assert art.tflite.name == pipeline.TFLITE_NAME and art.tflite.is_file()
    assert art.size_bytes == mf["size_bytes"] == art.tflite.stat().st_size
    assert "FULLY_CONNECTED:v12" in mf["ops"]
    assert art.pretrained is False and mf["trained"] is False and mf["weights_source"] == "random"
    assert mf["validation_accuracy"] is None and mf["data"] is None  # random init: never trained
    assert mf["weights_trail"] and "no PyPI package" in mf["weights_trail"][-1]
    assert (mf["model"], mf["quant"], mf["seq"], mf["max_length"]) == ("tiny-bert", "drq", str(TINY_SEQ), TINY_SEQ)
    assert mf["pad_id"] == 0 and mf["params"] == 1_011_459
    assert mf["quant_description"] == pipeline.convert.MODES["drq"]
    assert set(mf["files"]) >= {pipeline.TFLITE_NAME, f"{pipeline.TOKENIZER_DIR}/vocab.txt"}
    summary = art.summary()
    assert summary["tflite"] == str(art.tflite) and summary["cache_hit"] is False
    assert "files" not in summary and "key" not in summary
    assert pipeline.manifest_for(art.tflite) == mf


def test_artifact_directory_is_self_contained(tiny):
    art = tiny.artifact("drq")
    tok = models.load_tokenizer(art.tokenizer_dir)  # the tokenizer travels with the .tflite
    assert models.encode(tok, ["great profit"], TINY_SEQ)[0][0] == tok.token_to_id("[CLS]")


def test_quant_and_seq_give_different_entries_sharing_one_trained_model(tiny):
    arts = [tiny.artifact("drq"), tiny.artifact("drq", None), tiny.artifact("fp32")]
    assert len({a.tflite for a in arts}) == 3
    assert len({a.manifest["key"]["digest"] for a in arts}) == 3
    assert len({a.manifest["trained_entry"] for a in arts}) == 1
    assert arts[1].manifest["seq"] == "dynamic" and "drq-dynamic" in arts[1].tflite.parent.name
    kinds = [path.parent.name for path, _ in tiny.store.entries()]
    assert kinds.count("trained") == 1  # one tiny-bert, whatever else the session built


def test_build_request_validates_names():
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        BuildRequest("gpt")
    with pytest.raises(ValueError, match="unknown quantization mode 'int4'"):
        BuildRequest("tiny-bert", quant="int4")
    assert BuildRequest("tiny-bert", seq=None).seq_label == "dynamic"


def test_manifest_for_a_bare_file_names_it(tmp_path):
    f = tmp_path / "m.tflite"
    f.write_bytes(b"x")
    with pytest.raises(EdgeModelsError, match=rf"{f}: no manifest\.json"):
        pipeline.manifest_for(f)


class _KeyRecorder(cache.ArtifactCache):
    """Builds `trained` entries for real, records `tflite` keys without converting anything."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.keys: list[cache.Key] = []

    def get_or_build(self, key, build):
        if key.kind != "tflite":
            return super().get_or_build(key, build)
        self.keys.append(key)
        return cache.Entry(self.path_for(key), {"key": {"digest": key.digest}}, cache_hit=False)


def test_int8_key_changes_when_the_calibration_data_changes(tiny, tmp_path):
    store = _KeyRecorder(tiny.store.root)  # reuse the session's trained tiny-bert
    csv_path = write_tiny_csv(tmp_path / "calib.csv", n=60, seed=1)
    req = BuildRequest("tiny-bert", quant="int8", data=f"csv:{csv_path}", seq=TINY_SEQ)
    pipeline.build(req, store)
    write_tiny_csv(csv_path, n=60, seed=2)  # same path, different texts
    pipeline.build(req, store)
    assert store.keys[0].digest != store.keys[1].digest


# ---------------------------------------------------------------- evaluate


def test_scores_hand_computed():
    # confusion rows=true: [[1,1,0],[0,2,0],[1,0,1]]
    acc, f1, cm = evaluate.scores(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0]))
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert acc == pytest.approx(4 / 6)
    # F1 = 2tp / (predicted + true): 2/4, 4/5, 2/3
    assert f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_scores_perfect_missing_class_and_empty():
    acc, f1, _ = evaluate.scores(np.array([0, 1, 2]), np.array([0, 1, 2]))
    assert (acc, f1) == (1.0, 1.0)
    acc, f1, _ = evaluate.scores(np.array([0, 1]), np.array([0, 1]))  # class 2 absent everywhere: F1 0
    assert acc == 1.0 and f1 == pytest.approx(2 / 3)
    acc, f1, _ = evaluate.scores(np.array([0, 0, 0]), np.array([1, 1, 1]))
    assert (acc, f1) == (0.0, 0.0)
    acc, f1, cm = evaluate.scores(np.array([], int), np.array([], int))
    assert (acc, f1, int(cm.sum())) == (0.0, 0.0, 0)


def test_evaluate_on_tiny_model(tiny):
    art = tiny.artifact("drq")
    ds = data.load(tiny.data, "validation")
    acc = evaluate.evaluate(art.tflite, ds, tokenizer_dir=art.tokenizer_dir, max_length=art.manifest["max_length"],
                            pad=art.manifest["pad_id"])
    assert acc.n == len(ds.examples) == 6
    cm = np.array(acc.confusion)
    assert cm.sum() == acc.n and cm.sum(1).tolist() == [ds.label_counts()[label] for label in evaluate.LABELS]
    assert acc.accuracy == pytest.approx(np.trace(cm) / acc.n)
    assert 0.0 <= acc.macro_f1 <= 1.0 and acc.majority_accuracy == pytest.approx(1 / 3)
    d = acc.as_dict()
    assert d["runtime"] == f"{acc.runtime} {acc.runtime_version}" and d["labels"] == list(evaluate.LABELS)
    json.dumps(d)  # the CLI prints it


def test_evaluate_dynamic_model_uses_max_length(tiny):
    art = tiny.artifact("drq", None)
    ds = data.load(tiny.data, "validation")
    acc = evaluate.evaluate(art.tflite, ds, tokenizer_dir=art.tokenizer_dir, max_length=8, pad=0,
                            runtime_name="tensorflow")
    assert acc.n == 6 and acc.runtime == "tensorflow"


# ---------------------------------------------------------------- train


@pytest.fixture(scope="module")
def tiny_fit(tiny_csv, tmp_path_factory):
    """Inputs for fine_tune: tiny-bert weights (random init), its tokenizer, the CSV's splits."""
    pytest.importorskip("tensorflow")
    w = models.resolve("tiny-bert", cache_root=tmp_path_factory.mktemp("fit"))
    spec = f"csv:{tiny_csv}"
    cfg = train.TrainConfig(epochs=1, max_length=32, batch_size=8, learning_rate=1e-3, seed=0)
    return w, models.load_tokenizer(w.tokenizer_path), data.load(spec, "train"), data.load(spec, "validation"), cfg


def _fit(tiny_fit, **overrides):
    w, tok, tr, va, cfg = tiny_fit
    model = models.build_classifier(w, seed=0)
    before = [v.copy() for v in model.get_weights()]
    result = train.fine_tune(model, tok, tr, va, replace(cfg, **overrides))
    return result, before, model.get_weights()


def test_fine_tune_one_epoch_and_it_is_deterministic(tiny_fit):
    result, before, after = _fit(tiny_fit)
    assert isinstance(result, train.TrainResult)
    assert result.epochs_run == 1 and (result.n_train, result.n_validation) == (54, 6)
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 1 and np.isfinite(v[0]) for v in result.history.values())
    assert result.validation_accuracy == max(result.history["val_accuracy"])
    assert result.train_seconds > 0
    assert not all(np.array_equal(a, b) for a, b in zip(before, after))  # it did train
    again, _, after2 = _fit(tiny_fit)
    assert again.history == result.history  # same seed: bit-identical on CPU
    assert again.validation_accuracy == result.validation_accuracy
    assert all(np.array_equal(a, b) for a, b in zip(after, after2))


def test_fine_tune_respects_max_examples(tiny_fit):
    result, _, _ = _fit(tiny_fit, max_examples=30, max_val_examples=3)
    assert (result.n_train, result.n_validation) == (30, 3)


def test_frozen_layers_keep_their_pretrained_weights(tiny_fit):
    """frozen_layers=1 of tiny-bert's 2: the embeddings and layer 0 are bit-identical after a fit, layer 1 and the
    head trained."""
    w, tok, tr, va, cfg = tiny_fit
    model = models.build_classifier(w, seed=0)
    before = {v.name: v.numpy() for v in model.weights}  # by name: freezing reorders model.weights
    train.fine_tune(model, tok, tr, va, replace(cfg, frozen_layers=1))
    changed = {v.name for v in model.weights if not np.array_equal(v.numpy(), before[v.name])}
    frozen = {n for n in before if "/embeddings/" in n or "/layer_._0/" in n}
    assert frozen and not changed & frozen
    assert any("/layer_._1/" in n for n in changed) and any("classifier" in n for n in changed)


def test_freezing_mpnet_freezes_the_position_bias_every_layer_shares():
    """MPNet's encoder owns one relative-position bias used by every layer: left trainable, the backward pass
    would run through the frozen layers to reach it (no saving)."""
    pytest.importorskip("tensorflow")
    from transformers import MPNetConfig, TFMPNetForSequenceClassification

    model = TFMPNetForSequenceClassification(MPNetConfig(vocab_size=64, hidden_size=16, num_hidden_layers=3,
                                                         num_attention_heads=2, intermediate_size=32, num_labels=3))
    model(model.dummy_inputs)
    all_params = models.count_params(model)
    left = models.freeze_bottom_layers(model, 2)
    names = [v.name for v in model.trainable_weights]
    assert 0 < left == sum(int(v.shape.num_elements()) for v in model.trainable_weights) < all_params
    assert any("layer_._2/" in n for n in names) and any("classifier" in n for n in names)
    assert not any(k in n for n in names for k in ("relative_attention_bias", "embeddings", "layer_._0/", "layer_._1/"))
    assert any("relative_attention_bias" in v.name for v in model.non_trainable_weights)


def test_frozen_layers_out_of_range_is_a_clear_error(tiny_fit):
    w, tok, tr, va, cfg = tiny_fit
    with pytest.raises(models.FreezeError, match="frozen_layers=2, but it has 2 encoder layers: freeze 1 to 1"):
        models.freeze_bottom_layers(models.build_classifier(w, seed=0), 2)
    with pytest.raises(models.FreezeError, match="frozen_layers must be an int >= 0, got -1"):
        train.TrainConfig(frozen_layers=-1)
    # absent from the key when 0: builds made before the field keep their cache keys
    assert "frozen_layers" not in train.TrainConfig().key()
    assert train.TrainConfig(frozen_layers=6).key()["frozen_layers"] == 6


def test_train_helpers():
    weights = train._class_weights(np.array([0, 0, 0, 1]))
    assert weights == {0: pytest.approx(4 / 9), 1: pytest.approx(4 / 3), 2: 0.0}
    assert train.scale("ci").epochs == 2 and train.scale("paper").max_examples is None
    with pytest.raises(ValueError, match="valid: ci, paper"):
        train.scale("huge")
    key = train.TrainConfig().key()
    assert key["seed"] == 0 and json.dumps(key)
