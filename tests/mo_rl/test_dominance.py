"""Quantile Dominance and optimal subsets: properties against brute-force references."""

import itertools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mo_rl import RewardSpec
from mo_rl.dominance import (
    dominance_matrix,
    optimal_subset,
    quantile_dominance,
    subset_greedy_action,
)

small_floats = st.integers(-4, 4).map(float)  # coarse grid: ties are common


def chain_spec(k: int) -> RewardSpec:
    names = tuple(f"o{i}" for i in range(k))
    return RewardSpec(names, tuple(f"o{i} > o{i + 1}" for i in range(k - 1)))


def test_quantile_dominance_by_hand():
    qa = jnp.array([1.0, 2.0, 3.0, 4.0])
    qb = jnp.array([0.0, 2.0, 3.5, 3.0])
    assert float(quantile_dominance(qa, qb, 0.0)) == pytest.approx(0.5)
    assert float(quantile_dominance(qa, qb, 0.9)) == pytest.approx(0.5)
    assert float(quantile_dominance(qa, qb, 1.0)) == pytest.approx(0.0)
    d = dominance_matrix(jnp.stack([qa, qb]), 0.5, 0.0)
    np.testing.assert_array_equal(d, [[False, True], [False, False]])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(2, 5), st.data())
def test_point_masses_give_lexicographic_argmax(k, a, data):
    """Deterministic returns: the subset is exactly the lexicographic argmax set."""
    values = data.draw(hnp.arrays(np.float32, (k, a), elements=small_floats))
    quantiles = jnp.repeat(jnp.asarray(values)[..., None], 4, axis=-1)
    spec = chain_spec(k)
    subset = np.asarray(optimal_subset(quantiles, spec.level_mask, jnp.ones(k), jnp.zeros(k)))
    best = set(range(a))
    for obj in range(k):
        top = max(values[obj, i] for i in best)
        best = {i for i in best if values[obj, i] == top}
    assert set(np.flatnonzero(subset)) == best


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6), st.integers(1, 6), st.data())
def test_rho_one_eps_zero_is_first_order_dominance(a, n, data):
    """One objective, rho=1, eps=0: keep actions no other beats at every sampled quantile."""
    q = np.sort(data.draw(hnp.arrays(np.float32, (1, a, n), elements=small_floats)), axis=-1)
    subset = np.asarray(optimal_subset(jnp.asarray(q), np.ones((1, 1), bool), 1.0, 0.0))
    expected = [not any(np.all(q[0, b] > q[0, i]) for b in range(a)) for i in range(a)]
    np.testing.assert_array_equal(subset, expected)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.data())
def test_subset_never_empty_and_respects_legal_mask(k, a, n, data):
    q = data.draw(hnp.arrays(np.float32, (k, a, n), elements=small_floats))
    legal = data.draw(hnp.arrays(bool, (a,)))
    rho = data.draw(hnp.arrays(np.float32, (k,), elements=st.sampled_from([0.6, 0.75, 1.0])))
    spec = RewardSpec(tuple(f"o{i}" for i in range(k)))  # all incomparable: one level
    subset = np.asarray(optimal_subset(q, spec.level_mask, rho, np.zeros(k), legal))
    assert subset.any()
    if legal.any():
        assert not (subset & ~legal).any()


def test_dominance_cycle_falls_back_to_fewest_dominators():
    """Non-transitive QD (rock-paper-scissors quantiles) never empties the subset."""
    q = jnp.array([[[1.0, 5.0, 9.0], [2.0, 6.0, 7.0], [3.0, 4.0, 8.0]]])
    d = np.asarray(dominance_matrix(q[0], 0.6, 0.0))
    assert d.sum(axis=0).min() >= 1  # every action has a dominator: a cycle
    subset = optimal_subset(q, np.ones((1, 1), bool), 0.6, 0.0)
    assert np.asarray(subset).sum() >= 1


def test_same_mean_heavier_lower_body_is_removed_but_rare_tail_is_not():
    spec = RewardSpec(("safety", "progress"), ("safety > progress",))
    taus = (np.arange(20) + 0.5) / 20
    safe = np.zeros(20)
    heavy = np.where(taus < 0.7, -1.0, 7.0 / 3.0)  # mean 0, worse on 70% of levels
    rare = np.where(taus < 0.05, -19.0, 1.0)  # mean 0, catastrophic 5% tail
    progress = np.array([0.5, 1.0])[:, None] * np.ones(20)
    for risky, removed in ((heavy, True), (rare, False)):
        assert abs(risky.mean()) < 1e-6
        q = jnp.asarray(np.stack([np.stack([safe, risky]), progress]), jnp.float32)
        action, subset = subset_greedy_action(q, spec.level_mask, jnp.array([0.6, 0.6]),
                                              jnp.array([0.1, 0.0]))
        assert bool(subset[1]) is not removed
        # a mean-based ranking (lexicographic on means) cannot separate the safety means
        assert np.isclose(q[0, 0].mean(), q[0, 1].mean(), atol=1e-5)
        assert int(action) == (0 if removed else 1)


def test_jit_and_vmap_agree_with_eager():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.integers(-3, 4, size=(7, 2, 4, 5)).astype(np.float32))
    spec = chain_spec(2)
    args = (spec.level_mask, jnp.array([0.6, 1.0]), jnp.array([0.0, 0.5]))
    eager = np.stack([np.asarray(optimal_subset(q[i], *args)) for i in range(7)])
    batched = jax.jit(jax.vmap(optimal_subset, in_axes=(0, None, None, None)))(q, *args)
    np.testing.assert_array_equal(eager, batched)
    acts = jax.vmap(lambda x: subset_greedy_action(x, *args)[0])(q)
    assert all(bool(batched[i, int(acts[i])]) for i in range(7))


def test_tie_breaks():
    """Subset {0, 1, 2} (no dominance); each tie-break picks a different member."""
    spec = RewardSpec(("s", "p", "c"), ("s > p", "s > c"))  # levels [s], [p, c]
    safety = [[0.0, 0.0], [0.0, 0.0], [30.0, -10.0]]  # QD 0.5 both ways: no dominance
    progress = [[1.0, 1.0], [0.0, 0.0], [5.0, 5.0]]
    comfort = [[0.0, 0.0], [2.0, 2.0], [-9.0, -9.0]]
    q = jnp.array([safety, progress, comfort])
    for tie_break, want in (("lowest_level_mean", 1), ("mean", 2), ("first", 0)):
        action, subset = subset_greedy_action(q, spec.level_mask, 1.0, 0.0, tie_break=tie_break)
        assert np.asarray(subset).all()
        assert int(action) == want
    with pytest.raises(ValueError, match="tie_break"):
        subset_greedy_action(q, spec.level_mask, 1.0, 0.0, tie_break="best")


def test_pareto_within_a_level():
    """Two tied objectives: b dominates a only if it wins one and loses none."""
    spec = RewardSpec(("x", "y"), ("x ~ y",))
    values = np.array([[1.0, 2.0, 0.0], [1.0, 0.0, 0.0]])  # (K, A)
    q = jnp.asarray(np.repeat(values[..., None], 3, axis=-1))
    subset = np.asarray(optimal_subset(q, spec.level_mask, jnp.ones(2), jnp.zeros(2)))
    expected = [
        not any(
            (values[:, b] > values[:, i]).any() and not (values[:, i] > values[:, b]).any()
            for b in range(3)
        )
        for i in range(3)
    ]
    np.testing.assert_array_equal(subset, expected)
    assert list(itertools.compress(range(3), subset)) == [0, 1]
