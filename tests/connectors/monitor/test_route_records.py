"""One partition's records are routed so that a record failing at any stage is dead-lettered with its stage
and the others are decided as if it had not been there."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from kafka.consumer.fetcher import ConsumerRecord

import selector.messages.prediction
from connectors.monitor.route_records import route_records
from selector.config import Config, parse_config
from selector.messages.prediction import Batch
from selector.routing import Decisions, Router
from selector.stats import ROUTE_NAMES

CLASSES = ["ok", "scratch", "dent", "crack"]


def config(**sections: Any) -> Config:
    return parse_config(
        {
            "classes": CLASSES,
            "accept": {"default_threshold": 0.5},
            "input": {"max_record_bytes": 16_384},
            "kafka": {"max_request_size": 32_768},
            **sections,
        }
    )


def records(values: list[bytes | None]) -> list[ConsumerRecord]:
    return [
        ConsumerRecord("predictions", 0, -1, 100 + i, 1_700_000_000_000, 0, None, v, [], None, -1, -1, -1)
        for i, v in enumerate(values)
    ]


def prediction(rid: str, **extra: Any) -> bytes:
    return orjson.dumps({"id": rid, "probs": [0.9, 0.05, 0.03, 0.02], **extra})


class BoomRouter(Router):
    """Raises on any batch that holds the item ``boom``."""

    def decide(self, partition: int, batch: Batch, t: Any) -> Decisions:
        if "boom" in batch.ids:
            raise FloatingPointError("scorer blew up")
        return super().decide(partition, batch, t)


def route(router: Router, cfg: Config, values: list[bytes | None]) -> tuple[Any, list[ConsumerRecord]]:
    recs = records(values)
    info = {"version": "t", "config_hash": "h"}
    return route_records(router, 0, recs, cfg, 1_700_000_000.0, "now", info, []), recs


def dead(routed: Any) -> dict[bytes, dict[str, bytes]]:
    """Dead letters by their original offset, as header maps."""
    out = {}
    for topic, _, _, headers in routed.outgoing:
        if topic == "dead-letter":
            h = dict(headers)
            out[h["x-dlq-original-offset"]] = h
    return out


def routed_ids(routed: Any) -> list[bytes]:
    return sorted(k for topic, k, _, _ in routed.outgoing if topic in ("accepted", "to-label"))


class TestRouteRecords:
    def test_a_record_that_makes_scoring_raise_is_dead_lettered_and_the_rest_decided(self) -> None:
        """Stage score, reason score_error, the exception in the message; the other items are decided."""
        cfg = config()
        routed, _ = route(BoomRouter(cfg), cfg, [prediction("a"), prediction("boom"), prediction("c")])
        letters = dead(routed)
        assert list(letters) == [b"101"]
        assert letters[b"101"]["x-dlq-stage"] == b"score"
        assert letters[b"101"]["x-dlq-reason"] == b"score_error"
        assert b"scorer blew up" in letters[b"101"]["x-dlq-exception-message"]
        assert routed_ids(routed) == [b"a", b"c"]
        assert routed.dead_letters == {"score": ["score_error"]}
        assert len(routed.decisions.route) == 2

    def test_an_output_over_the_producer_limit_is_dead_lettered_whole_and_not_paid_for(self) -> None:
        """A valid record whose output outgrows kafka.max_request_size (numbers re-encoded longer) goes
        to dead-letter with its original bytes and reason output_too_large; its decision is not committed."""
        cfg = config()
        grows = b'{"id": "big", "probs": [0.9, 0.05, 0.03, 0.02], "payload": [%s]}' % b",".join(
            [b"1e5"] * 3900
        )
        # each "1e5" comes out as "100000.0"
        assert len(grows) <= cfg.input.max_record_bytes
        routed, _ = route(Router(cfg), cfg, [prediction("a"), grows])
        (letter,) = [r for r in routed.outgoing if r[0] == "dead-letter"]
        h = dict(letter[3])
        assert (h["x-dlq-stage"], h["x-dlq-reason"]) == (b"produce", b"output_too_large")
        assert b"'kafka.max_request_size' 32768" in h["x-dlq-exception-message"]
        assert letter[2] == grows
        assert routed_ids(routed) == [b"a"]
        counts = np.bincount(routed.decisions.route, minlength=len(ROUTE_NAMES))
        assert counts.sum() == 1

    def test_a_decoder_that_raises_costs_only_the_record_that_makes_it_raise(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The batch is decoded record by record; the offender is dead-lettered (decode_error), the
        others keep their positions and are routed."""
        real = selector.messages.prediction.decode_batch

        def fragile(values: list[bytes | None], *args: Any, **kwargs: Any) -> Batch:
            if any(v is not None and b"poison" in v for v in values):
                raise RecursionError("decoder bug")
            return real(values, *args, **kwargs)

        monkeypatch.setattr("connectors.monitor.route_records.decode_batch", fragile)
        cfg = config()
        values: list[bytes | None] = [prediction("a"), b"not json", prediction("poison"), prediction("d")]
        routed, _ = route(Router(cfg), cfg, values)
        letters = dead(routed)
        assert {k: v["x-dlq-reason"] for k, v in letters.items()} == {
            b"101": b"malformed_json",
            b"102": b"decode_error",
        }
        assert routed_ids(routed) == [b"a", b"d"]
        assert routed.dead_letters == {"decode": ["malformed_json", "decode_error"]}
