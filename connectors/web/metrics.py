"""Metrics and HTTP helpers every process shares: histograms from bucket counts, the outage and build-info
families, and starting a process's endpoint. Each process's collector lives in its room."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

import selector
from connectors.kafka.outage import OutageWatch
from connectors.web.server import Endpoint, Part


def histogram(
    name: str, doc: str, bounds: tuple[float, ...], counts: Any, total: float
) -> HistogramMetricFamily:
    """``counts`` per bucket; one more count than bounds is the overflow above the last bound."""
    counts = [int(c) for c in counts]
    cumulative, buckets = 0, []
    for bound, c in zip(bounds, counts[: len(bounds)], strict=True):
        cumulative += c
        buckets.append((repr(float(bound)), cumulative))
    buckets.append(("+Inf", sum(counts)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


def kafka_outage(watch: OutageWatch) -> Iterator[Metric]:
    """``selector_kafka_unreachable`` (1 while the cluster does not answer) and
    ``selector_kafka_outages_total`` (outages noticed since start)."""
    yield GaugeMetricFamily(
        "selector_kafka_unreachable",
        "1 while the Kafka cluster does not answer this process (it exits 4 after kafka.outage_deadline_s).",
        value=0.0 if watch.reachable else 1.0,
    )
    yield CounterMetricFamily(
        "selector_kafka_outages", "Kafka outages this process noticed since it started.", value=watch.outages
    )


def build_info(config_hash: str) -> GaugeMetricFamily:
    info = GaugeMetricFamily(
        "selector_build_info", "Version and config hash of this instance.", labels=["version", "config_hash"]
    )
    info.add_metric([selector.__version__, config_hash], 1.0)
    return info


def serve(
    parts: list[Part],
    host: str,
    port: int,
    *,
    dashboard: bool = True,
    metrics_of: list[Part] | None = None,
    sock: socket.socket | None = None,
    labels_url: str | None = None,
) -> Endpoint:
    """Start a process's HTTP endpoint (metrics, health, status, dashboard) in a daemon thread (on ``sock``
    when the port was bound at start-up; relaying the label loop's status at ``labels_url``)."""
    endpoint = Endpoint(
        parts, host, port, dashboard=dashboard, metrics_of=metrics_of, sock=sock, labels_url=labels_url
    )
    return endpoint.start()
