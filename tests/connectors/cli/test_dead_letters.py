"""`selector dead-letters`: choosing dead letters, their ids and identities, re-drive records and markers, and
the command's usage errors and exit codes (no broker: every case here fails before one is needed, or finds
none)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import ClassVar

import orjson
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from connectors.cli.main import EXIT_BROKER, EXIT_CONFIG, main
from connectors.kafka.dead_letter_records import (
    DeadLetter,
    OffsetRange,
    Selection,
    marker,
    parse_offsets,
    parse_time,
    read_marker,
    redriven_record,
    tally,
    verdict,
)
from connectors.kafka.delivery import Headers, dead_letter

AT = "2026-12-06T01:00:00.000Z"
DLQ = "dead-letter"


def record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, headers: Headers
) -> ConsumerRecord:
    return ConsumerRecord(
        topic, partition, 0, offset, 1_765_000_000_000, 0, key, value, headers, None, -1, -1, -1
    )


def letter(
    value: bytes | None = b'{"id": "p1", "probs": [1]}',
    *,
    reason: str = "wrong_class_count",
    stage: str = "decode",
    at: str = AT,
    origin: tuple[str, int, int] = ("predictions", 2, 40),
    where: tuple[int, int] = (0, 7),
    limit: int = 1_048_576,
) -> DeadLetter:
    """A dead letter made by the product's own :func:`dead_letter`, as read back from the topic."""
    original = record(*origin, b"k", value, [("trace", b"t1")])
    _, key, body, headers = dead_letter(DLQ, original, stage, reason, "why", at, [], limit)
    return DeadLetter.of(record(DLQ, *where, key, body, headers or []))


class TestParsing:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("0:120-180", OffsetRange(0, 120, 180)),
            ("3:7", OffsetRange(3, 7, 7)),
            (" 1:0-0 ", OffsetRange(1, 0, 0)),
        ],
    )
    def test_offsets(self, text: str, expected: OffsetRange) -> None:
        assert parse_offsets(text) == expected

    @pytest.mark.parametrize(
        "text", ["", "0", "0:", "a:1-2", "0:1-b", "-1:1-2", "0:1-2-3", "0:-5", "0:1:2", "0:²", "0: 1-2"]
    )
    def test_bad_offsets_say_the_form(self, text: str) -> None:
        with pytest.raises(
            ValueError, match=r"--offsets must be PARTITION:FROM-TO \(inclusive, e.g. 0:120-180\)"
        ):
            parse_offsets(text)

    def test_offsets_backwards(self) -> None:
        with pytest.raises(ValueError, match=r"\(9 is after 3\)$"):
            parse_offsets("0:9-3")

    def test_times_are_rfc_3339_with_an_offset(self) -> None:
        assert parse_time("2026-12-06T02:00:00+01:00", "--since") == parse_time(
            "2026-12-06T01:00:00Z", "--until"
        )
        with pytest.raises(
            ValueError, match=r"^--since must be an RFC 3339 date-time with a UTC offset .*'2026-12-06'$"
        ):
            parse_time("2026-12-06", "--since")
        with pytest.raises(ValueError, match="--until"):
            parse_time("2026-12-06T01:00:00", "--until")


class TestDeadLetter:
    def test_headers_decoded(self) -> None:
        dl = letter()
        assert (dl.original_topic, dl.stage, dl.reason, dl.truncated) == (
            "predictions",
            "decode",
            "wrong_class_count",
            False,
        )
        assert dl.failed_at_s == parse_time(AT, "t")

    def test_failed_at_falls_back_to_the_kafka_timestamp(self) -> None:
        assert letter(at="yesterday").failed_at_s == 1_765_000_000.0

    def test_id_is_the_json_id_else_the_original_coordinates_else_the_dead_letters(self) -> None:
        assert letter().item_id == "p1"
        assert letter(b'{"id": "p1", "pro').item_id == "predictions:2:40"
        assert letter(b'{"id": 5}').item_id == "predictions:2:40"
        assert letter(b"[1]", origin=("to-label", -1, -1)).item_id == "@0:7"

    def test_copies_share_an_identity_other_records_of_one_id_do_not(self) -> None:
        """The same bytes for the same topic, wherever dead-lettered: one identity; a second annotator's label
        of the item, or the same id on another topic: another."""
        first = letter(b'{"id": "i", "label": "ok", "annotator": "a"}', origin=("labels", 0, 1))
        copy = letter(b'{"id": "i", "label": "ok", "annotator": "a"}', origin=("labels", 0, 1), where=(3, 90))
        other = letter(b'{"id": "i", "label": "ok", "annotator": "b"}', origin=("labels", 0, 2))
        elsewhere = letter(b'{"id": "i", "label": "ok", "annotator": "a"}', origin=("predictions", 0, 1))
        assert first.identity == copy.identity
        assert len({first.identity, other.identity, elsewhere.identity}) == 3
        assert json.loads(first.identity)[:2] == ["labels", "i"]

    def test_a_cut_value_is_truncated(self) -> None:
        dl = letter(b'{"id": "big", "payload": "%s"}' % (b"x" * 5000), limit=2000)
        assert dl.truncated and dl.value is not None and len(dl.value) < 2000


