"""edgemodels.run.evaluate on every core, and edgemodels.progress: same predictions as one interpreter, a
plan that uses the cores, and a progress bar only where someone watches (tiny-bert, synthetic tweets)."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import time
import select
import struct
import termios

import numpy as np
import pytest

from conftest import TINY_SEQ, write_tiny_csv
from edgemodels import cli, progress
from edgemodels.build import data
from edgemodels.run import evaluate, runtime


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """300 synthetic tweets of 5 to 16 tokens: several chunks, several lengths, all three labels."""
    return data.load(f"csv:{write_tiny_csv(tmp_path_factory.mktemp('ev') / 'ev.csv', n=300, seed=3)}", "all")


def _single(art, ds) -> np.ndarray:
    """Logits of one interpreter at 1 thread in this process, tweet by tweet: what every plan must reproduce."""
    model = runtime.load(art.tflite, num_threads=1)
    ids = evaluate.encode_dataset(ds, art.tokenizer_dir, model.fixed_length or art.manifest["max_length"])
    return np.stack([model.run(evaluate.to_feeds(x, model.fixed_length, art.manifest["pad_id"]))[0] for x in ids])


@pytest.mark.parametrize("quant,seq", [("fp32", TINY_SEQ), ("drq", None)], ids=["fp32-fixed", "drq-dynamic"])
def test_process_pool_computes_exactly_what_one_interpreter_does(tiny, split, quant, seq):
    art = tiny.artifact(quant, seq)
    ref = _single(art, split)
    # Not a vacuous comparison: the tweets' outputs differ, so rows put back in the wrong order would not match.
    assert len(np.unique(ref, axis=0)) > len(ref) // 2
    ids = evaluate.encode_dataset(split, art.tokenizer_dir, seq or art.manifest["max_length"])
    model = runtime.load(art.tflite, num_threads=1)
    for workers in (1, 2):  # here (a dynamic model's tweets in length order), and two worker processes
        got, used = evaluate.split_logits(model, ids, art.manifest["pad_id"], workers=workers)
        assert used == workers
        np.testing.assert_array_equal(got, ref, err_msg=f"workers={workers}")  # bit for bit, in the split's order
    # Through evaluate(): 2 processes, and one interpreter at 2 threads, against the reference's scores.
    kw = dict(tokenizer_dir=art.tokenizer_dir, max_length=art.manifest["max_length"], pad=art.manifest["pad_id"])
    pooled = evaluate.evaluate(art.tflite, split, workers=2, threads=1, **kw)
    threaded = evaluate.evaluate(art.tflite, split, workers=1, threads=2, **kw)
    acc, f1, cm = evaluate.scores(split.label_ids(), ref.argmax(1))
    assert (pooled.workers, pooled.threads, threaded.workers, threaded.threads) == (2, 1, 1, 2)
    for got in (pooled, threaded):
        assert got.confusion == tuple(tuple(int(v) for v in r) for r in cm)
        assert (got.accuracy, got.macro_f1) == (acc, f1)
        assert got.n == 300 and got.seconds > 0 and got.tweets_per_s == pytest.approx(300 / got.seconds)


def test_evaluate_is_tokenizing_then_evaluate_ids(tiny, split):
    """evaluate() = tokenize + evaluate_ids(), the scoring an export's accuracy (export.Export.accuracy) shares; a
    model whose outputs name the classes in another order is scored by name, not by position."""
    import dataclasses

    art = tiny.artifact("fp32")
    pad = art.manifest["pad_id"]
    whole = evaluate.evaluate(art.tflite, split, tokenizer_dir=art.tokenizer_dir, max_length=art.manifest["max_length"],
                              pad=pad, workers=1, threads=1, quiet=True)
    model, how = evaluate.load_planned(art.tflite, workers=1, threads=1)
    ids = evaluate.encode_dataset(split, art.tokenizer_dir, model.fixed_length)
    kw = dict(pad=pad, data_labels=split.labels, majority_accuracy=split.majority_accuracy(), quiet=True)
    got = evaluate.evaluate_ids(model, how, ids, split.label_ids(), **kw)
    assert dataclasses.replace(got, seconds=None) == dataclasses.replace(whole, seconds=None)
    assert got.n == 300 and got.labels == tuple(split.labels) and got.seconds > 0

    pred = _single(art, split).argmax(1)
    k = len(split.labels)
    acc, f1, cm = evaluate.scores(split.label_ids(), (k - 1) - pred, k)  # output i means class k-1-i
    flipped = evaluate.evaluate_ids(model, how, ids, split.label_ids(), model_labels=split.labels[::-1], **kw)
    assert (flipped.accuracy, flipped.macro_f1) == (acc, f1)
    assert flipped.confusion == tuple(tuple(int(v) for v in r) for r in cm) != got.confusion  # by name, not position


def test_evaluation_set_is_the_seeded_sample_of_the_evaluation_split(tmp_path):
    """The one choice of tweets the bench scores and an export pre-tokenizes (plugin.eval_set, export.export)."""
    spec = f"csv:{write_tiny_csv(tmp_path / 'e.csv', n=300, seed=5)}"
    parsed = data.parse_spec(spec)
    full = data.load(parsed, parsed.evaluation_split)
    assert 12 < len(full.examples) < 300  # the validation split, not the file
    picked = evaluate.evaluation_set(spec, 12)
    assert len(picked.examples) == 12 and picked.fingerprint == full.sample(12).fingerprint
    assert picked.fingerprint == evaluate.evaluation_set(spec, 12).fingerprint  # seeded: the same tweets each time
    for n in (None, 0, len(full.examples), 10_000):  # no cap, or a cap the split is within: all of it
        assert evaluate.evaluation_set(spec, n).fingerprint == full.fingerprint


def test_probe_starts_workers_only_when_they_pay(tiny, split, monkeypatch):
    """tiny-bert runs 300 tweets in well under STARTUP_S: no processes; made free to start, they are used."""
    art = tiny.artifact("drq", None)
    ref = _single(art, split)
    ids = evaluate.encode_dataset(split, art.tokenizer_dir, art.manifest["max_length"])
    model = runtime.load(art.tflite, num_threads=1)
    got, used = evaluate.split_logits(model, ids, art.manifest["pad_id"], workers=2, probe=True)
    assert used == 1
    np.testing.assert_array_equal(got, ref)
    monkeypatch.setattr(evaluate, "STARTUP_S", 0.0)
    got, used = evaluate.split_logits(model, ids, art.manifest["pad_id"], workers=2, probe=True)
    assert used == 2  # the probe's tweets ran here, the rest in the workers, all put back in order
    np.testing.assert_array_equal(got, ref)


def test_dynamic_model_runs_each_tweet_at_its_own_length(tiny, split):
    """A [1, None] artifact is fed the tweet's tokens only; fixed-length artifacts are padded to their length."""
    dyn = runtime.load(tiny.artifact("drq", None).tflite)
    seen = []
    real_run = dyn.run
    dyn.run = lambda feeds: seen.append(feeds["input_ids"].shape) or real_run(feeds)
    ids = [[101, 7, 102], [101, 7, 8, 9, 10, 102]]
    evaluate.predict(dyn, ids, 0)
    assert seen == [(1, 3), (1, 6)]


