"""The PettingZoo exporters pass PettingZoo's own API tests for every coopetition game."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test

import envs
from envs.adapters.pettingzoo_out import aec_env, parallel_env
from envs.coopetition import GAMES
from mo_rl.env import StepResult
from mo_rl.reward import RewardSpec
from mo_rl.spaces import Box, Discrete

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
    _, s = env.reset(jax.random.key(0), p)
    for t in range(5):
        res = env.step(jax.random.key(0), s, jnp.full((2, 1), 10.0 * (t + 1)), p)
        s = res.state
        np.testing.assert_allclose(runs[0][t], res.reward[:, 0], rtol=1e-6)


def test_single_agent_env_is_refused():
    env, p = envs.make("CartPole-v1")
    with pytest.raises(ValueError, match="single-agent"):
        parallel_env(env, p)


class MatrixGame:
    """A repeated 2-player prisoner's dilemma with Discrete(2) actions (1 = cooperate):
    a protocol env that is not a coopetition game, for the exporters and agents.marl."""

    reward_spec = RewardSpec(("payoff",))
    num_agents = 2
    observes_state = False
    name = "MatrixGame"
    default_params = None
    unwrapped = property(lambda self: self)
    # row player's payoff for (own, other): defect/defect 1, sucker 0, temptation 3, both 2
    PAYOFF = ((1.0, 3.0), (0.0, 2.0))

    def reset(self, key, params):
        return jnp.zeros((2, 2)), (jnp.zeros(2, jnp.int32), jnp.int32(0))

    def step(self, key, state, action, params):
        a = jnp.asarray(action, jnp.int32)
        table = jnp.array(self.PAYOFF)
        r = jnp.stack([table[a[0], a[1]], table[a[1], a[0]]])[:, None]
        obs = jnp.stack([jnp.stack([a[0], a[1]]), jnp.stack([a[1], a[0]])]).astype(jnp.float32)
        t = state[1] + 1
        return StepResult(obs, (a, t), r, jnp.array(False), t >= 10, {})

    def observation_space(self, params):
        return Box(0.0, 1.0, (2, 2))

    def action_space(self, params):
        return Discrete(2, shape=(2,))


def test_any_multi_agent_protocol_env_exports_with_discrete_actions():
    par = parallel_env(MatrixGame())
    assert par.action_space("agent_0").n == 2
    parallel_api_test(par, num_cycles=30)
    api_test(aec_env(MatrixGame()), num_cycles=30)
    par.reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        par.step({"agent_0": 2, "agent_1": 0})
    _, r, *_ = par.step({"agent_0": 1, "agent_1": 0})
    assert r == {"agent_0": 0.0, "agent_1": 3.0}
