"""The agent pattern shared by every learning algorithm.

An agent family exposes `make_agent(config, env, env_params) -> Agent`:

* `init(key) -> state`          the whole training state (params, optimiser,
                                env states, replay, RNG) as one pytree;
* `update(state) -> (state, m)` ONE training iteration (collect + learn),
                                pure and jittable; `m` is a dict of arrays;
* `evaluate(state, key) -> m`   held-out episodes with the greedy policy;
* `num_updates`                 iterations in a full run.

`make_train(agent)` turns that into the DESIGN's `train(key) -> (state,
metrics)` (one lax.scan), so `jax.jit(jax.vmap(train))(keys)` sweeps seeds.
The experiment runner instead calls `run_updates` in equal chunks so it can
checkpoint, resume exactly and show progress between chunks.

Metric conventions (so progress lines, tables and plots can read any agent):
`env_steps` (cumulative env transitions of this seed), `episode_return`
((K,) mean return per objective of episodes finished in the iteration, NaN
when none finished), `episode_length`, `loss`, and `finite` (bool: every loss and
parameter of the iteration is finite; the runner stops a run at the first False).
An agent that may skip learning in an iteration (IQN before `learning_starts`)
reports `learned` (bool) and NaN losses for the skipped iterations, so warm-up
and divergence are told apart by `learned`, not by the loss value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Agent(NamedTuple):
    init: Callable[[jax.Array], Any]
    update: Callable[[Any], tuple[Any, dict[str, jax.Array]]]
    evaluate: Callable[[Any, jax.Array], dict[str, jax.Array]]
    num_updates: int


def all_finite(tree: Any) -> jax.Array:
    """True iff every floating-point leaf of `tree` is finite (bool scalar, jittable)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def run_updates(agent: Agent, state: Any, num: int) -> tuple[Any, dict[str, jax.Array]]:
    """`num` iterations of `agent.update` as one lax.scan (metrics stacked on axis 0)."""

    def body(carry, _):
        return agent.update(carry)

    return jax.lax.scan(body, state, None, length=num)


def make_train(agent: Agent) -> Callable[[jax.Array], tuple[Any, dict[str, jax.Array]]]:
    """`train(key) -> (final_state, metrics per update)`: jit(vmap(train)) over seeds."""

    def train(key: jax.Array):
        return run_updates(agent, agent.init(key), agent.num_updates)

    return train
