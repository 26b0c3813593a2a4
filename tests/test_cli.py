"""`python -m edgemodels`: the JSON contracts scripts rely on, and exit 2 (no traceback) on bad input.

Commands run in-process through cli.main (fast); one test runs the real `python -m edgemodels`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_SEQ, run_cli_subprocess
from edgemodels import cli
from edgemodels.cli import build as cli_build
from edgemodels.cli import common as cli_common
from edgemodels.build import models
from edgemodels.report.rows import Claim, Report
from edgemodels.store.entries import CacheError


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse errors
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def _json(argv: list[str]) -> dict:
    rc, out, err = _run(argv)
    assert rc == 0, err
    return json.loads(out)


def _assert_user_error(argv: list[str], *needles: str) -> str:
    rc, out, err = _run(argv)
    assert rc == 2, (out, err)
    assert err.startswith("edgemodels: error:") and "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


# ---------------------------------------------------------------- data stats


def test_data_stats_json_contract(tiny_csv):
    d = _json(["data", "stats", "--data", f"csv:{tiny_csv}", "--json"])
    assert {"examples", "labels", "skipped", "fingerprint"} <= set(d)
    assert d["examples"] == 60 and d["labels"] == {"negative": 20, "neutral": 20, "positive": 20}
    assert d["skipped"] == {} and len(d["fingerprint"]) == 64 and d["split"] == "all"
    val = _json(["data", "stats", "--data", f"csv:{tiny_csv}", "--split", "validation", "--json"])
    assert val["examples"] == 6 and val["fingerprint"] != d["fingerprint"]


def test_data_stats_human(tiny_csv):
    rc, out, _ = _run(["data", "stats", "--data", f"csv:{tiny_csv}"])
    assert rc == 0 and "60 examples" in out and "skipped: none" in out and "fingerprint:" in out


def test_bad_data_spec_exits_2_with_message(tmp_path):
    _assert_user_error(["data", "stats", "--data", "bogus:x", "--json"], "unknown data spec 'bogus:x'", "csv:FILE")
    missing = tmp_path / "nope.csv"
    _assert_user_error(["data", "stats", "--data", f"csv:{missing}"], str(missing), "does not exist")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,maybe\n")
    _assert_user_error(["data", "stats", "--data", f"csv:{bad}"], str(bad))


def test_subprocess_python_m_edgemodels(tiny_csv):
    proc = run_cli_subprocess("data", "stats", "--data", f"csv:{tiny_csv}", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["examples"] == 60
    proc = run_cli_subprocess("data", "stats", "--data", "bogus:x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "unknown data spec" in proc.stderr
    proc = run_cli_subprocess("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("edgemodels ")


# ---------------------------------------------------------------- build / evaluate / cache


@pytest.fixture(scope="module")
def built(tiny_csv, tmp_path_factory):
    """One CLI build of tiny-bert drq into a fresh cache: (first JSON, second JSON, cache dir)."""
    pytest.importorskip("tensorflow")
    cache_dir = tmp_path_factory.mktemp("cli-cache")
    argv = ["build", "--model", "tiny-bert", "--quant", "drq", "--data", f"csv:{tiny_csv}", "--seq", str(TINY_SEQ),
            "--json", "--cache", str(cache_dir)]
    return _json(argv), _json(argv), cache_dir


def test_build_json_contract(built):
    first, _, cache_dir = built
    assert {"tflite", "size_bytes", "validation_accuracy", "pretrained", "cache_hit"} <= set(first)
    assert first["cache_hit"] is False and first["pretrained"] is False and first["validation_accuracy"] is None
    tflite = Path(first["tflite"])
    assert tflite.is_file() and tflite.stat().st_size == first["size_bytes"]
    assert cache_dir in tflite.parents and first["seq"] == str(TINY_SEQ) and first["quant"] == "drq"


def test_second_build_is_cache_hit(built):
    first, second, _ = built
    assert second["cache_hit"] is True and second["tflite"] == first["tflite"]


def test_build_bad_arguments_exit_2(tiny_csv):
    base = ["build", "--model", "tiny-bert", "--data", f"csv:{tiny_csv}"]
    assert _run([*base, "--quant", "drq", "--seq", "1"])[0] == 2
    assert _run([*base, "--quant", "drq", "--seq", "long"])[0] == 2
    assert _run([*base, "--quant", "int4"])[0] == 2
    assert _run(["build", "--model", "gpt", "--quant", "drq"])[0] == 2


def test_evaluate_json_contract(built, tiny_csv):
    tflite = built[0]["tflite"]
    d = _json(["evaluate", "--tflite", tflite, "--data", f"csv:{tiny_csv}", "--split", "validation", "--json"])
    assert {"accuracy", "macro_f1", "n", "runtime"} <= set(d)
    assert d["n"] == 6 and 0 <= d["accuracy"] <= 1 and 0 <= d["macro_f1"] <= 1
    assert d["runtime"].split()[0] in ("ai-edge-litert", "tflite-runtime", "tensorflow")
    limited = _json(["evaluate", "--tflite", tflite, "--data", f"csv:{tiny_csv}", "--split", "train", "--limit",
                     "9", "--runtime", "tensorflow", "--json"])
    assert limited["n"] == 9 and limited["runtime"].startswith("tensorflow ")


def test_evaluate_non_tflite_file_exits_2_naming_it(built, tiny_csv, tmp_path):
    data = ["--data", f"csv:{tiny_csv}", "--json"]
    # a damaged model inside a copy of a built artifact directory (manifest + tokenizer present)
    art = tmp_path / "art"
    shutil.copytree(Path(built[0]["tflite"]).parent, art)
    (art / "model.tflite").write_text("not a model")
    _assert_user_error(["evaluate", "--tflite", str(art / "model.tflite"), *data],
                       str(art / "model.tflite"), "not a TFLite FlatBuffer")
    # a stray file with an explicit tokenizer
    stray = tmp_path / "stray.tflite"
    stray.write_bytes(b"\x00" * 64)
    _assert_user_error(["evaluate", "--tflite", str(stray), "--tokenizer", str(art / "tokenizer"),
                        "--labels", "negative,neutral,positive", *data], str(stray), "not a TFLite FlatBuffer")
    # ... whose output order nobody named: never assumed
    _assert_user_error(["evaluate", "--tflite", str(stray), "--tokenizer", str(art / "tokenizer"), *data],
                       str(stray), "--labels")
    # a stray file without a manifest beside it
    _assert_user_error(["evaluate", "--tflite", str(stray), *data], str(stray))


def test_evaluate_missing_file_says_so(tiny_csv, tmp_path):
    _assert_user_error(["evaluate", "--tflite", str(tmp_path / "typo.tflite"), "--data", f"csv:{tiny_csv}"],
                       str(tmp_path / "typo.tflite"), "no such")


def test_cache_ls_and_clear(built, tmp_path):
    cache_dir = tmp_path / "copy"
    shutil.copytree(built[2], cache_dir)
    d = _json(["cache", "ls", "--json", "--cache", str(cache_dir)])
    assert d["root"] == str(cache_dir)
    by_kind = {e["kind"]: e for e in d["entries"]}
    assert {"trained", "tflite"} <= set(by_kind) and all(e["complete"] for e in d["entries"])
    assert (by_kind["tflite"]["model"], by_kind["tflite"]["quant"], by_kind["tflite"]["seq"]) == \
        ("tiny-bert", "drq", str(TINY_SEQ))
    assert by_kind["tflite"]["size_bytes"] > built[0]["size_bytes"]  # model + tokenizer files
    rc, out, _ = _run(["cache", "ls", "--cache", str(cache_dir)])
    assert rc == 0 and "tflite" in out and "trained" in out
    assert _json(["cache", "clear", "--json", "--cache", str(cache_dir)])["removed"] == len(d["entries"])
    assert _json(["cache", "ls", "--json", "--cache", str(cache_dir)])["entries"] == []
    rc, out, _ = _run(["cache", "clear", "--cache", str(cache_dir)])
    assert rc == 0 and out.startswith("removed 0 entries")


def test_info_json_offline(tmp_path):
    cache_dir = tmp_path / "c"
    try:
        d = _json(["info", "--json", "--offline", "--cache", str(cache_dir)])
    finally:
        shutil.rmtree(cache_dir / "weights", ignore_errors=True)  # `info` unpacks mpnet-base (~420 MB)
    assert {"edgemodels", "python", "libraries", "runtimes", "cache", "data_default", "weights",
            "hf_hub_offline"} <= set(d)
    assert d["cache"] == str(cache_dir) and d["hf_hub_offline"] is True
    assert set(d["weights"]) == set(models.REGISTRY)
    tiny = d["weights"]["tiny-bert"]
    assert tiny["source"] == "random" and tiny["pretrained"] is False and tiny["why"]
    assert any(r.startswith("ai-edge-litert ") for r in d["runtimes"])
    assert set(d["libraries"]) >= {"tensorflow", "transformers"}


# ---------------------------------------------------------------- claims


def _write_report(d: Path, device: str, claims: list[Claim]) -> Path:
    rep = Report(device, {})
    for c in claims:
        rep.add_claim(c)
    rep.row("m", "drq").accuracy = 0.5
    rep.write(d)
    return d


def test_claims_merges_device_runs_and_drops_repeats(tmp_path):
    size = Claim("~160x smaller", "160x", "161.1x", "checkpoint", True)
    a = _write_report(tmp_path / "desktop", "desktop", [size, Claim(">= 1/s", "1/s", "129/s (measured)", "b1", True)])
    b = _write_report(tmp_path / "pi3", "pi3", [size, Claim(">= 1/s", "1/s", "0.5/s (projected)", "b1", False)])
    rc, out, err = _run(["claims", str(a), str(b / "report.json")])
    assert rc == 0, err
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 3  # header + size once + one speed line per device
    table = "\n".join(lines)  # one line per claim; its full wording in a numbered note under the table
    assert table.count("161.1x") == 1 and "DOES NOT HOLD" in table and "| pi3 " in table, out
    assert out.count("[1] ~160x smaller: 161.1x") == 1 and "runs: desktop 20" in out and ", pi3 20" in out, out
    d = _json(["claims", str(a), str(b), "--json"])
    assert [c["device"] for c in d["claims"]] == ["desktop", "desktop", "pi3"]


@pytest.mark.parametrize("content,needle", [
    (None, "no such file"),
    ("{not json", "not a readable report.json"),
    ('{"device": "pi3", "created": "2026-11-24", "claims": [{"claim": "x"}]}', "claims[0] lacks field(s) paper"),
    ('{"device": "pi3", "claims": []}', "field 'created' missing"),
])
def test_claims_bad_report_names_file_and_field(tmp_path, content, needle):
    f = tmp_path / "report.json"
    if content is not None:
        f.write_text(content)
    _assert_user_error(["claims", str(f)], str(f), needle)


# ---------------------------------------------------------------- issue 10: validated options, safe cache commands


@pytest.mark.parametrize("argv, needle", [
    (["build", "--model", "tiny-bert", "--quant", "fp32", "--seq", "1024"], "--seq 1024: tiny-bert has 512 token positions"),
    (["build", "--model", "mpnet-base", "--quant", "fp32", "--seq", "100000"], "mpnet-base has 512 token positions"),
    (["build", "--model", "tiny-bert", "--quant", "fp32", "--max-length", "600"], "--max-length 600: tiny-bert has 512"),
    (["build", "--model", "tiny-bert", "--quant", "fp32", "--data", "bogus:x"], "unknown data spec 'bogus:x'"),
    (["build", "--model", "minilm-l6", "--quant", "fp32", "--kd-alpha", "0.3"],
     "minilm-l6 is not distilled (it has no teacher); they apply to a distilled model: minilm-l6-kd, tiny-bert-kd"),
])
def test_build_options_checked_against_model_and_data_before_any_work(argv, needle):
    _assert_user_error(argv, needle)


@pytest.mark.parametrize("argv", [
    ["build", "--model", "tiny-bert", "--quant", "fp32", "--lr", "-1"],
    ["build", "--model", "tiny-bert", "--quant", "fp32", "--lr", "nan"],
    ["build", "--model", "tiny-bert", "--quant", "fp32", "--max-length", "0"],
    ["build", "--model", "tiny-bert", "--quant", "fp32", "--epochs", "0"],
    ["build", "--model", "tiny-bert", "--quant", "fp32", "--val-fraction", "1.5"],
    ["build", "--model", "tiny-bert-kd", "--quant", "fp32", "--kd-alpha", "1.5"],
    ["build", "--model", "tiny-bert-kd", "--quant", "fp32", "--kd-temperature", "0"],
    ["data", "stats", "--val-fraction", "0"],
    ["data", "stats", "--seed", "-1"],
    ["evaluate", "--tflite", "x.tflite", "--threads", "0"],
    ["evaluate", "--tflite", "x.tflite", "--limit", "0"],
])
def test_impossible_option_values_are_refused_at_parse_time(argv):
    rc, _, err = _run(argv)
    assert rc == 2 and "Traceback" not in err and ("must be" in err or "positive integer" in err), err


def test_val_fraction_reaches_the_build(monkeypatch, tiny_csv, tmp_path):
    from edgemodels.build import pipeline

    seen = {}

    def capture(req, store):
        seen["req"] = req
        raise CacheError("stop here")

    monkeypatch.setattr(pipeline, "build", capture)
    monkeypatch.setattr(cli_common, "quiet_tf", lambda *a, **k: None)
    _assert_user_error(["build", "--model", "tiny-bert", "--quant", "fp32", "--data", f"csv:{tiny_csv}",
                        "--val-fraction", "0.25", "--cache", str(tmp_path)], "stop here")
    assert seen["req"].val_fraction == 0.25


def _capture_builds(monkeypatch) -> list:
    """The build requests the CLI makes, each stopped with a user error ("stop here") before any work."""
    from edgemodels.build import pipeline

    seen = []

    def capture(req, store):
        seen.append(req)
        raise CacheError("stop here")

    monkeypatch.setattr(pipeline, "build", capture)
    monkeypatch.setattr(cli_common, "quiet_tf", lambda *a, **k: None)
    return seen


def test_distillation_temperature_and_alpha_reach_the_build(monkeypatch, tmp_path):
    """Why: T and alpha could only be changed in Python (train.DistillConfig); they are part of the student's key."""
    from edgemodels.build import train

    seen = _capture_builds(monkeypatch)
    base = ["build", "--model", "tiny-bert-kd", "--quant", "fp32", "--cache", str(tmp_path)]
    _assert_user_error([*base, "--kd-temperature", "4", "--kd-alpha", "0.25"], "stop here")
    _assert_user_error([*base, "--kd-alpha", "0"], "stop here")
    _assert_user_error(base, "stop here")
    assert [r.distill for r in seen] == [train.DistillConfig(temperature=4.0, alpha=0.25),
                                         train.DistillConfig(alpha=0.0), train.DistillConfig()]


