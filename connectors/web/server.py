"""Each process's HTTP endpoint: Prometheus metrics, health, readiness, a JSON status and the live dashboard.

One small threaded server per process (``selector run`` on ``metrics.port``, ``selector labels`` on
``metrics.labels_port``, ``selector serve-model`` on ``metrics.serve_port``; ``selector demo`` serves all
three parts on ``metrics.port`` and the collectors on the other two):

- ``GET /metrics``: the Prometheus exposition of the process's collector;
- ``GET /healthz``: 200 while the process's loop made progress in the last ``HEALTHY_WITHIN_S`` seconds
  (or is still starting, or waits out a Kafka outage, which ``kafka.outage_deadline_s`` bounds), else 503:
  a liveness probe;
- ``GET /readyz``: 200 once the process does its job (the monitor has partitions assigned, the inference
  connector has a model loaded, the label loop completed a round) and Kafka answers, else 503: a readiness
  probe;
- ``GET /api/status``: a JSON snapshot for the dashboard and for scripts (documented in docs/operations.md,
  "Live dashboard");
- ``GET /``: the dashboard, one HTML page that polls ``/api/status`` and draws SVG; no external assets;
- ``GET /api/labels`` (only with ``labels_url``, the monitor's ``metrics.labels_url``): the label loop's
  ``/api/status`` fetched by this server, so the monitor's dashboard draws the label loop's panels though the
  browser reaches only the monitor (no cross-origin request, nothing the label loop must allow).

Handlers only read counters the loops write (``/api/labels`` asks the label loop); they never block a loop.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import selector

log = logging.getLogger(__name__)

HEALTHY_WITHIN_S = 60.0
"""A loop whose last progress is older than this is reported unhealthy."""
SAMPLE_S = 2.0
"""How often the parts record their history (what the dashboard draws over time)."""
PEER_TIMEOUT_S = 2.0
"""How long ``/api/labels`` waits for the label loop's endpoint."""
PEER_MAX_BYTES = 8_000_000
"""A label loop status larger than this is refused (a status is some kilobytes)."""


