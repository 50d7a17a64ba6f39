"""The PettingZoo exporters pass PettingZoo's own API tests for every coopetition game."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test

import envs
from envs.adapters.pettingzoo_out import aec_env, parallel_env
from envs.coopetition import GAMES

SMALL = {"ApacheProject-v0": {"phase": "emergence"}}  # 8 agents instead of 40: same code


@pytest.mark.parametrize("name", sorted(GAMES))
def test_parallel_api(name):
    env, p = envs.make(name, **SMALL.get(name, {}))
    par = parallel_env(env, p)
    parallel_api_test(par, num_cycles=120)
    e = np.asarray(p.endowment)
    for i, a in enumerate(par.possible_agents):
        space = par.action_space(a)
        assert space.shape == (1,) and space.low[0] == 0 and space.high[0] == e[i]


@pytest.mark.parametrize("name", sorted(GAMES))
def test_aec_api(name):
    env, p = envs.make(name, **SMALL.get(name, {}))
    api_test(aec_env(env, p), num_cycles=60)


def test_actions_outside_the_space_raise_a_clear_error():
    env, p = envs.make("PartnerHoldUp-v0")
    par = parallel_env(env, p)
    par.reset(seed=0)
    with pytest.raises(ValueError, match=r"agent_1: action \[90.0\] is outside"):
        par.step({"agent_0": np.array([10.0]), "agent_1": np.array([90.0])})  # e_1 = 80
    with pytest.raises(ValueError, match="no action for"):
        par.step({"agent_0": np.array([10.0])})
    with pytest.raises(ValueError, match="shape"):
        par.step({"agent_0": np.array([1.0, 2.0]), "agent_1": np.array([1.0])})
    aec = aec_env(env, p)
    aec.reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        aec.step(np.array([-1.0], np.float32))


def test_parallel_matches_the_protocol_env_and_seeds_repeat():
    env, p = envs.make("GiftExchange-v0", reward_mode="cooperative")
    runs = []
    for _ in range(2):
        par = parallel_env(env, p)
        par.reset(seed=3)
        rs = []
        for t in range(5):
            _, r, _, _, info = par.step({a: np.array([10.0 * (t + 1)], np.float32)
                                         for a in par.agents})
            rs.append([r[a] for a in par.possible_agents])
            assert info["agent_0"]["reward_vector"].shape == (1,)
        runs.append(rs)
    assert runs[0] == runs[1] and np.all(np.isfinite(runs[0]))
    # the same actions through the protocol env give the same rewards
    import jax
    import jax.numpy as jnp

    _, s = env.reset(jax.random.key(0), p)
    for t in range(5):
        res = env.step(jax.random.key(0), s, jnp.full((2, 1), 10.0 * (t + 1)), p)
        s = res.state
        np.testing.assert_allclose(runs[0][t], res.reward[:, 0], rtol=1e-6)


def test_single_agent_env_is_refused():
    env, p = envs.make("CartPole-v1")
    with pytest.raises(ValueError, match="single-agent"):
        parallel_env(env, p)
