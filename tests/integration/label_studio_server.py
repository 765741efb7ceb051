"""A real Label Studio server for the bridge's tests, run from its own virtualenv (its pins clash with ours).

The venv is ``$LABEL_STUDIO_VENV``, else ``<repo>/.venv-label-studio``, created with ``pip install
label-studio==1.23.2`` when it lacks the ``label-studio`` command. The server starts on a free port with a
fresh data directory, an admin user, a legacy token (``--user-token``, allowed for the organization with
``--enable-legacy-api-token``) and SSRF protection off, so it may call a webhook on 127.0.0.1.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

VERSION = "1.23.2"
REPO = Path(__file__).resolve().parents[2]
EMAIL = "admin@example.com"


def venv_path() -> Path:
    return Path(os.environ.get("LABEL_STUDIO_VENV") or REPO / ".venv-label-studio")


def ensure_venv(venv: Path) -> Path:
    """The ``label-studio`` command of ``venv``, installing it there first if missing (minutes, once)."""
    command = venv / "bin" / "label-studio"
    if command.exists():
        return command
    python = shutil.which("python3.11") or sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"label-studio=={VERSION}"], check=True)
    return command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabelStudioServer:
    """``label-studio start`` in a child process group; :meth:`stop` ends it (and only it)."""

    def __init__(self, data_dir: Path, venv: Path | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.venv = venv or venv_path()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(20)
        """the admin's legacy token (40 hex characters)"""
        self._pat: str | None = None
        """the admin's personal access token once created (its secret cannot be read back)"""
        self.password = secrets.token_hex(8)
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "label-studio.log"

    def start(self, timeout_s: float = 600.0) -> LabelStudioServer:
        command = ensure_venv(self.venv)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LABEL_STUDIO_USERNAME": EMAIL,
            "LABEL_STUDIO_PASSWORD": self.password,
            "SSRF_PROTECTION_ENABLED": "false",
        }
        with self.log_path.open("wb") as out:
            self._process = subprocess.Popen(
                [
                    str(command),
                    "start",
                    "--no-browser",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--username",
                    EMAIL,
                    "--password",
                    self.password,
                    "--user-token",
                    self.token,
                    "--enable-legacy-api-token",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Label Studio exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200 and self.api("GET", "/api/current-user/whoami"):
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Label Studio did not start within {timeout_s} s")

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=15)

    def api(self, method: str, path: str, body: object = None, token: str | None = None) -> object:
        """One JSON request as the admin (legacy token); raises urllib's HTTPError on 4xx and 5xx."""
        request = urllib.request.Request(
            self.url + path,
            data=orjson.dumps(body) if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": token or f"Token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            raw = r.read()
        return orjson.loads(raw) if raw else None

    def personal_access_token(self) -> str:
        """The admin's personal access token (a JWT refresh token), created through the API once and kept:
        Label Studio shows its secret only when it is created (the tests run once per Kafka client)."""
        if self._pat is None:
            if self.api("GET", "/api/token/"):
                raise RuntimeError("the admin already has a personal access token; its secret is shown once")
            answer = self.api("POST", "/api/token/")
            assert isinstance(answer, dict)
            self._pat = str(answer["token"])
        return self._pat
