"""Where a model runs: this host, a device's runtime under QEMU, or a remote device over SSH.

Every target runs the same worker (edgemodels/arm_worker.py) in a fresh process and answers the same
questions: does the model load (the runtime's own error if not), its outputs on given feeds, latency
samples (warm-up + N timed runs at T threads, timed by the target itself), the peak RSS of that fresh
process, and the target's identity (board, CPU, cores, arch, OS bitness, runtime, emulated or not).
A figure's label comes from the identity of the target that produced it, never from a guess.

Importing this module needs only the standard library and numpy (paramiko is imported when an SSH
target connects), so it never pulls in TensorFlow.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgemodels.cache import sha256_file
from edgemodels.errors import EdgeModelsError

WORKER_MODULE = "edgemodels.arm_worker"
WORKER_ROOTS = ("__init__.py", "arm_worker.py", "runtime.py")
"""The worker and what it imports lazily; worker_closure() adds the package modules they import."""

DEFAULT_REMOTE_DIR = ".cache/edgemodels/remote"
"""Relative to the remote user's home."""

CONNECT_TIMEOUT_S = 10.0
PIP_DEVICE = ("pip install '.[device]' in a copy of the edgemodels repository, which is not on PyPI  "
              "(32-bit Pi 3: '.[device-pi3]')")


class TargetError(EdgeModelsError):
    """A target could not answer (the worker could not start, or a file could not be staged)."""


class RemoteError(TargetError):
    """The SSH remote is unreachable, refuses us, lacks a package, or dropped the connection."""


# --------------------------------------------------------------------------------------------
# What a target is asked and what it answers


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

    def stats(self):
        """LatencyStats of the timed runs, or None without timing (or under an emulator: not a device time)."""
        from edgemodels.measure import LatencyStats

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


def worker_closure() -> list[str]:
    """File names of this package's modules the worker imports, directly or not (found with ast, so a module
    that runtime.py starts importing travels to the device without anyone updating a list)."""
    import ast

    pkg = Path(__file__).resolve().parent
    todo, seen = list(WORKER_ROOTS), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((pkg / name).read_text(), name)):
            mods: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "edgemodels":
                    mods = [a.name for a in node.names]
                elif node.module.startswith("edgemodels."):
                    mods = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                mods = [a.name.split(".")[1] for a in node.names if a.name.startswith("edgemodels.")]
            todo += [f"{m}.py" for m in mods if (pkg / f"{m}.py").is_file()]
    return sorted(seen)


