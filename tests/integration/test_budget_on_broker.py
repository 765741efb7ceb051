"""The hard hourly cap holds end to end on the broker, with an injected clock."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import numpy as np
import orjson
import pytest

from connectors.demo.simulate import prediction_records
from connectors.kafka.broker import EmbeddedBroker
from connectors.monitor.loop import Monitor
from tests.integration.streams import config_for, create_topics, produce, read_topic

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

CLASSES = ["ok", "scratch", "dent", "crack"]


class FakeClock:
    """Advances ``step_s`` on every call: each polled batch is decided later than the previous one."""

    def __init__(self, start: float, step_s: float) -> None:
        self.now = start
        self.step_s = step_s
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.now += self.step_s
            return self.now


class TestHourlyCap:
    @pytest.mark.parametrize("partitions", [1, 4])
    def test_labels_never_exceed_the_hourly_cap_in_any_sliding_hour(
        self, broker: EmbeddedBroker, unique: str, partitions: int
    ) -> None:
        """Every item wants a label (nothing is accepted, every score qualifies, rate 100%), the clock
        moves 5 minutes per batch: in every sliding hour of decision times there are at most ``cap`` labels.
        With one partition the cap is reached exactly (so it is what binds); with four, each partition spends
        its share of the cap, and the shares add up to the cap."""
        cap = 40
        cfg = config_for(
            broker.bootstrap_servers,
            unique,
            accept={"default_threshold": 1.0, "thresholds": {}},
            budget={
                "rate": 1.0,
                "query_threshold": 0.0,
                "max_burst": 1000,
                "caps": {"hour": cap},
                "audit_rate": 0.01,
            },
            kafka={"max_poll_records": 50, "topic_partitions": partitions},
        )
        create_topics(cfg)
        produce(
            broker.bootstrap_servers,
            cfg.topics.predictions,
            prediction_records(np.random.default_rng(2), 4_000, CLASSES),
        )
        clock = FakeClock(start=1_800_000_000.0, step_s=300.0)
        monitor = Monitor(cfg, broker.bootstrap_servers, clock=clock)
        thread = threading.Thread(target=monitor.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while monitor.router.stats.total < 4_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        monitor.request_stop()
        thread.join(timeout=30)
        assert monitor.router.stats.total == 4_000

        labels = read_topic(broker.bootstrap_servers, cfg.topics.to_label, expect=1)
        times = np.sort(
            [datetime.fromisoformat(orjson.loads(m.value)["decided_at"]).timestamp() for m in labels]
        )
        assert len(labels) == monitor.router.stats.items["query"] + monitor.router.stats.items["audit"]
        in_window = np.searchsorted(times, times, side="right") - np.searchsorted(
            times, times - 3600.0, side="right"
        )
        assert in_window.max() <= cap
        hours = (times[-1] - times[0]) / 3600.0
        assert hours > 3, "the stream must span several hours of the injected clock"
        if partitions == 1:
            assert in_window.max() == cap, "the cap must be reached, or it was not tested"
        else:
            assert in_window.max() >= cap // partitions
