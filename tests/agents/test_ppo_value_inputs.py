"""CaRL's network layout in agents.ppo (issue 18, item 4): MLP policy / value heads and
value-only inputs that reach the critic and never the actor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import mo_rl  # noqa: F401  (XLA flags first)
from agents.ppo import (
    ActorCritic,
    PPOConfig,
    make_agent,
    split_value_inputs,
    value_head_input,
)
from mo_rl.agent import make_train
from mo_rl.env import VALUE_INPUTS, Env, StepResult
from mo_rl.reward import RewardSpec
from mo_rl.spaces import Box, Dict, Discrete


# ---- a toy env whose value only the value-only input reveals ---------------------------
@struct.dataclass
class _T:
    t: jax.Array


class Countdown(Env):
    """Episodes of `horizon` steps, reward 1 per step whatever the action. The policy's
    observation is constant; VALUE_INPUTS holds the share of the episode left, so only a
    critic that reads it can predict the return (sum of gamma^k over the steps left)."""

    reward_spec = RewardSpec(names=("reward",), low=(1.0,), high=(1.0,))

    def __init__(self, horizon: int = 8, value_inputs: bool = True):
        self.horizon, self.value_inputs = horizon, value_inputs

    @property
    def default_params(self):
        return None

    def _obs(self, t):
        obs = {"obs": jnp.ones(2, jnp.float32)}
        if self.value_inputs:
            obs[VALUE_INPUTS] = jnp.stack([(self.horizon - t) / self.horizon]).astype(
                jnp.float32)
        return obs

    def reset(self, key, params):
        return self._obs(jnp.int32(0)), _T(jnp.int32(0))

    def step(self, key, state, action, params):
        t = state.t + 1
        return StepResult(self._obs(t), _T(t), jnp.ones(1, jnp.float32), t >= self.horizon,
                          jnp.bool_(False), {})

    def observation_space(self, params):
        spaces = {"obs": Box(1.0, 1.0, (2,))}
        if self.value_inputs:
            spaces[VALUE_INPUTS] = Box(0.0, 1.0, (1,))
        return Dict(spaces)

    def action_space(self, params):
        return Discrete(2)


# ---- pure pieces --------------------------------------------------------------------------
def test_split_value_inputs_and_head_input():
    obs = {"bev": jnp.zeros((4, 4, 2), jnp.uint8), "measurements": jnp.ones(3),
           VALUE_INPUTS: jnp.array([0.5, 2.0])}
    rest, vin = split_value_inputs(obs)
    assert set(rest) == {"bev", "measurements"} and VALUE_INPUTS in obs  # input untouched
    np.testing.assert_array_equal(vin, [0.5, 2.0])
    flat = jnp.arange(3.0)
    assert split_value_inputs(flat)[0] is flat and split_value_inputs(flat)[1] is None
    assert split_value_inputs({"a": flat})[1] is None
    np.testing.assert_array_equal(value_head_input(jnp.array([[1.0, 2.0]]), jnp.array([[3.0]])),
                                  [[1.0, 2.0, 3.0]])
    assert value_head_input(flat, None) is flat


# ---- heads: shapes and parameter counts ------------------------------------------------------
def _params(**kw):
    net = ActorCritic(num_outputs=4, leaf_ndims=(1,), hidden=(8,), activation="relu", **kw)
    obs = {"obs": jnp.zeros(5), VALUE_INPUTS: jnp.zeros(3)}
    return net, net.init(jax.random.key(0), obs), obs


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_mlp_heads_shapes_and_parameter_counts_by_hand():
    net, params, obs = _params(shared_torso=True, layer_norm=True,
                               policy_head_hidden=(16, 16), value_head_hidden=(16,))
    p = params["params"]
    # extractor: Dense 5 -> 8 + LayerNorm(8)
    assert _count(p["torso"]) == 5 * 8 + 8 + 2 * 8
    # policy head: 8 -> 16 -> 16 (each + LayerNorm) -> 4 outputs
    assert p["policy_mlp_0"]["kernel"].shape == (8, 16)
    assert p["policy_mlp_1"]["kernel"].shape == (16, 16)
    assert p["actor_head"]["kernel"].shape == (16, 4)
    assert _count({k: v for k, v in p.items() if k.startswith("policy_")}) == (
        (8 * 16 + 16) + 2 * 16 + (16 * 16 + 16) + 2 * 16)
    # value head: features (8) + value inputs (3) -> 16 (+ LayerNorm) -> 1
    assert p["value_mlp_0"]["kernel"].shape == (8 + 3, 16)
    assert p["critic_head"]["kernel"].shape == (16, 1)
    assert _count({k: v for k, v in p.items() if k.startswith("value_")}) == (
        11 * 16 + 16 + 2 * 16)
    assert "critic_torso" not in p
    raw, value = net.apply(params, jax.tree.map(lambda x: jnp.stack([x, x, x]), obs))
    assert raw.shape == (3, 4) and value.shape == (3,)


def test_default_heads_are_the_earlier_single_dense_layers():
    """() head sizes: exactly the earlier parameter tree (checkpoints stay loadable)."""
    net = ActorCritic(num_outputs=4, leaf_ndims=(1,), hidden=(8,), activation="tanh")
    p = net.init(jax.random.key(0), jnp.zeros(5))["params"]
    assert set(p) == {"torso", "critic_torso", "actor_head", "critic_head"}
    assert p["actor_head"]["kernel"].shape == (8, 4) and p["critic_head"]["kernel"].shape == (8, 1)


def test_head_sizes_are_validated():
    with pytest.raises(ValueError, match="policy_head_hidden"):
        PPOConfig(policy_head_hidden=(0,))
    with pytest.raises(ValueError, match="value_head_hidden"):
        PPOConfig(value_head_hidden=(16, -1))
    assert PPOConfig(value_head_hidden=[32]).value_head_hidden == (32,)
    c = PPOConfig.carl()
    assert (c.policy_head_hidden, c.value_head_hidden, c.hidden) == ((256, 256), (256, 256),
                                                                    (256, 256))


# ---- value inputs reach the critic only ------------------------------------------------------
@pytest.mark.parametrize("shared", [True, False])
def test_value_inputs_move_the_critic_and_never_the_actor(shared):
    net, params, obs = _params(shared_torso=shared, layer_norm=True,
                               policy_head_hidden=(16,), value_head_hidden=(16,))
    obs = {"obs": jax.random.normal(jax.random.key(1), (6, 5)),
           VALUE_INPUTS: jnp.zeros((6, 3))}
    other = {**obs, VALUE_INPUTS: jax.random.normal(jax.random.key(2), (6, 3))}
    raw0, v0 = net.apply(params, obs)
    raw1, v1 = net.apply(params, other)
    np.testing.assert_array_equal(raw0, raw1)
    np.testing.assert_array_equal(raw0, net.apply(params, other, method=ActorCritic.policy))
    assert np.all(np.abs(np.asarray(v0 - v1)) > 1e-6)
    np.testing.assert_array_equal(v1, net.apply(params, other, method=ActorCritic.value))
    # and no gradient flows from the policy output into anything the value inputs feed
    g = jax.grad(lambda vin: jnp.sum(net.apply(params, {**obs, VALUE_INPUTS: vin})[0]))(
        other[VALUE_INPUTS])
    np.testing.assert_array_equal(g, 0.0)


def test_value_inputs_must_be_a_vector():
    class Bad(Countdown):
        def _obs(self, t):
            return {"obs": jnp.ones(2), VALUE_INPUTS: jnp.zeros((2, 2))}

    with pytest.raises(ValueError, match="value_measurements"):
        make_agent(PPOConfig(num_envs=2, num_steps=8, minibatch_size=16,
                             total_timesteps=16), Bad())


@pytest.mark.timeout(120)
def test_ppo_critic_learns_from_value_inputs_on_the_toy_env():
    """Countdown: the return is a function of the time left, which only the value input
    shows. Trained on it, the critic explains the targets (explained variance > 0.8) and
    the actor stays independent of it; without the input the critic cannot (< 0.2)."""
    cfg = PPOConfig(num_envs=8, num_steps=32, minibatch_size=64, update_epochs=4,
                    total_timesteps=8 * 32 * 40, lr=3e-3, hidden=(16,),
                    value_head_hidden=(16,), gamma=0.9, clip_value=False, anneal_lr=False,
                    eval_episodes=2, eval_max_steps=20)
    ev = {}
    for with_inputs in (True, False):
        env = Countdown(value_inputs=with_inputs)
        agent = make_agent(cfg, env)
        state, m = jax.jit(make_train(agent))(jax.random.key(0))
        ev[with_inputs] = float(np.mean(np.asarray(m["explained_variance"])[-5:]))
        assert np.all(np.asarray(m["finite"]))
        if with_inputs:
            net = ActorCritic(2, (1,), cfg.hidden, cfg.activation,
                              value_head_hidden=cfg.value_head_hidden)
            obs = Countdown()._obs(jnp.int32(0))
            late = {**obs, VALUE_INPUTS: jnp.array([0.125])}
            raw0, v0 = net.apply(state.params, obs)
            raw1, v1 = net.apply(state.params, late)
            np.testing.assert_array_equal(raw0, raw1)
            # V(8 steps left) = sum 0.9^k, k < 8 = 5.70; V(1 step left) = 1
            assert float(v0) == pytest.approx(5.70, abs=0.5)
            assert float(v1) == pytest.approx(1.0, abs=0.5)
            ev_run = jax.jit(agent.evaluate)(state, jax.random.key(1))  # policy head alone
            np.testing.assert_array_equal(ev_run["episode_length"], 8)
    print("explained variance, last 5 updates: with / without value inputs", ev)
    assert ev[True] > 0.8 and ev[False] < 0.2, ev


# ---- the CaRL layout on the driving env ------------------------------------------------------
@pytest.mark.timeout(180)
def test_carl_layout_smoke_on_the_driving_env():
    """PPOConfig.carl's layout (shared LayerNorm extractor, MLP heads, value inputs) at
    tiny sizes on envs.driving with CaRL's 11 value measurements: trains (evaluation with
    value inputs runs in the Countdown test; the driving env's compile dominates here)."""
    from envs.driving import make_driving

    env, params = make_driving("quick", reward="carl", value_inputs=True, num_vehicles=2,
                               max_vehicles=2)
    cfg = PPOConfig.carl(num_envs=4, num_steps=8, minibatch_size=16, total_timesteps=64,
                         hidden=(16,), policy_head_hidden=(16, 16), value_head_hidden=(16,))
    agent = make_agent(cfg, env, params)
    state, m = jax.jit(make_train(agent))(jax.random.key(0))
    assert np.all(np.asarray(m["finite"])) and m["explained_variance"].shape == (2,)
    p = state.params["params"]
    assert p["value_mlp_0"]["kernel"].shape == (16 + 11, 16)
    assert p["policy_mlp_0"]["kernel"].shape == (16, 16)
