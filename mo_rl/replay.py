"""Device-resident, jittable replay for off-policy agents (n-step windows).

Built on flashbax's trajectory buffer (not hand-written): it keeps one time
axis per env (shape (num_envs, capacity // num_envs, ...)), adds a block of E
steps from all envs at once and samples windows of n CONSECUTIVE transitions
of one env, which is exactly what n-step returns need (the flat/item buffers
only give single transitions or (t, t+1) pairs). Its state is a plain pytree
of arrays and add/sample are pure jnp, so it works inside lax.scan and under
jit(vmap) over seeds (tests/mo_rl/test_replay.py checks both).

Each stored step is a full transition with its own `next_obs` (the true final
observation at an episode end, from AutoReset's info["final_obs"]), so a
window that crosses an episode end is cut there by `mo_rl.quantile.nstep_return`
and bootstraps from the right observation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flashbax as fbx
import jax
import jax.numpy as jnp


class Transition(NamedTuple):
    obs: Any
    action: jax.Array  # int32 ()
    reward: jax.Array  # (K,) vector reward, as the env returned it
    terminated: jax.Array  # bool ()
    truncated: jax.Array  # bool ()
    next_obs: Any
    mask: Any = None  # optional per-transition extras, e.g. ensemble bootstrap masks (M,)
    discard: Any = None  # bool (): not a real transition (info["discard"], mo_rl.gae)


class NStepReplay(NamedTuple):
    """init(example_transition) -> state; add(state, batch[B, E]) -> state;
    sample(state, key) -> Transition with leading axes (batch_size, n_step)."""

    init: Any
    add: Any
    sample: Any
    can_sample: Any
    capacity: int


def make_nstep_replay(capacity: int, num_envs: int, batch_size: int, n_step: int,
                      add_length: int) -> NStepReplay:
    """A buffer of `capacity` transitions in total (capacity // num_envs per env).

    add_length: steps per env added at once (E); the per-env time axis must hold
    at least max(n_step, add_length) steps.
    """
    length = capacity // num_envs
    if length < max(n_step, add_length):
        raise ValueError(
            f"replay capacity {capacity} over {num_envs} envs leaves {length} steps per env; "
            f"need at least max(n_step={n_step}, steps_per_update={add_length})."
        )
    buf = fbx.make_trajectory_buffer(
        add_batch_size=num_envs,
        sample_batch_size=batch_size,
        sample_sequence_length=n_step,
        period=1,
        min_length_time_axis=n_step,
        max_length_time_axis=length,
    )

    def sample(state, key: jax.Array) -> Transition:
        return buf.sample(state, key).experience

    return NStepReplay(init=buf.init, add=buf.add, sample=sample, can_sample=buf.can_sample,
                       capacity=length * num_envs)


def time_major_to_batch(batch: Transition) -> Transition:
    """Transitions collected by lax.scan (E, B, ...) -> the buffer's (B, E, ...)."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch)
