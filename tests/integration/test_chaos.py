"""Chaos on the broker: the processes of the pipeline SIGKILLed at seeded random moments and restarted, again
and again, and an exact account at the end (issue 12, must-hold 4).

1. serve-model, the monitor and the label loop, each killed three times while features flow, models are
   promoted and a simulated annotator answers every to-label record: every feature id is decided (reaches
   `accepted` or `to-label`), every decision sent for labeling is stored, every label is stored exactly once,
   every promoted model is served, nothing is dead-lettered, and every process still drains and exits 0.
2. Two monitors in one group on four partitions, one killed and restarted mid-stream while a minute cap binds:
   no sliding minute of decision times holds more labels than the cap over both instances, and every id is
   routed.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.kafka.broker import EmbeddedBroker, free_port
from connectors.model.registry import ModelRegistry
from selector.config import Config
from tests.connectors.model.test_serving import CLASSES, ensemble, graph
from tests.integration.streams import config_for, create_topics, produce, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

ROOT = Path(__file__).resolve().parents[2]
ACCEPT_ALL = {"default_threshold": 0.0, "thresholds": {}}
"""every item accepted unless sent for labeling: every input id reaches an output topic"""


class Restartable:
    """A `selector` command as a real process, killed and started again on the same config file; the merged
    output of every run is kept."""

    def __init__(self, tmp_path: Path, name: str, command: str, config: Config) -> None:
        self.name, self.command = name, command
        self.port = free_port()
        metrics = {"enabled": True, "host": "127.0.0.1", "port": self.port}
        metrics |= {"labels_port": self.port, "serve_port": self.port}
        data = config.model_dump(mode="json")
        data["metrics"] = {**data["metrics"], **metrics}
        self.path = tmp_path / f"{name}.yaml"
        self.path.write_text(yaml.safe_dump(data))
        self.lines: list[str] = []
        self.runs: list[subprocess.Popen[str]] = []
        self.readers: list[threading.Thread] = []
        self.kills = 0

    @property
    def proc(self) -> subprocess.Popen[str]:
        return self.runs[-1]

    def start(self) -> Restartable:
        proc = subprocess.Popen(
            [sys.executable, "-m", "connectors.cli.main", self.command, "-c", str(self.path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.runs.append(proc)
        self.lines.append(f"--- {self.name} run {len(self.runs)}")
        self.readers.append(threading.Thread(target=self._read, args=(proc,), daemon=True))
        self.readers[-1].start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(f"{self.name}: {line.rstrip()}")

    @property
    def output(self) -> str:
        return "\n".join(self.lines[-150:])

    def assigned(self) -> list[int]:
        """The partitions the current run of a monitor was assigned last (from its log)."""
        run = max(i for i, ln in enumerate(self.lines) if ln.startswith("---"))
        found = [ln for ln in self.lines[run:] if "assigned partitions [" in ln]
        return orjson.loads(found[-1].split("assigned partitions ")[1].split(" of ")[0]) if found else []

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the running process (it must be running: a process that died by itself is a failure)."""
        assert self.alive(), f"{self.name} exited with {self.proc.returncode} before its kill:\n{self.output}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._drain()
        self.kills += 1

    def _drain(self) -> None:
        """Wait for the reader of the current run to take its last lines (the pipe ends with the process):
        they must neither be missed by the checks nor land after the next run's marker."""
        self.readers[-1].join(timeout=10)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 60) -> None:
        wait_for(lambda: self.ready() or not self.alive(), timeout_s, f"{self.name} ready")
        assert self.alive(), self.output

    def stop(self) -> int | None:
        """SIGTERM (drain) and the exit code; SIGKILL after 30 s."""
        if not self.runs:
            return None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait(timeout=10)
        self._drain()
        return code