def test_bugs_are_not_dressed_as_user_errors(monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli_build, "cmd_data_stats", broken)
    with pytest.raises(KeyError):
        cli.main(["data", "stats"])


def test_data_stats_says_which_label_mapping_it_used(tmp_path):
    f = tmp_path / "n.csv"
    f.write_text("text,label\nfake up,1\nfake flat,2\nfake down,0\n")
    _assert_user_error(["data", "stats", "--data", f"csv:{f}"], "line 2", "never mapped by position")
    d = _json(["data", "stats", "--data", f"csv:{f}?labels=0:negative,1:positive,2:neutral", "--json"])
    assert d["label_mapping"] == {"0": "negative", "1": "positive", "2": "neutral"}
    assert d["labels"] == {"negative": 1, "neutral": 1, "positive": 1} and "explicit mapping" in d["label_rule"]
    b = _json(["data", "stats", "--json"])
    assert b["label_mapping"] == {"0": "negative", "1": "positive", "2": "neutral"} and "own coding" in b["label_rule"]
    rc, out, _ = _run(["data", "stats", "--data", f"csv:{f}?labels=0:negative,1:positive,2:neutral"])
    assert rc == 0 and "label mapping: explicit mapping from the spec: 0 -> negative" in out


def test_evaluate_with_a_damaged_manifest_names_it(tmp_path, tiny_csv):
    d = tmp_path / "art"
    d.mkdir()
    (d / "model.tflite").write_bytes(b"\0" * 64)
    (d / "manifest.json").write_text('{"files": {}}')
    err = _assert_user_error(["evaluate", "--tflite", str(d / "model.tflite"), "--data", f"csv:{tiny_csv}"],
                             str(d / "manifest.json"), "no max_length, pad_id", "--max-length")
    assert "--seq" not in err
    (d / "manifest.json").write_text("{broken")
    _assert_user_error(["evaluate", "--tflite", str(d / "model.tflite"), "--data", f"csv:{tiny_csv}"],
                       str(d / "manifest.json"), "not valid JSON")


