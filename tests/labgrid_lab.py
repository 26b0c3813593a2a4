"""A real labgrid lab on loopback for the tests (and for trying the lab by hand: `python tests/labgrid_lab.py`).

labgrid-coordinator and labgrid-exporter run as processes from the `lab` extra, each in its own session, listening on
127.0.0.1 only. The exporter's config is what docs/lab.md shows for a Pi, with NetworkService resources pointing at
the tests' loopback sshd instances (tests/test_remote.py's start_sshd). Places are made through the coordinator's
own API (what `labgrid-client create/add-match/set-tags` send).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
EXPORTER = "lab-exporter"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {log.read_text()[-800:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def _start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    fh = open(log, "wb")
    return subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class Board:
    """One exported NetworkService: a place name, the sshd it points at, the place's tags."""

    place: str
    port: int
    username: str = field(default_factory=getpass.getuser)
    tags: dict = field(default_factory=dict)
    network_service: bool = True  # False: the place's group exports only a power port (no NetworkService)


@dataclass
class Lab:
    root: Path
    address: str
    coordinator: subprocess.Popen
    exporter: subprocess.Popen
    boards: list[Board]

    def client(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """labgrid-client against this coordinator, as a user types it."""
        proc = subprocess.run([str(BIN / "labgrid-client"), "-x", self.address, *args], capture_output=True,
                              text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc

    def holder(self, place: str) -> str | None:
        from edgemodels.lab import places as lab

        coord = lab.Coordinator(self.address)
        try:
            return coord.place(place).acquired
        finally:
            coord.close()

    def stop(self) -> None:
        stop(self.exporter)
        stop(self.coordinator)


def exporter_config(boards: list[Board]) -> dict:
    config: dict = {}
    for b in boards:
        if b.network_service:
            config[b.place] = {"NetworkService": {"address": "127.0.0.1", "port": b.port, "username": b.username}}
        else:
            config[b.place] = {"NetworkPowerPort": {"model": "gude", "host": "127.0.0.1", "index": 1}}
    return config


def start_lab(root: Path, boards: list[Board]) -> Lab:
    """A coordinator and an exporter on loopback; one place per board, matching the exporter's group of its name."""
    from edgemodels.lab import places as lab

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"127.0.0.1:{port}"
    coordinator = _start([str(BIN / "labgrid-coordinator"), "-l", address], root, root / "coordinator.log")
    exporter = None
    try:
        _wait_listening(port, coordinator, root / "coordinator.log", "labgrid-coordinator")
        (root / "exporter.yaml").write_text(yaml.safe_dump(exporter_config(boards)))
        exporter = _start([str(BIN / "labgrid-exporter"), "-c", address, "-n", EXPORTER, "--hostname", "127.0.0.1",
                           str(root / "exporter.yaml")], root, root / "exporter.log")
        coord = lab.Coordinator(address)
        try:
            pb = coord.pb
            for b in boards:
                coord.call("AddPlace", pb.AddPlaceRequest(name=b.place))
                match = pb.AddPlaceMatchRequest(placename=b.place, pattern=f"{EXPORTER}/{b.place}/*")
                coord.call("AddPlaceMatch", match)
                if b.tags:
                    coord.call("SetPlaceTags", pb.SetPlaceTagsRequest(placename=b.place, tags=b.tags))
            deadline = time.monotonic() + 60
            while len(coord.sync().resources.get(EXPORTER, {})) < len(boards):  # the exporter has registered
                if exporter.poll() is not None or time.monotonic() > deadline:
                    log = (root / "exporter.log").read_text()[-800:]
                    raise RuntimeError(f"labgrid-exporter did not register: {log}")
                time.sleep(0.2)
        finally:
            coord.close()
    except BaseException:
        stop(exporter)
        stop(coordinator)
        raise
    return Lab(root, address, coordinator, exporter, boards)


if __name__ == "__main__":  # a lab to try by hand: two places over two loopback sshd, until Ctrl-C
    sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # tests/, then the repo's own code
    from conftest import device_venv
    from test_remote import start_sshd, stop_sshd

    import tempfile

    root = Path(tempfile.mkdtemp(prefix="edgemodels-lab-"))
    py = str(device_venv("device", name="edgemodels-test-device-venv", key_extras=False))
    servers = [start_sshd(root / f"sshd-{n}") for n in ("a", "b")]
    lab_ = start_lab(root / "lab", [Board("loop-a", servers[0].port), Board("loop-b", servers[1].port)])
    print(f"LG_COORDINATOR={lab_.address}\nremote python: {py}\nkeys: " +
          " ".join(f"{s.client_key} (known_hosts {s.known_hosts})" for s in servers), flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        lab_.stop()
        for s in servers:
            stop_sshd(s)
        shutil.rmtree(root, ignore_errors=True)
