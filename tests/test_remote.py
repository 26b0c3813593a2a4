"""Targets and `--remote ssh://`: a REAL OpenSSH server on 127.0.0.1, a device-only venv as the remote python.

The sshd runs from a config in a temp dir (random free port, throwaway host and client keys, StrictModes
off, no PAM); no other address is contacted. The remote python is a venv with only `.[device]` (no
TensorFlow), built once and kept in the temp dir under a name hashed from pyproject.toml, because pip
takes 20-60 s. Tests skip, with the install command, where /usr/sbin/sshd is absent (in CI they fail: conftest.missing).
The emulated user-lands some of them use as the remote are conftest's `rootfs`, built where absent.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import device_venv, missing
from edgemodels.run import ssh, targets
from edgemodels.errors import EdgeModelsError
from edgemodels.run.ssh import SshTarget
from edgemodels.run.ssh_connection import RemoteSpec
from edgemodels.run.targets import Identity, RemoteError
from edgemodels.store.files import sha256_file

REPO = Path(__file__).resolve().parents[1]
SSHD = Path("/usr/sbin/sshd")
TINY_LEN = 8

paramiko = pytest.importorskip("paramiko", reason="pip install paramiko (the `test` extra has it)")


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory) -> Path:
    """A 3-class classifier over int32 input_ids/attention_mask of length 8 (logits = mean(ids*mask) x w)."""
    tf = pytest.importorskip("tensorflow")

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.constant([[0.5, -1.0, 2.0]], dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([1, TINY_LEN], tf.int32, name="input_ids"),
                                      tf.TensorSpec([1, TINY_LEN], tf.int32, name="attention_mask")])
        def serve(self, input_ids, attention_mask):
            x = tf.cast(input_ids * attention_mask, tf.float32)
            return {"logits": tf.matmul(tf.reduce_mean(x, axis=1, keepdims=True), self.w)}

    module = Tiny()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    path.write_bytes(conv.convert())
    return path


def _feeds(values=(1, 2, 3)) -> list[dict[str, np.ndarray]]:
    return [{"input_ids": np.full((1, TINY_LEN), v, np.int32), "attention_mask": np.ones((1, TINY_LEN), np.int32)}
            for v in values]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    dir: Path
    port: int
    client_key: Path
    known_hosts: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}"

    def spec(self, python: str, **kw) -> RemoteSpec:
        kw.setdefault("identity", self.client_key)
        kw.setdefault("known_hosts", self.known_hosts)
        kw.setdefault("dir", str(self.dir / "remote"))
        kw.setdefault("connect_timeout_s", 5.0)
        return RemoteSpec.parse(self.url, python=python, **kw)


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def start_sshd(root: Path, *, ulimit_fsize_kb: int | None = None) -> Sshd:
    """sshd -D on 127.0.0.1:<free port>, keys and config in `root`. With ulimit_fsize_kb, every file it (and
    its SFTP server) writes is capped: a disk-full stand-in (SIGXFSZ ignored, so writes fail with EFBIG)."""
    if not SSHD.exists():
        missing("needs an OpenSSH server: sudo apt-get install openssh-server (scripts/setup does it)")
    if shutil.which("ssh-keygen") is None:
        missing("needs ssh-keygen: sudo apt-get install openssh-client")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        Path("/run/sshd").mkdir(mode=0o755)  # sshd's privilege-separation directory, made at boot by systemd
    root.mkdir(parents=True, exist_ok=True)
    host_key, client_key = _keygen(root / "host_key"), _keygen(root / "client_key")
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    port = _free_port()
    (root / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", "StrictModes no", "UsePAM no",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]))
    cmd = [str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")]
    if ulimit_fsize_kb is not None:
        cmd = ["bash", "-c", f"trap '' XFSZ; ulimit -f {ulimit_fsize_kb}; exec \"$@\"", "sshd", *cmd]
    log = open(root / "sshd.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited ({proc.returncode}): {(root / 'sshd.log').read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("sshd did not listen within 10 s")
    return Sshd(root, port, client_key, root / "known_hosts", proc)


def stop_sshd(sshd: Sshd) -> None:
    try:
        os.killpg(sshd.proc.pid, signal.SIGTERM)  # its own session: the listener and its connections
    except ProcessLookupError:
        pass
    sshd.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


@pytest.fixture(scope="session")
def device_python() -> str:
    """A venv with only `.[device]` installed (numpy, psutil, ai-edge-litert; no TensorFlow): conftest.device_venv,
    under this module's original name and key (pyproject.toml + Python version), so a venv built before is reused."""
    return str(device_venv("device", name="edgemodels-test-device-venv", key_extras=False))