def test_cache_commands_refuse_a_file_and_a_foreign_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for argv in (["cache", "ls"], ["cache", "clear", "--yes"], ["info", "--offline"]):
        _assert_user_error([*argv, "--cache", str(f)], f"{f}: is a file, not a directory")
    scratch = tmp_path / "scratch"
    (scratch / "projects" / "thesis").mkdir(parents=True)
    _assert_user_error(["cache", "clear", "--yes", "--cache", str(scratch)], f"{scratch}: not an edgemodels cache")
    assert (scratch / "projects" / "thesis").is_dir()
    # verify must not report "verified 0 entries" (exit 0) for a folder that is something else
    _assert_user_error(["cache", "verify", "--cache", str(scratch)], f"{scratch}: not an edgemodels cache")


@pytest.mark.skipif(not Path("/proc/1").is_dir(), reason="needs Linux /proc")
def test_cache_ls_of_an_unreadable_tree_is_one_line_not_a_traceback():
    """Why: an unreadable folder (another user's cache, a mistyped path like /proc) gave a PermissionError trace."""
    rc, _, err = _run(["cache", "ls", "--cache", "/proc"])
    assert rc == 2 and err.startswith("edgemodels: error:") and "Traceback" not in err, err


def test_cache_ls_shows_leftovers_clear_removes_them_and_verify_hashes(tmp_path):
    from edgemodels.store.cache import ArtifactCache, Key

    root = tmp_path / "c"
    store = ArtifactCache(root)
    e = store.get_or_build(Key("tflite", "m", {"x": 1}), lambda tmp: ((tmp / "model.tflite").write_bytes(b"abc"), {})[1])
    leftover = root / "tflite" / f".{e.path.name}.building.dead1"  # as a SIGKILLed build leaves it
    leftover.mkdir()
    (leftover / "half.bin").write_bytes(b"x" * 10)
    rows = {Path(r["path"]).name: r for r in _json(["cache", "ls", "--json", "--cache", str(root)])["entries"]}
    assert rows[leftover.name]["state"] == "building" and rows[e.path.name]["state"] == "complete"
    rc, out, _ = _run(["cache", "ls", "--cache", str(root)])
    assert rc == 0 and "build temp dir" in out
    assert _json(["cache", "verify", "--json", "--cache", str(root)])["damaged"] == []
    (e.path / "model.tflite").write_bytes(b"abd")
    rc, out, _ = _run(["cache", "verify", "--json", "--cache", str(root)])
    assert rc == 1 and "sha256 differs" in json.loads(out)["damaged"][0]["why"]
    d = _json(["cache", "clear", "--json", "--cache", str(root)])
    assert (d["removed"], d["leftovers"]) == (1, 1) and not leftover.exists() and not e.path.exists()


