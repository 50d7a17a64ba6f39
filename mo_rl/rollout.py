"""Held-out evaluation episodes, fully jitted.

`evaluate_policy` runs `num_episodes` independent episodes (no auto-reset)
until each one ends or hits `max_steps`, with one `lax.while_loop` per
episode; under `vmap` (the default) the loop runs until the last episode
ends and finished ones are frozen by the batched select, so the cost is that
of one scan over the longest episode. Host (io_callback) envs cannot be
vmapped: pass `sequential=True` to run the episodes one after another with
`lax.map` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mo_rl.env import Env

PolicyFn = Callable[[Any, jax.Array], Any]


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over axis 0 of the rows where mask holds; NaN when none does."""
    m = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
    total = jnp.sum(jnp.where(m, x, 0.0), axis=0)
    return total / jnp.where(jnp.sum(mask) > 0, jnp.sum(mask), jnp.nan)


def evaluate_policy(
    env: Env,
    params: Any,
    policy_fn: PolicyFn,
    key: jax.Array,
    num_episodes: int,
    max_steps: int,
    sequential: bool = False,
) -> dict[str, Any]:
    """Run episodes of `policy_fn(obs, key) -> action` and return
    returns (E, K) undiscounted per-episode return vectors ((E, A, K) multi-agent),
    lengths (E,), finished (E,) bool (ended by terminated|truncated before max_steps),
    mean_return (K,) over all episodes (unfinished ones count with their partial return),
    episode_metrics dict name -> mean of info["episode_metrics"][name] at the final step
    over finished episodes (NaN when none finished; {} if the env has none).
    """
    reward_shape = (len(env.reward_spec),)
    if env.num_agents is not None:
        reward_shape = (env.num_agents, *reward_shape)

    def episode(ep_key):
        k_reset, k_loop = jax.random.split(ep_key)
        obs, state = env.reset(k_reset, params)
        # discover the info structure (shapes only) to size the metrics carry
        info_shape = jax.eval_shape(
            lambda: env.step(k_loop, state, policy_fn(obs, k_loop), params).info
        )
        metrics0 = jax.tree.map(
            lambda s: jnp.zeros(s.shape, jnp.float32), info_shape.get("episode_metrics", {})
        )
        carry = (
            obs,
            state,
            k_loop,
            jnp.array(False),
            jnp.int32(0),
            jnp.zeros(reward_shape, jnp.float32),
            metrics0,
        )

        def cond(c):
            return (~c[3]) & (c[4] < max_steps)

        def body(c):
            obs, state, k, _, t, ret, _ = c
            k, k_pol, k_step = jax.random.split(k, 3)
            res = env.step(k_step, state, policy_fn(obs, k_pol), params)
            done = jnp.logical_or(res.terminated, res.truncated)
            metrics = jax.tree.map(
                lambda x: jnp.asarray(x, jnp.float32), res.info.get("episode_metrics", {})
            )
            return (
                res.obs,
                res.state,
                k,
                done,
                t + 1,
                ret + res.reward.astype(jnp.float32),
                metrics,
            )

        _, _, _, done, t, ret, metrics = jax.lax.while_loop(cond, body, carry)
        return ret, t, done, metrics

    keys = jax.random.split(key, num_episodes)
    if sequential or getattr(env.unwrapped, "is_host_env", False):  # host envs: no vmap
        returns, lengths, finished, metrics = jax.lax.map(episode, keys)
    else:
        returns, lengths, finished, metrics = jax.vmap(episode)(keys)
    return {
        "returns": returns,
        "lengths": lengths,
        "finished": finished,
        "mean_return": jnp.mean(returns, axis=0),
        "episode_metrics": jax.tree.map(lambda m: _masked_mean(m, finished), metrics),
    }
