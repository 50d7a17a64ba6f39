"""CarlaEnv: a live CARLA server as a gymnasium.Env with the JAX simulator's interface.

    env = CarlaEnv(host="localhost", port=2000, town="Town01",
                   routes="routes_town01.xml", reward="vector", action_type="discrete")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Same spaces, observation layout, reward views, rules and episode metrics as
`envs.driving.make_driving("town01", ...)`, because they come from the same
code: the map arrays and route bank are built by envs.driving's OpenDRIVE
reader, route parser and planner from the SERVER's map.to_opendrive(); each
tick's actor lists become a DrivingState (envs.carla.convert) scored by
envs.carla.score (the simulator's own envs.driving.scoring.score_step) and
observed by envs.driving.observe, with every vehicle at its exact pose (the
simulator draws its vehicles at their lane points); discrete meta-actions
go through the simulator's own pursuit controller.

Controls: the simulator's (steering angle, acceleration) become CARLA's
VehicleControl with steer = angle / the ego's maximum wheel angle and
throttle / brake = acceleration / max_accel / max_brake (an open-loop map:
CARLA's throttle is not an acceleration, so the same command accelerates
differently than in the simulator).

Faults: `reset` connects within `timeout` or raises CarlaUnreachableError
(host, port, how to start a server). When the server stops answering
mid-episode, `step` ends the episode as TRUNCATED with a zero reward, the
last real observation, and info["server_lost"] = True (also
info["episode_metrics"]["server_lost"] = 1): no invented next state. The
next `reset` reconnects (restarting the server first when this env launched
it, `server=`); learners must drop that transition (see README, "Driving in
CARLA").
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from envs.carla.convert import Frame, WorldConverter, as_jnp, light_index
from envs.carla.score import step_state
from envs.carla.server import CarlaServer, CarlaServerLost, CarlaUnreachableError
from envs.carla.session import Controls, Session
from envs.driving import PRESETS, find_carla_file, make_driving, observe, value_inputs

LOST_ERRORS = (RuntimeError, OSError, CarlaServerLost)  # what a dead server raises


def map_file(xodr: str, town: str) -> Path:
    """The server's OpenDRIVE text as a cached file (envs.driving builds maps from files)."""
    root = Path(os.environ.get("MO_RL_CACHE", Path.home() / ".cache" / "mo_rl")) / "carla"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{town}-{hashlib.sha1(xodr.encode()).hexdigest()[:12]}.xodr"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(xodr)
        tmp.replace(path)
    return path


def observation(sim_env, state, params, lights, veh_pose):
    """DrivingEnv.observe with the server's light states instead of the simulator's
    light clock and the vehicles at their exact poses `veh_pose` (centres, (cos, sin))
    instead of their lane points (the same observe.py functions)."""
    if sim_env.obs_type == "vector":
        obs = observe.vector_obs(state, params, sim_env.num_obs_vehicles, lights, veh_pose)
    else:
        obs = observe.bev_with_measurements(state, params, sim_env.bev_view, lights, veh_pose)
    if getattr(sim_env, "value_inputs", False):  # + CaRL's critic-only inputs, as the sim
        return value_inputs.observation(obs, state, params, sim_env.reward, sim_env.episode_end)
    return obs


