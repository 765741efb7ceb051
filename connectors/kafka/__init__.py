"""Kafka: the only place clients are built; delivery, topic readers, state topic, outages."""