def test_cache_clear_asks_on_a_terminal(tmp_path):
    import os
    import pty
    import subprocess
    import sys

    from conftest import REPO
    from edgemodels.store.cache import ArtifactCache, Key

    root = tmp_path / "c"
    e = ArtifactCache(root).get_or_build(Key("t", "m", {"x": 1}), lambda tmp: ((tmp / "f").write_text("1"), {})[1])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for answer, rc, exists in ((b"n\n", 1, True), (b"y\n", 0, False)):
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "edgemodels", "cache", "clear", "--cache", str(root)],
                                stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
        os.close(slave)
        os.write(master, answer)
        out, err = proc.communicate(timeout=60)
        os.close(master)
        assert proc.returncode == rc, err
        assert b"remove 1 entries and build leftovers" in err and e.path.exists() == exists


# ---------------------------------------------------------------- one line, not a traceback (issue 23)


def _cli(*args: str, stdout=subprocess.PIPE, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "edgemodels", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, env=env, cwd=REPO, timeout=timeout)


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_cache_ls_into_a_pipe_nobody_reads_stops_quietly(tmp_path, json_flag):
    """`cache ls | head -1`: the reader went away; a CLI stops with SIGPIPE's status (141) and no traceback."""
    from edgemodels.store.cache import ArtifactCache, Key

    ArtifactCache(tmp_path).get_or_build(Key("t", "m", {"x": 1}), lambda tmp: ((tmp / "f").write_text("1"), {})[1])
    read, write = os.pipe()
    os.close(read)  # as `head` has exited: every write gets EPIPE
    try:
        proc = _cli("cache", "ls", "--cache", str(tmp_path), *json_flag, stdout=write)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_cache_ls_piped_to_head_prints_one_line_and_no_traceback(tmp_path):
    for i in range(1500):  # ~150 KB of rows: more than a pipe holds, so head exits while ls still writes
        (tmp_path / "t" / f"not-an-entry-{i:04d}").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m edgemodels cache ls --cache "
                           f"{tmp_path} | head -1"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.stdout == f"cache: {tmp_path}\n" and proc.stderr == "" and proc.returncode == 141