class CarlaEnv(gymnasium.Env):
    """See the module docstring. `connect(host, port, town, tm_port, seed, timeout)` returns
    a Session (the default) or a stand-in with its methods (tests)."""

    metadata = {"render_modes": []}  # noqa: RUF012  (gymnasium's class attribute)

    def __init__(self, host: str = "localhost", port: int = 2000, town: str = "Town01",
                 routes: str = "routes_town01.xml", reward: str = "vector",
                 action_type: str = "continuous", obs_type: str = "vector",
                 episode_end: str = "reward", num_vehicles: int = 8, num_walkers: int = 0,
                 max_vehicles: int = 16, tm_port: int = 8000, seed: int = 0,
                 timeout: float = 10.0, reconnect_tries: int = 3,
                 server: CarlaServer | None = None,
                 connect: Callable[..., Any] = Session.connect, route_ids=None,
                 **driving_kw: Any):
        self.host, self.port, self.town, self.tm_port = host, int(port), town, int(tm_port)
        self.routes_file = routes
        self.timeout, self.reconnect_tries = float(timeout), int(reconnect_tries)
        self.server, self._connect = server, connect
        self.num_vehicles, self.num_walkers = int(num_vehicles), int(num_walkers)
        self.seed_ = int(seed)
        self.route_ids = None if route_ids is None else list(route_ids)
        self._make = partial(make_driving, "town01", reward=reward, action_type=action_type,
                             obs_type=obs_type, max_vehicles=max_vehicles,
                             num_vehicles=min(num_vehicles, max_vehicles),
                             episode_end=episode_end, num_walkers=num_walkers, **driving_kw)
        # spaces and reward spec without a server (they do not depend on the map)
        probe, probe_params = make_driving("quick", reward=reward, action_type=action_type,
                                           obs_type=obs_type, max_vehicles=max_vehicles,
                                           episode_end=episode_end, **driving_kw)
        self.sim = probe
        self.max_steps = int(driving_kw.get("max_steps", PRESETS["town01"]["max_steps"]))
        self.reward_spec = probe.reward_spec
        self.observation_space = probe.observation_space(probe_params).to_gymnasium()
        self.action_space = probe.action_space(probe_params).to_gymnasium()
        spec = self.reward_spec
        self.reward_space = gymnasium.spaces.Box(np.array(spec.low, np.float32),
                                                 np.array(spec.high, np.float32),
                                                 dtype=np.float32)
        self.metric_names = tuple(jax.eval_shape(
            lambda: probe.step(jax.random.key(0), probe.reset(jax.random.key(0),
                                                              probe_params)[1],
                               probe.action_space(probe_params).sample(jax.random.key(0)),
                               probe_params).info["episode_metrics"]).keys()) + ("server_lost",)
        self.session = None
        self.params = None
        self.conv: WorldConverter | None = None
        self.state = None
        self._obs = None
        self._metrics: dict[str, float] = {}
        self.lost_episodes = 0

    # ---- connection and map ------------------------------------------------------------------
    def _open(self) -> None:
        """Connect (retrying after a lost server), build the map from the server's OpenDRIVE
        with envs.driving's reader, route parser and planner (cached per map text)."""
        last: Exception | None = None
        for attempt in range(max(1, self.reconnect_tries)):
            try:
                self.session = self._connect(self.host, self.port, self.town, self.tm_port,
                                             self.seed_, self.timeout)
                break
            except CarlaUnreachableError as e:
                last = e
                if attempt + 1 < self.reconnect_tries:
                    time.sleep(min(5.0, self.timeout))
        else:
            raise last  # type: ignore[misc]
        xodr = self.session.opendrive()
        path = map_file(xodr, self.town)
        if self.params is None or getattr(self, "_map_path", None) != path:
            routes = find_carla_file(self.routes_file)
            if routes is None:
                raise FileNotFoundError(
                    f"route file {self.routes_file!r} not found (a path, $MO_RL_CARLA_DIR or "
                    "shared/carla); CARLA's leaderboard ships them under data/")
            self.sim, self.params = self._make(map=str(path), routes=str(routes))
            self._map_path = path
            self._step = jax.jit(partial(step_state, self.sim))
            self._controls = jax.jit(self.sim._controls)
            self._observe = jax.jit(partial(observation, self.sim))
        m = self.params.map
        light_of = {}
        for actor_id, stops in self.session.traffic_lights().items():
            ids = [light_index(m, x, y, yaw) for x, y, yaw in stops]
            ids = [i for i in ids if i >= 0]
            if ids:
                light_of[actor_id] = max(set(ids), key=ids.count)
        self.conv = WorldConverter(m, self.params.routes, light_of, self.sim.max_vehicles,
                                   self.sim.max_walkers, float(self.params.max_steer))
        self.max_steer_carla = float(self.session.max_steer_rad()) if hasattr(
            self.session, "max_steer_rad") else float(self.params.max_steer)

    def _drop_session(self) -> None:
        s, self.session = self.session, None
        if s is not None:
            with contextlib.suppress(LOST_ERRORS):
                s.close()

    # ---- gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.session is None:
            self._open()
        nr = int(self.params.routes.num_routes)
        ids = self.route_ids or list(range(nr))
        route = int((options or {}).get("route", ids[int(self.np_random.integers(len(ids)))]))
        rb = self.params.routes
        start = (float(rb.xy[route, 0, 0]), float(rb.xy[route, 0, 1]), float(rb.yaw[route, 0]))
        ep_seed = int(self.np_random.integers(2**31 - 1))
        try:
            frame = self.session.start_episode(start, self.num_vehicles, self.num_walkers,
                                               ep_seed)
            if hasattr(self.session, "max_steer_rad"):
                self.max_steer_carla = float(self.session.max_steer_rad())
        except LOST_ERRORS as e:
            self._lost()
            raise CarlaServerLost(f"CARLA server {self.host}:{self.port} failed while "
                                  f"starting an episode: {e!r}") from e
        self.conv.new_episode()
        _, s0 = self.sim.reset_to_route(jax.random.key(ep_seed), self.params, route)
        o = as_jnp(self.conv.observed(frame, None))
        self.state = self._first_state(s0, o, frame, route)
        self._obs = jax.device_get(self._observe(self.state, self.params, o.lights,
                                                 (o.veh_xy, o.veh_cs)))
        self._metrics = {k: 0.0 for k in self.metric_names}
        return self._obs, {"route": route, "server_lost": False}

    def _first_state(self, s, o, frame: Frame, route: int):
        """The episode's first state: the simulator's reset state with the ego, vehicles and
        walkers of the first frame."""
        xy = jnp.stack([o.x, o.y])
        users = self.conv.users(frame, route, s)
        if "veh_lat" in s._fields:
            s = s._replace(veh_lat=o.veh_lat)
        return s._replace(x=o.x, y=o.y, yaw=o.yaw, v=o.v, last_xy=xy, veh_pt=o.veh_pt,
                          veh_u=o.veh_u, veh_v=o.veh_v, veh_active=o.veh_active,
                          **users._asdict())

    def step(self, action):
        if self.state is None:
            raise RuntimeError("CarlaEnv.step before reset")
        p = self.params
        steer, accel = (float(x) for x in self._controls(self.state, jnp.asarray(action), p))
        ctrl = Controls(steer=float(np.clip(steer / self.max_steer_carla, -1, 1)),
                        throttle=float(np.clip(accel / float(p.max_accel), 0, 1)),
                        brake=float(np.clip(-accel / float(p.max_brake), 0, 1)))
        try:
            frame = self.session.tick(ctrl)
        except LOST_ERRORS as e:
            return self._lost(e)
        frame = dataclasses.replace(frame, steer=steer / float(p.max_steer))
        o = as_jnp(self.conv.observed(frame, float(self.state.yaw)))
        o = o._replace(users=self.conv.users(frame, int(self.state.route), self.state))
        new, reward, term, trunc, info = self._step(self.state, o, p)
        self.state = new
        self._obs = jax.device_get(self._observe(new, p, o.lights, (o.veh_xy, o.veh_cs)))
        info = jax.device_get(info)
        self._metrics = {**{k: float(v) for k, v in info["episode_metrics"].items()},
                         "server_lost": 0.0}
        info["episode_metrics"] = dict(self._metrics)
        info["server_lost"] = False
        info["dropped_actors"] = self.conv.dropped
        return (self._obs, np.asarray(reward, np.float32), bool(term), bool(trunc), info)

    def _lost(self, error: Exception | None = None):
        """End the episode on a lost server (see the module docstring)."""
        self.lost_episodes += 1
        self._drop_session()
        if self.server is not None:  # we launched it: bring it back for the next reset
            self.server.restart()
        if self.state is None or error is None:
            return None
        self.state = None
        metrics = {**self._metrics, "server_lost": 1.0}
        info = {"server_lost": True, "episode_metrics": metrics, "error": repr(error)}
        return (self._obs, np.zeros(len(self.reward_spec), np.float32), False, True, info)

    def close(self) -> None:
        self._drop_session()
        self.state = None