class Reachability(Protocol):
    """Whether a part's Kafka cluster answers (:class:`connectors.kafka.outage.OutageWatch`)."""

    @property
    def reachable(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


@dataclass
class Part:
    """One process's contribution to an endpoint: its collector, health, readiness and status section."""

    name: str
    """the status section: ``monitor``, ``labels`` or ``serve``"""
    collector: Any
    last_progress: Callable[[], float]
    """wall-clock time of the loop's last progress (0 while starting)"""
    ready: Callable[[], bool]
    status: Callable[[], dict[str, Any]]
    sample: Callable[[float], None] | None = None
    """called every SAMPLE_S seconds to record what the status's history shows"""
    kafka: Reachability | None = None
    """the part's view of its cluster: not ready while unreachable (status section ``kafka``)"""


class Endpoint:
    """The HTTP server of one process, serving one or more parts (the demo runs three in one process)."""

    def __init__(
        self,
        parts: list[Part],
        host: str,
        port: int,
        *,
        dashboard: bool = True,
        metrics_of: list[Part] | None = None,
        sock: socket.socket | None = None,
        labels_url: str | None = None,
    ) -> None:
        """``metrics_of``: the parts whose collectors ``/metrics`` exposes (default: all; two parts' metrics
        share names, so one process's endpoint exposes one part's). ``sock``: a socket already listening on
        ``host:port`` (bound at start-up, :func:`connectors.settings.startup.reserve_port`), served instead
        of binding a new one. ``labels_url``: the label loop's endpoint, whose status ``/api/labels``
        relays."""
        self.parts = parts
        self.dashboard = dashboard
        self.labels_url = labels_url
        self.started = time.time()
        self.registry = CollectorRegistry()
        for part in parts if metrics_of is None else metrics_of:
            self.registry.register(part.collector)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)  # noqa: G003 (http.server's format)

        if sock is None:
            self.server = ThreadingHTTPServer((host, port), Handler)
        else:
            self.server = ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
            self.server.socket.close()
            self.server.socket = sock
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self._closed = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="http-history", daemon=True)

    def _sample(self) -> None:
        while True:
            now = time.time()
            for part in self.parts:
                if part.sample is not None:
                    part.sample(now)
            if self._closed.wait(SAMPLE_S):
                return

    def start(self) -> Endpoint:
        self._thread.start()
        self._sampler.start()
        log.info("metrics, health and %s on http://%s:%d/", "dashboard" if self.dashboard else "status",
                 self.server.server_address[0], self.port)  # fmt: skip
        return self

    def close(self) -> None:
        self._closed.set()
        self.server.shutdown()
        self.server.server_close()

    def healthy(self, now: float) -> bool:
        return all(
            now - max(p.last_progress(), self.started) < HEALTHY_WITHIN_S or not _reachable(p)
            for p in self.parts
        )

    def ready(self) -> bool:
        return all(p.ready() and _reachable(p) for p in self.parts)

    def status(self) -> dict[str, Any]:
        """Each part's section, plus ``kafka``: ``reachable`` (every part's cluster answers),
        ``unreachable_since`` (the earliest outage start, unix seconds, or None) and ``outages`` (seen)."""
        out: dict[str, Any] = {"at": time.time(), "version": selector.__version__}
        if self.labels_url is not None:
            out["labels_url"] = self.labels_url
        views = []
        for part in self.parts:
            out[part.name] = part.status()
            if part.kafka is not None:
                views.append(part.kafka.status())
                out[part.name]["kafka"] = views[-1]
        if views:
            since = [v["unreachable_since"] for v in views if v["unreachable_since"] is not None]
            out["kafka"] = {
                "reachable": all(v["reachable"] for v in views),
                "unreachable_since": min(since) if since else None,
                "outages": max(v["outages"] for v in views),
            }
        return out

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(request, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok = self.healthy(time.time())
            self._send(request, 200 if ok else 503, b"ok\n" if ok else b"stalled\n", "text/plain")
        elif path == "/readyz":
            ok = self.ready()
            self._send(request, 200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
        elif path == "/api/status":
            body = orjson.dumps(json_ready(self.status()), option=orjson.OPT_NON_STR_KEYS)
            self._send(request, 200, body, "application/json")
        elif path == "/api/labels" and self.labels_url is not None:
            body = orjson.dumps(json_ready(peer_status(self.labels_url)), option=orjson.OPT_NON_STR_KEYS)
            self._send(request, 200, body, "application/json")
        elif path in ("/", "/index.html") and self.dashboard:
            page = resources.files("connectors.web").joinpath("static/dashboard.html").read_bytes()
            self._send(request, 200, page, "text/html; charset=utf-8")
        else:
            self._send(request, 404, b"not found\n", "text/plain")

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str) -> None:
        request.send_response(code)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-store")
        request.end_headers()
        request.wfile.write(body)


def _reachable(part: Part) -> bool:
    return part.kafka is None or part.kafka.reachable


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""An opener that ignores proxy settings of the environment: the label loop is a peer in the deployment."""


def peer_status(url: str, timeout_s: float = PEER_TIMEOUT_S) -> dict[str, Any]:
    """``{"url", "status"}`` with the ``/api/status`` of the endpoint at ``url``, or ``{"url", "error"}``
    saying why there is none (refused, timed out, an HTTP error, not a JSON object, too large)."""
    try:
        with _DIRECT.open(url.rstrip("/") + "/api/status", timeout=timeout_s) as answer:
            body = answer.read(PEER_MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return {"url": url, "error": f"HTTP {exc.code} {exc.reason}"}
    except urllib.error.URLError as exc:  # refused, unknown host, timed out while connecting
        reason = exc.reason
        return {"url": url, "error": getattr(reason, "strerror", None) or str(reason)}
    except OSError as exc:  # a timeout or reset while reading
        return {"url": url, "error": str(exc) or type(exc).__name__}
    if len(body) > PEER_MAX_BYTES:
        return {"url": url, "error": f"its status is larger than {PEER_MAX_BYTES} bytes"}
    try:
        status = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"url": url, "error": "its /api/status is not JSON"}
    if not isinstance(status, dict):
        return {"url": url, "error": "its /api/status is not a JSON object"}
    return {"url": url, "status": status}


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as None, at any depth (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value
