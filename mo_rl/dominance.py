"""Quantile Dominance and optimal-subset extraction over preordered objectives.

Definitions (shared/reference/pr_iqn.md; the paper's exact formulas are not
public, these are the project's). For objective k, quantiles q_a, q_b at the
SAME sampled fractions tau_1..tau_N and a tolerance eps_k:

    better_k(b, a)    = (1/N) sum_i 1[q_b(tau_i) >  q_a(tau_i) + eps_k]
    not_worse_k(b, a) = (1/N) sum_i 1[q_b(tau_i) >= q_a(tau_i) - eps_k]

* rule "not_worse" (default): b dominates a under k iff
  not_worse_k(b, a) >= rho_k AND better_k(b, a) > better_k(a, b).
  rho = 1, eps = 0 is weak first-order stochastic dominance on the sampled
  quantiles (nowhere worse, somewhere better); rho < 1 forgives b for being
  worse on up to a (1 - rho) fraction of the levels (noise in learned
  quantiles). Any rho in (0, 1] is valid; the second clause keeps the relation
  antisymmetric. A sure 0 dominates "0 w.p. 0.95, -1 w.p. 0.05" for every rho:
  a rare catastrophic tail removes an action, which is the point of putting
  safety first.
* rule "majority" (the project's first definition, kept for comparison):
  b dominates a iff better_k(b, a) >= rho_k (rho > 0.5). It can never remove an
  action whose catastrophe has probability below rho.
* Within a priority level, b dominates a iff b dominates a on at least one
  objective of the level and a dominates b on none of them (Pareto).
* A_0 = legal actions; A_l = members of A_{l-1} that no member of A_{l-1}
  dominates at level l. If that is empty (a dominance cycle: QD need not be
  transitive), keep the members with the fewest dominators, so no A_l is ever
  empty. (If no action is legal, every action is treated as legal rather than
  returning an empty set.)

All functions work on ONE state with arrays; vmap them for batches. Quantiles
are assumed "higher is better": orient minimised components first
(RewardSpec.oriented).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

TIE_BREAKS = ("lowest_level_mean", "mean", "first")
DOMINANCE_RULES = ("not_worse", "majority")


def quantile_dominance(q_a: jax.Array, q_b: jax.Array, eps: jax.Array | float) -> jax.Array:
    """better(a, b) over the last axis: the fraction of quantiles where a beats b by > eps."""
    return jnp.mean((q_a > q_b + eps).astype(jnp.float32), axis=-1)


def not_worse(q_a: jax.Array, q_b: jax.Array, eps: jax.Array | float) -> jax.Array:
    """not_worse(a, b) over the last axis: the fraction of quantiles where a >= b - eps."""
    return jnp.mean((q_a >= q_b - eps).astype(jnp.float32), axis=-1)


def check_rule(rule: str, rho: jax.Array | float | None = None) -> None:
    """Raise ValueError for an unknown rule or a rho (concrete values) the rule cannot use."""
    if rule not in DOMINANCE_RULES:
        raise ValueError(f"dominance rule must be one of {DOMINANCE_RULES}; got {rule!r}.")
    if rho is None:
        return
    r = np.asarray(rho, np.float64)
    if np.any(r <= 0) or np.any(r > 1):
        raise ValueError(f"rho must lie in (0, 1]; got {r.tolist()}.")
    if rule == "majority" and np.any(r <= 0.5):
        raise ValueError(f"the majority rule needs rho > 0.5 (else two actions can dominate "
                         f"each other); got {r.tolist()}. Use rule 'not_worse' for rho <= 0.5.")


def dominance_matrix(q: jax.Array, rho: jax.Array | float, eps: jax.Array | float,
                     rule: str = "not_worse") -> jax.Array:
    """q: (A, N) quantiles of one objective -> d (A, A) with d[b, a] = b dominates a."""
    check_rule(rule)
    qb, qa = q[:, None, :], q[None, :, :]
    better = quantile_dominance(qb, qa, eps)  # [b, a] = better(b, a)
    # the 1e-6 slack: k / N must reach rho when rho is exactly k / N in float32
    if rule == "majority":
        return better >= rho - 1e-6
    return (not_worse(qb, qa, eps) >= rho - 1e-6) & (better > better.T)


def optimal_subset(
    quantiles: jax.Array,
    level_mask: jax.Array,
    rho: jax.Array,
    eps: jax.Array,
    legal: jax.Array | None = None,
    rule: str = "not_worse",
) -> jax.Array:
    """Bool mask (A,) of the optimal action subset.

    quantiles: (K, A, N) per objective, action and quantile (same taus for all);
    level_mask: (L, K) bool, level 0 = highest priority (RewardSpec.level_mask);
    rho, eps: (K,) dominance threshold and tolerance per objective;
    legal: (A,) bool mask of legal actions (None = all legal);
    rule: "not_worse" (default) or "majority" (see the module docstring).
    """
    k, a, _ = quantiles.shape
    rho = jnp.broadcast_to(jnp.asarray(rho, jnp.float32), (k,))
    eps = jnp.broadcast_to(jnp.asarray(eps, jnp.float32), (k,))
    level_mask = jnp.asarray(level_mask, bool)
    dom = jax.vmap(lambda q, r, e: dominance_matrix(q, r, e, rule))(quantiles, rho, eps)
    # dom: (K, A, A) with [k, b, a] = b dominates a under objective k
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
    rule: str = "not_worse",
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
    subset = optimal_subset(quantiles, level_mask, rho, eps, legal, rule)
    means = jnp.mean(quantiles, axis=-1)  # (K, A)
    if tie_break == "lowest_level_mean":
        score = jnp.sum(means * jnp.asarray(level_mask, bool)[-1][:, None], axis=0)
    elif tie_break == "mean":
        score = jnp.sum(means, axis=0)
    else:
        score = -jnp.arange(subset.shape[0], dtype=jnp.float32)
    action = jnp.argmax(jnp.where(subset, score, -jnp.inf))
    return action, subset
