"""The batched env stack every agent trains on, for JAX envs and host envs alike.

    venv = batched(env, num_envs)   # instead of VmapEnv(EpisodeStats(AutoReset(env)), n)

* A JAX env gets exactly `VmapEnv(EpisodeStats(AutoReset(env)), num_envs)`.
* A host env (Gymnasium, PettingZoo: anything stepped through an io_callback)
  cannot be vmapped: JAX refuses ordered callbacks under vmap. Its class
  provides `make_batched(num_envs)`, which returns a `HostBatchedEnv`: ONE
  ordered io_callback per step drives `num_envs` host envs at once (e.g. a
  gymnasium vector env), auto-reset happens on the host, and the result has
  the same shapes and info keys as the JAX stack ("final_obs",
  "returned_episode", "returned_episode_returns", "returned_episode_lengths").

Runs over seeds: `map_runs(fn)` is `jax.vmap(fn)` unless `fn` holds an
ordered callback, then `jax.lax.map(fn)` (seeds one after another in one
program). Each seed's `init` resets its own host env set (a "slot" held in the
env state), so seeds never share host envs.

Resume: host env state lives outside JAX and is not checkpointed. A step on a
state that does not match its host env set (restored from a checkpoint after
the host envs moved on, or in another process) does not apply the action: it
restarts that set's episodes and reports them as truncated with zero reward,
so a resumed run continues with fresh episodes (the ones in flight at the
checkpoint are cut) and is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback

from mo_rl.env import Env, StepResult
from mo_rl.wrappers import AutoReset, EpisodeStats, VmapEnv, maybe_check_actions


def batched(env: Env, num_envs: int) -> Env:
    """`num_envs` auto-resetting copies of `env` with episode statistics (see module doc)."""
    if hasattr(type(env), "make_batched"):  # the class itself, not an attribute forwarded
        return env.make_batched(int(num_envs))  # by a Wrapper from an inner host env
    if getattr(env.unwrapped, "is_host_env", False):
        raise TypeError(
            f"{env.name} wraps a host env inside JAX wrappers, which cannot be batched on the "
            "host; pass the host adapter itself (wrap the gymnasium env instead)."
        )
    # maybe_check_actions: debug mode (MO_RL_CHECK_ACTIONS=1, on in tests) checks every action
    return VmapEnv(EpisodeStats(AutoReset(maybe_check_actions(env))), int(num_envs))


def map_runs(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map `fn` over the leading (run) axis of its arguments: vmap, or lax.map when `fn`
    contains an ordered io_callback (a host env), which JAX cannot vmap."""

    def mapped(*args):
        try:
            return jax.vmap(fn)(*args)
        except ValueError as e:
            if "Cannot `vmap` ordered IO callback" not in str(e):
                raise
        return jax.lax.map(lambda a: fn(*a), args)

    return mapped


class HostBackend(Protocol):
    """`num_envs` host envs stepped together, auto-resetting on the host.

    reset(seeds[n]) -> obs[n, ...]
    step(actions[n, ...]) -> (obs, reward[n, (A,) K], terminated[n], truncated[n],
                              final_obs, extra): obs are those after the auto-reset,
                              final_obs those the step reached; extra: other per-env arrays
                              named in `HostBatchedEnv(extra_info=...)`.
    """

    def reset(self, seeds: np.ndarray) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple: ...

    def close(self) -> None: ...


@struct.dataclass
class HostBatchState:
    slot: jax.Array  # int32: which host env set (one per `reset`)
    token: jax.Array  # int32: random id of that set (a foreign state has another)
    count: jax.Array  # int32: host steps of that set (a stale, restored state lags)
    episode_returns: jax.Array  # (n, [A,] K) running returns
    episode_lengths: jax.Array  # (n,)
    returned_episode_returns: jax.Array  # last finished episode's
    returned_episode_lengths: jax.Array


@dataclass
class _Slot:
    backend: HostBackend
    token: int
    count: int = 0
    obs: np.ndarray | None = None  # last observation (what a stale step restarts from)


class HostEnvError(RuntimeError):
    """A host env failed (raised inside step / reset, or was closed)."""


def _as(x: Any, s: jax.ShapeDtypeStruct) -> np.ndarray:
    return np.asarray(x, dtype=s.dtype).reshape(s.shape)


