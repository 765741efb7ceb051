"""Specification of reading config.yaml and SELECTOR_... environment overrides
(connectors.settings.configfile)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.settings.configfile import apply_env, load_config
from selector.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class TestLoadConfig:
    def test_no_file_and_no_environment_gives_defaults(self) -> None:
        """Without a file the defaults apply."""
        assert load_config(None, environ={}).budget.rate == 0.02

    def test_values_from_the_file_are_applied(self, tmp_path: Path) -> None:
        """Keys in the YAML file set the corresponding fields."""
        cfg = load_config(write(tmp_path, "budget:\n  rate: 0.04\nclasses: [a, b, c]\n"), environ={})
        assert cfg.budget.rate == 0.04
        assert cfg.classes == ["a", "b", "c"]

    def test_empty_file_gives_defaults(self, tmp_path: Path) -> None:
        """An empty file is a valid (all-default) configuration."""
        assert load_config(write(tmp_path, ""), environ={}) == load_config(None, environ={})

    def test_shipped_config_yaml_is_valid(self) -> None:
        """The config.yaml in the repository must load as it is."""
        cfg = load_config(REPO_ROOT / "config.yaml", environ={})
        assert len(cfg.classes) >= 2

    def test_malformed_yaml_is_a_config_error_naming_the_file(self, tmp_path: Path) -> None:
        """Broken YAML must be reported as a ConfigError, not a YAML traceback."""
        path = write(tmp_path, "budget: [rate: 0.1\n")
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        (line,) = info.value.problems
        assert line.startswith("config file is not valid YAML: ")
        assert info.value.source == str(path)

    @pytest.mark.parametrize(
        ("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("3\n", "int")]
    )
    def test_non_mapping_yaml_is_a_config_error(self, tmp_path: Path, text: str, kind: str) -> None:
        """A YAML document that is not a mapping must say what it got."""
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text), environ={})
        assert info.value.problems == [f"config file must hold a mapping of keys, got {kind}"]

    def test_missing_file_is_a_config_error(self, tmp_path: Path) -> None:
        """An unreadable path must name the file and the OS reason."""
        path = tmp_path / "nope.yaml"
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.problems == [f"cannot read config file {str(path)!r}: No such file or directory"]

    def test_invalid_value_in_file_is_reported_with_the_file_as_source(self, tmp_path: Path) -> None:
        """Validation errors of a file must name the file."""
        path = write(tmp_path, "budget:\n  rate: 1.3\n")
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.problems == ["'budget.rate' must be in (0, 1]: 1.3"]
        assert str(info.value).startswith(f"invalid {path} (1 problem):")


class TestEnvironmentOverrides:
    def test_override_is_typed(self) -> None:
        """SELECTOR_BUDGET__RATE=0.05 must set budget.rate to the float 0.05."""
        cfg = load_config(None, environ={"SELECTOR_BUDGET__RATE": "0.05"})
        assert cfg.budget.rate == 0.05
        assert type(cfg.budget.rate) is float

    def test_override_wins_over_the_file(self, tmp_path: Path) -> None:
        """The environment is applied after the file."""
        path = write(tmp_path, "budget:\n  rate: 0.04\n")
        assert load_config(path, environ={"SELECTOR_BUDGET__RATE": "0.05"}).budget.rate == 0.05

    def test_override_keeps_sibling_keys_of_the_file(self, tmp_path: Path) -> None:
        """Overriding one key of a section must not drop the section's other keys."""
        path = write(tmp_path, "budget:\n  rate: 0.04\n  seed: 7\n")
        cfg = load_config(path, environ={"SELECTOR_BUDGET__RATE": "0.05"})
        assert cfg.budget.seed == 7

    def test_yaml_scalars_have_their_natural_types(self) -> None:
        """Booleans, integers and lists are parsed as YAML scalars."""
        data: dict[str, object] = {}
        apply_env(
            data,
            {
                "SELECTOR_METRICS__ENABLED": "false",
                "SELECTOR_METRICS__PORT": "9000",
                "SELECTOR_CLASSES": "[a, b]",
            },
        )
        assert data == {"metrics": {"enabled": False, "port": 9000}, "classes": ["a", "b"]}

    def test_unrelated_environment_is_ignored(self) -> None:
        """Only SELECTOR_-prefixed names are overrides; the bare prefix is not one."""
        data: dict[str, object] = {}
        apply_env(data, {"HOME": "/root", "SELECTOR_": "x", "selector_budget__rate": "0.5"})
        assert data == {}

    def test_unknown_nested_env_key_is_a_config_error(self) -> None:
        """A typo in an override fails like a typo in the file."""
        with pytest.raises(ConfigError) as info:
            load_config(None, environ={"SELECTOR_BUDGET__RAT": "0.05"})
        assert info.value.problems == [
            "'budget.rat' is not a known key: 0.05 "
            "(valid keys: rate, controller, query_threshold, window_items, "
            "max_burst, caps, audit_rate, exploration, class_shares, segment_shares, seed)"
        ]

    def test_override_below_a_scalar_is_a_config_error(self) -> None:
        """A path through a non-section value must be reported, naming the variable."""
        with pytest.raises(ConfigError) as info:
            load_config(None, environ={"SELECTOR_BUDGET__RATE": "0.05", "SELECTOR_BUDGET__RATE__X": "1"})
        assert info.value.problems == ["SELECTOR_BUDGET__RATE__X: 'rate' is not a section"]
        assert info.value.source == "environment"

    def test_file_suffix_reads_the_value_from_a_file(self, tmp_path: Path) -> None:
        """SELECTOR_..._FILE reads a mounted secret, stripped of its trailing newline."""
        secret = write(tmp_path, "s3cr3t-from-file\n", name="password")
        cfg = load_config(
            None,
            environ={
                "SELECTOR_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "SELECTOR_KAFKA__SASL_MECHANISM": "PLAIN",
                "SELECTOR_KAFKA__SASL_PLAIN_USERNAME": "selector",
                "SELECTOR_KAFKA__SASL_PLAIN_PASSWORD_FILE": str(secret),
            },
        )
        assert cfg.kafka.sasl_plain_password is not None
        assert cfg.kafka.sasl_plain_password.get_secret_value() == "s3cr3t-from-file"
        assert "s3cr3t-from-file" not in repr(cfg.masked())

    def test_file_suffix_value_is_taken_verbatim_not_as_yaml(self, tmp_path: Path) -> None:
        """A secret read from a file stays text even if it looks like a YAML number."""
        data: dict[str, object] = {}
        apply_env(data, {"SELECTOR_KAFKA__CLIENT_ID_FILE": str(write(tmp_path, "0123\n", name="cid"))})
        assert data == {"kafka": {"client_id": "0123"}}

    def test_unreadable_file_suffix_is_a_config_error(self, tmp_path: Path) -> None:
        """A missing secret file is one line naming the key, the variable, the path and what to do."""
        missing = str(tmp_path / "missing")
        with pytest.raises(ConfigError) as info:
            apply_env({}, {"SELECTOR_KAFKA__SASL_PLAIN_PASSWORD_FILE": missing})
        (line,) = info.value.problems
        assert line.startswith(
            f"'kafka.sasl_plain_password' (SELECTOR_KAFKA__SASL_PLAIN_PASSWORD_FILE={missing}): "
            "cannot read the secret file (No such file or directory): make it readable"
        )
        assert str(info.value) == line
