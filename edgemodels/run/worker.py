"""The one worker every target runs in a fresh process (this host, an emulated ARM user-land, a device over SSH).

Imports only the standard library, numpy and edgemodels.run.runtime, because a device or the ARM user-land
has nothing else (numpy is imported late so that its absence is a status naming the pip command, not a
traceback). Usage: python -m edgemodels.run.worker REQUEST.json. The request asks for any of: a load
check (always), outputs on given feeds, latency samples (warm-up + N timed runs, timed here with
time.perf_counter), and the peak RSS of this fresh process. Writes the outputs .npz, then a JSON status
(written last, atomically) that also carries this machine's identity; a refusal to load is a normal
status, not a failure.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import struct
import sys
import time
from pathlib import Path

AT_HWCAP, AT_HWCAP2 = 16, 26


def cpu_probe() -> dict:
    """What this process sees of the CPU: /proc/cpuinfo part, CPU count, and the auxv hwcaps."""
    probe: dict = {"cpu_count": os.cpu_count(), "cpu_part": None, "hwcap": 0, "hwcap2": 0}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "CPU part":
                probe["cpu_part"] = value.strip()
                break
    except OSError:
        pass
    try:
        data = Path("/proc/self/auxv").read_bytes()
        word = struct.calcsize("P")
        fmt = "<QQ" if word == 8 else "<II"
        for off in range(0, len(data) - 2 * word + 1, 2 * word):
            key, value = struct.unpack_from(fmt, data, off)
            if key == AT_HWCAP:
                probe["hwcap"] = value
            elif key == AT_HWCAP2:
                probe["hwcap2"] = value
    except OSError:
        pass
    return probe


DEVICE_TREE_MODEL = "/proc/device-tree/model"
"""Where the Raspberry Pi firmware publishes the board name (EDGEMODELS_DEVICE_TREE_MODEL overrides it, to
simulate a Pi in tests)."""


def _emulator() -> str | None:
    """The emulator this process runs under, if any: QEMU user mode keeps its own name in
    /proc/self/status (it fakes cpuinfo/auxv, not that), and its wrapper sets QEMU_* variables."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Name:") and line.split(":", 1)[1].strip().startswith("qemu-"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    for var in ("QEMU_CPU", "QEMU_LD_PREFIX"):
        if os.environ.get(var):
            return f"qemu ({var}={os.environ[var]})"
    return None


def identity() -> dict:
    """Who runs this: board (device-tree model), CPU, cores, arch, OS bitness, host name, emulator."""
    board = None
    try:
        model_file = os.environ.get("EDGEMODELS_DEVICE_TREE_MODEL") or DEVICE_TREE_MODEL
        board = Path(model_file).read_bytes().replace(b"\x00", b"").decode("ascii", "replace").strip() or None
    except OSError:
        pass
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                cpu_model = value.strip()
                break
    except OSError:
        pass
    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    emulator = _emulator()
    return {"hostname": socket.gethostname(), "board": board, "cpu_model": cpu_model, "mem_total_bytes": mem_total,
            "os_bits": struct.calcsize("P") * 8, "emulated": emulator is not None, "emulator": emulator}


def _peak_rss() -> int:
    """VmHWM of this process (not ru_maxrss: the kernel carries a parent's high-water mark over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def _squeeze_batch(out):
    return out[0] if out.ndim >= 2 and out.shape[0] == 1 else out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edgemodels.run.worker REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    status_file = Path(request["status_file"])
    status: dict = {
        "arch": platform.machine(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "runtime": request.get("runtime"),
        "num_threads": request.get("num_threads") or os.cpu_count() or 1,
        "loads": False,
        "error": None,
        **cpu_probe(),
        **identity(),
    }

    def finish(code: int = 0) -> int:
        _write_atomic(status_file, json.dumps(status).encode())
        return code

    try:
        import numpy as np
    except ImportError as exc:
        status["fatal"] = f"numpy is not installed for {sys.executable} ({exc})"
        status["missing"] = "numpy"
        return finish(3)
    status["numpy"] = np.__version__
    try:
        from edgemodels.run import runtime
    except Exception as exc:  # noqa: BLE001 - report, the host raises
        status["fatal"] = f"cannot import edgemodels.run.runtime in {sys.executable}: {exc!r}"
        return finish(3)
    status["runtimes"] = {info.name: info.version for info in runtime.available()}
    if status["runtime"] in status["runtimes"]:
        status["runtime_version"] = status["runtimes"][status["runtime"]]
    if request.get("model") is None:  # identity only
        return finish()
    memory = request.get("memory")
    try:
        model = runtime.load(request["model"], runtime=status["runtime"], num_threads=status["num_threads"])
    except runtime.ModelLoadError as exc:
        status["error"] = str(exc)
        return finish()
    except runtime.RuntimeUnavailable as exc:
        status["fatal"] = str(exc)
        status["missing"] = status["runtime"] or "ai-edge-litert"
        return finish(3)
    status["loads"] = True
    status["inputs"] = {name: [int(d) for d in model.input_shape(name)] for name in model.input_names}
    status["runtime"] = model.runtime_name
    status["runtime_version"] = model.runtime_version
    if memory is not None:  # a fresh process that only loads and runs: its high-water mark is the model's
        try:
            feed = model.dummy_feeds(memory.get("seq_len"))
            for _ in range(int(memory.get("runs", 3))):
                model.run(feed)
        except Exception as exc:  # noqa: BLE001 - MemoryError included: a result for this model
            status["error"] = f"{request['model']}: run failed in {status['runtime']}: {type(exc).__name__}: {exc}"
        status["peak_rss_bytes"] = _peak_rss()
        return finish()
    feeds = []
    if request.get("feeds"):
        with np.load(request["feeds_file"]) as arrays:
            feeds = [{name: arrays[key] for name, key in keys.items()} for keys in request["feeds"]]
    outputs = []
    for i, feed in enumerate(feeds if request.get("outputs", True) else []):
        try:
            outputs.append(_squeeze_batch(np.asarray(model.run(feed))))
        except Exception as exc:  # noqa: BLE001 - a run failure is a result for this model
            status["error"] = f"{request['model']}: feed {i} failed in {status['runtime']}: {exc}"
            return finish()
    status["n_outputs"] = len(outputs)
    if outputs:  # no feeds: a load-only check
        out_file = Path(request["outputs_file"])
        tmp = out_file.with_name(f".{out_file.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, outputs=np.stack(outputs))
        os.replace(tmp, out_file)
    timing = request.get("timing")
    if timing is not None:
        timed = feeds or [model.dummy_feeds(timing.get("seq_len"))]
        samples = []
        try:
            for i in range(int(timing.get("warmup", 2))):
                model.run(timed[i % len(timed)])
            started = time.perf_counter()
            cap = timing.get("max_seconds")
            for i in range(int(timing["rounds"])):
                t0 = time.perf_counter()
                model.run(timed[i % len(timed)])
                t1 = time.perf_counter()
                samples.append(t1 - t0)
                if cap is not None and len(samples) >= min(3, int(timing["rounds"])) and t1 - started >= cap:
                    break
        except Exception as exc:  # noqa: BLE001
            status["error"] = f"{request['model']}: timed run failed in {status['runtime']}: {exc}"
            return finish()
        status["latency_s"] = samples
    gate = request.get("gate")
    if gate is not None:
        try:
            status["gate"] = _gate(gate, request["model"], status["runtime"], feeds or [model.dummy_feeds(None)])
        except Exception as exc:  # noqa: BLE001 - a refusal at 1 thread, a changed yardstick: a result, named
            status["error"] = f"{request['model']}: gate timing failed in {status['runtime']}: {exc}"
    return finish()


def median_length_feed(feeds: list[dict]) -> dict:
    """The feed whose sequence length is the median of the feeds' (the upper one of an even count)."""
    return sorted(feeds, key=lambda f: max(v.shape[-1] for v in f.values()))[len(feeds) // 2]


def _gate(gate: dict, model_path: str, runtime_name: str, feeds: list) -> dict:
    """The throughput gate's digest (edgemodels/run/speedgate): the case interleaved with the committed yardstick at
    the gate's thread count, adaptive rounds, real-time priority where allowed; stops early once a baseline's verdict
    is known. Timed here, on the device, like every other figure of this worker."""
    from edgemodels.run import runtime
    from edgemodels.run import speedgate

    threads = gate["threads"]
    yard = speedgate.yardstick.load(num_threads=threads, runtime=runtime_name, path=Path(gate["yardstick"]))
    model = runtime.load(model_path, runtime=runtime_name, num_threads=threads)
    if gate.get("one_length"):  # a dynamic-length model: one shape, so no resize between calls (GateRequest)
        feed = median_length_feed(feeds)

        def run():
            model.run(feed)
    else:
        state = {"i": 0}

        def run():
            model.run(feeds[state["i"] % len(feeds)])
            state["i"] += 1
    run()  # the first invoke allocates
    baseline = speedgate.Digest.from_json(gate["baseline"]) if gate.get("baseline") else None
    stop = speedgate.decided(baseline, **gate.get("compare", {}))
    digest = speedgate.time_case(run, yard.run, yardstick_sha256=yard.sha256, threads=threads,
                                 settings=speedgate.Settings(**gate["settings"]), stop=stop)
    return digest.to_json()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