class Watcher(threading.Thread):
    """Reads the output topics as they grow (no group, from the beginning) and, as an annotator, answers each
    to-label id once on the labels topic."""

    def __init__(self, servers: str, cfg: Config, rng: np.random.Generator) -> None:
        super().__init__(daemon=True)
        self.servers, self.cfg, self.rng = servers, cfg, rng
        self.lock = threading.Lock()
        self.models: dict[str, set[str]] = {}
        """prediction ids per model version"""
        self.routed: Counter[str] = Counter()
        """output records (accepted and to-label) per id"""
        self.to_label: dict[str, list[str]] = {}
        """decided_at of every to-label record, per id"""
        self.dead: list[tuple[bytes | None, dict[str, bytes]]] = []
        self.labeled: set[str] = set()
        self.stop_event = threading.Event()

    def run(self) -> None:
        t = self.cfg.topics
        consumer = KafkaConsumer(bootstrap_servers=self.servers, enable_auto_commit=False, group_id=None)
        producer = KafkaProducer(bootstrap_servers=self.servers, acks="all", linger_ms=5)
        tps = [
            TopicPartition(topic, p)
            for topic in (t.predictions, t.accepted, t.to_label, t.dead_letter)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        try:
            while not self.stop_event.is_set():
                answers = []
                for tp, records in consumer.poll(timeout_ms=200).items():
                    with self.lock:
                        for r in records:
                            answers += self._see(tp.topic, r.key, r.value, dict(r.headers or []))
                for rid in answers:
                    label = CLASSES[int(self.rng.integers(len(CLASSES)))]
                    value = orjson.dumps({"id": rid, "label": label, "annotator": "chaos"})
                    producer.send(t.labels, key=rid.encode(), value=value)
                producer.flush()
        finally:
            producer.close()
            consumer.close()

    def _see(
        self, topic: str, key: bytes | None, value: bytes | None, headers: dict[str, bytes]
    ) -> list[str]:
        t = self.cfg.topics
        if topic == t.dead_letter:
            self.dead.append((key, headers))
            return []
        v = orjson.loads(value or b"")
        if topic == t.predictions:
            self.models.setdefault(v.get("model", ""), set()).add(v["id"])
            return []
        self.routed[v["id"]] += 1
        if topic != t.to_label:
            return []
        self.to_label.setdefault(v["id"], []).append(v["decided_at"])
        if v["id"] in self.labeled:
            return []
        self.labeled.add(v["id"])
        return [v["id"]]

    def snapshot(self) -> tuple[set[str], set[str]]:
        """(routed ids, labeled ids) now."""
        assert self.is_alive() or self.stop_event.is_set(), "the watcher thread failed"
        with self.lock:
            return set(self.routed), set(self.labeled)


def stored_labels(path: Path) -> Counter[str]:
    """Label messages stored per id (read while the label loop writes: a short read-only connection)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return Counter(row[0] for row in db.execute("SELECT id FROM label_events"))
    except sqlite3.OperationalError:  # not created yet
        return Counter()
    finally:
        db.close()


def features(prefix: str, n: int, rng: np.random.Generator) -> list[tuple[bytes, bytes]]:
    x = rng.normal(size=(n, 6))
    return [
        (f"{prefix}-{k}".encode(), orjson.dumps({"id": f"{prefix}-{k}", "embedding": x[k].tolist()}))
        for k in range(n)
    ]


def run_schedule(events: list[tuple[float, Callable[[], None]]]) -> None:
    """Run (seconds from now, action) events in time order; an action that waits shifts the ones after it."""
    began = time.monotonic()
    for at, action in sorted(events, key=lambda e: e[0]):
        time.sleep(max(0.0, began + at - time.monotonic()))
        before = time.monotonic()
        action()
        began += max(0.0, time.monotonic() - before - 0.5)  # a long action (a barrier) delays the rest


SEED = 20261124


def test_processes_killed_at_random_moments_lose_nothing_and_store_every_label_once(
    broker: EmbeddedBroker, unique: str, tmp_path: Path
) -> None:
    """serve-model, the monitor and the label loop are SIGKILLed three times each at seeded random moments of
    a stream of 3,000 features (100 a second), and restarted at once; two new models are promoted on the way.
    At the end: every feature id routed at least once, every to-label decision and every label stored, each
    label exactly once, nothing parked or dead-lettered, each promoted model served, no ERROR logged, and
    each process drains and exits 0 on SIGTERM."""
    servers = broker.bootstrap_servers
    rng = np.random.default_rng(SEED)
    registry = ModelRegistry(tmp_path / "models")
    registry.add(graph(ensemble(1)), {"created_at": 0.0, "classes": CLASSES}, promote=True)
    dataset = tmp_path / "dataset.sqlite"
    cfg = config_for(
        servers,
        unique,
        accept=ACCEPT_ALL,
        budget={"rate": 0.1, "caps": {}},
        input={"embedding_dim": 6},
        retrain={"registry": str(registry.root), "every_labels": None},
        dataset={"path": str(dataset)},
    )
    create_topics(cfg)
    procs = {
        name: Restartable(tmp_path, name, command, cfg)
        for name, command in (("serve", "serve-model"), ("monitor", "run"), ("labels", "labels"))
    }
    watcher = Watcher(servers, cfg, np.random.default_rng(SEED + 1))
    feed = features(unique, 3_000, rng)
    promoted: list[str] = ["v1"]

    def promote(k: int) -> Callable[[], None]:
        def action() -> None:
            # the previous version was served first (else two promotions close together might skip one)
            previous = promoted[-1]
            wait_for(lambda: previous in watcher.models, 60, f"predictions of {previous}")
            manifest = registry.add(graph(ensemble(k)), {"created_at": 0.0, "classes": CLASSES}, promote=True)
            event = {"type": "promoted", "version": manifest["version"], "sha256": manifest["sha256"]}
            produce(servers, cfg.topics.models, [(manifest["version"].encode(), orjson.dumps(event))])
            promoted.append(manifest["version"])

        return action

    def kill(name: str) -> Callable[[], None]:
        def action() -> None:
            procs[name].kill()
            procs[name].start()

        return action

    feeder = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)

    def chunk(k: int) -> Callable[[], None]:
        def action() -> None:
            for key, value in feed[k * 50 : (k + 1) * 50]:
                feeder.send(cfg.topics.features, key=key, value=value)
            feeder.flush()

        return action

    victims = [name for name in procs for _ in range(3)]
    rng.shuffle(victims)
    events: list[tuple[float, Callable[[], None]]] = [(k * 0.5, chunk(k)) for k in range(60)]
    events += [
        (float(at), kill(name)) for at, name in zip(np.sort(rng.uniform(1, 36, 9)), victims, strict=True)
    ]
    events += [(12.0, promote(2)), (24.0, promote(3))]
    try:
        for proc in procs.values():
            proc.start()
        for proc in procs.values():
            proc.wait_ready()
        watcher.start()
        run_schedule(events)
        wanted = {k.decode() for k, _ in feed}
        wait_for(lambda: watcher.snapshot()[0] >= wanted, 90, "every feature id routed")
        labeled = watcher.snapshot()[1]
        wait_for(lambda: set(stored_labels(dataset)) >= labeled, 60, "every label stored")
        wait_for(lambda: promoted[-1] in watcher.models, 30, f"predictions of {promoted[-1]}")
        # a process the last kills restarted may still be starting: SIGTERM must find it running, since
        # before its handler is installed (the interpreter's start-up, the imports) SIGTERM ends it with -15
        for proc in procs.values():
            proc.wait_ready()
    finally:
        watcher.stop_event.set()
        codes = {name: proc.stop() for name, proc in procs.items()}
        watcher.join(timeout=10)
        feeder.close()
    output = "\n".join(p.output for p in procs.values())
    assert codes == {"serve": 0, "monitor": 0, "labels": 0}, output
    assert "Traceback" not in output, output
    errors = [ln for p in procs.values() for ln in p.lines if " ERROR " in ln]
    assert not errors, "\n".join(errors)  # a kill and a restart are nothing an operator must act on
    assert {name: p.kills for name, p in procs.items()} == {"serve": 3, "monitor": 3, "labels": 3}

    routed, labeled = watcher.snapshot()
    assert routed == wanted
    assert promoted == ["v1", "v2", "v3"] and set(promoted) <= set(watcher.models)
    assert {rid for ids in watcher.models.values() for rid in ids} == wanted
    assert labeled == set(watcher.to_label) and len(labeled) > 100
    stored = stored_labels(dataset)
    assert set(stored) == labeled
    twice = {rid: n for rid, n in stored.items() if n != 1}
    assert not twice, f"{len(twice)} labels stored more than once, e.g. {sorted(twice.items())[:3]}"
    db = sqlite3.connect(f"file:{dataset}?mode=ro", uri=True)
    try:
        decisions = {row[0] for row in db.execute("SELECT id FROM decisions")}
        parked = db.execute("SELECT count(*) FROM parked_labels").fetchone()[0]
    finally:
        db.close()
    assert decisions == labeled and parked == 0
    assert watcher.dead == []
    duplicates = sum(n - 1 for n in watcher.routed.values())
    print(f"chaos: {len(wanted)} ids, {len(labeled)} labels, {duplicates} duplicate outputs")


def minute_windows(times: list[float]) -> int:
    """The most decision times in any sliding minute."""
    t = np.sort(np.asarray(times))
    return int((np.searchsorted(t, t, side="right") - np.searchsorted(t, t - 60.0, side="right")).max())


def test_a_member_of_a_two_instance_group_killed_mid_stream_keeps_the_caps_and_loses_nothing(
    broker: EmbeddedBroker, unique: str, tmp_path: Path
) -> None:
    """Two monitors share four partitions; every item wants a label (rate 100%) and a cap of 40 labels a
    minute binds. One monitor is SIGKILLed at a seeded random moment after the cap bound, and restarted: over
    both instances, no sliding minute of decision times holds more than 40 labelled ids (an id counted at its
    first decision; a duplicate after the crash carries the same id), and every input id is routed."""
    servers = broker.bootstrap_servers
    rng = np.random.default_rng(SEED + 2)
    cap = 40
    cfg = config_for(
        servers,
        unique,
        accept=ACCEPT_ALL,
        budget={"rate": 1.0, "query_threshold": 0.0, "max_burst": 1000, "caps": {"minute": cap}},
        kafka={"topic_partitions": 4, "max_poll_records": 50},
    )
    create_topics(cfg)
    a = Restartable(tmp_path, "a", "run", cfg)
    b = Restartable(tmp_path, "b", "run", cfg)
    watcher = Watcher(servers, cfg, np.random.default_rng(SEED + 3))
    probs = rng.dirichlet(np.ones(len(CLASSES)), size=4_000)
    records: list[tuple[bytes, bytes]] = [
        (f"{unique}-{k}".encode(), orjson.dumps({"id": f"{unique}-{k}", "probs": probs[k].tolist()}))
        for k in range(len(probs))
    ]
    kill_at = float(rng.uniform(2.0, 8.0))

    def feed(k: int) -> Callable[[], None]:
        def action() -> None:
            produce(servers, cfg.topics.predictions, records[k * 250 : (k + 1) * 250])

        return action

    def restart_b() -> None:
        b.kill()
        b.start()

    try:
        a.start()
        a.wait_ready()
        b.start()
        b.wait_ready()
        wait_for(lambda: len(a.assigned()) == len(b.assigned()) == 2, 40, "the partitions shared")
        watcher.start()
        produce(servers, cfg.topics.predictions, records[:1_000])
        wait_for(lambda: len(watcher.snapshot()[1]) >= cap // 2, 60, "labels of both instances")
        run_schedule([(k - 4.0, feed(k)) for k in range(4, 16)] + [(kill_at, restart_b)])
        wait_for(lambda: len(b.assigned()) == 2, 40, "the restarted member assigned its share")
        wanted = {k.decode() for k, _ in records}
        wait_for(lambda: watcher.snapshot()[0] >= wanted, 90, "every id routed")
    finally:
        watcher.stop_event.set()
        codes = [a.stop(), b.stop()]
        watcher.join(timeout=10)
    assert codes == [0, 0], a.output + b.output
    assert b.kills == 1
    restart = max(i for i, ln in enumerate(b.lines) if ln.startswith("---"))
    assert any("restored state at offset" in ln for ln in b.lines[restart:]), b.output
    errors = [ln for p in (a, b) for ln in p.lines if " ERROR " in ln]
    assert not errors, "\n".join(errors)
    first = [min(datetime.fromisoformat(at).timestamp() for at in ats) for ats in watcher.to_label.values()]
    every = [datetime.fromisoformat(at).timestamp() for ats in watcher.to_label.values() for at in ats]
    assert minute_windows(first) <= cap
    assert len(watcher.to_label) >= cap - 4, "the cap must bind, or it was not tested"
    assert watcher.snapshot()[0] == wanted and watcher.dead == []
    print(
        f"two-instance group: {len(first)} labelled ids, {len(every)} to-label records, max a minute "
        f"{minute_windows(first)} ids / {minute_windows(every)} records (cap {cap})"
    )
