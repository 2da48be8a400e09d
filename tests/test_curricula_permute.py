"""The mixer's O(1)-memory seeded permutation (Feistel + cycle walking): a bijection for every
domain size, deterministic per key, different across keys."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from curricula.permute import FeistelPermutation, derive_key, uniform


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 2**63), st.integers(64, 2000))
def test_is_a_bijection_in_chunks(n, key, chunk):
    perm = FeistelPermutation(n, key)
    values = np.concatenate(list(perm.chunks(chunk)))
    assert values.dtype == np.int64
    assert np.array_equal(np.sort(values), np.arange(n))
    assert np.array_equal(values, FeistelPermutation(n, key)(np.arange(n)))  # deterministic


def test_keys_change_the_order_and_large_domains_stay_cheap():
    a = FeistelPermutation(1000, derive_key(0, "p", "web", 0))(np.arange(1000))
    b = FeistelPermutation(1000, derive_key(0, "p", "web", 1))(np.arange(1000))
    assert not np.array_equal(a, b)
    # not the identity, and roughly uniform positions
    assert (a != np.arange(1000)).mean() > 0.95
    big = FeistelPermutation(10**12, 7)(np.arange(100_000, dtype=np.uint64))
    assert big.min() >= 0 and big.max() < 10**12 and len(np.unique(big)) == 100_000


def test_uniform_is_deterministic_and_spread():
    u = uniform(123, np.arange(100_000))
    assert np.array_equal(u, uniform(123, np.arange(100_000)))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
