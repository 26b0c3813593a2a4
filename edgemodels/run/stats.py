"""Latency statistics and labelled projections: what a timed worker run's samples become in the report.

No pytest and no runtime here: the worker (edgemodels/run/worker.py) times, this summarises, and every
off-device figure carries its method ("measured" on the device, "projected" from this host)."""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edgemodels.errors import EdgeModelsError

KILL_FACTOR = 1.5
"""A memory run is stopped once its RSS passes budget x KILL_FACTOR: the budget is enforced, not crashed into."""


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
tflite-runtime 2.14's x86 wheel runs the same file ~40x slower than ai-edge-litert, so a projection from it would
be ~40x too low (docs/measurements.md#x86-tflite-runtime)."""


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
