"""Shared fixtures for tests/: a hermetic environment, a tiny synthetic data set, tiny-bert artifacts.

Why the environment is set here, at import: TensorFlow reads TF_CPP_MIN_LOG_LEVEL and huggingface_hub
reads HF_HUB_OFFLINE when they are first imported, and conftest is imported before any test module.
Each test gets its own EDGEMODELS_CACHE so no test reads or writes the user's cache; the expensive
tiny-bert builds share one session cache instead (built lazily, each at most once per session).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv  # noqa: E402
import hashlib  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SESSION_CACHE = os.environ.get("EDGEMODELS_CACHE")
"""The cache the session was started with (in CI, the one .ci/run's bench passes share), read at import: before any
test's private one (_hermetic_env)."""
TINY_SEQ = 16
"""Sequence length of the fixed-length tiny-bert artifacts (short: conversion and inference stay fast)."""

_WORDS = {
    "negative": ("terrible", "awful", "loss", "crash", "bad", "angry", "worst", "decline"),
    "neutral": ("report", "meeting", "today", "schedule", "update", "notice", "agenda", "memo"),
    "positive": ("great", "gain", "happy", "excellent", "profit", "love", "best", "growth"),
}


def write_tiny_csv(path: Path, n: int = 60, seed: int = 0) -> Path:
    """`n` synthetic texts (3-12 class words + a row id), labels cycling negative/neutral/positive."""
    rng = random.Random(seed)
    labels = tuple(_WORDS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(n):
            label = labels[i % 3]
            words = [rng.choice(_WORDS[label]) for _ in range(rng.randint(3, 12))]
            w.writerow([" ".join(words) + f" item {i}", label])
    return path


def run_cli_subprocess(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m edgemodels ARGS` in a fresh interpreter (same venv, repo on the path)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "edgemodels", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)


def missing(why: str) -> None:
    """Skip where a developer lacks a piece; in CI (CI set, as .ci/run does) it is a failure: setup installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"CI: {why}")
    pytest.skip(why)


BALLAST_PY = """\
\"\"\"Run `-m MODULE ARGS` as python would, holding argv[1] MiB the whole time (written, so resident).\"\"\"
import runpy, sys

ballast = b"\\x01" * (int(sys.argv[1]) * 2**20)  # bytes repetition writes every page
if sys.argv[2] != "-m":
    sys.exit(f"ballast: expected -m MODULE ARGS after the size, got {sys.argv[2:]}")
sys.argv = [sys.argv[3], *sys.argv[4:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def ballast_python(directory: Path, mib: int, python: str = sys.executable) -> list[str]:
    """A `python` command list (for LocalTarget, a remote's wrapper script) whose process
    holds `mib` MiB more than plain `python -m ...` would: the independent, known figure a peak RSS must grow by."""
    script = directory / "ballast.py"
    script.write_text(BALLAST_PY)
    return [python, str(script), str(mib)]


def device_venv(extras: str, *, name: str | None = None, key_extras: bool = True) -> Path:
    """The python of a venv with only `.[extras]` installed (the device side: no TensorFlow), built once per
    machine and kept under the temp dir as NAME-KEY, KEY hashed from pyproject.toml and this Python's version
    (and the extras): pip takes 20-60 s, and a changed pyproject.toml gets a fresh venv.

    name: the directory prefix (default edgemodels-test-venv-EXTRAS). tests/test_remote.py's `.[device]` venv keeps
    its own older name and a key without the extras (key_extras=False), so venvs already built are reused.
    Concurrent sessions build it once (a file lock); the marker file is written last, so an interrupted build
    is redone, never used."""
    salt = extras.encode() if key_extras else b""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + sys.version.encode() + salt).hexdigest()[:12]
    final = Path(tempfile.gettempdir()) / f"{name or 'edgemodels-test-venv-' + extras.replace(',', '+')}-{key}"
    python, done = final / "bin" / "python", final / ".edgemodels-complete"
    if done.exists():
        return python
    from filelock import FileLock

    with FileLock(str(final) + ".lock"):
        if done.exists():
            return python
        shutil.rmtree(final, ignore_errors=True)  # an interrupted build of ours (the marker comes last)
        subprocess.run([sys.executable, "-m", "venv", str(final)], check=True)  # venvs are not relocatable
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              f"{REPO}[{extras}]"], capture_output=True, text=True, timeout=900)
        if pip.returncode != 0:
            shutil.rmtree(final, ignore_errors=True)
            missing(f"cannot pip install .[{extras}] into a fresh venv (offline?): {pip.stderr[-300:]}")
        done.write_text(f"pip install .[{extras}]\n")
    return python


@pytest.fixture(scope="session")
def arm_cache() -> Path:
    """Where the emulated ARM user-lands are kept: $EDGEMODELS_TEST_ARM_CACHE, else the session's EDGEMODELS_CACHE (in
    CI the cache the bench passes beside this session build them into: each is built once, by whoever comes first,
    under the cache's lock), else one per machine under the temp dir (as device_venv): a build downloads from the
    Debian mirror and PyPI for about a minute a target, and rootfs names are hashed from their recipe."""
    from edgemodels.run import qemu

    ok, why = qemu.availability()
    if not ok:
        missing(f"ARM emulation unavailable: {why}")
    named = os.environ.get("EDGEMODELS_TEST_ARM_CACHE") or SESSION_CACHE
    return Path(named) if named else Path(tempfile.gettempdir()) / "edgemodels-test-arm-cache"


@pytest.fixture(scope="session")
def rootfs(arm_cache):
    """device -> its emulated user-land (edgemodels.run.rootfs.ensure_rootfs), built if absent, looked up at most once
    a session. A failed build (say, the mirror unreachable) fails the test that needs it: never a skip."""
    from edgemodels import devices
    from edgemodels.run import rootfs as rfs

    built: dict[str, Path] = {}

    def get(device: str) -> Path:
        if device not in built:
            built[device] = rfs.ensure_rootfs(devices.get(device), arm_cache)
        return built[device]

    return get


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch, tmp_path):
    """A private artifact cache and results history per test, and no user-named weights directory leaking in."""
    monkeypatch.setenv("EDGEMODELS_CACHE", str(tmp_path / "edgemodels-cache"))
    monkeypatch.setenv("EDGEMODELS_HISTORY", str(tmp_path / "edgemodels-history.sqlite"))
    monkeypatch.delenv("EDGEMODELS_WEIGHTS_DIR", raising=False)


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    """60 rows, 20 per label: train 54 / validation 6 at the default val_fraction 0.1."""
    return write_tiny_csv(tmp_path_factory.mktemp("data") / "tiny.csv")


class TinyBuilds:
    """tiny-bert artifacts in one session cache; `artifact()` builds each (quant, seq) at most once."""

    def __init__(self, csv_path: Path, root: Path):
        from edgemodels.store.cache import ArtifactCache

        self.csv = csv_path
        self.data = f"csv:{csv_path}"
        self.store = ArtifactCache(root)
        self._built: dict[tuple[str, int | None], Any] = {}

    def request(self, quant: str, seq: int | None = TINY_SEQ, **kw):
        from edgemodels.build.pipeline import BuildRequest

        return BuildRequest("tiny-bert", quant=quant, data=self.data, seq=seq, **kw)

    def artifact(self, quant: str, seq: int | None = TINY_SEQ):
        """The Artifact returned by the first (building) call for this quant/seq in the session."""
        from edgemodels.build import pipeline

        if (quant, seq) not in self._built:
            self._built[(quant, seq)] = pipeline.build(self.request(quant, seq), self.store)
        return self._built[(quant, seq)]


@pytest.fixture(scope="session")
def tiny(tiny_csv, tmp_path_factory) -> TinyBuilds:
    pytest.importorskip("tensorflow")
    return TinyBuilds(tiny_csv, tmp_path_factory.mktemp("tiny-cache"))


@pytest.fixture(scope="session")
def tiny_tf_model(tiny):
    """The Keras model every tiny-bert .tflite was converted from (the reference for tolerances)."""
    from transformers import TFAutoModelForSequenceClassification

    trained_entry = Path(tiny.artifact("fp32").manifest["trained_entry"])
    return TFAutoModelForSequenceClassification.from_pretrained(str(trained_entry / "weights"))
