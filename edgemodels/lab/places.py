"""Boards in a labgrid lab: `--remote labgrid://PLACE` locks a place, finds its board, and times over SSH.

A lab shares boards between people and CI jobs through labgrid (a coordinator, exporters on the hosts the
boards hang off, places that are acquired exclusively). Here a bench session reserves and acquires its place
for the whole session, reads the board's address, port and user from the place's NetworkService resource, and
runs the same worker over the same SSH path as `--remote ssh://` (ssh.SshTarget: content-addressed uploads).
Nothing else times on the board meanwhile: a second session waits for the place (up to --lab-wait) or stops
naming the holder.

Why labgrid's Python client (labgrid.remote.client.ClientSession, the session labgrid's own RemotePlace resource
uses) and not the `labgrid-client` CLI: places and resources arrive as objects (the holder, the matches, the
NetworkService's parameters) instead of text to parse; gRPC status codes tell "already acquired" from "no such
place" from "coordinator down"; one connection serves the whole session (checking before each run that the place
is still ours costs one round trip, not a process start). The CLI stays the tool for people: the docs use it to
set up places and to reclaim one (docs/lab.md). The client session itself is edgemodels.lab.coordinator. labgrid is
the optional `lab` extra: imported only when a labgrid:// URL is used.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from edgemodels.lab.coordinator import INSTALL, SCHEME, Coordinator, LabError, PlaceURL
from edgemodels.run.ssh import SshTarget
from edgemodels.run.ssh_connection import RemoteSpec
from edgemodels.run.targets import Target

DEFAULT_COORDINATOR = "127.0.0.1:20408"
"""labgrid's own default (labgrid-client without -x or LG_COORDINATOR)."""
DEFAULT_WAIT_S = 300.0
POLL_S = 1.0
"""How often a waiting session polls its reservation (labgrid-client reserve --wait polls each second; a
reservation nobody polls expires after 60 s)."""
TAG_PYTHON, TAG_DIR = "edgemodels_python", "edgemodels_dir"
"""Optional place tags: the board's python and upload directory, for a lab whose boards differ."""


def is_lab_url(url: str | None) -> bool:
    return bool(url) and url.strip().startswith(SCHEME)


def coordinator_address(option: str | None = None) -> str:
    """--lg-coordinator, else labgrid's LG_COORDINATOR, else labgrid's default 127.0.0.1:20408."""
    return option or os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


def client_name() -> str:
    """How the coordinator names a lock holder: labgrid's own host/user (LG_HOSTNAME, LG_USERNAME override)."""
    return f"{os.environ.get('LG_HOSTNAME', socket.gethostname())}/{os.environ.get('LG_USERNAME', getpass.getuser())}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds")


@dataclass
class LockRecord:
    """What report.json says about the lock: who held the place, when, and when the board ran our worker."""

    place: str
    coordinator: str
    holder: str
    board: dict
    requested_at: str
    acquired_at: str | None = None
    released_at: str | None = None
    waited_s: float | None = None
    coordinator_acquired_at: str | None = None  # the coordinator's clock: comparable across workstations
    coordinator_released_at: str | None = None
    reservation: str | None = None
    reclaimed_from: str | None = None  # a killed session's lease this session released (see PlaceLock)
    runs: int = 0
    first_run_at: str | None = None
    last_run_end_at: str | None = None
    release_error: str | None = None