class Target:
    """Runs the worker somewhere. Subclasses say how a request reaches it and how files travel."""

    via = "here"

    def run(self, tflite: Path | None, *, runtime: str | None = None, threads: int | None = None,
            feeds: Sequence[Mapping[str, np.ndarray]] = (), outputs: bool = True, timing: Timing | None = None,
            memory_runs: int | None = None, seq_len: int | None = None, timeout_s: float = 900) -> WorkerResult:
        """Load `tflite` in a fresh worker process and answer what is asked (see the module docstring).

        memory_runs: only load and run that many dummy inferences, so the process's peak RSS is the model's.
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
        return self._run(None if tflite is None else Path(tflite).resolve(), request, list(feeds), timeout_s)

    def identity(self, runtime: str | None = None) -> Identity:
        """Who this target is (no model loaded)."""
        return self.run(None, runtime=runtime, timeout_s=120).identity

    def _run(self, tflite: Path | None, request: dict, feeds: list, timeout_s: float) -> WorkerResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (SSH); a no-op elsewhere."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _result(status: Mapping, via: str, outputs: np.ndarray | None, wall: float, stderr: str) -> WorkerResult:
    return WorkerResult(
        loads=bool(status.get("loads")), error=status.get("error"), outputs=outputs,
        latency_s=tuple(float(x) for x in status.get("latency_s") or ()),
        peak_rss_bytes=status.get("peak_rss_bytes"), threads=int(status.get("num_threads") or 0),
        identity=_identity(status, via), wall_s=wall, stderr=stderr,
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
# This host, and an emulated user-land


def _package_root() -> Path:
    return Path(__file__).resolve().parent.parent


class LocalTarget(Target):
    """This host: the worker in a fresh child of `python` (default: this interpreter)."""

    def __init__(self, python: str | Sequence[str] = sys.executable):
        self.python = [python] if isinstance(python, (str, os.PathLike)) else list(python)

    def _command(self, work: Path) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_package_root()) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return [*map(str, self.python), "-m", WORKER_MODULE, str(work / "request.json")], env

    def _check(self, status: Mapping) -> None:
        """Hook: QemuTarget checks the emulated CPU."""

    def _run(self, tflite, request, feeds, timeout_s):
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
            try:
                proc = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, errors="replace",
                                      timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise TargetError(f"{self.via}: the worker ran past {timeout_s:.0f} s; raise timeout_s or pass "
                                  "fewer feeds/rounds") from None
            except OSError as exc:
                raise TargetError(f"{self.via}: cannot start {argv[0]}: {exc}") from None
            wall = time.monotonic() - started
            tail = (proc.stdout + proc.stderr)[-2000:].strip()
            status_file = work / "status.json"
            if proc.returncode < 0 and request.get("model"):
                status = {"loads": False, "error": f"worker crashed (signal {-proc.returncode}): {tail}"}
                if status_file.exists():
                    status = {**json.loads(status_file.read_text()), **status}
                return _result(status, self.via, None, wall, proc.stderr)
            if not status_file.exists():
                raise TargetError(f"{self.via}: the worker failed before answering (exit {proc.returncode}): {tail}")
            status = json.loads(status_file.read_text())
            if status.get("fatal"):
                raise TargetError(_fatal_message(status, " ".join(map(str, self.python)), self.via))
            self._check(status)
            outputs = None
            if status.get("n_outputs") and (work / "outputs.npz").exists():
                with np.load(work / "outputs.npz") as z:
                    outputs = np.array(z["outputs"])
            return _result(status, self.via, outputs, wall, proc.stderr)


class QemuTarget(LocalTarget):
    """A Pi's own ARM runtime under QEMU user mode (edgemodels.emulation): loads and numerics, never timings."""

    via = "qemu"

    def __init__(self, arm_target, rootfs: Path):
        self.arm_target, self.rootfs = arm_target, Path(rootfs)
        self.python = [arm_target.qemu_binary, "-L", str(self.rootfs), str(self.rootfs / "usr/bin/python3")]

    def _command(self, work: Path):
        from edgemodels import emulation

        return emulation.qemu_invocation(self.arm_target, self.rootfs, ["-m", WORKER_MODULE, str(work / "request.json")])

    def _check(self, status: Mapping) -> None:
        from edgemodels import emulation

        emulation.check_cpu(self.arm_target, status)
        if not status.get("emulated"):  # the worker must see QEMU, or its figures could pass as device times
            raise TargetError(f"qemu: the worker did not detect its emulator (status: {status.get('emulator')!r})")

    def run(self, tflite, *, runtime=None, **kw):
        return super().run(tflite, runtime=runtime or self.arm_target.runtime, **kw)


# --------------------------------------------------------------------------------------------
# A remote device over SSH


_URL_RE = re.compile(r"^ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@/:\s\[\]]+)(?::(?P<port>\d+))?/?$")


@dataclass(frozen=True)
class RemoteSpec:
    """--remote ssh://[user@]host[:port] and its companions (--remote-identity/-python/-dir/-known-hosts)."""

    host: str
    port: int = 22
    user: str | None = None
    identity: Path | None = None
    python: str = "python3"
    dir: str | None = None
    known_hosts: Path | None = None
    connect_timeout_s: float = CONNECT_TIMEOUT_S

    @classmethod
    def parse(cls, url: str, **kw) -> "RemoteSpec":
        m = _URL_RE.match(url.strip())
        if not m:
            raise RemoteError(f"--remote {url!r}: expected ssh://[user@]host[:port], e.g. ssh://pi@raspberrypi.local")
        port = int(m.group("port") or 22)
        if not 0 < port < 65536:
            raise RemoteError(f"--remote {url!r}: port {port} is not in 1..65535")
        kw = {k: v for k, v in kw.items() if v is not None}
        if "identity" in kw:
            kw["identity"] = Path(kw["identity"]).expanduser()
            if not kw["identity"].is_file():
                raise RemoteError(f"--remote-identity {kw['identity']}: no such private key file")
        if "known_hosts" in kw:
            kw["known_hosts"] = Path(kw["known_hosts"]).expanduser()
        if "python" in kw:
            kw["python"] = _remote_python(str(kw["python"]))
        return cls(host=m.group("host").strip("[]"), port=port, user=m.group("user"), **kw)

    @property
    def user_name(self) -> str:
        import getpass

        return self.user or getpass.getuser()

    @property
    def display(self) -> str:
        return f"{self.user_name}@{self.host}:{self.port}"


