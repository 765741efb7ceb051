"""`selector status` and the label loop's metrics: counts, estimates with intervals equal to the estimators
applied by hand, the audit-based accuracy of auto-accepted items, agreement, and label latency buckets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from connectors.cli.main import main
from connectors.labels.loop import LATENCY_BUCKETS, LabelLoop
from connectors.labels.metrics import LabelLoopCollector
from connectors.labels.report import render
from connectors.labels.status import label_status
from connectors.model.dataset import DatasetStore, Ingested
from connectors.model.registry import ModelRegistry
from selector.config import parse_config
from selector.quality.calibration import fit_temperature, logits_of, softmax
from selector.quality.estimates import Interval, model_estimates, weighted_mean, wilson
from selector.quality.labels import LabelEvent

CLASSES = ["ok", "scratch", "dent", "crack"]
T0 = 1_795_000_000.0  # 2026-11-18T08:26:40Z


def decision(rid: str, route: str, predicted: str, pi: float, eligible: bool) -> dict[str, object]:
    return {
        "id": rid,
        "route": route,
        "predicted": predicted,
        "probs": [0.25, 0.25, 0.25, 0.25],
        "embedding": None,
        "query_probability": pi,
        "model": "v2" if rid.endswith("7") else "v1",
        "decided_at": "2026-11-18T08:26:40Z",
        "accept_eligible": eligible,
    }


def filled_store(path: str | Path = ":memory:") -> tuple[DatasetStore, list[dict[str, object]], list[str]]:
    """200 labeled decisions (queries with pi in [0.05, 1], 40 audits with pi 0.01) and their labels."""
    rng = np.random.default_rng(5)
    store = DatasetStore(path)
    decisions, labels = [], []
    for k in range(200):
        audit = k < 40
        predicted = CLASSES[int(rng.integers(4))]
        truth = predicted if rng.random() < (0.9 if audit else 0.6) else CLASSES[int(rng.integers(4))]
        decisions.append(
            decision(
                f"i-{k:03d}",
                "audit" if audit else "query",
                predicted,
                0.01 if audit else float(rng.uniform(0.05, 1.0)),
                eligible=audit and k % 4 != 0,
            )
        )
        labels.append(truth)
    store.add_decisions(decisions)
    store.add_labels(
        LabelEvent(str(d["id"]), y, "ann-1", T0 + 60) for d, y in zip(decisions, labels, strict=True)
    )
    return store, decisions, labels


def same(a: Interval, b: Interval) -> None:
    """The same interval, up to the order of floating-point sums."""
    assert a.n == b.n
    assert (a.estimate, a.low, a.high) == pytest.approx((b.estimate, b.low, b.high), rel=1e-9, abs=1e-12)


class TestLabelStatus:
    def test_estimates_are_the_estimators_applied_to_the_stored_examples(self) -> None:
        """Overall accuracy, recall, precision and the defect rate are the IPW estimates over every labeled
        decision (the defect rate counts every class but the first by default); auto-accept accuracy is the
        Wilson interval over audits of items that met the accept rule."""
        store, decisions, labels = filled_store()
        cfg = parse_config({"classes": CLASSES})
        st = label_status(store, cfg)
        pi = np.array([float(d["query_probability"]) for d in decisions])  # type: ignore[arg-type]
        correct = np.array([d["predicted"] == y for d, y in zip(decisions, labels, strict=True)], float)
        same(st.accuracy["overall"], weighted_mean(correct, pi))
        truth = np.array([CLASSES.index(y) for y in labels])
        predicted = np.array([CLASSES.index(str(d["predicted"])) for d in decisions])
        est = model_estimates(truth, predicted, pi, CLASSES, np.array([False, True, True, True]))
        same(st.recall["dent"], est.recall["dent"])
        same(st.estimates["since_start"].ipw.precision["crack"], est.precision["crack"])
        same(st.defect_rate, est.defect_rate)
        eligible = [k for k in range(40) if k % 4 != 0]
        right = sum(decisions[k]["predicted"] == labels[k] for k in eligible)
        assert st.audits == 30 and st.accuracy["auto_accept"] == wilson(right, 30)
        assert (st.decisions, st.label_messages, st.labeled, st.unresolved) == (200, 200, 200, 0)
        v2 = np.array([str(d["id"]).endswith("7") for d in decisions])
        assert set(st.by_model) == {"v1", "v2"}
        same(st.by_model["v1"], weighted_mean(correct[~v2], pi[~v2]))
        same(st.by_model["v2"], weighted_mean(correct[v2], pi[v2]))
        assert st.agreement is None

    def test_defect_classes_from_config_change_the_defect_rate(self) -> None:
        store, decisions, labels = filled_store()
        cfg = parse_config({"classes": CLASSES, "dataset": {"defect_classes": ["crack"]}})
        pi = np.array([float(d["query_probability"]) for d in decisions])  # type: ignore[arg-type]
        truth = np.array([CLASSES.index(y) for y in labels])
        predicted = np.array([CLASSES.index(str(d["predicted"])) for d in decisions])
        est = model_estimates(truth, predicted, pi, CLASSES, np.array([False, False, False, True]))
        same(label_status(store, cfg).defect_rate, est.defect_rate)

    def test_quorum_and_agreement(self) -> None:
        """With quorum 2, an item with one vote awaits; two agreeing and two disagreeing items give an
        agreement of 1/2 over 2 items."""
        store = DatasetStore(":memory:")
        store.add_decisions([decision(f"i-{k}", "query", "ok", 0.5, False) for k in range(3)])
        store.add_labels(
            [
                LabelEvent("i-0", "ok", "a", T0),
                LabelEvent("i-0", "ok", "b", T0),
                LabelEvent("i-1", "ok", "a", T0),
                LabelEvent("i-1", "dent", "b", T0),
                LabelEvent("i-2", "dent", "a", T0),
            ]
        )
        majority = {"quorum": 2, "consensus": "majority"}
        st = label_status(store, parse_config({"classes": CLASSES, "dataset": majority}))
        assert (st.labeled, st.unresolved) == (1, 2)
        assert st.agreement == 0.5 and st.agreement_items == 2
        assert st.consensus == "majority" and st.weak_items == 1  # the 1:1 split; one vote is short of quorum
        # Dawid-Skene weighs the split by the annotators' reliability and the class prior: it gives the
        # 1:1 item a label, but a weak one (another vote is asked), and still needs the quorum's two votes
        st = label_status(store, parse_config({"classes": CLASSES, "dataset": {"quorum": 2}}))
        assert (st.consensus, st.labeled, st.unresolved, st.weak_items) == ("dawid_skene", 2, 1, 2)
        assert st.annotators["b"].agreement_with_consensus == 1.0 and st.annotators["a"].items == 3
        assert "consensus                    dawid_skene; 2 items with a weak consensus" in render(st)

    def test_an_empty_store_has_no_estimates_and_says_so(self) -> None:
        st = label_status(DatasetStore(":memory:"), parse_config({"classes": CLASSES}))
        assert st.accuracy["overall"].n == 0 and math.isnan(st.accuracy["overall"].estimate)
        text = render(st)
        assert "accuracy (prediction-powered) no estimate yet over 0 items, 0 labels" in text
        assert "accuracy, auto-accepted      no labels yet (audits)" in text
        assert "confusion, since start: no labels yet" in text and "confusion, last 24 h" not in text
        assert "last 24 h: every item and label since start (the tables hold for both windows)" in text
        assert "annotator agreement          no item has two votes yet" in text
        assert st.as_dict()["accuracy"]["overall"] == {"estimate": None, "low": 0.0, "high": 1.0, "n": 0}

    def test_render_shows_each_estimate_with_its_interval(self) -> None:
        store, _, _ = filled_store()
        st = label_status(store, parse_config({"classes": CLASSES}))
        text = render(st)
        a = st.accuracy["overall"]
        cell = f"{a.estimate:6.1%} [{a.low:5.1%},{a.high:6.1%}]"
        assert f"  accuracy                  {'-':<23}  {cell}" in text  # no population: no PPI
        v2 = st.models["since_start"]["v2"].ipw.accuracy
        cell = f"{v2.estimate:6.1%} [{v2.low:5.1%},{v2.high:6.1%}]"
        assert f"  v2                                0      20  {'-':<23}  {cell}" in text


class TestStatusCommand:
    def test_json_report_and_missing_store(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        path = tmp_path / "d.sqlite"
        cfg_file = tmp_path / "config.yaml"
        cfg_file.write_text(f"classes: {CLASSES}\ndataset:\n  path: {path}\n", encoding="utf-8")
        assert main(["status", "-c", str(cfg_file)]) == 1
        assert "no dataset store at" in caplog.text and "run 'selector labels' first" in caplog.text
        store, _, _ = filled_store(path)
        store.close()
        assert main(["status", "-c", str(cfg_file), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        expected = label_status(filled_store()[0], parse_config({"classes": CLASSES})).as_dict()
        out.pop("window_start"), expected.pop("window_start")  # the wall clock moved on
        assert out == json.loads(json.dumps(expected))
        assert out["labeled"] == 200 and set(out["accuracy"]) == {"overall", "auto_accept"}
        assert main(["status", "-c", str(cfg_file)]) == 0
        assert "accuracy, auto-accepted" in capsys.readouterr().out


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name
    }


class TestLabelLoopMetrics:
    def test_latency_histogram_counts_and_estimates_are_exported(self) -> None:
        """Latencies land in their minute-to-week buckets (one above a week in +Inf only); counters follow
        the ingested totals; the estimate gauges equal the status."""
        store, _, _ = filled_store()
        cfg = parse_config({"classes": CLASSES, "kafka": {"bootstrap_servers": "127.0.0.1:9"}})
        loop = LabelLoop(cfg, "127.0.0.1:9", store, status_interval_s=0.0)
        latencies = [30.0, 60.0, 61.0, 3600.0, 86400.0 * 3, 86400.0 * 30]
        loop._count(Ingested(2, 6, [], [], latencies))
        registry = CollectorRegistry()
        registry.register(LabelLoopCollector(loop))
        buckets = samples(registry, "selector_label_latency_seconds_bucket")
        le = {dict(k)["le"]: v for k, v in buckets.items()}
        assert le["60.0"] == 2 and le["300.0"] == 3 and le["3600.0"] == 4 and le["345600.0"] == 5
        assert le["604800.0"] == 5 and le["+Inf"] == 6 and len(le) == len(LATENCY_BUCKETS) + 1
        assert samples(registry, "selector_label_latency_seconds_sum")[()] == sum(latencies)
        assert samples(registry, "selector_dead_letters_total") == {(("stage", "labels"),): 0.0}
        messages = samples(registry, "selector_label_messages_total")
        assert messages == {
            (("outcome", "stored"),): 6.0,
            (("outcome", "unknown_id"),): 0.0,
            (("outcome", "invalid"),): 0.0,
        }
        st = loop.status
        acc = samples(registry, "selector_estimated_accuracy_ratio")
        low = samples(registry, "selector_estimated_accuracy_low_ratio")
        assert acc[(("scope", "overall"),)] == st.accuracy["overall"].estimate
        assert low[(("scope", "auto_accept"),)] == st.accuracy["auto_accept"].low
        n = samples(registry, "selector_estimated_recall_labels")
        assert sum(n.values()) == 200
        assert math.isnan(samples(registry, "selector_annotator_agreement_ratio")[()])


class TestCalibrationFromLabels:
    def test_the_temperature_is_fitted_on_the_labeled_decisions_weighted_by_inclusion(self) -> None:
        """400 labeled decisions of a 3x over-confident model: the status holds the IPW fit of the stored
        probabilities (the same as fitting them by hand), its calibration error is below the configured
        temperature's, the text says which temperature to configure, and the metrics carry both."""
        rng = np.random.default_rng(9)
        z = rng.normal(0, 1.5, (400, 4))
        truth = softmax(z)
        labels = (np.cumsum(truth, axis=1) < rng.random(400)[:, None]).sum(axis=1).clip(0, 3)
        probs = softmax(3.0 * z)
        pi = rng.uniform(0.1, 1.0, 400)
        store = DatasetStore(":memory:")
        rows = [
            {**decision(f"c-{k}", "query", CLASSES[int(probs[k].argmax())], float(pi[k]), False),
             "probs": probs[k].tolist()}
            for k in range(400)
        ]  # fmt: skip
        store.add_decisions(rows)
        store.add_labels(LabelEvent(f"c-{k}", CLASSES[labels[k]], "a", T0) for k in range(400))
        cfg = parse_config({"classes": CLASSES, "kafka": {"bootstrap_servers": "127.0.0.1:9"}})
        st = label_status(store, cfg)
        c = st.calibration
        assert c is not None and c.items == 400 and c.configured == 1.0
        assert c.fitted == pytest.approx(fit_temperature(logits_of(probs), labels, 1.0 / pi), rel=1e-9)
        assert 2.0 < c.fitted < 4.5 and c.ece_fitted < c.ece_configured
        assert f"calibration (IPW)            temperature {c.fitted:.3g} fits 400 labels best" in render(st)
        loop = LabelLoop(cfg, "127.0.0.1:9", store)
        registry = CollectorRegistry()
        registry.register(LabelLoopCollector(loop))
        assert samples(registry, "selector_calibration_temperature") == {
            (("kind", "configured"),): 1.0,
            (("kind", "fitted"),): c.fitted,
        }

    def test_too_few_labels_fit_nothing(self) -> None:
        store, _, _ = filled_store()
        store2 = DatasetStore(":memory:")
        store2.add_decisions([decision("x-1", "query", "ok", 0.5, False)])
        st = label_status(store2, parse_config({"classes": CLASSES}))
        assert st.calibration is None and "too few labels yet (needs 30)" in render(st)
        assert label_status(store, parse_config({"classes": CLASSES})).calibration is not None