@pytest.fixture
def remote(sshd, device_python):
    with SshTarget(sshd.spec(device_python)) as t:
        yield t


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


# ------------------------------------------------------------------------------------ pure units


@pytest.mark.parametrize("url, host, port, user", [
    ("ssh://pi@raspberrypi.local", "raspberrypi.local", 22, "pi"),
    ("ssh://10.0.0.7:2222", "10.0.0.7", 2222, None),
    ("ssh://root@[::1]:22/", "::1", 22, "root"),
])
def test_remote_url_parses(url, host, port, user):
    spec = RemoteSpec.parse(url, python=None)
    assert (spec.host, spec.port, spec.user, spec.python) == (host, port, user, "python3")


@pytest.mark.parametrize("url", ["pi@host", "http://host", "ssh://", "ssh://host:99999", "ssh://a@b@c"])
def test_bad_remote_url_is_a_user_error(url):
    with pytest.raises(RemoteError, match="ssh://") as exc:
        RemoteSpec.parse(url)
    assert isinstance(exc.value, EdgeModelsError)


def test_missing_identity_file_is_named(tmp_path):
    with pytest.raises(RemoteError, match="no such private key file"):
        RemoteSpec.parse("ssh://pi@host", identity=tmp_path / "nope")


@pytest.mark.parametrize("python, bad", [
    ("python3; rm -rf ~", "';'"), ("`id`", "'`'"), ("$(id) -c 1", "'$' '(' ')'"), ("python3 > /tmp/x", "'>'"),
    ("'/opt/my py/python'", "\"'\""), ("py && id", "'&'"), ("python3\nid", "'\\n'"),
])
def test_remote_python_with_shell_syntax_is_refused_at_parse(python, bad):
    """--remote-python goes unquoted into the remote shell's command line (so ~ expands): syntax would run there."""
    with pytest.raises(RemoteError, match=rf"^--remote-python .*: {re.escape(bad)} not allowed \(the remote shell"):
        RemoteSpec.parse("ssh://pi@host", python=python)


@pytest.mark.parametrize("python, kept", [
    ("~/venv/bin/python", "~/venv/bin/python"), ("env OMP_NUM_THREADS=1  python3 -X utf8", "env OMP_NUM_THREADS=1 "
                                                                                           "python3 -X utf8"),
    ("/opt/py-3.11/bin/python3.11", "/opt/py-3.11/bin/python3.11"),
])
def test_remote_python_paths_and_plain_arguments_are_kept(python, kept):
    assert RemoteSpec.parse("ssh://pi@host", python=python).python == kept