_REMOTE_WORD = re.compile(r"[A-Za-z0-9_./~+=:,@%-]+")
"""What one word of --remote-python may hold: the value is placed unquoted into the command line the remote's login
shell runs (so that ~ expands and `env X=1 python3` works), so quotes, $, backticks, ;, &, |, <, >, (), globs, # and
backslashes are refused: each would make the value run something other than a python."""


def _remote_python(value: str) -> str:
    """--remote-python as the remote shell will see it: a path or command and plain arguments, single-spaced."""
    words = [w for w in value.split(" ") if w]
    if not words:
        raise RemoteError("--remote-python is empty; pass the remote interpreter, e.g. python3 or ~/venv/bin/python")
    bad = sorted({c for w in words for c in w if not _REMOTE_WORD.fullmatch(c)})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise RemoteError(f"--remote-python {value!r}: {shown} not allowed (the remote shell would run it); give a "
                          "path or a command with plain arguments (letters, digits, _ . / ~ + = : , @ % -), e.g. "
                          "~/venv/bin/python or env OMP_NUM_THREADS=1 python3, or a wrapper script on the device")
    return " ".join(words)


_PLACE_SCRIPT = r"""
import hashlib, json, os, sys
req = json.load(sys.stdin)
def sha(p):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        for b in iter(lambda: f.read(1 << 20), b''):
            h.update(b)
    return h.hexdigest()
out = {}
for it in req:
    final, digest, tmp = it['final'], it['sha256'], it.get('tmp')
    if tmp is None:
        try:
            out[final] = 'ok' if sha(final) == digest else 'differs'
        except OSError:
            out[final] = 'absent'
        continue
    try:
        got = sha(tmp)
    except OSError as e:
        out[final] = 'upload missing: %s' % e
        continue
    if got != digest:
        os.unlink(tmp)
        out[final] = 'sha256 after upload is %s, expected %s' % (got, digest)
        continue
    os.replace(tmp, final)
    out[final] = 'ok'
print(json.dumps(out))
"""
"""Runs with the remote python (stdlib only): which content-addressed files are there and intact, and
the verify-then-rename of fresh uploads (a partial upload never has its final name)."""