class PlaceLock:
    """A place reserved and acquired for one session, released once (on exit, Ctrl-C, SIGTERM or a crash).

    Waiting goes through a labgrid reservation (filter name=PLACE), so waiting sessions are served in order, as
    `labgrid-client reserve --wait` does. A session killed with kill -9 keeps its place (the coordinator does not
    notice clients leaving); each acquisition writes a lease (pid, start time, token) in the user's state dir, and a
    later session on the same host that finds the place held under its own name by a dead pid releases it
    (labgrid's release-from) and says so. Any other holder is only waited for.
    """

    def __init__(self, url: PlaceURL, coordinator: str, *, wait_s: float = DEFAULT_WAIT_S,
                 notify: Callable[[str], None] = lambda line: None, state_dir: Path | None = None):
        if wait_s < 0:
            raise LabError(f"--lab-wait {wait_s:g}: must be >= 0 seconds")
        self.url, self.wait_s, self.notify = url, wait_s, notify
        self.coord = Coordinator(coordinator)
        self.me = client_name()
        self.state_dir = Path(state_dir) if state_dir else _state_dir()
        try:
            self.board = self.coord.board(url)  # unknown place, no NetworkService: stop before waiting
        except BaseException:
            self.coord.close()
            raise
        self.record = LockRecord(url.place, coordinator, self.me, asdict(self.board), _now())
        self._held = False
        self._old_sigterm = None

    # -- acquiring --------------------------------------------------------------------------------
    def acquire(self) -> "PlaceLock":
        import grpc
        from labgrid.remote.common import Reservation, ReservationState

        pb, name = self.coord.pb, self.url.place
        started = time.monotonic()
        deadline = started + self.wait_s
        res = self.coord.call("CreateReservation", pb.CreateReservationRequest(
            filters={"main": pb.Reservation.Filter(filter={"name": name})}, prio=0.0))
        token = self.record.reservation = res.reservation.token
        told = False
        try:
            while True:
                self._reclaim_dead_lease()
                state = Reservation.from_pb2(self.coord.call("PollReservation", pb.PollReservationRequest(
                    token=token)).reservation).state
                if state is ReservationState.allocated:
                    try:
                        with self._lease_lock():
                            self.coord.call("AcquirePlace", pb.AcquirePlaceRequest(placename=name),
                                            expect=(grpc.StatusCode.FAILED_PRECONDITION,))
                            self._held = True
                            self._write_lease(token)
                        break
                    except grpc.aio.AioRpcError:  # taken (same user, by hand) between allocation and acquire
                        pass
                elif state in (ReservationState.expired, ReservationState.invalid):
                    raise LabError(f"labgrid place {name!r}: reservation {token} became {state.name}; re-run")
                if time.monotonic() >= deadline:
                    holder, acquired = self.coord.holder(name) or "another session", self.coord.place(name).acquired
                    gone = (f"if that session is gone: labgrid-client -p {name} release-from {acquired}" if acquired
                            else "it is the next waiting session's turn")
                    raise LabError(f"labgrid place {name!r} is held by {holder}; waited {self.wait_s:g} s "
                                   f"(--lab-wait): raise --lab-wait, or {gone}")
                if not told:
                    told = True
                    self.notify(f"labgrid place {name!r} is held by {self.coord.holder(name) or 'another session'}: "
                                f"waiting up to {self.wait_s:g} s (--lab-wait)")
                time.sleep(max(0.0, min(POLL_S, deadline - time.monotonic())))
        except BaseException:
            self._cancel(token)
            self.coord.close()
            raise
        self.record.acquired_at = _now()
        self.record.waited_s = round(time.monotonic() - started, 3)
        self._trap_sigterm()
        try:
            self.record.coordinator_acquired_at = _iso(self.coord.place(name).changed)
        except BaseException:
            self.release()
            raise
        return self

    def _cancel(self, token: str | None) -> None:
        if token:
            with contextlib.suppress(Exception):
                self.coord.call("CancelReservation", self.coord.pb.CancelReservationRequest(token=token))

    # -- while held ---------------------------------------------------------------------------------
    def check_held(self) -> None:
        """Raise LabError if the place is no longer ours (kicked: `release --kick`, or a coordinator restart)."""
        place = self.coord.place(self.url.place)
        if place.acquired != self.me or not self._held:
            now = place.acquired or "nobody"
            raise LabError(f"labgrid place {self.url.place!r} was taken from this session (held by {now} since "
                           f"{datetime.fromtimestamp(place.changed):%H:%M:%S}); figures after that could be shared "
                           "timings: re-run")

    def ran(self, started: float, ended: float) -> None:
        r = self.record
        r.runs += 1
        r.first_run_at = r.first_run_at or _iso(started)
        r.last_run_end_at = _iso(ended)

    # -- releasing ----------------------------------------------------------------------------------
    def release(self) -> LockRecord:
        """Release (once; later calls return the record): the place, our reservation, the lease."""
        if self.record.released_at is not None or not self._held:
            return self.record
        self._held = False
        self._restore_sigterm()
        pb, name = self.coord.pb, self.url.place
        try:
            # The reservation goes first: the coordinator allocates a freed place to the next waiting reservation
            # when it is released, but not when a reservation is cancelled after the release (it then waits for
            # its next periodic scheduling, ~15 s later).
            self._cancel(self.record.reservation)
            with self._lease_lock():
                self.coord.call("ReleasePlace", pb.ReleasePlaceRequest(placename=name, fromuser=self.me))
                self._remove_lease()
            place = self.coord.place(name)
            if place.acquired is None:  # else the next session's acquire time: leave it out
                self.record.coordinator_released_at = _iso(place.changed)
        except Exception as exc:  # noqa: BLE001 - at session end: say it, never mask the run's own outcome
            self.record.release_error = f"{type(exc).__name__}: {exc}"
            self.notify(f"labgrid place {name!r}: release failed ({exc}); free it: labgrid-client -p {name} "
                        f"release-from {self.me}")
        self.record.released_at = _now()
        self.coord.close()
        return self.record

    def _trap_sigterm(self) -> None:
        """SIGTERM (a CI job cancelled) would end the process without releasing: make it a KeyboardInterrupt, as
        Ctrl-C is, so the session unwinds and releases. Only where nothing else handles SIGTERM."""
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            def interrupt(signum, frame):
                raise KeyboardInterrupt(f"signal {signum}")

            self._old_sigterm = signal.signal(signal.SIGTERM, interrupt)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # -- leases: reclaiming a place from a killed session of this host ------------------------------
    def _lease_path(self) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.record.coordinator}--{self.url.place}")
        return self.state_dir / f"{safe}.json"

    @contextlib.contextmanager
    def _lease_lock(self):
        from filelock import FileLock

        self.state_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self._lease_path()) + ".lock"):
            yield

    def _write_lease(self, token: str) -> None:
        import psutil

        from edgemodels.store.files import atomic_write_text

        atomic_write_text(self._lease_path(), json.dumps({
            "pid": os.getpid(), "started": psutil.Process().create_time(), "holder": self.me, "token": token,
            "place": self.url.place, "coordinator": self.record.coordinator, "acquired_at": _now()}))

    def _remove_lease(self) -> None:
        path = self._lease_path()
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()

    def _reclaim_dead_lease(self) -> None:
        """The place is held under our own name by a session of this host whose process is gone: release it."""
        if self.coord.place(self.url.place).acquired != self.me:
            return
        with self._lease_lock():
            path = self._lease_path()
            try:
                lease = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                return  # no lease of ours: acquired by hand (labgrid-client acquire), never taken from under it
            if lease.get("holder") != self.me or _alive(lease.get("pid"), lease.get("started")):
                return
            if self.coord.place(self.url.place).acquired != self.me:
                return
            self._cancel(lease.get("token"))  # first, as in release()
            pb = self.coord.pb
            self.coord.call("ReleasePlace", pb.ReleasePlaceRequest(placename=self.url.place, fromuser=self.me))
            path.unlink()
        self.record.reclaimed_from = f"pid {lease.get('pid')} (acquired {lease.get('acquired_at')})"
        self.notify(f"labgrid place {self.url.place!r}: released it from a killed session of this host "
                    f"(pid {lease.get('pid')}, acquired {lease.get('acquired_at')})")


