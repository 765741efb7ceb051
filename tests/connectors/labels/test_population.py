"""The population tallies: every decodable prediction counted once per (model, segment, time bucket), in one
transaction with the predictions topic's positions, whatever the restarts and the redeliveries."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from connectors.labels import population as population_module
from connectors.labels.population import FOLDED, Counted, Population, bucket_width, count_new, window_start
from connectors.model.dataset import DatasetStore
from selector.config import Config, parse_config
from selector.quality.calibration import apply_temperature
from selector.quality.population import Tally
from tests.connectors.labels.line import CLASSES, T0, line, record


def config(**quality: object) -> Config:
    return parse_config({"classes": CLASSES, "quality": quality})


def total(population: Population) -> Tally:
    out = Tally.zeros(len(CLASSES))
    for c in population.cells():
        out = out + c.tally
    return out


def assert_same(a: Tally, b: Tally) -> None:
    assert a.n == b.n
    np.testing.assert_allclose(a.expected, b.expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(a.expected_sq, b.expected_sq, rtol=1e-12, atol=1e-9)


class TestIngest:
    def test_every_prediction_is_summed_into_its_model_segment_and_bucket(self) -> None:
        """600 items of 2 models and 2 segments (a third without one) over two days: the cells add up to the
        tally of every item; each cell holds exactly its own items (bucket = floor(ts / width) * width, width
        = window / 48); a missing segment is keyed as none."""
        cfg = config()
        li = line(600)
        population = Population(DatasetStore(":memory:"), cfg)
        done = population.ingest(li.records(), now=T0)
        assert done.items == 600 and done.rejected == {}
        assert_same(total(population), Tally.of_batch(li.probs, li.predicted))
        width = bucket_width(cfg)
        assert width == 1800.0
        for cell in population.cells():
            rows = [
                k
                for k in range(600)
                if li.model[k] == cell.model
                and li.segment[k] == cell.segment
                and np.floor(li.ts[k] / width) * width == cell.start
            ]
            assert cell.tally.n == len(rows) > 0 or cell.start == FOLDED
        assert {c.segment for c in population.cells()} == {"a", "b", None}

    def test_the_kafka_timestamp_stands_in_for_a_missing_ts_and_the_temperature_calibrates(self) -> None:
        """Without ``ts`` the item falls in the bucket of its Kafka timestamp; the probabilities are
        calibrated with calibration.temperature before they are summed (and the argmax is theirs)."""
        cfg = parse_config({"classes": CLASSES, "calibration": {"temperature": 2.0}})
        probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1]])
        recs = [
            record(k, orjson.dumps({"id": f"x{k}", "probs": p.tolist()}), ts_ms=int((T0 - 100) * 1000))
            for k, p in enumerate(probs)
        ]
        population = Population(DatasetStore(":memory:"), cfg)
        population.ingest(recs, now=T0)
        (cell,) = population.cells()
        assert cell.start == np.floor((T0 - 100) / 1800) * 1800 and (cell.model, cell.segment) == (None, None)
        calibrated = apply_temperature(probs, 2.0)
        assert_same(cell.tally, Tally.of_batch(calibrated, calibrated.argmax(axis=1)))

    def test_a_record_it_cannot_decode_is_counted_as_such_and_stops_nothing(self) -> None:
        """Malformed JSON, a wrong class count, a tombstone and probabilities that do not sum to 1 are not
        counted, each under its reason, kept across calls; the valid records around them are counted."""
        population = Population(DatasetStore(":memory:"), config())
        values = [
            b'{"id": "a", "probs": [0.7, 0.1, 0.1, 0.1]}',
            b"{not json",
            b'{"id": "b", "probs": [0.5, 0.5]}',
            None,
            b'{"id": "c", "probs": [0.9, 0.9, 0.1, 0.1]}',
            b'{"id": "d", "probs": [0.1, 0.1, 0.1, 0.7]}',
        ]
        done = population.ingest([record(k, v, ts_ms=int(T0 * 1000)) for k, v in enumerate(values)], now=T0)
        assert done.items == 2
        assert done.rejected == {"malformed_json": 1, "wrong_class_count": 1, "empty": 1, "not_normalized": 1}
        population.ingest([record(6, b"[]", ts_ms=int(T0 * 1000))], now=T0)
        assert population.rejected() == {
            "empty": 1,
            "malformed_json": 1,
            "not_an_object": 1,
            "not_normalized": 1,
            "wrong_class_count": 1,
        }
        assert total(population).n == 2

    def test_buckets_that_leave_the_window_fold_into_one_row_and_keep_the_count(self) -> None:
        """Ten days of items under a one-hour window: the table keeps at most 49 buckets and one folded row
        per model and segment, and the since-start tally is every item's."""
        cfg = config(window_s=3600.0)
        li = line(2000, span_s=10 * 86400.0, models=("v1",), segments=("a",))
        population = Population(DatasetStore(":memory:"), cfg)
        for chunk in range(0, 2000, 250):  # read as time goes by
            recs = li.records()[chunk : chunk + 250]
            population.ingest(recs, now=float(li.ts[min(chunk + 249, 1999)]))
        cells = population.cells()
        assert sum(c.start == FOLDED for c in cells) == 1 and len(cells) <= 50
        assert all(c.start >= window_start(cfg, float(li.ts[-1])) for c in cells if c.start != FOLDED)
        assert_same(total(population), Tally.of_batch(li.probs, li.predicted))


