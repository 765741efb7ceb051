"""The outage watch: one warning, rate-limited reminders, a deadline that raises exit 4's error; the probe
on a port where nothing listens; kafka-python's repeated warnings let through once per window."""

from __future__ import annotations

import logging
import os

import pytest
from kafka.errors import Cancelled, KafkaConnectionError

from connectors.kafka.broker import free_port
from connectors.kafka.outage import (
    HARD_EXIT_GRACE_S,
    BrokerProbe,
    OutageWatch,
    _OncePerWindow,
    clock_text,
    quiet_kafka_logs,
)
from selector.config import parse_config
from selector.errors import KafkaOutageError

T0 = 1_800_000_000.0


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "selector.outage"]


class TestOutageWatch:
    def test_one_warning_then_a_reminder_per_window_then_one_line_when_it_answers(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        watch = OutageWatch("h:9092", deadline_s=300.0, reminder_s=60.0)
        caplog.set_level(logging.INFO, logger="selector.outage")
        for t in range(0, 150, 1):  # a probe a second for 150 s
            watch.failed(T0 + t, T0 + t + 0.5, "connection refused")
        lines = outage_lines(caplog)
        since = clock_text(T0)
        assert lines[0].startswith(f"Kafka unreachable since {since} (connection refused at 'h:9092')")
        assert f"exits (code 4) at {clock_text(T0 + 300)}" in lines[0]
        assert [ln.split(" (")[0] for ln in lines[1:]] == [f"Kafka still unreachable since {since}"] * 2
        assert watch.outages == 1 and watch.since == T0 and not watch.reachable
        watch.answered(T0 + 151)
        assert outage_lines(caplog)[-1] == "Kafka reachable again after 151 s unreachable"
        assert watch.reachable and watch.since is None
        watch.failed(T0 + 200, T0 + 201, "timed out")
        assert watch.outages == 2

    def test_the_deadline_counts_from_the_first_failed_probe(self) -> None:
        watch = OutageWatch("h:9092", deadline_s=10.0)
        assert watch.remaining_s(T0) == 10.0
        watch.raise_if_expired(T0)  # reachable: nothing to raise
        watch.failed(T0, T0 + 3, "request timed out")
        assert watch.remaining_s(T0 + 4) == pytest.approx(6.0)
        watch.raise_if_expired(T0 + 9.9)
        with pytest.raises(KafkaOutageError) as err:
            watch.raise_if_expired(T0 + 10.0)
        message = str(err.value)
        assert "\n" not in message
        since = clock_text(T0)
        assert f"Kafka at 'h:9092' unreachable since {since} (10 s, last error: request timed out)" in message
        assert "'kafka.outage_deadline_s' (10 s)" in message
        assert err.value.deadline_s == 10.0 and err.value.servers == "h:9092"

    def test_status_says_since_when(self) -> None:
        watch = OutageWatch("h:9092", deadline_s=10.0)
        assert watch.status() == {"reachable": True, "unreachable_since": None, "outages": 0}
        watch.failed(T0, T0 + 1, "x")
        assert watch.status() == {"reachable": False, "unreachable_since": T0, "outages": 1}


class TestBrokerProbe:
    def test_a_port_where_nothing_listens_is_an_outage(self, caplog: pytest.LogCaptureFixture) -> None:
        """One probe against a closed port fails within its timeout (1 s at a 4 s deadline) and starts an
        outage; no network happens before the first probe."""
        servers = f"127.0.0.1:{free_port()}"
        config = parse_config({"kafka": {"bootstrap_servers": servers, "outage_deadline_s": 4}})
        watch = OutageWatch(servers, 4.0)
        probe = BrokerProbe(config, servers, watch)
        assert probe.timeout_s == 1.0 and watch.reachable
        caplog.set_level(logging.WARNING, logger="selector.outage")
        probe.probe_once()
        assert not watch.reachable and watch.outages == 1
        assert outage_lines(caplog)[0].startswith("Kafka unreachable since")

    def test_a_process_stuck_past_the_deadline_is_ended_with_exit_4(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The last resort of the bound: while the outage is younger than the deadline plus the grace the
        probe lets the loop exit on its own; past it, it logs the command line's one ERROR line, exits 4."""
        servers = "127.0.0.1:9"
        config = parse_config({"kafka": {"bootstrap_servers": servers, "outage_deadline_s": 8}})
        watch = OutageWatch(servers, 8.0)
        probe = BrokerProbe(config, servers, watch)
        watch.failed(T0, T0, "connection refused")
        codes: list[int] = []
        monkeypatch.setattr(os, "_exit", codes.append)
        caplog.set_level(logging.ERROR, logger="selector")
        probe._exit_if_stuck(T0 + 8.0 + HARD_EXIT_GRACE_S - 0.1)
        assert codes == []
        probe._exit_if_stuck(T0 + 8.0 + HARD_EXIT_GRACE_S)
        assert codes == [4]
        (line,) = [r.getMessage() for r in caplog.records if r.name == "selector"]
        assert "past 'kafka.outage_deadline_s'" in line


class Collect(logging.Handler):
    """A root handler that keeps the messages it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class TestQuietKafkaLogs:
    def test_requests_cancelled_by_closing_the_client_are_not_logged(self) -> None:
        """A clean stop cancels the client's requests in flight: kafka-python logs an ERROR no operator can
        act on; it is dropped, another error of the same template is kept, and a second handler of the root
        logger sees the same lines as the first."""
        root = logging.getLogger()
        first, second = Collect(), Collect()
        before = {h: list(h.filters) for h in root.handlers}
        root.addHandler(first)
        root.addHandler(second)
        try:
            quiet_kafka_logs()
            cluster = logging.getLogger("kafka.cluster")
            cluster.error("Metadata refresh: failed %s", Cancelled("closed"))
            cluster.error("Metadata refresh: failed %s", KafkaConnectionError("reset"))
            logging.getLogger("selector").error("kept %s", Cancelled("not kafka-python's"))
        finally:
            root.removeHandler(first)
            root.removeHandler(second)
            for handler, filters in before.items():
                handler.filters = filters
            logging.getLogger("kafka").setLevel(logging.NOTSET)
        expected = [
            "Metadata refresh: failed KafkaConnectionError: reset",
            "kept Cancelled: not kafka-python's",
        ]
        assert first.lines == second.lines == expected

    def test_kafka_pythons_own_closed_socket_race_is_a_warning(self) -> None:
        """kafka-python reading from a transport it already closed logs an ERROR with an AttributeError (seen
        when a group member was killed): it reconnects by itself, so it passes as a WARNING, without stack."""
        root = logging.getLogger()
        seen: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record)

        keep, before = Keep(), {h: list(h.filters) for h in root.handlers}
        root.addHandler(keep)
        try:
            quiet_kafka_logs()
            transport = logging.getLogger("kafka.net.transport")
            try:
                None.recv  # type: ignore[attr-defined]  # noqa: B018
            except AttributeError:
                transport.exception("%s: Error receiving network data closing socket", "<transport (closed)>")
            try:
                raise ConnectionResetError("reset")
            except ConnectionResetError:
                transport.exception("%s: Error sending", "<transport>")
        finally:
            root.removeHandler(keep)
            for handler, filters in before.items():
                handler.filters = filters
            logging.getLogger("kafka").setLevel(logging.NOTSET)
        assert [(r.levelname, r.exc_info) for r in seen] == [("WARNING", None), ("ERROR", None)]
        assert "AttributeError: 'NoneType' object has no attribute 'recv'" in seen[0].getMessage()

    def test_each_message_template_passes_once_per_window(self) -> None:
        now = [0.0]
        once = _OncePerWindow(60.0, clock=lambda: now[0])

        def record(msg: str, *args: object) -> logging.LogRecord:
            return logging.LogRecord("kafka.conn", logging.WARNING, "f", 1, msg, args, None)

        assert once.filter(record("%s: Request timed out after %d ms", "node 1", 3000))
        assert not once.filter(record("%s: Request timed out after %d ms", "node 2", 2999))
        assert once.filter(record("Bootstrap failed: %s", "x"))
        now[0] = 60.0
        assert once.filter(record("%s: Request timed out after %d ms", "node 1", 3000))
