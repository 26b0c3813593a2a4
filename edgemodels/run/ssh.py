"""A remote device over SSH (paramiko): the worker runs there on uploaded, content-addressed files.

Paramiko is imported when a target connects, so importing this module pulls in neither it nor TensorFlow.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from edgemodels.run.targets import (WORKER_MODULE, Identity, RemoteError, Target, WorkerResult, _fatal_message,
                                    _result, worker_files, write_feeds)
from edgemodels.store.files import sha256_file

DEFAULT_REMOTE_DIR = ".cache/edgemodels/remote"
"""Relative to the remote user's home."""

CONNECT_TIMEOUT_S = 10.0



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
        files = worker_files()
        digest = hashlib.sha256("".join(rel + sha256_file(f) for rel, f in files.items()).encode()).hexdigest()[:16]
        return {f"code/{digest}/{rel}": f for rel, f in files.items()}

    # -- running ------------------------------------------------------------------------------
    def _run(self, tflite, request, feeds, timeout_s, memory_limit_bytes=None):
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


def check_device(identity: Identity, device: str, extra=None) -> None:
    """Raise RemoteError unless the remote is the --device it claims: a pi3 profile on a Pi 4 is an error.
    `extra`: profiles a conftest.py added (a name not among them or the built-ins is a ValueError)."""
    from edgemodels import devices

    if device == "native":
        return
    m = devices._MODEL_RE.match(identity.board or "")
    board = f"pi{m.group(1)}" if m else None
    if board == device:
        return
    profile = devices.get(device, extra)
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
        numpy_constraint="", speed_factor=None,
        speed_factor_derivation=f"Measured, not projected: {identity.label}.")


