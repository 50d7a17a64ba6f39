"""Everything the CARLA env asks of a server, behind one small class.

`Session.connect(...)` loads the town, switches the world to synchronous mode
(fixed_delta_seconds = 0.1, the simulator's dt) and its traffic manager to
synchronous mode with a fixed seed. Per episode, `start_episode` clears the
world's vehicles, walkers and sensors, spawns the ego (the leaderboard's
vehicle.lincoln.mkz_2020, role "hero") with a collision sensor at the route
start, background vehicles on the traffic manager's autopilot and walkers
with AI controllers (all seeded), and returns the first `Frame`. `tick`
applies a control, advances the world one step and reads every actor's pose
and velocity from ONE world snapshot. Any RPC failure raises, and the env
treats it as a lost server (envs.carla.env).

A fake session with the same four methods stands in for a server in the
tests (tests/envs/carla/test_env.py).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.carla.convert import ActorState, Frame
from envs.carla.server import CarlaServerLost, connect

DT = 0.1  # s, the driving simulator's step
EGO_BLUEPRINT = "vehicle.lincoln.mkz_2020"  # the leaderboard's ego vehicle


@dataclass
class Controls:
    steer: float  # [-1, 1] CARLA's normalised steering
    throttle: float
    brake: float


class Session:
    """One connected server (see the module docstring). Not thread-safe."""

    def __init__(self, client: Any, world: Any, tm: Any, tm_port: int):
        self.client, self.world, self.tm, self.tm_port = client, world, tm, tm_port
        self.ego = None
        self.sensor = None
        self.actor_ids: list[int] = []
        self.collisions: queue.Queue = queue.Queue()
        self.kinds: dict[int, str] = {}
        self.lights: list[Any] = []
        self.steer = 0.0

    # ---- connection ------------------------------------------------------------------------
    @classmethod
    def connect(cls, host: str, port: int, town: str, tm_port: int, seed: int,
                timeout: float = 10.0) -> Session:
        client = connect(host, port, timeout)
        world = client.get_world()
        if world.get_map().name.split("/")[-1] != town:
            client.set_timeout(max(timeout, 120.0))  # loading a town takes a while
            world = client.load_world(town)
            client.set_timeout(timeout)
        settings = world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = DT
        world.apply_settings(settings)
        tm = client.get_trafficmanager(tm_port)
        tm.set_synchronous_mode(True)
        tm.set_random_device_seed(seed)
        world.set_pedestrians_seed(seed)
        world.tick()
        return cls(client, world, tm, tm_port)

    def opendrive(self) -> str:
        return self.world.get_map().to_opendrive()

    def traffic_lights(self) -> dict[int, list[tuple[float, float, float]]]:
        """Per traffic-light actor id: its stop waypoints (x, y, yaw rad)."""
        out = {}
        self.lights = list(self.world.get_actors().filter("traffic.traffic_light"))
        for tl in self.lights:
            out[tl.id] = [(w.transform.location.x, w.transform.location.y,
                           np.deg2rad(w.transform.rotation.yaw)) for w in tl.get_stop_waypoints()]
        return out

    # ---- episodes ----------------------------------------------------------------------------
    def _clear(self) -> None:
        import carla

        if self.sensor is not None:
            self.sensor.stop()
        actors = self.world.get_actors()
        doomed = [a for a in actors if a.type_id.startswith(("vehicle.", "walker.", "sensor.",
                                                              "controller."))]
        for a in doomed:
            if a.type_id == "controller.ai.walker":
                a.stop()
        self.client.apply_batch_sync([carla.command.DestroyActor(a.id) for a in doomed], True)
        self.ego = self.sensor = None
        self.actor_ids = []
        self.kinds = {}
        self.collisions = queue.Queue()

    def start_episode(self, start: tuple[float, float, float], num_vehicles: int,
                      num_walkers: int, seed: int) -> Frame:
        """Clear the world, spawn the ego at start (x, y, yaw rad), traffic and walkers."""
        import carla

        self._clear()
        rng = np.random.default_rng(seed)
        lib = self.world.get_blueprint_library()
        cmap = self.world.get_map()
        x, y, yaw = start
        wp = cmap.get_waypoint(carla.Location(x=float(x), y=float(y), z=0.0))
        z = (wp.transform.location.z if wp is not None else 0.0) + 0.5
        bp = lib.find(EGO_BLUEPRINT)
        bp.set_attribute("role_name", "hero")
        tf = carla.Transform(carla.Location(x=float(x), y=float(y), z=z),
                             carla.Rotation(yaw=float(np.rad2deg(yaw))))
        self.ego = self.world.spawn_actor(bp, tf)
        self.sensor = self.world.spawn_actor(lib.find("sensor.other.collision"),
                                             carla.Transform(), attach_to=self.ego)
        q = self.collisions
        self.sensor.listen(lambda ev: q.put((ev.frame, ev.other_actor.id,
                                             ev.other_actor.type_id)))
        # background vehicles on autopilot at spawn points > 20 m from the ego
        spots = [s for s in cmap.get_spawn_points()
                 if s.location.distance(tf.location) > 20.0]
        rng.shuffle(spots)
        cars = [b for b in lib.filter("vehicle.*") if int(b.get_attribute("number_of_wheels")
                                                           .as_int()) == 4]
        batch = []
        for s in spots[:num_vehicles]:
            b = cars[int(rng.integers(len(cars)))]
            b.set_attribute("role_name", "autopilot")
            batch.append(carla.command.SpawnActor(b, s).then(
                carla.command.SetAutopilot(carla.command.FutureActor, True, self.tm_port)))
        for r in self.client.apply_batch_sync(batch, True):
            if not r.error:
                self.actor_ids.append(r.actor_id)
        self._spawn_walkers(lib, num_walkers, rng)
        self.world.tick()
        return self.read()

    def _spawn_walkers(self, lib: Any, num: int, rng: np.random.Generator) -> None:
        import carla

        if num <= 0:
            return
        walkers = list(lib.filter("walker.pedestrian.*"))
        batch = []
        for _ in range(num):
            loc = self.world.get_random_location_from_navigation()
            if loc is not None:
                b = walkers[int(rng.integers(len(walkers)))]
                if b.has_attribute("is_invincible"):
                    b.set_attribute("is_invincible", "false")
                batch.append(carla.command.SpawnActor(b, carla.Transform(loc)))
        ids = [r.actor_id for r in self.client.apply_batch_sync(batch, True) if not r.error]
        ctrl = lib.find("controller.ai.walker")
        res = self.client.apply_batch_sync(
            [carla.command.SpawnActor(ctrl, carla.Transform(), w) for w in ids], True)
        self.world.tick()
        for r in res:
            if r.error:
                continue
            c = self.world.get_actor(r.actor_id)
            c.start()
            c.go_to_location(self.world.get_random_location_from_navigation())
            c.set_max_speed(1.0 + 0.6 * float(rng.random()))
        self.actor_ids += ids

    # ---- steps ---------------------------------------------------------------------------------
    def tick(self, c: Controls) -> Frame:
        import carla

        self.steer = float(c.steer)
        self.ego.apply_control(carla.VehicleControl(throttle=float(c.throttle),
                                                    steer=float(c.steer), brake=float(c.brake)))
        self.world.tick()
        return self.read()

    def read(self) -> Frame:
        """The world now, from one snapshot (types cached per actor id)."""
        snap = self.world.get_snapshot()
        if not self.kinds:
            for a in self.world.get_actors():
                self.kinds[a.id] = a.type_id

        def state(s) -> ActorState:
            t, v = s.get_transform(), s.get_velocity()
            return ActorState(s.id, t.location.x, t.location.y, t.rotation.yaw, v.x, v.y,
                              self.kinds.get(s.id, ""))

        vehicles, walkers = [], []
        for s in snap:
            kind = self.kinds.get(s.id, "")
            if s.id == self.ego.id:
                continue
            if kind.startswith("vehicle."):
                vehicles.append(state(s))
            elif kind.startswith("walker."):
                walkers.append(state(s))
        hits = []
        while True:
            try:
                _frame, other, type_id = self.collisions.get_nowait()
            except queue.Empty:
                break
            hits.append((other, type_id))
        lights = {tl.id: str(tl.state) for tl in self.lights}
        ego = snap.find(self.ego.id)
        if ego is None:  # another client cleared the world (or the server restarted)
            raise CarlaServerLost(f"the ego actor {self.ego.id} is gone from the world")
        return Frame(ego=state(ego), vehicles=tuple(vehicles),
                     walkers=tuple(walkers), lights=lights, collisions=tuple(hits),
                     steer=self.steer, frame=snap.frame)

    def max_steer_rad(self) -> float:
        """The ego's front-wheel steering angle at steer = 1 (rad)."""
        wheels = self.ego.get_physics_control().wheels
        return float(np.deg2rad(max(w.max_steer_angle for w in wheels)))

    def close(self) -> None:
        """Destroy what this session spawned and give the world back in asynchronous mode
        (a synchronous world without a client would wait for ticks forever)."""
        try:
            self._clear()
            settings = self.world.get_settings()
            settings.synchronous_mode = False
            settings.fixed_delta_seconds = None
            self.world.apply_settings(settings)
            self.tm.set_synchronous_mode(False)
        except RuntimeError:
            pass  # the server is gone: nothing left to clean
