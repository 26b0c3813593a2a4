"""`python -m edgemodels`: the JSON contracts scripts rely on, and exit 2 (no traceback) on bad input.

Commands run in-process through cli.main (fast); one test runs the real `python -m edgemodels`.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from conftest import TINY_SEQ, run_cli_subprocess
from edgemodels import cli, models
from edgemodels.report import Claim, Report


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
    _assert_user_error(["evaluate", "--tflite", str(stray), "--tokenizer", str(art / "tokenizer"), *data],
                       str(stray), "not a TFLite FlatBuffer")
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
    assert out.count("161.1x") == 1 and "DOES NOT HOLD" in out and "pi3, 20" in out
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
