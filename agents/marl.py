"""IPPO and MAPPO for multi-agent protocol envs (leading agent axis), mixed rewards included.

`make_agent(config, env, env_params) -> mo_rl.agent.Agent`. PPO's maths is not repeated
here: the clipped policy and value losses, advantage normalisation, the Beta /
categorical policies and the MLP torso come from agents.ppo, GAE from mo_rl.gae.

* IPPO: every agent's actor and critic read that agent's observation row.
* MAPPO: the actors do the same; the critic reads the JOINT observation (all rows,
  flattened) plus the agent's one-hot id (centralised training, decentralised acting).
* `share_params=True`: one actor (and one critic) for all agents, with the one-hot id
  appended to the input; False: a separate network per agent (params stacked on a
  leading agent axis and vmapped).
* Actions: a Beta policy per agent on its Box row (mapped to [low_i, high_i]), or with
  `discrete_bins=B` a categorical over B evenly spaced levels of that range; Discrete
  action spaces get a categorical directly.

The env params (reward mode / mixing weight included) live in the training state, so
`jax.vmap(train)(keys, params)` trains several reward modes in one program, and the
runner's grid points (`init(key, point)`, point = {CoopParams field: value}) do the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from agents.ppo import (
    BETA_EPS,
    Policy,
    PPOCore,
    Torso,
    make_policy,
    normalize,
    ppo_loss,
)
from mo_rl.agent import Agent, all_finite
from mo_rl.batching import batched
from mo_rl.env import Env
from mo_rl.gae import gae, next_values
from mo_rl.networks import orthogonal
from mo_rl.rollout import evaluate_policy
from mo_rl.spaces import Box, Discrete
from mo_rl.wrappers import NormalizeObs

ALGOS = ("ippo", "mappo")


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MARLConfig(PPOCore):
    """IPPO / MAPPO settings: agents.ppo's PPOCore (validated there) with multi-agent
    defaults, plus the algorithm, parameter sharing and action discretisation."""

    algo: str = "ippo"
    share_params: bool = True
    discrete_bins: int = 0  # 0: Beta policy on Box actions; B > 1: B action levels
    total_timesteps: int = 200_000  # env steps (each moves every agent once)
    num_envs: int = 16
    num_steps: int = 100
    minibatch_size: int = 400
    lr: float = 3e-4
    reward_scale: float = 0.01  # coopetition payoffs are O(100) per step
    normalize_obs: bool = True
    eval_episodes: int = 8

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"MARLConfig.algo must be one of {ALGOS}; got {self.algo!r}.")
        super().__post_init__()
        if self.discrete_bins == 1 or self.discrete_bins < 0:
            raise ValueError(f"MARLConfig.discrete_bins must be 0 (Beta) or >= 2; got "
                             f"{self.discrete_bins!r}.")


# ---------------------------------------------------------------------------
# networks and per-agent application
# ---------------------------------------------------------------------------
class Head(nn.Module):
    """agents.ppo's MLP torso and a linear head (actor: init scale 0.01, critic: 1)."""

    num_outputs: int
    hidden: tuple[int, ...]
    activation: str
    scale: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = Torso((1,), self.hidden, self.activation)(x)
        return nn.Dense(self.num_outputs, kernel_init=orthogonal(self.scale),
                        bias_init=nn.initializers.zeros)(h)


def with_agent_id(x: jax.Array) -> jax.Array:
    """Append each agent's one-hot id to its input row: x (..., n, d) -> (..., n, d + n)."""
    n = x.shape[-2]
    ids = jnp.broadcast_to(jnp.eye(n, dtype=x.dtype), x.shape[:-2] + (n, n))
    return jnp.concatenate([x, ids], axis=-1)


def joint_input(obs: jax.Array) -> jax.Array:
    """MAPPO critic input: every agent sees all rows (..., n, n * d), plus its id."""
    n = obs.shape[-2]
    flat = obs.reshape(obs.shape[:-2] + (1, -1))
    return with_agent_id(jnp.broadcast_to(flat, obs.shape[:-2] + (n, flat.shape[-1])))


