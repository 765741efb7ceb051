"""Page-Hinkley change detection: the textbook statistic, batch cuts that change nothing, detection of a
shifted mean in the right direction, rare false alarms, the warm-up, persistence and refused input."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.errors import SelectorError
from selector.quality.drift import PageHinkley, PageHinkleyState


def reference(ph: PageHinkley, xs: list[float]) -> tuple[list[tuple[int, str]], tuple[float, ...]]:
    """The test written as in the papers, one item at a time in plain Python (mean updated incrementally):
    the alarms and the final (n, mean, up, up_min, down, down_max)."""
    n, mean, up, up_min, down, down_max = 0, 0.0, 0.0, 0.0, 0.0, 0.0
    alarms = []
    for i, x in enumerate(xs):
        n += 1
        mean += (x - mean) / n
        up += x - mean - ph.delta
        down += x - mean + ph.delta
        up_min, down_max = min(up_min, up), max(down_max, down)
        rise, fall = up - up_min, down_max - down
        if n >= ph.min_items and max(rise, fall) > ph.threshold:
            alarms.append((i, "up" if rise >= fall else "down"))
            n, mean, up, up_min, down, down_max = 0, 0.0, 0.0, 0.0, 0.0, 0.0
    return alarms, (n, mean, up, up_min, down, down_max)


def one_at_a_time(ph: PageHinkley, x: np.ndarray) -> tuple[PageHinkleyState, list[tuple[int, str]]]:
    state, alarms = PageHinkleyState(), []
    for i, v in enumerate(x):
        state, at, direction = ph.update(state, np.array([v]))
        if at is not None:
            assert at == 0
            alarms.append((i, direction))
    return state, alarms


@st.composite
def streams(draw: st.DrawFn) -> np.ndarray:
    """Up to 600 items in up to four segments of different mean and spread (shifts included); never constant,
    so no statistic lands exactly on the threshold, where the reference's other rounding could differ."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    segments = draw(
        st.lists(st.tuples(st.floats(0, 1), st.floats(0.001, 0.3), st.integers(0, 150)), max_size=4)
    )
    parts = [rng.normal(mu, sd, k) for mu, sd, k in segments]
    return np.concatenate(parts) if parts else np.zeros(0)


# small thresholds so the random streams raise several alarms each
detectors = st.builds(
    PageHinkley,
    delta=st.sampled_from([0.0, 0.005, 0.05]),
    threshold=st.sampled_from([0.5, 2.0, 50.0]),
    min_items=st.sampled_from([1, 5, 30]),
)


class TestStatistic:
    @settings(max_examples=60, deadline=None)
    @given(detectors, streams())
    def test_matches_the_textbook_recursion(self, ph: PageHinkley, x: np.ndarray) -> None:
        """The vectorized batch gives the alarms and the final state of the plain per-item recursion with the
        incremental mean (within 1e-9 relative where the two roundings differ)."""
        state, alarms = ph.alarms(PageHinkleyState(), x)
        expected_alarms, expected = reference(ph, x.tolist())
        assert alarms == expected_alarms
        assert state.n == expected[0]
        got = (state.mean if state.n else 0.0, state.up, state.up_min, state.down, state.down_max)
        assert got == pytest.approx(expected[1:], rel=1e-9, abs=1e-9)

    def test_the_up_statistic_by_hand(self) -> None:
        """x = 1, 3 with delta 0.5: means 1, 2; U = (1-1-0.5) + (3-2-0.5) = 0; min -0.5; D = 0.5 + 1.5 = 2."""
        state, at, direction = PageHinkley(delta=0.5).update(PageHinkleyState(), np.array([1.0, 3.0]))
        assert (at, direction) == (None, None)
        assert (state.n, state.mean, state.up, state.up_min, state.down, state.down_max) == (
            2,
            2.0,
            0.0,
            -0.5,
            2.0,
            2.0,
        )


class TestBatchCuts:
    @settings(max_examples=60, deadline=None)
    @given(detectors, streams(), st.lists(st.integers(0, 400), max_size=8))
    def test_any_cuts_give_the_states_and_alarms_of_one_item_at_a_time(
        self, ph: PageHinkley, x: np.ndarray, cuts: list[int]
    ) -> None:
        """Cutting the stream anywhere (empty batches included) ends in the identical state, with every alarm
        at the same position and in the same direction; update() reports each batch's first one."""
        single_state, single_alarms = one_at_a_time(ph, x)
        state, alarms, firsts, expected_firsts = PageHinkleyState(), [], [], []
        bounds = [0, *sorted(min(c, len(x)) for c in cuts), len(x)]
        for lo, hi in itertools.pairwise(bounds):
            after, at, direction = ph.update(state, x[lo:hi])
            state, found = ph.alarms(state, x[lo:hi])
            assert after == state
            alarms += [(lo + i, d) for i, d in found]
            firsts += [] if at is None else [(lo + at, direction)]
            expected_firsts += [a for a in single_alarms if lo <= a[0] < hi][:1]
        assert alarms == single_alarms
        assert firsts == expected_firsts
        assert state == single_state


