"""Every ``kafka.*`` key reaches either client under its own name, and the confluent-kafka stand-ins keep
kafka-python's contract where the rest of the project relies on it (errors, size refusals)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from kafka import errors as kerrors

from connectors.kafka.clients import (
    confluent_consumer_conf,
    confluent_producer_conf,
    confluent_security,
    consumer_kwargs,
    make_admin,
    make_consumer,
    make_producer,
    make_reader,
    producer_kwargs,
    security_kwargs,
)
from connectors.kafka.outage import GROUP_MOVED_ON
from connectors.settings.startup import StartupError, client_library, compression_library
from selector.config import Config, parse_config
from selector.errors import ConfigError

ck = pytest.importorskip("confluent_kafka")

NOWHERE = "127.0.0.1:1"
"""A closed loopback port: librdkafka's constructors connect in the background and find nobody."""

SECURE = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "svc",
    "sasl_plain_password": "hunter2",
    "ssl_cafile": "/ca.pem",
    "ssl_certfile": "/cert.pem",
    "ssl_keyfile": "/key.pem",
    "ssl_password": "keypass",
}
TUNED = {
    "compression_type": "zstd",
    "linger_ms": 20,
    "batch_size": 65_536,
    "max_request_size": 2_097_152,
    "fetch_min_bytes": 4096,
    "fetch_max_bytes": 8_388_608,
    "max_partition_fetch_bytes": 2_097_152,
    "fetch_max_wait_ms": 250,
    "max_poll_records": 700,
}


def config(**kafka: Any) -> Config:
    return parse_config({"kafka": kafka})


