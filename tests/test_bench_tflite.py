"""`pytest bench/ --models tflite:PATH`: a ready .tflite benchmarked as it is (issue 11), run as a user would, in a
subprocess with a private cache and report directory; and a bad tflite: source stopping the bench at start-up."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", str(REPO / "bench"), "-q", "-p", "no:cacheprovider", "--device=desktop",
           f"--edge-cache={tmp_path / 'cache'}", f"--report-dir={tmp_path / 'report'}",
           f"--baseline-dir={tmp_path / 'baselines'}", "-rsx", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


DATA = ("csv:" + str(REPO / "edgemodels" / "datasets" / "tweet_financial_news" / "sent_valid.csv")
        + "?labels=0:negative,1:positive,2:neutral")
"""The built-in set's test file as a user's CSV: rows the model was not trained on (it trains on sent_train.csv)."""


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    """tiny-bert drq at smoke scale (trained from scratch on the built-in set, ~1 min cold on 2 cores: the tiny
    CSV's 6 validation rows leave it at the majority class), copied with its tokenizer and nothing else: no
    manifest, so its class names and mode are unknown to the bench, as for a file a user ships."""
    pytest.importorskip("tensorflow")
    from edgemodels.store import cache
    from edgemodels.build import pipeline
    from edgemodels.study import matrix as suite

    smoke = suite.get_scale("smoke")
    req = pipeline.BuildRequest("tiny-bert", quant="drq", data="builtin", seq=64,
                                train=smoke.train_config("tiny-bert"), from_scratch=True)
    art = pipeline.build(req, cache.ArtifactCache(tmp_path_factory.mktemp("build-cache")))
    d = tmp_path_factory.mktemp("shipped")
    shutil.copy2(art.tflite, d / "classifier.tflite")
    shutil.copytree(art.tokenizer_dir, d / "tokenizer")
    return d / "classifier.tflite"


def test_bench_runs_a_ready_tflite_as_it_is(shipped, tmp_path):
    r = _bench(tmp_path, f"--models=tflite:{shipped}", "--labels=negative,neutral,positive", f"--data={DATA}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "ready .tflite used as it is: no fp32 sibling" in r.stdout  # drop-vs-fp32 skips, saying why
    assert "needs bert-large fp32" in r.stdout  # and the paper's ratios
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["rows"]
    assert [(x["model"], x["mode"], x["seq"]) for x in rows] == [(f"tflite:{shipped}", "as-is", "64")]
    row = rows[0]
    assert row["size_bytes"] == shipped.stat().st_size and row["ratio"] is None
    assert row["accuracy"] is not None and row["accuracy_delta_vs_fp32_pts"] is None
    assert row["inferences_per_s"] > 0 and row["method"] == "measured" and row["peak_rss_bytes"] > 0
    assert row["fits"] is True and row["arm_loads"] is True
    # never built nor copied: the cache holds the memoised accuracy, keyed by the file's sha256, and no .tflite
    assert not list((tmp_path / "cache").rglob("*.tflite"))


def test_bad_tflite_source_is_a_one_line_usage_error(shipped, tmp_path):
    bare = tmp_path / "bare.tflite"
    shutil.copy2(shipped, bare)  # no tokenizer/ beside it
    r = _bench(tmp_path, f"--models=tflite:{bare}", "--labels=negative,neutral,positive", "--collect-only")
    assert r.returncode == 4, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "no tokenizer" in errors[0] and "--tokenizer DIR" in errors[0], r.stderr
    r = _bench(tmp_path, f"--models=tflite:{bare}", f"--tokenizer={shipped.parent / 'tokenizer'}", "--collect-only")
    assert r.returncode == 4 and "--labels negative,positive" in r.stderr, r.stderr  # class names unknown
    r = _bench(tmp_path, "--labels=a,b", "--collect-only")
    assert r.returncode == 4 and "use them with --models tflite:PATH" in r.stderr, r.stderr


def test_a_ready_random_init_skips_the_accuracy_floor_saying_why(tiny, tmp_path):
    """Its edgemodels manifest says trained: false (tiny-bert, never fine-tuned): the floor used to fail with the
    internal "unknown model 'tflite:...'"; a random init has no accuracy worth asserting, so it skips, saying so."""
    art = tiny.artifact("drq")
    assert art.manifest["trained"] is False
    d = tmp_path / "random-init"
    shutil.copytree(art.tflite.parent, d)
    r = _bench(tmp_path, f"--models=tflite:{d / 'model.tflite'}", f"--data={tiny.data}", "-k", "test_accuracy_floor")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    skips = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED") and "test_accuracy.py" in line]
    assert len(skips) == 1 and "its edgemodels manifest records a random init" in skips[0], r.stdout[-3000:]
    assert "unknown model" not in r.stdout
