"""Which machine a figure was made on: host facts for report.json, and the id that says "same hardware"."""

from __future__ import annotations

import hashlib
import os
import platform
import re
from pathlib import Path

def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """x86 says "model name"; a Raspberry Pi's aarch64 kernel often only says "Model"/"Hardware"."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "Processor", "cpu model"):
        m = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", text, re.MULTILINE)
        if m and m.group(1).strip():
            return m.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def _total_ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def machine_id() -> str:
    """Stable id for "same hardware": throughput is only compared between runs with equal ids."""
    arch = platform.machine() or "unknown"
    cores = os.cpu_count() or 0
    ram_gib = round(_total_ram_bytes() / 2**30)
    digest = hashlib.sha256(f"{arch}|{_cpu_model()}|{cores}|{ram_gib}".encode()).hexdigest()[:8]
    return f"{arch}-{cores}c-{ram_gib}g-{digest}"


def machine_info() -> dict:
    """Host facts recorded into report.json so a reader knows where the figures came from."""
    import psutil

    return {
        "cpu_model": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_bytes": _total_ram_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "arch": platform.machine(),
        "machine_id": machine_id(),
    }

