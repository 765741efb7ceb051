"""Specification of the budget: hard caps per sliding window and the token-bucket spending rule.

The property tests drive arbitrary arrival patterns (bursts of identical times, clocks stepping back and
jumping forward, arbitrary candidate and audit masks, arbitrary batch boundaries) through :func:`spend`,
threading the returned state, and check the promises of the module docstrings by brute force.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.arrays import BoolArray, FloatArray
from selector.budget import BudgetState, CapLedger, initial_state, spend
from selector.budget.caps import CapWalk
from selector.config import HORIZONS_S
from selector.routing import cap_limits

Limits = dict[str, tuple[float, int]]
PROPERTY = settings(max_examples=120, deadline=None)
EPS = 1e-6


@dataclass
class Stream:
    """A generated arrival pattern, cut into batches."""

    t: FloatArray
    candidate: BoolArray
    audit: BoolArray
    cuts: list[int]
    limits: Limits
    rate: float
    max_burst: float

    def batches(self) -> list[slice]:
        edges = [0, *sorted(set(self.cuts)), len(self.t)]
        return [slice(a, b) for a, b in itertools.pairwise(edges)]


@dataclass
class Run:
    """Outcome of feeding a stream batch by batch."""

    query: BoolArray
    audit: BoolArray
    possible: BoolArray
    tm: FloatArray
    """the ledger's monotone time axis, item by item"""
    states: list[BudgetState]


gaps = st.one_of(
    st.just(0.0),  # bursts of identical times
    st.floats(0.0, 5.0),
    st.floats(0.0, 5.0),
    st.floats(-200.0, 0.0),  # the clock steps back
    st.floats(50.0, 5000.0),  # the clock jumps forward (an outage)
    st.sampled_from([1.0, 7.5, 60.0, 3600.0]),  # exactly a window length: items on window boundaries
)


@st.composite
def limits_strategy(draw: st.DrawFn) -> Limits:
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3))
    return {n: (draw(st.sampled_from([1.0, 7.5, 60.0, 3600.0])), draw(st.integers(0, 6))) for n in names}


@st.composite
def streams(draw: st.DrawFn, max_items: int = 120, audits: bool = True) -> Stream:
    n = draw(st.integers(0, max_items))
    t = np.cumsum([draw(st.floats(0, 1e6)), *[draw(gaps) for _ in range(max(n - 1, 0))]])[:n]
    p_cand = draw(st.sampled_from([0.1, 0.5, 1.0]))
    p_audit = draw(st.sampled_from([0.0, 0.05, 0.3])) if audits else 0.0
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return Stream(
        t=np.asarray(t, dtype=np.float64),
        candidate=rng.random(n) < p_cand,
        audit=rng.random(n) < p_audit,
        cuts=draw(st.lists(st.integers(0, n), max_size=12)),
        limits=draw(limits_strategy()),
        rate=draw(st.sampled_from([0.01, 0.1, 1 / 3, 0.3, 0.7, 1.0]) | st.floats(0.01, 1.0)),
        max_burst=draw(st.sampled_from([0.5, 1.0, 2.5, 10.0]) | st.floats(0.5, 20.0)),
    )


def feed(s: Stream, state: BudgetState | None = None, batches: list[slice] | None = None) -> Run:
    """Feed the stream through spend() batch by batch, threading the state."""
    state = state if state is not None else initial_state(s.limits)
    n = len(s.t)
    out = Run(np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n), [state])
    for sl in batches if batches is not None else s.batches():
        out.tm[sl] = state.ledger.monotone(s.t[sl])
        r = spend(state, s.t[sl], s.candidate[sl], s.audit[sl], rate=s.rate, max_burst=s.max_burst)
        out.query[sl], out.audit[sl], out.possible[sl] = r.query, r.audit, r.query_possible
        state = r.state
        out.states.append(state)
    return out