def _alive(pid, started) -> bool:
    import psutil

    try:
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError, ValueError):
        return False


def _state_dir() -> Path:
    from platformdirs import user_state_path

    return user_state_path("edgemodels") / "lab"


# --------------------------------------------------------------------------------------------------
# The target: the SSH path to a locked place's board


class LabTarget(SshTarget):
    """An SshTarget whose board comes from a locked labgrid place; each run first checks the place is still ours.

    close() (also called when a link drops) only closes the SSH connection; release() frees the place.
    """

    def __init__(self, lock: PlaceLock, spec: RemoteSpec):
        super().__init__(spec, via=f"labgrid place {lock.url.place} ({lock.board.host})")
        self.lock = lock

    def _run(self, tflite, request, feeds, timeout_s, memory_limit_bytes=None):
        self.lock.check_held()
        started = time.time()
        try:
            return super()._run(tflite, request, feeds, timeout_s, memory_limit_bytes)
        finally:
            self.lock.ran(started, time.time())

    def release(self) -> LockRecord:
        self.close()
        return self.lock.release()

    def __exit__(self, *exc) -> None:
        self.release()


def open_target(url: str, *, coordinator: str | None = None, wait_s: float = DEFAULT_WAIT_S,
                identity=None, python=None, dir=None, known_hosts=None, connect_timeout_s=None,
                notify: Callable[[str], None] = lambda line: None, state_dir: Path | None = None) -> LabTarget:
    """Lock the place of a labgrid:// URL (waiting up to wait_s) and return the SSH target for its board.

    --remote-python/--remote-dir win over the place's edgemodels_python/edgemodels_dir tags."""
    lock = PlaceLock(PlaceURL.parse(url), coordinator_address(coordinator), wait_s=wait_s, notify=notify,
                     state_dir=state_dir)
    lock.acquire()
    b = lock.board
    host = f"[{b.address}]" if ":" in b.address else b.address
    try:
        spec = RemoteSpec.parse(f"ssh://{b.username}@{host}:{b.port}", identity=identity,
                                python=python or b.tags.get(TAG_PYTHON), dir=dir or b.tags.get(TAG_DIR),
                                known_hosts=known_hosts, connect_timeout_s=connect_timeout_s)
    except BaseException:
        lock.release()
        raise
    return LabTarget(lock, spec)


