"""Measurement helpers: latency statistics, labelled projections, and peak memory of a fresh process.

No pytest dependency: the bench suite wraps these. Memory is measured in a FRESH child process
(``python -m edgemodels.measure --child ...``) because a process's peak RSS never goes down: a
model loaded earlier in the same process, or TensorFlow imported by a test, would be counted.
The child loads the model with ``edgemodels.runtime`` only (numpy + a TFLite runtime), so the
figure is what the model costs on a device, not what the workstation tooling costs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from edgemodels.errors import EdgeModelsError

MiB = 1024**2

KILL_FACTOR = 1.5
"""The child is killed once its polled RSS passes budget x KILL_FACTOR: enforcement, not a crash."""

POLL_INTERVAL_S = 0.05

_CHILD_ERROR = "edgemodels.measure child error:"


# --- latency ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    n: int
    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    min_s: float
    max_s: float

    @property
    def inferences_per_s(self) -> float:
        """Throughput of one caller issuing calls back to back: 1 / mean latency."""
        return math.inf if self.mean_s <= 0 else 1.0 / self.mean_s

    @classmethod
    def from_samples(cls, samples_s: Sequence[float]) -> "LatencyStats":
        """Summarise per-call latencies in seconds (percentiles by numpy's linear interpolation)."""
        arr = np.asarray(list(samples_s), dtype=np.float64)
        if arr.size == 0:
            raise ValueError("no latency samples: time at least one call")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"latency samples must be finite and >= 0 seconds, got {arr.tolist()[:10]}")
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        return cls(
            n=int(arr.size),
            mean_s=float(arr.mean()),
            p50_s=float(p50),
            p90_s=float(p90),
            p99_s=float(p99),
            min_s=float(arr.min()),
            max_s=float(arr.max()),
        )


MIN_ROUNDS_WHEN_CAPPED = 3