def reference_spend(s: Stream) -> tuple[BoolArray, BoolArray, BoolArray]:
    """The rule of the module docstrings, item by item, with the whole grant history: slow and plain.

    Balance before item j: ``min(max_burst, T_k + rate * (j - k))`` with k the last label (initially one token
    at k = -1); a query needs a full token and room in every window, an audit only room.
    """
    n = len(s.t)
    query, audit, possible = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    ref_tokens, ref_index, now = min(1.0, s.max_burst), -1, -math.inf
    history: list[float] = []
    for j in range(n):
        now = max(now, float(s.t[j]))
        tokens = min(s.max_burst, ref_tokens + s.rate * (j - ref_index))
        room = all(sum(1 for g in history if now - w < g <= now) < cap for w, cap in s.limits.values())
        if s.audit[j]:
            possible[j] = bool(s.candidate[j]) and tokens >= 1.0 and room
            grant = audit[j] = room
        else:
            grant = query[j] = bool(s.candidate[j]) and tokens >= 1.0 and room
        if grant:
            history.append(now)
            ref_tokens, ref_index = tokens - 1.0, j
    return query, audit, possible


def snapshot(state: BudgetState) -> dict[str, object]:
    """The state as plain data; a horizon never granted shows as an empty list, as the ledger reads it."""
    data = state.to_dict()
    data["ledger"]["grants"] = {k: data["ledger"]["grants"].get(k, []) for k in state.ledger.limits}
    return data


def window_violations(granted: FloatArray, limits: Limits) -> list[tuple[str, float, int]]:
    """Every (horizon, window end, count) where a window (end - W, end] holds more grants than the cap."""
    bad = []
    for name, (window, cap) in limits.items():
        for end in granted:
            count = sum(1 for g in granted if end - window < g <= end)
            if count > cap:
                bad.append((name, float(end), count))
    return bad


class TestReferenceRule:
    @settings(max_examples=300, deadline=None)
    @given(streams(max_items=60))
    def test_decisions_equal_the_plain_reference_rule(self, s: Stream) -> None:
        """In one batch, the jumping walk grants exactly what the plain item-by-item rule grants."""
        run = feed(s, batches=[slice(0, len(s.t))])
        q, a, p = reference_spend(s)
        np.testing.assert_array_equal(run.query, q)
        np.testing.assert_array_equal(run.audit, a)
        np.testing.assert_array_equal(run.possible, p)


class TestCapsProperties:
    @PROPERTY
    @given(streams())
    def test_no_sliding_window_ever_holds_more_than_its_cap(self, s: Stream) -> None:
        """For every horizon and every window (t - W, t] on the ledger's time axis, grants <= cap."""
        run = feed(s)
        granted = run.tm[run.query | run.audit]
        assert window_violations(granted, s.limits) == []

    @PROPERTY
    @given(streams())
    def test_time_axis_is_the_running_maximum(self, s: Stream) -> None:
        """A clock stepping back is treated as standing still, across batch boundaries too."""
        run = feed(s)
        if len(s.t):
            np.testing.assert_array_equal(run.tm, np.maximum.accumulate(s.t))

    @PROPERTY
    @given(streams(), st.data())
    def test_zero_cap_grants_nothing(self, s: Stream, data: st.DataObject) -> None:
        """A horizon with cap 0 blocks every label, queries and audits alike."""
        s.limits = {**s.limits, "zero": (data.draw(st.sampled_from([1.0, 60.0])), 0)}
        run = feed(s)
        assert not run.query.any()
        assert not run.audit.any()
        assert not run.possible.any()

    @PROPERTY
    @given(streams())
    def test_ledger_keeps_at_most_cap_times_per_horizon(self, s: Stream) -> None:
        """Memory is bounded by the caps, not by the stream."""
        for state in feed(s).states:
            for name, (_w, cap) in s.limits.items():
                assert len(state.ledger.grants.get(name, [])) <= cap