# --------------------------------------------------------------------------------------------------
# What the pytest plugin calls (three places: option check, target, report)


def check_remote(url: str, identity=None, python=None) -> None:
    """Configure-time check of --remote (no network): ssh:// parses, labgrid:// parses and labgrid is installed."""
    if not is_lab_url(url):
        RemoteSpec.parse(url, identity=identity, python=python)
        return
    PlaceURL.parse(url)
    if identity is not None or python is not None:
        RemoteSpec.parse("ssh://check", identity=identity, python=python)  # the key file exists, the python is sane
    import importlib.util

    if importlib.util.find_spec("labgrid") is None:
        raise LabError(f"--remote {url}: labgrid is not installed on this workstation: {INSTALL}")


def remote_target(config) -> Target:
    """The --remote target of a pytest session: an SshTarget for ssh://, a LabTarget (place locked now, released
    when the session ends, however it ends) for labgrid://."""
    from edgemodels.run import targets

    opt = config.getoption
    url = opt("--remote")
    kw = dict(identity=opt("--remote-identity"), python=opt("--remote-python"), dir=opt("--remote-dir"),
              known_hosts=opt("--remote-known-hosts"))
    if not is_lab_url(url):
        return targets.from_options(url, **kw)
    target = open_target(url, coordinator=opt("--lg-coordinator", None), wait_s=opt("--lab-wait", DEFAULT_WAIT_S),
                         notify=_terminal_line(config), **kw)
    config.add_cleanup(target.release)  # Ctrl-C, a crash, pytest.exit: pytest runs cleanups on every way out
    return target


def release_for_report(target) -> dict | None:
    """Release a LabTarget's place now (the session's timing is over) and return the record for report.json's
    machine["lab"]; None for any other target."""
    if not isinstance(target, LabTarget):
        return None
    return asdict(target.release())


def _terminal_line(config) -> Callable[[str], None]:
    def write(line: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"edgemodels: {line}")
        else:
            print(f"edgemodels: {line}", flush=True)

    return write