class SshTarget(Target):
    """A remote device over SSH, with paramiko.

    Why paramiko: pure Python (one pip install on any workstation, no OpenSSH client or ssh-agent
    setup needed), well kept, and it gives SFTP and exec on one connection with distinct exceptions for
    auth refusal, host-key mismatch and timeouts, which this module turns into one-line errors. Host
    keys are checked against known_hosts (default ~/.ssh/known_hosts); an unknown host is added, like
    OpenSSH's StrictHostKeyChecking=accept-new; a changed key is refused.
    """

    def __init__(self, spec: RemoteSpec):
        self.spec = spec
        self.via = f"ssh {spec.display}"
        self._client = None
        self._sftp = None
        self._base: str | None = None

    # -- connection ---------------------------------------------------------------------------
    def _connect(self):
        if self._client is not None and self._client.get_transport() is not None \
                and self._client.get_transport().is_active():
            return self._client
        self.close()
        try:
            import paramiko
        except ImportError:
            raise RemoteError("--remote needs paramiko on this workstation: pip install paramiko") from None
        s = self.spec
        known = s.known_hosts or Path.home() / ".ssh" / "known_hosts"
        known.parent.mkdir(parents=True, exist_ok=True)
        if not known.exists():
            known.touch(mode=0o600)
        client = paramiko.SSHClient()
        client.load_host_keys(str(known))
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # accept-new; a changed key still fails
        t = s.connect_timeout_s
        try:
            client.connect(s.host, port=s.port, username=s.user_name,
                           key_filename=None if s.identity is None else str(s.identity),
                           look_for_keys=s.identity is None, allow_agent=s.identity is None,
                           timeout=t, banner_timeout=t, auth_timeout=t, channel_timeout=t)
        except paramiko.BadHostKeyException as exc:
            client.close()
            name = s.host if s.port == 22 else f"[{s.host}]:{s.port}"
            raise RemoteError(
                f"{self.via}: host key mismatch: the server offered a {exc.key.get_name()} key "
                f"{exc.key.get_fingerprint().hex()} but {known} holds another for {name}; if the device was "
                f"reinstalled, remove the old entry: ssh-keygen -R '{name}' -f {known}") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            key = f"key {s.identity}" if s.identity else "your default keys/agent"
            raise RemoteError(
                f"{self.via}: authentication refused for user {s.user_name!r} with {key} ({exc}); add the "
                f"public key to ~{s.user_name}/.ssh/authorized_keys on the device or pass --remote-identity KEY") from None
        except (socket.timeout, TimeoutError) as exc:
            client.close()
            raise RemoteError(f"{self.via}: no answer within {t:g} s ({exc or 'timed out'}); is the device on and "
                              "is sshd listening on that port?") from None
        except (OSError, paramiko.SSHException) as exc:
            client.close()
            raise RemoteError(f"{self.via}: cannot connect ({exc}); check the host name, the port and that sshd "
                              f"runs there (timeout {t:g} s)") from None
        self._client = client
        return client

    def close(self) -> None:
        for obj in (self._sftp, self._client):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - closing a dead connection
                    pass
        self._sftp = self._client = None

    def _sftp_client(self):
        client = self._connect()
        if self._sftp is None or self._sftp.get_channel().closed:
            try:
                self._sftp = client.open_sftp()
            except Exception as exc:  # noqa: BLE001
                raise self._dropped("opening SFTP", exc) from None
        return self._sftp

    def _dropped(self, doing: str, exc: BaseException) -> RemoteError:
        self.close()
        return RemoteError(f"{self.via}: connection dropped while {doing} ({type(exc).__name__}: {exc}); nothing "
                           "partial is kept (uploads are verified by sha256 before use): re-run")

    def exec(self, command: str, *, stdin: bytes = b"", timeout_s: float = 600) -> tuple[int, str, str]:
        """Run a shell command on the remote; (exit status, stdout, stderr). Raises RemoteError if the link drops."""
        client = self._connect()
        try:
            chan = client.get_transport().open_session(timeout=self.spec.connect_timeout_s)
            chan.settimeout(timeout_s)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout_s
            while True:
                got = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not got:
                    break
                if time.monotonic() > deadline:
                    chan.close()
                    raise RemoteError(f"{self.via}: {command.split()[0]} ran past {timeout_s:.0f} s on the remote")
                if not got:
                    time.sleep(0.01)
            rc = chan.recv_exit_status() if chan.exit_status_ready() else -1
        except RemoteError:
            raise
        except Exception as exc:  # noqa: BLE001 - paramiko raises SSHException, EOFError, socket errors
            raise self._dropped(f"running {command[:60]!r}", exc) from None
        transport = client.get_transport()
        if rc == -1 and (transport is None or not transport.is_active()):
            raise self._dropped(f"running {command[:60]!r}", ConnectionError("no exit status"))
        return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    # -- staging ------------------------------------------------------------------------------
    def base_dir(self) -> str:
        """The remote's content-addressed directory (absolute)."""
        if self._base is None:
            sftp = self._sftp_client()
            d = self.spec.dir or DEFAULT_REMOTE_DIR
            if d.startswith("~/"):
                d = d[2:]
            try:
                home = sftp.normalize(".")
            except Exception as exc:  # noqa: BLE001
                raise self._dropped("finding the remote home directory", exc) from None
            self._base = d if d.startswith("/") else f"{home.rstrip('/')}/{d}"
        return self._base

    def _python(self, script: str, payload: object, what: str, timeout_s: float = 300) -> str:
        cmd = f"{self.spec.python} -c {shlex.quote(script)}"
        rc, out, err = self.exec(cmd, stdin=json.dumps(payload).encode(), timeout_s=timeout_s)
        if rc == 127 or "not found" in err and rc != 0 and not out:
            raise RemoteError(f"{self.via}: remote python {self.spec.python!r} not found ({err.strip()[-200:]}); "
                              "install python3 there or pass --remote-python /path/to/python")
        if rc != 0:
            raise RemoteError(f"{self.via}: {what} failed (exit {rc}): {(err or out).strip()[-500:]}")
        return out

    def _mkdirs(self, sftp, path: str) -> None:
        parts, cur = path.strip("/").split("/"), ""
        for p in parts:
            cur += "/" + p
            try:
                sftp.stat(cur)
            except FileNotFoundError:
                try:
                    sftp.mkdir(cur)
                except OSError as exc:
                    raise self._unwritable(cur, exc) from None
            except OSError as exc:
                raise self._unwritable(cur, exc) from None

    def _unwritable(self, path: str, exc: BaseException) -> RemoteError:
        return RemoteError(
            f"{self.via}: cannot write {path} on the remote ({type(exc).__name__}: {exc}): the directory is not "
            "writable or the disk is full; pass --remote-dir DIR on a writable filesystem with free space")

    def stage(self, files: Mapping[str, Path]) -> dict[str, str]:
        """Upload {remote path relative to base_dir: local file}, skipping what is there (checked by sha256).

        Each upload goes to a temp name, the remote python verifies its sha256 and renames it: a dropped
        upload never has its final name. Returns {relative path: absolute remote path}.
        """
        base = self.base_dir()
        items = [{"final": f"{base}/{rel}", "sha256": sha256_file(local), "local": local} for rel, local in files.items()]
        have = json.loads(self._python(_PLACE_SCRIPT, [{"final": i["final"], "sha256": i["sha256"]} for i in items],
                                       "checking staged files"))
        todo = [i for i in items if have.get(i["final"]) != "ok"]
        sftp = self._sftp_client() if todo else None
        uploaded: list[str] = []
        try:
            for item in todo:
                final = item["final"]
                self._mkdirs(sftp, final.rsplit("/", 1)[0])
                item["tmp"] = tmp = f"{final}.{uuid.uuid4().hex[:8]}.part"
                uploaded.append(tmp)
                try:
                    sftp.put(str(item["local"]), tmp, confirm=True)
                except OSError as exc:
                    raise self._unwritable(tmp, exc) from None
                except Exception as exc:  # noqa: BLE001
                    raise self._dropped(f"uploading {item['local'].name}", exc) from None
        except RemoteError:
            for tmp in uploaded:  # ours, never renamed: remove them (best effort; a .part is never used)
                try:
                    self._sftp.remove(tmp)
                except Exception:  # noqa: BLE001
                    pass
            raise
        if todo:
            placed = json.loads(self._python(
                _PLACE_SCRIPT, [{"final": i["final"], "sha256": i["sha256"], "tmp": i["tmp"]} for i in todo],
                "verifying uploads"))
            bad = {k: v for k, v in placed.items() if v != "ok"}
            if bad:
                raise RemoteError(f"{self.via}: upload verification failed: {bad}")
        return {rel: f"{base}/{rel}" for rel in files}

    def worker_files(self) -> dict[str, Path]:
        """The worker and what it imports of this package, in a directory named by their hash."""
        pkg = Path(__file__).resolve().parent
        files = worker_closure()
        digest = hashlib.sha256("".join(f + sha256_file(pkg / f) for f in files).encode()).hexdigest()[:16]
        return {f"code/{digest}/edgemodels/{f}": pkg / f for f in files}

    # -- running ------------------------------------------------------------------------------
    def _run(self, tflite, request, feeds, timeout_s):
        with tempfile.TemporaryDirectory(prefix="edgemodels-ssh-") as td:
            work = Path(td)
            files = self.worker_files()
            code_dir = next(iter(files)).rsplit("/edgemodels/", 1)[0]
            if tflite is not None:
                files[f"blobs/{sha256_file(tflite)}.tflite"] = tflite
            if feeds:
                request["feeds"] = write_feeds(work / "feeds.npz", feeds)
                files[f"blobs/{sha256_file(work / 'feeds.npz')}.npz"] = work / "feeds.npz"
            remote = self.stage(files)
            base = self.base_dir()
            run_dir = f"{base}/runs/{uuid.uuid4().hex}"
            request.update(
                model=None if tflite is None else remote[f"blobs/{sha256_file(tflite)}.tflite"],
                feeds_file=next((v for k, v in remote.items() if k.endswith(".npz")), None),
                status_file=f"{run_dir}/status.json", outputs_file=f"{run_dir}/outputs.npz")
            sftp = self._sftp_client()
            self._mkdirs(sftp, run_dir)
            try:
                try:
                    with sftp.open(f"{run_dir}/request.json", "w") as fh:
                        fh.write(json.dumps(request))
                except OSError as exc:
                    raise self._unwritable(run_dir, exc) from None
                cmd = (f"cd {shlex.quote(run_dir)} && PYTHONPATH={shlex.quote(f'{base}/{code_dir}')} "
                       f"PYTHONDONTWRITEBYTECODE=1 TF_CPP_MIN_LOG_LEVEL=2 {self.spec.python} -m {WORKER_MODULE} request.json")
                started = time.monotonic()
                rc, out, err = self.exec(cmd, timeout_s=timeout_s)
                wall = time.monotonic() - started
                return self._collect(sftp, run_dir, rc, out, err, wall, bool(request.get("model")))
            finally:
                self._cleanup(run_dir)

    def _collect(self, sftp, run_dir, rc, out, err, wall, has_model) -> WorkerResult:
        tail = (out + err)[-1500:].strip()
        try:
            with sftp.open(f"{run_dir}/status.json", "r") as fh:
                status = json.loads(fh.read())
        except FileNotFoundError:
            if rc == 127 or (rc != 0 and "not found" in err):
                raise RemoteError(f"{self.via}: remote python {self.spec.python!r} not found ({err.strip()[-200:]}); "
                                  "install python3 there or pass --remote-python /path/to/python") from None
            if (rc < 0 or rc > 128) and has_model:  # killed by a signal (OOM killer, segfault): about the model
                return _result({"loads": False, "error": f"worker killed (exit {rc}): {tail}"}, self.via, None, wall, err)
            raise RemoteError(f"{self.via}: the worker failed before answering (exit {rc}): {tail}") from None
        except Exception as exc:  # noqa: BLE001
            raise self._dropped("reading the worker's status", exc) from None
        if status.get("fatal"):
            raise RemoteError(_fatal_message(status, self.spec.python, self.via))
        outputs = None
        if status.get("n_outputs"):
            buf = io.BytesIO()
            try:
                sftp.getfo(f"{run_dir}/outputs.npz", buf)
            except Exception as exc:  # noqa: BLE001
                raise self._dropped("fetching outputs", exc) from None
            buf.seek(0)
            with np.load(buf) as z:
                outputs = np.array(z["outputs"])
        return _result(status, self.via, outputs, wall, err)

    def _cleanup(self, run_dir: str) -> None:
        """Remove this run's own directory (its request, status, outputs); best effort."""
        try:
            sftp = self._sftp_client()
            for name in sftp.listdir(run_dir):
                sftp.remove(f"{run_dir}/{name}")
            sftp.rmdir(run_dir)
        except Exception:  # noqa: BLE001 - a dead link leaves a small run dir, never a blob
            pass


