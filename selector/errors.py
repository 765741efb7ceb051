"""The error hierarchy. Every error raised on purpose derives from :class:`SelectorError`."""

from __future__ import annotations


class SelectorError(Exception):
    """Root of every error selector raises on purpose."""


class ConfigError(SelectorError):
    """The configuration is invalid.

    Attributes:
        problems: one line per problem, each naming the key, the constraint and the actual value.
    """

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"invalid {source} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{lines}"
        )


class BrokerUnavailableError(SelectorError):
    """The Kafka cluster could not be reached before the configured deadline."""

    def __init__(self, servers: str, waited_s: float, detail: str) -> None:
        self.servers = servers
        self.waited_s = waited_s
        super().__init__(
            f"cannot reach Kafka at {servers!r} after {waited_s:.0f} s ({detail}); "
            "check 'kafka.bootstrap_servers', the network and the broker, "
            "or raise 'kafka.connect_deadline_s'"
        )


class DeliveryError(SelectorError):
    """Routed records could not be delivered before the deadline; offsets were not committed."""
