"""Kafka clients built from the configuration: connection with backoff, topic creation, delivery.

``kafka.client`` picks the library: kafka-python (the default, pure Python) or confluent-kafka (librdkafka,
wrapped by :mod:`connectors.kafka.confluent` in the kafka-python calls the rest of the project makes). Every
``kafka.*`` key maps to both: :func:`security_kwargs`, :func:`consumer_kwargs` and :func:`producer_kwargs`
with kafka-python's names, :func:`confluent_security`, :func:`confluent_consumer_conf` and
:func:`confluent_producer_conf` with librdkafka's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from connectors.settings.startup import client_library, compression_library
from selector.config import Config
from selector.errors import BrokerUnavailableError

log = logging.getLogger(__name__)


def security_kwargs(config: Config) -> dict[str, Any]:
    """Connection settings shared by every client, with kafka-python's parameter names."""
    k = config.kafka
    out: dict[str, Any] = {"security_protocol": k.security_protocol, "client_id": k.client_id}
    if k.sasl_mechanism is not None:
        out["sasl_mechanism"] = k.sasl_mechanism
        out["sasl_plain_username"] = k.sasl_plain_username
        out["sasl_plain_password"] = (
            k.sasl_plain_password.get_secret_value() if k.sasl_plain_password else None
        )
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(k, name) is not None:
            out[name] = getattr(k, name)
    if k.ssl_password is not None:
        out["ssl_password"] = k.ssl_password.get_secret_value()
    return out


SSL_FILES = {
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}
"""kafka-python's TLS file arguments and librdkafka's names for them."""


def confluent_security(config: Config, servers: str) -> dict[str, Any]:
    """Connection settings shared by every client, with librdkafka's names (the same ``kafka.*`` keys as
    :func:`security_kwargs`)."""
    k = config.kafka
    out: dict[str, Any] = {
        "bootstrap.servers": servers,
        "client.id": k.client_id,
        "security.protocol": k.security_protocol.lower(),
    }
    if k.sasl_mechanism is not None:
        out["sasl.mechanism"] = k.sasl_mechanism
        out["sasl.username"] = k.sasl_plain_username
        out["sasl.password"] = k.sasl_plain_password.get_secret_value() if k.sasl_plain_password else None
    for name, rd_name in SSL_FILES.items():
        if getattr(k, name) is not None:
            out[rd_name] = getattr(k, name)
    if k.ssl_password is not None:
        out["ssl.key.password"] = k.ssl_password.get_secret_value()
    return out


