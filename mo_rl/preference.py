"""Hierarchical (decision-tree) preferences over ranked reward factors and the
Bradley-Terry loss (HERON; shared/reference/heron.md).

A user ranks factors f_1 (most important) .. f_K instead of weighting them.
Two samples i, j are compared level by level: at the first factor where
sign_k * (f_k(i) - f_k(j)) exceeds the margin m_k in either direction, that
sample is preferred; if no level decides, the pair is skipped (no tie label).
A reward model trained with the Bradley-Terry loss on the decided pairs then
gives the policy its reward. Everything here is batched and jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mo_rl.reward import RewardSpec


def ranking_from_spec(spec: RewardSpec) -> np.ndarray:
    """Factor order (most important first) from a RewardSpec whose preorder is total."""
    tied = [tuple(spec.names[i] for i in lvl) for lvl in spec.levels if len(lvl) > 1]
    if tied:
        raise ValueError(
            f"HERON needs a strict ranking of the factors, but {tied} share a priority level; "
            "add relations so that every level holds exactly one component."
        )
    return np.array([lvl[0] for lvl in spec.levels], np.int32)


def margins(factors: jax.Array, sigma: jax.Array | float) -> jax.Array:
    """m_k = sigma_k * std of factor k over the batch axis 0 (factors (B, K))."""
    return jnp.asarray(sigma) * jnp.std(factors, axis=0)


def hierarchical_preference(
    f_i: jax.Array, f_j: jax.Array, order: jax.Array, sign: jax.Array, margin: jax.Array
) -> jax.Array:
    """+1 if i is preferred, -1 if j is, 0 if no level decides (skip the pair).

    f_i, f_j: (..., K) factors; order: (K,) ranking (most important first);
    sign: (K,) +1 where higher is better, -1 where lower is better; margin: (K,).
    """
    diff = (jnp.take(f_i, order, axis=-1) - jnp.take(f_j, order, axis=-1)) * jnp.take(
        jnp.asarray(sign, jnp.float32), order)
    m = jnp.take(jnp.asarray(margin, jnp.float32), order)
    decided = jnp.abs(diff) > m
    first = jnp.argmax(decided, axis=-1)
    verdict = jnp.sign(jnp.take_along_axis(diff, first[..., None], axis=-1)[..., 0])
    return jnp.where(jnp.any(decided, axis=-1), verdict, 0.0).astype(jnp.int32)


def bradley_terry_loss(r_i: jax.Array, r_j: jax.Array, label: jax.Array
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean -log sigmoid(R_pref - R_other) over decided pairs (label != 0).

    Returns (loss, {"accuracy", "decided"}); accuracy counts decided pairs whose
    predicted order matches the label. With no decided pair the loss is 0.
    """
    label = jnp.asarray(label, jnp.float32)
    decided = label != 0
    n = jnp.maximum(jnp.sum(decided), 1)
    logits = label * (r_i - r_j)
    loss = jnp.sum(jnp.where(decided, -jax.nn.log_sigmoid(logits), 0.0)) / n
    accuracy = jnp.sum(jnp.where(decided, logits > 0, False)) / n
    return loss, {"accuracy": accuracy, "decided": jnp.mean(decided)}