def test_a_broken_pipe_that_is_not_stdout_still_shows(monkeypatch):
    """Only the terminal's reader going away is quiet: an SSH channel or a worker's pipe breaking is a failure."""
    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli_build, "cmd_data_stats", broken)
    with pytest.raises(BrokenPipeError):
        cli.main(["data", "stats"])


def test_a_full_disk_during_build_is_one_line(tmp_path, tiny_csv):
    """A real build (tiny-bert's training writes 4.8 MB) into a cache on a 3 MB filesystem."""
    pytest.importorskip("tensorflow")
    from smallfs import tmpfs

    with tmpfs(tmp_path / "small", "3m") as fs:
        proc = _cli("build", "--model", "tiny-bert", "--quant", "fp32", "--seq", str(TINY_SEQ), "--data",
                    f"csv:{tiny_csv}", "--cache", str(fs / "cache"), timeout=600)
        lines = [x for x in proc.stderr.splitlines() if x.startswith("edgemodels") or "Traceback" in x]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
        assert lines[0].startswith(f"edgemodels: error: {fs / 'cache' / 'trained'}/tiny-bert-")
        assert "no space left on device; nothing half-built was kept: free space on that filesystem" in lines[0]
        assert not [p for p in (fs / "cache").rglob("*building*")]  # the partial build is gone