def secrets_of(config: Config) -> list[str]:
    """Secret values that must never appear in logs or dead-letter headers."""
    k = config.kafka
    return [
        s.get_secret_value()
        for s in (k.sasl_plain_password, k.ssl_password)
        if s is not None and s.get_secret_value()
    ]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``'**********'``."""
    for s in secrets:
        text = text.replace(s, "**********")
    return text


def connect_admin(
    config: Config,
    servers: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> KafkaAdminClient:
    """An admin client, retrying with exponential backoff until ``kafka.connect_deadline_s``.

    Raises:
        BrokerUnavailableError: nothing answered before the deadline.
    """
    deadline_s = config.kafka.connect_deadline_s
    start = monotonic()
    delay = 0.25
    attempt = 0
    while True:
        attempt += 1
        left_ms = int(max(0.5, deadline_s - (monotonic() - start)) * 1000)
        try:
            return make_admin(
                config,
                servers,
                connect_timeout_ms=min(2000, left_ms),
                request_timeout_ms=min(30000, max(1000, left_ms)),
            )
        except KafkaError as exc:
            waited = monotonic() - start
            if waited + delay > deadline_s:
                raise BrokerUnavailableError(
                    servers, waited, f"{attempt} attempts, last error: {exc}"
                ) from exc
            log.warning("Kafka at %s not reachable (%s); retrying in %.1f s", servers, exc, delay)
            sleep(delay)
            delay = min(delay * 2, 5.0)


def ensure_topics(admin: KafkaAdminClient, config: Config) -> list[str]:
    """Create the configured topics that do not exist yet; returns the names created."""
    t = config.topics
    wanted = [t.predictions, t.to_label, t.accepted, t.dead_letter, t.labels, t.state, t.features]
    single = {t.state, t.models, t.retrain}  # ordered event streams: one partition
    wanted += [t.models, t.retrain]
    existing = set(admin.list_topics())
    missing = [name for name in dict.fromkeys(wanted) if name not in existing]
    if not missing:
        return []
    k = config.kafka
    compacted = {"cleanup.policy": "compact"}
    new = [
        NewTopic(
            name,
            1 if name in single else k.topic_partitions,
            k.replication_factor,
            topic_configs=compacted if name == t.state else {},
        )
        for name in missing
    ]
    with contextlib.suppress(TopicAlreadyExistsError):  # another instance won the race
        admin.create_topics(new)
    log.info("created topics %s", missing)
    return missing


def prepare_topics(config: Config, servers: str) -> list[str]:
    """Connect (with the start-up deadline) and create the configured topics that are missing."""
    admin = connect_admin(config, servers)
    try:
        return ensure_topics(admin, config)
    finally:
        admin.close()


RECONNECT_BACKOFF_MAX_MS = 1000
"""An admin client's longest wait between two connection attempts: a cluster back from an outage is seen
within a second (librdkafka waits up to 10 s by default)."""


def make_admin(config: Config, servers: str, *, connect_timeout_ms: int, request_timeout_ms: int) -> Any:
    """One attempt at an admin client of the configured library (no retry: see :func:`connect_admin`): a
    kafka-python ``KafkaAdminClient``, whose constructor bootstraps, or its confluent-kafka stand-in, asked
    for the topics once; either has answered within ``connect_timeout_ms``. Its requests time out after
    ``request_timeout_ms``.

    Raises:
        KafkaError: nothing answered within ``connect_timeout_ms``.
        StartupError: confluent-kafka is chosen but not installed.
    """
    if config.kafka.client == "confluent-kafka":
        client_library(config)
        from connectors.kafka.confluent import ConfluentAdmin  # noqa: PLC0415 (an optional dependency)

        conf = {**confluent_security(config, servers), "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS}
        admin = ConfluentAdmin(conf, timeout_s=request_timeout_ms / 1000)
        admin.list_topics_within(connect_timeout_ms / 1000)
        return admin
    return KafkaAdminClient(
        bootstrap_servers=servers,
        bootstrap_timeout_ms=connect_timeout_ms,
        request_timeout_ms=request_timeout_ms,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        **security_kwargs(config),
    )


def consumer_kwargs(config: Config) -> dict[str, Any]:
    """The ``kafka.*`` consumer settings as kafka-python arguments (no group, no servers)."""
    k = config.kafka
    return {
        "enable_auto_commit": False,
        "auto_offset_reset": k.auto_offset_reset,
        "fetch_max_wait_ms": k.fetch_max_wait_ms,
        "fetch_min_bytes": k.fetch_min_bytes,
        "fetch_max_bytes": k.fetch_max_bytes,
        "max_partition_fetch_bytes": k.max_partition_fetch_bytes,
        "max_poll_records": k.max_poll_records,
    }


CONFLUENT_DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default ``message.max.bytes``, which its ``fetch.max.bytes`` may not be below."""


def confluent_consumer_conf(config: Config, servers: str, group_id: str) -> dict[str, Any]:
    """The ``kafka.*`` consumer settings with librdkafka's names: offsets stored and committed only
    explicitly (``enable.auto.commit`` and ``enable.auto.offset.store`` off)."""
    k = config.kafka
    return {
        **confluent_security(config, servers),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": k.auto_offset_reset,
        "session.timeout.ms": k.session_timeout_ms,
        "heartbeat.interval.ms": k.heartbeat_interval_ms,
        "max.poll.interval.ms": k.max_poll_interval_ms,
        "fetch.wait.max.ms": k.fetch_max_wait_ms,
        "fetch.min.bytes": k.fetch_min_bytes,
        "fetch.max.bytes": k.fetch_max_bytes,
        "max.partition.fetch.bytes": k.max_partition_fetch_bytes,
        # librdkafka refuses a fetch.max.bytes below message.max.bytes, and a response above receive.message.*
        "message.max.bytes": max(1000, min(k.fetch_max_bytes, CONFLUENT_DEFAULT_MESSAGE_MAX_BYTES)),
        "receive.message.max.bytes": max(100_000_000, k.fetch_max_bytes + 512),
    }


