"""Specification of the per-item uniform draws: deterministic per id and seed, uniform on [0, 1)."""

from __future__ import annotations

import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.draws import id_hashes, uniforms

IDS = [f"item-{i}" for i in range(100_000)]


class TestIdHashes:
    def test_hash_is_crc32_of_utf8(self) -> None:
        """The hash is the standard CRC-32 of the UTF-8 bytes.

        0xCBF43926 is the published CRC-32 check value of '123456789'.
        """
        ids = ["123456789", "é", "🙂"]
        assert id_hashes(ids).tolist() == [0xCBF43926, zlib.crc32("é".encode()), zlib.crc32("🙂".encode())]

    def test_empty_input(self) -> None:
        """No ids, no hashes."""
        assert id_hashes([]).shape == (0,)


class TestUniforms:
    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.text(min_size=1, max_size=20), max_size=50), st.integers(-(2**31), 2**31 - 1))
    def test_deterministic_per_id_and_seed(self, ids: list[str], seed: int) -> None:
        """The same id and seed give the same draw, independently of the batch it is in."""
        together = uniforms(id_hashes(ids), seed, 1)
        alone = [uniforms(id_hashes([i]), seed, 1)[0] for i in ids]
        assert together.tolist() == alone

    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.text(max_size=20), max_size=50), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
    def test_values_in_unit_interval(self, ids: list[str], seed: int, stream: int) -> None:
        """Every draw is in [0, 1)."""
        u = uniforms(id_hashes(ids), seed, stream)
        assert ((u >= 0.0) & (u < 1.0)).all()

    def test_extreme_hash_maps_below_one(self) -> None:
        """Even the largest 64-bit mix value maps strictly below 1 (53-bit mantissa conversion)."""
        h = np.arange(0, 2**32, 2**20, dtype=np.uint64)
        u = uniforms(h, 0xFFFFFFFF, 0xFFFFFFFF)
        assert u.max() < 1.0

    def test_different_seeds_differ(self) -> None:
        """Another seed gives (almost entirely) different draws."""
        h = id_hashes(IDS[:10_000])
        a, b = uniforms(h, 0, 1), uniforms(h, 1, 1)
        assert np.mean(a == b) < 0.001

    def test_different_streams_differ(self) -> None:
        """Streams (audit, exploration, ...) are independent of each other under one seed."""
        h = id_hashes(IDS[:10_000])
        a, b = uniforms(h, 0, 1), uniforms(h, 0, 2)
        assert np.mean(a == b) < 0.001
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.05

    def test_mean_is_one_half(self) -> None:
        """Over 100k ids the mean is within 0.01 of 0.5 (its standard error is ~0.0009)."""
        u = uniforms(id_hashes(IDS), 0, 1)
        assert abs(u.mean() - 0.5) < 0.01

    def test_buckets_are_evenly_filled(self) -> None:
        """A chi-square statistic over 20 buckets stays far below what a biased generator gives.

        With 19 degrees of freedom the statistic has mean 19 and P(X > 60) < 1e-5.
        """
        u = uniforms(id_hashes(IDS), 0, 1)
        counts = np.bincount((u * 20).astype(int), minlength=20)
        expected = len(IDS) / 20
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 60

    def test_audit_share_matches_the_rate(self) -> None:
        """The share of draws below a rate is the rate (audits are a uniform sample)."""
        u = uniforms(id_hashes(IDS), 7, 1)
        assert abs(np.mean(u < 0.02) - 0.02) < 0.002
