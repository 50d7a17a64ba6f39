"""Any Gymnasium or MO-Gymnasium env as a protocol env, via ordered io_callback.

The host env lives in a Python-side registry (`_HOST_ENVS`) keyed by an int
handle carried in the params (`HostEnvParams.handle`), so a jitted lax.scan
(and a training loop built on it) can drive it: reset/step become
`jax.experimental.io_callback(..., ordered=True)` calls that return
fixed-shape arrays whose shapes/dtypes come from the gymnasium spaces.

* Reward: a (K,) vector sized by the env's `reward_space` (MO-Gymnasium) when
  it has one, else K = 1 (the scalar reward). A host reward of another length
  raises a ValueError naming both shapes (surfacing as a JaxRuntimeError
  whose message contains it, as for any exception inside a callback).
* Seeding: reset draws `seed = randint(key, 0, 2**31 - 1)` in JAX
  (`seed_from_key`) and calls `host.reset(seed=seed)`, so the same JAX key
  reproduces the same host episode.
* Spaces: Box (float64 -> float32, int64 -> int32) and Discrete(start=0)
  observations/actions; anything else (Dict, Tuple, ...) must be flattened
  first (e.g. gymnasium.wrappers.FlattenObservation).

Limits: the callbacks are ordered effects, which JAX refuses to vmap, so one
adapter = one host env, stepped sequentially (VmapEnv cannot batch it; use
`evaluate_policy(..., sequential=True)`); AutoReset resets it under
lax.cond, i.e. only when an episode ends. Each step is a device->host->device
round trip; host `info` dicts are dropped (info == {}). Release the host env
with `close()`.

Training batches: `mo_rl.batching.batched(adapter, n)` (what every agent calls)
returns `adapter.make_batched(n)`: a HostBatchedEnv whose ONE callback per step
drives a gymnasium SyncVectorEnv (or AsyncVectorEnv, one process per env, with
`vector="async"`) of n fresh copies in SAME_STEP auto-reset mode, seeded from
the reset keys. Vector rewards travel through each copy's info
(`_RewardToInfo`), since gymnasium's vector envs store scalar rewards only.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback

from mo_rl.batching import HostBatchedEnv, seed_from_key
from mo_rl.env import Env, StepResult
from mo_rl.reward import RewardSpec
from mo_rl.spaces import Box, Discrete

_HOST_ENVS: dict[int, gymnasium.Env] = {}
_NEXT_HANDLE = itertools.count()


@struct.dataclass
class HostEnvParams:
    handle: jax.Array  # int32 key into _HOST_ENVS


@struct.dataclass
class HostEnvState:
    time: jax.Array  # steps since the last reset (the host env holds the real state)


def _canonical_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype JAX will use (x64 disabled): 64-bit -> 32-bit."""
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _to_mo_space(space: gymnasium.Space, what: str) -> Box | Discrete:
    if isinstance(space, gymnasium.spaces.Discrete):
        if int(space.start) != 0:
            raise NotImplementedError(
                f"{what} space {space} starts at {space.start}; only Discrete(n, start=0) is "
                "supported. Wrap the env to shift it to 0."
            )
        return Discrete(int(space.n))
    if isinstance(space, gymnasium.spaces.Box):
        dtype = _canonical_dtype(space.dtype)
        return Box(space.low.astype(dtype), space.high.astype(dtype), tuple(space.shape), dtype)
    raise NotImplementedError(
        f"{what} space {space} is not supported by the io_callback adapter (Box and Discrete "
        "only); flatten it first, e.g. gymnasium.wrappers.FlattenObservation(env)."
    )


def _struct(space: Box | Discrete) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(space.shape), np.dtype(space.dtype))


def make_host_env(env_id: str, **kwargs: Any) -> gymnasium.Env:
    """gymnasium.make, with MO-Gymnasium's ids registered when it is installed."""
    with contextlib.suppress(ImportError):
        import mo_gymnasium  # noqa: F401  (registers the mo-* ids)
    return gymnasium.make(env_id, **kwargs)


