"""Generalised advantage estimation that tells termination from truncation.

rlax.truncated_generalized_advantage_estimation takes one discount per step,
so it cannot bootstrap a truncated step from the *final* observation of the
finished episode while cutting the trace there; that is why this is written
out here. Shared by PPO, HERON and MARL.

For step t of a rollout (time on axis 0):

    delta_t = r_t + gamma * (1 - terminated_t) * next_value_t - value_t
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},  done = terminated | truncated

where next_value_t is V(final observation of step t) when the episode ended at
t (only used if it was truncated) and V(obs_{t+1}) otherwise; see
`next_values`. Rewards and values may carry trailing axes beyond the done
flags (e.g. an agent axis or K objectives); the flags broadcast over them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _expand(flag: jax.Array, like: jax.Array) -> jax.Array:
    """Append trailing unit axes so per-step flags broadcast against `like`."""
    flag = jnp.asarray(flag, like.dtype)
    return flag.reshape(flag.shape + (1,) * (like.ndim - flag.ndim))


def next_values(values: jax.Array, last_value: jax.Array, final_values: jax.Array,
                done: jax.Array) -> jax.Array:
    """V of the state after each step: V(obs_{t+1}) inside an episode, V(final
    obs of step t) where the episode ended at t (auto-reset replaced obs_{t+1}).

    values [T, ...] are V(obs_t), last_value [...] is V(obs_T) after the rollout,
    final_values [T, ...] are V(info["final_obs"]_t).
    """
    shifted = jnp.concatenate([values[1:], last_value[None]], axis=0)
    return jnp.where(_expand(done, values) > 0, final_values, shifted)


def gae(rewards: jax.Array, values: jax.Array, next_value: jax.Array,
        terminated: jax.Array, truncated: jax.Array, gamma: float, lam: float,
        unroll: int = 16, discard: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Advantages and value targets (advantages + values), both shaped like rewards.

    `discard` [T, ...] marks steps that are not real transitions (info["discard"], e.g. a
    live simulator lost mid-step): their advantage is 0 and their value target their own
    value, so they teach nothing, and the step before them is cut there and bootstraps
    from V(obs_t), the last real observation, as a truncation would.
    """
    term = _expand(terminated, rewards)
    done = jnp.maximum(term, _expand(truncated, rewards))
    deltas = rewards + gamma * (1.0 - term) * next_value - values
    decay = gamma * lam * (1.0 - done)
    if discard is not None:
        keep = 1.0 - _expand(discard, rewards)
        deltas, decay = deltas * keep, decay * keep

    def step(carry, x):
        delta, d = x
        adv = delta + d * carry
        return adv, adv

    _, adv = jax.lax.scan(step, jnp.zeros_like(rewards[0]), (deltas, decay),
                          reverse=True, unroll=unroll)
    return adv, adv + values


__all__ = ["gae", "next_values"]
