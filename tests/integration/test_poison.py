"""No input crashes or stalls the monitor, on the real embedded broker.

Two records once put the monitor into a crash loop (issue 12): a 2,000,442-byte record, whose dead-letter copy
was over the producer's ``max_request_size``, and a valid 1,048,566-byte prediction, whose accepted record
was. Both are reproduced here, and a seeded fuzz stream of poison pills (random bytes, 1-2 MB records, huge
numbers, deep nesting, odd unicode, every field of the wrong type) must leave every input accounted for
exactly once and the monitor alive.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from connectors.kafka.broker import EmbeddedBroker
from connectors.monitor.loop import Monitor
from selector.config import Config
from tests.integration.conftest import RunningMonitors
from tests.integration.streams import Message, config_for, read_topic, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

PROBS = [0.97, 0.01, 0.01, 0.01]


def produce_large(
    servers: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Produce records of up to a few MB (this producer's limit is raised); (partition, offset) each."""
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5, max_request_size=8_000_000)
    futures = [producer.send(topic, key=k, value=v) for k, v in records]
    producer.flush()
    placed = [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
    producer.close()
    return placed


def padded(rid: str, size: int) -> bytes:
    """A valid prediction of exactly ``size`` bytes (the payload string pads it)."""
    head = orjson.dumps({"id": rid, "probs": PROBS, "payload": ""})
    return head[:-2] + b"p" * (size - len(head)) + b'"}'


def handled(monitor: Monitor) -> int:
    stats = monitor.router.stats
    return stats.total + sum(stats.dead_letters.values())


def routed(config: Config, servers: str, expect: int) -> list[Message]:
    """The accepted and to-label records (``expect`` in all)."""
    accepted = read_topic(servers, config.topics.accepted, idle_s=0.5, timeout_s=20)
    to_label = read_topic(servers, config.topics.to_label, idle_s=0.5, timeout_s=20)
    assert len(accepted) + len(to_label) == expect
    return accepted + to_label


class TestTheOriginalCrashes:
    def test_a_2_000_442_byte_record_is_dead_lettered_truncated_with_its_size_and_hash(
        self, broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
    ) -> None:
        """The record is dead-lettered (reason oversize) with its value cut to fit the producer, its original
        size and SHA-256 in headers; the record after it is decided; the monitor runs on."""
        servers = broker.bootstrap_servers
        cfg = config_for(servers, unique, accept={"default_threshold": 0.5})
        huge = padded(f"huge-{unique}", 2_000_442)
        assert len(huge) == 2_000_442
        produce_large(
            servers,
            cfg.topics.predictions,
            [(b"k", huge), (b"k", orjson.dumps({"id": "after", "probs": PROBS}))],
        )
        monitor = monitors.start(Monitor(cfg, servers))
        wait_for(lambda: handled(monitor) >= 2, 60, "both records handled")
        (dead,) = read_topic(servers, cfg.topics.dead_letter, expect=1)
        assert dead.headers["x-dlq-reason"] == b"oversize"
        assert dead.headers["x-dlq-original-size"] == b"2000442"
        assert dead.headers["x-dlq-original-sha256"] == hashlib.sha256(huge).hexdigest().encode()
        assert dead.value is not None and huge.startswith(dead.value)
        assert 1_000_000 < len(dead.value) < cfg.kafka.max_request_size
        (after,) = routed(cfg, servers, expect=1)
        assert after.key == b"after"
        assert monitors.running[0][1].is_alive() and not monitor.stopping

    def test_a_valid_1_048_566_byte_prediction_is_accepted_and_an_output_too_large_dead_lettered(
        self, broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
    ) -> None:
        """With input.max_record_bytes at 1 MiB (so kafka.max_request_size must be 16 KiB more), the valid
        1,048,566-byte prediction reaches the accepted topic whole; a valid record whose output outgrows the
        producer (its numbers re-encoded longer) is dead-lettered whole with reason output_too_large."""
        servers = broker.bootstrap_servers
        cfg = config_for(
            servers,
            unique,
            input={"max_record_bytes": 1_048_576},
            kafka={"max_request_size": 1_064_960},
            accept={"default_threshold": 0.5},
        )
        big = padded(f"big-{unique}", 1_048_566)
        grows = b'{"id": "grows", "probs": [0.97, 0.01, 0.01, 0.01], "payload": [%s]}' % b",".join(
            [b"1e5"] * 150_000
        )  # 600 kB in, about 1.35 MB out: each 1e5 comes out as 100000.0
        produce_large(servers, cfg.topics.predictions, [(b"k", big), (b"k", grows)])
        monitor = monitors.start(Monitor(cfg, servers))
        wait_for(lambda: handled(monitor) >= 2, 60, "both records handled")
        (accepted,) = routed(cfg, servers, expect=1)
        assert (
            accepted.value is not None
            and orjson.loads(accepted.value)["payload"] == orjson.loads(big)["payload"]
        )
        (dead,) = read_topic(servers, cfg.topics.dead_letter, expect=1)
        assert (dead.headers["x-dlq-stage"], dead.headers["x-dlq-reason"]) == (
            b"produce",
            b"output_too_large",
        )
        assert dead.value == grows and "x-dlq-original-size" not in dead.headers
        assert monitor.router.stats.dead_letters["produce"] == 1 and monitor.router.stats.total == 1


WRONG_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    10**30,
    "x",
    "",
    [],
    {},
    [None],
    [[1]],
    {"a": 1},
    [True] * 4,
    ["0.25"] * 4,
]
FIELDS = ["id", "probs", "logits", "ts", "model", "segment", "samples", "committee", "embedding",
          "predicted_loss", "cost", "detections", "payload", "meta"]  # fmt: skip


