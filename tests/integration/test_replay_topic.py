"""`selector replay --topic`: a whole multi-partition topic replays the same way every time."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from connectors.cli.main import main
from connectors.demo.simulate import prediction_records
from connectors.kafka.broker import EmbeddedBroker
from connectors.offline.recorded import topic_chunks
from connectors.offline.replay import replay
from tests.integration.streams import config_for, create_topics, produce

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

CLASSES = ["ok", "scratch", "dent", "crack"]


class TestReplayTopic:
    def test_every_record_of_every_partition_is_decided_identically_twice(
        self, broker: EmbeddedBroker, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """3000 predictions (some malformed) spread over 4 partitions: the command line and a second replay
        write the same bytes; every (partition, offset) is decided once or counted invalid; records without
        ``ts`` take their Kafka timestamp, and partitions are merged in timestamp order."""
        servers = broker.bootstrap_servers
        cfg = config_for(servers, unique, kafka={"topic_partitions": 4})
        create_topics(cfg)
        records = list(prediction_records(np.random.default_rng(1), 3000, CLASSES, malformed_rate=0.004))
        placed = produce(servers, cfg.topics.predictions, records)
        assert len({p for p, _ in placed}) == 4

        config_file = tmp_path / "config.yaml"
        config_file.write_text(
            f"kafka: {{bootstrap_servers: '{servers}'}}\nmetrics: {{enabled: false}}\n"
            f"budget: {{rate: 0.05, audit_rate: 0.005}}\n"
        )
        out = tmp_path / "decisions.jsonl"
        code = main(
            ["replay", "-c", str(config_file), "--topic", cfg.topics.predictions, "--output", str(out)]
        )
        summary = json.loads(capsys.readouterr().out)
        assert code == 0

        again = io.BytesIO()
        replay(
            cfg.model_copy(
                update={"budget": cfg.budget.model_copy(update={"rate": 0.05, "audit_rate": 0.005})}
            ),
            topic_chunks(cfg, cfg.topics.predictions, chunk_records=500),
            decisions_out=again,
        )
        assert again.getvalue() == out.read_bytes()

        decided = [json.loads(line) for line in out.read_bytes().splitlines()]
        invalid = summary["invalid"]
        assert summary["input"]["records"] == 3000
        assert len(decided) == summary["items"] == 3000 - invalid["total"]
        assert 0 < invalid["total"] <= 20 and invalid["by_reason"] == {"malformed_json": invalid["total"]}
        seen = [(d["partition"], d["offset"]) for d in decided]
        seen += [tuple(int(x) for x in e["where"].split()[1::2]) for e in invalid["examples"]]
        assert sorted(seen) == sorted(placed)
        assert summary["input"]["ts_fallback"] == len(decided)
        times = [d["ts"] for d in decided]
        assert times == sorted(times)
        assert [d["decided_at"] for d in decided] == times  # merged in timestamp order: the clock never waits
        assert summary["routes"]["query"] + summary["routes"]["audit"] > 0

    def test_a_missing_topic_is_a_usage_error(
        self, broker: EmbeddedBroker, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Replaying a topic that does not exist exits 2 naming it (and does not create it)."""
        config_file = tmp_path / "config.yaml"
        config_file.write_text(f"kafka: {{bootstrap_servers: '{broker.bootstrap_servers}'}}\n")
        code = main(["replay", "-c", str(config_file), "--topic", f"absent-{unique}"])
        _, err = capsys.readouterr()
        assert code == 2
        assert f"topic 'absent-{unique}' does not exist" in err
