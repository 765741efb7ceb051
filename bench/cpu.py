"""CPU time of this process and of the embedded broker it started, read from ``/proc``.

On a small machine the consumer under test, the broker and the load generator compete for the same cores;
the CPU each used shows whether a figure was limited by the code or by the machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0.0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def broker_pids() -> list[int]:
    """Child processes of this one that are the embedded broker (Tansu)."""
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if text[text.rindex(")") + 2 :].split()[1] == me and comm.startswith("tansu"):
            found.append(int(stat.parent.name))
    return found


@dataclass
class CpuMeter:
    """CPU cores used by this process and the broker between :meth:`start` and :meth:`stop`."""

    wall: float = 0.0
    own: float = 0.0
    broker: float = 0.0

    def start(self) -> CpuMeter:
        self._pids = broker_pids()
        self._t0 = time.perf_counter()
        self._own0 = time.process_time()
        self._broker0 = sum(process_seconds(p) for p in self._pids)
        return self

    def stop(self) -> CpuMeter:
        self.wall = time.perf_counter() - self._t0
        self.own = time.process_time() - self._own0
        self.broker = sum(process_seconds(p) for p in self._pids) - self._broker0
        return self

    def cores(self, seconds: float) -> float:
        """CPU seconds as cores busy over the measured wall time."""
        return seconds / self.wall if self.wall > 0 else 0.0