class TestTokenBucketProperties:
    @PROPERTY
    @given(streams(audits=False))
    def test_queries_in_any_run_of_items_stay_within_rate_plus_burst(self, s: Stream) -> None:
        """Without audits, any m consecutive items get at most rate * m + max_burst labels.

        This is the "no debt repayment" promise: however long the idle period before, a burst is bounded.
        """
        q = feed(s).query.astype(float)
        prefix = np.concatenate([[0.0], np.cumsum(q)])
        idx = np.arange(len(q) + 1)
        slack = prefix - s.rate * idx  # labels in [a, b) minus rate*(b-a) = slack[b] - slack[a]
        worst = max((slack[b] - slack[:b].min() for b in range(1, len(slack))), default=0.0)
        assert worst <= s.max_burst + EPS

    @PROPERTY
    @given(streams(audits=False))
    def test_stream_labels_within_rate_times_items_plus_initial_balance(self, s: Stream) -> None:
        """From a fresh state (one token), n items get at most rate * n + min(1, max_burst) labels."""
        q = feed(s).query
        assert q.sum() <= s.rate * len(q) + min(1.0, s.max_burst) + EPS

    @PROPERTY
    @given(streams())
    def test_audits_overdraw_only_after_the_last_query(self, s: Stream) -> None:
        """With audits: items a..j ending at a query get at most rate * (j - a + 1) + max_burst labels.

        Audits may drive the balance negative (they must stay uniform), so labels after the last query may
        exceed the rate; but a query is granted only with a full token, so every query re-establishes the
        bound for everything before it.
        """
        run = feed(s)
        labels = (run.query | run.audit).astype(float)
        prefix = np.concatenate([[0.0], np.cumsum(labels)])
        for j in np.flatnonzero(run.query):
            for a in range(j + 1):
                assert prefix[j + 1] - prefix[a] <= s.rate * (j - a + 1) + s.max_burst + EPS

    @PROPERTY
    @given(streams())
    def test_audits_are_granted_whenever_caps_have_room(self, s: Stream) -> None:
        """An audit draw is granted regardless of the balance; only caps can refuse it."""
        run = feed(s)
        if not s.limits:
            np.testing.assert_array_equal(run.audit, s.audit)
        assert not (run.audit & ~s.audit).any()

    @PROPERTY
    @given(streams())
    def test_only_candidates_are_queried_and_never_also_audited(self, s: Stream) -> None:
        """A query goes only to a candidate not drawn for audit; query and audit are exclusive."""
        run = feed(s)
        assert not (run.query & ~(s.candidate & ~s.audit)).any()
        assert not (run.query & run.audit).any()
        assert not (run.possible & ~(run.audit & s.candidate)).any()

    @PROPERTY
    @given(streams())
    def test_counters_add_up(self, s: Stream) -> None:
        """The state counts every item and every granted label."""
        run = feed(s)
        final = run.states[-1]
        assert final.items == len(s.t)
        assert final.labels == int(run.query.sum() + run.audit.sum())

    @PROPERTY
    @given(streams())
    def test_balance_never_exceeds_max_burst(self, s: Stream) -> None:
        """The carried balance is capped at max_burst after every non-empty batch."""
        run = feed(s)
        for sl, state in zip(s.batches(), run.states[1:], strict=True):
            if sl.stop > sl.start:
                assert state.tokens <= s.max_burst + EPS


class TestSpendIsPure:
    @PROPERTY
    @given(streams(), streams())
    def test_spend_does_not_mutate_its_input_state(self, first: Stream, second: Stream) -> None:
        """Deciding never mutates: the state passed in is unchanged after spend()."""
        second.limits = first.limits
        state = feed(first).states[-1]
        before = copy.deepcopy(snapshot(state))
        arrays = {k: v.copy() for k, v in state.ledger.grants.items()}
        spend(state, second.t, second.candidate, second.audit, rate=second.rate, max_burst=second.max_burst)
        assert snapshot(state) == before
        for k, v in arrays.items():
            np.testing.assert_array_equal(state.ledger.grants[k], v)

    @PROPERTY
    @given(streams())
    def test_same_input_same_decisions(self, s: Stream) -> None:
        """spend() is a function: called twice on the same input it decides the same."""
        one, two = feed(s), feed(s)
        np.testing.assert_array_equal(one.query, two.query)
        np.testing.assert_array_equal(one.audit, two.audit)


