"""labgrid places: a REAL labgrid-coordinator and labgrid-exporter on 127.0.0.1 (tests/labgrid_lab.py), exporting
NetworkService resources that point at loopback sshd instances (tests/test_remote.py's start_sshd) whose python is a
device-only venv (`.[device]`, no TensorFlow, no labgrid).

Places: loop-a and loop-b (good boards), loop-vanish (its python kills its sshd at the third worker run: a board
that drops mid-run), loop-bare (exports a power port, no NetworkService). All sshd accept one client key.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import device_venv
from edgemodels.errors import EdgeModelsError

if importlib.util.find_spec("labgrid") is None:  # as conftest.missing(): a skip here, a failure in CI
    why = "needs labgrid on the workstation: pip install '.[lab]' (scripts/setup installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"CI: {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)

from labgrid_lab import Board, free_port, start_lab  # noqa: E402
from test_remote import _script, start_sshd, stop_sshd  # noqa: E402

from edgemodels.lab import matrix as labrun  # noqa: E402
from edgemodels.lab import places as lab  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH = ["--scale=smoke", "--device=native", "--modes=drq", "-q", "-p", "no:cacheprovider"]
TIMED = ["-k", "throughput or memory or compat"]


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def device_python() -> str:
    return str(device_venv("device", name="edgemodels-test-device-venv", key_extras=False))


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory, device_python):
    """The lab: three sshd "boards" (one key for all), a coordinator, an exporter, four places."""
    root = tmp_path_factory.mktemp("lab")
    servers = {n: start_sshd(root / f"sshd-{n}") for n in ("a", "b", "vanish")}
    key = servers["a"].client_key
    for s in servers.values():
        (s.dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    vanish = servers["vanish"]
    killer = _script(root / "python-that-vanishes", f"""
case "$*" in *edgemodels.run.worker*)
  n=$(( $(cat {root}/worker-runs 2>/dev/null || echo 0) + 1 )); echo $n > {root}/worker-runs
  if [ "$n" -ge 3 ]; then  # the third worker run: the board goes away (its sshd and this connection)
    kill -9 {vanish.proc.pid}
    p=$$
    while [ "$p" -gt 1 ]; do
      p=$(awk '{{print $4}}' /proc/$p/stat)
      case "$(cat /proc/$p/comm)" in sshd*) kill -9 "$p";; esac
    done
    exit 1
  fi;;
