"""Hot reload of config.yaml: when to reload, what may change without a restart, and the logged diff."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from selector.config import Config
from selector.errors import ConfigError

RESTART_ONLY = ("kafka", "topics", "metrics")
"""Sections whose changes need a restart; a reload keeps their running values."""

CHECK_INTERVAL_S = 1.0


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class ConfigWatcher:
    """Says when to reload: on request (SIGHUP) or when the file's mtime changed (looked at once a second)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = _mtime(path)
        self._requested = threading.Event()
        self._last_check = float("-inf")

    def request(self) -> None:
        """Reload at the next check (safe from a signal handler)."""
        self._requested.set()

    def due(self, now: float) -> bool:
        """Whether to reload now (``now`` is a monotonic clock reading)."""
        if not self._requested.is_set() and now - self._last_check < CHECK_INTERVAL_S:
            return False
        self._last_check = now
        mtime = _mtime(self.path)
        if not self._requested.is_set() and mtime == self._mtime:
            return False
        self._requested.clear()
        self._mtime = mtime
        return True


def reloadable(old: Config, new: Config) -> tuple[Config, list[str]]:
    """The configuration to run after a reload, and the warnings about changes that need a restart.

    Raises:
        ConfigError: ``classes`` changed (decisions, shares and thresholds are all per class).
    """
    if new.classes != old.classes:
        raise ConfigError(["'classes' cannot change without a restart"], str(new.classes))
    kept = {key: getattr(old, key) for key in RESTART_ONLY}
    warnings = [
        f"'{key}' changed in the file but needs a restart; keeping the running values"
        for key, value in kept.items()
        if getattr(new, key) != value
    ]
    return new.model_copy(update=kept), warnings


def config_diff(old: Config, new: Config) -> list[str]:
    """``section.key: old -> new`` for every key that differs (secrets masked)."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict) and v and not prefix:
                out.update(flat(v, f"{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(old.masked()), flat(new.masked())
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