class TestExactlyOnce:
    def test_a_restart_rereading_the_topic_counts_nothing_twice(self, tmp_path: Path) -> None:
        """A loop counts offsets 0..59 and stops; the next one (a new process on the same file) reads the
        topic again from 0 to 99: 100 items are counted, and the stored position is 100."""
        li = line(100)
        path = tmp_path / "d.sqlite"
        first = DatasetStore(path)
        Population(first, config()).ingest(li.records()[:60], now=T0)
        first.close()
        store = DatasetStore(path)
        again = Population(store, config())
        assert again.ingest(li.records(), now=T0).items == 40
        assert again.ingest(li.records(), now=T0).items == 0
        assert store.positions("predictions") == {0: 100}
        assert_same(total(again), Tally.of_batch(li.probs, li.predicted))

    def test_tallies_and_positions_commit_together_or_not_at_all(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A crash while storing the positions leaves neither the tallies nor the positions: the records
        are counted once when read again."""
        li = line(50)
        store = DatasetStore(":memory:")
        population = Population(store, config())

        def crash(self: Population, ends: dict[int, int]) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(population_module.Population, "_advance", crash)
        with pytest.raises(OSError, match="disk full"):
            population.ingest(li.records(), now=T0)
        assert population.cells() == [] and store.positions("predictions") == {}
        monkeypatch.undo()
        assert population.ingest(li.records(), now=T0).items == 50
        assert total(population).n == 50

    @settings(max_examples=25, deadline=None)
    @given(cuts=st.lists(st.integers(0, 80), max_size=6), replays=st.lists(st.integers(0, 80), max_size=3))
    def test_any_split_and_any_redelivery_give_the_tally_of_one_read(
        self, cuts: list[int], replays: list[int]
    ) -> None:
        """Reading the topic in any chunks, with any already-read prefix delivered again in between, counts
        each record once: the same tally as reading it whole."""
        li = line(80, seed=3)
        recs = li.records()
        population = Population(DatasetStore(":memory:"), config())
        bounds = sorted({0, 80, *cuts})
        for k, (a, b) in enumerate(pairwise(bounds)):
            population.ingest(recs[a:b], now=T0)
            if k < len(replays):
                population.ingest(recs[: replays[k]], now=T0)
        assert_same(total(population), Tally.of_batch(li.probs, li.predicted))


class FakeReader:
    """A reader whose polls return the given batches, then nothing."""

    def __init__(self, polls: list[list[ConsumerRecord]]) -> None:
        self.polls = polls

    def read_new(self, timeout_s: float = 0.0, until_end: bool = False) -> list[ConsumerRecord]:
        return self.polls.pop(0) if self.polls else []


class TestCountNew:
    def test_polls_are_counted_in_chunks_until_a_poll_is_empty_or_enough_was_read(self) -> None:
        """Three polls of 10 records and a chunk of 15: two transactions count all 30 (positions after the
        last); with at most 10 records a round, one poll is read and the rest waits for the next round."""
        recs = line(30).records()
        store = DatasetStore(":memory:")
        population = Population(store, config())
        reader = FakeReader([recs[:10], recs[10:20], recs[20:]])
        done = count_new(reader, population, T0, chunk=15)  # type: ignore[arg-type]
        assert done == Counted(30, {}) and store.positions("predictions") == {0: 30}
        other = Population(DatasetStore(":memory:"), config())
        reader = FakeReader([recs[:10], recs[10:20]])
        assert count_new(reader, other, T0, most=10).items == 10  # type: ignore[arg-type]
        assert reader.polls == [recs[10:20]]