esac
exec {device_python} "$@"
""")
    tags = lambda py, d: {lab.TAG_PYTHON: py, lab.TAG_DIR: str(root / d)}  # noqa: E731
    boards = [Board("loop-a", servers["a"].port, tags=tags(device_python, "remote-a")),
              Board("loop-b", servers["b"].port, tags=tags(device_python, "remote-b")),
              Board("loop-vanish", vanish.port, tags=tags(killer, "remote-v")),
              Board("loop-bare", 0, network_service=False)]
    env = start_lab(root / "labgrid", boards)
    env.key, env.known_hosts, env.servers = key, root / "known_hosts", servers
    env.state = root / "state"
    yield env
    env.stop()
    for s in servers.values():
        stop_sshd(s)


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lab-bench-cache")


def _lock(lab_env, place: str, wait_s: float = 0.0, notify=lambda line: None) -> lab.PlaceLock:
    return lab.PlaceLock(lab.PlaceURL(place), lab_env.address, wait_s=wait_s, notify=notify, state_dir=lab_env.state)


def _bench(lab_env, cache: Path, out: Path, *args: str, background: bool = False):
    cmd = [sys.executable, "-m", "pytest", str(REPO / "bench"), *BENCH, f"--edge-cache={cache}",
           f"--report-dir={out}", "--lg-coordinator", lab_env.address, "--remote-identity", str(lab_env.key),
           "--remote-known-hosts", str(lab_env.known_hosts), *args]
    env = {**os.environ, "XDG_STATE_HOME": str(lab_env.state.parent / "xdg-state")}  # leases: not the user's
    if background:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


def _wait_holder(lab_env, place: str, want, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while lab_env.holder(place) != want:
        assert time.monotonic() < deadline, f"{place} never became held by {want}"
        time.sleep(0.5)


# ------------------------------------------------------------------------------------ pure units


@pytest.mark.parametrize("url, place, resource", [
    ("labgrid://pi4-lab1", "pi4-lab1", None), ("labgrid://rack2.pi3/NetworkService", "rack2.pi3", "NetworkService")])
def test_place_urls(url, place, resource):
    assert lab.PlaceURL.parse(url) == lab.PlaceURL(place, resource) and lab.is_lab_url(url)


@pytest.mark.parametrize("url", ["labgrid://", "labgrid://a b", "labgrid://a/b/c", "lab://a"])
def test_bad_place_url_is_a_user_error(url):
    with pytest.raises(lab.LabError, match="expected labgrid://PLACE") as exc:
        lab.PlaceURL.parse(url)
    assert isinstance(exc.value, EdgeModelsError)


def test_coordinator_address_precedence(monkeypatch):
    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    assert lab.coordinator_address() == "127.0.0.1:20408"
    monkeypatch.setenv("LG_COORDINATOR", "lab:1")
    assert lab.coordinator_address() == "lab:1" and lab.coordinator_address("ci:2") == "ci:2"


def test_lab_children_get_the_users_arguments_without_the_lab_ones():
    args = ["bench/", "--lab", "a,b", "--report-dir=out", "-k", "x", "--junit-xml", "j.xml", "-m", "paper"]
    assert labrun.child_args(args) == ["bench/", "-k", "x", "-m", "paper"]
    assert labrun._marks(["-m", "paper"]) == ["-m", f"(paper) and {labrun.BUILD_MARKS}"]
    assert labrun._without_marks(["bench/", "-m", "paper", "-q"]) == ["bench/", "-q"]
    with pytest.raises(labrun.LabRunError, match="name one or more"):
        labrun.places_of(" , ")


def test_the_docs_exporter_config_exports_a_network_service_per_pi():
    """docs/lab.md's exporter.yaml is valid YAML and gives each Pi what lab.Coordinator.board reads."""
    import yaml
    from labgrid.resource import NetworkService

    text = (REPO / "docs" / "lab.md").read_text()
    config = yaml.safe_load(re.search(r"```yaml\n(# One group per board.*?)```", text, flags=re.S).group(1))
    assert set(config) == {"pi4-lab1", "pi3-lab1"}
    for group in config.values():
        ns = group["NetworkService"]
        fields = {f.name for f in NetworkService.__attrs_attrs__}
        assert {"address", "username", "port"} <= fields and set(ns) <= fields
        assert isinstance(ns["address"], str) and isinstance(ns["username"], str) and isinstance(ns["port"], int)


# ------------------------------------------------------------------------ a real coordinator


def test_a_place_is_acquired_for_us_and_released(lab_env):
    lock = _lock(lab_env, "loop-a").acquire()
    try:
        assert lab_env.holder("loop-a") == lab.client_name()  # what every other client of the coordinator sees
        b = lock.board
        assert (b.address, b.port, b.username) == ("127.0.0.1", lab_env.servers["a"].port, lab_env.boards[0].username)
        assert b.resource == "lab-exporter/loop-a/NetworkService/NetworkService"
        lock.check_held()
    finally:
        rec = lock.release()
    assert lab_env.holder("loop-a") is None
    assert rec.holder == lab.client_name() and rec.reservation and rec.release_error is None
    assert _ts(rec.requested_at) <= _ts(rec.acquired_at) < _ts(rec.released_at)
    assert rec.coordinator_acquired_at and rec.coordinator_released_at
    assert not list(lab_env.state.glob("*.json"))  # our lease went with the lock


def test_a_held_place_is_waited_for_and_served_when_freed(lab_env):
    first = _lock(lab_env, "loop-b").acquire()
    lines, got = [], {}

    def second():
        got["lock"] = _lock(lab_env, "loop-b", wait_s=60, notify=lines.append).acquire()

    t = threading.Thread(target=second)
    t.start()
    time.sleep(2.5)
    assert "lock" not in got and lines and "is held by " + lab.client_name() in lines[0]
    released = first.release()
    t.join(timeout=30)
    rec = got["lock"].release()
    assert _ts(released.released_at) <= _ts(rec.acquired_at)  # never both at once
    assert 2.0 <= rec.waited_s and (_ts(rec.acquired_at) - _ts(released.released_at)).total_seconds() < 3


