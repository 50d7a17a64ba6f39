"""Any multi-agent protocol env as a PettingZoo ParallelEnv or AECEnv (jit-compiled inside).

Agent i of the protocol env (row i of the leading agent axis) is "agent_i". Its spaces
are row i of the env's spaces: the coopetition games give each agent
Box(0, endowment_i, (1,)). Actions are validated on the host: a missing agent, a wrong
shape or a value outside the agent's space raises a ValueError stating the allowed range
(the protocol env itself would silently clip). PettingZoo needs a float reward per agent:
the sum of the agent's K components by default, or `weights @ reward_i` with `weights`;
the (K,) vector is always in infos[agent]["reward_vector"]. The AEC interface is
PettingZoo's own parallel_to_aec conversion, with each action checked as it is given.

Seeding: `reset(seed=s)` starts a JAX key from s (a fresh key per unseeded reset); each
step splits it, so equal seeds and actions give equal trajectories.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import jax
import numpy as np
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec_wrapper

from mo_rl.env import Env
from mo_rl.spaces import Box, Discrete


def agent_space(space: Box | Discrete, i: int) -> gymnasium.Space:
    """Row i of a protocol space with a leading agent axis, as a gymnasium space."""
    if isinstance(space, Discrete):
        return gymnasium.spaces.Discrete(space.n) if len(space.shape) == 1 else \
            gymnasium.spaces.MultiDiscrete(np.full(space.shape[1:], space.n))
    dtype = np.dtype(space.dtype)
    low = np.broadcast_to(np.asarray(space.low, dtype), space.shape)[i]
    high = np.broadcast_to(np.asarray(space.high, dtype), space.shape)[i]
    return gymnasium.spaces.Box(low.copy(), high.copy(), dtype=dtype)


class PettingZooParallel(ParallelEnv):
    """A protocol env with `num_agents` as a PettingZoo ParallelEnv (see module docstring)."""

    metadata = {"render_modes": [], "name": "mo_rl", "is_parallelizable": True}  # noqa: RUF012

    def __init__(self, env: Env, params: Any = None, weights: Sequence[float] | None = None):
        if env.num_agents is None:
            raise ValueError(f"{env.name} is single-agent; use envs.adapters.gymnasium_out.")
        self.env = env
        self.params = env.default_params if params is None else params
        self.metadata = {**self.metadata, "name": env.name}
        self.render_mode = None
        n = env.num_agents
        self.possible_agents = [f"agent_{i}" for i in range(n)]
        self.agents: list[str] = []
        obs_space, act_space = env.observation_space(self.params), env.action_space(self.params)
        agents = list(enumerate(self.possible_agents))
        self._obs_spaces = {a: agent_space(obs_space, i) for i, a in agents}
        self._act_spaces = {a: agent_space(act_space, i) for i, a in agents}
        self._act_shape, self._act_dtype = act_space.shape, np.dtype(act_space.dtype)
        k = len(env.reward_spec)
        self._weights = np.ones(k) if weights is None else np.asarray(weights, np.float64)
        if self._weights.shape != (k,):
            raise ValueError(f"weights must have one entry per reward component ({k}); "
                             f"got shape {self._weights.shape}.")
        self._reset = jax.jit(env.reset)
        self._step = jax.jit(env.step)
        self._key: jax.Array | None = None
        self._state = None

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.Space:
        return self._act_spaces[agent]

    def _next_key(self) -> jax.Array:
        self._key, k = jax.random.split(self._key)
        return k

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None or self._key is None:
            seed = np.random.SeedSequence().entropy % 2**31 if seed is None else seed
            self._key = jax.random.key(int(seed))
        obs, self._state = self._reset(self._next_key(), self.params)
        self.agents = list(self.possible_agents)
        obs = np.asarray(obs)
        return ({a: obs[i] for i, a in enumerate(self.agents)},
                {a: {} for a in self.agents})

    def check_action(self, agent: str, action: Any) -> np.ndarray:
        """The action as an array of the agent's space, or a ValueError saying why not."""
        space = self._act_spaces[agent]
        a = np.asarray(action)
        if isinstance(space, gymnasium.spaces.Box):
            if a.size != int(np.prod(space.shape)):
                raise ValueError(f"{agent}: action of shape {a.shape}; its space is {space}.")
            a = a.astype(space.dtype).reshape(space.shape)
            if not (np.all(np.isfinite(a)) and space.contains(a)):
                raise ValueError(f"{agent}: action {a.tolist()} is outside its space "
                                 f"[{space.low.tolist()}, {space.high.tolist()}].")
        elif not space.contains(a.astype(np.int64)):
            raise ValueError(f"{agent}: action {a.tolist()} is outside its space {space}.")
        return a

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("step() after the episode ended; call reset().")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"no action for {missing}; every live agent acts each step.")
        joint = np.stack([self.check_action(a, actions[a]) for a in self.possible_agents])
        joint = joint.astype(self._act_dtype).reshape(self._act_shape)
        res = self._step(self._next_key(), self._state, joint, self.params)
        self._state = res.state
        obs, reward = np.asarray(res.obs), np.asarray(res.reward, np.float64)
        term, trunc = bool(res.terminated), bool(res.truncated)
        agents = self.agents
        out = ({a: obs[i] for i, a in enumerate(agents)},
               {a: float(reward[i] @ self._weights) for i, a in enumerate(agents)},
               dict.fromkeys(agents, term), dict.fromkeys(agents, trunc),
               {a: {"reward_vector": reward[i]} for i, a in enumerate(agents)})
        if term or trunc:
            self.agents = []
        return out

    def close(self) -> None:
        pass


class _CheckedAEC(parallel_to_aec_wrapper):
    """PettingZoo's parallel_to_aec, checking each action when it is given (not only when
    the last agent of the round acts)."""

    def step(self, action):
        agent = self.agent_selection
        if not (self.terminations.get(agent) or self.truncations.get(agent)):
            self.env.check_action(agent, action)
        super().step(action)


def parallel_env(env: Env, params: Any = None, **kw: Any) -> PettingZooParallel:
    return PettingZooParallel(env, params, **kw)


def aec_env(env: Env, params: Any = None, **kw: Any) -> parallel_to_aec_wrapper:
    return _CheckedAEC(PettingZooParallel(env, params, **kw))


__all__ = ["PettingZooParallel", "aec_env", "agent_space", "parallel_env"]
