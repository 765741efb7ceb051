"""What every command shares: exit codes, the command contract, signals, the embedded broker, the store.

A command is a module with ``HELP``, ``add_arguments(parser)`` and ``handle(args, config, reserved)`` (and
``NEEDS_CONFIG = False`` or ``PREFLIGHT = False`` where it reads no configuration or reserves nothing);
:data:`connectors.cli.main.COMMANDS` maps each name to its module, literally.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from connectors.kafka.broker import EMBEDDED, EmbeddedBroker
from connectors.settings.startup import Reserved
from selector.config import Config

if TYPE_CHECKING:
    from connectors.model.dataset import DatasetStore

log = logging.getLogger("selector")

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_BROKER, EXIT_DELIVERY = 0, 1, 2, 3, 4
"""0 success (a drained stop on SIGTERM/SIGINT included), 1 anything else, 2 invalid configuration or usage,
3 Kafka unreachable past ``kafka.connect_deadline_s`` at start-up, 4 Kafka unreachable (or outputs
undeliverable) past ``kafka.outage_deadline_s`` while running."""


class Command(Protocol):
    """The contract of a command module (checked by the type checker on :data:`COMMANDS`)."""

    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser] | None:
        """Add the command's own options; return the (sub)parsers that take the common ones, if not this."""

    def handle(self, args: argparse.Namespace, config: Config, reserved: Reserved) -> int: ...


class Stoppable(Protocol):
    def request_stop(self) -> None: ...


EMBEDDED_GROUP_TIMEOUTS = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 10000,
}
"""One local process on the in-memory broker: short group timeouts make joins take ~3 s, not ~23 s."""


@contextlib.contextmanager
def bootstrap(config: Config) -> Iterator[tuple[str, Config]]:
    """The bootstrap servers and configuration to use, starting the embedded broker for ``embedded``."""
    if config.kafka.bootstrap_servers != EMBEDDED:
        yield config.kafka.bootstrap_servers, config
        return
    local = config.model_copy(update={"kafka": config.kafka.model_copy(update=EMBEDDED_GROUP_TIMEOUTS)})
    with EmbeddedBroker() as broker:
        log.info(
            "embedded broker: produce predictions to %s, topic %r",
            broker.bootstrap_servers,
            config.topics.predictions,
        )
        yield broker.bootstrap_servers, local


class Drainable(Stoppable, Protocol):
    @property
    def stopping(self) -> bool: ...

    def request_reload(self) -> None: ...


LONG_RUNNING = ("run", "labels", "serve-model", "label-studio", "demo")
"""The commands that run until stopped: a SIGTERM or SIGINT before their loop starts stops them cleanly."""


class StoppedWhileStarting(BaseException):
    """SIGTERM or SIGINT arrived before the command's loop started (nothing read yet, nothing to drain).
    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop a command."""


@contextlib.contextmanager
def _handling(handlers: Mapping[signal.Signals, Callable[[int, FrameType | None], None]]) -> Iterator[None]:
    """``handlers`` installed for the block, the previous ones restored after it."""
    previous = {s: signal.signal(s, h) for s, h in handlers.items()}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def stop_while_starting() -> Iterator[None]:
    """Until a loop installs its own handlers (:func:`stop_on_signals`, :func:`stop_after_round`), SIGTERM and
    SIGINT end start-up at once: :class:`StoppedWhileStarting` (exit 0, as a drained stop)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise StoppedWhileStarting(signal.Signals(signum).name)

    with _handling(dict.fromkeys(STOP_SIGNALS, handler)):
        yield


@contextlib.contextmanager
def stop_on_signals(monitor: Drainable) -> Iterator[None]:
    """SIGTERM and SIGINT ask the monitor to drain and commit (a second one exits at once); SIGHUP reloads."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if monitor.stopping:
            raise SystemExit(128 + signum)
        log.info("received %s: draining and committing", signal.Signals(signum).name)
        monitor.request_stop()

    def reload(_signum: int, _frame: FrameType | None) -> None:
        monitor.request_reload()

    with _handling({**dict.fromkeys(STOP_SIGNALS, handler), signal.SIGHUP: reload}):
        yield


@contextlib.contextmanager
def stop_after_round(loop: Stoppable) -> Iterator[None]:
    """SIGTERM and SIGINT ask a loop to stop once the round in hand is done."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after this round", signal.Signals(signum).name)
        loop.request_stop()

    with _handling(dict.fromkeys(STOP_SIGNALS, handler)):
        yield


def needs_cluster(config: Config, command: str) -> bool:
    """Whether the configuration names a cluster (logged when it asks for the embedded broker instead)."""
    if config.kafka.bootstrap_servers != EMBEDDED:
        return True
    log.error(
        "selector %s works with the topics of a running cluster: set kafka.bootstrap_servers "
        "(an embedded broker lives and dies inside one 'selector run' or 'selector demo')",
        command,
    )
    return False


@contextlib.contextmanager
def existing_store(config: Config) -> Iterator[DatasetStore | None]:
    """The dataset store, or None (logged) when ``selector labels`` never created it."""
    from connectors.model.dataset import DatasetStore  # noqa: PLC0415 (serve-model and run need no store)

    if not Path(config.dataset.path).exists():
        log.error("no dataset store at %s (dataset.path): run 'selector labels' first", config.dataset.path)
        yield None
        return
    store = DatasetStore(config.dataset.path)
    try:
        yield store
    finally:
        store.close()


def add_duration(parser: argparse.ArgumentParser, default_text: str = "") -> None:
    parser.add_argument(
        "--duration", type=float, default=None, help=f"stop after this many seconds{default_text}"
    )