class TestSelection:
    def test_every_filter_must_hold_a_repeated_one_any_value(self) -> None:
        chosen = Selection(reasons=frozenset({"empty", "wrong_class_count"}), stages=frozenset({"decode"}))
        assert chosen.matches(letter())
        assert chosen.matches(letter(reason="empty"))
        assert not chosen.matches(letter(stage="labels"))
        assert not chosen.matches(letter(reason="bad_ts"))

    def test_topic_and_offsets(self) -> None:
        chosen = Selection(topics=frozenset({"labels"}), offsets=(OffsetRange(0, 5, 7), OffsetRange(1, 0, 0)))
        assert chosen.matches(letter(origin=("labels", 0, 0), where=(0, 7)))
        assert chosen.matches(letter(origin=("labels", 0, 0), where=(1, 0)))
        assert not chosen.matches(letter(origin=("labels", 0, 0), where=(0, 8)))
        assert not chosen.matches(letter(origin=("predictions", 0, 0), where=(0, 7)))

    def test_since_inclusive_until_exclusive(self) -> None:
        chosen = Selection(since_s=parse_time(AT, "s"), until_s=parse_time("2026-12-06T02:00:00Z", "u"))
        assert chosen.matches(letter(at=AT))
        assert not chosen.matches(letter(at="2026-12-06T00:59:59.999Z"))
        assert not chosen.matches(letter(at="2026-12-06T02:00:00Z"))

    def test_no_filter_chooses_nothing_unless_everything(self) -> None:
        assert Selection().chooses_nothing and not Selection(everything=True).chooses_nothing
        assert not Selection(since_s=0.0).chooses_nothing
        assert Selection(everything=True).matches(letter())
        assert (
            Selection(reasons=frozenset({"a"}), offsets=(OffsetRange(0, 1, 2),)).describe()
            == "reason a; offsets 0:1-2"
        )


class TestVerdict:
    topics: ClassVar[set[str]] = {"predictions", "labels", DLQ}

    def test_truncated_never_sent(self) -> None:
        assert verdict(letter(b"x" * 5000, limit=2000), DLQ, self.topics, {}) == "truncated"

    def test_where_it_cannot_go(self) -> None:
        assert verdict(letter(origin=("gone", 0, 1)), DLQ, self.topics, {}) == "topic_missing"
        assert verdict(letter(origin=(DLQ, 0, 1)), DLQ, self.topics, {}) == "to_dead_letter_topic"
        bare = DeadLetter.of(record(DLQ, 0, 1, None, b"{}", []))
        assert verdict(bare, DLQ, self.topics, {}) == "no_original_topic"

    def test_covered_by_a_marker_only_if_older_than_it(self) -> None:
        """A marker covers the dead letters before the end it noted in their partition; a later one (the
        re-driven record failed again) or one in a partition it did not note is sent."""
        dl = letter(where=(0, 7))
        assert verdict(dl, DLQ, self.topics, {}) == "send"
        assert verdict(dl, DLQ, self.topics, {dl.identity: {0: 8}}) == "redriven"
        assert verdict(dl, DLQ, self.topics, {dl.identity: {0: 7}}) == "send"
        assert verdict(dl, DLQ, self.topics, {dl.identity: {1: 99}}) == "send"
        assert verdict(dl, DLQ, self.topics, {"other": {0: 99}}) == "send"


