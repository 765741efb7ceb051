"""Hot reload of config.yaml: when to reload, what may change without a restart, and the logged diff."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from connectors.settings.configfile import load_config
from selector.config import Config
from selector.errors import ConfigError

RESTART_ONLY = ("kafka", "topics", "metrics")
"""Sections whose changes need a restart; a reload keeps their running values."""

CHECK_INTERVAL_S = 1.0


FileState = tuple[int, int] | None
"""A file's modification time (ns) and size, or None when it cannot be read."""

_NOTHING_PENDING = (-1, -1)


def _state(path: Path) -> FileState:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class ConfigWatcher:
    """Says when to reload: at once on request (SIGHUP); after an edit, once the file has stayed the same for
    one check (looked at once a second), so that a file still being written is not read half-way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = _state(path)
        self._pending: FileState = _NOTHING_PENDING
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
        state = _state(self.path)
        if not self._requested.is_set() and (state == self._seen or state != self._pending):
            self._pending = _NOTHING_PENDING if state == self._seen else state
            return False  # unchanged, or changed since the last check: wait until it holds still
        self._requested.clear()
        self._seen, self._pending = state, _NOTHING_PENDING
        return True


def read_for_reload(path: Path) -> Config:
    """The configuration in ``path`` for a reload.

    Raises:
        ConfigError: the file is empty (a file being rewritten in place, or a mistake: at a reload it would
            set every key back to its default), or invalid as :func:`load_config` says.
    """
    try:
        empty = not path.read_text(encoding="utf-8").strip()
    except OSError:
        empty = False  # load_config says why it cannot be read
    if empty:
        raise ConfigError(
            ["the file is empty; a reload needs the whole configuration (an empty file at start-up means the "
             "defaults)"],
            str(path),
        )  # fmt: skip
    return load_config(path)


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