def test_chunks_cover_the_split_contiguously():
    for n, workers in ((1, 2), (7, 2), (300, 2), (56_324, 2), (1000, 4)):
        chunks = evaluate._chunks(n, workers)
        assert chunks[0][0] == 0 and chunks[-1][1] == n
        assert all(a < b and b == c for (a, b), (c, _) in zip(chunks, chunks[1:]))
        assert all(b - a <= 256 for a, b in chunks)
    assert len(evaluate._chunks(56_324, 2)) >= 32  # progress and balance: many chunks per worker


GB = 1_000_000_000


def test_plan_uses_every_core():
    compact = evaluate.plan(25_000_000, n_cores=2, available_bytes=8 * GB)
    assert (compact.workers, compact.threads, compact.auto) == (2, 1, True)
    large = evaluate.plan(1_340_000_000, n_cores=2, available_bytes=8 * GB)
    assert (large.workers, large.threads) == (1, 2) and "large" in large.why
    # memory for one interpreter only: the cores go to its threads instead
    short = evaluate.plan(100_000_000, n_cores=4, available_bytes=400_000_000)
    assert (short.workers, short.threads) == (1, 4) and "memory" in short.why
    # what the user asks wins; the other number fills the cores; asked-for processes are always started
    asked = [evaluate.plan(25_000_000, threads=1, n_cores=2),
             evaluate.plan(1_340_000_000, workers=2, n_cores=4),
             evaluate.plan(25_000_000, workers=3, threads=2, n_cores=2)]
    assert [(p.workers, p.threads, p.auto) for p in asked] == [(2, 1, True), (2, 2, False), (3, 2, False)]
    with pytest.raises(ValueError, match="workers must be at least 1"):
        evaluate.plan(25_000_000, workers=0)


