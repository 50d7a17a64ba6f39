"""HERON (Bukharin et al., ICML 2025): the user RANKS the reward factors; a Bradley-Terry
reward model learns from decision-tree comparisons of steps (mo_rl.reward_model) and the
policy learner trains on that learned reward.

Not a new learner: PPO (agents.ppo) and IQN (agents.iqn) take a `reward_hook`
(mo_rl.reward_model.RewardHook) and this module builds it.

* PPO (on-policy): after every rollout the model trains on that rollout (one random
  partner per step of each 64-step minibatch, per-level sigma x minibatch std margins),
  then the WHOLE rollout is relabelled by the updated model, and returns, GAE advantages
  and value targets all come from that learned reward (the reference PPO's quirk, a value
  loss on the one-step learned reward with advantages from the env reward, is avoided).
* IQN (off-policy): the model retrains every `retrain_every` env steps on minibatches
  drawn from the replay (all i > j pairs, sigma x std over the whole history), and every
  replayed n-step window is relabelled with the CURRENT model when it is sampled (the
  reference stores the reward at collection time instead).

The ranking is the env's preorder (`mo_rl.preference.ranking_from_spec`: every level must
hold exactly one factor, else the error names the tied factors) or the user's own
`relations`. `make_linear_ppo` is the study's baseline on the same PPO: a fixed weighted
sum whose weights are state, so a grid of weights runs as one vmapped program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents import iqn, ppo
from mo_rl.agent import Agent
from mo_rl.env import Env
from mo_rl.preference import ranking_from_spec
from mo_rl.reward import RewardSpec
from mo_rl.reward_model import (
    RewardHook,
    RewardModelConfig,
    Steps,
    linear_reward,
    make_reward_model,
)
from mo_rl.spaces import Discrete

# off-policy pair sampling of the reference (ClassicControl/cleanrl/ddpg_rm.py): 16
# minibatches of 16 steps per retrain, every 400 env steps after 1000 warm-up steps
OFF_POLICY = dict(minibatch=16, num_minibatches=16, retrain_every=400, warmup=1000)


@dataclass(frozen=True)
class HeronConfig:
    """The reward model and the ranking. relations=None: the env's preorder."""

    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    relations: tuple[str, ...] | None = None  # e.g. ("theta2 > theta_dot2", ...)
    sum_weights: tuple[float, ...] | None = None  # labels="sum": weights of the factor sum

    def replace(self, **changes: Any) -> HeronConfig:
        return dataclasses.replace(self, **changes)


def ranking(spec: RewardSpec, relations: tuple[str, ...] | None = None) -> np.ndarray:
    """Factor order, most important first, from the env's preorder or `relations`; a
    ValueError naming the tied factors when the preorder is not a strict ranking."""
    if relations is not None:
        spec = RewardSpec(spec.names, tuple(relations), spec.low, spec.high, spec.directions)
    return ranking_from_spec(spec)


def example_step(env: Env, env_params: Any) -> Steps:
    """One step's shapes (obs, env action, factors) for building the model."""
    obs = jax.eval_shape(env.reset, jax.random.key(0), env_params)[0]
    space = env.action_space(env_params)
    action = jnp.zeros(space.shape, space.dtype)
    return Steps(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), obs), action,
                 jnp.zeros((len(env.reward_spec),), jnp.float32))


def make_hook(cfg: HeronConfig, env: Env, env_params: Any, mode: str) -> RewardHook:
    """The learned-reward hook for `env` (mode "on_policy" for PPO, "off_policy" for IQN)."""
    order = ranking(env.reward_spec, cfg.relations) if cfg.reward_model.labels == "hierarchy" \
        else np.arange(len(env.reward_spec))
    space = env.action_space(env_params)
    n_act = int(space.n) if isinstance(space, Discrete) else None
    return make_reward_model(cfg.reward_model, env.reward_spec, order,
                             example_step(env, env_params), mode, n_act, cfg.sum_weights)


def make_ppo(config: ppo.PPOConfig, heron: HeronConfig, env: Env, env_params: Any = None,
             eval_env: Env | None = None) -> Agent:
    """PPO trained on HERON's learned reward (on-policy reward model)."""
    env_params = env.default_params if env_params is None else env_params
    if config.batch_size < heron.reward_model.minibatch:
        raise ValueError(f"the rollout ({config.batch_size} steps) is smaller than one "
                         f"reward-model minibatch ({heron.reward_model.minibatch}).")
    return ppo.make_agent(config, env, env_params, eval_env=eval_env,
                          reward_hook=make_hook(heron, env, env_params, "on_policy"))


def make_iqn(config: iqn.IQNConfig, heron: HeronConfig, env: Env, env_params: Any = None
             ) -> Agent:
    """IQN trained on HERON's learned reward (off-policy reward model, relabelled replay).
    Use `HeronConfig(reward_model=RewardModelConfig(**OFF_POLICY, ...))` for the
    reference's off-policy schedule."""
    env_params = env.default_params if env_params is None else env_params
    if heron.reward_model.minibatch > config.batch_size:
        raise ValueError(f"reward_model.minibatch ({heron.reward_model.minibatch}) must not "
                         f"exceed the replay batch ({config.batch_size}).")
    return iqn.make_agent(config, env, env_params,
                          reward_hook=make_hook(heron, env, env_params, "off_policy"))


def make_linear_ppo(config: ppo.PPOConfig, env: Env, weights_fn: Callable[[Any], jax.Array],
                    env_params: Any = None, eval_env: Env | None = None) -> Agent:
    """PPO on a fixed weighted sum sum_k w_k * oriented f_k, w = weights_fn(grid point):
    `init(key, point)` puts the weights in the state, so mo_rl.runner's `grid` sweeps them
    in one program (e.g. the paper's Pendulum family w = (1, b, b^2))."""
    env_params = env.default_params if env_params is None else env_params
    agent = ppo.make_agent(config, env, env_params, eval_env=eval_env,
                           reward_hook=linear_reward(env.reward_spec))

    def init(key, point=None):
        state = agent.init(key)
        if point is None:
            return state
        w = jnp.asarray(weights_fn(point), jnp.float32)
        return state.replace(hook={"weights": w})

    return agent._replace(init=init)


__all__ = ["OFF_POLICY", "HeronConfig", "example_step", "make_hook", "make_iqn",
           "make_linear_ppo", "make_ppo", "ranking"]