def fuzz_stream(seed: int, unique: str) -> list[tuple[bytes | None, bytes | None]]:
    """Seeded poison pills between valid predictions: (key, value) pairs."""
    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None]] = []
    n = 0

    def rid(kind: str) -> str:
        nonlocal n
        n += 1
        return f"{kind}-{unique}-{n}"

    def add(value: bytes | None, key: bytes | None = None) -> None:
        out.append((key if key is not None else rng.randbytes(rng.randrange(1, 12)), value))

    def pred(kind: str, **fields: Any) -> dict[str, Any]:
        return {"id": rid(kind), "probs": PROBS, **fields}

    for field in FIELDS:  # every field of the wrong type
        for wrong in WRONG_VALUES:
            add(json.dumps(pred(f"type-{field}", **{field: wrong})).encode())  # orjson refuses 10**30
    raw_json: list[Callable[[], bytes]] = [
        lambda: b'{"id": "%s", "probs": [1e308, 1e308, 1e308, 1e308]}' % rid("huge").encode(),
        lambda: b'{"id": "%s", "probs": [%s, 0, 0, 0]}' % (rid("bigint").encode(), b"9" * 500),
        lambda: b'{"id": "%s", "probs": [1e-400, 1, 0, 0]}' % rid("tiny").encode(),
        lambda: b'{"id": "%s", "probs": [0.97, 0.01, 0.01, 0.01], "ts": 1e300}' % rid("ts").encode(),
        lambda: b'{"id": "%s", "probs": [0.97, 0.01, 0.01, 0.01], "cost": 1e400}' % rid("cost").encode(),
        lambda: (
            b'{"id": "%s", "probs": [0.97, 0.01, 0.01, 0.01], "embedding": [1e39, 1e39]}'
            % rid("emb").encode()
        ),
        lambda: (
            b'{"id": "%s", "probs": [0.97, 0.01, 0.01, 0.01], "payload": %s%s}'
            % (rid("deep").encode(), b"[" * 100_000, b"]" * 100_000)
        ),
        lambda: (
            b'{"id": "%s", "probs": [0.97, 0.01, 0.01, 0.01], "meta": %s1%s}'
            % (rid("deepish").encode(), b'{"a":' * 300, b"}" * 300)
        ),
        lambda: b'{"id": "%s\\ud800", "probs": [0.97, 0.01, 0.01, 0.01]}' % rid("surrogate").encode(),
        lambda: b'{"id": "%s\xff\xfe", "probs": [0.97, 0.01, 0.01, 0.01]}' % rid("badutf8").encode(),
        lambda: b'\xef\xbb\xbf{"id": "%s", "probs": [0.97, 0.01, 0.01, 0.01]}' % rid("bom").encode(),
        lambda: orjson.dumps(pred("unicode-\u202e\u0000\U0001f600\u0301")),
        lambda: orjson.dumps({**pred("nested-id"), "id": {"id": "x"}}),
        lambda: orjson.dumps(pred("valid")),
        lambda: rng.randbytes(rng.randrange(0, 3000)),
        lambda: b"",
        lambda: b"null",
        lambda: b'"%s"' % rid("string").encode(),
        lambda: orjson.dumps(pred("big-valid-payload", payload="y" * 200_000)),
    ]
    for _ in range(4):
        for make in raw_json:
            add(make())
    add(None, key=b"tombstone")  # a deletion marker in the input topic
    add(b"{}", key=b"q" * 300_000)  # a huge key
    add(rng.randbytes(1_500_000))  # 1-2 MB records
    add(orjson.dumps(pred("oversize-valid", payload="z" * 1_200_000)))
    add(b'{"id": "%s", "probs": %s' % (rid("oversize-broken").encode(), b"[" * 1_900_000))
    rng.shuffle(out)
    return out