class TestKafkaPythonArguments:
    def test_security_keys_keep_their_names(self) -> None:
        """SASL and TLS keys are passed to kafka-python as they are named, the secrets unmasked."""
        out = security_kwargs(config(**SECURE))
        assert out["security_protocol"] == "SASL_SSL"
        assert out["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (out["sasl_plain_username"], out["sasl_plain_password"]) == ("svc", "hunter2")
        assert (out["ssl_cafile"], out["ssl_certfile"], out["ssl_keyfile"]) == (
            "/ca.pem",
            "/cert.pem",
            "/key.pem",
        )
        assert out["ssl_password"] == "keypass"

    def test_fetch_sizes_reach_the_consumer(self) -> None:
        out = consumer_kwargs(config(**TUNED))
        assert out["fetch_min_bytes"] == 4096
        assert out["fetch_max_bytes"] == 8_388_608
        assert out["max_partition_fetch_bytes"] == 2_097_152
        assert out["fetch_max_wait_ms"] == 250
        assert out["max_poll_records"] == 700
        assert out["enable_auto_commit"] is False

    def test_producer_limits_reach_the_producer(self) -> None:
        out = producer_kwargs(config(**{**TUNED, "compression_type": "gzip"}))
        assert out == {
            "max_request_size": 2_097_152,
            "compression_type": "gzip",
            "batch_size": 65_536,
            "linger_ms": 20,
        }


class TestLibrdkafkaSettings:
    def test_security_keys_map_to_librdkafka_names(self) -> None:
        out = confluent_security(config(**SECURE, client_id="line-7"), "b1:9093,b2:9093")
        assert out == {
            "bootstrap.servers": "b1:9093,b2:9093",
            "client.id": "line-7",
            "security.protocol": "sasl_ssl",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "svc",
            "sasl.password": "hunter2",
            "ssl.ca.location": "/ca.pem",
            "ssl.certificate.location": "/cert.pem",
            "ssl.key.location": "/key.pem",
            "ssl.key.password": "keypass",
        }

    def test_plaintext_sets_no_credentials(self) -> None:
        out = confluent_security(config(), NOWHERE)
        assert not any(k.startswith(("sasl.", "ssl.")) for k in out)

    def test_consumer_commits_only_explicitly_with_the_configured_fetches(self) -> None:
        cfg = config(
            **TUNED, session_timeout_ms=9000, heartbeat_interval_ms=2000, max_poll_interval_ms=60_000
        )
        out = confluent_consumer_conf(cfg, NOWHERE, "g")
        assert out["group.id"] == "g"
        assert out["enable.auto.commit"] is False
        assert out["enable.auto.offset.store"] is False
        assert out["fetch.min.bytes"] == 4096
        assert out["fetch.max.bytes"] == 8_388_608
        assert out["max.partition.fetch.bytes"] == 2_097_152
        assert out["fetch.wait.max.ms"] == 250
        assert (out["session.timeout.ms"], out["heartbeat.interval.ms"], out["max.poll.interval.ms"]) == (
            9000,
            2000,
            60_000,
        )
        assert out["auto.offset.reset"] == "earliest"

    def test_producer_waits_for_all_replicas_is_not_idempotent_and_has_the_configured_limits(self) -> None:
        out = confluent_producer_conf(config(**TUNED), NOWHERE)
        assert out["acks"] == "all"
        assert out["enable.idempotence"] is False  # fatal for good once a broker lost its producer state
        assert out["compression.type"] == "zstd"
        assert out["linger.ms"] == 20
        assert out["batch.size"] == 65_536
        assert out["message.max.bytes"] == 2_097_152
        assert "batch.num.messages" not in out

    def test_no_batching_is_one_record_per_batch(self) -> None:
        out = confluent_producer_conf(config(batch_size=0), NOWHERE)
        assert out["batch.num.messages"] == 1
        assert out["batch.size"] >= 1

    @pytest.mark.parametrize("kafka", [{}, TUNED, {**TUNED, "fetch_max_bytes": 2_097_152}])
    def test_librdkafka_accepts_every_setting(self, kafka: dict[str, Any]) -> None:
        """librdkafka refuses an unknown or inconsistent property at construction: none is refused."""
        cfg = config(**kafka, client="confluent-kafka")
        ck.Consumer(confluent_consumer_conf(cfg, NOWHERE, "g")).close()
        ck.Producer(confluent_producer_conf(cfg, NOWHERE)).flush(0)

    def test_sasl_settings_are_accepted_by_librdkafka(self) -> None:
        cfg = config(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username="u",
            sasl_plain_password="p",
        )
        ck.Producer(confluent_producer_conf(cfg, NOWHERE)).flush(0)


class TestChoosingTheClient:
    def test_the_default_is_kafka_python(self) -> None:
        assert config().kafka.client == "kafka-python"

    def test_an_unknown_client_is_refused(self) -> None:
        with pytest.raises(ConfigError, match=r"kafka\.client"):
            config(client="librdkafka")

    def test_confluent_builds_its_stand_ins_without_network(self) -> None:
        cfg = config(client="confluent-kafka")
        consumer, reader = make_consumer(cfg, NOWHERE), make_reader(cfg, NOWHERE)
        producer = make_producer(cfg, NOWHERE)
        assert type(consumer).__name__ == type(reader).__name__ == "ConfluentConsumer"
        assert type(producer).__name__ == "ConfluentProducer"
        consumer.close()
        reader.close()
        producer.close(timeout=0)

    @pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
    def test_an_admin_client_of_either_library_has_answered_once_or_raises(self, client: str) -> None:
        """kafka-python's admin client bootstraps in its constructor; librdkafka's is asked for the topics
        once: on either, nothing listening is a Kafka error from :func:`make_admin` (what the outage probe
        and :func:`connect_admin` count as a failed attempt)."""
        with pytest.raises(kerrors.KafkaError):
            make_admin(config(client=client), NOWHERE, connect_timeout_ms=200, request_timeout_ms=200)

    def test_confluent_chosen_but_not_installed_is_a_startup_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # makes the import fail
        cfg = config(client="confluent-kafka")
        with pytest.raises(StartupError, match=r"selector\[confluent\]") as caught:
            client_library(cfg)
        assert caught.value.key == "kafka.client"
        with pytest.raises(StartupError):
            compression_library(cfg)  # what check-config and every process's preflight call

    def test_librdkafka_needs_no_python_codec(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every codec is built into librdkafka: a missing Python codec library is no start-up error."""
        monkeypatch.setitem(sys.modules, "snappy", None)
        compression_library(config(client="confluent-kafka", compression_type="snappy"))


class TestFetchSizes:
    def test_a_partition_fetch_must_hold_the_largest_accepted_record(self) -> None:
        with pytest.raises(ConfigError, match="max_partition_fetch_bytes"):
            parse_config(
                {"kafka": {"max_partition_fetch_bytes": 500_000}, "input": {"max_record_bytes": 600_000}}
            )

    def test_a_partition_fetch_must_fit_a_whole_fetch(self) -> None:
        with pytest.raises(ConfigError, match="fetch_max_bytes"):
            config(fetch_max_bytes=1_048_576, max_partition_fetch_bytes=2_097_152)

    def test_sizes_must_be_positive(self) -> None:
        with pytest.raises(ConfigError, match="fetch_min_bytes"):
            config(fetch_min_bytes=0)


class TestErrors:
    def test_broker_codes_become_kafka_python_errors(self) -> None:
        from connectors.kafka.confluent import kafka_error  # noqa: PLC0415 (needs confluent_kafka)

        assert isinstance(
            kafka_error(ck.KafkaError(ck.KafkaError.MSG_SIZE_TOO_LARGE)), kerrors.MessageSizeTooLargeError
        )
        moved = kafka_error(ck.KafkaError(ck.KafkaError.REBALANCE_IN_PROGRESS))
        assert isinstance(moved, GROUP_MOVED_ON)

    def test_local_codes_keep_their_sense(self) -> None:
        from connectors.kafka.confluent import kafka_error  # noqa: PLC0415

        assert kafka_error(ck.KafkaError(ck.KafkaError._TRANSPORT)).retriable
        assert kafka_error(ck.KafkaError(ck.KafkaError._MSG_TIMED_OUT)).retriable
        # a request in flight when its broker went away (a broker killed mid-round): retriable too
        assert kafka_error(ck.KafkaError(ck.KafkaError._DESTROY_BROKER)).retriable
        # metadata lost with a killed broker: retriable, as kafka-python's UnknownTopicOrPartitionError is
        assert kafka_error(ck.KafkaError(ck.KafkaError._UNKNOWN_PARTITION)).retriable
        assert kafka_error(ck.KafkaError(ck.KafkaError._UNKNOWN_TOPIC)).retriable
        assert isinstance(kafka_error(ck.KafkaError(ck.KafkaError._ASSIGNMENT_LOST)), GROUP_MOVED_ON)

    def test_a_record_over_max_request_size_is_refused_at_send(self) -> None:
        """As kafka-python does: delivery dead-letters such a record instead of resending it."""
        producer = make_producer(config(client="confluent-kafka"), NOWHERE)
        with pytest.raises(kerrors.MessageSizeTooLargeError):
            producer.send("t", key=b"k", value=b"x" * 1_100_000)
        producer.close(timeout=0)

    def test_an_undelivered_record_times_out_the_flush(self) -> None:
        producer = make_producer(config(client="confluent-kafka"), NOWHERE)
        fut = producer.send("t", key=b"k", value=b"v", headers=[("h", b"1")])
        with pytest.raises(kerrors.KafkaTimeoutError):
            producer.flush(timeout=0.2)
        assert not fut.is_done
        producer.close(timeout=0)
        assert fut.failed()  # dropped at close: its future says so


class TestRebalanceListener:
    def test_the_listener_never_calls_into_the_consumer_handle_through_callstate(self) -> None:
        """A metadata call nested in librdkafka's rebalance callback aborts the process at the next callback
        (confluent-kafka clears the handle's thread state): inside the listener the partitions come from the
        cache filled outside it."""
        from connectors.kafka.confluent import ConfluentConsumer  # noqa: PLC0415

        consumer = make_consumer(config(client="confluent-kafka"), NOWHERE)
        assert isinstance(consumer, ConfluentConsumer)
        consumer._partitions["predictions"] = {0, 1, 2, 3}
        real, seen = consumer._c, []

        class NoMetadata:
            def list_topics(self, *args: object, **kwargs: object) -> None:
                raise AssertionError("list_topics called inside a rebalance callback")

        consumer._c = NoMetadata()
        try:
            consumer._in_listener(lambda tps: seen.append(consumer.partitions_for_topic("predictions")), [])
        finally:
            consumer._c = real
            consumer.close()
        assert seen == [{0, 1, 2, 3}]


class TestDelivery:
    def test_a_failed_report_fails_the_future_with_a_kafka_python_error_and_calls_its_errbacks(self) -> None:
        from connectors.kafka.confluent import Delivery  # noqa: PLC0415

        producer = ck.Producer({"bootstrap.servers": NOWHERE})
        fut, early, late = Delivery(producer), [], []
        fut.add_errback(early.append)
        assert not fut.is_done and not fut.failed()
        fut.report(ck.KafkaError(ck.KafkaError.MSG_SIZE_TOO_LARGE), None)
        fut.add_errback(late.append)
        assert fut.failed() and not fut.succeeded()
        assert isinstance(fut.exception, kerrors.MessageSizeTooLargeError)
        assert early == late == [fut.exception]
        with pytest.raises(kerrors.MessageSizeTooLargeError):
            fut.get(timeout=0)

    def test_get_times_out_without_a_report(self) -> None:
        from connectors.kafka.confluent import Delivery  # noqa: PLC0415

        fut = Delivery(ck.Producer({"bootstrap.servers": NOWHERE}))
        with pytest.raises(kerrors.KafkaTimeoutError):
            fut.get(timeout=0.1)