def test_a_held_place_stops_after_lab_wait_naming_the_holder(lab_env):
    held = _lock(lab_env, "loop-b").acquire()
    try:
        started = time.monotonic()
        with pytest.raises(lab.LabError) as exc:
            _lock(lab_env, "loop-b", wait_s=1.5).acquire()
        assert 1.5 <= time.monotonic() - started < 15
        msg = str(exc.value)
        assert f"is held by {lab.client_name()} (since " in msg and "waited 1.5 s (--lab-wait)" in msg
        assert f"labgrid-client -p loop-b release-from {lab.client_name()}" in msg and "\n" not in msg
        coord = lab.Coordinator(lab_env.address)  # the stopped session's reservation was cancelled
        try:
            res = coord.call("GetReservations", coord.pb.GetReservationsRequest()).reservations
            assert [r.token for r in res] == [held.record.reservation]
        finally:
            coord.close()
    finally:
        held.release()


@pytest.mark.parametrize("place, coordinator, message", [
    ("loop-a", "down", "is not reachable"),
    ("nowhere", None, "labgrid place 'nowhere' is not known to the coordinator"),
    ("loop-bare", None, "labgrid place 'loop-bare' has no NetworkService (its matches: lab-exporter/loop-bare/*)"),
])
def test_unusable_places_are_one_line(lab_env, place, coordinator, message):
    address = f"127.0.0.1:{free_port()}" if coordinator == "down" else lab_env.address
    started = time.monotonic()
    with pytest.raises(lab.LabError, match=re.escape(message)) as exc:
        lab.open_target(f"labgrid://{place}", coordinator=address, state_dir=lab_env.state)
    assert "\n" not in str(exc.value) and time.monotonic() - started < 30


