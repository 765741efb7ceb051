"""Start-up errors through the real command line, in a subprocess: a taken port, a path that cannot be
written, a secret or TLS file that cannot be read. Each must exit 2 at once with one line on stderr that
names the key and says what to do, and no traceback; nothing heavy (training, a broker, a group) runs first.
No test here talks to a broker: the checks come before any connection."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.cli.main import EXIT_CONFIG
from connectors.settings.startup import StartupError, preflight, reserve_port, writable_dir, writable_file
from selector.config import parse_config

NOWHERE = "127.0.0.1:9"
"""A bootstrap address nothing listens on: a command that got past its checks would hang on it, not pass."""


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process (this test) listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def run_cli(tmp_path: Path, config: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(config, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "connectors.cli.main", *args, "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return proc.returncode, proc.stderr


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


class TestStartupErrorsOnTheCommandLine:
    def test_demo_with_a_taken_port_exits_2_before_training(self, tmp_path: Path, busy_port: int) -> None:
        """The issue's case: `selector demo` with metrics.port taken used to train a model for 13 s and die
        with an OSError traceback. Now: one line naming metrics.port and the remedy, exit 2, and the
        demo's work directory was never made (nothing ran)."""
        tmp = tmp_path / "tmp"
        tmp.mkdir()
        code, err = run_cli(tmp_path, f"metrics: {{port: {busy_port}}}\n", "demo", env={"TMPDIR": str(tmp)})
        line = one_line(err)
        assert code == EXIT_CONFIG
        assert line.startswith(f"selector: 'metrics.port' (127.0.0.1:{busy_port}): the port is already in")
        assert "set 'metrics.port' to a free port" in line
        assert list(tmp.iterdir()) == []

    def test_label_loop_with_a_taken_port(self, tmp_path: Path, busy_port: int) -> None:
        """`selector labels` names its own key, metrics.labels_port."""
        config = (
            f"kafka: {{bootstrap_servers: '{NOWHERE}'}}\n"
            f"dataset: {{path: '{tmp_path / 'd.sqlite'}'}}\n"
            f"metrics: {{labels_port: {busy_port}}}\n"
        )
        code, err = run_cli(tmp_path, config, "labels")
        assert code == EXIT_CONFIG and "'metrics.labels_port'" in one_line(err)

    def test_label_loop_with_an_unwritable_dataset_path(self, tmp_path: Path) -> None:
        """dataset.path under a regular file cannot be created: the line names dataset.path and the path."""
        (tmp_path / "a-file").write_text("x")
        bad = tmp_path / "a-file" / "d.sqlite"
        config = f"kafka: {{bootstrap_servers: '{NOWHERE}'}}\ndataset: {{path: '{bad}'}}\n"
        code, err = run_cli(tmp_path, config, "labels")
        line = one_line(err)
        assert code == EXIT_CONFIG
        assert line.startswith(f"selector: 'dataset.path' ({bad}): cannot write there")
        assert "point 'dataset.path' at a writable file" in line

    def test_retrain_with_an_unwritable_registry(self, tmp_path: Path) -> None:
        """retrain.registry that cannot be created is named before the store or the trainer is touched."""
        (tmp_path / "a-file").write_text("x")
        config = f"retrain: {{registry: '{tmp_path / 'a-file' / 'models'}'}}\n"
        code, err = run_cli(tmp_path, config, "retrain")
        assert code == EXIT_CONFIG and "selector: 'retrain.registry' (" in one_line(err)

    def test_an_unreadable_secret_file(self, tmp_path: Path) -> None:
        """SELECTOR_..._FILE pointing at a missing file: the line names the key, the variable and the file
        (never a secret: there is none to show)."""
        missing = tmp_path / "no-such-secret"
        env = {"SELECTOR_KAFKA__SASL_PLAIN_PASSWORD_FILE": str(missing)}
        code, err = run_cli(tmp_path, f"kafka: {{bootstrap_servers: '{NOWHERE}'}}\n", "run", env=env)
        line = one_line(err)
        assert code == EXIT_CONFIG
        assert line.startswith(
            f"selector: 'kafka.sasl_plain_password' (SELECTOR_KAFKA__SASL_PLAIN_PASSWORD_FILE={missing}): "
            "cannot read the secret file (No such file or directory)"
        )

    def test_an_unreadable_tls_file(self, tmp_path: Path) -> None:
        """kafka.ssl_cafile that cannot be read stops `selector run` before it connects."""
        config = (
            f"kafka: {{bootstrap_servers: '{NOWHERE}', security_protocol: SSL, "
            f"ssl_cafile: '{tmp_path / 'ca.pem'}'}}\n"
        )
        code, err = run_cli(tmp_path, config, "run")
        assert code == EXIT_CONFIG and "selector: 'kafka.ssl_cafile' (" in one_line(err)


class TestPreflight:
    def test_the_ports_are_bound_and_released_when_one_is_taken(self, busy_port: int) -> None:
        """The demo's three ports are bound in order; the third taken, the first two are released again."""
        free = reserve_port("127.0.0.1", 0, "x")
        first = int(free.getsockname()[1])
        free.close()
        cfg = parse_config({"metrics": {"port": first, "labels_port": 0, "serve_port": busy_port}})
        with pytest.raises(StartupError) as info:
            preflight(cfg, "demo")
        assert info.value.key == "metrics.serve_port"
        reserve_port("127.0.0.1", first, "metrics.port").close()  # free again

    def test_a_served_endpoint_uses_the_reserved_socket(self) -> None:
        """What preflight bound is what the endpoint serves on (nothing can take the port in between)."""
        reserved = preflight(parse_config({"metrics": {"port": 0}}), "run")
        sock = reserved.take("port")
        assert sock is not None and reserved.take("port") is None
        from connectors.web.server import Endpoint  # noqa: PLC0415

        endpoint = Endpoint([], "127.0.0.1", 0, sock=sock).start()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/healthz", timeout=10) as answer:
                assert answer.status == 200
            assert endpoint.port == sock.getsockname()[1]
        finally:
            endpoint.close()

    def test_paths_are_created_when_missing(self, tmp_path: Path) -> None:
        """A missing store file and registry directory are created (as the process would), not refused."""
        writable_file(tmp_path / "deep" / "er" / "d.sqlite", "dataset.path")
        writable_dir(tmp_path / "models" / "x", "retrain.registry")
        assert (tmp_path / "deep" / "er" / "d.sqlite").is_file() and (tmp_path / "models" / "x").is_dir()
