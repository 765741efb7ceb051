"""Fixtures of the broker tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from connectors.monitor.loop import Monitor


class RunningMonitors:
    """Monitors run in threads by a test; every one is stopped (drained) at its end, even when it fails."""

    def __init__(self) -> None:
        self.running: list[tuple[Monitor, threading.Thread]] = []

    def start(self, monitor: Monitor) -> Monitor:
        thread = threading.Thread(target=monitor.run, name="monitor", daemon=True)
        thread.start()
        self.running.append((monitor, thread))
        return monitor

    def stop_all(self) -> None:
        for monitor, thread in self.running:
            monitor.request_stop()
            thread.join(timeout=30)


@pytest.fixture
def monitors() -> Iterator[RunningMonitors]:
    running = RunningMonitors()
    yield running
    running.stop_all()