def apply_per_agent(net: nn.Module, params: Any, x: jax.Array, shared: bool) -> jax.Array:
    """net on every agent row of x (..., n, d): one network, or agent i's own params
    (stacked on axis 0) on row i."""
    if shared:
        return net.apply(params, x)
    out = jax.vmap(net.apply)(params, jnp.moveaxis(x, -2, 0))
    return jnp.moveaxis(out, 0, -2)


def init_per_agent(net: nn.Module, key: jax.Array, dummy: jax.Array, n: int,
                   shared: bool) -> Any:
    if shared:
        return net.init(key, dummy)
    return jax.vmap(net.init, in_axes=(0, None))(jax.random.split(key, n), dummy)


# ---------------------------------------------------------------------------
# action maps
# ---------------------------------------------------------------------------
class ActionMap(NamedTuple):
    """The policy over the stored sample u of ONE agent, and u -> env action for all."""

    policy: Policy
    to_env: Any  # u (..., n[, d]) -> env action (..., *action_space.shape)


def make_action_map(space: Box | Discrete, n: int, bins: int) -> ActionMap:
    if isinstance(space, Discrete):
        if space.shape != (n,):
            raise ValueError(f"multi-agent Discrete actions must have shape ({n},); got "
                             f"{space.shape}.")
        return ActionMap(make_policy(Discrete(space.n)), lambda u: u)
    if not isinstance(space, Box) or space.shape[0] != n:
        raise ValueError(f"the action space needs a leading agent axis of {n}; got {space!r}.")
    row_shape = space.shape[1:]
    dim = int(np.prod(row_shape))
    low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape).reshape(n, dim)
    high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape).reshape(n, dim)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError("MARL needs finite Box action bounds.")
    low_j, span = jnp.asarray(low), jnp.asarray(high - low)
    if bins:
        if dim != 1:
            raise ValueError(f"discrete_bins needs one action dimension per agent; got {dim}.")

        def to_env(u):
            level = u.astype(jnp.float32)[..., None] / (bins - 1)
            return (low_j + level * span).reshape(u.shape[:-1] + space.shape)

        return ActionMap(make_policy(Discrete(bins)), to_env)

    def to_env_beta(u):
        return (low_j + u * span).reshape(u.shape[:-2] + space.shape)

    return ActionMap(make_policy(Box(0.0, 1.0, (dim,))), to_env_beta)


# ---------------------------------------------------------------------------
# agent
# ---------------------------------------------------------------------------
@struct.dataclass
class MARLState:
    actor: Any
    critic: Any
    opt_state: Any
    env_state: Any
    obs: Any
    key: jax.Array
    env_steps: jax.Array
    env_params: Any  # reward mode / mixing weight included: vmappable


class Transition(NamedTuple):
    obs: jax.Array  # (B, n, d)
    u: jax.Array
    logp: jax.Array  # (B, n)
    value: jax.Array  # (B, n)
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array


def episode_metrics(info: dict) -> dict[str, jax.Array]:
    """Means over the episodes finished in a rollout: return (K,) averaged over agents,
    return per agent (n, K), length, and the env's episode metrics at the last step."""
    done = info["returned_episode"].astype(jnp.float32)  # [T, B]
    count = done.sum()
    safe, nan = jnp.maximum(count, 1.0), jnp.where(count > 0, 0.0, jnp.nan)
    per_agent = jnp.einsum("tb,tbak->ak", done, info["returned_episode_returns"]) / safe + nan
    out = {"episode_return": per_agent.mean(0), "episode_return_per_agent": per_agent,
           "episode_length": jnp.sum(done * info["returned_episode_lengths"]) / safe + nan,
           "episodes": count}
    for name, v in info.get("episode_metrics", {}).items():
        out[f"train/{name}"] = jnp.sum(done * v) / safe + nan
    return out


