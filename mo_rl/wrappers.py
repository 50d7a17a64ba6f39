"""Protocol envs wrapping protocol envs: auto-reset, episode statistics,
observation normalisation and vmapped batches. All pure and jittable.

Every wrapper forwards `reward_spec`, `num_agents`, `default_params` and the
spaces of the env it wraps (VmapEnv keeps the *per-env* spaces and adds
`num_envs`). The usual stack for an on-policy learner is

    NormalizeObs(VmapEnv(EpisodeStats(AutoReset(env)), num_envs))

EpisodeStats must sit OUTSIDE AutoReset: the counters live in the wrapper
state, and an AutoReset outside it would reset them together with the env.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mo_rl.env import Env, StepResult


class Wrapper(Env):
    """Forwards everything to the wrapped env; subclasses override reset/step."""

    def __init__(self, env: Env):
        self._env = env

    @property
    def env(self) -> Env:
        return self._env

    @property
    def reward_spec(self):  # type: ignore[override]
        return self._env.reward_spec

    @property
    def num_agents(self):  # type: ignore[override]
        return self._env.num_agents

    @property
    def name(self) -> str:
        return f"{type(self).__name__}<{self._env.name}>"

    @property
    def default_params(self):
        return self._env.default_params

    def reset(self, key, params):
        return self._env.reset(key, params)

    def step(self, key, state, action, params) -> StepResult:
        return self._env.step(key, state, action, params)

    def observation_space(self, params):
        return self._env.observation_space(params)

    def action_space(self, params):
        return self._env.action_space(params)

    @property
    def unwrapped(self) -> Env:
        return self._env.unwrapped

    def __getattr__(self, name: str):
        # only called when normal lookup fails: expose attributes of inner envs
        if name.startswith("__") or name == "_env":
            raise AttributeError(name)
        return getattr(self._env, name)


class AutoReset(Wrapper):
    """Resets inside `step` when terminated | truncated.

    The returned obs/state are those of the fresh episode; the observation the
    episode ended in is kept in info["final_obs"] (equal to obs on other
    steps), and reward/terminated/truncated are those of the finishing step.
    The reset runs under lax.cond, so a host env (io_callback) is only reset
    when an episode ends (under vmap, cond becomes a select of both branches).
    """

    def step(self, key, state, action, params) -> StepResult:
        key_step, key_reset = jax.random.split(key)
        res = self._env.step(key_step, state, action, params)
        done = jnp.logical_or(res.terminated, res.truncated)
        if self._env.observes_state:
            # select the state, then observe it once: under vmap both branches run, and
            # the observation is often the most expensive part of a step
            new_state = jax.lax.cond(done, lambda: self._env.reset_state(key_reset, params),
                                     lambda: res.state)
            obs = self._env.observe(new_state, params)
        else:
            obs, new_state = jax.lax.cond(
                done,
                lambda: self._env.reset(key_reset, params),
                lambda: (res.obs, res.state),
            )
        info = dict(res.info)
        info["final_obs"] = res.obs
        return StepResult(obs, new_state, res.reward, res.terminated, res.truncated, info)


@struct.dataclass
class EpisodeStatsState:
    env_state: Any
    episode_returns: jax.Array  # running return of the current episode, reward shape
    episode_lengths: jax.Array
    returned_episode_returns: jax.Array  # of the last finished episode
    returned_episode_lengths: jax.Array


class EpisodeStats(Wrapper):
    """Per-component episode returns and lengths.

    info["returned_episode"] (bool) is True on the step an episode ends;
    info["returned_episode_returns"] (reward shape, e.g. (K,)) and
    info["returned_episode_lengths"] hold the last finished episode's values
    (so mask them with "returned_episode"). Undiscounted sums.
    """

    def _reward_shape(self) -> tuple[int, ...]:
        k = len(self.reward_spec)
        return (k,) if self.num_agents is None else (self.num_agents, k)

    def reset(self, key, params):
        obs, env_state = self._env.reset(key, params)
        zeros = jnp.zeros(self._reward_shape(), jnp.float32)
        state = EpisodeStatsState(env_state, zeros, jnp.int32(0), zeros, jnp.int32(0))
        return obs, state

    def step(self, key, state: EpisodeStatsState, action, params) -> StepResult:
        res = self._env.step(key, state.env_state, action, params)
        done = jnp.logical_or(res.terminated, res.truncated)
        ret = state.episode_returns + res.reward.astype(jnp.float32)
        length = state.episode_lengths + 1
        new_state = EpisodeStatsState(
            env_state=res.state,
            episode_returns=jnp.where(done, 0.0, ret),
            episode_lengths=jnp.where(done, 0, length),
            returned_episode_returns=jnp.where(done, ret, state.returned_episode_returns),
            returned_episode_lengths=jnp.where(done, length, state.returned_episode_lengths),
        )
        info = dict(res.info)
        info["returned_episode"] = done
        info["returned_episode_returns"] = new_state.returned_episode_returns
        info["returned_episode_lengths"] = new_state.returned_episode_lengths
        return StepResult(res.obs, new_state, res.reward, res.terminated, res.truncated, info)


@struct.dataclass
class NormalizeObsState:
    env_state: Any
    mean: jax.Array
    var: jax.Array
    count: jax.Array


class NormalizeObs(Wrapper):
    """Running mean/variance observation normalisation (state-held, jittable).

    Works on a single env or on a batched one (e.g. wrapping a VmapEnv): the
    leading axes of obs beyond the per-env observation_space shape are treated
    as batch axes, and one shared mean/var is updated with the batch moments
    (Chan et al.'s parallel form of Welford's update). info["final_obs"], if
    present, is normalised with the same statistics. `update=False` freezes
    the statistics (evaluation); `normalize(state, obs)` applies them.
    """

    def __init__(self, env: Env, clip: float | None = 10.0, eps: float = 1e-8, update: bool = True):
        super().__init__(env)
        self.clip = clip
        self.eps = eps
        self.update = update

    def _obs_shape(self, params) -> tuple[int, ...]:
        # shapes never depend on param values; default_params stays concrete under jit
        return tuple(self._env.observation_space(self._env.default_params).shape)

    def _update(self, state: NormalizeObsState, obs, params) -> NormalizeObsState:
        if not self.update:
            return state
        obs = jnp.asarray(obs, jnp.float32)
        batch_axes = tuple(range(obs.ndim - len(self._obs_shape(params))))
        n = 1
        for ax in batch_axes:
            n *= obs.shape[ax]
        b_mean = jnp.mean(obs, axis=batch_axes)
        b_var = jnp.var(obs, axis=batch_axes)
        delta = b_mean - state.mean
        tot = state.count + n
        mean = state.mean + delta * n / tot
        m2 = state.var * state.count + b_var * n + delta**2 * state.count * n / tot
        return state.replace(mean=mean, var=m2 / tot, count=tot)

    def normalize(self, state: NormalizeObsState, obs) -> jax.Array:
        out = (jnp.asarray(obs, jnp.float32) - state.mean) / jnp.sqrt(state.var + self.eps)
        return out if self.clip is None else jnp.clip(out, -self.clip, self.clip)

    def reset(self, key, params):
        obs, env_state = self._env.reset(key, params)
        shape = self._obs_shape(params)
        state = NormalizeObsState(
            env_state,
            mean=jnp.zeros(shape, jnp.float32),
            var=jnp.ones(shape, jnp.float32),
            count=jnp.float32(1e-4),  # as gymnasium's RunningMeanStd: avoids 0/0
        )
        state = self._update(state, obs, params)
        return self.normalize(state, obs), state

    def step(self, key, state: NormalizeObsState, action, params) -> StepResult:
        res = self._env.step(key, state.env_state, action, params)
        new_state = self._update(state.replace(env_state=res.state), res.obs, params)
        info = dict(res.info)
        if "final_obs" in info:
            info["final_obs"] = self.normalize(new_state, info["final_obs"])
        return StepResult(
            self.normalize(new_state, res.obs),
            new_state,
            res.reward,
            res.terminated,
            res.truncated,
            info,
        )


class VmapEnv(Wrapper):
    """A batch of `num_envs` copies: reset(keys[B], params), step(keys[B], states,
    actions[B], params). params are broadcast (`params_axis=None`) or batched
    along `params_axis`. Spaces stay per-env; outputs get a leading B axis.
    Host (io_callback) envs cannot be vmapped: JAX rejects ordered effects
    under vmap."""

    def __init__(self, env: Env, num_envs: int, params_axis: int | None = None):
        super().__init__(env)
        self.num_envs = int(num_envs)
        self.params_axis = params_axis

    def _check(self, keys) -> None:
        if keys.shape[0] != self.num_envs:
            raise ValueError(
                f"VmapEnv expects a batch of {self.num_envs} keys (one per env), got "
                f"leading axis {keys.shape[0]}; split with jax.random.split(key, "
                f"{self.num_envs})."
            )

    def reset(self, keys, params):
        self._check(keys)
        return jax.vmap(self._env.reset, in_axes=(0, self.params_axis))(keys, params)

    def step(self, keys, state, action, params) -> StepResult:
        self._check(keys)
        return jax.vmap(self._env.step, in_axes=(0, 0, 0, self.params_axis))(
            keys, state, action, params
        )


__all__ = [
    "AutoReset",
    "EpisodeStats",
    "EpisodeStatsState",
    "NormalizeObs",
    "NormalizeObsState",
    "VmapEnv",
    "Wrapper",
]
