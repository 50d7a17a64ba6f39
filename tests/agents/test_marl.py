"""IPPO / MAPPO: every variant runs jitted and vmapped over seeds and reward modes, the
per-agent pieces do what they say, and IPPO learns the known optima of team production."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents.marl import (
    Head,
    MARLConfig,
    apply_per_agent,
    init_per_agent,
    joint_input,
    make_agent,
    with_agent_id,
)
from envs.coopetition import mechanics as M
from envs.coopetition import weights_for
from mo_rl.agent import run_updates

MODES = ("private", "integrated", "cooperative")


def train_modes(agent, modes, seeds=1):
    """jit(vmap(train)) over (mode x seed): one program."""
    W = jnp.repeat(jnp.stack([weights_for(m) for m in modes]), seeds, axis=0)
    keys = jax.random.split(jax.random.key(0), W.shape[0])

    def train(key, w):
        return run_updates(agent, agent.init(key, {"reward_weights": w}), agent.num_updates)

    return jax.jit(jax.vmap(train))(keys, W)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="algo"):
        MARLConfig(algo="qmix")
    with pytest.raises(ValueError, match="discrete_bins"):
        MARLConfig(discrete_bins=1)
    with pytest.raises(ValueError, match="minibatch_size"):
        MARLConfig(num_envs=3, num_steps=10, minibatch_size=7)
    env, p = envs.make("CartPole-v1")
    with pytest.raises(ValueError, match="single-agent"):
        make_agent(MARLConfig(), env, p)


# every option appears once (each case costs ~10 s of compilation on 2 CPU cores)
@pytest.mark.parametrize("algo,share,bins", [("ippo", True, 0), ("mappo", False, 11)])
def test_variants_run_vmapped_over_seeds_and_reward_modes(algo, share, bins):
    env, p = envs.make("GiftExchange-v0")
    cfg = MARLConfig(algo=algo, share_params=share, discrete_bins=bins, total_timesteps=400,
                     num_envs=4, num_steps=100, minibatch_size=100, eval_episodes=2)
    agent = make_agent(cfg, env, p)
    state, m = train_modes(agent, MODES)
    assert m["finite"].shape == (3, 1) and bool(m["finite"].all())
    np.testing.assert_array_equal(m["env_steps"][:, -1], 400)
    assert m["episode_return"].shape == (3, 1, 1)
    assert m["episode_return_per_agent"].shape == (3, 1, 2, 1)
    assert bool(jnp.all(jnp.isfinite(m["episode_return"])))  # one episode per rollout
    # the reward mode lives in the state and shapes what is learnt from: returns differ
    assert len(set(np.round(np.asarray(m["episode_return"][:, -1, 0]), 3))) == 3
    ev = jax.jit(jax.vmap(agent.evaluate))(state, jax.random.split(jax.random.key(1), 3))
    assert ev["episode_return"].shape == (3, 2, 1) and ev["cooperation"].shape == (3,)


def test_agent_ids_and_joint_critic_input():
    obs = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)  # (B, n, d)
    x = with_agent_id(obs)
    assert x.shape == (2, 3, 7)
    np.testing.assert_array_equal(x[1, 2, 4:], [0, 0, 1])
    j = joint_input(obs)
    assert j.shape == (2, 3, 3 * 4 + 3)
    np.testing.assert_array_equal(j[1, 0, :12], obs[1].reshape(-1))  # every agent sees all
    np.testing.assert_array_equal(j[1, 2, :12], obs[1].reshape(-1))


def test_unshared_networks_apply_each_agents_own_params():
    net = Head(2, (8,), "tanh", 1.0)
    params = init_per_agent(net, jax.random.key(0), jnp.zeros((1, 5)), 3, shared=False)
    x = jax.random.normal(jax.random.key(1), (4, 3, 5))
    out = apply_per_agent(net, params, x, shared=False)
    for i in range(3):
        pi = jax.tree.map(lambda a, i=i: a[i], params)
        np.testing.assert_allclose(out[:, i], net.apply(pi, x[:, i]), rtol=1e-6)
    assert isinstance(net, nn.Module)


def test_ippo_learns_team_production_nash_privately_and_full_effort_cooperatively():
    """The TR-3 report's team production (team_payoff option, trust off): the private
    reward's equilibrium is the Nash effort a* = (omega beta / (c n^(2 - beta)))^(1/(1-beta))
    = 34.2 of 50 (rate 0.685); the cooperative reward (team welfare) is maximised at the
    endowment (interior optimum 3,477 > 50). IPPO with a shared Beta policy finds both."""
    env, p = envs.make("TeamProduction-v0", team_payoff=1.0, trust_enabled=False)
    cfg = MARLConfig(total_timesteps=160_000, num_envs=16, num_steps=50, minibatch_size=400,
                     gamma=0.5, lr=1e-3, ent_coef=0.0, reward_scale=0.05, eval_episodes=4)
    agent = make_agent(cfg, env, p)
    state, m = train_modes(agent, ("private", "cooperative"))
    assert bool(m["finite"].all())
    ev = jax.jit(jax.vmap(agent.evaluate))(state, jax.random.split(jax.random.key(1), 2))
    nash = M.nash_effort(25.0, 0.7, 1.0, 4) / 50.0
    private, cooperative = np.asarray(ev["cooperation"])
    assert abs(private - nash) < 0.08, (private, nash)
    assert cooperative > 0.9, cooperative


def test_discrete_action_spaces_of_any_multi_agent_env():
    """A protocol env with Discrete(2) per agent (a repeated prisoner's dilemma): IPPO's
    categorical policy learns to defect, the dominant action (known answer)."""
    from tests.envs.test_pettingzoo_out import MatrixGame

    env = MatrixGame()
    cfg = MARLConfig(total_timesteps=16 * 10 * 30, num_envs=16, num_steps=10,
                     minibatch_size=40, lr=3e-3, gamma=0.5, reward_scale=1.0,
                     normalize_obs=False, eval_episodes=4)
    agent = make_agent(cfg, env, None)
    state, m = jax.jit(jax.vmap(lambda k: run_updates(agent, agent.init(k),
                                                      agent.num_updates)))(
        jax.random.split(jax.random.key(0), 2))
    assert bool(m["finite"].all())
    ev = jax.jit(jax.vmap(agent.evaluate))(state, jax.random.split(jax.random.key(1), 2))
    # mutual defection pays 1 per step to each agent over 10 steps
    np.testing.assert_allclose(ev["episode_return"], 10.0)