class GymnasiumIn(Env):
    """A (MO-)Gymnasium env behind the protocol. `env` is an instance or an id
    (then `make_kwargs` go to gymnasium.make). `reward_names` / `relations`
    name the components and give their preorder (default names r0..r{K-1},
    or "reward" for K = 1). `reward_info_key` reads the vector reward from
    info[key] instead of the returned reward (set automatically for envs
    exported by envs.adapters.gymnasium_out: "reward_vector")."""

    is_host_env = True

    def __init__(
        self,
        env: gymnasium.Env | str,
        reward_names: tuple[str, ...] | None = None,
        relations: tuple[str, ...] = (),
        reward_info_key: str | None = None,
        vector: str = "sync",
        **make_kwargs: Any,
    ):
        if vector not in ("sync", "async"):
            raise ValueError(f"vector must be 'sync' or 'async' (got {vector!r})")
        self.vector = vector
        host = make_host_env(env, **make_kwargs) if isinstance(env, str) else env
        self.host = host
        self._make_copy = _copier(env, host, make_kwargs)
        if reward_info_key is None and hasattr(host.unwrapped, "reward_vector_info_key"):
            reward_info_key = host.unwrapped.reward_vector_info_key  # mo_rl's own exporter
        self.reward_info_key = reward_info_key
        self._obs_space = _to_mo_space(host.observation_space, "observation")
        self._act_space = _to_mo_space(host.action_space, "action")
        reward_space = getattr(host.unwrapped, "reward_space", None)
        if reward_space is not None:
            k = int(np.prod(reward_space.shape))
            low, high = reward_space.low.reshape(k), reward_space.high.reshape(k)
        else:
            k, low, high = 1, None, None
        self.vector_reward = reward_space is not None
        if reward_names is None:
            reward_names = ("reward",) if k == 1 else tuple(f"r{i}" for i in range(k))
        if len(reward_names) != k:
            raise ValueError(
                f"reward_names has {len(reward_names)} entries but the host env's reward has "
                f"{k} component(s) (from {'reward_space' if reward_space else 'a scalar reward'}); "
                f"pass exactly {k} names."
            )
        self.reward_spec = RewardSpec(tuple(reward_names), tuple(relations), low, high)
        self.handle = next(_NEXT_HANDLE)
        _HOST_ENVS[self.handle] = host
        spec = getattr(host, "spec", None)
        self._name = spec.id if spec is not None else type(host.unwrapped).__name__

    @property
    def name(self) -> str:
        return self._name

    @property
    def default_params(self) -> HostEnvParams:
        return HostEnvParams(handle=jnp.int32(self.handle))

    def observation_space(self, params) -> Box | Discrete:
        return self._obs_space

    def action_space(self, params) -> Box | Discrete:
        return self._act_space

    def make_batched(self, num_envs: int) -> HostBatchedEnv:
        """`num_envs` fresh copies of the host env as one gymnasium vector env per
        `reset` (what mo_rl.batching.batched returns for this adapter)."""
        return HostBatchedEnv(self, num_envs, lambda: _VectorBackend(self, num_envs))

    # ---- host side ---------------------------------------------------------
    def _obs(self, obs) -> np.ndarray:
        return np.asarray(obs, dtype=np.dtype(self._obs_space.dtype)).reshape(self._obs_space.shape)

    def _host(self, handle) -> gymnasium.Env:
        try:
            return _HOST_ENVS[int(handle)]
        except KeyError:
            raise RuntimeError(
                f"host env handle {int(handle)} is not registered (closed, or params from "
                "another process); build the adapter again."
            ) from None

    def _host_reset(self, handle, seed):
        obs, _ = self._host(handle).reset(seed=int(seed))
        return self._obs(obs)

    def _host_step(self, handle, action):
        if isinstance(self._act_space, Discrete):
            action = int(action)
        else:
            action = np.asarray(action, dtype=self.host.action_space.dtype)
        obs, reward, terminated, truncated, info = self._host(handle).step(action)
        if self.reward_info_key is not None:
            reward = info[self.reward_info_key]
        reward = np.asarray(reward, dtype=np.float32)
        k = len(self.reward_spec)
        if reward.shape != (k,) and not (k == 1 and reward.size == 1 and not self.vector_reward):
            raise ValueError(
                f"host env {self.name} returned a reward of shape {reward.shape}, but the "
                f"adapter expects ({k},) for components {self.reward_spec.names} (from the "
                "env's reward_space, or 1 for a scalar reward). Fix the env's reward_space "
                "so that it matches the rewards it returns."
            )
        return (
            self._obs(obs),
            reward.reshape(k),
            np.bool_(terminated),
            np.bool_(truncated),
        )

    # ---- protocol ----------------------------------------------------------
    def reset(self, key, params: HostEnvParams):
        obs = io_callback(
            self._host_reset,
            _struct(self._obs_space),
            params.handle,
            seed_from_key(key),
            ordered=True,
        )
        return obs, HostEnvState(time=jnp.int32(0))

    def step(self, key, state: HostEnvState, action, params: HostEnvParams) -> StepResult:
        k = len(self.reward_spec)
        shapes = (
            _struct(self._obs_space),
            jax.ShapeDtypeStruct((k,), np.float32),
            jax.ShapeDtypeStruct((), np.bool_),
            jax.ShapeDtypeStruct((), np.bool_),
        )
        action = jnp.asarray(action, self._act_space.dtype)
        obs, reward, term, trunc = io_callback(
            self._host_step, shapes, params.handle, action, ordered=True
        )
        return StepResult(obs, HostEnvState(state.time + 1), reward, term, trunc, {})

    def close(self) -> None:
        host = _HOST_ENVS.pop(self.handle, None)
        if host is not None:
            host.close()


