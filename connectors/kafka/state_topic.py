"""Records of the compacted state topic and of the labels topic, as the monitor reads and writes them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from kafka.consumer.fetcher import ConsumerRecord


def state_key(group_id: str, topic: str, partition: int) -> bytes:
    """Key of one input partition's snapshot: one per consumer group, topic and partition."""
    return f"{group_id}/{topic}/{partition}".encode()


def encode_snapshot(
    offset: int, written_at: str, selector_info: dict[str, str], state: dict[str, Any]
) -> bytes:
    """A snapshot: the partition's state once every record before ``offset`` was decided and delivered."""
    return orjson.dumps(
        {"offset": offset, "written_at": written_at, "selector": selector_info, "state": state}
    )


def latest_snapshots(records: Iterable[ConsumerRecord]) -> dict[bytes, dict[str, Any]]:
    """The newest snapshot per key (a compacted topic may still hold older ones; a tombstone deletes)."""
    latest: dict[bytes, bytes | None] = {}
    for rec in records:
        latest[rec.key] = rec.value
    return {k: orjson.loads(v) for k, v in latest.items() if v is not None}


def label_ids(records: Iterable[ConsumerRecord]) -> tuple[list[str], int]:
    """Item ids of label messages (any label, update or retraction), and how many messages had no id."""
    ids: list[str] = []
    bad = 0
    for rec in records:
        try:
            obj = orjson.loads(rec.value) if rec.value is not None else None
        except orjson.JSONDecodeError:
            obj = None
        rid = obj.get("id") if isinstance(obj, dict) else None
        if isinstance(rid, str):
            ids.append(rid)
        else:
            bad += 1
    return ids, bad
