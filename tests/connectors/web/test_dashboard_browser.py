"""The live dashboard in real headless Chromium: the page fetches /api/status and shows the same numbers the
Prometheus endpoints export; a screenshot of it renders at the requested size."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from connectors.labels.loop import LabelLoop
from connectors.labels.metrics import LabelLoopCollector, labels_part
from connectors.model.registry import ModelRegistry
from connectors.model.serving import ModelServer, serve_part
from connectors.monitor.metrics import monitor_part
from connectors.web.server import Endpoint
from tests.connectors.labels.test_status import filled_store
from tests.connectors.model.test_serving import ensemble, graph
from tests.connectors.web.test_web import CFG, decided_monitor


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium not found: install the Debian package 'chromium' (make test does)")


def browse(url: str, *args: str) -> str:
    out = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--virtual-time-budget=5000", *args, url],
        capture_output=True, text=True, timeout=90, check=True,
    )  # fmt: skip
    return out.stdout


@pytest.fixture
def live(tmp_path: Path):  # type: ignore[no-untyped-def]
    monitor = decided_monitor(3_000)
    monitor.assigned = {0}
    store, _, _ = filled_store()
    loop = LabelLoop(CFG, "127.0.0.1:9", store, status_interval_s=0.0)
    loop.rounds = 1
    registry = ModelRegistry(tmp_path / "models")
    registry.add(graph(ensemble(6)), {"created_at": 0.0, "classes": CFG.classes}, promote=True)
    server = ModelServer(CFG, "127.0.0.1:9", registry)
    assert server.swap("v1")
    parts = [monitor_part(monitor), labels_part(loop), serve_part(server)]
    endpoint = Endpoint(parts, "127.0.0.1", 0, metrics_of=parts[:1]).start()
    yield endpoint, monitor, loop
    endpoint.close()


def shown(dom: str) -> dict[str, str]:
    """The text of every element with a data-metric attribute (the first of each name)."""
    out: dict[str, str] = {}
    for name, text in re.findall(r'data-metric="([^"]+)"[^>]*>([^<]*)<', dom):
        out.setdefault(name, " ".join(text.split()))
    return out


def test_the_page_shows_the_numbers_the_metrics_export(live) -> None:  # type: ignore[no-untyped-def]
    endpoint, monitor, loop = live
    dom = browse(f"http://127.0.0.1:{endpoint.port}/", "--dump-dom")
    values = shown(dom)
    assert 'class="dot ok"' in dom, "the page never got a status"
    assert monitor.router.stats.shortfall == {"floor": 0.0, "cap": 0.0}
    assert re.search(r'<div id="shortfall"[^>]*hidden[^>]*></div>', dom), "no shortfall: no unspent line"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in endpoint.registry.collect()
        for s in f.samples
    }
    for route in ("accept", "query", "audit", "skip"):
        exported = samples[("selector_items_total", (("route", route),))]
        assert values[f"items.{route}"] == f"{int(exported):,}"
    assert values["items.total"] == "3,000"
    assert values["budget.rate"] == f"{samples[('selector_budget_target_ratio', ())]:.2%}"
    labeled = monitor.router.stats.items["query"] + monitor.router.stats.items["audit"]
    assert values["rate.total"] == f"{labeled / 3000:.2%}"
    loop_registry = CollectorRegistry()
    loop_registry.register(LabelLoopCollector(loop))
    resolved = loop_registry.get_sample_value("selector_labeled_items", {"state": "resolved"})
    assert values["labels.labeled"] == f"{int(resolved):,}" == "200"
    overall = loop_registry.get_sample_value("selector_estimated_accuracy_ratio", {"scope": "overall"})
    assert values["accuracy.overall"] == f"{overall:.1%}"
    v2 = loop.status.by_model["v2"]
    assert values["accuracy.model.v2"] == f"{v2.estimate:.1%}"
    assert values["model.version"] == "v1" and values["model.refused"] == "0"
    spend = monitor.router.stats.requested_by_class
    for name, n in zip(CFG.classes, spend.tolist(), strict=True):
        assert values[f"spend.{name}"].startswith(f"{n:,} (")


def test_a_screenshot_renders_the_page(live, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    endpoint, _, _ = live
    shot = tmp_path / "dashboard.png"
    browse(f"http://127.0.0.1:{endpoint.port}/", f"--screenshot={shot}", "--window-size=1280,900")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 900)
    assert len(data) > 40_000  # a page of charts and text, not a blank one (a blank page is ~5 kB)
    assert np.frombuffer(data, dtype=np.uint8).std() > 0
