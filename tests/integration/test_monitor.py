"""The monitor end to end on the real embedded broker: accounting, metrics, cap, drain, outage."""

from __future__ import annotations

import urllib.request
from collections import Counter
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

import selector
from connectors.demo.simulate import prediction_records
from connectors.kafka.broker import EmbeddedBroker
from connectors.monitor.loop import Monitor
from connectors.monitor.metrics import monitor_part
from connectors.web.metrics import serve
from selector.messages.contracts import DLQ_HEADERS, Accepted, ToLabel
from tests.integration.conftest import RunningMonitors
from tests.integration.streams import config_for, produce, read_topic, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

CLASSES = ["ok", "scratch", "dent", "crack"]


def malformed_records(n: int) -> list[tuple[bytes, bytes | None, str]]:
    """``n`` broken records cycling through every kind of bad input: (key, value, expected reason)."""
    kinds: list[tuple[Callable[[str], bytes | None], str]] = [
        (lambda i: b'{"id": "' + i.encode() + b'", "probs": [0.5, 0.5', "malformed_json"),
        (lambda i: b"[1, 2, 3]", "not_an_object"),
        (lambda i: b'{"probs": [0.7, 0.1, 0.1, 0.1]}', "missing_id"),
        (lambda i: orjson.dumps({"id": i, "probs": [0.5, 0.5]}), "wrong_class_count"),
        (lambda i: b'{"id": "' + i.encode() + b'", "probs": [NaN, 0.5, 0.25, 0.25]}', "non_finite"),
        (lambda i: orjson.dumps({"id": i, "probs": [1.2, -0.2, 0.0, 0.0]}), "prob_out_of_range"),
        (lambda i: orjson.dumps({"id": i, "probs": [0.5, 0.3, 0.1, 0.0]}), "not_normalized"),
        (lambda i: orjson.dumps({"id": i, "probs": [0.4, "x", 0.3, 0.3]}), "not_numeric"),
        (lambda i: orjson.dumps({"id": i, "probs": [1, 0, 0, 0], "ts": "yesterday"}), "bad_ts"),
        (lambda i: orjson.dumps({"id": i, "probs": [1, 0, 0, 0], "payload": "x" * 5000}), "oversize"),
        (lambda i: None, "empty"),
    ]
    out = []
    for j in range(n):
        make, reason = kinds[j % len(kinds)]
        rid = f"bad-{j:05d}"
        out.append((rid.encode(), make(rid), reason))
    return out


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class TestAccounting:
    def test_every_input_is_accounted_for_exactly_once_and_metrics_match_topics(
        self, broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
    ) -> None:
        """10,000 predictions with 220 malformed ones of 11 kinds: each id lands in exactly one of accepted,
        to-label, dead-letter, or is counted as a skip, and the /metrics counters equal the topic contents."""
        cfg = config_for(broker.bootstrap_servers, unique, input={"max_record_bytes": 4096})
        bad = malformed_records(220)
        good = list(
            prediction_records(np.random.default_rng(7), 10_000 - len(bad), CLASSES, prefix=f"ok-{unique}")
        )
        rng = np.random.default_rng(3)
        records = [(k, v) for k, v in good] + [(k, v) for k, v, _ in bad]
        order = rng.permutation(len(records))
        produce(broker.bootstrap_servers, cfg.topics.predictions, [records[i] for i in order])

        monitor = Monitor(cfg, broker.bootstrap_servers)
        endpoint = serve([monitor_part(monitor)], "127.0.0.1", 0)
        port = endpoint.port
        monitors.start(monitor)
        wait_for(
            lambda: monitor.router.stats.total + monitor.router.stats.dead_letters["decode"] >= 10_000,
            60,
            "10,000 decisions",
        )

        servers = broker.bootstrap_servers
        accepted = read_topic(servers, cfg.topics.accepted, expect=monitor.router.stats.items["accept"])
        to_label = read_topic(servers, cfg.topics.to_label, expect=1)
        dead = read_topic(servers, cfg.topics.dead_letter, expect=len(bad))
        metrics = scrape(port)

        acc_ids = [orjson.loads(m.value)["id"] for m in accepted]
        lab = [orjson.loads(m.value) for m in to_label]
        lab_ids = [v["id"] for v in lab]
        dead_keys = [m.key.decode() for m in dead]
        assert len(set(acc_ids)) == len(acc_ids) and len(set(lab_ids)) == len(lab_ids)
        assert not (set(acc_ids) & set(lab_ids)) and not (set(acc_ids) | set(lab_ids)) & set(dead_keys)
        assert sorted(dead_keys) == sorted(k.decode() for k, _, _ in bad)
        good_ids = {k.decode() for k, _ in good}
        skipped = good_ids - set(acc_ids) - set(lab_ids)
        assert set(acc_ids) | set(lab_ids) <= good_ids

        def metric(name: str, **labels: str) -> float:
            return metrics[(name, tuple(sorted(labels.items())))]

        assert metric("selector_items_total", route="accept") == len(acc_ids)
        audits = sum(v["route"] == "audit" for v in lab)
        assert metric("selector_items_total", route="query") == len(lab_ids) - audits
        assert metric("selector_items_total", route="audit") == audits
        assert metric("selector_items_total", route="skip") == len(skipped)
        assert metric("selector_dead_letters_total", stage="decode") == len(dead_keys)
        assert sum(
            metric("selector_items_total", route=r) for r in ("accept", "query", "audit", "skip")
        ) == len(good)
        assert metric("selector_score_count") == len(good)

    def test_dead_letters_keep_original_bytes_and_carry_every_header(
        self, broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
    ) -> None:
        """A dead letter is the original key and value, unchanged, with all x-dlq-* headers and reason."""
        cfg = config_for(broker.bootstrap_servers, unique, input={"max_record_bytes": 4096})
        bad = malformed_records(11)
        placed = produce(broker.bootstrap_servers, cfg.topics.predictions, [(k, v) for k, v, _ in bad])
        monitor = Monitor(cfg, broker.bootstrap_servers)
        monitors.start(monitor)
        dead = read_topic(broker.bootstrap_servers, cfg.topics.dead_letter, expect=len(bad), timeout_s=40)
        by_key = {m.key: m for m in dead}
        assert len(dead) == len(bad)
        for (key, value, reason), (partition, offset) in zip(bad, placed, strict=True):
            m = by_key[key]
            assert m.value == value
            assert set(DLQ_HEADERS) <= set(m.headers)
            assert m.headers["x-dlq-reason"].decode() == reason
            assert m.headers["x-dlq-stage"] == b"decode"
            assert m.headers["x-dlq-original-topic"].decode() == cfg.topics.predictions
            assert int(m.headers["x-dlq-original-partition"]) == partition
            assert int(m.headers["x-dlq-original-offset"]) == offset
            assert m.headers["x-dlq-app-version"].decode() == selector.__version__
            assert m.headers["x-dlq-exception-message"]

    def test_outputs_follow_the_contracts_and_are_keyed_by_id(
        self, broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
    ) -> None:
        """Every to-label and accepted record validates against its contract and its key is the item id."""
        cfg = config_for(broker.bootstrap_servers, unique, budget={"rate": 0.2, "audit_rate": 0.05})
        produce(
            broker.bootstrap_servers,
            cfg.topics.predictions,
            prediction_records(np.random.default_rng(1), 500, CLASSES),
        )
        monitor = Monitor(cfg, broker.bootstrap_servers)
        monitors.start(monitor)
        wait_for(lambda: monitor.router.stats.total >= 500, 40, "500 decisions")
        accepted = read_topic(
            broker.bootstrap_servers, cfg.topics.accepted, expect=monitor.router.stats.items["accept"]
        )
        to_label = read_topic(broker.bootstrap_servers, cfg.topics.to_label, expect=1)
        assert accepted and to_label
        for m in accepted:
            rec = Accepted.model_validate_json(m.value)
            assert m.key == rec.id.encode()
        routes = Counter()
        for m in to_label:
            lab = ToLabel.model_validate_json(m.value)
            assert m.key == lab.id.encode()
            routes[lab.route] += 1
            assert cfg.budget.audit_rate <= lab.query_probability <= 1.0
            # a query comes from the common pool, at random while its window is young (cold_start)
            assert lab.selected_by in (("audit",) if lab.route == "audit" else ("uncertainty", "cold_start"))
            if lab.route == "query":
                assert (lab.threshold is None) == (lab.selected_by == "cold_start")
            assert lab.selector.config_hash == cfg.config_hash()
        assert routes["query"] == monitor.router.stats.items["query"]
        assert routes["audit"] == monitor.router.stats.items["audit"]
