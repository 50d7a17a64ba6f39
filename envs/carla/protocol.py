"""CARLA servers behind the env protocol, so every agent trains / evaluates on them.

    env = CarlaIn([("localhost", 2000), ("localhost", 2003)], reward="vector",
                  action_type="discrete")
    venv = mo_rl.batching.batched(env, 2)   # ONE ordered io_callback steps both servers

* `batched(env, n)` (what every agent calls) returns a HostBatchedEnv whose
  host side holds n CarlaEnvs, one per server (distinct ports, distinct
  traffic-manager ports), auto-resetting on the host. Each env set (one per
  `reset`, e.g. one per seed) takes its own n servers from the endpoint list,
  since a CARLA server runs one world: seeds x num_envs servers are needed.
* `env.reset` / `env.step` (single env, io_callback) drive one CarlaEnv on the
  first endpoint: what `mo_rl.rollout.evaluate_policy` uses for held-out
  episodes (the eval-only sim-to-CARLA check).
* BEV observations ({"bev": uint8 raster, "measurements": float32}) cross the
  callback as ONE flat uint8 array (`ObsBytes`: each part's bytes, in key
  order) and are split back into the dict inside JAX, so the batched host
  adapter, which carries plain arrays, moves them unchanged (bit for bit).
* info["episode_metrics"] carries the simulator's metric names plus
  "server_lost"; info["server_lost"] (num_envs,) marks the truncated step of
  an episode whose server died (see envs.carla.env): its reward is zero and its
  final observation is the last real one. info["discard"] carries the same flag under
  the name the learners read: PPO (mo_rl.gae) gives such a step advantage 0 and cuts
  the step before it there; IQN (agents.iqn.td_targets) drops windows starting at it
  and cuts windows before it. The restart step after a checkpoint restore
  (mo_rl.batching) is discarded the same way.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from envs.carla.env import CarlaEnv
from envs.carla.server import PORT_STEP, TM_PORT
from mo_rl.batching import HostBatchedEnv, seed_from_key
from mo_rl.env import Env, StepResult
from mo_rl.spaces import Box, Dict

Endpoint = tuple  # (host, port) or (host, port, tm_port)


class CarlaParams(NamedTuple):
    """Everything lives on the host; `max_steps` is the episode cap (the studies check
    their evaluation horizon against it)."""

    max_steps: jax.Array


def endpoints(host: str, ports: str | int, num: int = 1) -> list[tuple[str, int, int]]:
    """Endpoints from a CLI value: "2000,2003" (explicit) or 2000 with `num` servers
    spaced PORT_STEP apart; traffic-manager ports TM_PORT + i."""
    if isinstance(ports, str) and "," in ports:
        plist = [int(p) for p in ports.split(",") if p.strip()]
    else:
        plist = [int(ports) + PORT_STEP * i for i in range(num)]
    return [(host, p, TM_PORT + i) for i, p in enumerate(plist)]


class ObsBytes:
    """A dict observation space (the BEV's) as one flat uint8 array: `pack` one observation
    on the host (numpy), `unpack` in JAX, leading batch axes kept (bitcasts only)."""

    def __init__(self, space: Dict):
        self.parts = [(k, tuple(b.shape), np.dtype(b.dtype)) for k, b in sorted(
            space.spaces.items())]
        sizes = [int(np.prod(shape)) * dt.itemsize for _, shape, dt in self.parts]
        self.bounds = np.cumsum([0, *sizes]).tolist()
        self.space = Box(0, 255, (self.bounds[-1],), jnp.uint8)

    def pack(self, obs: dict) -> np.ndarray:
        return np.concatenate([np.ascontiguousarray(obs[k], dt).reshape(-1).view(np.uint8)
                               for k, _, dt in self.parts])

    def unpack(self, flat: jax.Array) -> dict:
        lead = flat.shape[:-1]
        out = {}
        for (k, shape, dt), a, b in zip(self.parts, self.bounds[:-1], self.bounds[1:],
                                         strict=True):
            seg = flat[..., a:b]
            if dt.itemsize > 1:
                seg = jax.lax.bitcast_convert_type(seg.reshape(lead + (-1, dt.itemsize)), dt)
            out[k] = seg.reshape(lead + shape)
        return out


class CarlaIn(Env):
    """See the module docstring; `carla_kw` go to every CarlaEnv (reward, action_type,
    obs_type, episode_end, num_vehicles, num_walkers, town, routes, timeout, connect, ...)."""

    is_host_env = True

    def __init__(self, servers: list[Endpoint], **carla_kw: Any):
        if not servers:
            raise ValueError("CarlaIn needs at least one (host, port) endpoint")
        self.servers = [tuple(s) if len(s) == 3 else (s[0], int(s[1]), TM_PORT + i)
                        for i, s in enumerate(servers)]
        self.kw = dict(carla_kw)
        self.single = self.make_env(self.servers[0])
        self.reward_spec = self.single.reward_spec
        self.metric_names = self.single.metric_names
        self.num_agents = None
        self._free = list(range(len(self.servers)))
        self._open: list[_Backend] = []
        space = self.single.sim.observation_space(None)
        # dict observations (BEV) cross the callbacks as bytes (ObsBytes)
        self.bytes = ObsBytes(space) if isinstance(space, Dict) else None
        flat = space if self.bytes is None else self.bytes.space
        self._obs = jax.ShapeDtypeStruct(flat.shape, np.dtype(flat.dtype))
        act = self.single.action_space
        self._act = jax.ShapeDtypeStruct(act.shape, np.dtype(act.dtype))

    def make_env(self, ep: Endpoint) -> CarlaEnv:
        host, port, tm = ep
        return CarlaEnv(host=host, port=port, tm_port=tm, **self.kw)

    @property
    def name(self) -> str:
        s = self.single
        return f"Carla-{s.sim.reward}-{s.sim.action_type}-{s.sim.obs_type}"

    @property
    def default_params(self) -> CarlaParams:
        return CarlaParams(max_steps=jnp.int32(self.single.max_steps))

    def observation_space(self, params=None):
        return self.single.sim.observation_space(None)

    def action_space(self, params=None):
        return self.single.sim.action_space(None)

    # ---- single env (held-out episodes) -------------------------------------------------------
    def host_obs(self, obs) -> np.ndarray:
        """A CarlaEnv observation as the callbacks carry it."""
        if self.bytes is None:
            return np.asarray(obs).astype(self._obs.dtype)
        return self.bytes.pack(obs)

    def jax_obs(self, obs: jax.Array):
        """The callbacks' observation -> the env's (the dict, for BEV)."""
        return obs if self.bytes is None else self.bytes.unpack(obs)

    def _host_reset(self, seed):
        return self.host_obs(self.single.reset(seed=int(seed))[0])

    def _host_step(self, action):
        a = int(action) if self._act.shape == () else np.asarray(action)
        obs, r, term, trunc, info = self.single.step(a)
        m = np.array([info["episode_metrics"][k] for k in self.metric_names], np.float32)
        return (self.host_obs(obs), r, np.bool_(term), np.bool_(trunc), m,
                np.bool_(info["server_lost"]))

    def reset(self, key, params=None):
        obs = io_callback(self._host_reset, self._obs, seed_from_key(key), ordered=True)
        return self.jax_obs(obs), jnp.int32(0)

    def step(self, key, state, action, params=None) -> StepResult:
        k = len(self.reward_spec)
        f, b = jax.ShapeDtypeStruct, np.bool_
        shapes = (self._obs, f((k,), np.float32), f((), b), f((), b),
                  f((len(self.metric_names),), np.float32), f((), b))
        obs, r, term, trunc, m, lost = io_callback(
            self._host_step, shapes, jnp.asarray(action, self._act.dtype), ordered=True)
        # "discard": the learners' key for steps that are not real transitions (mo_rl.gae)
        info = {"episode_metrics": dict(zip(self.metric_names, m, strict=True)),
                "server_lost": lost, "discard": lost}
        return StepResult(self.jax_obs(obs), state + 1, r, term, trunc, info)

    # ---- batched: one env per server ----------------------------------------------------------
    def make_batched(self, num_envs: int) -> HostBatchedEnv:
        f = jax.ShapeDtypeStruct
        extra = {f"episode_metrics/{k}": f((num_envs,), np.float32) for k in self.metric_names}
        extra["server_lost"] = f((num_envs,), np.bool_)
        extra["discard"] = f((num_envs,), np.bool_)  # what the learners read (mo_rl.gae)
        return CarlaBatchedEnv(self, num_envs, lambda: _Backend(self, num_envs), extra)

    def take(self, n: int, backend: _Backend) -> list[int]:
        """n free servers for a new env set; sets of earlier runs (the runner never closes
        them) give theirs back first, oldest first."""
        while len(self._free) < n and self._open:
            self._open[0].close(stolen=True)
        if len(self._free) < n:
            raise RuntimeError(
                f"{self.name}: an env set of {n} envs needs {n} CARLA servers but only "
                f"{len(self._free)} of the {len(self.servers)} endpoints are free (each seed "
                "holds its own set: seeds x num_envs servers); pass more ports with "
                "--carla-port 2000,2003,... or use fewer seeds / envs")
        got, self._free = self._free[:n], self._free[n:]
        self._open.append(backend)
        return got

    def give_back(self, backend: _Backend) -> None:
        self._free = sorted(set(self._free) | set(backend.idx))
        self._open = [b for b in self._open if b is not backend]

    def close(self) -> None:
        self.single.close()


class _Carried:
    """The adapter as HostBatchedEnv sees it: its observation space is what the callbacks
    carry (ObsBytes' flat bytes for a dict observation)."""

    def __init__(self, adapter: CarlaIn):
        self._adapter = adapter

    def __getattr__(self, name: str):
        return getattr(self._adapter, name)

    def observation_space(self, params=None):
        b = self._adapter.bytes
        return self._adapter.observation_space(params) if b is None else b.space


class CarlaBatchedEnv(HostBatchedEnv):
    """HostBatchedEnv with the flat 'episode_metrics/<name>' extras grouped back into
    info["episode_metrics"] (the key the agents read), and dict observations unpacked."""

    def __init__(self, adapter: CarlaIn, num_envs: int, make_backend, extra_info):
        super().__init__(_Carried(adapter), num_envs, make_backend, extra_info)
        self.adapter = adapter

    def observation_space(self, params):
        return self.adapter.observation_space(params)

    def reset(self, keys, params=None):
        obs, state = super().reset(keys, params)
        return self.adapter.jax_obs(obs), state

    def step(self, keys, state, action, params=None) -> StepResult:
        res = super().step(keys, state, action, params)
        info = dict(res.info)
        pre = "episode_metrics/"
        info["episode_metrics"] = {k[len(pre):]: info.pop(k) for k in list(info)
                                   if k.startswith(pre)}
        info["final_obs"] = self.adapter.jax_obs(info["final_obs"])
        return res._replace(obs=self.adapter.jax_obs(res.obs), info=info)


class _Backend:
    """n CarlaEnvs (one per server) stepped in turn, auto-resetting (mo_rl.batching)."""

    def __init__(self, adapter: CarlaIn, n: int):
        self.adapter = adapter
        self.stolen = False
        self.idx = adapter.take(n, self)
        self.envs = [adapter.make_env(adapter.servers[i]) for i in self.idx]
        self.names = adapter.metric_names

    def reset(self, seeds: np.ndarray | None) -> np.ndarray:
        return np.stack([self.adapter.host_obs(e.reset(seed=None if s is None else int(s))[0])
                         for e, s in zip(self.envs, seeds if seeds is not None
                                         else [None] * len(self.envs), strict=True)])

    def step(self, actions: np.ndarray):
        if self.stolen:
            raise RuntimeError(
                "this env set's CARLA servers went to a newer env set (more seeds x num_envs "
                "than servers); pass more --carla-port values or use fewer seeds / envs")
        n = len(self.envs)
        obs, final, rew, term, trunc, lost = [], [], [], np.zeros(n, bool), np.zeros(n, bool), \
            np.zeros(n, bool)
        metrics = np.zeros((len(self.names), n), np.float32)
        for i, env in enumerate(self.envs):
            a = actions[i]
            o, r, term[i], trunc[i], info = env.step(int(a) if a.shape == () else a)
            metrics[:, i] = [info["episode_metrics"][k] for k in self.names]
            lost[i] = info["server_lost"]
            final.append(self.adapter.host_obs(o))
            rew.append(r)
            if term[i] or trunc[i]:
                o, _ = env.reset()  # reconnects after a lost server
            obs.append(self.adapter.host_obs(o))
        extra = {f"episode_metrics/{k}": metrics[j] for j, k in enumerate(self.names)}
        extra["server_lost"] = lost
        extra["discard"] = lost
        return np.stack(obs), np.stack(rew), term, trunc, np.stack(final), extra

    def close(self, stolen: bool = False) -> None:
        for e in self.envs:
            e.close()
        self.stolen = stolen
        self.adapter.give_back(self)


def make_carla(host: str = "localhost", port: str | int = 2000, num_servers: int = 1,
               **carla_kw: Any) -> tuple[CarlaIn, CarlaParams]:
    """Registry entry: envs.make("Carla", port="2000,2003", reward="carl", ...)."""
    env = CarlaIn(endpoints(host, port, num_servers), **carla_kw)
    return env, env.default_params
