"""Budget state across restarts and instances, label delay and hot reload, on the real embedded broker."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from connectors.demo.simulate import prediction_records
from connectors.kafka.broker import EmbeddedBroker
from connectors.monitor.loop import Monitor
from tests.conftest import FAST_GROUP
from tests.integration.conftest import RunningMonitors
from tests.integration.streams import config_for, create_topics, produce, read_topic, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

CLASSES = ["ok", "scratch", "dent", "crack"]
ROOT = Path(__file__).resolve().parents[2]
WANT_ALL = {
    "accept": {"default_threshold": 1.0, "thresholds": {}},
    "budget": {"rate": 1.0, "audit_rate": 0.0, "max_burst": 1000},
}
"""Every item wants a label (nothing is accepted, the rate is 100%): only the cap can stop them."""


def snapshot_offsets(servers: str, topic: str) -> int:
    """Sum over partitions of the input offset their latest state snapshot covers."""
    latest = {m.key: orjson.loads(m.value)["offset"] for m in read_topic(servers, topic, idle_s=0.3)}
    return sum(latest.values())


def labeled_ids(servers: str, topic: str) -> list[str]:
    return [orjson.loads(m.value)["id"] for m in read_topic(servers, topic, idle_s=1.0)]


class TestRestart:
    def test_the_cap_holds_over_the_union_of_a_killed_run_and_its_restart(
        self, broker: EmbeddedBroker, unique: str, tmp_path: Path
    ) -> None:
        """SIGKILL after the cap was spent, restart, more items: the restored ledger still has the cap spent,
        so the distinct labeled ids over both runs stay within the hourly cap (a reset would double it)."""
        servers, cap = broker.bootstrap_servers, 24
        cfg = config_for(servers, unique, **WANT_ALL)
        data = cfg.model_dump(mode="json")
        data["budget"]["caps"] = {"hour": cap}
        data["kafka"].update(FAST_GROUP)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        create_topics(cfg)
        produce(
            servers,
            cfg.topics.predictions,
            prediction_records(np.random.default_rng(1), 2_000, CLASSES, prefix="a"),
        )
        cmd = [sys.executable, "-m", "connectors.cli.main", "run", "-c", str(path)]
        first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_for(
                lambda: len(set(labeled_ids(servers, cfg.topics.to_label))) >= cap, 60, "the cap to be spent"
            )
            # a snapshot after the cap was reached: every input decided, its state stored (not a fixed wait,
            # which a loaded machine may outlast)
            wait_for(lambda: snapshot_offsets(servers, cfg.topics.state) >= 2_000, 60, "a snapshot of all")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        produce(
            servers,
            cfg.topics.predictions,
            prediction_records(np.random.default_rng(2), 2_000, CLASSES, prefix="b"),
        )
        second = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        covered = 0
        try:
            deadline = time.monotonic() + 60
            while covered < 4_000 and time.monotonic() < deadline:
                covered = snapshot_offsets(servers, cfg.topics.state)
        finally:
            second.send_signal(signal.SIGTERM)
            out, _ = second.communicate(timeout=30)
        assert covered == 4_000, f"snapshots cover {covered} of 4,000 inputs; second run said:\n{out[-3000:]}"
        assert second.returncode == 0, out
        assert "restored state" in out
        ids = labeled_ids(servers, cfg.topics.to_label)
        assert len(set(ids)) == cap, f"{len(set(ids))} distinct labels over both runs, cap {cap}"
        assert not any(i.startswith("b-") for i in ids), (
            "the restarted run spent budget the cap had no room for"
        )


class TestInstances:
    def test_two_instances_on_four_partitions_hold_every_cap_globally(
        self, broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
    ) -> None:
        """Each instance spends only its partitions' shares of the cap; together they never exceed it."""
        servers, cap = broker.bootstrap_servers, 40
        cfg = config_for(
            servers, unique, accept=WANT_ALL["accept"], budget={**WANT_ALL["budget"], "caps": {"hour": cap}}
        )
        create_topics(cfg)
        a = monitors.start(Monitor(cfg, servers))
        b = monitors.start(Monitor(cfg, servers))
        wait_for(
            lambda: bool(a.assigned) and bool(b.assigned) and not (a.assigned & b.assigned),
            60,
            "both to own partitions",
        )
        produce(servers, cfg.topics.predictions, prediction_records(np.random.default_rng(3), 4_000, CLASSES))
        wait_for(lambda: a.router.stats.total + b.router.stats.total >= 4_000, 60, "4,000 decisions")
        ids = labeled_ids(servers, cfg.topics.to_label)
        assert len(set(ids)) <= cap
        assert len(set(ids)) >= cap - 4, "the shares must add up to (nearly) the whole cap"
        assert a.assigned | b.assigned == {0, 1, 2, 3}
        owned_caps = [
            sum(m.router.state(p).budget.ledger.limits["hour"][1] for p in m.assigned) for m in (a, b)
        ]
        assert sum(owned_caps) == cap


