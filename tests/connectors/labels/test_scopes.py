"""The label loop's estimates over every decided item: the three methods in every scope (since start, the
sliding window, per model version, per segment), the divergence, the status report and its warnings, and the
metrics with every label combination initialised."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from connectors.labels.loop import LabelLoop
from connectors.labels.metrics import LabelLoopCollector, labels_part
from connectors.labels.population import Population, window_start
from connectors.labels.report import render
from connectors.labels.status import METHODS, WINDOWS, LabelStatus, label_status
from connectors.model.dataset import DatasetStore, Seed
from selector.config import Config, parse_config
from selector.quality.estimates import Interval
from selector.quality.labels import LabelEvent
from selector.quality.population import Labeled, Tally, label_free, prediction_powered
from tests.connectors.labels.line import CLASSES, T0, Line, line, record
from tests.connectors.labels.test_status import samples

NO_BROKER = "127.0.0.1:9"


def config(**quality: object) -> Config:
    return parse_config({"classes": CLASSES, "kafka": {"bootstrap_servers": NO_BROKER}, "quality": quality})


def stored(li: Line, cfg: Config) -> DatasetStore:
    """A store holding the line's labeled decisions, their labels and the population of every item."""
    store = DatasetStore(":memory:")
    store.add_decisions(li.decisions())
    store.add_labels(li.labels())
    Population(store, cfg).ingest(li.records(), now=T0)
    return store


def same(a: Interval, b: Interval) -> None:
    assert a.n == b.n
    assert (a.estimate, a.low, a.high) == pytest.approx((b.estimate, b.low, b.high), rel=1e-9, abs=1e-12)


def by_hand(li: Line, rows: np.ndarray) -> tuple[Tally, Labeled]:
    """The tally of the items ``rows`` and their labeled ones."""
    lab = rows & li.sampled
    tally = Tally.of_batch(li.probs[rows], li.predicted[rows])
    return tally, Labeled(li.truth[lab], li.predicted[lab], li.probs[lab], li.pi[lab])


@pytest.fixture(scope="module")
def status() -> tuple[Line, LabelStatus]:
    li = line(3000, seed=11)
    return li, label_status(stored(li, config()), config(), now=T0)


class TestScopes:
    def test_the_headline_is_prediction_powered_over_every_counted_item(
        self, status: tuple[Line, LabelStatus]
    ) -> None:
        """Since start: 3000 items, the labeled ones among them; prediction-powered and label-free are the
        estimators applied by hand to every item's tally and the labeled items."""
        li, st = status
        s = st.estimates["since_start"]
        assert (s.items, s.labels) == (3000, int(li.sampled.sum()))
        tally, labeled = by_hand(li, np.ones(3000, dtype=bool))
        defects = np.array([False, True, True, True])
        assert s.prediction_powered is not None and s.label_free is not None
        ppi = prediction_powered(tally, labeled, CLASSES, defects)
        same(s.prediction_powered.accuracy, ppi.accuracy)
        same(s.prediction_powered.precision["dent"], ppi.precision["dent"])
        same(s.label_free.recall["crack"], label_free(tally, CLASSES, defects).recall["crack"])
        assert s.prediction_powered.accuracy.n == s.labels

    def test_the_window_cuts_items_and_labels_at_one_bucket_boundary(
        self, status: tuple[Line, LabelStatus]
    ) -> None:
        """The sliding window holds the items whose time, and the labels whose decision, is at or after the
        bucket boundary quality.window_s before now: about half of two days."""
        li, st = status
        cut = window_start(config(), T0)
        assert st.window_start == cut and T0 - 86400 - 1800 < cut <= T0 - 86400
        inside = li.ts >= cut
        w = st.estimates["sliding"]
        assert (w.items, w.labels) == (int(inside.sum()), int((inside & li.sampled).sum()))
        assert 1200 < w.items < 1800
        assert w.prediction_powered is not None
        same(w.prediction_powered.accuracy, prediction_powered(*by_hand(li, inside), CLASSES, np.array(
            [False, True, True, True])).accuracy)  # fmt: skip

    def test_each_model_and_segment_holds_its_own_items_and_labels(
        self, status: tuple[Line, LabelStatus]
    ) -> None:
        """Per model version and per segment, in both windows: the items and labels of that version or
        segment; a prediction without a segment counts in the totals only."""
        li, st = status
        inside = li.ts >= st.window_start
        for w, rows in (("since_start", np.ones(3000, dtype=bool)), ("sliding", inside)):
            assert set(st.models[w]) == {"v1", "v2"} and set(st.segments[w]) == {"a", "b"}
            for key, scopes, column in (("v2", st.models, li.model), ("b", st.segments, li.segment)):
                mine = rows & np.array([v == key for v in column])
                assert (scopes[w][key].items, scopes[w][key].labels) == (
                    int(mine.sum()),
                    int((mine & li.sampled).sum()),
                )
            no_segment = rows & np.array([v is None for v in li.segment])
            assert sum(s.items for s in st.segments[w].values()) == int(rows.sum() - no_segment.sum())

    def test_the_confusion_matrix_is_of_shares_of_the_items(self, status: tuple[Line, LabelStatus]) -> None:
        _, st = status
        shares = np.array(st.confusion["since_start"])
        assert shares.shape == (4, 4) and shares.sum() == pytest.approx(1.0)
        assert np.trace(shares) == pytest.approx(st.estimates["since_start"].ipw.accuracy.estimate)

    def test_seeds_never_enter_an_estimate(self) -> None:
        """Seed examples (imported, source 'seed') change no count and no estimate."""
        li = line(400, seed=2)
        cfg = config()
        store = stored(li, cfg)
        before = label_status(store, cfg, now=T0)
        store.add_seeds([Seed(f"s-{k}", "crack", [0.0, 1.0]) for k in range(50)], now=T0)
        after = label_status(store, cfg, now=T0)
        assert after.labeled == before.labeled and after.estimates == before.estimates

    def test_without_the_population_only_the_ipw_estimates_exist(self) -> None:
        """quality.read_predictions off: no prediction-powered or label-free estimate, no divergence; the
        report says why and the IPW accuracy heads it."""
        li = line(400, seed=2)
        cfg = config(read_predictions=False)
        st = label_status(stored(li, cfg), cfg, now=T0)
        s = st.estimates["since_start"]
        assert s.prediction_powered is None and s.label_free is None and s.divergence is None
        assert (
            s.items == 0 and s.labels == int(li.sampled.sum()) and math.isnan(st.divergence_sigmas["sliding"])
        )
        text = render(st)
        assert "accuracy (IPW; quality.read_predictions is off)" in text
        assert "predictions counted          none (quality.read_predictions is off)" in text