class TestDeterminismAcrossBatches:
    @PROPERTY
    @given(streams())
    def test_batch_boundaries_do_not_change_decisions(self, s: Stream) -> None:
        """Cutting the stream anywhere gives the decisions of one batch (a restart may re-poll otherwise)."""
        whole = feed(s, batches=[slice(0, len(s.t))])
        cut = feed(s)
        np.testing.assert_array_equal(cut.query, whole.query)
        np.testing.assert_array_equal(cut.audit, whole.audit)
        np.testing.assert_array_equal(cut.possible, whole.possible)
        assert cut.states[-1].labels == whole.states[-1].labels
        assert cut.states[-1].tokens == pytest.approx(whole.states[-1].tokens, abs=1e-9)

    @PROPERTY
    @given(streams(), st.data())
    def test_state_round_trip_gives_identical_later_decisions(self, s: Stream, data: st.DataObject) -> None:
        """A state written to JSON and read back decides the rest of the stream exactly as the original."""
        k = data.draw(st.integers(0, len(s.t)))
        head, tail = slice(0, k), slice(k, len(s.t))
        state = feed(s, batches=[head]).states[-1]
        restored = BudgetState.from_dict(s.limits, json.loads(json.dumps(state.to_dict())))
        a = spend(state, s.t[tail], s.candidate[tail], s.audit[tail], rate=s.rate, max_burst=s.max_burst)
        b = spend(restored, s.t[tail], s.candidate[tail], s.audit[tail], rate=s.rate, max_burst=s.max_burst)
        np.testing.assert_array_equal(a.query, b.query)
        np.testing.assert_array_equal(a.audit, b.audit)
        assert snapshot(a.state) == snapshot(b.state)


