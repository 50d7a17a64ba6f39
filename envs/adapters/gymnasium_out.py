"""Any single-agent protocol env as a `gymnasium.Env` (jit-compiled inside).

Gymnasium requires a float reward, so `step` returns `reward = sum of the
components` by default, or `scalarize(reward_vector)` when a scalariser is
given (e.g. `mo_rl.scalarize.scalarizer(spec, "weighted_sum", weights=...)`);
the full (K,) vector is always in `info["reward_vector"]`, and the env also
exposes MO-Gymnasium's `reward_space` (a Box of shape (K,)). With
`vector_reward=True` the reward itself is the (K,) vector, as MO-Gymnasium
envs return it (check_env then warns that the reward is not a float).

Seeding: `reset(seed=s)` seeds gymnasium's `np_random`, from which a JAX key
is drawn; each step splits that key, so equal seeds and actions give equal
trajectories. Actions are validated on the host: a wrong shape or a value
outside the action space raises a ValueError stating the allowed range.
Multi-agent envs (num_agents set) belong at the PettingZoo boundary instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import jax
import numpy as np

from mo_rl.env import Env
from mo_rl.spaces import Box, Dict, Discrete


class GymnasiumOut(gymnasium.Env):
    metadata = {"render_modes": []}  # noqa: RUF012  (gymnasium's class attribute)
    reward_vector_info_key = "reward_vector"

    def __init__(
        self,
        env: Env,
        params: Any = None,
        scalarize: Callable[[jax.Array], jax.Array] | None = None,
        vector_reward: bool = False,
    ):
        if env.num_agents is not None:
            raise ValueError(
                f"{env.name} is a multi-agent env (num_agents={env.num_agents}); export it as a "
                "PettingZoo env instead of a gymnasium.Env."
            )
        self.env = env
        self.params = env.default_params if params is None else params
        self._act = env.action_space(self.params)
        self._obs = env.observation_space(self.params)
        self.observation_space = self._obs.to_gymnasium()
        self.action_space = self._act.to_gymnasium()
        spec = env.reward_spec
        self.reward_space = gymnasium.spaces.Box(
            np.array(spec.low, np.float32), np.array(spec.high, np.float32), dtype=np.float32
        )
        self.vector_reward = vector_reward
        self._key: jax.Array | None = None
        self._state = None
        score = (lambda r: r.sum()) if scalarize is None else scalarize

        def reset(key, params):
            key, sub = jax.random.split(key)
            obs, state = env.reset(sub, params)
            return key, obs, state

        def step(key, state, action, params):
            key, sub = jax.random.split(key)
            res = env.step(sub, state, action, params)
            return key, res, score(res.reward)

        self._reset_fn = jax.jit(reset)
        self._step_fn = jax.jit(step)

    def _host_obs(self, obs) -> Any:
        if isinstance(self._obs, Dict):  # several named parts (e.g. the driving BEV)
            return {k: np.asarray(obs[k], dtype=sp.dtype)
                    for k, sp in self.observation_space.spaces.items()}
        obs = np.asarray(obs, dtype=self.observation_space.dtype)
        return obs[()] if isinstance(self._obs, Discrete) and obs.shape == () else obs

    def _check_action(self, action) -> np.ndarray:
        space = self._act
        arr = np.asarray(action)
        if isinstance(space, Discrete):
            if arr.shape != tuple(space.shape):
                raise ValueError(
                    f"action {action!r} has shape {arr.shape}; {self.env.name} expects "
                    f"shape {tuple(space.shape)} with integers in 0..{space.n - 1}."
                )
            if not (np.all(np.floor(arr) == arr) and np.all(arr >= 0) and np.all(arr < space.n)):
                raise ValueError(
                    f"action {action!r} is out of bounds for {self.env.name}: allowed integers "
                    f"are 0..{space.n - 1}."
                )
            return arr.astype(np.int32)
        assert isinstance(space, Box)
        arr = arr.astype(np.float32)
        if arr.shape != tuple(space.shape):
            raise ValueError(
                f"action of shape {arr.shape} does not match {self.env.name}'s action space: "
                f"expected shape {tuple(space.shape)} with values in "
                f"[{self.action_space.low}, {self.action_space.high}]."
            )
        low, high = self.action_space.low, self.action_space.high
        if not np.all((arr >= low) & (arr <= high)):
            raise ValueError(
                f"action {arr} is out of bounds for {self.env.name}: each entry must lie in "
                f"[low, high] = [{low}, {high}] (NaN is never allowed); clip it first."
            )
        return arr

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        key = jax.random.key(int(self.np_random.integers(0, 2**31 - 1)))
        self._key, obs, self._state = self._reset_fn(key, self.params)
        return self._host_obs(obs), {}

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step().")
        action = self._check_action(action)
        self._key, res, score = self._step_fn(self._key, self._state, action, self.params)
        self._state = res.state
        info = jax.device_get(dict(res.info))
        info["reward_vector"] = np.asarray(res.reward, np.float32)
        reward = info["reward_vector"].copy() if self.vector_reward else float(score)
        return (
            self._host_obs(res.obs),
            reward,
            bool(res.terminated),
            bool(res.truncated),
            info,
        )


def to_gymnasium(
    env: Env, params: Any = None, scalarize=None, vector_reward: bool = False
) -> GymnasiumOut:
    """The protocol env `env` as a gymnasium.Env (see module docstring)."""
    return GymnasiumOut(env, params, scalarize, vector_reward)
