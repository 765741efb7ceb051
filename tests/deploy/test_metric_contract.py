"""The metric contract: every `selector_*` series the dashboard or the alert rules query is one the running
processes export. Built from the three collectors (`selector run`, `selector labels`, `selector serve-model`)
without a broker, rendered in the exposition format exactly as Prometheus scrapes it."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from connectors.labels.loop import LabelLoop
from connectors.labels.metrics import LabelLoopCollector
from connectors.model.dataset import DatasetStore
from connectors.model.registry import ModelRegistry
from connectors.model.serving import ModelServer, ServeCollector
from connectors.model.trainer import Ensemble, onnx_model
from connectors.monitor.loop import Monitor
from connectors.monitor.metrics import SelectorCollector
from selector.config import parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "selector.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

CLASSES = ["ok", "scratch", "dent", "crack"]
NO_BROKER = "127.0.0.1:9"
TARGET_LABELS = {"job", "instance"}
"""Labels Prometheus attaches at scrape time; the processes never export them."""

Exported = dict[str, dict[str, set[str]]]
"""sample name -> label name -> the values exported for it"""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"(selector_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"')


def metric_names(expr: str) -> set[str]:
    """The `selector_*` metric names a PromQL expression reads: identifiers outside string literals (so label
    values such as job="selector_x" do not count) that are plain metric names (a recording rule's
    `selector:...` holds a colon)."""
    code = _STRING.sub('""', expr)
    return {t for t in _IDENTIFIER.findall(code) if re.fullmatch(r"selector_[a-z0-9_]+", t)}


def label_matches(expr: str) -> Iterator[tuple[str, str, str]]:
    """(metric, label, value) for every literal value a selector requires: `label="v"` and the alternatives
    of `label=~"a|b"`; template variables, other regexes and target labels are left out."""
    for metric, body in _SELECTOR.findall(expr):
        for label, op, value in _MATCHER.findall(body):
            if label in TARGET_LABELS or "$" in value:
                continue
            if op == "=":
                yield metric, label, value
            elif op == "=~" and re.fullmatch(r"[A-Za-z0-9_|]+", value):
                for alternative in value.split("|"):
                    yield metric, label, alternative


def dashboard_expressions() -> list[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    return list(walk(json.loads(DASHBOARD.read_text())))


def alert_rules() -> list[dict[str, Any]]:
    assert ALERTS.is_file(), (
        f"{ALERTS.relative_to(DEPLOY.parent)} is missing: the alert rules are part of deploy/"
    )
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_expressions() -> list[str]:
    return [str(rule["expr"]) for rule in alert_rules()]


def recorded_names() -> set[str]:
    """Series the rule file records itself: queried by its alerts, never exported by a process."""
    return {str(rule["record"]) for rule in alert_rules() if "record" in rule}


def tiny_ensemble() -> Ensemble:
    rng = np.random.default_rng(0)
    k, d, h, c = 2, 6, 8, len(CLASSES)
    return Ensemble(
        rng.normal(size=(k, d, h)).astype(np.float32),
        rng.normal(size=(k, h)).astype(np.float32),
        rng.normal(size=(k, h, c)).astype(np.float32),
        rng.normal(size=(k, c)).astype(np.float32),
        list(CLASSES),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """What the three processes export on their first scrape: a monitor owning one partition with hourly and
    daily caps, a label loop on an empty store, and a model server serving the registry's promoted v1."""
    models = tmp_path_factory.mktemp("contract") / "models"
    cfg = parse_config(
        {
            "classes": CLASSES,
            "kafka": {"bootstrap_servers": NO_BROKER},
            "budget": {"caps": {"hour": 100, "day": 500}},
            "retrain": {"registry": str(models)},
        }
    )
    monitor = Monitor(cfg, NO_BROKER)
    monitor.assigned = {0}
    registry = ModelRegistry(models)
    model = onnx_model(tiny_ensemble()).SerializeToString()
    registry.add(model, {"created_at": 0.0, "classes": CLASSES}, promote=True)
    server = ModelServer(cfg, NO_BROKER, registry)
    assert server.swap("v1")
    collectors: list[Collector] = [
        SelectorCollector(monitor),
        LabelLoopCollector(LabelLoop(cfg, NO_BROKER, DatasetStore(":memory:"))),
        ServeCollector(server),
    ]
    found: defaultdict[str, defaultdict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for collector in collectors:
        scrape = CollectorRegistry()
        scrape.register(collector)
        for family in text_string_to_metric_families(generate_latest(scrape).decode()):
            for sample in family.samples:
                labels = found[sample.name]
                for label, value in sample.labels.items():
                    labels[label].add(value)
    return {name: dict(labels) for name, labels in found.items()}


def missing_names(
    expressions: list[str], exported: Exported, recorded: AbstractSet[str] = frozenset()
) -> list[str]:
    used = set().union(*(metric_names(e) for e in expressions)) if expressions else set()
    return sorted(used - set(exported) - recorded)


def missing_values(expressions: list[str], exported: Exported) -> list[str]:
    return sorted(
        {
            f'{metric}{{{label}="{value}"}}'
            for expr in expressions
            for metric, label, value in label_matches(expr)
            if metric in exported and value not in exported[metric].get(label, set())
        }
    )


class TestExtraction:
    def test_metric_names_skip_label_values_functions_and_recorded_series(self) -> None:
        expr = (
            'sum(rate(selector_items_total{route="query", job=~"selector_run"}[5m])) / '
            "on (instance) selector:items:rate5m + histogram_quantile(0.9, selector_score_bucket)"
        )
        assert metric_names(expr) == {"selector_items_total", "selector_score_bucket"}

    def test_label_matches_take_literals_and_plain_alternatives_only(self) -> None:
        expr = 'selector_items_total{route=~"query|audit", stage!="x", kind=~"a.*", job="j", class="$c"}'
        assert list(label_matches(expr)) == [
            ("selector_items_total", "route", "query"),
            ("selector_items_total", "route", "audit"),
        ]


class TestExportedSeries:
    def test_the_three_processes_export_their_documented_families(self, exported: Exported) -> None:
        """A sanity check of the fixture: one series of each process is there."""
        for name in ("selector_items_total", "selector_label_messages_total", "selector_serve_items_total"):
            assert name in exported
        assert exported["selector_model_info"]["version"] == {"v1"}

    def test_every_dead_letter_stage_is_exported_before_anything_fails(self, exported: Exported) -> None:
        """An alert or a panel on one stage has a series at 0 from the first scrape: the monitor's
        decode, score, encode and produce, the label loop's labels, serve-model's serve (its decoding)."""
        stages = exported["selector_dead_letters_total"]["stage"]
        assert {"decode", "score", "encode", "produce", "labels", "serve"} <= stages

    def test_the_budget_shortfall_reasons_are_exported_before_any_shortfall(self, exported: Exported) -> None:
        assert exported["selector_budget_shortfall_labels_total"]["reason"] >= {"floor", "cap"}


class TestDashboardContract:
    def test_every_metric_the_dashboard_queries_is_exported(self, exported: Exported) -> None:
        expressions = dashboard_expressions()
        assert any(metric_names(e) for e in expressions)
        missing = missing_names(expressions, exported)
        assert not missing, f"the dashboard queries series no process exports: {missing}"

    def test_every_label_value_the_dashboard_selects_is_exported(self, exported: Exported) -> None:
        missing = missing_values(dashboard_expressions(), exported)
        assert not missing, f"the dashboard selects label values no process exports: {missing}"


class TestAlertContract:
    def test_every_metric_the_alert_rules_query_is_exported(self, exported: Exported) -> None:
        expressions = alert_expressions()
        assert any(metric_names(e) for e in expressions), "no alert rule reads a selector_* metric"
        missing = missing_names(expressions, exported, recorded_names())
        assert not missing, f"alert rules query series no process exports: {missing}"

    def test_every_label_value_the_alert_rules_select_is_exported(self, exported: Exported) -> None:
        missing = missing_values(alert_expressions(), exported)
        assert not missing, f"alert rules select label values no process exports: {missing}"