class TestRecords:
    def test_the_re_driven_record_keeps_key_value_and_headers_and_says_where_from(self) -> None:
        """The original record's headers (which the dead letter carries) go back; every x-dlq-* header and an
        earlier re-drive's x-redriven-* ones are replaced by this re-drive's."""
        before = letter()
        dl = DeadLetter.of(
            record(DLQ, 0, 7, before.key, before.value, [*before.headers, ("X-Redriven-At", b"old")])
        )
        topic, key, value, headers = redriven_record(dl, DLQ, "2026-12-06T03:00:00.000Z")
        assert (topic, key, value) == ("predictions", b"k", b'{"id": "p1", "probs": [1]}')
        assert headers == [
            ("trace", b"t1"),
            ("x-redriven-from-topic", b"dead-letter"),
            ("x-redriven-from-partition", b"0"),
            ("x-redriven-from-offset", b"7"),
            ("x-redriven-at", b"2026-12-06T03:00:00.000Z"),
        ]

    def test_a_marker_reads_back(self) -> None:
        dl = letter(where=(2, 11))
        topic, key, value, _ = marker(dl, "dead-letter-redriven", DLQ, {0: 4, 2: 12}, AT)
        assert topic == "dead-letter-redriven" and key == dl.identity.encode()
        assert orjson.loads(value or b"")["dead_letter"] == {"topic": DLQ, "partition": 2, "offset": 11}
        assert read_marker(record(topic, 0, 0, key, value, [])) == (dl.identity, {0: 4, 2: 12})
        assert read_marker(record(topic, 0, 1, key, b"not json", [])) is None
        assert read_marker(record(topic, 0, 2, None, value, [])) is None


class TestTally:
    def test_groups_count_truncated_re_driven_and_time_range(self) -> None:
        late = letter(at="2026-12-06T05:00:00Z", where=(0, 9))
        letters = [
            letter(),
            late,
            letter(b"x" * 5000, limit=2000),
            letter(reason="empty", origin=("labels", 0, 0)),
        ]
        groups = tally(letters, {late.identity: {0: 10}})
        assert [(g.original_topic, g.reason, g.count, g.truncated, g.redriven) for g in groups] == [
            ("labels", "empty", 1, 0, 0),
            ("predictions", "wrong_class_count", 3, 1, 2),  # the first letter is a copy of the late one
        ]
        assert (groups[1].as_dict()["first"], groups[1].as_dict()["last"]) == (AT, "2026-12-06T05:00:00.000Z")


def config_file(tmp_path: Path, servers: str, **kafka: object) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(
        json.dumps({"kafka": {"bootstrap_servers": servers, **kafka}, "metrics": {"enabled": False}})
    )
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestCommand:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            (["--offsets", "0:x"], "--offsets must be PARTITION:FROM-TO"),
            (["--reason", "empty", "--since", "today"], "--since must be an RFC 3339 date-time"),
            (
                ["--since", "2026-12-06T02:00:00Z", "--until", "2026-12-06T02:00:00+00:00"],
                "--since must be before --until: '2026-12-06T02:00:00Z' is not before "
                "'2026-12-06T02:00:00+00:00'",
            ),
            (
                [],
                "say what to re-send with --reason, --stage, --topic, --since, --until or --offsets, or "
                "--all",
            ),
        ],
    )
    def test_usage_errors_exit_2_before_connecting(
        self, tmp_path: Path, options: list[str], message: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = config_file(tmp_path, f"127.0.0.1:{free_port()}")
        assert main(["dead-letters", "redrive", "-c", path, *options]) == EXIT_CONFIG
        assert message in caplog.text

    def test_the_embedded_broker_is_refused(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        assert main(["dead-letters", "list", "-c", config_file(tmp_path, "embedded")]) == EXIT_CONFIG
        assert "selector dead-letters works with the topics of a running cluster" in caplog.text

    @pytest.mark.parametrize("command", [["list"], ["redrive", "--all", "--dry-run"]])
    def test_an_unreachable_cluster_exits_3(
        self, tmp_path: Path, command: list[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        servers = f"127.0.0.1:{free_port()}"
        path = config_file(tmp_path, servers, connect_deadline_s=1)
        began = time.monotonic()
        assert main(["dead-letters", *command, "-c", path]) == EXIT_BROKER
        assert f"cannot reach Kafka at '{servers}'" in caplog.text
        assert time.monotonic() - began < 15

    def test_a_missing_tls_file_exits_2_before_connecting(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Like every command that talks to Kafka, its TLS files are checked at start-up."""
        missing = tmp_path / "absent-ca.pem"
        path = config_file(tmp_path, "127.0.0.1:1", security_protocol="SSL", ssl_cafile=str(missing))
        assert main(["dead-letters", "list", "-c", path]) == EXIT_CONFIG
        assert "'kafka.ssl_cafile'" in capsys.readouterr().err
