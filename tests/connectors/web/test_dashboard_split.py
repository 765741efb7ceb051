"""The dashboard where production runs its processes apart: the label loop's endpoint serves the page with its
panels (and the registry's versions) and hides the monitor's with a note; the monitor's page draws the label
loop's panels from ``metrics.labels_url`` (relayed by its own server), or says the label loop is unreachable.
Pages are rendered in real headless Chromium and compared with the Prometheus exposition."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from connectors.labels.loop import LabelLoop
from connectors.labels.metrics import labels_part
from connectors.labels.population import Population
from connectors.model.dataset import DatasetStore
from connectors.model.registry import ModelRegistry
from connectors.monitor.metrics import monitor_part
from connectors.web.server import Endpoint, peer_status
from connectors.web.versions import with_registry
from selector.config import Config, parse_config
from selector.errors import ConfigError
from selector.quality.labels import LabelEvent
from tests.connectors.labels.line import line
from tests.connectors.labels.test_status import T0
from tests.connectors.web.test_dashboard_browser import browse, shown
from tests.connectors.web.test_web import decided_monitor, get

IN_MEMORY: Config = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"},
                                        "dataset": {"path": ":memory:"}})  # fmt: skip
"""A label loop with an in-memory store (its registry is whatever a test passes)."""


SEGMENTS = tuple("abcdefghijkl")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def filled_registry(root: Path) -> ModelRegistry:
    """v1 promoted (no gate), v2 rejected by the gate, v3 promoted: current."""
    registry = ModelRegistry(root)
    registry.add(b"v1", {"created_at": T0, "classes": ["ok"]}, promote=True)
    gate = {"candidate_macro_f1": 0.612, "current_macro_f1": 0.640, "holdout": 40.0}
    registry.add(b"v2", {"created_at": T0 + 3600, "metrics": gate}, promote=False)
    gate = {"candidate_macro_f1": 0.701, "current_macro_f1": 0.640, "holdout": 44.0}
    registry.add(b"v3", {"created_at": T0 + 7200, "metrics": gate}, promote=True)
    (root / "v4").mkdir()  # a version without its manifest (a hand-made copy gone wrong)
    return registry


@pytest.fixture(scope="module")
def label_loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, LabelLoop]]:
    """The label loop's endpoint as ``selector labels`` serves it: its part alone, with the registry."""
    root = tmp_path_factory.mktemp("models")
    filled_registry(root)
    config = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "retrain": {"registry": str(root)},
                           "quality": {"divergence_sigmas": 1.0},
                           "dataset": {"consensus": "majority"}})  # fmt: skip  # 1:1 splits stay unresolved
    # a line of 800 predictions over two days, by two model versions and in twelve segments, some labeled
    li = line(800, seed=3, segments=(*SEGMENTS, None))
    store = DatasetStore(":memory:")
    store.add_decisions(li.decisions())
    store.add_labels(li.labels())
    Population(store, config).ingest(li.records(), now=T0)
    # a second annotator on ten items, agreeing on six
    first = li.labels()[:10]
    store.add_labels(
        LabelEvent(e.id, e.label if k < 6 else "crack" if e.label != "crack" else "ok", "ann-2", e.ts + 30)
        for k, e in enumerate(first)
    )
    loop = LabelLoop(config, "127.0.0.1:9", store, status_interval_s=0.0, clock=lambda: T0)
    loop.refresh_status()
    loop.rounds = 1
    loop.read_registry()
    endpoint = Endpoint([with_registry(labels_part(loop), ModelRegistry(root))], "127.0.0.1", 0).start()
    yield endpoint, loop
    endpoint.close()


@pytest.fixture
def monitor_at() -> Iterator[Callable[[str], Endpoint]]:
    """Start the monitor's endpoint as ``selector run`` serves it, with ``metrics.labels_url`` = the URL."""
    opened: list[Endpoint] = []

    def start(labels_url: str) -> Endpoint:
        monitor = decided_monitor(500)
        monitor.assigned = {0}
        opened.append(Endpoint([monitor_part(monitor)], "127.0.0.1", 0, labels_url=labels_url).start())
        return opened[-1]

    yield start
    for endpoint in opened:
        endpoint.close()


