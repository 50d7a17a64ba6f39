"""Protocol envs wrapping protocol envs: auto-reset, episode statistics,
observation normalisation and vmapped batches. All pure and jittable.

Every wrapper forwards `reward_spec`, `num_agents`, `default_params` and the
spaces of the env it wraps (VmapEnv keeps the *per-env* spaces and adds
`num_envs`). The usual stack for an on-policy learner is

    NormalizeObs(VmapEnv(EpisodeStats(AutoReset(env)), num_envs))

EpisodeStats must sit OUTSIDE AutoReset: the counters live in the wrapper
state, and an AutoReset outside it would reset them together with the env.

Debug mode: `CheckActions(env)` raises `ActionOutOfRangeError` naming the env
and the bound when an action leaves the action space, from inside jit / vmap /
scan (JAX would otherwise clamp a bad discrete index and envs clip continuous
actions, silently). `maybe_check_actions(env)` adds it when the environment
variable MO_RL_CHECK_ACTIONS=1 is set (tests/conftest.py sets it for the whole
test suite); mo_rl.batching.batched puts it under every training stack.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mo_rl.env import Env, StepResult
from mo_rl.spaces import Box, Dict, Discrete


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
        if jnp.shape(res.reward) != self._reward_shape():  # static: raised while tracing
            raise ValueError(
                f"{self._env.name}: step returned a reward of shape {jnp.shape(res.reward)}, "
                f"but its reward_spec {self.reward_spec.names} (num_agents="
                f"{self.num_agents}) needs shape {self._reward_shape()}")
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

    def _obs_shape(self, params) -> tuple[int, ...] | dict[str, tuple[int, ...]]:
        """The per-env observation shape, or {key: shape} of the float parts of a Dict
        observation (integer parts, e.g. a uint8 BEV raster, pass through unnormalised)."""
        # shapes never depend on param values; default_params stays concrete under jit
        space = self._env.observation_space(self._env.default_params)
        if isinstance(space, Dict):
            return {k: tuple(sp.shape) for k, sp in space.spaces.items()
                    if jnp.issubdtype(sp.dtype, jnp.floating)}
        return tuple(space.shape)

    @staticmethod
    def _moments(mean, var, count, obs, shape):
        obs = jnp.asarray(obs, jnp.float32)
        batch_axes = tuple(range(obs.ndim - len(shape)))
        n = 1
        for ax in batch_axes:
            n *= obs.shape[ax]
        b_mean = jnp.mean(obs, axis=batch_axes)
        b_var = jnp.var(obs, axis=batch_axes)
        delta = b_mean - mean
        tot = count + n
        m2 = var * count + b_var * n + delta**2 * count * n / tot
        return mean + delta * n / tot, m2 / tot, tot

    def _update(self, state: NormalizeObsState, obs, params) -> NormalizeObsState:
        if not self.update:
            return state
        shape = self._obs_shape(params)
        if not isinstance(shape, dict):
            mean, var, tot = self._moments(state.mean, state.var, state.count, obs, shape)
            return state.replace(mean=mean, var=var, count=tot)
        new = {k: self._moments(state.mean[k], state.var[k], state.count, obs[k], sh)
               for k, sh in shape.items()}
        tot = next(iter(new.values()))[2] if new else state.count
        return state.replace(mean={k: v[0] for k, v in new.items()},
                             var={k: v[1] for k, v in new.items()}, count=tot)

    def normalize(self, state: NormalizeObsState, obs) -> jax.Array:
        if isinstance(state.mean, dict):
            return {k: self._scale(state.mean[k], state.var[k], v) if k in state.mean else v
                    for k, v in obs.items()}
        return self._scale(state.mean, state.var, obs)

    def _scale(self, mean, var, obs) -> jax.Array:
        out = (jnp.asarray(obs, jnp.float32) - mean) / jnp.sqrt(var + self.eps)
        return out if self.clip is None else jnp.clip(out, -self.clip, self.clip)

    def reset(self, key, params):
        obs, env_state = self._env.reset(key, params)
        shape = self._obs_shape(params)
        zeros = lambda sh: jnp.zeros(sh, jnp.float32)
        ones = lambda sh: jnp.ones(sh, jnp.float32)
        tree = isinstance(shape, dict)
        state = NormalizeObsState(
            env_state,
            mean={k: zeros(sh) for k, sh in shape.items()} if tree else zeros(shape),
            var={k: ones(sh) for k, sh in shape.items()} if tree else ones(shape),
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


class ActionOutOfRangeError(ValueError):
    """An action outside the env's action space reached the env (CheckActions)."""