def _copier(env: gymnasium.Env | str, host: gymnasium.Env,
            make_kwargs: dict[str, Any]) -> Callable[[], gymnasium.Env]:
    """How to build another copy of the host env (for vector envs)."""
    if isinstance(env, str):
        return lambda: make_host_env(env, **make_kwargs)
    if host.spec is not None:
        return lambda: gymnasium.make(host.spec)
    return lambda: copy.deepcopy(host)


class _RewardToInfo(gymnasium.Wrapper):
    """Moves the (vector) reward into info["mo_rl_reward"] and returns 0.0, so that
    gymnasium's vector envs (scalar reward buffers) can carry it."""

    def __init__(self, env: gymnasium.Env, info_key: str | None):
        super().__init__(env)
        self.info_key = info_key

    def step(self, action):
        obs, reward, term, trunc, info = self.env.step(action)
        if self.info_key is not None:
            reward = info[self.info_key]
        info = {**info, "mo_rl_reward": np.asarray(reward, np.float32).reshape(-1)}
        return obs, 0.0, term, trunc, info


class _VectorBackend:
    """One gymnasium vector env (SAME_STEP auto-reset) for a HostBatchedEnv."""

    def __init__(self, adapter: GymnasiumIn, num_envs: int):
        self.adapter = adapter
        vector_reward = adapter.vector_reward or adapter.reward_info_key is not None
        key = adapter.reward_info_key
        make = adapter._make_copy
        fns = [(lambda: _RewardToInfo(make(), key)) if vector_reward else make] * num_envs
        cls = (gymnasium.vector.AsyncVectorEnv if adapter.vector == "async"
               else gymnasium.vector.SyncVectorEnv)
        self.vec = cls(fns, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
        self.vector_reward = vector_reward
        self.discrete = isinstance(adapter.action_space(None), Discrete)
        self.act_dtype = self.vec.single_action_space.dtype

    def reset(self, seeds: np.ndarray | None) -> np.ndarray:
        obs, _ = self.vec.reset(seed=None if seeds is None else [int(x) for x in seeds])
        return obs

    def step(self, actions: np.ndarray):
        actions = actions.astype(np.int64 if self.discrete else self.act_dtype)
        obs, reward, term, trunc, info = self.vec.step(actions)
        done = term | trunc
        final = np.array(obs, copy=True)
        if done.any():
            final[done] = np.stack(info["final_obs"][done])
        if self.vector_reward:
            reward = _batched_info(info, "mo_rl_reward", done)
        else:
            reward = np.asarray(reward, np.float32)[:, None]
        return obs, reward, term, trunc, final, {}

    def close(self) -> None:
        self.vec.close()


def _batched_info(info: dict[str, Any], key: str, done: np.ndarray) -> np.ndarray:
    """info[key] of every env: SAME_STEP mode keeps the finishing step's info of the envs
    that just reset under info["final_info"]."""
    out = np.asarray(info[key], np.float32) if key in info else None
    if done.any():
        fin = np.asarray(info["final_info"][key], np.float32)
        out = fin if out is None else np.where(done.reshape(-1, *[1] * (fin.ndim - 1)), fin, out)
    return out


def make_gymnasium(env_id: str, **kwargs: Any) -> tuple[GymnasiumIn, HostEnvParams]:
    """Registry entry for "gym:<id>": (adapter, params)."""
    env = GymnasiumIn(env_id, **kwargs)
    return env, env.default_params