class TestLabelDelay:
    def test_labels_clear_pending_items(
        self, broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
    ) -> None:
        """Items sent for labeling are pending; a label on the labels topic clears exactly its item."""
        servers = broker.bootstrap_servers
        cfg = config_for(servers, unique, budget={"rate": 0.2, "audit_rate": 0.01})
        create_topics(cfg)
        produce(servers, cfg.topics.predictions, prediction_records(np.random.default_rng(4), 1_000, CLASSES))
        m = monitors.start(Monitor(cfg, servers))
        wait_for(lambda: m.router.stats.total >= 1_000, 60, "1,000 decisions")
        sent = sorted(set(labeled_ids(servers, cfg.topics.to_label)))
        assert m.router.pending_count() == len(sent) > 20
        answered = sent[:20]
        labels = [
            (i.encode(), orjson.dumps({"id": i, "label": "ok", "annotator": "a1", "ts": 0})) for i in answered
        ]
        produce(servers, cfg.topics.labels, [*labels, (b"junk", b"not json")])
        wait_for(lambda: m.router.pending_count() == len(sent) - 20, 30, "pending to drop by 20")
        assert m.stats.labels_received == 20
        assert m.stats.bad_labels == 1


class TestHotReload:
    def test_a_new_rate_in_the_file_takes_effect_and_state_survives(
        self,
        broker: EmbeddedBroker,
        unique: str,
        tmp_path: Path,
        monitors: RunningMonitors,
    ) -> None:
        """Raising budget.rate in config.yaml while running: later items are labeled at the new rate, the
        partition states (items, pending) carry on, and an invalid edit is rejected (the rate stays)."""
        servers = broker.bootstrap_servers
        cfg = config_for(servers, unique, budget={"caps": {}})
        data = cfg.model_dump(mode="json")
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        create_topics(cfg)
        m = monitors.start(Monitor(cfg, servers, config_path=path))
        produce(
            servers,
            cfg.topics.predictions,
            prediction_records(np.random.default_rng(5), 20_000, CLASSES, prefix="a"),
        )
        wait_for(lambda: m.router.stats.total >= 20_000, 60, "the first 20,000 decisions")
        before = dict(m.router.stats.items)
        items_before = sum(m.router.state(p).budget.items for p in m.assigned)
        pending_before = m.router.pending_count()

        data["budget"]["rate"] = 0.1
        path.write_text(yaml.safe_dump(data))
        wait_for(lambda: m.config.budget.rate == 0.1, 10, "the reload")
        assert sum(m.router.state(p).budget.items for p in m.assigned) == items_before
        assert m.router.pending_count() == pending_before
        produce(
            servers,
            cfg.topics.predictions,
            prediction_records(np.random.default_rng(6), 20_000, CLASSES, prefix="b"),
        )
        wait_for(lambda: m.router.stats.total >= 40_000, 60, "the next 20,000 decisions")
        after = m.router.stats.items
        labeled = (after["query"] + after["audit"]) - (before["query"] + before["audit"])
        assert (before["query"] + before["audit"]) / 20_000 == pytest.approx(0.02, rel=0.1)
        assert labeled / 20_000 == pytest.approx(0.1, rel=0.1)

        data["budget"]["rate"] = 7
        path.write_text(yaml.safe_dump(data))
        wait_for(lambda: m.stats.reloads["rejected"] == 1, 10, "the invalid edit to be rejected")
        assert m.config.budget.rate == 0.1
        assert m.stats.reloads["applied"] == 1
