"""The one fresh-process runner: every target runs the same worker (edgemodels/run/worker.py) on a model.

A target answers the same questions wherever it is (this host, a Pi's runtime under QEMU, a device over SSH):
does the model load (the runtime's own error if not), its outputs on given feeds, latency samples timed by the
target itself, the peak RSS of that fresh process, and who the target is (board, CPU, cores, arch, runtime,
emulated or not). A figure's label comes from the identity of the target that produced it, never from a guess.

Why a fresh process every time: a process's peak RSS never goes down (an earlier model, or TensorFlow imported
by the bench, would be counted), a runtime that crashes on a model takes only its worker down, and two native
TFLite builds in one process break each other (tflite-runtime 2.14 next to TensorFlow fails with
"vector::reserve"): the device's runtime never shares a process with the build side.

Importing this module needs only the standard library, numpy and psutil, so it never pulls in TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgemodels.errors import EdgeModelsError

WORKER_MODULE = "edgemodels.run.worker"
PIP_DEVICE = ("pip install '.[device]' in a copy of the edgemodels repository, which is not on PyPI  "
              "(32-bit Pi 3: '.[device-pi3]')")
POLL_INTERVAL_S = 0.05
"""How often a local worker's resident memory is read (psutil) while it runs."""


class TargetError(EdgeModelsError):
    """A target could not answer (the worker could not start, or a file could not be staged)."""


class RemoteError(TargetError):
    """A remote device is unreachable, refuses us, lacks a package, or dropped the connection."""


@dataclass(frozen=True)
class Timing:
    """Warm-up calls, then `rounds` timed calls (stop early past max_seconds, never before 3)."""

    rounds: int = 10
    warmup: int = 2
    max_seconds: float | None = None
    seq_len: int | None = None  # for dummy feeds of a dynamic-length model when no feeds are given

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


@dataclass(frozen=True)
class GateRequest:
    """What the throughput gate asks a worker (edgemodels/run/speedgate): time the case against the yardstick file
    at `threads`, with these settings; given a baseline digest, stop once the verdict against it is known."""

    yardstick: Path
    threads: int
    settings: Mapping[str, object]
    baseline: Mapping[str, object] | None = None
    compare: Mapping[str, object] = field(default_factory=dict)
    # A dynamic-length model: time the feeds' median-length tweet, repeated. A pass over tweets of their own lengths
    # resizes the interpreter between calls, and that moved the figure ~8 % from process to process
    # (docs/measurements.md#gate-dynamic), more than a round's spread shows.
    one_length: bool = False

    def request(self) -> dict:
        return {"yardstick": str(self.yardstick), "threads": self.threads, "settings": dict(self.settings),
                "baseline": None if self.baseline is None else dict(self.baseline), "compare": dict(self.compare),
                "one_length": self.one_length}


@dataclass(frozen=True)
class Identity:
    """Who produced a figure. `via` is "here", "qemu" or "ssh user@host:port"."""

    via: str
    hostname: str
    board: str | None  # /proc/device-tree/model, e.g. "Raspberry Pi 4 Model B Rev 1.1"
    cpu_model: str | None
    cpu_part: str | None
    cores: int
    arch: str
    os_bits: int
    python: str
    runtime: str | None
    runtime_version: str | None
    emulated: bool
    emulator: str | None = None
    runtimes: Mapping[str, str] = field(default_factory=dict)
    mem_total_bytes: int | None = None

    @property
    def method(self) -> str:
        """ "emulated" for any figure taken under an emulator (never a device time), else "measured"."""
        return "emulated" if self.emulated else "measured"

    @property
    def machine(self) -> str:
        return self.board or self.cpu_model or self.arch or "unknown machine"

    @property
    def label(self) -> str:
        """e.g. 'measured on Raspberry Pi 4 Model B Rev 1.1 via ssh pi@pi4:22'."""
        if self.emulated:
            return f"emulated ({self.emulator or 'emulator'}, {self.arch}; not a device time){self._where()}"
        if self.via == "here":
            return f"measured here ({self.machine}, {self.arch})"
        return f"measured on {self.machine} via {self.via}"

    def _where(self) -> str:
        return "" if self.via == "here" else f" via {self.via}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["runtimes"] = dict(self.runtimes)
        d["host"] = self.hostname
        d["label"] = self.label
        return d