def make_agent(config: MARLConfig, env: Env, env_params: Any = None) -> Agent:
    """IPPO / MAPPO on a multi-agent protocol env (see module docstring)."""
    if env.num_agents is None:
        raise ValueError(f"{env.name} is single-agent; use agents.ppo.")
    cfg = config
    n = env.num_agents
    default_params = env.default_params if env_params is None else env_params
    amap = make_action_map(env.action_space(default_params), n, cfg.discrete_bins)
    policy = amap.policy
    shared = cfg.share_params
    k = len(env.reward_spec)

    venv = batched(env, cfg.num_envs)
    if cfg.normalize_obs:
        venv = NormalizeObs(venv)

    obs_shape = jax.eval_shape(env.reset, jax.random.key(0), default_params)[0].shape
    if len(obs_shape) != 2 or obs_shape[0] != n:
        raise ValueError(f"MARL needs observations (num_agents, d); got {obs_shape}.")
    actor = Head(policy.num_outputs, cfg.hidden, cfg.activation, 0.01)
    critic = Head(1, cfg.hidden, cfg.activation, 1.0)

    def actor_in(obs):
        return with_agent_id(obs) if shared else obs

    def critic_in(obs):
        if cfg.algo == "mappo":
            return joint_input(obs)
        return actor_in(obs)

    def raw_of(params, obs):
        return apply_per_agent(actor, params, actor_in(obs), shared)

    def value_of(params, obs):
        return apply_per_agent(critic, params, critic_in(obs), shared)[..., 0]

    num_updates = cfg.num_updates
    steps_per_update = cfg.num_minibatches * cfg.update_epochs

    def lr_schedule(count):
        return cfg.lr * (1.0 - (count // steps_per_update) / num_updates)

    tx = optax.flatten(optax.chain(  # one raveled vector, as agents.ppo (measured faster)
        optax.clip_by_global_norm(cfg.max_grad_norm),
        optax.adam(lr_schedule if cfg.anneal_lr else cfg.lr, eps=cfg.adam_eps)))

    def init(key: jax.Array, point: dict[str, Any] | None = None) -> MARLState:
        """`point` replaces fields of the env params (e.g. reward_weights) for this run."""
        ep = default_params if not point else default_params.replace(**point)
        key, k_a, k_c, k_env = jax.random.split(key, 4)
        dummy = jnp.zeros((n, obs_shape[1]), jnp.float32)
        a_params = init_per_agent(actor, k_a, actor_in(dummy)[:1] if shared else
                                  dummy[:1], n, shared)
        c_params = init_per_agent(critic, k_c, critic_in(dummy)[:1], n, shared)
        obs, env_state = venv.reset(jax.random.split(k_env, cfg.num_envs), ep)
        return MARLState(a_params, c_params, tx.init((a_params, c_params)), env_state, obs,
                         key, jnp.int32(0), ep)

    def env_step(carry, _):
        a_params, c_params, env_state, obs, key, ep = carry
        keys = jax.random.split(key, cfg.num_envs + 2)
        key, k_act, k_envs = keys[0], keys[1], keys[2:]
        dist = policy.dist(raw_of(a_params, obs))
        u = dist.sample(seed=k_act)
        if policy.u_dtype == jnp.float32:
            u = jnp.clip(u, BETA_EPS, 1.0 - BETA_EPS)
        logp = dist.log_prob(u)
        value = value_of(c_params, obs)
        res = venv.step(k_envs, env_state, amap.to_env(u), ep)
        reward = jnp.sum(res.reward.reshape(res.reward.shape[:2] + (k,)), -1) * cfg.reward_scale
        tr = Transition(obs, u, logp, value, reward, res.terminated, res.truncated,
                        res.info["final_obs"])
        ep_info = {name: res.info[name] for name in
                   ("returned_episode", "returned_episode_returns", "returned_episode_lengths")}
        if "episode_metrics" in res.info:
            ep_info["episode_metrics"] = res.info["episode_metrics"]
        return (a_params, c_params, res.state, res.obs, key, ep), (tr, ep_info)

    loss_names = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac")

    def loss_fn(nets, batch):
        a_params, c_params = nets
        tr, adv, target = batch
        dist = policy.dist(raw_of(a_params, tr.obs))
        logp = dist.log_prob(tr.u)
        if cfg.norm_adv:
            adv = normalize(adv)
        return ppo_loss(logp, tr.logp, adv, value_of(c_params, tr.obs), tr.value, target,
                        dist.entropy(), cfg)

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def sgd_step(carry, batch):
        nets, opt_state = carry
        grads, m = grad_fn(nets, batch)
        updates, opt_state = tx.update(grads, opt_state, nets)
        return (optax.apply_updates(nets, updates), opt_state), m

    def epoch(carry, perm):
        nets, opt_state, batch = carry
        mbs = jax.tree.map(lambda x: jnp.take(x, perm, axis=0).reshape(
            (cfg.num_minibatches, cfg.minibatch_size) + x.shape[1:]), batch)
        (nets, opt_state), m = jax.lax.scan(sgd_step, (nets, opt_state), mbs)
        return (nets, opt_state, batch), m

    def update(state: MARLState) -> tuple[MARLState, dict[str, jax.Array]]:
        ep = state.env_params
        (a_params, c_params, env_state, obs, key, _), (traj, ep_info) = jax.lax.scan(
            env_step, (state.actor, state.critic, state.env_state, state.obs, state.key, ep),
            None, cfg.num_steps)
        last_value = value_of(c_params, obs)
        final_value = value_of(c_params, traj.final_obs)
        done = jnp.logical_or(traj.terminated, traj.truncated)
        nv = next_values(traj.value, last_value, final_value, done)
        adv, target = gae(traj.reward, traj.value, nv, traj.terminated, traj.truncated,
                          cfg.gamma, cfg.gae_lambda)
        learn = traj._replace(final_obs=None, reward=None, terminated=None, truncated=None)
        batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), (learn, adv, target))
        key, k_epochs = jax.random.split(key)
        perms = jax.vmap(jax.random.permutation, (0, None))(
            jax.random.split(k_epochs, cfg.update_epochs), cfg.batch_size)
        ((a_params, c_params), opt_state, _), losses = jax.lax.scan(
            epoch, ((a_params, c_params), state.opt_state, batch), perms)
        env_steps = state.env_steps + cfg.batch_size
        finite = jnp.all(jnp.isfinite(losses)) & all_finite((a_params, c_params))
        metrics = {"env_steps": env_steps, **episode_metrics(ep_info), "finite": finite,
                   **dict(zip(loss_names, losses.reshape(-1, len(loss_names)).mean(0),
                              strict=True))}
        return MARLState(a_params, c_params, opt_state, env_state, obs, key, env_steps,
                         ep), metrics

    def evaluate(state: MARLState, key: jax.Array) -> dict[str, jax.Array]:
        """Greedy (Beta mean / argmax) episodes on the raw env with the state's env params."""

        def policy_fn(obs, _key):
            if cfg.normalize_obs:
                obs = venv.normalize(state.env_state, obs)
            return amap.to_env(policy.greedy(raw_of(state.actor, obs)))

        ev = evaluate_policy(env, state.env_params, policy_fn, key, cfg.eval_episodes,
                             cfg.eval_max_steps)
        return {"episode_return": ev["returns"].mean(1), "episode_length": ev["lengths"],
                "finished": ev["finished"].astype(jnp.float32), **ev["episode_metrics"]}

    return Agent(init=init, update=update, evaluate=evaluate, num_updates=num_updates)


__all__ = ["ALGOS", "MARLConfig", "MARLState", "make_agent"]