CHECK_ACTIONS_ENV = "MO_RL_CHECK_ACTIONS"


def check_actions_enabled() -> bool:
    """True when MO_RL_CHECK_ACTIONS is set to 1 / true / yes (debug mode)."""
    return os.environ.get(CHECK_ACTIONS_ENV, "").lower() in ("1", "true", "yes")


class CheckActions(Wrapper):
    """Debug wrapper: every `step` checks the action against `action_space(params)`.

    Discrete: an integer in 0..n-1; Box: low <= a <= high elementwise (NaN fails).
    The check runs inside jit as one `jax.pure_callback` per step (under vmap it is
    called once with the whole batch, `vmap_method="broadcast_all"`); on a bad action
    it raises ActionOutOfRangeError naming the env, the offending action and the bound,
    and the jitted call fails with it. checkify would need every caller to
    functionalise its jitted function; a callback needs nothing from callers. Cost: one
    host round trip per step (~0.2 ms on the 2-core CPU), so debug mode is off by
    default outside tests. Results are unchanged (the callback's output is an
    always-False flag that only selects the reward).
    """

    def __init__(self, env: Env):
        super().__init__(env)
        self._name = env.unwrapped.name

    @property
    def observes_state(self) -> bool:  # type: ignore[override]
        return self._env.observes_state

    def reset_state(self, key, params):
        return self._env.reset_state(key, params)

    def observe(self, state, params):
        return self._env.observe(state, params)

    def _space(self, params):
        try:
            return self._env.action_space(params)
        except (TypeError, jax.errors.ConcretizationTypeError):  # bounds need concrete params
            return self._env.action_space(self._env.default_params)

    def step(self, key, state, action, params) -> StepResult:
        space = self._space(params)
        a = jnp.asarray(action)
        if isinstance(space, Discrete):
            low, high = jnp.zeros_like(a), jnp.full_like(a, space.n - 1)
            ok = (a >= 0) & (a < space.n) & (jnp.floor(a) == a)
            bound = f"Discrete({space.n}): integers 0..{space.n - 1}"
        elif isinstance(space, Box):
            low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), a.shape)
            high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), a.shape)
            ok = (a >= low) & (a <= high)
            bound = "Box bounds"
        else:
            raise TypeError(f"CheckActions: unsupported action space {space!r}")
        name = self._name

        def report(ok_all, act, lo, hi):
            ok_all = np.asarray(ok_all)
            if ok_all.all():
                return np.zeros(ok_all.shape, np.bool_)
            i = tuple(np.argwhere(~ok_all)[0]) if ok_all.ndim else ()
            act, lo, hi = (np.asarray(x)[i] for x in (act, lo, hi))
            where = "" if not i else f" (batch index {list(map(int, i))})"
            raise ActionOutOfRangeError(
                f"{name}: action {act.tolist()} outside its action space{where}: {bound} "
                f"low={lo.tolist()}, high={hi.tolist()}")

        flag = jax.pure_callback(report, jax.ShapeDtypeStruct((), jnp.bool_), jnp.all(ok), a,
                                 low, high, vmap_method="broadcast_all")
        res = self._env.step(key, state, action, params)
        return res._replace(reward=jnp.where(flag, jnp.nan, res.reward))


def maybe_check_actions(env: Env) -> Env:
    """`CheckActions(env)` in debug mode (MO_RL_CHECK_ACTIONS=1), else `env` unchanged."""
    if check_actions_enabled() and not isinstance(env, CheckActions):
        return CheckActions(env)
    return env


__all__ = [
    "ActionOutOfRangeError",
    "AutoReset",
    "CheckActions",
    "EpisodeStats",
    "EpisodeStatsState",
    "NormalizeObs",
    "NormalizeObsState",
    "VmapEnv",
    "Wrapper",
    "check_actions_enabled",
    "maybe_check_actions",
]
