"""``selector dead-letters``: ``list`` counts the dead letters by original topic, stage and reason;
``redrive`` re-sends chosen ones to their original topic after a fix, each record once
(:mod:`connectors.kafka.redrive`)."""

from __future__ import annotations

import argparse
import json

from connectors.cli.base import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, log, needs_cluster
from connectors.kafka.dead_letter_records import SKIPS, Selection, parse_offsets, parse_time
from connectors.kafka.redrive import Listing, Redrive, list_dead_letters, redrive, redriven_topic
from connectors.settings.startup import Reserved
from selector.config import Config

HELP = "list the dead letters, or re-send chosen ones to their original topic after a fix"

REDRIVE_EPILOG = """\
Every filter given must hold; a repeated one matches any of its values. A record is re-sent with its
original key and value, the dead letter's headers but the x-dlq-* ones, and x-redriven-from-topic,
x-redriven-from-partition, x-redriven-from-offset (the dead letter) and x-redriven-at. Each record is re-sent
once: what was re-driven is kept in the compacted topic <topics.dead_letter>-redriven, and a dead letter
re-driven before (or a copy of it) is skipped. A truncated dead letter is never re-sent.
exit codes: 0 done (also when nothing matches), 1 a record was refused, 2 bad option,
3 Kafka unreachable, 4 undeliverable."""


def add_arguments(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The ``list`` and ``redrive`` subcommands; they are what take the common options."""
    sub = parser.add_subparsers(dest="dead_letters_command", required=True)
    listing = sub.add_parser(
        "list",
        help="count the dead letters by original topic, stage and reason, with the time range of each "
        "(reads the whole topic without a consumer group; commits nothing)",
    )
    listing.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    again = sub.add_parser(
        "redrive",
        help="re-send chosen dead letters to their original topic, each record once",
        epilog=REDRIVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    again.add_argument("--reason", action="append", default=[], help="x-dlq-reason (repeatable)")
    again.add_argument("--stage", action="append", default=[], help="x-dlq-stage (repeatable)")
    again.add_argument(
        "--topic",
        action="append",
        default=[],
        help="x-dlq-original-topic, the topic to re-send to (repeatable)",
    )
    again.add_argument("--since", metavar="RFC3339", help="failed at or after (x-dlq-failed-at)")
    again.add_argument("--until", metavar="RFC3339", help="failed before (x-dlq-failed-at)")
    again.add_argument(
        "--offsets",
        action="append",
        default=[],
        metavar="PARTITION:FROM-TO",
        help="dead-letter topic offsets, inclusive (repeatable)",
    )
    again.add_argument("--all", action="store_true", help="every dead letter (when no filter is given)")
    again.add_argument("--dry-run", action="store_true", help="say what would be sent; send nothing")
    again.add_argument("--json", action="store_true", help="print one JSON object")
    return [listing, again]


def selection(args: argparse.Namespace) -> Selection:
    """The filters of ``redrive``; raises ValueError naming a bad value."""
    since = parse_time(args.since, "--since") if args.since else None
    until = parse_time(args.until, "--until") if args.until else None
    if since is not None and until is not None and since >= until:
        raise ValueError(f"--since must be before --until: {args.since!r} is not before {args.until!r}")
    return Selection(
        reasons=frozenset(args.reason),
        stages=frozenset(args.stage),
        topics=frozenset(args.topic),
        since_s=since,
        until_s=until,
        offsets=tuple(parse_offsets(text) for text in args.offsets),
        everything=args.all,
    )


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    del reserved
    if not needs_cluster(config, "dead-letters"):
        return EXIT_CONFIG
    servers = config.kafka.bootstrap_servers
    if args.dead_letters_command == "list":
        listing = list_dead_letters(config, servers)
        print(json.dumps(listing.as_dict(), indent=2) if args.json else render_listing(listing))
        return EXIT_OK
    try:
        chosen = selection(args)
    except ValueError as exc:
        log.error("selector dead-letters redrive: %s", exc)
        return EXIT_CONFIG
    if chosen.chooses_nothing:
        log.error(
            "selector dead-letters redrive: say what to re-send with --reason, --stage, --topic, --since, "
            "--until or --offsets, or --all for every dead letter"
        )
        return EXIT_CONFIG
    done = redrive(config, servers, chosen, dry_run=args.dry_run)
    print(json.dumps(done.as_dict(), indent=2) if args.json else render_redrive(done, chosen, config))
    return EXIT_ERROR if done.skipped["refused"] else EXIT_OK


def render_listing(listing: Listing) -> str:
    if not listing.exists:
        return f"no dead-letter topic {listing.topic!r} (topics.dead_letter): nothing was dead-lettered yet"
    total = sum(g.count for g in listing.groups)
    if not total:
        return f"no dead letters in {listing.topic!r}"
    columns = ("original_topic", "stage", "reason", "count", "truncated", "redriven", "first", "last")
    rows = [[c.replace("_", " ").replace("redriven", "re-driven") for c in columns]]
    rows += [
        ["-" if g[c] is None else str(g[c]) for c in columns] for g in (g.as_dict() for g in listing.groups)
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    right = {3, 4, 5}  # the counts
    lines = [
        "  ".join(r[i].rjust(w) if i in right else r[i].ljust(w) for i, w in enumerate(widths)) for r in rows
    ]
    return f"{total:,} dead letters in {listing.topic!r}\n" + "\n".join(line.rstrip() for line in lines)


def render_redrive(done: Redrive, chosen: Selection, config: Config) -> str:
    if not done.exists:
        return f"no dead-letter topic {done.topic!r} (topics.dead_letter): nothing to re-drive"
    prefix = "selector dead-letters redrive" + (" --dry-run" if done.dry_run else "")
    if not done.chosen:
        return f"{prefix}: no dead letter matches ({chosen.describe()}) among {done.read:,} in {done.topic!r}"
    sent = done.sent.total()
    verb = "would re-send" if done.dry_run else "re-sent"
    where = ", ".join(f"{n:,} to {t!r}" for t, n in sorted(done.sent.items()))
    lines = [
        f"{prefix}: {done.chosen:,} of {done.read:,} dead letters match ({chosen.describe()}); "
        f"{verb} {sent:,}" + (f" ({where})" if where else "")
    ]
    if done.ids:
        lines.append("  ids: " + ", ".join(done.ids) + (", ..." if sent > len(done.ids) else ""))
    lines += [f"  skipped {n:,}: {SKIPS[code]}" for code, n in sorted(done.skipped.items()) if n]
    if sent and not done.dry_run:
        lines.append(f"  marked as re-driven in {redriven_topic(config)!r}")
    return "\n".join(lines)
