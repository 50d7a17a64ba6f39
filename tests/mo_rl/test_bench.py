"""The shared env-step timing harness (mo_rl.bench) used by the bench scripts."""

import jax

from envs.classic import CartPole
from mo_rl.bench import env_steps_per_s
from mo_rl.wrappers import AutoReset


def test_env_steps_per_s_runs_the_scanned_step():
    env = AutoReset(CartPole())
    params = env.default_params
    space = env.action_space(params)
    calls = []

    def act(key, n):
        calls.append(n)  # traced once, with the batch size
        return jax.vmap(space.sample)(jax.random.split(key, n))

    r = env_steps_per_s(env, params, batch=4, t_len=10, act=act, seconds=0.0)
    assert r["scan_len"] == 10 and r["steps_per_s"] > 0 and r["compile_s"] > 0
    assert calls == [4]