def test_the_current_model_scope_is_the_promoted_versions_own_accuracy(tmp_path: Path) -> None:
    """scope="current_model" exports the accuracy of the registry's promoted version (as the last round read
    it: collecting reads no file) over the decisions it made; with nothing promoted it is empty."""
    store, _, _ = filled_store()
    cfg = parse_config(
        {
            "classes": CLASSES,
            "kafka": {"bootstrap_servers": "127.0.0.1:9"},
            "retrain": {"registry": str(tmp_path / "models")},
        }
    )
    loop = LabelLoop(cfg, "127.0.0.1:9", store)
    registry = CollectorRegistry()
    registry.register(LabelLoopCollector(loop))
    scope = (("scope", "current_model"),)
    assert math.isnan(samples(registry, "selector_estimated_accuracy_ratio")[scope])
    assert samples(registry, "selector_estimated_accuracy_labels")[scope] == 0
    models = ModelRegistry(tmp_path / "models")
    models.add(b"v1", {"created_at": 0.0}, promote=True)
    models.add(b"v2", {"created_at": 0.0}, promote=True)
    assert math.isnan(samples(registry, "selector_estimated_accuracy_ratio")[scope])  # no round read it yet
    loop.read_registry()  # as every round does
    v2 = loop.status.by_model["v2"]
    assert samples(registry, "selector_estimated_accuracy_ratio")[scope] == v2.estimate
    assert samples(registry, "selector_estimated_accuracy_low_ratio")[scope] == v2.low
    assert samples(registry, "selector_estimated_accuracy_labels")[scope] == 20
    assert samples(registry, "selector_model_info") == {(("version", "v2"),): 1.0}
