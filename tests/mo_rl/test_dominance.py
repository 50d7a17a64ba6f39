"""Quantile Dominance and optimal subsets: hand-computed cases and brute-force references.

The references below re-state the definitions of shared/reference/pr_iqn.md in
plain numpy loops, independent of the vectorised implementation.
"""

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
    DOMINANCE_RULES,
    check_rule,
    dominance_matrix,
    not_worse,
    optimal_subset,
    quantile_dominance,
    subset_greedy_action,
)

small_floats = st.integers(-4, 4).map(float)  # coarse grid: ties are common
GRID = (np.arange(20) + 0.5) / 20  # 20 quantile fractions


def chain_spec(k: int) -> RewardSpec:
    names = tuple(f"o{i}" for i in range(k))
    return RewardSpec(names, tuple(f"o{i} > o{i + 1}" for i in range(k - 1)))


def ref_dominates(qb, qa, rho, eps, rule):
    """Does b dominate a (one objective)? Loops over the quantile levels."""
    n = len(qb)
    better_b = sum(qb[i] > qa[i] + eps for i in range(n)) / n
    better_a = sum(qa[i] > qb[i] + eps for i in range(n)) / n
    nw_b = sum(qb[i] >= qa[i] - eps for i in range(n)) / n
    if rule == "majority":
        return better_b >= rho - 1e-9
    return nw_b >= rho - 1e-9 and better_b > better_a


def test_better_and_not_worse_by_hand():
    qa = jnp.array([1.0, 2.0, 3.0, 4.0])
    qb = jnp.array([0.0, 2.0, 3.5, 3.0])
    assert float(quantile_dominance(qa, qb, 0.0)) == pytest.approx(0.5)  # levels 0, 3
    assert float(quantile_dominance(qa, qb, 0.9)) == pytest.approx(0.5)
    assert float(quantile_dominance(qa, qb, 1.0)) == pytest.approx(0.0)
    assert float(not_worse(qa, qb, 0.0)) == pytest.approx(0.75)  # all but level 2
    assert float(not_worse(qb, qa, 0.0)) == pytest.approx(0.5)  # levels 1, 2
    assert float(not_worse(qb, qa, 1.0)) == pytest.approx(1.0)
    q = jnp.stack([qa, qb])
    # a: better on 2 levels, b on 1; not_worse(a, b) = 0.75
    np.testing.assert_array_equal(dominance_matrix(q, 0.75, 0.0), [[False, True],
                                                                   [False, False]])
    np.testing.assert_array_equal(dominance_matrix(q, 0.8, 0.0), np.zeros((2, 2), bool))
    # majority: better(a, b) = 0.5 >= 0.5, better(b, a) = 0.25
    np.testing.assert_array_equal(dominance_matrix(q, 0.5, 0.0, "majority"),
                                  [[False, True], [False, False]])


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 5), st.integers(1, 6), st.sampled_from(DOMINANCE_RULES),
       st.sampled_from([0.3, 0.5, 0.6, 0.75, 1.0]), st.sampled_from([0.0, 0.5, 1.0]), st.data())
def test_dominance_matrix_matches_reference(a, n, rule, rho, eps, data):
    if rule == "majority" and rho <= 0.5:
        rho = 0.75
    q = data.draw(hnp.arrays(np.float32, (a, n), elements=small_floats))
    got = np.asarray(dominance_matrix(jnp.asarray(q), rho, eps, rule))
    want = [[ref_dominates(q[b], q[i], rho, eps, rule) for i in range(a)] for b in range(a)]
    np.testing.assert_array_equal(got, want)
    if rule == "not_worse":
        assert not (got & got.T).any()  # antisymmetric for every rho


@pytest.mark.parametrize("rule", DOMINANCE_RULES)
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(2, 5), st.data())
def test_point_masses_give_lexicographic_argmax(rule, k, a, data):
    """Deterministic returns: the subset is exactly the lexicographic argmax set."""
    values = data.draw(hnp.arrays(np.float32, (k, a), elements=small_floats))
    quantiles = jnp.repeat(jnp.asarray(values)[..., None], 4, axis=-1)
    spec = chain_spec(k)
    subset = np.asarray(optimal_subset(quantiles, spec.level_mask, jnp.full(k, 0.75),
                                       jnp.zeros(k), rule=rule))
    best = set(range(a))
    for obj in range(k):
        top = max(values[obj, i] for i in best)
        best = {i for i in best if values[obj, i] == top}
    assert set(np.flatnonzero(subset)) == best


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6), st.integers(1, 6), st.data())
def test_rho_one_eps_zero_is_weak_first_order_dominance(a, n, data):
    """One objective, rho=1, eps=0: keep the actions that no other action weakly
    first-order dominates (nowhere worse, somewhere better); ties are common here."""
    q = np.sort(data.draw(hnp.arrays(np.float32, (1, a, n), elements=small_floats)), axis=-1)
    subset = np.asarray(optimal_subset(jnp.asarray(q), np.ones((1, 1), bool), 1.0, 0.0))
    expected = [not any(np.all(q[0, b] >= q[0, i]) and np.any(q[0, b] > q[0, i])
                        for b in range(a)) for i in range(a)]
    np.testing.assert_array_equal(subset, expected)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.data())
def test_subset_never_empty_and_respects_legal_mask(k, a, n, data):
    q = data.draw(hnp.arrays(np.float32, (k, a, n), elements=small_floats))
    legal = data.draw(hnp.arrays(bool, (a,)))
    rho = data.draw(hnp.arrays(np.float32, (k,), elements=st.sampled_from([0.3, 0.75, 1.0])))
    spec = RewardSpec(tuple(f"o{i}" for i in range(k)))  # all incomparable: one level
    subset = np.asarray(optimal_subset(q, spec.level_mask, rho, np.zeros(k), legal))
    assert subset.any()
    if legal.any():
        assert not (subset & ~legal).any()


