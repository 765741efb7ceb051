"""A librdkafka admin client with the kafka-python ``KafkaAdminClient`` calls this project makes."""

from __future__ import annotations

from typing import Any

import confluent_kafka as ck
from confluent_kafka import admin as _admin
from kafka import errors as kerrors

from connectors.kafka.confluent.errors import error_from, with_logging

ck_admin: Any = _admin  # partly typed: its calls are checked by the broker tests


class ConfluentAdmin:
    """A librdkafka admin client with the kafka-python ``KafkaAdminClient`` calls this project makes."""

    def __init__(self, conf: dict[str, Any], *, timeout_s: float) -> None:
        self._a: Any = ck_admin.AdminClient(with_logging(conf))
        self._timeout_s = timeout_s

    def list_topics_within(self, timeout_s: float) -> list[str]:
        """The topics, asked with a timeout of its own (the connection check of
        :func:`connectors.kafka.clients.make_admin`)."""
        try:
            meta = self._a.list_topics(timeout=timeout_s)
        except ck.KafkaException as exc:
            raise error_from(exc) from exc
        return list(meta.topics)

    def list_topics(self) -> list[str]:
        try:
            meta = self._a.list_topics(timeout=self._timeout_s)
        except ck.KafkaException as exc:
            raise error_from(exc) from exc
        return list(meta.topics)

    def describe_cluster(self) -> dict[str, Any]:
        try:
            meta = self._a.describe_cluster(request_timeout=self._timeout_s).result(
                timeout=self._timeout_s + 1
            )
        except ck.KafkaException as exc:
            raise error_from(exc) from exc
        return {"cluster_id": meta.cluster_id, "brokers": [n.id for n in meta.nodes]}

    def create_topics(self, new_topics: list[Any]) -> None:
        """Create kafka-python ``NewTopic`` s; raises TopicAlreadyExistsError (after creating the others) when
        one existed."""
        specs = [
            ck_admin.NewTopic(
                t.name,
                num_partitions=t.num_partitions,
                replication_factor=t.replication_factor,
                config=dict(t.topic_configs or {}),
            )
            for t in new_topics
        ]
        existed: kerrors.KafkaError | None = None
        for fut in self._a.create_topics(specs, request_timeout=self._timeout_s).values():
            try:
                fut.result(timeout=self._timeout_s + 1)
            except ck.KafkaException as exc:
                err = error_from(exc)
                if not isinstance(err, kerrors.TopicAlreadyExistsError):
                    raise err from exc
                existed = err
        if existed is not None:
            raise existed

    def close(self) -> None:
        """Nothing to release: librdkafka's handle goes with the object."""