class TestDivergence:
    def test_labels_that_contradict_the_confidence_diverge_and_calibrated_ones_do_not(self) -> None:
        """A calibrated line stays within 4 standard errors; when a third of the truths are replaced by a
        random class (the confidence no longer says how often the model is right), the prediction-powered
        accuracy falls far below the label-free one."""
        li = line(3000, seed=5)
        cfg = config()
        calm = label_status(stored(li, cfg), cfg, now=T0).divergence_sigmas
        assert all(abs(calm[w]) < 4 for w in WINDOWS)
        rng = np.random.default_rng(1)
        truth = np.where(rng.random(3000) < 1 / 3, rng.integers(0, 4, 3000), li.truth)
        drift = label_status(stored(dataclasses.replace(li, truth=truth), cfg), cfg, now=T0)
        assert drift.divergence_sigmas["sliding"] < -4
        assert "standard errors, BEYOND quality.divergence_sigmas: the confidence no longer says" in render(
            drift
        )
        d = drift.estimates["sliding"].divergence
        assert d is not None and d.gap < 0 and d.labels == drift.estimates["sliding"].labels


class TestReport:
    def test_the_headline_then_the_window_then_the_tables(self, status: tuple[Line, LabelStatus]) -> None:
        li, st = status
        text = render(st)
        a = st.estimates["since_start"].accuracy("prediction_powered")
        w = st.estimates["sliding"]
        aw = w.accuracy("prediction_powered")
        m = int(li.sampled.sum())
        value = f"{a.estimate:.1%} [{a.low:.1%}, {a.high:.1%}]"
        head = f"accuracy (prediction-powered) {value} over 3000 items, {m} labels"
        window = f"  {'last 24 h':<27} {aw.estimate:.1%} [{aw.low:.1%}, {aw.high:.1%}] over {w.items} items"
        assert head in text and window in text and text.index(head) < text.index(window)
        for title in (
            "since start (95% intervals)",
            "accuracy by model version, last 24 h",
            "accuracy by segment, since start",
            "confusion, last 24 h (rows: true class, columns: predicted;",
        ):
            assert title in text
        assert "predictions counted          3000\n" in text and "WARNING" not in text

    def test_labels_outside_the_classes_are_named_with_what_to_do(self) -> None:
        """The demo's store read with another configuration: its digit labels and predictions are not in
        'classes'; the report says which (a few, with counts) and that -c or 'classes' fixes it."""
        store = DatasetStore(":memory:")
        digits = [str(k % 7) for k in range(30)]
        store.add_decisions(
            [
                {"id": f"d{k}", "route": "query", "predicted": d, "probs": [0.5, 0.5], "embedding": None,
                 "query_probability": 0.5, "model": "v1", "decided_at": "2026-11-18T08:26:40Z"}
                for k, d in enumerate(digits)
            ]
        )  # fmt: skip
        store.add_labels(LabelEvent(f"d{k}", d, "ann", T0) for k, d in enumerate(digits))
        st = label_status(store, config(), now=T0)
        assert st.unknown_labels == {str(k): 5 if k < 2 else 4 for k in range(7)}
        text = render(st)
        assert text.startswith(
            "WARNING: 30 stored resolved labels are not in the configured classes: '0' (5), '1' (5), "
            "'2' (4), '3' (4), '4' (4) and 2 more; they enter no estimate. Pass the configuration that wrote "
            "this store (-c), or fix 'classes'.\nWARNING: 30 stored decisions' predicted classes are not "
            "in the configured classes:"
        )
        assert st.estimates["since_start"].labels == 0

    def test_predictions_counted_under_other_classes_are_kept_apart_and_named(self) -> None:
        """Predictions counted under ten classes, then under the configured four, in the same store: neither
        is mixed into the other; the status counts the four-class items and warns about the ten-class ones."""
        store = DatasetStore(":memory:")
        ten = parse_config({"classes": [str(k) for k in range(10)]})
        values = [orjson.dumps({"id": f"t{k}", "probs": [0.1] * 10}) for k in range(30)]
        Population(store, ten).ingest([record(k, v, ts_ms=int(T0 * 1000)) for k, v in enumerate(values)], T0)
        li = line(40, seed=1)
        Population(store, config()).ingest(li.records(start=30), now=T0)
        st = label_status(store, config(), now=T0)
        assert st.estimates["since_start"].items == 40 and st.other_classes == {10: 30}
        assert "WARNING: 30 counted predictions have 10 classes, not the 4 configured" in render(st)

    def test_as_dict_is_json_with_the_divergence_as_a_number(self, status: tuple[Line, LabelStatus]) -> None:
        _, st = status
        plain = json.loads(json.dumps(st.as_dict(), allow_nan=False))
        assert isinstance(plain["divergence_sigmas"]["sliding"], float)
        sliding = plain["estimates"]["sliding"]
        assert set(sliding) == {"items", "labels", *METHODS, "divergence"}
        assert set(sliding["prediction_powered"]["precision"]) == set(CLASSES)
        assert set(plain["models"]["sliding"]) == {"v1", "v2"}


