"""Start-up checks: what a process needs from its host, tried before any heavy work.

A process that cannot serve its port, write its files or read its secrets should say so in one line, naming
the configuration key and what to do, and exit 2 at once, not after training a model or joining a group.
Each check *tries* the thing (binds the port, creates and writes the path, opens the file) rather than
guessing from permissions, so it fails exactly when the real use would.

The HTTP ports are bound here and the bound sockets handed to the endpoints
(:class:`connectors.web.server.Endpoint`), so nothing can take a port between the check and its use.

Example:
    >>> held = reserve_port("127.0.0.1", 0, "metrics.port")
    >>> try:
    ...     reserve_port("127.0.0.1", held.getsockname()[1], "metrics.labels_port")
    ... except StartupError as exc:
    ...     print(exc.key, "|", str(exc).split(": ", 2)[1])
    metrics.labels_port | the port is already in use (another selector process?)
    >>> held.close()
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kafka.codec import has_gzip, has_lz4, has_snappy, has_zstd

from selector.config import Config
from selector.errors import ConfigError, SelectorError


class StartupError(ConfigError):
    """The host does not give a process what its configuration asks for (a port, a path, a file).

    Attributes:
        key: the configuration key (or environment variable) at fault.
        value: its value.
    """

    def __init__(self, key: str, value: object, problem: str, remedy: str) -> None:
        self.key = key
        self.value = value
        line = f"'{key}' ({value}): {problem}: {remedy}"
        self.problems = [line]
        self.source = "start-up"
        SelectorError.__init__(self, line)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def reserve_port(host: str, port: int, key: str) -> socket.socket:
    """A listening TCP socket on ``host:port`` (as the HTTP server would bind it).

    Raises:
        StartupError: the port is taken or the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        sock.bind((host, port))
        sock.listen(16)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                key,
                f"{host}:{port}",
                "the port is already in use (another selector process?)",
                f"stop the process that holds it, or set '{key}' to a free port (0 picks one)",
            ) from exc
        raise StartupError(
            key,
            f"{host}:{port}",
            f"cannot bind ({_reason(exc)})",
            "set 'metrics.host' to an address of this machine",
        ) from exc
    return sock


def writable_file(path: str | Path, key: str) -> None:
    """Create ``path`` (and its directory) if missing, and check the file and its directory take writes
    (SQLite writes a journal beside its file).

    Raises:
        StartupError: naming ``key``.
    """
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "ab"):
            pass
        with tempfile.TemporaryFile(dir=p.parent):
            pass
    except OSError as exc:
        raise StartupError(
            key,
            str(path),
            f"cannot write there ({_reason(exc)})",
            f"make it writable by this user (uid {os.getuid()}) or point '{key}' at a writable file",
        ) from exc


def writable_dir(path: str | Path, key: str) -> None:
    """Create the directory ``path`` if missing and check a file can be written in it.

    Raises:
        StartupError: naming ``key``.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as exc:
        raise StartupError(
            key,
            str(path),
            f"cannot create or write this directory ({_reason(exc)})",
            f"make it writable by this user (uid {os.getuid()}) or point '{key}' at a writable directory",
        ) from exc


def readable_file(path: str | Path, key: str) -> None:
    """Check ``path`` is a file this process can read.

    Raises:
        StartupError: naming ``key``.
    """
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise StartupError(
            key,
            str(path),
            f"cannot read the file ({_reason(exc)})",
            f"make it readable by this user (uid {os.getuid()}) or fix '{key}'",
        ) from exc


CODEC_LIBRARIES = {
    "gzip": (has_gzip, "it is built into Python"),
    "snappy": (has_snappy, "pip install python-snappy"),
    "lz4": (has_lz4, "pip install lz4"),
    "zstd": (has_zstd, "pip install zstandard"),
}
"""Per compression type: whether kafka-python can use it here, and what to install when it cannot."""


def client_library(config: Config) -> None:
    """Check the library ``kafka.client`` names is installed (kafka-python always is).

    Raises:
        StartupError: naming the key and what to install.
    """
    if config.kafka.client != "confluent-kafka":
        return
    try:
        import confluent_kafka  # noqa: PLC0415, F401 (an optional dependency, tried only when chosen)
    except ImportError as exc:
        raise StartupError(
            "kafka.client",
            "confluent-kafka",
            f"its Python library is not installed ({exc})",
            "pip install 'selector[confluent]', or set 'kafka.client' to kafka-python",
        ) from exc


def compression_library(config: Config) -> None:
    """Check the chosen client is installed and can compress with ``kafka.compression_type`` here:
    confluent-kafka (librdkafka) has every codec built in; kafka-python needs the codec's library.

    Raises:
        StartupError: naming the key and what to install.
    """
    client_library(config)
    codec = config.kafka.compression_type
    if codec == "none" or config.kafka.client == "confluent-kafka":
        return
    available, install = CODEC_LIBRARIES[codec]
    if not available():
        raise StartupError(
            "kafka.compression_type",
            codec,
            "its Python library is not installed",
            f"{install}, or set 'kafka.compression_type' to gzip or none",
        )


PORTS: dict[str, tuple[str, ...]] = {
    "run": ("port",),
    "demo": ("port", "labels_port", "serve_port"),
    "labels": ("labels_port",),
    "serve-model": ("serve_port",),
}
"""The ``metrics.*`` ports each command serves."""

KAFKA_COMMANDS = {"run", "demo", "labels", "serve-model", "retrain", "label-studio", "replay", "dead-letters"}
"""Commands that may talk to Kafka (and so read its TLS files)."""


@dataclass
class Reserved:
    """The sockets :func:`preflight` bound, by ``metrics.*`` key, for the endpoints to serve on."""

    sockets: dict[str, socket.socket] = field(default_factory=dict)

    def take(self, key: str) -> socket.socket | None:
        """The socket bound for ``metrics.<key>`` (None: metrics are off); the caller now owns it."""
        return self.sockets.pop(key, None)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


def preflight(config: Config, command: str) -> Reserved:
    """Everything ``command`` needs from the host under ``config``, tried in order: the compression library
    and the TLS files of its Kafka clients,
    the paths it writes, the ports it serves (bound and returned).

    Raises:
        StartupError: the first thing that fails (ports bound so far are released).
    """
    k = config.kafka
    if command in KAFKA_COMMANDS:
        compression_library(config)
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(k, key)
            if value is not None:
                readable_file(value, f"kafka.{key}")
    if command == "labels":
        writable_file(config.dataset.path, "dataset.path")
    if command == "retrain" or (command == "labels" and config.retrain.builtin):
        writable_dir(config.retrain.registry, "retrain.registry")
    reserved = Reserved()
    if config.metrics.enabled:
        m = config.metrics
        try:
            for key in PORTS.get(command, ()):
                reserved.sockets[key] = reserve_port(m.host, getattr(m, key), f"metrics.{key}")
        except StartupError:
            reserved.close()
            raise
    return reserved


@contextmanager
def reserved_for(config: Config, command: str) -> Iterator[Reserved]:
    """:func:`preflight`, releasing whatever socket no endpoint took when the block ends."""
    reserved = preflight(config, command)
    try:
        yield reserved
    finally:
        reserved.close()