def time_calls(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    rounds: int = 10,
    max_seconds: float | None = None,
) -> LatencyStats:
    """Time `rounds` calls of fn after `warmup` untimed ones.

    With max_seconds, stop once the timed rounds have taken that long, but never before
    3 rounds (or `rounds`, if fewer): a slow model on a slow device still gets a p50.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
    for _ in range(warmup):
        fn()
    floor = min(MIN_ROUNDS_WHEN_CAPPED, rounds)
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        samples.append(t1 - t0)
        if max_seconds is not None and len(samples) >= floor and t1 - started >= max_seconds:
            break
    return LatencyStats.from_samples(samples)


# --- projection ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    value: float  # inferences per second on the device
    method: str  # "measured" | "projected"
    factor: float | None
    basis: str

    @property
    def label(self) -> str:
        """e.g. '3.2 inferences/s (projected)': every off-device figure carries its method."""
        return f"{self.value:.3g} inferences/s ({self.method})"


PROJECTION_RUNTIMES: tuple[str, ...] = ("ai-edge-litert", "tensorflow")
"""Host runtimes a speed factor may be applied to: the XNNPACK-backed x86 kernels of a desktop run.
tflite-runtime 2.14's x86 wheel runs MobileBERT drq-compat 40-50x slower than ai-edge-litert on the same
file (390-530 ms vs 10 ms), so a projection from it would be ~40x too low."""


class ProjectionRefused(EdgeModelsError, ValueError):
    """The host figure cannot be projected (wrong runtime); the message says why and what to run instead."""


def project(host_ips: float, placement, *, host_threads: int | None = None, runtime: str | None = None) -> Projection:
    """Device throughput from a host measurement: as is when measured on the device, else x speed factor.

    `placement` is a devices.Placement. host_threads is the thread count the host was measured at
    (default: the profile's threads on this host). runtime: the host runtime that was timed; a projection
    from one the factor is not valid for raises ProjectionRefused.
    """
    if not (isinstance(host_ips, (int, float)) and math.isfinite(host_ips) and host_ips >= 0):
        raise ValueError(f"host_ips must be a finite number >= 0 inferences/s, got {host_ips!r}")
    profile = placement.profile
    if placement.method == "measured":
        return Projection(
            value=float(host_ips),
            method="measured",
            factor=None,
            basis=f"measured on {profile.name} itself ({platform.machine() or 'unknown arch'})",
        )
    if placement.method != "projected":
        raise ValueError(f"placement.method must be 'measured' or 'projected', got {placement.method!r}")
    if runtime is not None and runtime not in PROJECTION_RUNTIMES:
        raise ProjectionRefused(
            f"not projected: the {profile.name} speed factor holds for a host timed with "
            f"{' or '.join(PROJECTION_RUNTIMES)}, and this host ran {runtime} (its x86 build is tens of times "
            f"slower); time with ai-edge-litert (--runtime ai-edge-litert) or measure on the device (--remote, or "
            f"`pytest bench/ --artifacts DIR` there)")
    factor = profile.speed_factor
    if factor is None:
        raise ValueError(
            f"{profile.name} has no speed factor, so it cannot be projected from this host; "
            f"run it on the {profile.name} machine itself"
        )
    threads = profile.threads() if host_threads is None else host_threads
    note = ""
    if threads < profile.cpu.cores:
        note = (
            f"; the host ran {threads} of the device's {profile.cpu.cores} threads, so this undercounts "
            "the device's parallelism"
        )
    return Projection(
        value=float(host_ips) * factor,
        method="projected",
        factor=factor,
        basis=(
            f"host {platform.machine() or 'unknown arch'} at {threads} thread(s) x speed factor {factor:g} "
            f"({profile.name}, relative to a reference x86-64 desktop core){note}"
        ),
    )


# --- memory -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryResult:
    peak_rss_bytes: int
    budget_bytes: int
    fits: bool
    returncode: int
    error: str | None
    runtime: str
    runtime_version: str

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / MiB


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _child_env() -> dict[str, str]:
    """Make `edgemodels` importable in the child even when it is not installed (source checkout)."""
    env = dict(os.environ)
    root = _package_root()
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


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


def _parse_child_json(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and "peak_rss_bytes" in data:
                return data
    return None


def _error_text(stderr: str, limit: int = 1500) -> str:
    """The child's own error line when it wrote one, else the tail of its stderr."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(_CHILD_ERROR):
            return line[len(_CHILD_ERROR):].strip()
    tail = "\n".join(x for x in stderr.splitlines() if x.strip())[-limit:]
    return tail or "no error output"


def peak_rss_of_run(
    tflite_path: Path,
    *,
    runtime: str | None,
    threads: int,
    seq_len: int | None,
    budget_bytes: int,
    runs: int = 3,
    timeout_s: float = 600,
    python: str | Sequence[str] = sys.executable,
) -> MemoryResult:
    """Peak RSS of a fresh process that loads `tflite_path` and runs `runs` inferences on dummy inputs.

    The peak is max(RSS polled by this process every ~50 ms, the child's own high-water mark). If the polled
    RSS passes budget x 1.5 the child is killed and the result says so (fits=False): the budget is
    enforced, not crashed into. A child that fails (bad file, missing runtime, MemoryError) gives a
    result with its error text, never an exception. `python` may be a command list (e.g. an emulator
    wrapper); then the polled RSS includes the wrapper's own memory.
    """
    import psutil

    if budget_bytes <= 0:
        raise ValueError(f"budget_bytes must be > 0, got {budget_bytes}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    cmd = [python] if isinstance(python, (str, os.PathLike)) else list(python)
    cmd += ["-m", "edgemodels.measure", "--child", str(Path(tflite_path).resolve()), "--threads", str(threads), "--runs", str(runs)]
    if runtime is not None:
        cmd += ["--runtime", runtime]
    if seq_len is not None:
        cmd += ["--seq-len", str(seq_len)]

    kill_at = budget_bytes * KILL_FACTOR
    polled_peak = 0
    killed_at: int | None = None
    timed_out = False
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # Files, not pipes: a chatty runtime cannot fill a pipe buffer and stall the child.
        child = subprocess.Popen(cmd, stdout=out, stderr=err, env=_child_env())
        try:
            proc = psutil.Process(child.pid)
            deadline = time.monotonic() + timeout_s
            while child.poll() is None:
                rss = _tree_rss(proc)
                polled_peak = max(polled_peak, rss)
                if rss > kill_at:
                    killed_at = rss
                    child.kill()
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    child.kill()
                    break
                time.sleep(POLL_INTERVAL_S)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")

    report = _parse_child_json(stdout)
    reported = int(report["peak_rss_bytes"]) if report else 0
    peak = max(polled_peak, reported)
    rt_name = str(report.get("runtime", "")) if report else (runtime or "")
    rt_version = str(report.get("runtime_version", "")) if report else ""
    rc = child.returncode

    error: str | None = None
    if killed_at is not None:
        error = (
            f"exceeded budget; killed at {killed_at / MiB:.0f} MB "
            f"(budget {budget_bytes / MiB:.0f} MB, kill threshold {kill_at / MiB:.0f} MB)"
        )
    elif timed_out:
        error = f"timed out after {timeout_s:g} s; killed at {polled_peak / MiB:.0f} MB RSS"
    elif rc != 0:
        if rc < 0:
            error = f"child killed by signal {-rc} (out of memory?): {_error_text(stderr)}"
        else:
            error = f"child exited with status {rc}: {_error_text(stderr)}"
    elif report is None:
        error = f"child printed no result line: {_error_text(stderr)}"
    fits = error is None and peak <= budget_bytes
    return MemoryResult(
        peak_rss_bytes=int(peak),
        budget_bytes=int(budget_bytes),
        fits=fits,
        returncode=int(rc),
        error=error,
        runtime=rt_name,
        runtime_version=rt_version,
    )


# --- the child ----------------------------------------------------------------------------------


def _self_peak_rss() -> int:
    """This process's peak RSS in bytes.

    Linux: VmHWM from /proc/self/status, the high-water mark of this process's own address space.
    ru_maxrss is not used there because the kernel carries the pre-exec high-water mark over exec,
    so a child started by a parent holding TensorFlow would report the parent's ~600 MB.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # macOS: bytes; Linux: KiB


def _load(path: str, runtime: str | None, threads: int):
    """Load without probing runtimes we will not use: probing may import TensorFlow and inflate RSS."""
    from edgemodels import runtime as rt

    if runtime is not None:
        return rt.load(path, runtime=runtime, num_threads=threads)
    names = getattr(rt, "RUNTIMES", None)
    unavailable = getattr(rt, "RuntimeUnavailable", None)
    if not names or unavailable is None:
        return rt.load(path, runtime=None, num_threads=threads)
    missing = []
    for name in names:
        try:
            return rt.load(path, runtime=name, num_threads=threads)
        except unavailable as exc:
            missing.append(str(exc))
    raise unavailable("no TFLite runtime installed: " + "; ".join(missing))


def _dummy_feeds(model, seq_len: int | None) -> tuple[dict[str, np.ndarray], int]:
    """All-ones ids and mask: the model's fixed length, or seq_len (default 128) for a dynamic one."""
    feeds: dict[str, np.ndarray] = {}
    length = 0
    for name in model.input_names:
        shape = tuple(model.input_shape(name))
        if not shape:
            feeds[name] = np.ones((), dtype=np.int32)
            continue
        last = shape[-1] if shape[-1] != -1 else (seq_len or 128)
        length = max(length, last)
        full = tuple(1 if d == -1 else d for d in shape[:-1]) + (last,)
        feeds[name] = np.ones(full, dtype=np.int32)
    return feeds, length


def _child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgemodels.measure --child")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runtime", default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        model = _load(args.model, args.runtime, args.threads)
        feeds, length = _dummy_feeds(model, args.seq_len)
        for _ in range(args.runs):
            model.run(feeds)
    except Exception as exc:  # noqa: BLE001 - report any failure, MemoryError included, as text
        print(f"{_CHILD_ERROR} {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    result = {
        "peak_rss_bytes": _self_peak_rss(),
        "runtime": model.runtime_name,
        "runtime_version": model.runtime_version,
        "runs": args.runs,
        "seq_len": length,
        "threads": args.threads,
    }
    print(json.dumps(result), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "--child":
        print("usage: python -m edgemodels.measure --child MODEL.tflite [--threads N] [--runs N] "
              "[--runtime NAME] [--seq-len N]  (internal: used by peak_rss_of_run)", file=sys.stderr)
        return 2
    return _child_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