def test_measure_refuses_remote_python_shell_syntax_in_one_line_before_connecting(tmp_path, capsys):
    from edgemodels import cli

    model = tmp_path / "m.tflite"
    model.write_bytes(b"never read")
    rc = cli.main(["measure", "--tflite", str(model), "--remote", "ssh://pi@192.0.2.1", "--connect-timeout", "1",
                   "--remote-python", "python3; echo hi"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("edgemodels: error: --remote-python"), err


def _ident(board, arch="aarch64", emulated=False) -> Identity:
    return Identity(via="ssh pi@pi:22", hostname="pi", board=board, cpu_model=None, cpu_part=None, cores=4,
                    arch=arch, os_bits=64, python="3.11", runtime="ai-edge-litert", runtime_version="2.3.0",
                    emulated=emulated)


def test_board_must_match_the_device_profile():
    pi4 = _ident("Raspberry Pi 4 Model B Rev 1.1")
    ssh.check_device(pi4, "pi4")
    ssh.check_device(pi4, "native")
    with pytest.raises(RemoteError) as exc:
        ssh.check_device(pi4, "pi3")
    assert "Raspberry Pi 4 Model B Rev 1.1" in str(exc.value) and "Raspberry Pi 3" in str(exc.value)
    with pytest.raises(RemoteError, match="not a Raspberry Pi"):
        ssh.check_device(_ident(None, "x86_64"), "pi4")
    ssh.check_device(_ident(None, "aarch64", emulated=True), "pi4")  # the emulated pi4 user-land
    with pytest.raises(RemoteError):
        ssh.check_device(_ident(None, "aarch64", emulated=True), "pi3")  # armv7l expected


def test_labels_come_from_the_target():
    assert _ident("Raspberry Pi 4 Model B Rev 1.1").label == "measured on Raspberry Pi 4 Model B Rev 1.1 via ssh pi@pi:22"
    emu = _ident(None, emulated=True)
    assert emu.method == "emulated" and "not a device time" in emu.label


def test_device_side_modules_never_import_tensorflow():
    code = ("import sys, edgemodels.run.runtime, edgemodels.run.worker, edgemodels.run.targets, edgemodels.run.stats, "
            "edgemodels.errors; bad = [m for m in ('tensorflow', 'transformers', 'tokenizers', 'tf_keras') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_feeds_file_is_byte_identical_for_the_same_feeds(tmp_path):
    """Content addressing needs it: np.savez stamps the wall clock into the zip."""
    targets.write_feeds(tmp_path / "a.npz", _feeds())
    time.sleep(2.1)  # zip timestamps have 2 s resolution
    targets.write_feeds(tmp_path / "b.npz", _feeds())
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as z:
        assert z["f1_1"].tolist() == [[2] * TINY_LEN]  # sorted names: f1_0 is attention_mask


# ----------------------------------------------------------------------------------- this host


def test_local_target_answers_outputs_latency_rss_identity(tiny_tflite):
    from edgemodels.run import runtime

    t = targets.LocalTarget()
    res = t.run(tiny_tflite, threads=1, feeds=_feeds(), timing=targets.Timing(rounds=7, warmup=1))
    ref = runtime.load(tiny_tflite, num_threads=1)
    expected = np.stack([ref.run(f)[0] for f in _feeds()])
    assert res.loads and res.error is None and res.threads == 1
    np.testing.assert_allclose(res.outputs, expected, rtol=1e-6)
    assert len(res.latency_s) == 7 and all(0 < s < 1 for s in res.latency_s)
    assert res.identity.method == "measured" and res.identity.via == "here"
    assert res.identity.arch == os.uname().machine and res.identity.cores == os.cpu_count()
    mem = t.run(tiny_tflite, memory_runs=2)
    assert 10 * 2**20 < mem.peak_rss_bytes < 2 * 2**30


BALLAST_MIB, BALLAST_SLACK_MIB = 192, 16
"""A known amount the worker is made to hold, and how closely its peak RSS must show it (tests/test_measure.py;
docs/measurements.md#rss-ballast)."""


def test_worker_peak_rss_grows_by_what_it_holds(tiny_tflite, tmp_path):
    """The worker's peak RSS against an independent figure: the same worker holding BALLAST_MIB reports that much more."""
    from conftest import ballast_python

    plain = targets.LocalTarget(ballast_python(tmp_path, 0)).run(tiny_tflite, memory_runs=2)
    fat = targets.LocalTarget(ballast_python(tmp_path, BALLAST_MIB)).run(tiny_tflite, memory_runs=2)
    assert plain.loads and fat.loads and plain.error is None and fat.error is None
    assert 10 * 2**20 < plain.peak_rss_bytes < 300 * 2**20
    grew = (fat.peak_rss_bytes - plain.peak_rss_bytes) / 2**20
    assert abs(grew - BALLAST_MIB) < BALLAST_SLACK_MIB, (plain.peak_rss_bytes, fat.peak_rss_bytes)


def test_local_target_reports_the_runtimes_refusal(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 64)
    res = targets.LocalTarget().run(bad)
    assert not res.loads and "not a TFLite FlatBuffer" in res.error


# ------------------------------------------------------------------------------------ over SSH


def test_measure_cli_over_ssh_on_a_device_only_venv(sshd, device_python, tiny_tflite):
    """The issue's 'done when': a measured figure naming the remote, from a venv with only .[device]."""
    from conftest import run_cli_subprocess

    no_tf = subprocess.run([device_python, "-c", "import tensorflow"], capture_output=True, text=True)
    assert no_tf.returncode != 0 and "No module named 'tensorflow'" in no_tf.stderr
    proc = run_cli_subprocess("measure", "--tflite", str(tiny_tflite), "--remote", sshd.url, "--remote-identity",
                              str(sshd.client_key), "--remote-python", device_python, "--remote-dir",
                              str(sshd.dir / "remote"), "--remote-known-hosts", str(sshd.known_hosts),
                              "--rounds", "5", "--threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["method"] == "measured" and out["threads"] == 1 and out["rounds"] == 5
    assert out["runtime"] == "ai-edge-litert" and out["runtime_version"] == "2.3.0"
    assert 0 < out["p50_ms"] <= out["p90_ms"] <= out["p99_ms"] and out["inferences_per_s"] > 0
    assert out["peak_rss_bytes"] > 10 * 2**20
    assert out["where"]["via"] == f"ssh {getpass.getuser()}@127.0.0.1:{sshd.port}"
    assert out["where"]["emulated"] is False and out["where"]["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert out["label"].startswith("measured on ") and f"via ssh {getpass.getuser()}@127.0.0.1" in out["label"]


def test_measure_runs_on_the_device_itself_without_tensorflow(device_python, tiny_tflite):
    """On a Pi: the device-only install times a model there (no workstation, no TensorFlow, no SQLAlchemy: the run
    says it is not recorded in the history, and is not failed for it, where no history was named)."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEMODELS_HISTORY"}
    proc = subprocess.run([device_python, "-m", "edgemodels", "measure", "--tflite", str(tiny_tflite), "--rounds", "3",
                           "--json"], capture_output=True, text=True, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "history: not recorded: SQLAlchemy is not installed here" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["method"] == "measured" and out["where"]["via"] == "here" and out["rounds"] == 3
    assert out["runtime"] == "ai-edge-litert" and out["p50_ms"] > 0 and out["peak_rss_bytes"] > 0


@pytest.mark.parametrize("args, message", [
    (["--tflite", "/nowhere/model.tflite"], "--tflite /nowhere/model.tflite: no such file"),
    (["--remote", "pi@host"], "expected ssh://[user@]host[:port]"),
    (["--remote", "ssh://pi@host", "--remote-identity", "/nowhere/key"], "no such private key file"),
])
def test_measure_bad_input_is_one_line_and_exit_2(tiny_tflite, args, message):
    from conftest import run_cli_subprocess

    if "--tflite" not in args:
        args = ["--tflite", str(tiny_tflite), *args]
    proc = run_cli_subprocess("measure", *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_remote_outputs_match_the_host(remote, tiny_tflite):
    here = targets.LocalTarget().run(tiny_tflite, threads=1, feeds=_feeds())
    there = remote.run(tiny_tflite, threads=1, feeds=_feeds())
    assert there.loads and there.identity.via.startswith("ssh ")
    np.testing.assert_array_equal(there.outputs, here.outputs)


def test_uploads_are_content_addressed_skipped_and_verified(remote, tiny_tflite):
    remote.run(tiny_tflite, threads=1)
    blob = Path(remote.base_dir()) / "blobs" / f"{sha256_file(tiny_tflite)}.tflite"
    first = blob.stat()
    remote.run(tiny_tflite, threads=1)
    assert blob.stat().st_ino == first.st_ino and blob.stat().st_mtime_ns == first.st_mtime_ns  # skipped
    # A partial (truncated) file under the final name, as a crashed foreign copy would leave: never used.
    blob.write_bytes(tiny_tflite.read_bytes()[:100])
    (blob.parent / (blob.name + ".dead.part")).write_bytes(b"partial")
    res = remote.run(tiny_tflite, threads=1, feeds=_feeds([4]))
    assert res.loads and res.outputs is not None
    assert sha256_file(blob) == sha256_file(tiny_tflite)
    assert not list((Path(remote.base_dir()) / "runs").iterdir())  # each run removes its own directory


def test_closed_port_fails_fast(sshd, device_python, tiny_tflite):
    port = _free_port()  # nothing listens there
    spec = RemoteSpec.parse(f"ssh://u@127.0.0.1:{port}", identity=sshd.client_key, known_hosts=sshd.known_hosts,
                            connect_timeout_s=3)
    started = time.monotonic()
    with pytest.raises(RemoteError, match=f"127.0.0.1:{port}.*cannot connect"):
        SshTarget(spec).run(tiny_tflite)
    assert time.monotonic() - started < 3 + 15  # the stated timeout + slack for a loaded CI machine: no hang


def test_a_silent_server_times_out_instead_of_hanging(sshd, tiny_tflite):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts (kernel backlog) and never says a word
        spec = RemoteSpec.parse(f"ssh://u@127.0.0.1:{listener.getsockname()[1]}", identity=sshd.client_key,
                                known_hosts=sshd.known_hosts, connect_timeout_s=1.5)
        started = time.monotonic()
        with pytest.raises(RemoteError, match=r"no answer within 1.5 s|cannot connect"):
            SshTarget(spec).run(tiny_tflite)
        assert time.monotonic() - started < 1.5 + 15  # the stated timeout + slack for a loaded CI machine


def test_auth_refused_names_the_key(sshd, device_python, tiny_tflite, tmp_path):
    stranger = _keygen(tmp_path / "stranger")
    with pytest.raises(RemoteError, match="authentication refused") as exc:
        SshTarget(sshd.spec(device_python, identity=stranger)).run(tiny_tflite)
    assert str(stranger) in str(exc.value) and "authorized_keys" in str(exc.value)


def test_host_key_mismatch_is_refused(sshd, device_python, tiny_tflite, tmp_path):
    other = paramiko.Ed25519Key.from_private_key_file(str(_keygen(tmp_path / "other_host")))
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other.get_name()} {other.get_base64()}\n")
    with pytest.raises(RemoteError, match="host key mismatch") as exc:
        SshTarget(sshd.spec(device_python, known_hosts=known)).run(tiny_tflite)
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in str(exc.value)


def test_new_host_key_is_recorded(sshd, device_python, tmp_path):
    known = tmp_path / "new" / "known_hosts"
    SshTarget(sshd.spec(device_python, known_hosts=known)).identity()
    assert f"[127.0.0.1]:{sshd.port}" in known.read_text()


def test_remote_without_numpy_names_the_pip_command(sshd, tiny_tflite, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    py = str(bare / "bin" / "python")
    with pytest.raises(RemoteError, match="numpy is not installed") as exc:
        SshTarget(sshd.spec(py)).run(tiny_tflite)
    assert f"{py} -m pip install numpy" in str(exc.value)


def test_remote_without_the_runtime_names_the_pip_command(remote, tiny_tflite):
    with pytest.raises(RemoteError, match="'tflite-runtime' is not installed") as exc:
        remote.run(tiny_tflite, runtime="tflite-runtime")
    assert "-m pip install tflite-runtime==2.14.0" in str(exc.value)


def test_remote_python_not_found(sshd, tiny_tflite):
    with pytest.raises(RemoteError, match="remote python '/nowhere/python3' not found"):
        SshTarget(sshd.spec("/nowhere/python3")).run(tiny_tflite)


def test_unwritable_remote_dir(sshd, device_python, tiny_tflite, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(RemoteError, match="cannot write .*not writable or the disk is full"):
        SshTarget(sshd.spec(device_python, dir=str(blocker / "cache"))).run(tiny_tflite)


def test_disk_full_fails_cleanly_and_leaves_no_partial_file(device_python, tiny_tflite, tmp_path):
    small = start_sshd(tmp_path / "sshd-full", ulimit_fsize_kb=4)  # runtime.py (> 4 KiB) cannot be written
    try:
        with pytest.raises(RemoteError, match="cannot write .*disk is full"):
            SshTarget(small.spec(device_python)).run(tiny_tflite)
        left = [p.name for p in (small.dir / "remote").rglob("*") if p.is_file()]
        assert not [n for n in left if n.endswith(".part")], left
    finally:
        stop_sshd(small)


def test_dropped_connection_fails_cleanly_and_a_rerun_works(sshd, device_python, tiny_tflite, tmp_path):
    # The worker's python kills the sshd process serving this connection: the link drops mid-run.
    killer = _script(tmp_path / "python-that-drops", f"""
case "$*" in *edgemodels.run.worker*)
  p=$$
  while [ "$p" -gt 1 ]; do
    p=$(awk '{{print $4}}' /proc/$p/stat)
    case "$(cat /proc/$p/comm)" in sshd*) kill -9 "$p"; sleep 5; exit 1;; esac
  done;;
esac
exec {device_python} "$@"
""")
    started = time.monotonic()
    with pytest.raises(RemoteError, match="connection dropped"):
        SshTarget(sshd.spec(killer)).run(tiny_tflite, feeds=_feeds())
    assert time.monotonic() - started < 120  # fails, does not hang (CI runs this beside builds)
    with SshTarget(sshd.spec(device_python)) as again:
        res = again.run(tiny_tflite, feeds=_feeds())
    assert res.loads and res.outputs.shape == (3, 3)


SLOW_WORKER = """\
\"\"\"`python THIS DELAY -m MODULE ARGS`: MODULE as python -m runs it, every inference DELAY s slower.\"\"\"
import runpy, sys, time

from edgemodels.run import runtime

delay, run = float(sys.argv[1]), runtime.TFLiteModel.run
runtime.TFLiteModel.run = lambda self, feeds: (time.sleep(delay), run(self, feeds))[1]
sys.argv = [sys.argv[3], *sys.argv[4:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _worker_wrapper(path: Path, python: str, worker_command: str) -> str:
    """A remote python that runs `worker_command` for the worker (`-m edgemodels.run.worker ...`) and is plain
    `python` for everything else (the staging checks run `python -c ...`)."""
    return _script(path, f'case "$*" in *edgemodels.run.worker*) {worker_command};; esac\nexec {python} "$@"')


def test_remote_latencies_are_the_remote_workers_own_timings(sshd, device_python, tiny_tflite, tmp_path):
    """The samples are the remote worker's perf_counter around each inference, not the workstation's clock over the
    SSH call: a remote python that starts LATE s late and whose inferences take DELAY s more shows DELAY (plus the
    tiny model's sub-millisecond run) in every sample, while the call took over LATE s (wall / n would be > 0.6 s)."""
    late, delay, rounds = 3.0, 0.05, 5
    (tmp_path / "slow_worker.py").write_text(SLOW_WORKER)
    slow_python = _worker_wrapper(tmp_path / "python-late-and-slow", device_python,
                                  f'sleep {late}; exec {device_python} {tmp_path / "slow_worker.py"} {delay} "$@"')
    timing = targets.Timing(rounds=rounds, warmup=1)
    with SshTarget(sshd.spec(slow_python)) as slow_target:
        slow = slow_target.run(tiny_tflite, threads=1, timing=timing)
    with SshTarget(sshd.spec(device_python)) as fast_target:
        fast = fast_target.run(tiny_tflite, threads=1, timing=timing)
    assert len(slow.latency_s) == len(fast.latency_s) == rounds
    assert slow.wall_s > late + (1 + rounds) * delay
    # sleep(delay) never returns early; 0.25 s is slack for a loaded CI machine, far below (late / rounds).
    assert all(delay <= s < delay + 0.25 for s in slow.latency_s), (slow.latency_s, slow.wall_s)
    assert sum(slow.latency_s) < slow.wall_s - late
    assert float(np.median(fast.latency_s)) < delay / 2, fast.latency_s  # the same remote, not slowed
    stats, shown = slow.stats(), targets.measurement(slow, None)  # what the bench and `measure` report
    assert delay <= stats.p50_s < delay + 0.25 and 1 / (delay + 0.25) < stats.inferences_per_s <= 1 / delay
    assert 1000 * delay <= shown["p50_ms"] < 1000 * (delay + 0.25) and shown["rounds"] == rounds


def test_remote_peak_rss_is_the_remote_workers_own(sshd, device_python, tiny_tflite, tmp_path):
    """The remote's peak RSS against a known amount: the remote worker holding BALLAST_MIB reports that much more."""
    from conftest import ballast_python

    fat_python, lean_python = (
        _worker_wrapper(tmp_path / f"python-{mib}", device_python,
                        f'exec {" ".join(ballast_python(tmp_path, mib, device_python))} "$@"')
        for mib in (BALLAST_MIB, 0))
    with SshTarget(sshd.spec(lean_python)) as t:
        plain = t.run(tiny_tflite, memory_runs=2)
    with SshTarget(sshd.spec(fat_python)) as t:
        fat = t.run(tiny_tflite, memory_runs=2)
    assert plain.loads and fat.loads and plain.identity.via.startswith("ssh ")
    grew = (fat.peak_rss_bytes - plain.peak_rss_bytes) / 2**20
    assert abs(grew - BALLAST_MIB) < BALLAST_SLACK_MIB, (plain.peak_rss_bytes, fat.peak_rss_bytes)


def test_a_simulated_pi_is_checked_against_the_device(sshd, device_python, tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    fake_pi = _script(tmp_path / "python-on-a-pi", f"EDGEMODELS_DEVICE_TREE_MODEL={model} exec {device_python} \"$@\"")
    ident = SshTarget(sshd.spec(fake_pi)).identity()
    assert ident.board == "Raspberry Pi 4 Model B Rev 1.4"
    assert ident.label == f"measured on Raspberry Pi 4 Model B Rev 1.4 via ssh {getpass.getuser()}@127.0.0.1:{sshd.port}"
    ssh.check_device(ident, "pi4")
    with pytest.raises(RemoteError, match="Raspberry Pi 4 Model B Rev 1.4 .*not a Raspberry Pi 3"):
        ssh.check_device(ident, "pi3")


# ------------------------------------------------------------- an emulated ARM user-land as the remote


def _emulated_python(rootfs, device: str, path: Path) -> str:
    """A remote python that is the emulated user-land's (QEMU, the device's CPU pinned), as a wrapper script."""
    from edgemodels import devices
    from edgemodels.run import qemu as emulation

    argv, env = emulation.qemu_invocation(devices.get(device), rootfs(device), [])
    site = env["PYTHONPATH"].split(":")[0]
    return _script(path, (
        f"export QEMU_CPU={env['QEMU_CPU']} LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']}\n"
        f"export PYTHONPATH=\"${{PYTHONPATH:+$PYTHONPATH:}}{site}\"\n"
        f"exec {' '.join(argv)} \"$@\""))


@pytest.mark.parametrize("device", ["pi4", "pi3"])
def test_an_emulated_user_land_as_the_remote_says_emulated(sshd, tiny_tflite, tmp_path, device, rootfs):
    from edgemodels import devices

    target = devices.get(device)
    wrapper = _emulated_python(rootfs, device, tmp_path / f"python-{device}")
    res = SshTarget(sshd.spec(wrapper)).run(tiny_tflite, feeds=_feeds(), timing=targets.Timing(rounds=3))
    assert res.identity.emulated and res.identity.method == "emulated"
    assert res.identity.arch == {"pi4": "aarch64", "pi3": "armv7l"}[device]
    assert res.identity.runtime == target.runtime and res.stats() is None  # no device figure from an emulator
    out = targets.measurement(res, None)
    assert out["method"] == "emulated" and out["inferences_per_s"] is None and out["p50_ms"] is None


# ------------------------------------------------------------------------- pytest bench/ --remote


def _bench_remote(sshd, python: str, tmp_path: Path, *args: str, cache: Path | None = None):
    cmd = [sys.executable, "-m", "pytest", str(REPO / "bench"), "-q", "-p", "no:cacheprovider", "--scale=smoke",
           f"--edge-cache={cache or tmp_path / 'cache'}", f"--report-dir={tmp_path / 'report'}",
           "--remote", sshd.url, "--remote-identity", str(sshd.client_key), "--remote-python", python,
           "--remote-dir", str(sshd.dir / "remote"), "--remote-known-hosts", str(sshd.known_hosts), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_bench_stops_at_once_when_the_remote_is_not_the_device(sshd, device_python, tmp_path):
    started = time.monotonic()
    proc = _bench_remote(sshd, device_python, tmp_path, "--device=pi3")
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "not a Raspberry Pi 3" in proc.stdout and f"127.0.0.1:{sshd.port}" in proc.stdout
    assert not (tmp_path / "cache" / "tflite").exists()  # stopped before building anything
    assert time.monotonic() - started < 300  # a build would take far longer (slack for a loaded CI machine)


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-remote-cache")


@pytest.mark.slow
def test_bench_over_ssh_rows_are_measured_on_the_remote(sshd, device_python, tmp_path, bench_cache):
    proc = _bench_remote(sshd, device_python, tmp_path, "--device=native", "--modes=drq", "-k",
                         "throughput or memory or compat", cache=bench_cache)
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    via = f"ssh {getpass.getuser()}@127.0.0.1:{sshd.port}"
    assert report["machine"]["remote"]["via"] == via
    rows = report["rows"]
    assert rows and all(r["method"] == "measured" and r["inferences_per_s"] > 0 and r["threads"] >= 1
                        and r["peak_rss_bytes"] > 0 and r["arm_loads"] for r in rows)
    assert all("throughput measured on " in " ".join(r["notes"]) and via in " ".join(r["notes"]) for r in rows)


@pytest.mark.slow
def test_bench_over_ssh_on_an_emulated_user_land_carries_no_timing(sshd, tmp_path, bench_cache, rootfs):
    wrapper = _emulated_python(rootfs, "pi4", tmp_path / "python-pi4")
    proc = _bench_remote(sshd, wrapper, tmp_path, "--device=native", "--modes=drq", "-k",
                         "throughput or memory or compat", cache=bench_cache)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["rows"]
    assert rows and all(r["inferences_per_s"] is None and r["peak_rss_bytes"] is None for r in rows)
    assert all(r["arm_loads"] and r["arm_method"].startswith("emulated") for r in rows)
    assert all("no device timing" in " ".join(r["notes"]) for r in rows)


SLOWER_CASE = """\
\"\"\"`python THIS FACTOR -m MODULE ARGS`: MODULE as python -m runs it, every inference of the case's model FACTOR times
as long as it is (the gate's yardstick, named in the worker's request, untouched): a file that got slower.\"\"\"
import json, runpy, sys, time

from edgemodels.run import runtime

factor, run = float(sys.argv[1]), runtime.TFLiteModel.run
yard = (json.load(open(sys.argv[-1])).get("gate") or {}).get("yardstick")


def slowed(self, feeds):
    t0 = time.perf_counter()
    out = run(self, feeds)
    if str(self.path) != yard:
        until = time.perf_counter() + (factor - 1) * (time.perf_counter() - t0)
        while time.perf_counter() < until:  # busy, as more compute would be
            pass
    return out


runtime.TFLiteModel.run = slowed
sys.argv = [sys.argv[3], *sys.argv[4:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_the_speed_gate_on_a_remote_passes_an_unchanged_file_and_fails_a_slower_one(sshd, device_python, tmp_path,
                                                                                      bench_cache):
    """The throughput gate end to end over SSH: the remote times the file against the yardstick itself; the same file
    compared with its own baseline passes, and the same file made 2x slower on the remote (only its inferences,
    not the yardstick's) is a regression naming throughput, its ratio and interval."""
    args = ("--device=native", "--modes=drq", "-k", "throughput and 64", f"--baseline-dir={tmp_path / 'base'}",
            "--baseline-metrics=throughput", "--history=off")
    saved = _bench_remote(sshd, device_python, tmp_path / "save", *args, "--baseline-save", cache=bench_cache)
    assert saved.returncode == 0, saved.stdout[-3000:]
    same = _bench_remote(sshd, device_python, tmp_path / "same", *args, "--baseline-compare", cache=bench_cache)
    assert same.returncode == 0, same.stdout[-3000:]
    row = json.loads((tmp_path / "same" / "report" / "report.json").read_text())["rows"][0]
    assert row["throughput_decision"]["decision"] == "pass" and row["throughput_gate"]["threads"] == 1
    assert not any("reused" in n for n in row["notes"]), row["notes"]  # timed on the remote now, not shared
    (tmp_path / "slower.py").write_text(SLOWER_CASE)
    slower = _worker_wrapper(tmp_path / "python-slower", device_python,
                             f'exec {device_python} {tmp_path / "slower.py"} 2.0 "$@"')
    slow = _bench_remote(sshd, slower, tmp_path / "slow", *args, "--baseline-compare", cache=bench_cache)
    assert slow.returncode == 1, slow.stdout[-3000:]
    assert "regression" in slow.stdout and "throughput" in slow.stdout and "relative speed 0." in slow.stdout, \
        slow.stdout[-4000:]
    verdict = json.loads((tmp_path / "slow" / "report" / "report.json").read_text())["rows"][0]["throughput_decision"]
    assert verdict["decision"] == "regression" and 0.3 < verdict["ratio"] < 0.75 and verdict["high"] < 0.9