@dataclass(frozen=True)
class WorkerResult:
    """One worker run's answer. latency_s are the target's own perf_counter timings."""

    loads: bool
    error: str | None
    outputs: np.ndarray | None
    latency_s: tuple[float, ...]
    peak_rss_bytes: int | None
    threads: int
    identity: Identity
    wall_s: float
    stderr: str = ""
    killed_at_bytes: int | None = None  # the worker's RSS when it was stopped for passing its memory limit
    inputs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # input name -> shape (-1: dynamic)
    gate: Mapping[str, object] | None = None  # the throughput gate's digest (speedgate.Digest.to_json), if asked

    @property
    def fixed_length(self) -> int | None:
        """The model's compiled sequence length, None for a dynamic-length one (or when it did not load)."""
        shapes = [s for s in self.inputs.values() if s]
        return None if not shapes or shapes[0][-1] == -1 else int(shapes[0][-1])

    def stats(self):
        """LatencyStats of the timed runs, or None without timing (or under an emulator: not a device time)."""
        from edgemodels.run.stats import LatencyStats

        if not self.latency_s or self.identity.emulated:
            return None
        return LatencyStats.from_samples(self.latency_s)


def _identity(status: Mapping, via: str) -> Identity:
    return Identity(
        via=via, hostname=str(status.get("hostname", "")), board=status.get("board"),
        cpu_model=status.get("cpu_model"), cpu_part=status.get("cpu_part"),
        cores=int(status.get("cpu_count") or 0), arch=str(status.get("arch", "")),
        os_bits=int(status.get("os_bits") or 0), python=str(status.get("python", "")),
        runtime=status.get("runtime"), runtime_version=status.get("runtime_version"),
        emulated=bool(status.get("emulated")), emulator=status.get("emulator"),
        runtimes=dict(status.get("runtimes") or {}),
        mem_total_bytes=status.get("mem_total_bytes"),
    )


def write_feeds(path: Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, str]]:
    """Feeds as an .npz with fixed zip timestamps (same feeds, same bytes: uploads are skipped by sha256)."""
    manifest = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, feed in enumerate(feeds):
            if not isinstance(feed, Mapping) or not feed:
                raise ValueError(f"feeds[{i}] must be a non-empty dict of input name -> array")
            keys = {}
            for j, (name, value) in enumerate(sorted(feed.items())):
                key = f"f{i}_{j}"
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w") as fh:
                    np.lib.format.write_array(fh, np.ascontiguousarray(value), allow_pickle=False)
                keys[name] = key
            manifest.append(keys)
    return manifest


def worker_files() -> dict[str, Path]:
    """{path relative to the package's parent: file} of the worker and every edgemodels module it imports,
    directly or not, package __init__ files included (found with ast, so a module runtime.py starts importing
    travels to the device without anyone updating a list)."""
    import ast

    root = Path(__file__).resolve().parents[2]

    def file_of(module: str) -> Path | None:
        base = root.joinpath(*module.split("."))
        return base / "__init__.py" if base.is_dir() else (base.with_suffix(".py") if base.with_suffix(".py").is_file()
                                                           else None)

    todo, seen = [WORKER_MODULE], {}
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # a module's packages are imported first
            name = ".".join(parts[:i])
            path = file_of(name)
            if path is None or name in seen:
                continue
            seen[name] = path
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                        and node.module.startswith("edgemodels"):
                    todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    todo += [a.name for a in node.names if a.name.startswith("edgemodels")]
    return {p.relative_to(root).as_posix(): p for p in sorted(seen.values())}


