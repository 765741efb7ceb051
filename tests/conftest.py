"""Shared fixtures. Broker tests share one embedded broker for the whole session (it starts in ~0.1 s, but
consumer-group joins are what cost time, so each test uses its own topics and group ids)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from connectors.kafka.broker import EmbeddedBroker

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10000}
"""Consumer-group timeouts that make joins take ~3 s instead of ~23 s on the embedded broker."""


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and group names."""
    return uuid.uuid4().hex[:8]
