"""Any PettingZoo ParallelEnv (or AECEnv) as a multi-agent protocol env.

    env, params = make_pettingzoo(rps_v2.parallel_env)      # a factory, or an instance
    venv = mo_rl.batching.batched(env, 8)                    # 8 games stepped on the host

* Agents: `possible_agents` in their order form the leading agent axis (A);
  observations (A, ...), actions (A, ...), rewards (A, K), and the spaces the
  adapter reports carry that axis. Every agent must have the same (Box or
  Discrete) observation and action spaces.
* Agents that leave early: their observation is zeros and their reward 0
  from then on, and their action is not sent to the env. info["active"] (A,)
  says which agents acted in this step (mask their transitions with it);
  info["agent_terminated"] (A,) which left with terminated (no bootstrap).
  The episode ends when no agent is left: truncated if every agent that left in
  the last step was truncated, else terminated.
* Rewards: a (K,) vector per agent when the env has `reward_space(agent)`
  (MOMAland style), else K = 1.
* AEC envs go through PettingZoo's own `aec_to_parallel`.
* Seeding: reset seeds each game from the JAX key; its later resets (auto-reset)
  take seeds from a numpy generator seeded with that seed, so runs reproduce.

As for gymnasium_in, the single adapter is one host env behind ordered
io_callbacks (no vmap; evaluate_policy maps episodes sequentially), and
`make_batched(n)` (called by mo_rl.batching.batched) steps n games in one
callback with auto-reset on the host.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pettingzoo
from flax import struct
from jax.experimental import io_callback
from pettingzoo.utils.conversions import aec_to_parallel

from envs.adapters.gymnasium_in import _to_mo_space
from mo_rl.batching import HostBatchedEnv, seed_from_key
from mo_rl.env import Env, StepResult
from mo_rl.reward import RewardSpec
from mo_rl.spaces import Box, Discrete

EnvOrFactory = pettingzoo.ParallelEnv | pettingzoo.AECEnv | Callable[[], Any]


@struct.dataclass
class PettingZooParams:
    pass  # the host games hold every setting


@struct.dataclass
class PettingZooState:
    time: jax.Array  # steps since the last reset (the host game holds the real state)


def _parallel(env: Any) -> pettingzoo.ParallelEnv:
    if isinstance(env, pettingzoo.AECEnv):
        return aec_to_parallel(env)
    if isinstance(env, pettingzoo.ParallelEnv):
        return env
    raise TypeError(f"expected a PettingZoo ParallelEnv or AECEnv, got {type(env).__name__}")


def _same_space(env: pettingzoo.ParallelEnv, fn: str, agents: list[str]) -> Box | Discrete:
    spaces = [_to_mo_space(getattr(env, fn)(a), f"{a}'s {fn.split('_')[0]}") for a in agents]
    first = spaces[0]
    for a, s in zip(agents, spaces, strict=True):
        if (type(s), s.shape, np.dtype(s.dtype), getattr(s, "n", 0)) != (
                type(first), first.shape, np.dtype(first.dtype), getattr(first, "n", 0)):
            raise NotImplementedError(
                f"agent {a}'s {fn} {s} differs from {agents[0]}'s {first}; the agent axis needs "
                "one space for every agent (pad or wrap the env, e.g. with SuperSuit)."
            )
    return first


def _joint(space: Box | Discrete, a: int) -> Box | Discrete:
    """A per-agent space with a leading agent axis of size `a`."""
    shape = (a, *space.shape)
    if isinstance(space, Discrete):
        return Discrete(space.n, shape, space.dtype)
    return Box(np.broadcast_to(space.low, shape), np.broadcast_to(space.high, shape), shape,
               space.dtype)


class _Games:
    """`n` host games with the agent axis laid out as arrays; auto-reset optional."""

    def __init__(self, adapter: PettingZooIn, n: int, autoreset: bool,
                 games: list[pettingzoo.ParallelEnv] | None = None):
        self.a = adapter
        self.games = games if games is not None else [adapter._make() for _ in range(n)]
        self.autoreset = autoreset
        self.rngs = [np.random.default_rng(0) for _ in range(n)]

    def _obs(self, obs: dict[str, Any]) -> np.ndarray:
        a = self.a
        out = np.zeros((a.num_agents, *a.obs_space.shape), np.dtype(a.obs_space.dtype))
        for i, name in enumerate(a.agents):
            if name in obs:
                out[i] = np.asarray(obs[name]).reshape(a.obs_space.shape)
        return out

    def _reset_game(self, g: int, seed: int | None) -> np.ndarray:
        if seed is not None:
            self.rngs[g] = np.random.default_rng(seed)
        else:
            seed = int(self.rngs[g].integers(0, 2**31 - 1))
        obs, _ = self.games[g].reset(seed=seed)
        return self._obs(obs)

    def reset(self, seeds: np.ndarray | None) -> np.ndarray:
        seeds = [None] * len(self.games) if seeds is None else [int(s) for s in seeds]
        return np.stack([self._reset_game(g, s) for g, s in enumerate(seeds)])

    def _step_game(self, g: int, actions: np.ndarray):
        a, game = self.a, self.games[g]
        live = set(game.agents)
        if not live:
            raise RuntimeError(f"{a.name}: step after the episode ended (reset first)")
        act = {name: a._action(actions[i]) for i, name in enumerate(a.agents) if name in live}
        obs, rew, term, trunc, _ = game.step(act)
        active = np.array([name in live for name in a.agents])
        reward = np.zeros((a.num_agents, a.k), np.float32)
        left_term = np.zeros(a.num_agents, bool)
        left_trunc = np.zeros(a.num_agents, bool)
        for i, name in enumerate(a.agents):
            if name in live:
                reward[i] = a._reward(rew.get(name, 0.0), name)
                left_term[i] = bool(term.get(name, False))
                left_trunc[i] = bool(trunc.get(name, False)) and not left_term[i]
        o = self._obs(obs)
        done = not game.agents
        truncated = done and bool(left_trunc.any()) and not left_term.any()
        final = o
        if done and self.autoreset:
            o = self._reset_game(g, None)
        return o, reward, done and not truncated, truncated, final, active, left_term

    def step(self, actions: np.ndarray):
        res = [self._step_game(g, actions[g]) for g in range(len(self.games))]
        obs, reward, term, trunc, final, active, aterm = (np.stack(x) for x in zip(*res,
                                                                                    strict=True))
        return obs, reward, term, trunc, final, {"active": active, "agent_terminated": aterm}

    def close(self) -> None:
        for game in self.games:
            game.close()


class PettingZooIn(Env):
    """A PettingZoo game behind the multi-agent protocol (see the module doc). `env` is a
    ParallelEnv / AECEnv instance or a zero-argument factory of one (copies for batching
    are built by calling the factory, or by deep-copying an instance)."""

    is_host_env = True

    def __init__(self, env: EnvOrFactory, reward_names: tuple[str, ...] | None = None,
                 relations: tuple[str, ...] = ()):
        if isinstance(env, pettingzoo.AECEnv | pettingzoo.ParallelEnv):
            proto = env
            self._factory: Callable[[], Any] = lambda: copy.deepcopy(proto)
        elif callable(env):
            self._factory = env
        else:
            raise TypeError(f"expected a PettingZoo env or a factory, got {type(env).__name__}")
        self.host = self._make()
        self.agents = list(self.host.possible_agents)
        self.num_agents = len(self.agents)
        self.obs_space = _same_space(self.host, "observation_space", self.agents)
        self.act_space = _same_space(self.host, "action_space", self.agents)
        rs = getattr(self.host, "reward_space", None)
        self.k = int(np.prod(rs(self.agents[0]).shape)) if callable(rs) else 1
        self.vector_reward = callable(rs)
        if reward_names is None:
            reward_names = ("reward",) if self.k == 1 else tuple(f"r{i}" for i in range(self.k))
        if len(reward_names) != self.k:
            raise ValueError(f"reward_names has {len(reward_names)} entries but the game's "
                             f"reward has {self.k} component(s); pass exactly {self.k} names.")
        self.reward_spec = RewardSpec(tuple(reward_names), tuple(relations))
        md = getattr(self.host, "metadata", {}) or {}
        self._name = str(md.get("name", type(self.host.unwrapped).__name__))
        self._games: _Games | None = _Games(self, 1, autoreset=False, games=[self.host])

    def _make(self) -> pettingzoo.ParallelEnv:
        return _parallel(self._factory())

    @property
    def name(self) -> str:
        return self._name

    @property
    def default_params(self) -> PettingZooParams:
        return PettingZooParams()

    def observation_space(self, params) -> Box | Discrete:
        """The joint space, agent axis first (as every multi-agent protocol env)."""
        return _joint(self.obs_space, self.num_agents)

    def action_space(self, params) -> Box | Discrete:
        return _joint(self.act_space, self.num_agents)

    def make_batched(self, num_envs: int) -> HostBatchedEnv:
        """`num_envs` fresh games stepped in one callback (mo_rl.batching.batched)."""
        bool_a = jax.ShapeDtypeStruct((num_envs, self.num_agents), np.bool_)
        return HostBatchedEnv(self, num_envs, lambda: _Games(self, num_envs, autoreset=True),
                              extra_info={"active": bool_a, "agent_terminated": bool_a})

    # ---- host side -----------------------------------------------------------------
    def _action(self, a: np.ndarray) -> Any:
        if isinstance(self.act_space, Discrete):
            return int(a)
        return np.asarray(a, dtype=self.host.action_space(self.agents[0]).dtype)

    def _reward(self, r: Any, agent: str) -> np.ndarray:
        r = np.asarray(r, np.float32)
        if r.size != self.k or (self.vector_reward and r.shape != (self.k,)):
            raise ValueError(
                f"{self.name}: agent {agent} got a reward of shape {r.shape}, expected "
                f"({self.k},) for components {self.reward_spec.names} (from the game's "
                "reward_space, or 1 for a scalar reward)."
            )
        return r.reshape(self.k)

    def _games_or_raise(self) -> _Games:
        if self._games is None:
            raise RuntimeError(f"{self.name}: the host game was closed; build the adapter again.")
        return self._games

    def _host_reset(self, seed):
        return self._games_or_raise().reset(np.asarray([seed]))[0]

    def _host_step(self, actions):
        try:
            obs, reward, term, trunc, _, extra = self._games_or_raise().step(actions[None])
        except Exception as e:
            raise RuntimeError(f"{self.name}: host game raised in step: {e!r}") from e
        return (obs[0], reward[0], np.bool_(term[0]), np.bool_(trunc[0]),
                extra["active"][0], extra["agent_terminated"][0])

    # ---- protocol --------------------------------------------------------------------
    def reset(self, key, params=None):
        obs = io_callback(self._host_reset, self._obs_struct(), seed_from_key(key), ordered=True)
        return obs, PettingZooState(time=jnp.int32(0))

    def step(self, key, state: PettingZooState, action, params=None) -> StepResult:
        a = self.num_agents
        flag = jax.ShapeDtypeStruct((), np.bool_)
        mask = jax.ShapeDtypeStruct((a,), np.bool_)
        shapes = (self._obs_struct(), jax.ShapeDtypeStruct((a, self.k), np.float32), flag, flag,
                  mask, mask)
        obs, reward, term, trunc, active, aterm = io_callback(
            self._host_step, shapes, jnp.asarray(action, self.act_space.dtype), ordered=True)
        info = {"active": active, "agent_terminated": aterm}
        return StepResult(obs, PettingZooState(state.time + 1), reward, term, trunc, info)

    def _obs_struct(self) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((self.num_agents, *self.obs_space.shape),
                                    np.dtype(self.obs_space.dtype))

    def close(self) -> None:
        if self._games is not None:
            self._games.close()
            self._games = None


def make_pettingzoo(env: EnvOrFactory, **kwargs: Any) -> tuple[PettingZooIn, PettingZooParams]:
    """(adapter, params) for a PettingZoo env or factory; kwargs go to PettingZooIn."""
    adapter = PettingZooIn(env, **kwargs)
    return adapter, adapter.default_params