class Target:
    """Runs the worker somewhere. Subclasses say how a request reaches it and how files travel."""

    via = "here"

    def run(self, tflite: Path | None, *, runtime: str | None = None, threads: int | None = None,
            feeds: Sequence[Mapping[str, np.ndarray]] = (), outputs: bool = True, timing: Timing | None = None,
            memory_runs: int | None = None, seq_len: int | None = None, memory_limit_bytes: int | None = None,
            gate: GateRequest | None = None, timeout_s: float = 900) -> WorkerResult:
        """Load `tflite` in a fresh worker process and answer what is asked (see the module docstring).

        memory_runs: only load and run that many dummy inferences, so the process's peak RSS is the model's.
        memory_limit_bytes: stop the worker once its RSS passes this (where the target can watch it: this host):
        a budget is enforced, not crashed into. gate: also time the throughput gate's digest (WorkerResult.gate).
        A runtime refusing the model is a result (loads False, error = its message), not an exception.
        """
        if tflite is not None and not Path(tflite).is_file():
            raise TargetError(f"{tflite}: no such model file")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        request: dict = {"runtime": runtime, "num_threads": threads, "outputs": outputs}
        if timing is not None:
            request["timing"] = asdict(timing)
        if memory_runs is not None:
            request["memory"] = {"runs": memory_runs, "seq_len": seq_len}
        if gate is not None:
            request["gate"] = gate.request()
        return self._run(None if tflite is None else Path(tflite).resolve(), request, list(feeds), timeout_s,
                         memory_limit_bytes)

    def identity(self, runtime: str | None = None) -> Identity:
        """Who this target is (no model loaded)."""
        return self.run(None, runtime=runtime, timeout_s=120).identity

    def _run(self, tflite: Path | None, request: dict, feeds: list, timeout_s: float,
             memory_limit_bytes: int | None) -> WorkerResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (SSH); a no-op elsewhere."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _result(status: Mapping, via: str, outputs: np.ndarray | None, wall: float, stderr: str, *,
            polled_rss: int | None = None, killed_at: int | None = None) -> WorkerResult:
    """polled_rss: the most this host saw the worker hold (a memory run here); the worker's own VmHWM can be higher
    between two polls, the polled figure higher where a wrapper (qemu) holds memory too: the larger is the peak."""
    reported = status.get("peak_rss_bytes")
    peak = reported if polled_rss is None else max(polled_rss, int(reported or 0))
    return WorkerResult(
        loads=bool(status.get("loads")), error=status.get("error"), outputs=outputs,
        latency_s=tuple(float(x) for x in status.get("latency_s") or ()),
        peak_rss_bytes=peak, threads=int(status.get("num_threads") or 0),
        identity=_identity(status, via), wall_s=wall, stderr=stderr, killed_at_bytes=killed_at,
        inputs={k: tuple(v) for k, v in (status.get("inputs") or {}).items()}, gate=status.get("gate"),
    )


def _fatal_message(status: Mapping, python: str, where: str) -> str:
    missing = status.get("missing")
    if missing == "numpy":
        return (f"{where}: numpy is not installed for {python}; install it there: "
                f"{python} -m pip install numpy  (or the whole device side: {PIP_DEVICE})")
    if missing:
        pkg = {"tflite-runtime": "tflite-runtime==2.14.0 'numpy<2'"}.get(missing, missing)
        return (f"{where}: TFLite runtime {missing!r} is not installed for {python} ({status['fatal']}); "
                f"install it there: {python} -m pip install {pkg}  (or {PIP_DEVICE})")
    return f"{where}: {status['fatal']}"


# --------------------------------------------------------------------------------------------
# This host


def _tree_rss(proc) -> int:
    """RSS of a process plus its descendants (a wrapper such as qemu or a shell may sit in between)."""
    import psutil

    total = 0
    try:
        total += proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return total


