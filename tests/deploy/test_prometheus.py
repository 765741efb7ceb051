"""The Prometheus deployment: promtool accepts the configuration and the rules, every alert is unit-tested
both firing and silent, and the live exposition of the three collectors passes ``promtool check metrics``.
That the alerts read only exported series is tests/deploy/test_metric_contract.py's concern."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client.registry import Collector

from connectors.labels.loop import LabelLoop
from connectors.labels.metrics import LabelLoopCollector
from connectors.model.dataset import DatasetStore
from connectors.model.registry import ModelRegistry
from connectors.model.serving import ModelServer, ServeCollector
from connectors.model.trainer import Ensemble, onnx_model
from connectors.monitor.loop import Monitor
from connectors.monitor.metrics import SelectorCollector
from connectors.web.server import Endpoint, Part
from selector.config import Config, parse_config

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG, ALERTS, ALERTS_TEST = (
    PROMETHEUS / name for name in ("prometheus.yml", "alerts.yml", "alerts_test.yml")
)
MISSING = "promtool not found: install the Debian package 'prometheus' (make test does)"
SEVERITIES = {"critical", "warning", "info"}
CAMEL_CASE = re.compile(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)+")
DURATION = re.compile(r"(?:[0-9]+(?:ms|[smhdwy]))+")
EMBEDDING_DIM = 6


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool from the repository root; a missing promtool fails the test, it is never skipped."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(MISSING, pytrace=False)
    done = subprocess.run([path, *args], input=stdin, capture_output=True, cwd=ROOT, timeout=120, check=False)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    groups = load(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


RULES = alert_rules()


def config_for(tmp_path: Path) -> Config:
    """A configuration whose broker nobody serves (constructors must not connect) and whose model registry is
    private to the test."""
    return parse_config(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9"},
            "input": {"embedding_dim": EMBEDDING_DIM},
            "retrain": {"registry": str(tmp_path / "models")},
        }
    )


def tiny_model(classes: list[str]) -> bytes:
    """A two-member ensemble of random one-hidden-layer heads, as ONNX."""
    rng = np.random.default_rng(0)
    k, d, h, c = 2, EMBEDDING_DIM, 8, len(classes)
    ensemble = Ensemble(
        w1=rng.normal(size=(k, d, h)).astype(np.float32),
        b1=rng.normal(size=(k, h)).astype(np.float32),
        w2=rng.normal(size=(k, h, c)).astype(np.float32),
        b2=rng.normal(size=(k, c)).astype(np.float32),
        classes=list(classes),
    )
    model: bytes = onnx_model(ensemble).SerializeToString()
    return model


@contextmanager
def monitor_collector(tmp_path: Path) -> Iterator[Collector]:
    monitor = Monitor(config_for(tmp_path), "127.0.0.1:9")
    monitor.assigned = {0, 1}  # the lag gauge has a series per owned partition
    yield SelectorCollector(monitor)


@contextmanager
def labels_collector(tmp_path: Path) -> Iterator[Collector]:
    store = DatasetStore(":memory:")
    try:
        yield LabelLoopCollector(LabelLoop(config_for(tmp_path), "127.0.0.1:9", store))
    finally:
        store.close()


@contextmanager
def serve_collector(tmp_path: Path) -> Iterator[Collector]:
    """A server that loaded the registry's promoted v1, so the model info has a sample."""
    cfg = config_for(tmp_path)
    registry = ModelRegistry(cfg.retrain.registry)
    registry.add(tiny_model(cfg.classes), {"created_at": 0.0, "classes": cfg.classes}, promote=True)
    server = ModelServer(cfg, "127.0.0.1:9", registry)
    assert server.swap("v1")
    yield ServeCollector(server)


PROCESSES: dict[str, Callable[[Path], AbstractContextManager[Collector]]] = {
    "run": monitor_collector,
    "labels": labels_collector,
    "serve": serve_collector,
}
"""The collector behind each process's /metrics, by subcommand (ports 9464, 9465, 9466)."""