# ---------------------------------------------------------------- issue 23: nothing silently ignored


def test_data_stats_counts_cross_split_duplicates(tmp_path):
    rows = [f"fake text {i},{('up', 'down')[i % 2]}" for i in range(40)]
    f = tmp_path / "dup.csv"
    f.write_text("\n".join(["text,label", *rows, *rows[:8] * 3]) + "\n")
    d = _json(["data", "stats", "--data", f"csv:{f}", "--split", "validation", "--json"])
    dropped = d["cross_split_duplicates"]["validation"]
    assert dropped > 0 and d["skipped"] == {"duplicate_of_train": dropped}
    rc, out, _ = _run(["data", "stats", "--data", f"csv:{f}"])
    assert rc == 0 and f"cross-split duplicates (exact text also in training; dropped from the evaluation split): " \
                       f"validation {dropped}" in out


def test_training_options_for_an_untrained_random_init_are_refused_not_ignored(tiny_csv, tmp_path, monkeypatch):
    """tiny-bert at ci scale is built untrained: --epochs used to give "trained": false, "train_seconds": 0."""
    monkeypatch.setattr(cli_common, "quiet_tf", lambda *a, **k: None)
    base = ["build", "--model", "tiny-bert", "--quant", "drq", "--data", f"csv:{tiny_csv}", "--cache", str(tmp_path)]
    _assert_user_error([*base, "--epochs", "3"], "--epochs: tiny-bert has no pretrained weights",
                       "--scale smoke trains it from scratch")
    _assert_user_error([*base, "--lr", "0.01", "--class-weights"], "--lr, --class-weights: tiny-bert")
    assert not list(tmp_path.rglob("*.tflite")) and not list(tmp_path.rglob("weights"))  # refused before any work