def test_bench_stops_at_once_on_an_unusable_place(lab_env, bench_cache, tmp_path):
    """The plugin path: the same one-line errors, exit 2, before anything is built."""
    for place, message in (("loop-bare", "has no NetworkService"), ("nowhere", "is not known to the coordinator")):
        proc = _bench(lab_env, tmp_path / "cache", tmp_path / "report", "--remote", f"labgrid://{place}")
        assert proc.returncode == 2, proc.stdout[-2000:]
        assert f"--remote: labgrid place '{place}' {message}" in proc.stdout
        assert not (tmp_path / "cache" / "tflite").exists()
    proc = _bench(lab_env, tmp_path / "cache", tmp_path / "report", "--remote", "labgrid://loop-a",
                  "--lg-coordinator", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 2 and "is not reachable" in proc.stdout, proc.stdout[-2000:]


def test_a_killed_session_is_reclaimed_by_the_next_one_on_this_host(lab_env, tmp_path):
    code = ("import sys, time; from edgemodels.lab import places as lab; "
            f"lab.PlaceLock(lab.PlaceURL('loop-b'), {lab_env.address!r}, state_dir={str(lab_env.state)!r}).acquire(); "
            "print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    proc.kill()  # kill -9: no cleanup ran
    proc.wait()
    assert lab_env.holder("loop-b") == lab.client_name()  # the coordinator does not notice a client going
    lines = []
    lock = _lock(lab_env, "loop-b", wait_s=20, notify=lines.append).acquire()
    try:
        assert lock.record.reclaimed_from.startswith(f"pid {proc.pid} ")
        assert any(f"released it from a killed session of this host (pid {proc.pid}" in line for line in lines)
        assert lock.record.waited_s < 10
    finally:
        lock.release()


def test_a_place_acquired_by_hand_is_not_taken_and_release_from_frees_it(lab_env):
    """No lease (acquired with labgrid-client): only waited for. The documented reclaim (docs/lab.md) frees it."""
    lab_env.client("-p", "loop-b", "acquire")
    with pytest.raises(lab.LabError, match="is held by") as exc:
        _lock(lab_env, "loop-b", wait_s=1).acquire()
    command = str(exc.value).rsplit(": ", 1)[1]
    assert command == f"labgrid-client -p loop-b release-from {lab.client_name()}"
    lab_env.client(*command.split()[1:])
    _lock(lab_env, "loop-b", wait_s=5).acquire().release()


# ------------------------------------------------------------------------------ bench sessions


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_release_the_place(lab_env, bench_cache, tmp_path, sig):
    proc = _bench(lab_env, bench_cache, tmp_path / "report", *TIMED, "--remote", "labgrid://loop-b", background=True)
    try:
        _wait_holder(lab_env, "loop-b", lab.client_name())
        time.sleep(1)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, out[-2000:]
    assert lab_env.holder("loop-b") is None, out[-2000:]


@pytest.mark.slow
def test_two_sessions_at_once_never_time_at_the_same_moment(lab_env, bench_cache, tmp_path):
    """The issue's 'done when': both pass, measured via the place, and the report.json timestamps do not overlap."""
    procs = [_bench(lab_env, bench_cache, tmp_path / f"s{i}", *TIMED, "--remote", "labgrid://loop-a", background=True)
             for i in (1, 2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert sum("edgemodels: labgrid place 'loop-a' is held by" in out for out in outs) == 1  # one of them waited
    locks = []
    for i in (1, 2):
        doc = json.loads((tmp_path / f"s{i}" / "report.json").read_text())
        rec = doc["machine"]["lab"]
        via = f"labgrid place loop-a (127.0.0.1:{lab_env.servers['a'].port})"
        assert doc["machine"]["remote"]["via"] == via and rec["holder"] == lab.client_name() and rec["runs"] > 0
        assert all(r["method"] == "measured" and "throughput measured on " in " ".join(r["notes"])
                   and via in " ".join(r["notes"]) for r in doc["rows"])
        assert _ts(rec["acquired_at"]) <= _ts(rec["first_run_at"]) <= _ts(rec["last_run_end_at"]) <= \
            _ts(rec["released_at"])
        locks.append(rec)
    first, second = sorted(locks, key=lambda r: r["acquired_at"])
    assert _ts(first["released_at"]) <= _ts(second["acquired_at"])
    assert first["coordinator_released_at"] <= second["coordinator_acquired_at"]  # the coordinator's clock agrees
    assert _ts(first["last_run_end_at"]) < _ts(second["first_run_at"])


@pytest.mark.slow
def test_lab_run_merges_places_and_fails_only_the_broken_ones(lab_env, bench_cache, tmp_path):
    out = tmp_path / "lab-report"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "bench"), *BENCH, f"--edge-cache={bench_cache}",
         "-k", "size or throughput or memory or compat", "--lab", "loop-a,loop-vanish,loop-bare",
         f"--report-dir={out}", "--lg-coordinator", lab_env.address, "--remote-identity", str(lab_env.key),
         "--remote-known-hosts", str(lab_env.known_hosts)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "XDG_STATE_HOME": str(lab_env.state.parent / "xdg-state")})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = json.loads((out / "report.json").read_text())
    assert doc["columns"] == ["loop-a", "loop-vanish", "loop-bare"] and doc["build"]["report"]
    places = doc["places"]
    assert places["loop-a"]["exit"] == 0 and places["loop-a"]["lock"]["runs"] > 0
    assert places["loop-vanish"]["exit"] == 1 and places["loop-vanish"]["failed_tests"] > 0
    assert places["loop-bare"]["exit"] is None and "has no NetworkService" in places["loop-bare"]["error"]
    rows = doc["rows"]
    assert {(r["model"], r["mode"], r["seq"]) for r in rows} == {("tiny-bert", "drq", "64"),
                                                                  ("tiny-bert", "drq", "dynamic")}
    for r in rows:
        a = r["places"]["loop-a"]
        assert a["status"] == "measured" and a["inferences_per_s"] > 0 and a["peak_rss_bytes"] > 0 and a["arm_loads"]
        assert r["places"]["loop-vanish"]["status"] == "failed" and r["places"]["loop-bare"]["status"] == "failed"
        assert r["size_bytes"] > 0
    vanished = [r["places"]["loop-vanish"] for r in rows]
    assert any(v.get("arm_loads") for v in vanished)  # it measured before it went away
    assert "loop-a inf/s" in proc.stdout and "Paper claims: loop-a" in proc.stdout
    assert "loop-vanish: " in proc.stdout and "FAILED" in proc.stdout
    assert lab_env.holder("loop-a") is None and lab_env.holder("loop-vanish") is None