def test_dominance_cycle_fallback_keeps_exactly_the_cycle():
    """a <- b <- c <- a is a cycle (one dominator each); d has two dominators (a, b):
    nothing is undominated, and the fallback keeps exactly the fewest-dominator cycle."""
    a, b, c, d = [1.0, 5.0, 9.0], [2.0, 6.0, 7.0], [3.0, 4.0, 8.0], [0.0, 4.0, 8.5]
    q = jnp.array([[a, b, c, d]])
    rho = 2 / 3
    dom = np.asarray(dominance_matrix(q[0], rho, 0.0))  # [dominator, dominated]
    np.testing.assert_array_equal(dom.sum(axis=0), [1, 1, 1, 2])
    assert dom[1, 0] and dom[2, 1] and dom[0, 2]  # b > a, c > b, a > c
    assert dom[0, 3] and dom[1, 3] and not dom[3].any()
    subset = np.asarray(optimal_subset(q, np.ones((1, 1), bool), rho, 0.0))
    np.testing.assert_array_equal(subset, [True, True, True, False])


def _safety_vs_progress(risky_safety: np.ndarray, rho: float, eps_safety: float, rule: str):
    """Action 0: sure 0 safety, progress 0.5; action 1: `risky_safety`, progress 1.5."""
    spec = RewardSpec(("safety", "progress"), ("safety > progress",))
    safety = np.stack([np.zeros_like(risky_safety), risky_safety])
    progress = np.array([0.5, 1.5])[:, None] * np.ones_like(safety)
    q = jnp.asarray(np.stack([safety, progress]), jnp.float32)
    action, subset = subset_greedy_action(q, spec.level_mask, jnp.array([rho, rho]),
                                          jnp.array([eps_safety, 0.0]), rule=rule)
    return int(action), np.asarray(subset)


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.75, 0.9, 1.0])
def test_rare_catastrophic_tail_is_removed(rho):
    """The reference's tail check: a sure 0 beats '0 w.p. 0.95, -1 w.p. 0.05' on safety,
    so the risky action goes despite its higher progress, for every rho."""
    tail = np.where(GRID < 0.05, -1.0, 0.0)
    action, subset = _safety_vs_progress(tail, rho, 0.05, "not_worse")
    np.testing.assert_array_equal(subset, [True, False])
    assert action == 0


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_collision_probability_probe(p):
    """The issue's probe (rho 0.75, eps 0.05): 'collide with probability p' is removed for
    every p under the default rule; the majority rule keeps it while p < rho."""
    risky = np.where(p > GRID, -1.0, 0.0)
    assert _safety_vs_progress(risky, 0.75, 0.05, "not_worse")[1].tolist() == [True, False]
    kept = _safety_vs_progress(risky, 0.75, 0.05, "majority")[1][1]
    assert kept == (p < 0.75)


def test_majority_rule_misses_the_rare_tail():
    """The old rule, pinned as the alternative: a 5% tail is invisible to it, so both
    actions survive the safety level and progress then removes the SAFE action."""
    tail = np.where(GRID < 0.05, -1.0, 0.0)
    action, subset = _safety_vs_progress(tail, 0.75, 0.05, "majority")
    np.testing.assert_array_equal(subset, [False, True])
    assert action == 1


@pytest.mark.parametrize("rule", DOMINANCE_RULES)
def test_differences_within_eps_dominate_neither_way(rule):
    rng = np.random.default_rng(3)
    base = np.sort(rng.normal(size=20))
    noisy = base + rng.uniform(0.01, 0.09, size=20)  # above everywhere, within eps
    q = jnp.asarray(np.stack([base, noisy]), jnp.float32)
    rho = 0.6
    assert not np.asarray(dominance_matrix(q, rho, 0.1, rule)).any()
    assert np.asarray(dominance_matrix(q, rho, 0.0, rule)).any()  # eps is what hides it


@pytest.mark.parametrize("rule", DOMINANCE_RULES)
def test_same_mean_heavier_lower_body_is_removed(rule):
    """Equal means (a mean-based ranking cannot separate them), but the risky action is
    worse on 70% of the levels: both rules remove it."""
    risky = np.where(GRID < 0.7, -1.0, 7.0 / 3.0)
    assert abs(risky.mean()) < 1e-6
    action, subset = _safety_vs_progress(risky, 0.6, 0.1, rule)
    np.testing.assert_array_equal(subset, [True, False])
    assert action == 0


def test_rule_and_rho_validation():
    check_rule("not_worse", [0.3, 1.0])
    check_rule("majority", 0.75)
    with pytest.raises(ValueError, match="rule must be one of"):
        check_rule("mean")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        check_rule("not_worse", 0.0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        check_rule("not_worse", 1.5)
    with pytest.raises(ValueError, match=r"rho > 0\.5"):
        check_rule("majority", [0.9, 0.5])
    with pytest.raises(ValueError, match="rule must be one of"):
        dominance_matrix(jnp.zeros((2, 3)), 0.5, 0.0, "fsd")


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
    safety = [[0.0, 0.0], [0.0, 0.0], [30.0, -10.0]]  # better 0.5 both ways: no dominance
    progress = [[1.0, 1.0], [0.0, 0.0], [5.0, 5.0]]
    comfort = [[0.0, 0.0], [2.0, 2.0], [-9.0, -9.0]]
    q = jnp.array([safety, progress, comfort])
    for tie_break, want in (("lowest_level_mean", 1), ("mean", 2), ("first", 0)):
        action, subset = subset_greedy_action(q, spec.level_mask, 0.5, 0.0, tie_break=tie_break)
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
