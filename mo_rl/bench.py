"""Env-step throughput: one timing harness for every scripts/bench_*.py that times an env.

jit(scan(vmap(env.step))) over `t_len` steps from a batch of reset states, with actions
from `act(key, batch)`; compile time is measured apart (AOT lower + compile), one warm-up
call, then calls repeat for at least `seconds` (and twice at least). A scalar that depends
on every reward and observation is returned from the scan, so XLA cannot drop either as
dead code (`touch`: how the observation becomes that scalar).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def mean_touch(obs: Any) -> jax.Array:
    """Default `touch`: the float mean of every observation leaf."""
    return sum((leaf.astype(jnp.float32).mean() for leaf in jax.tree.leaves(obs)),
               jnp.float32(0))


def env_steps_per_s(env: Any, params: Any, batch: int, t_len: int,
                    act: Callable[[jax.Array, int], Any], seconds: float = 2.0,
                    touch: Callable[[Any], jax.Array] = mean_touch) -> dict[str, float]:
    """{"steps_per_s", "compile_s", "scan_len"} of `env` (auto-resetting) at one batch size."""

    def run(key, state):
        def body(st, k):
            ka, ks = jax.random.split(k)
            r = jax.vmap(env.step, (0, 0, 0, None))(jax.random.split(ks, batch), st,
                                                    act(ka, batch), params)
            return r.state, r.reward.sum() + touch(r.obs)

        st, rs = jax.lax.scan(body, state, jax.random.split(key, t_len))
        return st, rs.sum()

    _, state = jax.jit(jax.vmap(env.reset, (0, None)))(
        jax.random.split(jax.random.PRNGKey(0), batch), params)
    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(jax.random.PRNGKey(1), state).compile()
    compile_s = time.perf_counter() - t0
    st, tot = compiled(jax.random.PRNGKey(1), state)  # warm-up
    jax.block_until_ready(tot)
    reps, t0 = 0, time.perf_counter()
    while reps < 2 or time.perf_counter() - t0 < seconds:
        st, tot = compiled(jax.random.PRNGKey(2 + reps), st)
        jax.block_until_ready(tot)
        reps += 1
    dt = time.perf_counter() - t0
    return {"steps_per_s": batch * t_len * reps / dt, "compile_s": compile_s,
            "scan_len": t_len}
