"""The embedded broker's start-up: a port it chose and lost to another process before binding it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from connectors.kafka import broker as broker_module
from connectors.kafka.broker import EmbeddedBroker
from selector.errors import SelectorError


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port bound (not listening) by this process: the broker cannot bind it, and nothing answers on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@pytest.mark.broker
class TestPortTaken:
    def test_a_chosen_port_taken_before_the_broker_bound_it_is_replaced(
        self, taken_port: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ports = iter([taken_port])
        real = broker_module.free_port
        monkeypatch.setattr(broker_module, "free_port", lambda: next(ports, None) or real())
        with EmbeddedBroker() as b:
            assert b.port != taken_port
            socket.create_connection(("127.0.0.1", b.port), timeout=2).close()

    def test_a_given_port_that_is_taken_is_an_error_naming_it(self, taken_port: int) -> None:
        with pytest.raises(SelectorError, match=f"exited at start-up with code .* \\(port {taken_port}\\)"):
            EmbeddedBroker(port=taken_port).start()
