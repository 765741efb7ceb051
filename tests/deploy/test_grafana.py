"""Grafana provisioning and the selector dashboard: the files parse, the datasource is provisioned under a
fixed uid, and the dashboard is portable (its datasource is a template variable, never a hard-coded id or
name), laid out in the five documented rows, with a PromQL query behind every panel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "selector.yml"
DASHBOARD = GRAFANA / "dashboards" / "selector.json"

ROWS = ("Health", "Routing / query rate", "Labeling", "Quality", "Model lifecycle")
VARIABLE_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel in layout order, the panels of collapsed rows right after their row."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def walk(node: Any, path: str = "$") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every key of every object in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [value for _, key, value in walk(dashboard) if key == "expr"]


class TestProvisioning:
    def test_the_datasource_is_the_compose_prometheus_under_a_fixed_uid(self) -> None:
        """One Prometheus datasource at http://prometheus:9090 with uid `prometheus`."""
        doc = yaml.safe_load(DATASOURCES.read_text())
        assert doc["apiVersion"] == 1
        assert len(doc["datasources"]) == 1
        ds = doc["datasources"][0]
        assert (ds["type"], ds["uid"], ds["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")

    def test_the_provider_loads_the_dashboards_folder_into_folder_selector(self) -> None:
        doc = yaml.safe_load(PROVIDERS.read_text())
        assert doc["apiVersion"] == 1
        provider = doc["providers"][0]
        assert provider["type"] == "file"
        assert provider["folder"] == "selector"
        assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


class TestDashboard:
    def test_it_has_a_stable_uid_and_a_current_schema(self, dashboard: dict[str, Any]) -> None:
        """Links and provisioning updates rely on the uid; schemaVersion 38 is Grafana 10."""
        assert dashboard["uid"] == "selector-overview"
        assert dashboard["title"] == "selector"
        assert dashboard["schemaVersion"] >= 38
        assert dashboard.get("id") is None  # a provisioned dashboard must not carry a database id

    def test_the_datasource_is_a_template_variable(self, dashboard: dict[str, Any]) -> None:
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"] == VARIABLE_DATASOURCE, variable["name"]

    def test_rows_are_the_five_sections_in_order(self, dashboard: dict[str, Any]) -> None:
        """Health, routing, labeling, quality and model lifecycle, each with at least two panels."""
        panels = panels_of(dashboard)
        rows = [p["title"] for p in panels if p["type"] == "row"]
        assert tuple(rows) == ROWS
        per_row: dict[str, int] = {}
        current = None
        for panel in panels:
            if panel["type"] == "row":
                current = panel["title"]
                per_row[current] = 0
            else:
                assert current is not None, f"panel {panel['title']!r} comes before the first row"
                per_row[current] += 1
        assert all(n >= 2 for n in per_row.values()), per_row

    def test_every_panel_queries_the_variable_datasource(self, dashboard: dict[str, Any]) -> None:
        """Each non-row panel uses ${datasource} and has at least one target with a PromQL expression."""
        for panel in panels_of(dashboard):
            if panel["type"] == "row":
                continue
            title = panel["title"]
            assert panel["datasource"] == VARIABLE_DATASOURCE, title
            targets = panel.get("targets", [])
            assert any(str(t.get("expr", "")).strip() for t in targets), f"{title!r} has no query"
            for target in targets:
                assert target.get("datasource", VARIABLE_DATASOURCE) == VARIABLE_DATASOURCE, title
                assert str(target.get("expr", "")).strip(), f"{title!r}: target {target['refId']} is empty"

    def test_no_datasource_is_hard_coded_anywhere(self, dashboard: dict[str, Any]) -> None:
        """A `datasource` given as a numeric id or a plain name breaks on any other Grafana; only objects with
        a uid (the variable, or Grafana's built-in annotations) are allowed."""
        bad = [
            f"{path}.datasource = {value!r}"
            for path, key, value in walk(dashboard)
            if key == "datasource" and not (isinstance(value, dict) and "uid" in value)
        ]
        assert bad == []
        uids = {value["uid"] for _, key, value in walk(dashboard) if key == "datasource"}
        assert uids <= {"${datasource}", "-- Grafana --"}

    def test_panel_ids_are_unique(self, dashboard: dict[str, Any]) -> None:
        ids = [p["id"] for p in panels_of(dashboard)]
        assert len(ids) == len(set(ids)), sorted(ids)

    def test_every_panel_has_a_grid_position_inside_the_grid_and_none_overlap(
        self, dashboard: dict[str, Any]
    ) -> None:
        taken: dict[tuple[int, int], str] = {}
        for panel in dashboard["panels"]:  # collapsed rows' panels are laid out when expanded
            pos = panel["gridPos"]
            assert all(isinstance(pos[k], int) and pos[k] >= 0 for k in ("h", "w", "x", "y")), panel["title"]
            assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= GRID_COLUMNS, panel["title"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                    taken[(x, y)] = panel["title"]
        for row in dashboard["panels"]:
            for panel in row.get("panels", []):
                assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]

    def test_range_windows_follow_the_scrape_interval(self, dashboard: dict[str, Any]) -> None:
        """rate() and increase() windows are $__rate_interval (or the whole $__range), never a fixed
        duration that may hold fewer than two scrapes."""
        windows = {w for expr in expressions(dashboard) for w in re.findall(r"\[([^\]]*)\]", expr)}
        assert windows
        assert windows <= {"$__rate_interval", "$__range"}

    def test_the_score_histogram_is_a_heatmap(self, dashboard: dict[str, Any]) -> None:
        heatmaps = [p for p in panels_of(dashboard) if p["type"] == "heatmap"]
        assert any("selector_score_bucket" in t["expr"] for p in heatmaps for t in p["targets"])
        for panel in heatmaps:
            assert all(t.get("format") == "heatmap" for t in panel["targets"]), panel["title"]

    def test_the_unspent_budget_has_a_panel_by_reason(self, dashboard: dict[str, Any]) -> None:
        """When spend falls short of the target, the routing row says why: floor, cap or pool:<name>."""
        panels = panels_of(dashboard)
        routing = panels.index(next(p for p in panels if p["title"] == "Routing / query rate"))
        labeling = panels.index(next(p for p in panels if p["title"] == "Labeling"))
        found = [
            p
            for p in panels[routing:labeling]
            for t in p.get("targets", [])
            if "selector_budget_shortfall_labels_total" in t["expr"] and "by (reason)" in t["expr"]
        ]
        assert len(found) == 1 and found[0]["targets"][0]["legendFormat"] == "{{reason}}"
