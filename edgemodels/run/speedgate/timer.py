"""The adaptive, interleaved timing loop of the throughput gate, and what it records about the machine.

One round = case, yardstick, yardstick, case blocks of inferences, back to back; the round's relative speed is the
yardstick's time over the case's, from the blocks that ran warm (why this order: see time_case's loop). Rounds go
on until the 95 % intervals of the median relative speed and of the median latency are both within `target`, or
until `stop` (the bench's decision against a baseline) says the answer is known, or until the per-case time cap.

Why real-time priority: on a shared machine, other processes take the cores mid-inference, and the delay depends
on each model's graph, so neither the absolute figure nor the ratio to a yardstick holds. Linux's autogroup
scheduling makes `nice` useless against other sessions' processes; SCHED_RR is not subject to it. Where the kernel
refuses (no root or CAP_SYS_NICE, not Linux), the loop runs at normal priority and the digest says so. The
kernel's real-time throttling (sched_rt_runtime_us, 95 % by default) keeps the rest of the machine alive; the loop
rests between rounds so that the throttle never stalls a timed block (RtRest).
Figures behind these choices: docs/measurements.md#gate-trials, made with scripts/speed-study, which reproduces them.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Callable, Iterator, Mapping, Sequence

from edgemodels.run.speedgate import stats

Call = Callable[[], object]


GATE_THREADS = 1
"""The thread count the gate times at, whatever the device's. With as many threads as cores, even at real-time
priority, an interpreter's worker threads sleep and wake between operators and pay the machine's state (another
process on a core, the hypervisor) once per operator; models differ in operator counts, so their speeds relative
to the yardstick moved apart with the load, by more than the gate's threshold on this 2-core VM. At 1 thread they
held. So the gate decides on the 1-thread figure; the device-thread figure is measured and reported beside it."""


@dataclass(frozen=True)
class Settings:
    """How long and how precisely to time one case. See SCALE_SETTINGS for the defaults per bench scale."""

    target: float = 0.02  # stop when both 95 % intervals are within +-2 % of their medians
    cap_s: float = 3.0  # ... or when the case has taken this long (warm-up included), once min_rounds are in
    min_rounds: int = 20  # no decision and no stop on fewer rounds, however slow the case (see stop_reason)
    min_block_s: float = 0.002  # a fast case runs several inferences per round, to keep the timer's share small
    max_yardstick_block_s: float = 0.02  # the yardstick's block matches the case's, up to this (slow cases)
    slow_block_s: float = 0.05  # a case block this long needs no warm-up block after the yardstick's
    warmup_s: float = 0.1  # untimed, at normal priority: caches, lazy allocation, and the load seen before
    realtime: bool = True  # time the rounds at SCHED_RR priority where the kernel allows it
    check_growth: float = 1.2  # look at the figures each time the round count has grown by 20 %

    def __post_init__(self):
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"target must be in (0, 1), got {self.target}")
        if self.cap_s <= 0 or self.min_rounds < 6 or self.check_growth <= 1.0:
            raise ValueError("cap_s must be > 0, min_rounds >= 6 (the least for a 95 % interval), check_growth > 1")


SCALE_SETTINGS: Mapping[str, Settings] = MappingProxyType({
    # smoke: tiny models (< 1 ms), a suite test of the suite: a fraction of a second per case.
    "smoke": Settings(target=0.03, cap_s=1.0),
    # ci: compact cases decide in about half a second; a large one (BERT-Large fp32: ~0.45 s a round at 1 thread
    # here) runs its min_rounds past the cap (~9 s).
    "ci": Settings(target=0.02, cap_s=4.0),
    # paper: published figures, tighter and longer.
    "paper": Settings(target=0.01, cap_s=30.0, min_rounds=30),
})


def settings_for(scale: str) -> Settings:
    try:
        return SCALE_SETTINGS[scale]
    except KeyError:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(SCALE_SETTINGS)}") from None


# --- priority -----------------------------------------------------------------------------------


def _thread_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []


@contextmanager
def realtime_priority(enabled: bool = True) -> Iterator[str]:
    """Every thread of this process (the interpreters' workers included) at SCHED_RR 1, restored on exit.

    Yields "realtime", or "normal (<why>)" where it was not enabled or the kernel refused.
    """
    if not enabled:
        yield "normal (real-time priority disabled)"
        return
    if not hasattr(os, "sched_setscheduler") or not _thread_ids():
        yield "normal (no SCHED_RR on this system)"
        return
    saved: dict[int, tuple[int, os.sched_param]] = {}
    why = ""
    for tid in _thread_ids():
        try:
            saved[tid] = (os.sched_getscheduler(tid), os.sched_getparam(tid))
            os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(1))
        except PermissionError as exc:
            why = f"normal (SCHED_RR refused: {exc.strerror}; needs root or CAP_SYS_NICE)"
            break
        except ProcessLookupError:  # the thread ended meanwhile
            saved.pop(tid, None)
    try:
        yield why or "realtime"
    finally:
        for tid in _thread_ids():  # threads started meanwhile inherited SCHED_RR: back to normal
            policy, param = saved.get(tid, (os.SCHED_OTHER, os.sched_param(0)))
            try:
                os.sched_setscheduler(tid, policy, param)
            except (ProcessLookupError, PermissionError):
                pass


# --- load ---------------------------------------------------------------------------------------


class LoadMonitor:
    """Other processes' CPU: the machine's busy time minus this process's own, from the kernel's counters.

    The counters tick at 100 Hz, so a window shorter than MIN_WINDOW_S is merged into the next one; the mean is
    taken over the whole timing, not over windows.
    """

    MIN_WINDOW_S = 0.25

    def __init__(self):
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process()
        self.cores = psutil.cpu_count() or 1
        self._windows: list[float] = []
        self._total = [0.0, 0.0, 0.0]  # wall, others' CPU, steal (seconds)
        self._last = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        t = self._psutil.cpu_times()
        busy = t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        own = self._proc.cpu_times()
        return time.perf_counter(), busy, getattr(t, "steal", 0.0), own.user + own.system

    def window(self, force: bool = False) -> float | None:
        """Close the current window (if long enough, or forced); returns others' CPU in it (cores), or None."""
        now = self._read()
        wall = now[0] - self._last[0]
        if wall <= 0 or (wall < self.MIN_WINDOW_S and not force):
            return None
        others = min(float(self.cores), max(0.0, (now[1] - self._last[1]) - (now[3] - self._last[3])) / wall)
        self._windows.append(others)
        self._total[0] += wall
        self._total[1] += others * wall
        self._total[2] += max(0.0, now[2] - self._last[2])
        self._last = now
        return others

    def summary(self, before: float | None) -> stats.Load:
        wall = self._total[0]
        return stats.Load(others_cores=round(self._total[1] / wall, 3) if wall else 0.0,
                          others_cores_max=round(max(self._windows, default=0.0), 3),
                          steal_cores=round(self._total[2] / wall, 3) if wall else 0.0, cores=self.cores,
                          windows=len(self._windows), others_cores_before=None if before is None else round(before, 3),
                          load_average_1m=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)


# --- the loop -----------------------------------------------------------------------------------


class RtRest:
    """Sleeps between rounds often enough that the kernel's real-time throttle never stalls a timed block.

    Linux lets real-time threads run sched_rt_runtime_us of every sched_rt_period_us (950 ms of 1 s by default) and
    then stops them until the period ends. A loop that never sleeps hits that stop about once a second, inside
    whichever block is running: harmless for a few-ms round (one outlier), but BERT-Large fp32's 0.4 s rounds were
    ~15 % slower one round in three, and its interval could not get narrow (docs/measurements.md#gate-min-rounds).
    Resting `every_s` of running for twice the share the kernel keeps back holds the loop well under the budget.
    """

    def __init__(self, active: bool, every_s: float = 0.5):
        self.every_s = every_s
        self.rest_s = 0.0
        if active:
            runtime, period = _rt_budget()
            if runtime is not None and period and 0 < runtime < period:
                self.rest_s = 2.0 * every_s * (period - runtime) / runtime
        self._since = time.perf_counter()

    def between_rounds(self) -> None:
        if self.rest_s and time.perf_counter() - self._since >= self.every_s:
            time.sleep(self.rest_s)
            self._since = time.perf_counter()


def _rt_budget() -> tuple[int | None, int | None]:
    """(sched_rt_runtime_us, sched_rt_period_us), or None where unreadable; runtime -1 means no throttle."""
    values = []
    for name in ("sched_rt_runtime_us", "sched_rt_period_us"):
        try:
            with open(f"/proc/sys/kernel/{name}", encoding="ascii") as f:
                values.append(int(f.read()))
        except (OSError, ValueError):
            values.append(None)
    return values[0], values[1]


def _timed(fn: Call, k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    return (time.perf_counter() - t0) / k


def _warm(fn: Call, seconds: float) -> list[float]:
    """Untimed-for-the-figures calls for `seconds` (at least one: a slow case's one call is warm-up enough);
    their times size the blocks."""
    times: list[float] = []
    start = time.perf_counter()
    while not times or time.perf_counter() - start < seconds:
        times.append(_timed(fn, 1))
    return times


def time_case(case: Call, yardstick: Call, *, yardstick_sha256: str, threads: int | None,
              settings: Settings = Settings(), stop: Callable[[stats.Digest], bool] | None = None,
              load: bool = True, on_round: Callable[[float, float], None] | None = None) -> stats.Digest:
    """Time one case interleaved with the yardstick; returns the digest that report.json keeps.

    case, yardstick: zero-argument callables running one inference each, with interpreters loaded at the same
    thread count (`threads`, recorded). stop: called on the digest at each look once min_rounds are in; True ends
    the timing ("decided"), e.g. `lambda d: stats.compare(d, baseline).conclusive`. Without stop, timing ends when
    both intervals are within settings.target ("target"). Either way it ends at settings.cap_s ("cap"), but
    never before settings.min_rounds.
    on_round(case_s, yardstick_s): sees each round's per-inference times (scripts/speed-study keeps them).
    """
    started = time.perf_counter()
    monitor = LoadMonitor() if load else None
    case_warm = _warm(case, settings.warmup_s / 2)
    yard_warm = _warm(yardstick, settings.warmup_s / 2)
    before = monitor.window(force=True) if monitor else None
    if monitor:
        monitor = LoadMonitor()  # the timed rounds' own windows, apart from the warm-up's
    t_case = sorted(case_warm)[len(case_warm) // 2]
    t_yard = sorted(yard_warm)[len(yard_warm) // 2]
    k_case = max(1, math.ceil(settings.min_block_s / max(t_case, 1e-9)))
    yard_block = min(k_case * t_case, max(settings.max_yardstick_block_s, t_yard))
    k_yard = max(1, round(yard_block / max(t_yard, 1e-9)))
    switch_warmup = k_case * t_case < settings.slow_block_s
    cs: list[float] = []
    ys: list[float] = []
    rel: list[float] = []
    look = settings.min_rounds
    stopped = None
    with realtime_priority(settings.realtime) as priority:
        rest = RtRest(priority == "realtime")
        while True:
            # case, yardstick, yardstick, case: the figures come from the blocks that ran right after a block of
            # the same model (c1 after the previous round's c2, y2 after y1). A block right after the other model
            # runs slower (its worker threads asleep, the other's still spinning, its weights out of cache), by an
            # amount that varied from process to process here; those blocks only warm up. A slow case (a block of
            # tens of ms) skips c2: the switch is then a negligible share of its time.
            c1 = _timed(case, k_case)
            _timed(yardstick, k_yard)
            y2 = _timed(yardstick, k_yard)
            rest.between_rounds()  # before the case's warm-up block, so the next timed one still runs warm
            if switch_warmup:
                _timed(case, k_case)
            cs.append(c1)
            ys.append(y2)
            rel.append(y2 / c1)
            if on_round is not None:
                on_round(c1, y2)
            n = len(cs)
            over = time.perf_counter() - started >= settings.cap_s
            if n >= look or (over and n >= settings.min_rounds):
                look = next_look(n, settings)
                if monitor:
                    monitor.window()
                d = _digest(cs, ys, rel, started, threads, "", yardstick_sha256, priority, monitor, before)
                stopped = stop_reason(d, settings, stop, over)
                if stopped:
                    break
    if monitor:
        monitor.window(force=True)
    return _digest(cs, ys, rel, started, threads, stopped or "cap", yardstick_sha256, priority, monitor, before)


def next_look(n: int, settings: Settings) -> int:
    """The round count at which the figures are next looked at: geometric, so a long run has few looks."""
    return max(n + 1, math.ceil(n * settings.check_growth))


def stop_reason(d: stats.Digest, settings: Settings, stop: Callable[[stats.Digest], bool] | None,
                over_cap: bool) -> str | None:
    """Why timing ends after this look ("decided", "target", "cap"), or None to go on. Pure: tests simulate it.

    Never before min_rounds, not even past the cap: a slow case stopped by the cap at 8 rounds had a 95 % interval
    of its median as wide as its extreme rounds, and a CI run's unchanged BERT-Large fp32 came out inconclusive
    (docs/measurements.md#gate-min-rounds).
    """
    if d.rounds < settings.min_rounds:
        return None
    if stop is not None and stop(d):
        return "decided"
    if stop is None and max(d.relative.half_width, d.case_ms.half_width) <= settings.target:
        return "target"
    return "cap" if over_cap else None


def _digest(cs: Sequence[float], ys: Sequence[float], rel: Sequence[float], started: float, threads: int | None,
            stopped: str, sha: str, priority: str, monitor: LoadMonitor | None, before: float | None) -> stats.Digest:
    d = stats.digest(cs, ys, rel, seconds=time.perf_counter() - started, threads=threads, stopped=stopped,
                     yardstick_sha256=sha, load=monitor.summary(before) if monitor else None)
    return replace(d, priority=priority)
