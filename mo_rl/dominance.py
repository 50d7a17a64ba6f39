"""Quantile Dominance and optimal-subset extraction over preordered objectives.

Definitions (shared/reference/pr_iqn.md; the paper's exact formulas are not
public, these are the project's):

* QD_k(a, b) = (1/N) sum_i 1[q_a(tau_i) > q_b(tau_i) + eps_k]: the fraction of
  quantile levels (the SAME sampled fractions for both actions) at which a
  beats b by more than eps_k. a dominates b under k iff QD_k(a, b) >= rho_k.
  rho = 1, eps = 0 is (strict) first-order stochastic dominance on the
  sampled quantiles.
* Within a priority level, b dominates a iff b dominates a on at least one
  objective of the level and a dominates b on none of them (Pareto).
* A_0 = legal actions; A_l = members of A_{l-1} that no member of A_{l-1}
  dominates at level l. If that is empty (a dominance cycle), keep the members
  with the fewest dominators, so no A_l is ever empty. (If no action is legal,
  every action is treated as legal rather than returning an empty set.)

What QD can and cannot see: with rho > 0.5, b removes a only if b beats a at
MORE than half of the quantile levels. A rare catastrophic tail (mass below
rho) is therefore invisible on its own: an action that is as good in the body
and worse only in a 5% tail is NOT dominated (and with equal means it is
better in the body, so it may even dominate the safe action). An action is
removed when its distribution is worse over at least a rho-fraction of the
levels, e.g. safety -1 w.p. 0.7 / +7/3 w.p. 0.3 against a sure 0: equal
means, so a mean-based ranking cannot separate them, yet QD (rho <= 0.7)
removes it. tests/mo_rl/test_dominance.py pins both facts.

All functions work on ONE state with arrays; vmap them for batches. Quantiles
are assumed "higher is better": orient minimised components first
(RewardSpec.oriented).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

TIE_BREAKS = ("lowest_level_mean", "mean", "first")


def quantile_dominance(q_a: jax.Array, q_b: jax.Array, eps: jax.Array | float) -> jax.Array:
    """QD(a, b) over the last axis: the fraction of quantiles where a beats b by > eps."""
    return jnp.mean((q_a > q_b + eps).astype(jnp.float32), axis=-1)


def dominance_matrix(q: jax.Array, rho: jax.Array | float, eps: jax.Array | float) -> jax.Array:
    """q: (A, N) quantiles of one objective -> d (A, A) with d[b, a] = b dominates a."""
    qd = quantile_dominance(q[:, None, :], q[None, :, :], eps)
    return qd >= rho


def optimal_subset(
    quantiles: jax.Array,
    level_mask: jax.Array,
    rho: jax.Array,
    eps: jax.Array,
    legal: jax.Array | None = None,
) -> jax.Array:
    """Bool mask (A,) of the optimal action subset.

    quantiles: (K, A, N) per objective, action and quantile (same taus for all);
    level_mask: (L, K) bool, level 0 = highest priority (RewardSpec.level_mask);
    rho, eps: (K,) dominance threshold and tolerance per objective;
    legal: (A,) bool mask of legal actions (None = all legal).
    """
    k, a, _ = quantiles.shape
    rho = jnp.broadcast_to(jnp.asarray(rho, jnp.float32), (k,))
    eps = jnp.broadcast_to(jnp.asarray(eps, jnp.float32), (k,))
    level_mask = jnp.asarray(level_mask, bool)
    dom = jax.vmap(dominance_matrix)(quantiles, rho, eps)  # (K, A, A): [k, b, a]
    legal = jnp.ones((a,), bool) if legal is None else jnp.asarray(legal, bool)
    legal = jnp.where(jnp.any(legal), legal, True)

    def level_step(current: jax.Array, in_level: jax.Array) -> tuple[jax.Array, None]:
        any_dom = jnp.any(dom & in_level[:, None, None], axis=0)  # [b, a]
        pareto = any_dom & ~any_dom.T & current[:, None]  # b in current dominates a
        dominators = jnp.sum(pareto, axis=0)
        undominated = current & (dominators == 0)
        fewest = jnp.min(jnp.where(current, dominators, a + 1))
        fallback = current & (dominators == fewest)
        return jnp.where(jnp.any(undominated), undominated, fallback), None

    subset, _ = jax.lax.scan(level_step, legal, level_mask)
    return subset


def subset_greedy_action(
    quantiles: jax.Array,
    level_mask: jax.Array,
    rho: jax.Array,
    eps: jax.Array,
    legal: jax.Array | None = None,
    tie_break: str = "lowest_level_mean",
) -> tuple[jax.Array, jax.Array]:
    """(greedy action, subset mask) for one state.

    tie_break picks inside the subset:
    * "lowest_level_mean" (default): highest sum of means over the objectives of
      the LOWEST-priority level; the higher levels were settled by dominance, so
      noise in their means must not override the lower objectives.
    * "mean": highest sum of means over all objectives.
    * "first": the lowest action index.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}; got {tie_break!r}.")
    subset = optimal_subset(quantiles, level_mask, rho, eps, legal)
    means = jnp.mean(quantiles, axis=-1)  # (K, A)
    if tie_break == "lowest_level_mean":
        score = jnp.sum(means * jnp.asarray(level_mask, bool)[-1][:, None], axis=0)
    elif tie_break == "mean":
        score = jnp.sum(means, axis=0)
    else:
        score = -jnp.arange(subset.shape[0], dtype=jnp.float32)
    action = jnp.argmax(jnp.where(subset, score, -jnp.inf))
    return action, subset
