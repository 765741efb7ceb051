"""Reading the configuration: ``config.yaml`` plus ``SELECTOR_...`` environment overrides.

An override names a key path with double underscores, e.g. ``SELECTOR_BUDGET__RATE=0.05`` sets
``budget.rate`` and ``SELECTOR_KAFKA__SASL_PLAIN_PASSWORD`` sets the SASL password. Values are parsed as YAML
scalars, so ``0.05``, ``true`` and ``[a, b]`` have their natural types. A key path ending in ``_FILE`` reads
the value from that file (for secrets mounted by Kubernetes or Docker); a file that cannot be read is a
:class:`connectors.settings.startup.StartupError` naming the key and the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from connectors.settings.startup import StartupError
from selector.config import Config, parse_config
from selector.errors import ConfigError

ENV_PREFIX = "SELECTOR_"


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration file (if any) with environment overrides applied.

    Raises:
        ConfigError: unreadable or malformed file, bad override, or invalid values.
    """
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"cannot read config file {str(p)!r}: {exc.strerror}"], source) from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"config file is not valid YAML: {exc}"], source) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                [f"config file must hold a mapping of keys, got {type(loaded).__name__}"], source
            )
        data = loaded or {}
    apply_env(data, os.environ if environ is None else environ)
    return parse_config(data, source)


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Apply ``SELECTOR_A__B=value`` overrides to ``data`` in place."""
    problems = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        raw = environ[name]
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if parts[-1].endswith("_file"):
            parts[-1] = parts[-1].removesuffix("_file")
            try:
                raw = Path(raw).read_text(encoding="utf-8").strip()
            except OSError as exc:  # a secret the process cannot read: one line, naming key and file
                key = ".".join(parts)
                raise StartupError(
                    key,
                    f"{name}={raw}",
                    f"cannot read the secret file ({exc.strerror or type(exc).__name__})",
                    f"make it readable by this user (uid {os.getuid()}) or fix {name}",
                ) from exc
            value: Any = raw
        else:
            try:
                value = yaml.safe_load(raw) if raw else raw
            except yaml.YAMLError:
                value = raw
        node = data
        for key in parts[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                problems.append(f"{name}: '{key}' is not a section")
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(problems, "environment")
