"""A hard cap that binds is said, wherever an operator looks: /api/status (`budget.cap_reached`), the
dashboard (a visible "cap reached, labeling paused until HH:MM" banner, in real headless Chromium), the
monitor's log (once when it starts, once when it lifts), the demo's summary line; and the demo's caps follow
its line's rate, saying what it raised."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from connectors.demo.run import caps_for_rate, summary_line
from connectors.labels.loop import LabelLoop
from connectors.labels.metrics import labels_part
from connectors.model.registry import ModelRegistry
from connectors.model.serving import ModelServer, serve_part
from connectors.monitor.cap_watch import CapWatch, clock_time
from connectors.monitor.loop import Monitor
from connectors.monitor.metrics import monitor_part
from connectors.web.server import Endpoint
from selector.config import parse_config
from selector.messages.prediction import decode_batch
from tests.connectors.labels.test_status import filled_store
from tests.connectors.web.test_dashboard_browser import browse
from tests.connectors.web.test_web import get

CAPPED = parse_config(
    {
        "kafka": {"bootstrap_servers": "127.0.0.1:9"},
        "budget": {"rate": 0.5, "audit_rate": 0.0, "caps": {"hour": 5, "day": 1000}},
    }
)
"""Half the items asked for, at most 5 labels an hour: 200 uncertain items spend the hour's cap."""
PAUSED = "cap reached (hour: 5 labels), labeling paused until"


def capped_monitor(started: float) -> Monitor:
    """A monitor that decided 200 uncertain items one a second from ``started``: 5 labeled, then the cap."""
    monitor = Monitor(CAPPED, "127.0.0.1:9")
    values = [orjson.dumps({"id": f"c{i}", "probs": [0.25] * 4}) for i in range(200)]
    batch = decode_batch(values, np.zeros(200, dtype=np.int64), n_classes=4)
    monitor.router.commit(0, monitor.router.decide(0, batch, started + np.arange(200, dtype=np.float64)))
    assert monitor.router.stats.items["query"] + monitor.router.stats.items["audit"] == 5
    return monitor


def first_grant(monitor: Monitor) -> float:
    return float(monitor.router.state(0).budget.ledger.grants["hour"][0])


