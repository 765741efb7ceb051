"""Each process's HTTP endpoint over a real socket: metrics, liveness, readiness, the JSON status and the
dashboard page."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from connectors.labels.loop import LabelLoop
from connectors.labels.metrics import labels_part
from connectors.model.dataset import DatasetStore
from connectors.model.registry import ModelRegistry
from connectors.model.serving import ModelServer, serve_part
from connectors.monitor.loop import Monitor
from connectors.monitor.metrics import monitor_part
from connectors.web.server import HEALTHY_WITHIN_S, Endpoint
from selector.config import parse_config
from selector.messages.prediction import decode_batch

CFG = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "budget": {"rate": 0.1, "caps": {}}})


def get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def decided_monitor(n: int = 400) -> Monitor:
    monitor = Monitor(CFG, "127.0.0.1:9")
    rng = np.random.default_rng(1)
    raw = rng.dirichlet([1.0] * 4, size=n)
    values = [orjson.dumps({"id": f"w{i}", "probs": (p / p.sum()).tolist()}) for i, p in enumerate(raw)]
    batch = decode_batch(values, np.zeros(n, dtype=np.int64), n_classes=4)
    monitor.router.commit(0, monitor.router.decide(0, batch, np.full(n, 1_800_000_000.0)))
    return monitor


@pytest.fixture
def endpoints() -> Iterator[list[Endpoint]]:
    opened: list[Endpoint] = []
    yield opened
    for e in opened:
        e.close()


class TestEndpoint:
    def test_metrics_health_readiness_status_and_page(self, endpoints: list[Endpoint]) -> None:
        monitor = decided_monitor()
        endpoint = Endpoint([monitor_part(monitor)], "127.0.0.1", 0).start()
        endpoints.append(endpoint)
        port = endpoint.port
        code, kind, body = get(port, "/metrics")
        assert code == 200 and kind.startswith("text/plain")
        query = monitor.router.stats.items["query"]
        assert f'selector_items_total{{route="query"}} {float(query)}'.encode() in body
        assert get(port, "/healthz")[0] == 200  # starting: within the grace period
        assert get(port, "/readyz")[:1] == (503,)  # no partition assigned yet
        monitor.assigned = {0}
        assert get(port, "/readyz")[0] == 200
        code, kind, body = get(port, "/api/status")
        status = orjson.loads(body)
        assert code == 200 and kind == "application/json"
        assert set(status) == {"at", "version", "monitor", "kafka"}
        assert status["kafka"] == {"reachable": True, "unreachable_since": None, "outages": 0}
        m = status["monitor"]
        assert m["items"] == monitor.router.stats.items and m["total"] == 400
        assert sum(m["requested_by_class"].values()) == m["items"]["query"] + m["items"]["audit"]
        assert len(m["score_histogram"]["counts"]) == 20 and sum(m["score_histogram"]["counts"]) == 400
        expected = {
            "rate": 0.1,
            "audit_rate": 0.002,
            "caps": {},
            "cap_remaining": {},
            "cap_reached": [],
            "shortfall": {"floor": 0.0, "cap": 0.0},
            "model_switches": 0,
        }
        assert {k: m["budget"][k] for k in expected} == expected
        code, kind, body = get(port, "/")
        assert code == 200 and kind.startswith("text/html") and b'data-metric="items.query"' in body
        assert get(port, "/nope")[0] == 404

    def test_a_stalled_loop_is_unhealthy(self, endpoints: list[Endpoint]) -> None:
        monitor = decided_monitor(10)
        endpoint = Endpoint([monitor_part(monitor)], "127.0.0.1", 0).start()
        endpoints.append(endpoint)
        endpoint.started -= 2 * HEALTHY_WITHIN_S  # long past start-up
        monitor.stats.last_progress = endpoint.started + 1
        code, _, body = get(endpoint.port, "/healthz")
        assert (code, body) == (503, b"stalled\n")
        monitor.stats.last_progress = endpoint.started + 2 * HEALTHY_WITHIN_S - 1
        assert get(endpoint.port, "/healthz")[0] == 200

    def test_a_kafka_outage_is_not_ready_nor_stalled_and_the_status_says_since_when(
        self, endpoints: list[Endpoint]
    ) -> None:
        """While the cluster does not answer: /readyz 503, /healthz 200 even with a loop blocked in a delivery
        (the outage deadline bounds the wait, not a liveness restart), the status and the metrics say so;
        all back to normal when it answers."""
        monitor = decided_monitor(10)
        monitor.assigned = {0}
        endpoint = Endpoint([monitor_part(monitor)], "127.0.0.1", 0).start()
        endpoints.append(endpoint)
        endpoint.started -= 2 * HEALTHY_WITHIN_S
        monitor.stats.last_progress = endpoint.started + 1  # blocked for long
        monitor.outage.failed(1_800_000_000.0, 1_800_000_002.0, "connection refused")
        assert get(endpoint.port, "/readyz")[:1] == (503,)
        assert get(endpoint.port, "/healthz")[0] == 200
        status = orjson.loads(get(endpoint.port, "/api/status")[2])
        expected = {"reachable": False, "unreachable_since": 1_800_000_000.0, "outages": 1}
        assert status["kafka"] == expected and status["monitor"]["kafka"] == expected
        body = get(endpoint.port, "/metrics")[2]
        assert b"selector_kafka_unreachable 1.0" in body and b"selector_kafka_outages_total 1.0" in body
        monitor.outage.answered(1_800_000_009.0)
        assert get(endpoint.port, "/readyz")[0] == 200
        assert get(endpoint.port, "/healthz")[0] == 503  # stalled, and no outage explains it
        body = get(endpoint.port, "/metrics")[2]
        assert b"selector_kafka_unreachable 0.0" in body and b"selector_kafka_outages_total 1.0" in body

    def test_one_endpoint_for_three_parts_exposes_one_parts_metrics(
        self, endpoints: list[Endpoint], tmp_path: Path
    ) -> None:
        """The demo's endpoint: status and readiness of all three parts (ready only when all are), the
        metrics of the monitor alone (the parts share metric names); NaN estimates are null in JSON."""
        monitor = decided_monitor(10)
        monitor.assigned = {0}
        loop = LabelLoop(CFG, "127.0.0.1:9", DatasetStore(":memory:"))
        server = ModelServer(CFG, "127.0.0.1:9", ModelRegistry(tmp_path))
        parts = [monitor_part(monitor), labels_part(loop), serve_part(server)]
        endpoint = Endpoint(parts, "127.0.0.1", 0, metrics_of=parts[:1]).start()
        endpoints.append(endpoint)
        status = orjson.loads(get(endpoint.port, "/api/status")[2])
        assert set(status) == {"at", "version", "monitor", "labels", "serve", "kafka"}
        assert status["labels"]["accuracy"]["overall"] == {"estimate": None, "low": 0.0, "high": 1.0, "n": 0}
        reachable = {"reachable": True, "unreachable_since": None, "outages": 0}
        no_dead_letters = {"serve": 0, "score": 0, "encode": 0, "produce": 0}
        assert status["serve"] == {"model": None, "members": 0, "items": 0, "dead_letters": 0,
                                   "dead_letters_by_stage": no_dead_letters,
                                   "loads": {"loaded": 0, "refused": 0}, "last_progress": 0.0,
                                   "kafka": reachable}  # fmt: skip
        assert get(endpoint.port, "/readyz")[0] == 503  # no round done, no model
        loop.rounds = 1
        assert get(endpoint.port, "/readyz")[0] == 503  # still no model
        body = get(endpoint.port, "/metrics")[2]
        assert b"selector_items_total" in body and b"selector_label_messages_total" not in body
