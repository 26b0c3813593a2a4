"""Runs inside the emulated ARM python (see edgemodels.emulation): load a model, run the feeds.

Imports only the standard library, numpy and edgemodels.runtime, because the ARM user-land has
nothing else. Usage: python -m edgemodels.arm_worker REQUEST.json. Writes the outputs .npz, then
a JSON status (written last, atomically); a refusal to load is a normal status, not a failure.
"""

from __future__ import annotations

import json
import os
import platform
import struct
import sys
from pathlib import Path

import numpy as np

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


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def _squeeze_batch(out: np.ndarray) -> np.ndarray:
    return out[0] if out.ndim >= 2 and out.shape[0] == 1 else out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edgemodels.arm_worker REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    status_file = Path(request["status_file"])
    status: dict = {
        "arch": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "runtime": request["runtime"],
        "loads": False,
        "error": None,
        **cpu_probe(),
    }

    def finish(code: int = 0) -> int:
        _write_atomic(status_file, json.dumps(status).encode())
        return code

    try:
        from edgemodels import runtime
    except Exception as exc:  # noqa: BLE001 - report, the host raises
        status["fatal"] = f"cannot import edgemodels.runtime in the emulated python: {exc!r}"
        return finish(3)
    for info in runtime.available():
        if info.name == request["runtime"]:
            status["runtime_version"] = info.version
    try:
        model = runtime.load(request["model"], runtime=request["runtime"], num_threads=request["num_threads"])
    except runtime.ModelLoadError as exc:
        status["error"] = str(exc)
        return finish()
    except runtime.RuntimeUnavailable as exc:
        status["fatal"] = str(exc)
        return finish(3)
    status["loads"] = True
    status["runtime_version"] = model.runtime_version
    outputs = []
    with np.load(request["feeds_file"]) as arrays:
        for i, keys in enumerate(request["feeds"]):
            feed = {name: arrays[key] for name, key in keys.items()}
            try:
                outputs.append(_squeeze_batch(np.asarray(model.run(feed))))
            except Exception as exc:  # noqa: BLE001 - a run failure is a result for this model
                status["error"] = f"{request['model']}: feed {i} failed in {request['runtime']}: {exc}"
                return finish()
    status["n_outputs"] = len(outputs)
    if outputs:  # no feeds: a load-only check
        out_file = Path(request["outputs_file"])
        tmp = out_file.with_name(f".{out_file.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, outputs=np.stack(outputs))
        os.replace(tmp, out_file)
    return finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