class TestFuzz:
    def test_every_poison_pill_is_accounted_for_exactly_once_and_the_monitor_survives(
        self, broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
    ) -> None:
        """Each input record ends in exactly one place: its id in accepted or to-label (every valid item is
        accepted or sent for labeling here), or its offset in the dead-letter topic; the monitor still
        decides a valid record sent after the stream."""
        servers = broker.bootstrap_servers
        cfg = config_for(servers, unique, accept={"default_threshold": 0.0})
        stream = fuzz_stream(12, unique)
        placed = produce_large(servers, cfg.topics.predictions, stream)
        monitor = monitors.start(Monitor(cfg, servers))
        wait_for(lambda: handled(monitor) >= len(stream), 120, f"{len(stream)} records handled")
        sentinel = orjson.dumps({"id": f"sentinel-{unique}", "probs": PROBS})
        produce_large(servers, cfg.topics.predictions, [(b"s", sentinel)])
        wait_for(lambda: handled(monitor) >= len(stream) + 1, 60, "the sentinel decided")
        assert monitors.running[0][1].is_alive()

        stats = monitor.router.stats
        dead = read_topic(servers, cfg.topics.dead_letter, expect=sum(stats.dead_letters.values()))
        outputs = routed(cfg, servers, expect=stats.total)
        dead_at = Counter(
            (int(m.headers["x-dlq-original-partition"]), int(m.headers["x-dlq-original-offset"]))
            for m in dead
        )
        routed_ids = Counter(m.key for m in outputs)
        assert max(dead_at.values()) == 1 and max(routed_ids.values()) == 1
        by_place = dict(zip(placed, stream, strict=True))
        assert set(dead_at) <= set(by_place)
        for place, (_, value) in by_place.items():
            if place in dead_at:
                continue
            assert value is not None, place
            item = orjson.loads(value)
            assert item["id"].encode() in routed_ids, (place, value[:200])
        assert len(dead_at) + len(routed_ids) == len(stream) + 1
        assert sum(stats.dead_letters.values()) == len(dead)
        reasons = Counter(m.headers["x-dlq-reason"] for m in dead)
        assert reasons[b"oversize"] >= 3 and reasons[b"malformed_json"] > 0 and reasons[b"bad_id"] > 0