class TestMetrics:
    def test_every_label_combination_is_there_before_anything_is_counted(self) -> None:
        """An empty store: (accuracy, defect rate, recall and precision of 4 classes) x 3 methods x 2 windows
        series, each NaN with its interval; items and labels 0 per window; the divergence NaN, its threshold
        quality.divergence_sigmas; no model or segment yet."""
        loop = LabelLoop(config(divergence_sigmas=5.0), NO_BROKER, DatasetStore(":memory:"))
        registry = CollectorRegistry()
        registry.register(LabelLoopCollector(loop))
        for suffix in ("", "_low", "_high"):
            est = samples(registry, f"selector_estimate{suffix}_ratio")
            assert len(est) == 10 * 3 * 2
        est = samples(registry, "selector_estimate_ratio")
        assert all(math.isnan(v) for v in est.values())
        keys = {dict(k)["metric"] + ":" + dict(k)["class"] for k in est}
        assert keys == {
            "accuracy:",
            "defect_rate:",
            *(f"{m}:{c}" for m in ("recall", "precision") for c in CLASSES),
        }
        for name in ("selector_estimate_items", "selector_estimate_labels"):
            assert samples(registry, name) == {(("window", w),): 0.0 for w in WINDOWS}
        sigmas = samples(registry, "selector_estimate_divergence_sigmas")
        assert set(sigmas) == {(("window", w),) for w in WINDOWS} and all(map(math.isnan, sigmas.values()))
        assert registry.get_sample_value("selector_estimate_divergence_threshold_sigmas") == 5.0
        records = samples(registry, "selector_population_records_total")
        assert records == {(("outcome", "counted"),): 0.0, (("outcome", "undecodable"),): 0.0}
        assert samples(registry, "selector_estimate_model_accuracy_ratio") == {}

    def test_the_gauges_are_the_status_and_breakdowns_cover_accuracy_only(self) -> None:
        """With a counted line: each gauge is the status's value; per model version (those in the window) and
        per segment, accuracy by every method in both windows with its items and labels; /api/status carries
        the divergence as a number."""
        li = line(1200, seed=4)
        cfg = config()
        loop = LabelLoop(cfg, NO_BROKER, stored(li, cfg), clock=lambda: T0)
        st = loop.status
        registry = CollectorRegistry()
        registry.register(LabelLoopCollector(loop))
        est = samples(registry, "selector_estimate_high_ratio")
        key = (
            ("class", "dent"),
            ("method", "prediction_powered"),
            ("metric", "recall"),
            ("window", "sliding"),
        )
        ppi = st.estimates["sliding"].prediction_powered
        assert ppi is not None and est[key] == ppi.recall["dent"].high
        models = samples(registry, "selector_estimate_model_accuracy_ratio")
        assert set(models) == {
            (("method", m), ("model", v), ("window", w))
            for m in METHODS
            for v in ("v1", "v2")
            for w in WINDOWS
        }
        items = samples(registry, "selector_estimate_segment_items")
        assert items[(("segment", "a"), ("window", "since_start"))] == st.segments["since_start"]["a"].items
        assert registry.get_sample_value("selector_estimate_items", {"window": "since_start"}) == 1200
        sigmas = st.divergence_sigmas["sliding"]
        assert (
            registry.get_sample_value("selector_estimate_divergence_sigmas", {"window": "sliding"}) == sigmas
        )
        assert labels_part(loop).status()["divergence_sigmas"]["sliding"] == sigmas
