"""`edgemodels export` and `pytest bench/ --artifacts DIR`: the device's bench with no workstation link.

Real components: a smoke-scale export (tiny-bert trained from scratch on a 60-row CSV, converted by TF 2.21),
read back by `pytest bench/` in a fresh venv with only the device side (`.[device,device-bench]`: numpy,
psutil, ai-edge-litert, pytest; no TensorFlow, transformers or tokenizers installed, so none can be
imported), and the Pi 3 flavour: the x86 build of tflite-runtime 2.14 (numpy<2), which really refuses
TF 2.21's drq files. The venvs are built once and kept under the temp dir, keyed by pyproject.toml's hash
(pip takes a minute; conftest.device_venv); the export's builds live in a per-machine cache under the temp dir
(content-addressed, sha256-verified on every hit), so a re-run pays only for the bench subprocesses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import device_venv, run_cli_subprocess, write_tiny_csv
from edgemodels.build import export
from edgemodels.build.export import Export, ExportError, ExportRequest

REPO = Path(__file__).resolve().parents[1]
DEVICE_SIDE_ONLY = ("tensorflow", "transformers", "tokenizers", "tf_keras")


@pytest.fixture(scope="module")
def export_cache() -> Path:
    """Per machine, not per user: content-addressed and verified on every hit, so sharing it is safe."""
    return Path(tempfile.gettempdir()) / "edgemodels-test-export-cache"


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory) -> str:
    # The same bytes every session (a fixed path keeps the build cache's data key stable across sessions).
    path = Path(tempfile.gettempdir()) / "edgemodels-test-export-data" / "tiny.csv"
    write_tiny_csv(path, n=600)  # 540 train / 60 validation: enough for tiny-bert to beat the majority class
    return f"csv:{path}"


def _export(device: str, out: Path, data: str, cache: Path) -> Export:
    pytest.importorskip("tensorflow")
    from edgemodels.store.cache import ArtifactCache

    return export.export(ExportRequest(device=device, scale="smoke", data=data), out, ArtifactCache(cache))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, csv_data, export_cache) -> Export:
    return _export("desktop", tmp_path_factory.mktemp("export") / "desktop", csv_data, export_cache)


def _bench_tree(tmp: Path) -> Path:
    """What a Pi user copies: bench/, the root conftest.py and pytest.ini, and the edgemodels package."""
    tree = tmp / "checkout"
    for name in ("bench", "edgemodels"):
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("conftest.py", "pytest.ini"):
        shutil.copy(REPO / name, tree / name)
    return tree


def _run_bench(python: Path, tree: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "EDGEMODELS_"))}
    env.update(PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", EDGEMODELS_CACHE=str(tree / "no-cache"))
    return subprocess.run([str(python), "-m", "pytest", "bench/", "-q", "-p", "no:cacheprovider", "--scale=smoke",
                           f"--report-dir={tree / 'report'}", *args],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------------------------------ the export


def test_export_holds_artifacts_feeds_references_and_digests(exported, csv_data):
    idx = exported.index
    assert idx["format"] == export.FORMAT and idx["device"] == "desktop" and idx["scale"] == "smoke"
    assert idx["data"]["spec"] == csv_data and idx["data"]["fingerprint"] and idx["labels"]
    assert {"tensorflow", "transformers", "edgemodels"} <= set(idx["libs"])
    assert set(exported.case_ids()) == {"tiny-bert-fp32-64", "tiny-bert-drq-64", "tiny-bert-drq-compat-64",
                                        "tiny-bert-drq-dynamic"}
    on_disk = {p.relative_to(exported.root).as_posix() for p in exported.root.rglob("*") if p.is_file()}
    assert on_disk - {export.INDEX} == set(idx["files"])  # every file has its sha256, nothing unlisted
    for rel, digest in idx["files"].items():
        assert export.sha256_file(exported.root / rel) == digest


def test_exported_feeds_are_the_tokenizers_ids_and_the_reference_is_x86(exported, csv_data, export_cache):
    """The device needs no tokenizer: the ids must be exactly what the workstation's tokenizer gives."""
    from edgemodels.run import evaluate, runtime
    from edgemodels.store.cache import ArtifactCache
    from edgemodels.build.pipeline import BuildRequest, build
    from edgemodels.study.matrix import get_scale

    scale = get_scale("smoke")
    ds = evaluate.evaluation_set(csv_data, scale.eval_examples)  # what the bench's accuracy suite scores
    art = build(BuildRequest("tiny-bert", "drq", csv_data, 64, scale.train_config("tiny-bert"), from_scratch=True),
                ArtifactCache(export_cache))
    assert exported.ids("tiny-bert-drq-64") == evaluate.encode_dataset(ds, art.tokenizer_dir, 64)
    assert exported.labels("tiny-bert-drq-64").tolist() == ds.label_ids().tolist()
    # The device's accuracy from the export is the workstation's evaluate() on the same tweets (evaluate_ids both).
    here = evaluate.evaluate(art.tflite, ds, tokenizer_dir=art.tokenizer_dir, max_length=art.manifest["max_length"],
                             pad=art.manifest["pad_id"], runtime_name="ai-edge-litert", workers=1, quiet=True)
    there = exported.accuracy("tiny-bert-drq-64", runtime_name="ai-edge-litert", workers=1)
    assert dataclasses.replace(there, seconds=None) == dataclasses.replace(here, seconds=None)
    assert there.majority_accuracy == ds.majority_accuracy() and there.n == len(ds.examples)
    model = runtime.load(exported.artifact("tiny-bert-drq-64").tflite, runtime="ai-edge-litert", num_threads=1)
    feeds = exported.feeds("tiny-bert-drq-64", exported.compat_n)
    ref = np.concatenate([model.run(f) for f in feeds])
    np.testing.assert_array_equal(exported.reference_outputs("tiny-bert-drq-64"), ref)
    assert exported.index["reference"]["runtime"] == "ai-edge-litert"
    assert exported.reference_label.startswith(f"{platform.machine()} reference exported from ")