def test_scale_smoke_trains_a_random_init_from_scratch(tiny_csv, tmp_path, monkeypatch):
    from edgemodels.study import matrix as suite

    seen = _capture_builds(monkeypatch)
    _assert_user_error(["build", "--model", "tiny-bert", "--quant", "drq", "--scale", "smoke", "--epochs", "1",
                        "--data", f"csv:{tiny_csv}", "--cache", str(tmp_path)], "stop here")
    req = seen[0]
    assert req.from_scratch is True and req.train.epochs == 1 and req.train_options == ("--epochs",)
    # otherwise the smoke bench's budget: `build --scale smoke` reuses the bench's cache entries
    smoke = suite.get_scale("smoke").train_config("tiny-bert")
    assert req.train.learning_rate == smoke.learning_rate and req.train.max_examples == smoke.max_examples


def test_evaluate_labels_contradicting_the_manifest_exit_2(built, tiny_csv):
    """The manifest beside the file records its outputs' order: another --labels order used to be accepted."""
    tflite = built[0]["tflite"]
    _assert_user_error(["evaluate", "--tflite", f"tflite:{tflite}", "--labels", "positive,negative,neutral",
                        "--data", f"csv:{tiny_csv}"],
                       "--labels positive,negative,neutral:", "records model.tflite's outputs as "
                                                               "negative,neutral,positive")
    same = _json(["evaluate", "--tflite", tflite, "--labels", "negative,neutral,positive", "--data",
                  f"csv:{tiny_csv}", "--json"])
    assert same["labels"] == ["negative", "neutral", "positive"]


def test_build_with_an_unusable_data_file_stops_before_any_work(tmp_path, monkeypatch):
    from edgemodels.build import pipeline

    def never(*a, **k):
        raise AssertionError("reached the build")

    monkeypatch.setattr(pipeline, "build", never)
    monkeypatch.setattr(cli_common, "quiet_tf", never)  # not even TensorFlow's start
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    _assert_user_error(["build", "--model", "tiny-bert", "--quant", "drq", "--data", f"csv:{empty}"],
                       f"{empty}: no data rows after the header")