class TestStatusContract:
    def test_a_binding_cap_is_in_the_status_with_its_end(self) -> None:
        """`budget.cap_reached` lists the hour cap: spent on the one owned partition (paused), until the
        first counted grant leaves the hour; the day cap, with room, is not listed."""
        monitor = capped_monitor(time.time() - 300)
        (reached,) = monitor_part(monitor).status()["budget"]["cap_reached"]
        until = first_grant(monitor) + 3600
        assert reached == {
            "horizon": "hour",
            "cap": 5,
            "blocked_partitions": 1,
            "partitions": 1,
            "paused": True,
            "until": until,
            "message": f"{PAUSED} {clock_time(until)} (budget.caps)",
        }

    def test_over_http_and_empty_when_nothing_binds(self) -> None:
        """The same through /api/status; a monitor whose cap has room reports an empty list."""
        monitor = capped_monitor(time.time() - 300)
        endpoint = Endpoint([monitor_part(monitor)], "127.0.0.1", 0).start()
        try:
            status = orjson.loads(get(endpoint.port, "/api/status")[2])
            assert [c["horizon"] for c in status["monitor"]["budget"]["cap_reached"]] == ["hour"]
        finally:
            endpoint.close()
        roomy = capped_monitor(time.time() - 7200)  # those grants left the hour long ago
        assert monitor_part(roomy).status()["budget"]["cap_reached"] == []

    def test_the_log_says_so_once_when_it_starts_and_once_when_it_lifts(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """CapWatch, checked every loop: one WARNING with the end time, nothing while it lasts, one INFO when
        the hour frees (time injected)."""
        monitor = capped_monitor(1_800_000_000.0)
        watch = CapWatch(interval_s=1.0)
        until = first_grant(monitor) + 3600
        with caplog.at_level(logging.INFO, logger="connectors.monitor.cap_watch"):
            for now in (1_800_000_300.0, 1_800_000_301.0, 1_800_000_900.0):
                watch.check(monitor.router, now)
            watch.check(monitor.router, until)
        messages = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert messages == [
            (
                "WARNING",
                f"{PAUSED} {clock_time(until)} (budget.caps)",
            ),
            ("INFO", "cap 'hour' has room again: labeling resumed"),
        ]


class TestDemo:
    def test_the_demos_caps_follow_its_rate_and_say_what_was_raised(self) -> None:
        """500 items/s at 2%: 10 labels a second; the shipped cap of 1,000 an hour would stop labels after
        ~2 minutes, so it is raised to 1.5 x 36,000; a cap already above that stays."""
        caps, notes = caps_for_rate(parse_config({}), 500.0)
        assert caps == {"hour": 54_000} and notes == ["budget.caps.hour 1000 -> 54000"]
        big = parse_config({"budget": {"caps": {"minute": 10_000, "day": 10_000_000}}})
        assert caps_for_rate(big, 500.0) == ({"minute": 10_000, "day": 10_000_000}, [])

    def test_the_summary_line_says_a_cap_binds_and_until_when(self, tmp_path: Path) -> None:
        monitor = capped_monitor(time.time() - 300)
        store, _, _ = filled_store()
        loop = LabelLoop(CAPPED, "127.0.0.1:9", store)
        server = ModelServer(CAPPED, "127.0.0.1:9", ModelRegistry(tmp_path / "models"))
        line = summary_line(200, monitor, server, loop, time.time())
        until = clock_time(first_grant(monitor) + 3600)
        assert line.endswith(f"| cap reached (hour: 5 labels), labeling paused until {until} (budget.caps)")
        assert "cap reached" not in summary_line(
            200, capped_monitor(time.time() - 7200), server, loop, time.time()
        )


@pytest.fixture
def capped_page(tmp_path: Path) -> Iterator[tuple[Endpoint, Monitor]]:
    monitor = capped_monitor(time.time() - 300)
    monitor.assigned = {0}
    store, _, _ = filled_store()
    loop = LabelLoop(CAPPED, "127.0.0.1:9", store, status_interval_s=0.0)
    loop.rounds = 1
    server = ModelServer(CAPPED, "127.0.0.1:9", ModelRegistry(tmp_path / "models"))
    parts = [monitor_part(monitor), labels_part(loop), serve_part(server)]
    endpoint = Endpoint(parts, "127.0.0.1", 0, metrics_of=parts[:1]).start()
    yield endpoint, monitor
    endpoint.close()


def test_the_dashboard_shows_the_pause_and_until_when(capped_page: tuple[Endpoint, Monitor]) -> None:
    """In headless Chromium, the banner is visible (not hidden) and says which cap and the end time, as the
    server's status says it (the page formats HH:MM in the same local time)."""
    endpoint, monitor = capped_page
    dom = browse(f"http://127.0.0.1:{endpoint.port}/", "--dump-dom")
    (banner,) = re.findall(r'<div id="cap-banner"([^>]*)>([^<]*)</div>', dom)
    attributes, text = banner
    assert "hidden" not in attributes
    until = clock_time(first_grant(monitor) + 3600)
    assert text == f"cap reached (hour: 5 labels), labeling paused until {until}"


def test_the_dashboard_shows_the_unspent_budget_by_reason(capped_page: tuple[Endpoint, Monitor]) -> None:
    """The hour cap held labels back (reason cap) and, say, a floor left 3.5 labels unspent: the rate card
    shows one visible line with both, largest first, the numbers of /api/status's budget.shortfall."""
    endpoint, monitor = capped_page
    monitor.router.stats.record_budget({"floor": 3.5}, 0)
    shortfall = orjson.loads(get(endpoint.port, "/api/status")[2])["monitor"]["budget"]["shortfall"]
    assert shortfall["cap"] > 3.5 and shortfall["floor"] == 3.5
    dom = browse(f"http://127.0.0.1:{endpoint.port}/", "--dump-dom")
    (line,) = re.findall(r'<div id="shortfall"([^>]*)>([^<]*)</div>', dom)
    attributes, text = line
    assert "hidden" not in attributes
    assert text == f"budget unspent: cap {shortfall['cap']:.1f}, floor 3.5 labels"
