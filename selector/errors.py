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


class KafkaOutageError(SelectorError):
    """The cluster stopped answering and did not answer again within ``kafka.outage_deadline_s``.

    Nothing undelivered was committed: the records in flight are decided again after a restart.
    """

    def __init__(self, servers: str, since: str, waited_s: float, deadline_s: float, detail: str) -> None:
        self.servers = servers
        self.since = since
        self.waited_s = waited_s
        self.deadline_s = deadline_s
        super().__init__(
            f"Kafka at {servers!r} unreachable since {since} ({waited_s:.0f} s, last error: {detail}), "
            f"past 'kafka.outage_deadline_s' ({deadline_s:g} s): stopping without committing "
            "anything undelivered; check the brokers and the network, then restart "
            "(or raise 'kafka.outage_deadline_s')"
        )
