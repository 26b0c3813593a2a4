"""Reaching a remote device over SSH: the --remote URL and its companions (`RemoteSpec`), and the paramiko
connection to it (`SshConnection`: connect, SFTP, exec, a dropped link as one error line).

Paramiko is imported when a connection opens, so importing this module pulls in neither it nor TensorFlow.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from edgemodels.run.targets import RemoteError

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


class SshConnection:
    """One SSH connection to a remote device, with paramiko: opened on first use and again after a drop, SFTP and
    exec on it, and every failure of the link as one RemoteError line naming `via`.

    Why paramiko: pure Python (one pip install on any workstation, no OpenSSH client or ssh-agent
    setup needed), well kept, and it gives SFTP and exec on one connection with distinct exceptions for
    auth refusal, host-key mismatch and timeouts, which this class turns into one-line errors. Host
    keys are checked against known_hosts (default ~/.ssh/known_hosts); an unknown host is added, like
    OpenSSH's StrictHostKeyChecking=accept-new; a changed key is refused.
    """

    def __init__(self, spec: RemoteSpec, via: str):
        self.spec = spec
        self.via = via
        self._client = None
        self._sftp = None

    def client(self):
        """The open paramiko client, connecting (again) where there is none or its link is down."""
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

    def sftp(self):
        """The SFTP session on this connection, opened (again) where there is none or its channel closed."""
        client = self.client()
        if self._sftp is None or self._sftp.get_channel().closed:
            try:
                self._sftp = client.open_sftp()
            except Exception as exc:  # noqa: BLE001
                raise self.dropped("opening SFTP", exc) from None
        return self._sftp

    def dropped(self, doing: str, exc: BaseException) -> RemoteError:
        """The error for a link lost while `doing` something; closes what is left of it, so the next call reconnects."""
        self.close()
        return RemoteError(f"{self.via}: connection dropped while {doing} ({type(exc).__name__}: {exc}); nothing "
                           "partial is kept (uploads are verified by sha256 before use): re-run")

    def exec(self, command: str, *, stdin: bytes = b"", timeout_s: float = 600) -> tuple[int, str, str]:
        """Run a shell command on the remote; (exit status, stdout, stderr). Raises RemoteError if the link drops."""
        client = self.client()
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
            raise self.dropped(f"running {command[:60]!r}", exc) from None
        transport = client.get_transport()
        if rc == -1 and (transport is None or not transport.is_active()):
            raise self.dropped(f"running {command[:60]!r}", ConnectionError("no exit status"))
        return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def mkdirs(self, path: str) -> None:
        """mkdir -p over SFTP."""
        sftp = self.sftp()
        parts, cur = path.strip("/").split("/"), ""
        for p in parts:
            cur += "/" + p
            try:
                sftp.stat(cur)
            except FileNotFoundError:
                try:
                    sftp.mkdir(cur)
                except OSError as exc:
                    raise self.unwritable(cur, exc) from None
            except OSError as exc:
                raise self.unwritable(cur, exc) from None

    def discard(self, paths: list[str]) -> None:
        """Remove `paths` over the SFTP session if it is still open; best effort, and no reconnecting for it (after a
        drop the session is gone)."""
        for path in paths:
            try:
                self._sftp.remove(path)
            except Exception:  # noqa: BLE001
                pass

    def unwritable(self, path: str, exc: BaseException) -> RemoteError:
        return RemoteError(
            f"{self.via}: cannot write {path} on the remote ({type(exc).__name__}: {exc}): the directory is not "
            "writable or the disk is full; pass --remote-dir DIR on a writable filesystem with free space")