class TestSpendExamples:
    def test_empty_batch_leaves_state_as_is(self) -> None:
        """No items: nothing granted and the state is carried unchanged."""
        state = initial_state({"h": (60.0, 3)})
        r = spend(state, np.zeros(0), np.zeros(0, bool), np.zeros(0, bool), rate=0.1, max_burst=5)
        assert r.query.shape == r.audit.shape == (0,)
        assert (r.state.tokens, r.state.items, r.state.labels) == (state.tokens, state.items, state.labels)
        assert r.state.ledger.last_time == state.ledger.last_time
        assert r.state.ledger.remaining(0.0) == {"h": 3}

    def test_first_candidate_of_a_fresh_state_is_queried(self) -> None:
        """A fresh partition holds one token, so the first informative item can be labeled."""
        r = spend(
            initial_state({}),
            np.zeros(3),
            np.array([True, True, True]),
            np.zeros(3, bool),
            rate=0.01,
            max_burst=5,
        )
        assert r.query.tolist() == [True, False, False]

    def test_queries_are_spaced_by_one_over_rate(self) -> None:
        """With every item a candidate and rate 1/4, after the initial token a query every 4th item."""
        n = 20
        r = spend(initial_state({}), np.zeros(n), np.ones(n, bool), np.zeros(n, bool), rate=0.25, max_burst=5)
        # item 0 uses the initial token (1.25 -> 0.25); the balance reaches 1 again at items 3, 7, 11, ...
        assert np.flatnonzero(r.query).tolist() == [0, 3, 7, 11, 15, 19]

    def test_idle_period_is_not_repaid(self) -> None:
        """After 10,000 idle items a burst of 100 candidates gets 13 labels, not 300.

        rate = 1/32 keeps every balance exact in binary. The balance is capped at max_burst = 10; before the
        k-th query of the burst it is 10 - 31 k / 32, at least 1 up to k = 9, so ten queries; then 0.28125
        remains and 23 items make a token again: queries at burst items 32, 64 and 96. That is the bound
        rate * 100 + max_burst = 13.125, rounded down.
        """
        idle, burst = 10_000, 100
        cand = np.concatenate([np.zeros(idle, bool), np.ones(burst, bool)])
        no_audit = np.zeros(idle + burst, bool)
        r = spend(initial_state({}), np.zeros(idle + burst), cand, no_audit, rate=1 / 32, max_burst=10)
        assert np.flatnonzero(r.query[idle:]).tolist() == [*range(10), 32, 64, 96]

    def test_audit_overdraws_the_balance(self) -> None:
        """Audits are granted with no token left, and the balance goes negative."""
        n = 10
        r = spend(initial_state({}), np.zeros(n), np.zeros(n, bool), np.ones(n, bool), rate=0.1, max_burst=5)
        assert r.audit.all()
        # starts at 1, gains 0.1 per item (10 items: +1.0), spends 10
        assert r.state.tokens == pytest.approx(1.0 + 1.0 - 10.0)

    def test_audit_marks_whether_a_query_was_possible(self) -> None:
        """For an audited candidate with a full token and room, a query would have been granted too."""
        r = spend(
            initial_state({}),
            np.zeros(3),
            np.array([True, False, True]),
            np.array([True, True, True]),
            rate=0.01,
            max_burst=5,
        )
        # item 0: token available and candidate; item 1: not a candidate; item 2: balance spent by the audits
        assert r.query_possible.tolist() == [True, False, False]

    def test_cap_blocks_then_frees_after_the_window(self) -> None:
        """With a cap of 2 per 60 s, the third label waits until the first leaves the window."""
        t = np.array([0.0, 1.0, 2.0, 59.9, 60.0, 60.5, 61.0])
        r = spend(
            initial_state({"minute": (60.0, 2)}),
            t,
            np.ones(7, bool),
            np.zeros(7, bool),
            rate=1.0,
            max_burst=5,
        )
        # (t - 60, t] at 60.0 excludes the grant at 0.0; at 61.0 the grant at 1.0 leaves too
        assert np.flatnonzero(r.query).tolist() == [0, 1, 4, 6]

    def test_cap_holds_across_batches(self) -> None:
        """Grants of earlier batches count against the cap of later ones."""
        limits = {"minute": (60.0, 2)}
        one = spend(
            initial_state(limits),
            np.array([0.0, 1.0]),
            np.ones(2, bool),
            np.zeros(2, bool),
            rate=1.0,
            max_burst=5,
        )
        two = spend(
            one.state, np.array([30.0, 60.5]), np.ones(2, bool), np.zeros(2, bool), rate=1.0, max_burst=5
        )
        assert one.query.tolist() == [True, True]
        assert two.query.tolist() == [False, True]

    def test_cap_counts_every_grant_of_earlier_batches(self) -> None:
        """Three batches of 4 candidates within one hour, cap 6: the first 6 are granted, then nothing.

        Regression: a ledger holding fewer than ``cap`` grants used to keep only the last ``cap - k`` of them.
        """
        limits, granted = {"hour": (3600.0, 6)}, []
        state = initial_state(limits)
        for k in range(3):
            r = spend(state, np.full(4, 10.0 + k), np.ones(4, bool), np.zeros(4, bool), rate=1.0, max_burst=9)
            granted += r.query.tolist()
            state = r.state
        assert granted == [True] * 6 + [False] * 6

    def test_window_edge_is_exact_under_rounding(self) -> None:
        """A grant 59.9999999999999996 s after another is inside a 60 s window, even where t - W rounds.

        3.0000000000000004 + 60 rounds to 63.0, so "free at kth + W" would wrongly allow a label at 63.0,
        while the window (63 - 60, 63] still holds the grant at 3.0000000000000004.
        """
        t = np.array([3.0000000000000004, 63.0])
        limits = {"minute": (60.0, 1)}
        r = spend(initial_state(limits), t, np.ones(2, bool), np.zeros(2, bool), rate=1.0, max_burst=5)
        assert r.query.tolist() == [True, False]
        assert window_violations(t[r.query], limits) == []

    def test_realized_rate_tracks_the_target(self) -> None:
        """20,000 candidates, no binding cap: the target rate is met within 2 % relative, audits included."""
        n, rate = 20_000, 0.02
        rng = np.random.default_rng(0)
        t = np.arange(n, dtype=float)
        audit = rng.random(n) < 0.002
        r = spend(
            initial_state({"hour": (3600.0, 10_000)}), t, np.ones(n, bool), audit, rate=rate, max_burst=10
        )
        realized = (r.query.sum() + r.audit.sum()) / n
        assert abs(realized / rate - 1.0) <= 0.02
        assert r.audit.sum() == audit.sum()

    def test_realized_rate_with_sparse_candidates_tracks_the_target(self) -> None:
        """With one item in five a candidate, the balance saved in between keeps the rate on target."""
        n, rate = 20_000, 0.02
        rng = np.random.default_rng(1)
        cand = rng.random(n) < 0.2
        r = spend(
            initial_state({}), np.arange(n, dtype=float), cand, np.zeros(n, bool), rate=rate, max_burst=10
        )
        assert abs(r.query.sum() / n / rate - 1.0) <= 0.02


