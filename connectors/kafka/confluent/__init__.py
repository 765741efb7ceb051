"""confluent-kafka (librdkafka) clients behind the part of kafka-python's API this project uses.

``kafka.client: confluent-kafka`` swaps the pure-Python kafka-python clients for librdkafka's (an order of
magnitude more records per second) without changing the code that uses them: :class:`ConfluentConsumer`,
:class:`ConfluentProducer` and :class:`ConfluentAdmin` take and return kafka-python's types
(``TopicPartition``, ``OffsetAndMetadata``, ``ConsumerRecord``, ``NewTopic``, ``RecordMetadata``) and raise
kafka-python's errors (:func:`kafka_error`), so the monitor's at-least-once order, its rebalance listener,
dead letters and outage handling are the same code on either client.

What differs, and how it is bridged:

- librdkafka serves the rebalance callbacks from inside ``consume()``, on the polling thread, where blocking
  consumer calls are allowed: a kafka-python (async) rebalance listener is run to completion there, and
  :func:`connectors.kafka.clients.commit_in_rebalance` commits with the public, synchronous ``commit``.
- Offsets are committed only explicitly (``enable.auto.commit`` and ``enable.auto.offset.store`` off); a
  ``commit()`` without offsets commits the position after the last record each partition returned.
- A record over ``message.max.bytes`` is refused by ``produce()`` at once, as kafka-python refuses one over
  ``max_request_size``: both raise :class:`kafka.errors.MessageSizeTooLargeError`.
- The producer waits for ``acks=all`` and retries until ``message.timeout.ms``; like kafka-python's here it is
  not idempotent (a retry may duplicate a record, which shares its id; an idempotent producer fails for good
  when a broker lost its producer state).

One module per client: :mod:`.consumer`, :mod:`.producer` (with the delivery report :class:`Delivery`),
:mod:`.admin`; :mod:`.errors` maps librdkafka's errors to kafka-python's and sends its log lines to the
``kafka.librdkafka`` logger.
"""

from connectors.kafka.confluent.admin import ConfluentAdmin
from connectors.kafka.confluent.consumer import PARTITIONS_MAX_AGE_S, ConfluentConsumer, run_listener_call
from connectors.kafka.confluent.errors import kafka_error, with_logging
from connectors.kafka.confluent.producer import ConfluentProducer, Delivery

__all__ = [
    "PARTITIONS_MAX_AGE_S",
    "ConfluentAdmin",
    "ConfluentConsumer",
    "ConfluentProducer",
    "Delivery",
    "kafka_error",
    "run_listener_call",
    "with_logging",
]