def test_accuracy_memoised_before_timing_fields_still_loads():
    """The bench memoises asdict(Accuracy); entries written before workers/threads/seconds existed must load."""
    old = {"accuracy": 0.5, "macro_f1": 0.4, "n": 2, "majority_accuracy": 0.5, "runtime": "ai-edge-litert",
           "runtime_version": "2.3.0", "confusion": ((1, 0, 0), (1, 0, 0), (0, 0, 0))}
    acc = evaluate.Accuracy(**old)
    assert acc.tweets_per_s is None and json.loads(json.dumps(acc.as_dict()))["workers"] is None


# ---------------------------------------------------------------- progress


@pytest.fixture
def tty():
    """A real terminal (pseudo-terminal): (writable stream on it, function reading what was drawn)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # 120 columns, as a window has
    stream = os.fdopen(slave, "w", buffering=1)

    def drawn() -> str:
        stream.flush()
        chunks = []
        while select.select([master], [], [], 0.3)[0]:  # the terminal passes bytes on asynchronously
            chunks.append(os.read(master, 65536))
        return b"".join(chunks).decode(errors="replace")

    yield stream, drawn
    stream.close()
    os.close(master)


def test_progress_only_on_a_terminal_outside_ci(tty, monkeypatch):
    stream, _ = tty
    monkeypatch.delenv("CI", raising=False)
    assert progress.enabled(stream)
    assert not progress.enabled(stream, quiet=True)  # --json
    assert not progress.enabled(io.StringIO())  # a log file or pipe
    for value in ("true", "1", "yes"):
        monkeypatch.setenv("CI", value)
        assert not progress.enabled(stream)
    monkeypatch.setenv("CI", "false")
    assert progress.enabled(stream)


def test_progress_bar_shows_rate_and_eta(tty, monkeypatch):
    stream, drawn = tty
    monkeypatch.delenv("CI", raising=False)
    with progress.bar(100, "evaluate", unit="tweet", stream=stream) as bar:
        bar.update(40)
        bar.refresh()
        text = drawn()
    assert "40/100" in text and "tweet/s" in text and "<" in text  # elapsed<remaining, then the rate


def test_stage_shows_elapsed_time_on_a_terminal_only(tty, monkeypatch):
    """A conversion has no measurable progress: the stage bar ticks its elapsed time while the step runs."""
    stream, drawn = tty
    monkeypatch.delenv("CI", raising=False)
    with progress.stage("convert minilm-l6 drq", stream=stream):
        time.sleep(1.2)
        text = drawn()
    assert "convert minilm-l6 drq: 00:01" in text
    plain = io.StringIO()
    with progress.stage("convert", stream=plain):
        time.sleep(0.6)
    assert plain.getvalue() == ""  # a log file: nothing drawn


def _cli(argv, stderr) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(stderr):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:
            rc = exc.code
    return rc, out.getvalue()


def test_cli_evaluate_reports_speed_and_draws_progress_only_without_json(tiny, tty, monkeypatch):
    stream, drawn = tty
    monkeypatch.delenv("CI", raising=False)
    tflite = str(tiny.artifact("drq", None).tflite)
    base = ["evaluate", "--tflite", tflite, "--data", f"csv:{tiny.csv}", "--split", "train", "--workers", "1"]
    rc, out = _cli([*base, "--threads", "2", "--json"], stream)
    d = json.loads(out)
    assert rc == 0 and (d["workers"], d["threads"]) == (1, 2) and d["tweets_per_s"] > 0 and d["seconds"] > 0
    assert "tweet" not in drawn()  # --json: no bar, even on a terminal
    rc, out = _cli(base, stream)
    assert rc == 0 and "tweets/s (1 process(es) x" in out
    assert "evaluate" in (text := drawn()) and "tweet/s" in text and "/54" in text


@pytest.mark.parametrize("flag", ["--workers", "--threads"])
def test_cli_evaluate_rejects_non_positive_counts(tiny, flag):
    rc, _ = _cli(["evaluate", "--tflite", str(tiny.artifact("drq", None).tflite), flag, "0"], io.StringIO())
    assert rc == 2