def make_consumer(config: Config, servers: str, group_id: str | None = None) -> Any:
    """The consumer of the predictions topic (subscribed later, with a rebalance listener), or of another
    topic under ``group_id``: a kafka-python ``KafkaConsumer``, or its confluent-kafka stand-in."""
    k = config.kafka
    if k.client == "confluent-kafka":
        client_library(config)
        from connectors.kafka.confluent import ConfluentConsumer  # noqa: PLC0415 (an optional dependency)

        return ConfluentConsumer(
            confluent_consumer_conf(config, servers, group_id or k.group_id),
            max_poll_records=k.max_poll_records,
        )
    return KafkaConsumer(
        bootstrap_servers=servers,
        group_id=group_id or k.group_id,
        session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=k.heartbeat_interval_ms,
        max_poll_interval_ms=k.max_poll_interval_ms,
        **consumer_kwargs(config),
        **security_kwargs(config),
    )


READER_GROUP = "selector-reader"
"""librdkafka wants a group id even for a consumer that only assigns itself partitions; it never joins it."""


def make_reader(config: Config, servers: str) -> Any:
    """A group-less consumer (partitions assigned by hand, nothing committed) of the configured client."""
    if config.kafka.client == "confluent-kafka":
        client_library(config)
        from connectors.kafka.confluent import ConfluentConsumer  # noqa: PLC0415 (an optional dependency)

        return ConfluentConsumer(
            confluent_consumer_conf(config, servers, READER_GROUP),
            max_poll_records=config.kafka.max_poll_records,
        )
    return KafkaConsumer(
        bootstrap_servers=servers, group_id=None, **consumer_kwargs(config), **security_kwargs(config)
    )


def producer_kwargs(config: Config) -> dict[str, Any]:
    """The ``kafka.*`` producer limits (``max_request_size``, ``compression_type``, ``batch_size``,
    ``linger_ms``) as kafka-python arguments.

    Raises:
        StartupError: the compression type's library is not installed.
    """
    k = config.kafka
    compression_library(config)
    return {
        "max_request_size": k.max_request_size,
        "compression_type": None if k.compression_type == "none" else k.compression_type,
        "batch_size": k.batch_size,
        "linger_ms": k.linger_ms,
    }


def confluent_producer_conf(config: Config, servers: str) -> dict[str, Any]:
    """The ``kafka.*`` producer settings with librdkafka's names: acks from all in-sync replicas, retries,
    ``kafka.max_request_size`` as ``message.max.bytes`` (a larger record is refused by ``produce``), and
    ``kafka.batch_size`` 0 (no batching, as in kafka-python) as one record per batch."""
    k = config.kafka
    out: dict[str, Any] = {
        **confluent_security(config, servers),
        "acks": "all",
        # not idempotent, as kafka-python's producer here: at least once needs only acks and retries (a
        # duplicate shares its id), and an idempotent librdkafka producer fails for good when a broker has
        # lost its producer state (OUT_OF_ORDER_SEQUENCE_NUMBER is fatal: seen after a broker restart)
        "enable.idempotence": False,
        "compression.type": k.compression_type,
        "linger.ms": k.linger_ms,
        "message.max.bytes": k.max_request_size,
        "batch.size": max(1, min(k.batch_size, k.max_request_size)),
    }
    if k.batch_size == 0:
        out["batch.num.messages"] = 1
    return out


def make_producer(config: Config, servers: str) -> Any:
    """The producer of every output topic: acks from all in-sync replicas, the configured size limits; a
    kafka-python ``KafkaProducer``, or its confluent-kafka stand-in."""
    if config.kafka.client == "confluent-kafka":
        client_library(config)
        from connectors.kafka.confluent import ConfluentProducer  # noqa: PLC0415 (an optional dependency)

        return ConfluentProducer(confluent_producer_conf(config, servers))
    return KafkaProducer(
        bootstrap_servers=servers,
        acks="all",
        retries=5,
        **producer_kwargs(config),
        **security_kwargs(config),
    )


async def commit_in_rebalance(
    consumer: KafkaConsumer, offsets: dict[TopicPartition, OffsetAndMetadata]
) -> None:
    """Commit ``offsets`` from inside a rebalance listener, on the consumer's network thread.

    kafka-python 3 runs listeners on that thread and forbids blocking consumer calls there, so the public
    ``commit()`` cannot be used; its coordinator's async commit is the one call that works. It is private
    API (``_coordinator._commit_offsets_sync_async``, kafka-python 3.0.x): this is the only place the
    project touches it, so an upgrade that moves it breaks here alone. confluent-kafka runs listeners on the
    polling thread, where its public synchronous ``commit`` is allowed.
    """
    if getattr(consumer, "LISTENERS_ON_POLLING_THREAD", False):  # confluent-kafka: blocking calls allowed
        consumer.commit(offsets)
        return
    await consumer._coordinator._commit_offsets_sync_async(offsets)  # noqa: SLF001 (see the docstring)
