"""Fixtures of the broker tests."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from connectors.monitor.loop import Monitor
from tests.integration import streams

CLIENTS = tuple(
    name.strip()
    for name in os.environ.get("KAFKA_CLIENTS_UNDER_TEST", "kafka-python,confluent-kafka").split(",")
    if name.strip()
)
"""The Kafka client libraries (``kafka.client``) a test asking for ``kafka_client`` runs on, in turn: both
by default, or those ``KAFKA_CLIENTS_UNDER_TEST`` names (``kafka-python`` alone: half the time; not a
``SELECTOR_*`` name, which the ``selector`` processes the tests start would read as a config key)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kafka_client" in metafunc.fixturenames:
        metafunc.parametrize("kafka_client", CLIENTS, indirect=True)


@pytest.fixture
def kafka_client(request: pytest.FixtureRequest) -> Iterator[str]:
    """The ``kafka.client`` of every config built by :func:`tests.integration.streams.config_for` in this
    test (a module opts in with ``pytestmark = pytest.mark.usefixtures("kafka_client")``)."""
    name = request.param
    if name == "confluent-kafka":
        pytest.importorskip(
            "confluent_kafka", reason="kafka.client confluent-kafka: pip install 'selector[confluent]'"
        )
    before = streams.KAFKA_CLIENT["name"]
    streams.KAFKA_CLIENT["name"] = name
    yield name
    streams.KAFKA_CLIENT["name"] = before


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