def test_export_refuses_a_directory_that_is_not_an_export(tmp_path, csv_data, export_cache):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ExportError, match="not an earlier edgemodels export"):
        _export("desktop", mine, csv_data, export_cache)
    assert (mine / "thesis.tex").read_text() == "precious" and sorted(os.listdir(mine)) == ["thesis.tex"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mine")]  # no temp dir left behind


def _export_cli(out: Path, data: str, cache: Path, *args: str, device: str = "pi4") -> subprocess.CompletedProcess:
    return run_cli_subprocess("export", "--device", device, "--scale", "smoke", "--data", data, "--cache", str(cache),
                              str(out), *args, timeout=600)


def test_re_export_replaces_only_what_the_earlier_export_wrote(tmp_path, exported, csv_data, export_cache):
    """Why: `export` into an earlier export deleted what the user had added there (notes, a bench report)."""
    out = tmp_path / "mine"
    shutil.copytree(exported.root, out)
    (out / "my_notes.txt").write_text("notes")
    (out / "bench-report").mkdir()
    (out / "bench-report" / "report.json").write_text("{}")
    (out / "cases" / "tiny-bert-fp32-64" / "why.txt").write_text("inside a case")
    dropped = out / "cases" / "dropped" / "model.tflite"  # a case the earlier export wrote and this one does not
    dropped.parent.mkdir()
    dropped.write_bytes(b"tflite")
    index = json.loads((out / export.INDEX).read_text())
    index["files"]["cases/dropped/model.tflite"] = export.sha256_file(dropped)
    (out / export.INDEX).write_text(json.dumps(index))
    proc = _export_cli(out, csv_data, export_cache, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = ["bench-report/", "cases/tiny-bert-fp32-64/why.txt", "my_notes.txt"]
    assert json.loads(proc.stdout)["kept"] == kept
    assert f"export: kept 3 thing(s) in {out} that no export wrote: {', '.join(kept)}" in proc.stderr.splitlines()
    assert (out / "my_notes.txt").read_text() == "notes" and (out / "bench-report" / "report.json").read_text() == "{}"
    assert (out / "cases" / "tiny-bert-fp32-64" / "why.txt").read_text() == "inside a case"
    assert not dropped.parent.exists()  # what the earlier export wrote is gone, its directory with it
    again = Export.open(out, device="pi4", scale="smoke")  # every listed file replaced and verified
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(again.index["files"]) | {export.INDEX, "my_notes.txt", "bench-report/report.json",
                                                    "cases/tiny-bert-fp32-64/why.txt"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mine.export.lock", "mine"]  # temp and old dirs gone


def test_an_index_that_lists_no_files_licenses_no_deletion(tmp_path):
    """Why: a folder holding only {"format": "edgemodels-export/1"} beside keep.txt counted as an earlier export and
    keep.txt was deleted. An index that does not list what it wrote cannot tell the export's files from the user's."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "index.json").write_text('{"format": "edgemodels-export/1"}')
    (fake / "keep.txt").write_text("keep")
    proc = run_cli_subprocess("export", "--device", "desktop", "--scale", "smoke", str(fake))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"edgemodels: error: {fake}: its index.json lists no files an export wrote")
    assert "move what you want to keep out of" in proc.stderr and "or export to another directory" in proc.stderr
    assert sorted(os.listdir(fake)) == ["index.json", "keep.txt"] and sorted(os.listdir(tmp_path)) == ["fake"]


def test_a_killed_export_leaves_nothing_the_next_one_keeps_and_a_live_one_is_left_alone(tmp_path, exported,
                                                                                          csv_data, export_cache):
    """Why: kill -9 during `export` left a hidden .DIR.export-*.tmp (6 MB) that no later export removed. An export
    holds a lock beside DIR while it writes: a second one is refused while it lives; once it is killed (SIGKILL,
    no clean-up), the next export removes its temp dir, and nothing else beside DIR."""
    out = tmp_path / "exp"
    decoys = [tmp_path / ".exp.export-notes.tmp", tmp_path / ".other.export-0123abcd.tmp", tmp_path / ".exp.mine"]
    for d in decoys:
        d.mkdir()
        (d / "f.txt").write_text("not a leftover of exp's exports")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    live = subprocess.Popen([sys.executable, "-m", "edgemodels", "export", "--device", "desktop", "--scale", "smoke",
                             "--data", csv_data, "--cache", str(export_cache), str(out)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):  # its temp dir, once it holds a reference output (mid-way)
            temps = list(tmp_path.glob(".exp.export-*.tmp/reference/*.npy"))
            if temps or live.poll() is not None:
                break
            time.sleep(0.05)
        assert temps, "the export ended before it could be caught mid-way"
        temp = temps[0].parents[1]
        live.send_signal(signal.SIGSTOP)  # alive, mid-way, holding its lock, for as long as the second one takes
        second = _export_cli(out, csv_data, export_cache, device="desktop")
        assert second.returncode == 2 and f"{out}: another edgemodels export into it is running" in second.stderr
        assert temp.is_dir() and live.poll() is None  # the live export's temp dir untouched
    finally:
        live.kill()  # SIGKILL: no except-block clean-up runs
        live.wait()
    assert temp.is_dir() and not out.exists()
    third = _export_cli(out, csv_data, export_cache, device="desktop")
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"export: removed {temp.name} (" in third.stderr and "left by a killed export" in third.stderr
    assert not temp.exists() and all((d / "f.txt").is_file() for d in decoys)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".exp.export.lock", "exp", *(d.name for d in decoys)])


def _fake_export(d: Path, files: dict[str, bytes]) -> Path:
    """A directory as an export writes it: the files, and an index listing them."""
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    index = {"format": export.FORMAT, "files": {rel: export.sha256_file(d / rel) for rel in files}}
    (d / export.INDEX).write_text(json.dumps(index))
    return d


def test_a_user_file_where_the_new_export_writes_is_refused_and_nothing_changes(tmp_path):
    from edgemodels.build import export_dir

    out = _fake_export(tmp_path / "exp", {"cases/a/model.tflite": b"old"})
    (out / "feeds").mkdir()
    (out / "feeds" / "mine.npz").write_bytes(b"the user's")  # where the new export writes feeds/mine.npz
    (out / "feeds" / "other.txt").write_text("the user's")  # would be kept: it clashes with nothing
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    tmp = _fake_export(tmp_path / ".exp.export-0123abcd.tmp", {"cases/a/model.tflite": b"new",
                                                               "feeds/mine.npz": b"new"})
    with pytest.raises(ExportError, match=f"{out / 'feeds' / 'mine.npz'}: not written by the earlier export, and "
                                          "the new one writes there; move it out"):
        export_dir.place(tmp, out, log=print)
    export_dir.discard(tmp)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_leftovers_holding_the_users_files_are_kept_and_named(tmp_path):
    """An export killed after it moved the user's files into its temp dir (before the swap): that temp dir and a
    replaced dir no index describes are left in place, and said so; what an export wrote in them goes."""
    from edgemodels.build import export_dir

    out = tmp_path / "exp"
    tmp = _fake_export(tmp_path / ".exp.export-0123abcd.tmp", {"cases/a/model.tflite": b"new"})
    (tmp / "my_notes.txt").write_text("notes")
    old = tmp_path / ".exp.old-89abcdef"  # no index (a removal cut short): nothing in it is known to be ours
    (old / "cases").mkdir(parents=True)
    (old / "cases" / "x.bin").write_bytes(b"?")
    said: list[str] = []
    with export_dir.locked(out):
        export_dir.sweep(out, said.append)
    assert (tmp / "my_notes.txt").read_text() == "notes" and not (tmp / "cases").exists()
    assert not (tmp / export.INDEX).exists() and (old / "cases" / "x.bin").exists()
    assert said == [f"export: left {d} in place: it holds 1 thing(s) no export is known to have written ({what}), "
                    f"from an export killed while replacing {out}: move them back into {out}, or remove {d}"
                    for d, what in ((tmp, "my_notes.txt"), (old, "cases/"))]


def test_export_to_a_read_only_directory_is_one_line(tmp_path):
    from smallfs import remount_read_only, tmpfs

    with tmpfs(tmp_path / "ro", "1m") as fs:
        (fs / "exp").mkdir()
        remount_read_only(fs)
        for target in (fs / "exp", fs / "new" / "exp"):
            proc = run_cli_subprocess("export", "--device", "desktop", "--scale", "smoke", str(target))
            assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
            assert "cannot write there (Read-only file system)" in proc.stderr
            assert "export to a directory you can write" in proc.stderr


def test_a_full_disk_during_export_is_one_line_and_leaves_nothing(tmp_path, exported, csv_data, export_cache):
    """The builds are in the cache (another filesystem); the export's copy of them does not fit on this one."""
    from smallfs import tmpfs

    with tmpfs(tmp_path / "small", "3m") as fs:
        proc = _export_cli(fs / "exp", csv_data, export_cache, device="desktop")
        errors = [x for x in proc.stderr.splitlines() if x.startswith("edgemodels") or "Traceback" in x]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
        assert errors[0] == (f"edgemodels: error: {fs}: no space left on device while writing the export; "
                             f"{fs / 'exp'} was not changed and the partial copy was removed: free space there or "
                             "export to a directory on another filesystem")
        assert sorted(os.listdir(fs)) == [".exp.export.lock"]


def test_export_cli_prints_what_it_wrote(tmp_path, csv_data, export_cache, exported):
    out = tmp_path / "cli-export"
    proc = run_cli_subprocess("export", "--device", "pi4", "--scale", "smoke", "--data", csv_data, "--cache",
                              str(export_cache), str(out), "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["device"] == "pi4" and doc["scale"] == "smoke" and len(doc["cases"]) == 4
    assert doc["files"] == 13  # 4 x (model, manifest, reference) + 1 feeds file shared by the 4 cases
    assert Export.open(out, device="pi4", scale="smoke").index["data"]["fingerprint"] == \
        exported.index["data"]["fingerprint"]


@pytest.mark.parametrize("args, message", [
    (("--models", "nope"), "--models: 'nope' not in the smoke scale's matrix; valid: tiny-bert"),
    (("--device", "pi9"), "invalid choice: 'pi9'"),
])
def test_export_cli_bad_input_is_one_line(tmp_path, args, message):
    argv = ["export", "--device", "pi3", "--scale", "smoke", *args, str(tmp_path / "out")]
    proc = run_cli_subprocess(*argv)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-1500:]
    assert not (tmp_path / "out").exists()


def test_export_cli_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = run_cli_subprocess("export", "--device", "pi3", "--scale", "smoke", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "not empty and not an earlier edgemodels export" in proc.stderr


# ------------------------------------------------------------------------------------------ bad input


def test_missing_dir_is_named(tmp_path):
    with pytest.raises(ExportError, match=f"--artifacts {tmp_path / 'nope'}: no such directory"):
        Export.open(tmp_path / "nope", device="pi4", scale="smoke")


def test_an_export_for_another_device_or_scale_names_both(exported):
    with pytest.raises(ExportError) as err:
        Export.open(exported.root, device="pi3", scale="smoke")
    msg = str(err.value)
    assert "exported for --device=desktop --scale=smoke" in msg and "--device=pi3" in msg and "\n" not in msg
    with pytest.raises(ExportError, match="--scale=smoke.*--scale=ci"):
        Export.open(exported.root, device="desktop", scale="ci")


def test_a_tampered_file_is_refused_naming_it(tmp_path, exported):
    copy = tmp_path / "copy"
    shutil.copytree(exported.root, copy)
    feeds = copy / exported.entry("tiny-bert-fp32-64")["feeds"]
    raw = bytearray(feeds.read_bytes())
    raw[-40] ^= 1
    feeds.write_bytes(bytes(raw))
    with pytest.raises(ExportError, match=f"{feeds}: sha256 .* does not match the export index"):
        Export.open(copy, device="desktop", scale="smoke")
    # A model is verified when its case first loads it (BERT-Large's 1.3 GB is not hashed up front).
    shutil.rmtree(copy)
    shutil.copytree(exported.root, copy)
    model = copy / "cases" / "tiny-bert-drq-64" / "model.tflite"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    opened = Export.open(copy, device="desktop", scale="smoke")
    with pytest.raises(ExportError, match=f"{model}: sha256"):
        opened.artifact("tiny-bert-drq-64")


def test_bench_stops_at_once_on_a_bad_export(tmp_path, exported):
    """A usage error (pytest's exit status 4) on one line naming both devices, before anything runs."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench/", "-q", "-p", "no:cacheprovider", "--device=pi4",
                           "--scale=smoke", f"--artifacts={exported.root}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 4, proc.stdout[-1500:] + proc.stderr[-1500:]  # pytest's usage-error status
    assert "exported for --device=desktop --scale=smoke" in proc.stderr and "--device=pi4" in proc.stderr


# ------------------------------------------------------------------------------------------ on the "device"


@pytest.mark.slow
def test_bench_runs_from_the_export_with_no_tensorflow(tmp_path, exported):
    python = device_venv("device,device-bench")
    probe = subprocess.run([str(python), "-c", "import importlib.util as u, json; print(json.dumps("
                            f"[m for m in {list(DEVICE_SIDE_ONLY)!r} if u.find_spec(m)]))"],
                           capture_output=True, text=True, check=True)
    assert json.loads(probe.stdout) == []  # nothing of the build side exists in this venv: none can be imported
    tree = _bench_tree(tmp_path)
    proc = _run_bench(python, tree, "--device=desktop", f"--artifacts={exported.root}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout and "failed" not in proc.stdout
    report = json.loads((tree / "report" / "report.json").read_text())
    assert report["machine"]["artifacts"]["device"] == "desktop"
    rows = report["rows"]
    assert len(rows) == 4
    for r in rows:
        assert r["method"] == "measured" and r["inferences_per_s"] > 0 and r["threads"] >= 1
        assert r["accuracy"] is not None and r["peak_rss_bytes"] > 0 and r["arm_loads"]
        assert r["arm_method"].startswith("measured here") and "exported from" in r["arm_reference"]
        assert r["arm_max_abs_diff"] is not None
    assert not (tree / "no-cache" / "tflite").exists()  # nothing was built there
    assert (tree / "report" / "report.json").exists() and not (tree / "report" / "report.png").exists()


@pytest.mark.slow
def test_pi3_runtime_refuses_drq_as_an_expected_outcome(tmp_path, csv_data, export_cache):
    """tflite-runtime 2.14 (the last a 32-bit Pi 3 installs; here its x86 build) refuses TF 2.21's drq: the
    memory, accuracy, throughput and compat suites xfail it with the runtime's reason instead of failing."""
    python = device_venv("device-pi3,device-bench")
    pi3 = _export("pi3", tmp_path / "pi3", csv_data, export_cache)
    tree = _bench_tree(tmp_path)
    proc = _run_bench(python, tree, "--device=pi3", f"--artifacts={pi3.root}", "-rxs")
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    assert "XFAIL bench/test_memory.py::test_memory_fits[tiny-bert-drq-64]" in out
    assert "tflite-runtime 2.14.0 refuses it (expected: TF 2.21 writes per-channel FULLY_CONNECTED v12" in out
    assert "XFAIL bench/test_compat.py::test_device_runtime[tiny-bert-drq-64]" in out
    rows = {r["mode"] + "-" + r["seq"]: r for r in json.loads((tree / "report" / "report.json").read_text())["rows"]}
    assert rows["drq-compat-64"]["arm_loads"] and rows["drq-64"]["arm_loads"] is False
    assert rows["drq-compat-64"]["runtime"] is None  # off the Pi, tflite-runtime's x86 timing is not projected
    # Off the Pi the outputs are x86 too: x86 against the exported x86 reference could not show ARM drift.
    assert rows["drq-compat-64"]["arm_max_abs_diff"] is None and rows["drq-compat-64"]["arm_reference"] is None
    assert any("not compared on a host of its own arch" in n for n in rows["drq-compat-64"]["notes"])