def check_device(identity: Identity, device: str) -> None:
    """Raise RemoteError unless the remote is the --device it claims: a pi3 profile on a Pi 4 is an error."""
    from edgemodels import devices

    if device == "native":
        return
    m = devices._MODEL_RE.match(identity.board or "")
    board = f"pi{m.group(1)}" if m else None
    if board == device:
        return
    profile = devices.get(device)
    if identity.emulated and identity.arch == profile.arch:
        return  # an emulated user-land of that device: figures are labelled emulated
    if device == "desktop" and board is None and not identity.emulated:
        return
    raise RemoteError(
        f"{identity.via} is {identity.board or 'not a Raspberry Pi'} ({identity.arch}, {identity.cores} cores"
        f"{', emulated' if identity.emulated else ''}), not a {profile.title} (--device={device}); pass the device's "
        "own profile or --device=native to take the remote as itself")


def profile_for(identity: Identity):
    """--device=native with --remote: the remote measured as itself (its cores, RAM, arch, runtime)."""
    from edgemodels import devices

    runtime = identity.runtime or next(iter(identity.runtimes), "ai-edge-litert")
    ram = identity.mem_total_bytes or 0
    if ram <= 0:
        raise RemoteError(f"{identity.via}: the remote did not report its RAM (/proc/meminfo unreadable)")
    return devices.DeviceProfile(
        name="native", title=f"{identity.machine}, {identity.cores} cores, {identity.arch} (via {identity.via})",
        cpu=devices.CPU(cores=max(1, identity.cores), clock_ghz=0.0, microarch=identity.cpu_model or identity.arch),
        ram_bytes=int(ram), app_memory_share=0.75, arch=identity.arch, os_bits=identity.os_bits or 64,
        runtime=runtime, runtime_version=identity.runtimes.get(runtime, identity.runtime_version or "unknown"),
        numpy_constraint="", qemu_cpu=None, speed_factor=None,
        speed_factor_derivation=f"Measured, not projected: {identity.label}.")


def from_options(remote: str | None, *, identity=None, python=None, dir=None, known_hosts=None,
                 connect_timeout_s: float | None = None) -> Target:
    """LocalTarget without a --remote URL, else an SshTarget for it."""
    if not remote:
        return LocalTarget(python or sys.executable)
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