class TestDetection:
    @pytest.mark.parametrize(("shift", "direction"), [(0.2, "up"), (-0.2, "down")])
    def test_a_shift_of_0_2_is_found_within_400_items_in_its_direction(
        self, shift: float, direction: str
    ) -> None:
        """N(0.5, 0.05) for 1,000 items, then the mean moves by 0.2: no alarm before the change, then one in
        the right direction within 400 items, in each of 50 seeded streams (measured: 274-310 items after the
        change, about 290 on average, for both directions)."""
        ph = PageHinkley()
        for seed in range(50):
            rng = np.random.default_rng(seed)
            x = np.concatenate([rng.normal(0.5, 0.05, 1000), rng.normal(0.5 + shift, 0.05, 1000)])
            _, at, got = ph.update(PageHinkleyState(), x)
            assert at is not None and 1000 <= at < 1400 and got == direction, (seed, at, got)

    def test_after_an_alarm_it_learns_the_new_level_and_finds_the_next_change(self) -> None:
        """Up by 0.2, then back down: two alarms, "up" then "down", each after its own change."""
        rng = np.random.default_rng(7)
        x = np.concatenate([rng.normal(m, 0.05, 2000) for m in (0.5, 0.7, 0.5)])
        _, alarms = PageHinkley().alarms(PageHinkleyState(), x)
        assert [d for _, d in alarms] == ["up", "down"]
        assert 2000 <= alarms[0][0] < 2400 and 4000 <= alarms[1][0] < 4800

    def test_false_alarms_are_rare_on_stationary_streams(self) -> None:
        """200 seeded streams of 5,000 items from N(0.5, 0.05) with the default parameters: measured 0 alarms
        in all 1,000,000 items; at most 2 allowed."""
        ph = PageHinkley()
        total = sum(
            len(ph.alarms(PageHinkleyState(), np.random.default_rng(seed).normal(0.5, 0.05, 5000))[1])
            for seed in range(200)
        )
        assert total <= 2

    def test_no_alarm_before_min_items(self) -> None:
        """A huge jump at item 10 crosses the threshold at once, yet the alarm waits for the min_items-th
        item since the reset; after it, the next alarm waits min_items again."""
        ph = PageHinkley(threshold=1.0, min_items=30)
        x = np.concatenate([np.zeros(10), np.full(100, 100.0)])
        _, alarms = ph.alarms(PageHinkleyState(), x)
        assert alarms[0] == (29, "up")
        assert all(b - a >= 30 for (a, _), (b, _) in itertools.pairwise(alarms))
        early, at, _ = PageHinkley(threshold=1.0, min_items=200).update(PageHinkleyState(), x)
        assert at is None and early.n == 110


class TestPersistence:
    def test_a_json_round_trip_continues_identically(self) -> None:
        """to_dict -> JSON -> from_dict mid-stream gives the same state and the same later alarms."""
        rng = np.random.default_rng(3)
        x = np.concatenate([rng.normal(0.5, 0.05, 700), rng.normal(0.3, 0.05, 700)])
        ph = PageHinkley()
        mid, _ = ph.alarms(PageHinkleyState(), x[:600])
        restored = PageHinkleyState.from_dict(json.loads(json.dumps(mid.to_dict())))
        assert restored == mid
        assert ph.alarms(restored, x[600:]) == ph.alarms(mid, x[600:])
        assert ph.alarms(mid, x[600:])[1]

    def test_a_snapshot_with_a_missing_key_is_refused(self) -> None:
        d = PageHinkleyState().to_dict()
        del d["up_min"]
        with pytest.raises(SelectorError, match=r"Page-Hinkley state is missing \['up_min'\]"):
            PageHinkleyState.from_dict(d)
        with pytest.raises(SelectorError, match="non-numeric value"):
            PageHinkleyState.from_dict({**PageHinkleyState().to_dict(), "up": "high"})
        with pytest.raises(SelectorError, match="'n' must be >= 0: -1"):
            PageHinkleyState.from_dict({**PageHinkleyState().to_dict(), "n": -1})

    def test_a_fresh_state_has_no_mean(self) -> None:
        assert math.isnan(PageHinkleyState().mean)


class TestRefused:
    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_scores(self, bad: float) -> None:
        """The message names the first bad item; the state is not advanced (nothing is returned)."""
        with pytest.raises(SelectorError, match=rf"^'x' must be finite: x\[2\] = {bad!r}$"):
            PageHinkley().update(PageHinkleyState(), np.array([0.1, 0.2, bad, 0.3]))

    def test_a_two_dimensional_batch(self) -> None:
        with pytest.raises(SelectorError, match=r"^'x' must be one-dimensional: shape \(2, 2\)$"):
            PageHinkley().update(PageHinkleyState(), np.zeros((2, 2)))

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"delta": -0.1}, r"^'delta' must be a finite number >= 0: -0\.1$"),
            ({"delta": math.nan}, r"^'delta' must be a finite number >= 0: nan$"),
            ({"threshold": 0.0}, r"^'threshold' must be a finite number > 0: 0\.0$"),
            ({"threshold": math.inf}, r"^'threshold' must be a finite number > 0: inf$"),
            ({"min_items": 0}, r"^'min_items' must be an integer >= 1: 0$"),
            ({"min_items": 2.5}, r"^'min_items' must be an integer >= 1: 2\.5$"),
        ],
    )
    def test_bad_parameters(self, kwargs: dict[str, float], message: str) -> None:
        with pytest.raises(SelectorError, match=message):
            PageHinkley(**kwargs)  # type: ignore[arg-type]