class HostBatchedEnv(Env):
    """`num_envs` host envs behind one ordered io_callback per reset / step.

    `env` is the single-env adapter (spaces, reward_spec, num_agents come from it);
    `make_backend()` builds one host env set of `num_envs` envs. Keys passed to step
    are ignored (host envs own their RNG); reset seeds the set from the keys, so
    the same JAX key reproduces the same host episodes. `extra_info` names further
    per-env arrays the backend returns (e.g. PettingZoo's "active" agent mask).
    """

    is_host_env = True

    def __init__(self, env: Env, num_envs: int, make_backend: Callable[[], HostBackend],
                 extra_info: dict[str, jax.ShapeDtypeStruct] | None = None):
        self.env = env
        self.num_envs = int(num_envs)
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1 (got {num_envs})")
        self.make_backend = make_backend
        self.extra_info = dict(extra_info or {})
        self.reward_spec = env.reward_spec
        self.num_agents = env.num_agents
        self._slots: list[_Slot | None] = []
        params = env.default_params
        n = (self.num_envs,)  # multi-agent spaces already carry the agent axis
        lead = n if env.num_agents is None else (self.num_envs, env.num_agents)
        obs = env.observation_space(params)
        self._obs = jax.ShapeDtypeStruct(n + tuple(obs.shape), np.dtype(obs.dtype))
        act = env.action_space(params)
        self._act = jax.ShapeDtypeStruct(n + tuple(act.shape), np.dtype(act.dtype))
        if self._act.dtype.itemsize != 4:
            raise NotImplementedError(f"{env.name}: actions of dtype {self._act.dtype} are not "
                                      "supported (32-bit ints or floats only)")
        self._reward = jax.ShapeDtypeStruct(lead + (len(env.reward_spec),), np.float32)
        self._flag = jax.ShapeDtypeStruct((self.num_envs,), np.bool_)
        self._i32 = jax.ShapeDtypeStruct((), np.int32)

    @property
    def name(self) -> str:
        return f"HostBatched<{self.env.name} x{self.num_envs}>"

    @property
    def default_params(self):
        return self.env.default_params

    def observation_space(self, params):
        return self.env.observation_space(params)

    def action_space(self, params):
        return self.env.action_space(params)

    @property
    def num_open(self) -> int:
        """Host env sets still open (one per reset call)."""
        return sum(s is not None for s in self._slots)

    # ---- host side -----------------------------------------------------------------
    def _slot(self, slot: int) -> _Slot:
        s = self._slots[slot] if 0 <= slot < len(self._slots) else None
        if s is None:
            why = "was closed" if 0 <= slot < len(self._slots) else "does not exist here"
            raise HostEnvError(
                f"{self.name}: host env set {slot} {why} (closed adapter, or an env state from "
                "another adapter / process); reset the env (agent.init) again."
            )
        return s

    def _host_reset(self, seeds):
        token = secrets.randbits(31)
        try:
            backend = self.make_backend()
            obs = _as(backend.reset(np.asarray(seeds)), self._obs)
        except HostEnvError:
            raise
        except Exception as e:
            raise HostEnvError(f"{self.name}: host env raised in reset: {e!r}") from e
        self._slots.append(_Slot(backend, token, 0, obs))
        return np.int32(len(self._slots) - 1), np.int32(token), obs

    def _host_step(self, packed):
        packed = np.asarray(packed)
        slot, token, count = (int(x) for x in packed[:3])
        actions = packed[3:].view(self._act.dtype).reshape(self._act.shape)
        s = self._slot(slot)
        n = self.num_envs
        if token != s.token or count != s.count:
            # a state restored from a checkpoint: restart the set's episodes (see module doc)
            try:
                obs = _as(s.backend.reset(None), self._obs)
            except Exception as e:
                raise HostEnvError(f"{self.name}: host env raised in reset: {e!r}") from e
            s.obs = obs
            extra = {k: np.ones(v.shape, v.dtype) for k, v in self.extra_info.items()}
            return (np.int32(s.token), np.int32(s.count), obs,
                    np.zeros(self._reward.shape, np.float32), np.zeros(n, bool),
                    np.ones(n, bool), obs, *extra.values())
        try:
            obs, reward, term, trunc, final, extra = s.backend.step(np.asarray(actions))
        except HostEnvError:
            raise
        except Exception as e:
            raise HostEnvError(
                f"{self.name}: host env raised in step {s.count + 1} of env set {slot}: "
                f"{e!r}"
            ) from e
        reward = np.asarray(reward, np.float32)
        if reward.shape != self._reward.shape:
            raise HostEnvError(
                f"{self.name}: host env returned rewards of shape {reward.shape}, expected "
                f"{self._reward.shape} (num_envs, {'num_agents, ' if self.num_agents else ''}"
                f"K) for components {self.reward_spec.names}. Fix the env's reward_space so "
                "that it matches the rewards it returns."
            )
        s.count += 1
        obs = _as(obs, self._obs)
        s.obs = obs
        return (np.int32(s.token), np.int32(s.count), obs, reward,
                _as(term, self._flag), _as(trunc, self._flag), _as(final, self._obs),
                *(_as(extra[k], v) for k, v in self.extra_info.items()))

    def close(self) -> None:
        """Close every host env set; a later step on them raises a HostEnvError."""
        for i, s in enumerate(self._slots):
            if s is not None:
                self._slots[i] = None
                s.backend.close()

    # ---- protocol ------------------------------------------------------------------
    def reset(self, keys, params=None):
        self._check(keys)
        seeds = jax.vmap(seed_from_key)(keys)
        slot, token, obs = io_callback(self._host_reset, (self._i32, self._i32, self._obs),
                                       seeds, ordered=True)
        zeros = jnp.zeros(self._reward.shape, jnp.float32)
        lengths = jnp.zeros((self.num_envs,), jnp.int32)
        return obs, HostBatchState(slot, token, jnp.int32(0), zeros, lengths, zeros, lengths)

    def step(self, keys, state: HostBatchState, action, params=None) -> StepResult:
        self._check(keys)
        shapes = (self._i32, self._i32, self._obs, self._reward, self._flag, self._flag,
                  self._obs, *self.extra_info.values())
        token, count, obs, reward, term, trunc, final, *extra = io_callback(
            self._host_step, shapes, self._pack(state, action), ordered=True)
        done = jnp.logical_or(term, trunc)
        d = done.reshape(done.shape + (1,) * (reward.ndim - 1))
        ret = state.episode_returns + reward
        length = state.episode_lengths + 1
        new = HostBatchState(
            slot=state.slot, token=token, count=count,
            episode_returns=jnp.where(d, 0.0, ret),
            episode_lengths=jnp.where(done, 0, length),
            returned_episode_returns=jnp.where(d, ret, state.returned_episode_returns),
            returned_episode_lengths=jnp.where(done, length, state.returned_episode_lengths),
        )
        info = {"final_obs": final, "returned_episode": done,
                "returned_episode_returns": new.returned_episode_returns,
                "returned_episode_lengths": new.returned_episode_lengths,
                **dict(zip(self.extra_info, extra, strict=True))}
        return StepResult(obs, new, reward, term, trunc, info)

    def _pack(self, state: HostBatchState, action) -> jax.Array:
        """(slot, token, count, *actions) as ONE int32 vector (float32 actions bitcast):
        JAX device_puts each callback argument, at ~30 us apiece per step on the CPU."""
        a = jnp.asarray(action, self._act.dtype).reshape(-1)
        if a.dtype != jnp.int32:
            a = jax.lax.bitcast_convert_type(a, jnp.int32)
        return jnp.concatenate([jnp.stack([state.slot, state.token, state.count]), a])

    def _check(self, keys) -> None:
        if keys.shape[0] != self.num_envs:
            raise ValueError(
                f"{self.name} expects a batch of {self.num_envs} keys (one per env), got "
                f"leading axis {keys.shape[0]}; split with jax.random.split(key, "
                f"{self.num_envs})."
            )


def seed_from_key(key: jax.Array) -> jax.Array:
    """A host reset seed (int32 in [0, 2**31 - 1)) drawn from a JAX key."""
    return jax.random.randint(key, (), 0, 2**31 - 1, dtype=jnp.int32)


__all__ = ["HostBackend", "HostBatchState", "HostBatchedEnv", "HostEnvError", "batched",
           "map_runs", "seed_from_key"]