def exposition(process: str, tmp_path: Path) -> bytes:
    """What the process's HTTP endpoint serves on /metrics right after it starts, scraped over a socket."""
    with PROCESSES[process](tmp_path) as collector:
        part = Part(process, collector, lambda: 0.0, lambda: True, dict)
        endpoint = Endpoint([part], "127.0.0.1", 0, dashboard=False).start()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=10) as r:
                text: bytes = r.read()
        finally:
            endpoint.close()
    return text


class TestPromtool:
    def test_the_scrape_configuration_is_valid(self) -> None:
        """promtool accepts prometheus.yml and the rule file it names."""
        done = promtool("check", "config", str(CONFIG))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS: 1 rule files found" in done.stdout

    def test_the_alert_rules_are_valid(self) -> None:
        done = promtool("check", "rules", str(ALERTS))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"SUCCESS: {len(RULES)} rules found" in done.stdout

    def test_the_alert_rules_pass_their_unit_tests(self) -> None:
        """Every firing and silent case of alerts_test.yml holds, labels and annotations exactly."""
        done = promtool("test", "rules", str(ALERTS_TEST))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout

    def test_a_missing_promtool_fails_with_what_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(shutil, "which", lambda name: None)
        with pytest.raises(pytest.fail.Exception, match=re.escape(MISSING)):
            promtool("--version")


class TestScrapeConfig:
    def test_the_three_processes_are_scraped_by_their_compose_service_names(self) -> None:
        config = load(CONFIG)
        targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
        assert targets == {
            "selector-monitor": ["selector:9464"],
            "selector-labels": ["selector-labels:9465"],
            "selector-serve": ["selector-serve:9466"],
        }
        assert config["rule_files"] == ["alerts.yml"]


class TestAlertRules:
    @pytest.mark.parametrize("rule", RULES, ids=[rule["alert"] for rule in RULES])
    def test_every_alert_says_how_long_how_bad_and_what(self, rule: dict[str, Any]) -> None:
        """A CamelCase name, a `for` duration, a known severity, a summary and a description."""
        assert CAMEL_CASE.fullmatch(rule["alert"])
        assert DURATION.fullmatch(str(rule.get("for", "")))
        assert rule.get("labels", {}).get("severity") in SEVERITIES
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip() and annotations.get("description", "").strip()

    def test_the_rules_form_one_group_with_unique_names(self) -> None:
        groups = load(ALERTS)["groups"]
        assert [group["name"] for group in groups] == ["selector"]
        names = [rule["alert"] for rule in RULES]
        assert len(names) == len(set(names)) >= 11

    def test_every_alert_is_tested_firing_and_silent(self) -> None:
        """Each alert of alerts.yml has a case where it fires (with its exact labels and annotations) and one
        where it stays silent; no case names an alert that does not exist."""
        firing: set[str] = set()
        silent: set[str] = set()
        for group in load(ALERTS_TEST)["tests"]:
            for case in group.get("alert_rule_test", []):
                expected = case.get("exp_alerts") or []
                (firing if expected else silent).add(case["alertname"])
                for alert in expected:
                    assert {"summary", "description"} <= set(alert.get("exp_annotations", {})), case
                    assert "severity" in alert.get("exp_labels", {}), case
        names = {rule["alert"] for rule in RULES}
        assert firing == names
        assert silent == names


class TestExposition:
    @pytest.mark.parametrize("process", PROCESSES)
    def test_promtool_finds_no_problem_in_the_live_metrics(self, process: str, tmp_path: Path) -> None:
        """`promtool check metrics` lints what the process serves (HELP, TYPE, names, units): no problem."""
        text = exposition(process, tmp_path)
        assert b"selector_last_progress_timestamp_seconds" in text
        done = promtool("check", "metrics", stdin=text)
        assert (done.returncode, done.stdout + done.stderr) == (0, "")
