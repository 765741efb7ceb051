"""`selector check-config` and `selector schema`: exact error messages, exit codes, masking."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.cli.base import LONG_RUNNING
from connectors.cli.main import COMMANDS, EXIT_CONFIG, EXIT_OK, main
from connectors.kafka.clients import producer_kwargs
from connectors.settings import startup
from connectors.settings.startup import StartupError
from selector.config import parse_config
from selector.messages.contracts import json_schemas

ROOT = Path(__file__).resolve().parents[3]


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    code = main(["check-config", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


class TestCheckConfig:
    def test_shipped_config_is_valid(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The repository's config.yaml passes and prints the effective configuration with its hash."""
        code = main(["check-config", "-c", str(ROOT / "config.yaml")])
        out, _ = capsys.readouterr()
        assert code == EXIT_OK
        assert out.startswith("# effective configuration (hash ")
        assert "bootstrap_servers: embedded" in out

    @pytest.mark.parametrize(
        ("text", "line"),
        [
            ("budget: {rate: 1.3}", "'budget.rate' must be in (0, 1]: 1.3"),
            ("budget: {rate: 0}", "'budget.rate' must be in (0, 1]: 0"),
            (
                "budget: {rat: 0.1}",
                "'budget.rat' is not a known key: 0.1 (valid keys: rate, controller, query_threshold, "
                "window_items, max_burst, caps, audit_rate, exploration, "
                "class_shares, segment_shares, seed)",
            ),
            ("classes: []", "'classes' must list at least 2 class names: []"),
            (
                "kafka: {max_poll_records: many}",
                "'kafka.max_poll_records': input should be a valid integer: 'many'",
            ),
            (
                "budget: {caps: {week: 5}}",
                "'budget.caps': input should be 'minute', 'hour' or 'day': 'week'",
            ),
            (
                "scoring: {measure: egl}",
                "'input.embedding_dim' (the length of your model's embeddings) is required by "
                "measure 'egl' (scoring)",
            ),
        ],
    )
    def test_invalid_values_exit_2_naming_key_constraint_and_value(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: str
    ) -> None:
        """Each error line names the key, the constraint and the actual value."""
        code, out, err = check(tmp_path, text, capsys)
        assert code == EXIT_CONFIG
        assert out == ""
        assert f"  - {line}\n" in err

    def test_all_problems_are_reported_at_once(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An operator fixes every mistake in one round, not one per run."""
        code, _, err = check(tmp_path, "budget: {rate: 2, seed: x}\nmetrics: {port: 70000}\n", capsys)
        assert code == EXIT_CONFIG
        assert "(3 problems)" in err
        assert "'metrics.port' must be a TCP port in [0, 65535] (0 picks a free port): 70000" in err

    def test_unreadable_and_malformed_files_are_config_errors(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing file and broken YAML both exit 2 with a message saying which."""
        assert main(["check-config", "-c", str(tmp_path / "nope.yaml")]) == EXIT_CONFIG
        assert "cannot read config file" in capsys.readouterr().err
        code, _, err = check(tmp_path, "budget: [rate: 1\n", capsys)
        assert code == EXIT_CONFIG
        assert "config file is not valid YAML" in err

    def test_sasl_password_is_masked_from_file_and_environment(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The password appears nowhere in the output, from the file or from SELECTOR_KAFKA__..._FILE."""
        text = (
            "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n"
            "  sasl_plain_username: selector\n  sasl_plain_password: hunter2-secret\n"
        )
        code, out, _ = check(tmp_path, text, capsys)
        assert code == EXIT_OK
        assert "hunter2-secret" not in out
        assert "sasl_plain_password: '**********'" in out
        secret = tmp_path / "pw"
        secret.write_text("from-a-file-secret\n")
        monkeypatch.setenv("SELECTOR_KAFKA__SASL_PLAIN_PASSWORD_FILE", str(secret))
        code, out, _ = check(tmp_path, text, capsys)
        assert code == EXIT_OK
        assert "from-a-file-secret" not in out and "hunter2-secret" not in out

    def test_sasl_without_credentials_is_rejected(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """SASL needs a mechanism, a user and a password; the message says which keys."""
        code, _, err = check(tmp_path, "kafka: {security_protocol: SASL_PLAINTEXT}", capsys)
        assert code == EXIT_CONFIG
        assert "'kafka.sasl_mechanism' is required when security_protocol is SASL_PLAINTEXT" in err

    def test_environment_overrides_are_typed_and_validated(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SELECTOR_BUDGET__RATE sets budget.rate as a number and is validated like the file."""
        monkeypatch.setenv("SELECTOR_BUDGET__RATE", "0.05")
        code, out, _ = check(tmp_path, "", capsys)
        assert code == EXIT_OK and "rate: 0.05" in out
        monkeypatch.setenv("SELECTOR_BUDGET__RATE", "7")
        code, _, err = check(tmp_path, "", capsys)
        assert code == EXIT_CONFIG and "'budget.rate' must be in (0, 1]: 7" in err


class TestCompressionLibrary:
    """A ``kafka.compression_type`` whose Python library is missing is refused before anything connects."""

    @pytest.fixture
    def without_lz4(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(startup.CODEC_LIBRARIES, "lz4", (lambda: False, "pip install lz4"))

    def test_check_config_refuses_it_in_one_line_naming_key_and_remedy(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], without_lz4: None
    ) -> None:
        code, out, err = check(tmp_path, "kafka: {compression_type: lz4}", capsys)
        assert code == EXIT_CONFIG and out == ""
        assert err.splitlines() == [
            "selector: 'kafka.compression_type' (lz4): its Python library is not installed: pip install lz4, "
            "or set 'kafka.compression_type' to gzip or none"
        ]

    def test_check_config_takes_an_installed_one(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(startup.CODEC_LIBRARIES, "zstd", (lambda: True, "pip install zstandard"))
        code, out, _ = check(tmp_path, "kafka: {compression_type: zstd}", capsys)
        assert code == EXIT_OK and "compression_type: zstd" in out

    def test_a_kafka_command_refuses_it_before_connecting(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], without_lz4: None
    ) -> None:
        """`selector run` against an address nobody serves returns at once: the check comes first."""
        path = tmp_path / "config.yaml"
        path.write_text(
            "kafka: {compression_type: lz4, bootstrap_servers: '127.0.0.1:9'}\nmetrics: {port: 0}\n"
        )
        assert main(["run", "-c", str(path)]) == EXIT_CONFIG
        assert "'kafka.compression_type' (lz4)" in capsys.readouterr().err

    def test_the_producer_settings_refuse_it_too(self, without_lz4: None) -> None:
        cfg = parse_config({"kafka": {"compression_type": "lz4"}})
        with pytest.raises(StartupError, match="pip install lz4"):
            producer_kwargs(cfg)


class TestSchema:
    def test_checked_in_schemas_match_the_models(self) -> None:
        """schemas/*.schema.json are exactly what the contract models generate (run `make schemas` if not)."""
        for name, schema in json_schemas().items():
            path = ROOT / "schemas" / f"{name}.schema.json"
            assert json.loads(path.read_text()) == schema, f"{path.name} is stale: run `make schemas`"


@pytest.mark.parametrize("command", ["labels", "serve-model", "label-studio"])
def test_the_cluster_commands_refuse_the_embedded_broker(
    command: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An embedded broker lives inside one process: these commands need a cluster, exit 2 and say so."""
    config = tmp_path / "config.yaml"
    config.write_text("kafka: {bootstrap_servers: embedded}\n")
    assert main([command, "-c", str(config), "--duration", "1"]) == 2
    assert f"selector {command} works with the topics of a running cluster" in caplog.text


class TestCommandMap:
    @pytest.mark.parametrize("name", sorted(COMMANDS))
    def test_every_command_owns_its_help_arguments_and_handler(
        self, name: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each entry of the literal command map is a module with HELP, add_arguments and handle, and
        'selector <name> --help' prints its own usage and exits 0."""
        command = COMMANDS[name]
        assert command.HELP and callable(command.add_arguments) and callable(command.handle)
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        assert f"usage: selector {name}" in capsys.readouterr().out


def test_serve_model_loads_neither_the_label_loop_nor_the_store() -> None:
    """The command line and the inference connector import no module of the label loop, nor the dataset
    store (SQLite): serve-model starts light (checked in a fresh interpreter)."""
    code = (
        "import sys, connectors.cli.main, connectors.model.serving\n"
        "rooms = ('connectors.labels', 'connectors.model.dataset')\n"
        "loaded = [m for m in sys.modules if m.startswith(rooms)]\n"
        "print(loaded, 'sqlite3' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[] False"


class TestStoppedWhileStarting:
    """A SIGTERM or SIGINT before a long-running command's loop installs its own handlers (a slow import, a
    model being loaded) stops it cleanly: one line, exit 0, never the signal's default death (seen once:
    serve-model killed with -15 while starting, under load)."""

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_a_signal_before_the_loop_starts_exits_0(
        self, signum: int, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def starting(*_: object) -> int:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler interrupts this sleep
            return 1

        monkeypatch.setattr(COMMANDS["labels"], "handle", starting)
        config = tmp_path / "config.yaml"
        config.write_text("kafka: {bootstrap_servers: '127.0.0.1:9'}\nmetrics: {enabled: false}\n")
        began = time.monotonic()
        with caplog.at_level(logging.INFO):
            assert main(["labels", "-c", str(config)]) == EXIT_OK
        assert time.monotonic() - began < 4
        name = signal.Signals(signum).name
        assert f"received {name} while starting: stopped before reading anything" in caplog.text
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are given back

    def test_a_one_shot_command_keeps_the_default_handling(self) -> None:
        """status, check-config, replay... are not stopped this way: only the commands that run until told."""
        assert set(LONG_RUNNING) == {"run", "labels", "serve-model", "label-studio", "demo"} <= set(COMMANDS)