class LocalTarget(Target):
    """This host: the worker in a fresh child of `python` (default: this interpreter), its RSS watched."""

    def __init__(self, python: str | Sequence[str] = sys.executable):
        self.python = [python] if isinstance(python, (str, os.PathLike)) else list(python)

    def _command(self, work: Path) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return [*map(str, self.python), "-m", WORKER_MODULE, str(work / "request.json")], env

    def _check(self, status: Mapping, stderr: str = "") -> None:
        """Hook: QemuTarget checks the emulated CPU."""

    def _watch(self, argv, env, work: Path, timeout_s: float, limit: int | None):
        """Run the worker, polling its RSS; kill it past `limit` or `timeout_s`. (returncode, out, err, peak, killed)."""
        import psutil

        peak, killed = 0, None
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:  # files, not pipes: a chatty runtime cannot fill a pipe buffer and stall the worker
                child = subprocess.Popen(argv, env=env, cwd=work, stdout=out, stderr=err, start_new_session=True)
            except OSError as exc:
                raise TargetError(f"{self.via}: cannot start {argv[0]}: {exc}") from None
            try:
                proc, deadline = psutil.Process(child.pid), time.monotonic() + timeout_s
                while child.poll() is None:
                    rss = _tree_rss(proc)
                    peak = max(peak, rss)
                    if limit is not None and rss > limit:
                        killed = rss
                        break
                    if time.monotonic() > deadline:
                        raise TargetError(f"{self.via}: the worker ran past {timeout_s:.0f} s; raise timeout_s or "
                                          "pass fewer feeds/rounds")
                    time.sleep(POLL_INTERVAL_S)
            finally:
                if child.poll() is None:
                    os.killpg(child.pid, 9)
                child.wait()
            out.seek(0)
            err.seek(0)
            return (child.returncode, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                    peak, killed)

    def _run(self, tflite, request, feeds, timeout_s, memory_limit_bytes):
        with tempfile.TemporaryDirectory(prefix="edgemodels-target-") as td:
            work = Path(td)
            if feeds:
                request["feeds"] = write_feeds(work / "feeds.npz", feeds)
                request["feeds_file"] = str(work / "feeds.npz")
            request.update(model=None if tflite is None else str(tflite), status_file=str(work / "status.json"),
                           outputs_file=str(work / "outputs.npz"))
            (work / "request.json").write_text(json.dumps(request))
            argv, env = self._command(work)
            started = time.monotonic()
            rc, out, err, polled, killed = self._watch(argv, env, work, timeout_s, memory_limit_bytes)
            wall = time.monotonic() - started
            peak = polled if "memory" in request else None
            tail = (out + err)[-2000:].strip()
            status_file = work / "status.json"
            status = json.loads(status_file.read_text()) if status_file.exists() else None
            if killed is not None:
                status = {**(status or {}), "loads": True, "error": (
                    f"exceeded the memory limit: stopped at {killed / 2**20:.0f} MiB RSS (limit "
                    f"{memory_limit_bytes / 2**20:.0f} MiB)")}
                return _result(status, self.via, None, wall, err, polled_rss=polled, killed_at=killed)
            if rc < 0 and request.get("model"):
                status = {**(status or {}), "loads": False, "error": f"worker crashed (signal {-rc}): {tail}"}
                return _result(status, self.via, None, wall, err, polled_rss=peak)
            if status is None:
                raise TargetError(f"{self.via}: the worker failed before answering (exit {rc}): {tail}")
            if status.get("fatal"):
                raise TargetError(_fatal_message(status, " ".join(map(str, self.python)), self.via))
            self._check(status, err)
            outputs = None
            if status.get("n_outputs") and (work / "outputs.npz").exists():
                with np.load(work / "outputs.npz") as z:
                    outputs = np.array(z["outputs"])
            return _result(status, self.via, outputs, wall, err, polled_rss=peak)


def from_options(remote: str | None, *, identity=None, python=None, dir=None, known_hosts=None,
                 connect_timeout_s: float | None = None) -> Target:
    """LocalTarget without a --remote URL, else an SshTarget for it."""
    if not remote:
        return LocalTarget(python or sys.executable)
    from edgemodels.run.ssh import SshTarget
    from edgemodels.run.ssh_connection import RemoteSpec

    return SshTarget(RemoteSpec.parse(remote, identity=identity, python=python, dir=dir, known_hosts=known_hosts,
                                      connect_timeout_s=connect_timeout_s))


def measurement(timed: WorkerResult, memory: WorkerResult | None) -> dict:
    """The `measure --json` object. Under an emulator the method is "emulated" and no timing is given
    as a figure: the emulator's wall time says nothing about the device."""
    ident = timed.identity
    stats = timed.stats()
    out: dict = {
        "method": ident.method,
        "inferences_per_s": None if stats is None else stats.inferences_per_s,
        "p50_ms": None if stats is None else 1e3 * stats.p50_s,
        "p90_ms": None if stats is None else 1e3 * stats.p90_s,
        "p99_ms": None if stats is None else 1e3 * stats.p99_s,
        "rounds": len(timed.latency_s),
        "peak_rss_bytes": None if memory is None else memory.peak_rss_bytes,
        "runtime": ident.runtime,
        "runtime_version": ident.runtime_version,
        "threads": timed.threads,
        "label": ident.label,
        "where": ident.as_dict(),
    }
    if ident.emulated:
        out["note"] = ("timed under an emulator: no device figure; the latency and RSS of the emulator are "
                       "not the device's")
        out["peak_rss_bytes"] = None
        out["emulator_peak_rss_bytes"] = None if memory is None else memory.peak_rss_bytes
    return out