class TestCapLedger:
    def test_remaining_counts_grants_inside_the_window(self) -> None:
        """Headroom is cap minus grants in (now - W, now]."""
        ledger = CapLedger({"m": (60.0, 3), "h": (3600.0, 5)}).with_grants([0.0, 10.0, 50.0], 50.0)
        assert ledger.remaining(55.0) == {"m": 0, "h": 2}
        assert ledger.remaining(60.0) == {"m": 1, "h": 2}
        assert ledger.remaining(10_000.0) == {"m": 3, "h": 5}

    def test_with_grants_is_immutable_and_trims_to_cap(self) -> None:
        """with_grants returns a new ledger keeping the cap most recent times; the old one is unchanged."""
        old = CapLedger({"m": (60.0, 2)})
        new = old.with_grants([1.0, 2.0, 3.0], 3.0)
        assert old.grants == {}
        assert old.last_time == -math.inf
        assert new.grants["m"].tolist() == [2.0, 3.0]
        assert new.last_time == 3.0

    def test_last_time_never_decreases(self) -> None:
        """A later batch at earlier times does not move the time axis back."""
        ledger = CapLedger({}).with_grants([], 100.0).with_grants([], 50.0)
        assert ledger.last_time == 100.0
        assert ledger.monotone(np.array([10.0, 120.0, 110.0])).tolist() == [100.0, 120.0, 120.0]

    def test_restore_under_smaller_cap_keeps_most_recent(self) -> None:
        """Restored, a lowered cap keeps the newest grants, a removed cap drops them, a new one is empty."""
        ledger = CapLedger({"m": (60.0, 4), "x": (60.0, 2)}).with_grants([1.0, 2.0, 3.0, 4.0], 4.0)
        restored = CapLedger.from_dict({"m": (60.0, 2), "z": (60.0, 0), "n": (10.0, 3)}, ledger.to_dict())
        assert restored.grants["m"].tolist() == [3.0, 4.0]
        assert restored.grants["z"].tolist() == []
        assert restored.grants["n"].tolist() == []
        assert "x" not in restored.grants
        assert restored.last_time == 4.0

    def test_a_ledger_that_saw_nothing_snapshots_as_strict_json(self) -> None:
        """No time seen yet (-inf) is written as null, which strict JSON and orjson keep; it reads as -inf."""
        data = CapLedger({"m": (60.0, 2)}).to_dict()
        assert data["last_time"] is None
        restored = CapLedger.from_dict({"m": (60.0, 2)}, json.loads(json.dumps(data, allow_nan=False)))
        assert restored.last_time == -math.inf

    def test_free_at_is_when_the_cap_th_latest_grant_leaves(self) -> None:
        """A full window frees once its oldest counted grant is W seconds old."""
        walk = CapWalk(CapLedger({"m": (60.0, 2)}).with_grants([0.0, 10.0], 10.0))
        assert walk.free_at(20.0) == 60.0
        walk2 = CapWalk(CapLedger({"m": (60.0, 2)}).with_grants([10.0], 10.0))
        walk2.grant(30.0)
        assert walk2.free_at(40.0) == 70.0
        assert walk2.free_at(75.0) == 75.0

    def test_free_at_with_zero_cap_is_never(self) -> None:
        """A zero cap never frees."""
        assert CapWalk(CapLedger({"m": (60.0, 0)})).free_at(0.0) == math.inf


class TestCapLimits:
    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(st.sampled_from(list(HORIZONS_S)), st.integers(0, 10**6), min_size=1),
        st.integers(1, 200),
    )
    def test_partition_shares_sum_exactly_to_the_cap(self, caps: dict[str, int], n_partitions: int) -> None:
        """The caps split over partitions add up to the cap exactly, so instances together never exceed it."""
        shares = [cap_limits(caps, p, n_partitions) for p in range(n_partitions)]  # type: ignore[arg-type]
        for horizon, cap in caps.items():
            assert sum(s[horizon][1] for s in shares) == cap
            assert max(s[horizon][1] for s in shares) - min(s[horizon][1] for s in shares) <= 1
            assert all(s[horizon][0] == HORIZONS_S[horizon] for s in shares)
