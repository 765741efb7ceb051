"""`selector run` as a real process on the embedded broker: SIGKILL mid-stream loses nothing, SIGTERM drains
and commits, an unreachable broker exits non-zero with a clear message, and the demo runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.demo.simulate import prediction_records
from connectors.kafka.broker import EmbeddedBroker, free_port
from tests.conftest import FAST_GROUP
from tests.integration.streams import KAFKA_CLIENT, config_for, produce, read_topic

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

CLASSES = ["ok", "scratch", "dent", "crack"]
ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, servers: str, unique: str, **sections: dict[str, object]) -> Path:
    """config_for's configuration as a file, for `selector run -c`."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_for(servers, unique, **sections).model_dump(mode="json")))
    return path


def start(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "connectors.cli.main", "run", "-c", str(config), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def output_ids(servers: str, unique: str) -> list[str]:
    """Ids of every accepted and to-label record, duplicates included."""
    ids = []
    for topic in (f"accepted-{unique}", f"to-label-{unique}"):
        ids += [orjson.loads(m.value)["id"] for m in read_topic(servers, topic, idle_s=1.0)]
    return ids


HEAD = 2_500
"""Records streamed before the first run is seen working; the rest stream while it runs and is killed."""


class TestCrashSafety:
    def test_sigkill_mid_stream_then_restart_loses_no_input(
        self, broker: EmbeddedBroker, unique: str, tmp_path: Path
    ) -> None:
        """Kill -9 while predictions stream in, restart: every input id reaches an output topic; duplicates
        are allowed and carry the same id. (Every item is accepted unless labeled, so none is a skip.)"""
        servers = broker.bootstrap_servers
        config = write_config(tmp_path, servers, unique, accept={"default_threshold": 0.0, "thresholds": {}})
        topic = f"predictions-{unique}"
        records = list(prediction_records(np.random.default_rng(11), 30_000, CLASSES, prefix=f"c-{unique}"))
        producer = KafkaProducer(bootstrap_servers=servers, linger_ms=5)
        stop, working = threading.Event(), threading.Event()
        sent = [0]

        def stream() -> None:  # 30,000 records over ~12 s, the bulk once the first run is seen working
            for i in range(0, len(records), 250):
                if i == HEAD:
                    working.wait(90)  # a slow start-up (a loaded machine) must not outlast the stream
                for k, v in records[i : i + 250]:
                    producer.send(topic, key=k, value=v)
                producer.flush()
                sent[0] = i + 250
                if stop.wait(0.1):
                    return

        first = start(config)
        feeder = threading.Thread(target=stream, daemon=True)
        feeder.start()
        for outputs in (2_000, 4_000):  # working, then killed mid-stream
            deadline = time.monotonic() + 90
            while len(read_topic(servers, f"accepted-{unique}", idle_s=0.2)) < outputs:
                assert time.monotonic() < deadline, f"first run produced fewer than {outputs} outputs"
                assert first.poll() is None, first.stdout.read() if first.stdout else ""
            working.set()
        first.send_signal(signal.SIGKILL)
        killed_at = sent[0]
        first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL

        second = start(config)
        try:
            feeder.join(timeout=60)
            deadline = time.monotonic() + 90
            wanted = {k.decode() for k, _ in records}
            while True:
                ids = output_ids(servers, unique)
                if wanted <= set(ids) or time.monotonic() > deadline:
                    break
        finally:
            stop.set()
            second.send_signal(signal.SIGTERM)
            out, _ = second.communicate(timeout=30)
        producer.close()
        assert killed_at < len(records), "the kill came after the stream ended; nothing was tested"
        missing = wanted - set(ids)
        assert not missing, f"{len(missing)} inputs lost, e.g. {sorted(missing)[:5]}"
        assert set(ids) == wanted
        assert second.returncode == 0, out


class TestDrain:
    def test_sigterm_drains_commits_and_exits_zero(
        self, broker: EmbeddedBroker, unique: str, tmp_path: Path
    ) -> None:
        """After SIGTERM the process exits 0 and the group's committed offsets cover every decided record."""
        servers = broker.bootstrap_servers
        config = write_config(tmp_path, servers, unique, accept={"default_threshold": 0.0, "thresholds": {}})
        topic = f"predictions-{unique}"
        proc = start(config)
        placed = produce(
            servers, topic, prediction_records(np.random.default_rng(5), 3_000, CLASSES, prefix=unique)
        )
        deadline = time.monotonic() + 60
        while len(output_ids(servers, unique)) < 3_000:
            assert time.monotonic() < deadline and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "draining" in out
        ends: dict[int, int] = {}
        for partition, offset in placed:
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        consumer = KafkaConsumer(
            bootstrap_servers=servers, group_id=f"selector-{unique}", enable_auto_commit=False
        )
        committed = {p: consumer.committed(TopicPartition(topic, p)) for p in ends}
        consumer.close()
        assert committed == ends


class TestBrokerUnreachable:
    def test_exits_3_with_a_clear_message_after_the_deadline(self, tmp_path: Path, unique: str) -> None:
        """Nothing listens on the port: retry with backoff, then exit 3 naming the servers and the key."""
        servers = f"127.0.0.1:{free_port()}"
        config = write_config(tmp_path, servers, unique, kafka={"connect_deadline_s": 3})
        began = time.monotonic()
        proc = start(config)
        out, _ = proc.communicate(timeout=60)
        elapsed = time.monotonic() - began
        assert proc.returncode == 3, out
        assert f"cannot reach Kafka at '{servers}'" in out
        assert "'kafka.bootstrap_servers'" in out and "'kafka.connect_deadline_s'" in out
        assert "retrying in" in out  # it did retry before giving up
        assert elapsed < 30


class TestDemo:
    def test_demo_runs_on_its_own_embedded_broker_and_prints_live_summaries(self) -> None:
        """`selector demo --duration` starts a broker, trains the first model, streams digits through the
        inference connector and the monitor, prints summaries, exits 0 (the whole loop, retraining included,
        is tested in-process by test_loop_end_to_end)."""
        env = {**os.environ}
        env.update({f"SELECTOR_METRICS__{k}": "0" for k in ("PORT", "LABELS_PORT", "SERVE_PORT")})
        env.update({f"SELECTOR_KAFKA__{k.upper()}": str(v) for k, v in FAST_GROUP.items()})
        env["SELECTOR_KAFKA__CLIENT"] = KAFKA_CLIENT["name"]
        proc = subprocess.run(
            [sys.executable, "-m", "connectors.cli.main", "demo", "-c", "config.yaml",
             "--duration", "20", "--rate", "400", "--interval", "1", "--annotator-error", "0.1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "selector demo: handwritten digits at 400 items/s" in proc.stdout
        assert "simulated annotators (mean delay 3 s, 10% wrong)" in proc.stdout
        # the shipped cap of 1,000 labels an hour would stop the demo's labels after ~2 minutes: raised, said
        assert "caps raised to follow the line's rate: budget.caps.hour 1000 -> 43200" in proc.stdout
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("items")]
        assert len(lines) >= 3, proc.stdout
        final = lines[-1].split()
        decided = int(final[final.index("decided") + 1])
        assert decided > 1_000
        assert "label rate" in lines[-1] and "budget 2.00%" in lines[-1] and "model v" in lines[-1]
