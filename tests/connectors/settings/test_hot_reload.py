"""When the monitor reloads config.yaml: after an edit has held still for one check, at once on SIGHUP, never
from an empty file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from connectors.settings.hot_reload import CHECK_INTERVAL_S, ConfigWatcher, read_for_reload
from selector.errors import ConfigError

STEP = CHECK_INTERVAL_S


def write(path: Path, rate: float, mtime_s: int) -> None:
    """A config with ``budget.rate`` and a set modification time (edits differ whatever the clock's grain)."""
    path.write_text(yaml.safe_dump({"budget": {"rate": rate}}))
    os.utime(path, (mtime_s, mtime_s))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "config.yaml"
    write(p, 0.02, 1_000)
    return p


class TestWatcher:
    def test_an_unchanged_file_is_never_due(self, path: Path) -> None:
        watcher = ConfigWatcher(path)
        assert [watcher.due(k * STEP) for k in range(5)] == [False] * 5

    def test_an_edit_is_due_once_it_held_still_for_one_check(self, path: Path) -> None:
        watcher = ConfigWatcher(path)
        assert not watcher.due(0.0)
        write(path, 0.1, 1_001)
        assert [watcher.due(k * STEP) for k in (1, 2, 3)] == [False, True, False]

    def test_a_file_still_changing_between_checks_waits(self, path: Path) -> None:
        watcher = ConfigWatcher(path)
        path.write_text("budget:\n")  # a writer half-way
        os.utime(path, (1_001, 1_001))
        assert not watcher.due(STEP)
        write(path, 0.1, 1_002)  # done
        assert not watcher.due(2 * STEP)
        assert watcher.due(3 * STEP)

    def test_an_edit_undone_before_it_held_still_is_not_due(self, path: Path) -> None:
        watcher = ConfigWatcher(path)
        write(path, 0.1, 1_001)
        assert not watcher.due(STEP)
        write(path, 0.02, 1_000)
        assert [watcher.due(k * STEP) for k in (2, 3)] == [False, False]

    def test_a_request_is_due_at_once(self, path: Path) -> None:
        watcher = ConfigWatcher(path)
        assert not watcher.due(0.0)
        watcher.request()
        assert watcher.due(0.1)
        assert not watcher.due(0.2)


class TestReadForReload:
    @pytest.mark.parametrize("text", ["", "\n  \n"])
    def test_an_empty_file_is_refused(self, path: Path, text: str) -> None:
        path.write_text(text)
        with pytest.raises(ConfigError, match="the file is empty; a reload needs the whole configuration"):
            read_for_reload(path)

    def test_a_whole_file_is_read(self, path: Path) -> None:
        assert read_for_reload(path).budget.rate == 0.02

    def test_a_missing_file_says_it_cannot_be_read(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read config file"):
            read_for_reload(tmp_path / "gone.yaml")
