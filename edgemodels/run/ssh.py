"""A remote device over SSH: the worker runs there on uploaded, content-addressed files.

`SshTarget` is the device (staging files by hash, running the worker, collecting its status and outputs) behind an
`SshConnection` (edgemodels.run.ssh_connection: the link); `check_device` and `profile_for` match what the remote
says it is with a device profile.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import tempfile
import time
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np

from edgemodels.run.ssh_connection import RemoteSpec, SshConnection
from edgemodels.run.targets import (WORKER_MODULE, Identity, RemoteError, Target, WorkerResult, _fatal_message,
                                    _result, worker_files, write_feeds)
from edgemodels.store.files import sha256_file

DEFAULT_REMOTE_DIR = ".cache/edgemodels/remote"
"""Relative to the remote user's home."""

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
    """A remote device over SSH: the worker runs there on content-addressed files uploaded over an SshConnection.

    What travels: the worker's code in a directory named by its hash, the model and feeds as blobs named by their
    sha256, each checked before upload (what is there intact is not sent again) and verified before use.
    """

    def __init__(self, spec: RemoteSpec, via: str | None = None):
        self.spec = spec
        self.conn = SshConnection(spec, via or f"ssh {spec.display}")
        self._base: str | None = None

    @property
    def via(self) -> str:
        return self.conn.via

    def close(self) -> None:
        self.conn.close()

    # -- staging ------------------------------------------------------------------------------
    def base_dir(self) -> str:
        """The remote's content-addressed directory (absolute)."""
        if self._base is None:
            sftp = self.conn.sftp()
            d = self.spec.dir or DEFAULT_REMOTE_DIR
            if d.startswith("~/"):
                d = d[2:]
            try:
                home = sftp.normalize(".")
            except Exception as exc:  # noqa: BLE001
                raise self.conn.dropped("finding the remote home directory", exc) from None
            self._base = d if d.startswith("/") else f"{home.rstrip('/')}/{d}"
        return self._base

    def _python(self, script: str, payload: object, what: str, timeout_s: float = 300) -> str:
        cmd = f"{self.spec.python} -c {shlex.quote(script)}"
        rc, out, err = self.conn.exec(cmd, stdin=json.dumps(payload).encode(), timeout_s=timeout_s)
        if rc == 127 or "not found" in err and rc != 0 and not out:
            raise RemoteError(f"{self.via}: remote python {self.spec.python!r} not found ({err.strip()[-200:]}); "
                              "install python3 there or pass --remote-python /path/to/python")
        if rc != 0:
            raise RemoteError(f"{self.via}: {what} failed (exit {rc}): {(err or out).strip()[-500:]}")
        return out

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
        sftp = self.conn.sftp() if todo else None
        uploaded: list[str] = []
        try:
            for item in todo:
                final = item["final"]
                self.conn.mkdirs(final.rsplit("/", 1)[0])
                item["tmp"] = tmp = f"{final}.{uuid.uuid4().hex[:8]}.part"
                uploaded.append(tmp)
                try:
                    sftp.put(str(item["local"]), tmp, confirm=True)
                except OSError as exc:
                    raise self.conn.unwritable(tmp, exc) from None
                except Exception as exc:  # noqa: BLE001
                    raise self.conn.dropped(f"uploading {item['local'].name}", exc) from None
        except RemoteError:
            self.conn.discard(uploaded)  # ours, never renamed (best effort; a .part is never used)
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
            yard = Path(request["gate"]["yardstick"]) if request.get("gate") else None
            if yard is not None:  # the gate's yardstick travels like the model: content-addressed, verified
                files[f"blobs/{sha256_file(yard)}.tflite"] = yard
            remote = self.stage(files)
            if yard is not None:
                request["gate"]["yardstick"] = remote[f"blobs/{sha256_file(yard)}.tflite"]
            base = self.base_dir()
            run_dir = f"{base}/runs/{uuid.uuid4().hex}"
            request.update(
                model=None if tflite is None else remote[f"blobs/{sha256_file(tflite)}.tflite"],
                feeds_file=next((v for k, v in remote.items() if k.endswith(".npz")), None),
                status_file=f"{run_dir}/status.json", outputs_file=f"{run_dir}/outputs.npz")
            sftp = self.conn.sftp()
            self.conn.mkdirs(run_dir)
            try:
                try:
                    with sftp.open(f"{run_dir}/request.json", "w") as fh:
                        fh.write(json.dumps(request))
                except OSError as exc:
                    raise self.conn.unwritable(run_dir, exc) from None
                cmd = (f"cd {shlex.quote(run_dir)} && PYTHONPATH={shlex.quote(f'{base}/{code_dir}')} "
                       f"PYTHONDONTWRITEBYTECODE=1 TF_CPP_MIN_LOG_LEVEL=2 {self.spec.python} -m {WORKER_MODULE} request.json")
                started = time.monotonic()
                rc, out, err = self.conn.exec(cmd, timeout_s=timeout_s)
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
            raise self.conn.dropped("reading the worker's status", exc) from None
        if status.get("fatal"):
            raise RemoteError(_fatal_message(status, self.spec.python, self.via))
        outputs = None
        if status.get("n_outputs"):
            buf = io.BytesIO()
            try:
                sftp.getfo(f"{run_dir}/outputs.npz", buf)
            except Exception as exc:  # noqa: BLE001
                raise self.conn.dropped("fetching outputs", exc) from None
            buf.seek(0)
            with np.load(buf) as z:
                outputs = np.array(z["outputs"])
        return _result(status, self.via, outputs, wall, err)

    def _cleanup(self, run_dir: str) -> None:
        """Remove this run's own directory (its request, status, outputs); best effort."""
        try:
            sftp = self.conn.sftp()
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


