"""The retrain trigger policy: each reason fires when it should and only then, requests are never closer than
the debounce interval, and what happens during the interval is kept, not forgotten."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.errors import SelectorError
from selector.quality.estimates import wilson
from selector.quality.triggers import TriggerPolicy, TriggerState

Event = tuple[float, int, int, int, bool]
"""(seconds since the previous event, new labels, audit errors, audits, drift alarm)."""


@st.composite
def event(draw: st.DrawFn) -> Event:
    audits = draw(st.integers(0, 12))
    return (
        draw(st.floats(0, 2000)),
        draw(st.integers(0, 30)),
        draw(st.integers(0, audits)),
        audits,
        draw(st.integers(0, 9)) == 0,
    )


policies = st.builds(
    TriggerPolicy,
    every_labels=st.none() | st.integers(1, 60),
    schedule_s=st.none() | st.floats(1, 10_000),
    audit_error_above=st.none() | st.floats(0, 0.3),
    audit_min_labels=st.integers(1, 40),
    drift=st.booleans(),
    min_interval_s=st.sampled_from([0.0, 300.0, 3600.0]),
)


def drive(
    policy: TriggerPolicy, timeline: list[Event], start: float = 1_000.0
) -> list[tuple[float, tuple[str, ...], TriggerState, TriggerState]]:
    """The label loop: observe each event, request whenever due() says so, then fired(). One row per event:
    (now, the reasons due, the state due() saw, the state after)."""
    now, state = start, TriggerState.start(start)
    rows = []
    for dt, labels, errors, audits, drift in timeline:
        now += dt
        seen = policy.observe(state, new_labels=labels, audit_errors=errors, audits=audits, drift_alarm=drift)
        reasons = policy.due(seen, now)
        state = policy.fired(seen, now) if reasons else seen
        rows.append((now, reasons, seen, state))
    return rows


class TestDrivenByTheLoop:
    @settings(max_examples=80, deadline=None)
    @given(policies, st.lists(event(), max_size=40))
    def test_no_two_requests_closer_than_the_interval(
        self, policy: TriggerPolicy, timeline: list[Event]
    ) -> None:
        """Whatever the policy and the events, the requests keep min_interval_s apart and are counted."""
        rows = drive(policy, timeline)
        times = [now for now, reasons, _, _ in rows if reasons]
        assert all(b - a >= policy.min_interval_s for a, b in itertools.pairwise(times))
        assert (rows[-1][3].requests if rows else 0) == len(times)

    @settings(max_examples=80, deadline=None)
    @given(policies, st.lists(event(), max_size=40))
    def test_each_reason_holds_exactly_when_its_condition_does(
        self, policy: TriggerPolicy, timeline: list[Event]
    ) -> None:
        """Outside the debounce interval, each reason is given iff its condition holds on the counters since
        the last request (labels reached N; schedule_s elapsed; the Wilson lower bound above the bound on
        enough audits; a drift alarm latched), in the fixed order; inside it, nothing is given."""
        last: float | None = None
        since = 1_000.0
        labels = errors = audits = 0
        drift = False
        for (_dt, new, err, aud, alarm), (now, reasons, seen, _) in zip(
            timeline, drive(policy, timeline), strict=True
        ):
            labels, errors, audits, drift = labels + new, errors + err, audits + aud, drift or alarm
            assert (seen.labels_since, seen.audit_errors_since, seen.audits_since, seen.drift_alarm) == (
                labels,
                errors,
                audits,
                drift,
            ), "counters and the latch keep everything since the last request"
            if last is not None and now - last < policy.min_interval_s:
                assert reasons == ()
                continue
            expected = []
            if policy.every_labels is not None and labels >= policy.every_labels:
                expected.append("labels")
            if policy.schedule_s is not None and now - since >= policy.schedule_s:
                expected.append("schedule")
            if (
                policy.audit_error_above is not None
                and audits >= policy.audit_min_labels
                and wilson(errors, audits).low > policy.audit_error_above
            ):
                expected.append("audit_error")
            if policy.drift and drift:
                expected.append("drift")
            assert reasons == tuple(expected)
            if reasons:
                last = since = now
                labels = errors = audits = 0
                drift = False

    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 50), st.lists(st.tuples(st.floats(0, 100), st.integers(0, 20)), max_size=40))
    def test_without_debounce_every_labels_fires_exactly_when_the_count_reaches_n(
        self, n: int, steps: list[tuple[float, int]]
    ) -> None:
        """every_labels=N alone, min_interval_s=0: a request at exactly the events where the running count of
        labels since the previous request reaches N, and nowhere else."""
        policy = TriggerPolicy(every_labels=n, min_interval_s=0.0)
        rows = drive(policy, [(dt, k, 0, 0, False) for dt, k in steps])
        count, expected = 0, []
        for _, k in steps:
            count += k
            expected.append(count >= n)
            count = 0 if count >= n else count
        assert [bool(reasons) for _, reasons, _, _ in rows] == expected
        assert all(reasons in ((), ("labels",)) for _, reasons, _, _ in rows)

    @settings(max_examples=40, deadline=None)
    @given(st.lists(event(), max_size=40), st.floats(0, 1e9))
    def test_a_policy_with_every_trigger_off_never_fires(self, timeline: list[Event], start: float) -> None:
        """The defaults enable nothing: no request, whatever labels, audits, alarms and time."""
        rows = drive(TriggerPolicy(), [*timeline, (1e9, 10**6, 100, 100, True)], start)
        assert not any(reasons for _, reasons, _, _ in rows)


class TestDebounce:
    def test_a_reason_latched_during_the_interval_fires_as_soon_as_it_ends(self) -> None:
        """Request at t=0; 10 labels and a drift alarm arrive at t=100 and t=200, within the 600 s interval:
        nothing at 599.9, both reasons at exactly 600."""
        policy = TriggerPolicy(every_labels=10, drift=True, min_interval_s=600.0)
        state = policy.fired(TriggerState.start(-50.0), now=0.0)
        state = policy.observe(state, new_labels=10)
        assert policy.due(state, 100.0) == ()
        state = policy.observe(state, drift_alarm=True)
        assert policy.due(state, 200.0) == policy.due(state, 599.9) == ()
        assert policy.due(state, 600.0) == ("labels", "drift")

    def test_the_first_request_is_not_debounced(self) -> None:
        """Before any request only the reasons count, however soon after the start."""
        policy = TriggerPolicy(drift=True, min_interval_s=3600.0)
        assert policy.due(policy.observe(TriggerState.start(0.0), drift_alarm=True), 1.0) == ("drift",)


class TestAuditError:
    @pytest.mark.parametrize(("errors", "fires"), [(3, True), (1, False)])
    def test_fires_when_the_wilson_lower_bound_exceeds_the_bound(self, errors: int, fires: bool) -> None:
        """Bound 0.02, 30 audits: 3 errors have a Wilson lower bound above 0.02 (about 0.035) and fire;
        1 error (lower bound below 0.02, though 1/30 = 0.033 is above it) does not."""
        assert (wilson(errors, 30).low > 0.02) is fires
        policy = TriggerPolicy(audit_error_above=0.02)
        state = policy.observe(TriggerState.start(0.0), audit_errors=errors, audits=30)
        assert policy.due(state, 10.0) == (("audit_error",) if fires else ())

    def test_no_audit_request_below_audit_min_labels(self) -> None:
        """3 errors of 29 audits would clear the bound, but 29 < 30 audits since the last request."""
        assert wilson(3, 29).low > 0.02
        policy = TriggerPolicy(audit_error_above=0.02)
        state = policy.observe(TriggerState.start(0.0), audit_errors=3, audits=29)
        assert policy.due(state, 10.0) == ()
        assert policy.due(policy.observe(state, audits=1), 10.0) == ("audit_error",)

    def test_the_bound_itself_is_not_exceeded(self) -> None:
        """A lower bound equal to the bound does not fire (strictly above)."""
        policy = TriggerPolicy(audit_error_above=wilson(3, 30).low)
        assert policy.due(policy.observe(TriggerState.start(0.0), audit_errors=3, audits=30), 1.0) == ()

    def test_audits_count_only_since_the_last_request(self) -> None:
        """After a request the errors before it no longer count."""
        policy = TriggerPolicy(audit_error_above=0.02, min_interval_s=0.0)
        state = policy.fired(policy.observe(TriggerState.start(0.0), audit_errors=5, audits=30), 1.0)
        assert policy.due(policy.observe(state, audits=30), 2.0) == ()


class TestSchedule:
    def test_fires_at_started_at_plus_schedule_s_then_from_each_request(self) -> None:
        """Started at 1,000 with schedule_s 3,600: due from 4,600 on; after a request at 4,700, from 8,300."""
        policy = TriggerPolicy(schedule_s=3600.0, min_interval_s=0.0)
        state = TriggerState.start(1_000.0)
        assert policy.due(state, 4_599.999) == ()
        assert policy.due(state, 4_600.0) == ("schedule",)
        state = policy.fired(state, 4_700.0)
        assert policy.due(state, 8_299.0) == ()
        assert policy.due(state, 8_300.0) == ("schedule",)


class TestState:
    def test_all_reasons_in_the_fixed_order(self) -> None:
        policy = TriggerPolicy(
            every_labels=1, schedule_s=1.0, audit_error_above=0.0, audit_min_labels=1, drift=True
        )
        state = policy.observe(
            TriggerState.start(0.0), new_labels=1, audit_errors=5, audits=5, drift_alarm=True
        )
        assert policy.due(state, 1.0) == ("labels", "schedule", "audit_error", "drift")

    def test_fired_resets_the_counters_and_the_latch_and_counts_the_request(self) -> None:
        policy = TriggerPolicy(drift=True)
        seen = policy.observe(
            TriggerState.start(5.0), new_labels=7, audit_errors=1, audits=2, drift_alarm=True
        )
        assert policy.fired(policy.fired(seen, 10.0), 9_000.0) == TriggerState(5.0, 9_000.0, requests=2)

    def test_observe_never_clears_the_drift_latch(self) -> None:
        policy = TriggerPolicy(drift=True)
        state = policy.observe(policy.observe(TriggerState.start(0.0), drift_alarm=True), drift_alarm=False)
        assert state.drift_alarm

    @pytest.mark.parametrize("last", [None, 123.5])
    def test_a_json_round_trip_gives_the_same_state(self, last: float | None) -> None:
        state = TriggerState(1.5, last, 4, 1, 3, True, 2)
        assert TriggerState.from_dict(json.loads(json.dumps(state.to_dict()))) == state

    def test_a_snapshot_with_a_missing_key_is_refused(self) -> None:
        d = TriggerState.start(0.0).to_dict()
        del d["requests"], d["drift_alarm"]
        with pytest.raises(SelectorError, match=r"^trigger state is missing \['drift_alarm', 'requests'\]"):
            TriggerState.from_dict(d)

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"labels_since": "many"}, r"^trigger state has a value of the wrong type"),
            ({"drift_alarm": "false"}, r"^trigger state 'drift_alarm' must be true or false: 'false'$"),
            ({"audits_since": -1}, r"^'audits_since' must be an integer >= 0: -1$"),
            ({"audit_errors_since": 4}, r"^'audit_errors_since' must be <= 'audits_since': 4 > 3$"),
            ({"requests": -2}, r"^'requests' must be >= 0: -2$"),
        ],
    )
    def test_a_bad_snapshot_is_refused(self, change: dict[str, Any], message: str) -> None:
        d = {**TriggerState(1.5, None, 4, 1, 3, False, 2).to_dict(), **change}
        with pytest.raises(SelectorError, match=message):
            TriggerState.from_dict(d)


class TestRefused:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"every_labels": 0}, r"^'every_labels' must be an integer >= 1 or None: 0$"),
            ({"every_labels": True}, r"^'every_labels' must be an integer >= 1 or None: True$"),
            ({"schedule_s": 0.0}, r"^'schedule_s' must be a finite number > 0 or None: 0\.0$"),
            ({"schedule_s": math.inf}, r"^'schedule_s' must be a finite number > 0 or None: inf$"),
            ({"audit_error_above": 1.0}, r"^'audit_error_above' must be in \[0, 1\) or None: 1\.0$"),
            ({"audit_error_above": -0.1}, r"^'audit_error_above' must be in \[0, 1\) or None: -0\.1$"),
            ({"audit_min_labels": 0}, r"^'audit_min_labels' must be an integer >= 1: 0$"),
            ({"min_interval_s": -1.0}, r"^'min_interval_s' must be a finite number >= 0: -1\.0$"),
            ({"min_interval_s": math.nan}, r"^'min_interval_s' must be a finite number >= 0: nan$"),
        ],
    )
    def test_bad_parameters(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(SelectorError, match=message):
            TriggerPolicy(**kwargs)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"new_labels": -1}, r"^'new_labels' must be an integer >= 0: -1$"),
            ({"audits": 2.0}, r"^'audits' must be an integer >= 0: 2\.0$"),
            ({"audit_errors": 3, "audits": 2}, r"^'audit_errors' must be <= 'audits': 3 > 2$"),
        ],
    )
    def test_bad_observations(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(SelectorError, match=message):
            TriggerPolicy().observe(TriggerState.start(0.0), **kwargs)

    def test_a_non_finite_now(self) -> None:
        with pytest.raises(SelectorError, match=r"^'now' must be a finite time in unix seconds: nan$"):
            TriggerPolicy().due(TriggerState.start(0.0), math.nan)
        with pytest.raises(SelectorError, match=r"^'now' must be a finite time in unix seconds: inf$"):
            TriggerState.start(math.inf)