def exported(endpoint: Endpoint, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the label loop endpoint's /metrics (its collector, read at this moment)."""
    value = endpoint.registry.get_sample_value(name, labels or {})
    assert value is not None, name
    return value


def assert_label_loop_panels(values: dict[str, str], endpoint: Endpoint) -> None:
    """The page's label loop numbers are the ones the label loop's endpoint exports."""
    resolved = exported(endpoint, "selector_labeled_items", {"state": "resolved"})
    unresolved = exported(endpoint, "selector_labeled_items", {"state": "unresolved"})
    assert values["labels.labeled"] == f"{int(resolved):,}" and unresolved > 0
    assert values["labels.unresolved"] == f"{int(unresolved):,}"
    overall = exported(endpoint, "selector_estimated_accuracy_ratio", {"scope": "overall"})
    assert values["accuracy.overall"] == f"{overall:.1%}"
    assert exported(endpoint, "selector_estimated_accuracy_labels", {"scope": "auto_accept"}) == 0
    assert values["accuracy.auto_accept"] == "no labels yet"  # no audits on this line
    agreement = exported(endpoint, "selector_annotator_agreement_ratio")
    assert values["labels.agreement"] == f"{agreement:.1%}"
    assert exported(endpoint, "selector_model_info", {"version": "v3"}) == 1.0
    assert values["registry.current"] == values["model.version"] == "v3"
    assert values["retrain.promoted"] == "0" and values["retrain.failed"] == "0"
    gates = {k: v for k, v in values.items() if k.startswith("registry.v")}
    assert gates == {"registry.v4": "unreadable", "registry.v3": "promoted", "registry.v2": "rejected",
                     "registry.v1": "promoted"}  # fmt: skip
    assert_estimate_panels(values, endpoint)


def pct(x: float) -> str:
    return f"{x:.1%}"


def assert_estimate_panels(values: dict[str, str], endpoint: Endpoint) -> None:
    """Accuracy by each method and window, the headline, the divergence and the breakdowns: as exported."""
    for method in ("prediction_powered", "label_free", "ipw"):
        for window in ("since_start", "sliding"):
            labels = {"metric": "accuracy", "class": "", "method": method, "window": window}
            assert values[f"estimate.{method}.{window}"] == pct(
                exported(endpoint, "selector_estimate_ratio", labels)
            )
    assert values["estimate.headline"] == values["estimate.prediction_powered.sliding"]
    sigmas = exported(endpoint, "selector_estimate_divergence_sigmas", {"window": "sliding"})
    assert values["divergence.headline"] == f"{sigmas:.1f} \N{GREEK SMALL LETTER SIGMA}"
    for model in ("v1", "v2"):
        for method in ("prediction_powered", "ipw"):
            labels = {"model": model, "method": method, "window": "sliding"}
            accuracy = exported(endpoint, "selector_estimate_model_accuracy_ratio", labels)
            assert values[f"model.{model}.{method}"] == pct(accuracy)

    # the ten segments with the most items in the window (then labels, then name), then a line for the others
    def rank(segment: str) -> tuple[float, float, str]:
        def count(what: str) -> float:
            labels = {"segment": segment, "window": "sliding"}
            return exported(endpoint, f"selector_estimate_segment_{what}", labels)

        return -count("items"), -count("labels"), segment

    top = sorted(SEGMENTS, key=rank)[:10]
    shown_segments = {k.split(".")[1] for k in values if k.startswith("segment.") and k != "segment.more"}
    assert shown_segments == set(top) and values["segment.more"] == "and 2 more segments with fewer items"
    for segment in top:
        labels = {"segment": segment, "method": "prediction_powered", "window": "sliding"}
        accuracy = exported(endpoint, "selector_estimate_segment_accuracy_ratio", labels)
        assert values[f"segment.{segment}.prediction_powered"] == pct(accuracy)


class TestLabelLoopPage:
    def test_it_draws_its_panels_with_its_metrics_numbers_and_hides_the_monitors(
        self, label_loop: tuple[Endpoint, LabelLoop]
    ) -> None:
        endpoint, _ = label_loop
        dom = browse(f"http://127.0.0.1:{endpoint.port}/", "--dump-dom")
        assert 'class="dot ok"' in dom, "the page never got a status"
        values = shown(dom)
        assert_label_loop_panels(values, endpoint)
        for card in ("rate", "routes", "spend", "thresholds", "scores"):
            assert re.search(rf'<section id="card-{card}"[^>]*hidden', dom), card
        for card in ("labels", "quality", "model"):
            assert not re.search(rf'<section id="card-{card}"[^>]*hidden', dom), card
        assert re.search(r'<div id="note-monitor" class="note">The monitor is not part of this process', dom)
        assert re.search(r'<div id="note-labels" class="note"[^>]*hidden', dom)
        assert re.search(r'<span class="kv" data-needs="serve"[^>]*hidden', dom), "no model served here"
        assert "0.701 / 0.640" in dom and "0.612 / 0.640" in dom
        sigmas = exported(endpoint, "selector_estimate_divergence_sigmas", {"window": "sliding"})
        alert = exported(endpoint, "selector_estimate_divergence_threshold_sigmas")
        beyond = re.search(r'class="big alert" data-metric="divergence.headline"', dom) is not None
        assert alert == 1.0 and beyond == (abs(sigmas) >= alert)
        status = orjson.loads(get(endpoint.port, "/api/status")[2])["labels"]
        shares = status["confusion"]["sliding"]
        assert sum(map(sum, shares)) == pytest.approx(1.0)
        for t, row in enumerate(shares):
            for p, share in enumerate(row):
                assert values[f"confusion.{t}.{p}"] == (f"{100 * share:.1f}" if share > 0 else "·")

    def test_its_status_lists_the_registrys_newest_versions_with_their_gate(
        self, label_loop: tuple[Endpoint, LabelLoop]
    ) -> None:
        endpoint, _ = label_loop
        registry = orjson.loads(get(endpoint.port, "/api/status")[2])["labels"]["registry"]
        assert registry["current"] == "v3"
        assert [(v["version"], v["status"], v["current"]) for v in registry["versions"]] == [
            ("v4", "unreadable", False), ("v3", "promoted", True), ("v2", "rejected", False),
            ("v1", "promoted", False),
        ]  # fmt: skip
        v2 = registry["versions"][2]
        assert (v2["candidate_macro_f1"], v2["current_macro_f1"], v2["holdout"], v2["parent"]) == (
            0.612,
            0.640,
            40.0,
            "v1",
        )
        assert "no manifest" in registry["versions"][0]["error"]
        assert get(endpoint.port, "/api/labels")[0] == 404  # relays only with metrics.labels_url

    def test_without_a_registry_directory_the_status_has_none(self, tmp_path: Path) -> None:
        loop = LabelLoop(IN_MEMORY, "127.0.0.1:9")
        part = with_registry(labels_part(loop), ModelRegistry(tmp_path / "absent"))
        assert part.sample is not None
        part.sample(0.0)
        assert part.status()["registry"] is None


class TestRegistryView:
    def test_an_unreadable_version_is_read_again_until_it_is_whole(self, tmp_path: Path) -> None:
        """A version whose manifest is missing says so with the reason, and is listed with its gate once the
        manifest is there; the registry's own versions are read once."""
        registry = ModelRegistry(tmp_path)
        registry.add(b"v1", {"created_at": T0}, promote=True)
        (tmp_path / "v2").mkdir()
        part = with_registry(labels_part(LabelLoop(IN_MEMORY, "127.0.0.1:9")), registry, keep=1)
        assert part.sample is not None
        part.sample(0.0)
        [v2] = part.status()["registry"]["versions"]
        assert (v2["version"], v2["status"], v2["current"]) == ("v2", "unreadable", False)
        assert v2["error"].startswith("model v2: no manifest at ")
        manifest = {**registry.manifest("v1"), "version": "v2", "status": "rejected"}
        (tmp_path / "v2" / "manifest.json").write_text(orjson.dumps(manifest).decode())
        part.sample(0.0)
        assert part.status()["registry"]["versions"] == [
            {"version": "v2", "status": "rejected", "created_at": manifest["created_at"], "parent": None,
             "candidate_macro_f1": None, "current_macro_f1": None, "holdout": None, "current": False}
        ]  # fmt: skip


class TestMonitorPage:
    def test_it_draws_the_label_loops_panels_from_labels_url(
        self, label_loop: tuple[Endpoint, LabelLoop], monitor_at: Callable[[str], Endpoint]
    ) -> None:
        """Both parts' panels; the label loop's numbers are its own metrics'; a link to its dashboard."""
        loop_endpoint, _ = label_loop
        url = f"http://127.0.0.1:{loop_endpoint.port}/"
        endpoint = monitor_at(url)
        dom = browse(f"http://127.0.0.1:{endpoint.port}/", "--dump-dom")
        values = shown(dom)
        assert_label_loop_panels(values, loop_endpoint)
        assert values["items.total"] == "500" and values["labels.url"] == url
        hidden = set(re.findall(r'<section id="card-([a-z]+)"[^>]*hidden', dom))
        assert hidden <= {"estimates", "breakdown", "confusion"}, hidden  # drawn when the status has them
        assert re.search(r'<div id="note-labels" class="note[^"]*"[^>]*hidden', dom)

    def test_a_label_loop_that_is_down_is_said_unreachable(
        self, monitor_at: Callable[[str], Endpoint]
    ) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        endpoint = monitor_at(url)
        dom = browse(f"http://127.0.0.1:{endpoint.port}/", "--dump-dom")
        assert 'class="dot ok"' in dom and shown(dom)["items.total"] == "500", "the monitor's page broke"
        note = re.search(r'<div id="note-labels" class="note bad">([^<]*)</div>', dom)
        assert note and note.group(1).startswith(f"label loop unreachable at {url} ("), dom
        for card in ("quality", "model"):
            assert re.search(rf'<section id="card-{card}"[^>]*hidden', dom), card


class TestRelay:
    def test_the_status_of_a_live_endpoint_and_why_there_is_none(
        self, label_loop: tuple[Endpoint, LabelLoop]
    ) -> None:
        endpoint, loop = label_loop
        relayed = peer_status(f"http://127.0.0.1:{endpoint.port}")
        assert relayed["status"]["labels"]["labeled"] == loop.status.labeled
        refused = peer_status(f"http://127.0.0.1:{closed_port()}/")
        assert refused == {"url": refused["url"], "error": "Connection refused"}
        assert peer_status(f"http://127.0.0.1:{endpoint.port}/metrics/") == {
            "url": f"http://127.0.0.1:{endpoint.port}/metrics/",
            "error": "HTTP 404 Not Found",
        }

    def test_a_silent_endpoint_times_out(self) -> None:
        with socket.socket() as silent:  # listens, never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            answer = peer_status(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.2)
        assert "timed out" in answer["error"]

    def test_the_monitors_status_names_the_url_and_relays_it(
        self, label_loop: tuple[Endpoint, LabelLoop], monitor_at: Callable[[str], Endpoint]
    ) -> None:
        loop_endpoint, _ = label_loop
        url = f"http://127.0.0.1:{loop_endpoint.port}"
        endpoint = monitor_at(url)
        assert orjson.loads(get(endpoint.port, "/api/status")[2])["labels_url"] == url
        code, kind, body = get(endpoint.port, "/api/labels")
        relayed = orjson.loads(body)
        assert (code, kind, relayed["url"]) == (200, "application/json", url)
        assert relayed["status"]["labels"]["registry"]["current"] == "v3"


class TestLabelsUrl:
    @pytest.mark.parametrize("url", ["http://labels:9465", "https://ops.example/selector-labels/",
                                     "http://[::1]:9465/"])  # fmt: skip
    def test_http_urls_are_taken(self, url: str) -> None:
        assert parse_config({"metrics": {"labels_url": url}}).metrics.labels_url == url

    @pytest.mark.parametrize(
        "url", ["labels:9465", "ftp://labels", "http://user:secret@labels:9465", "http://labels:9465/?x=1",
                "http://labels:70000", "http://la bels"],
    )  # fmt: skip
    def test_anything_else_is_refused_with_the_key_and_value(self, url: str) -> None:
        with pytest.raises(ConfigError) as err:
            parse_config({"metrics": {"labels_url": url}})
        assert "'metrics.labels_url' must be an http(s) URL such as http://labels:9465" in str(err.value)
        assert repr(url) in str(err.value)
