"""A stand-in for a CARLA server session (no server): the real Town01 OpenDRIVE text, an
ego that follows its controls with the simulator's bicycle model, scripted actors, and a
switch that makes the "server" die at a given tick."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from envs.carla.convert import ActorState, Frame
from envs.driving import find_carla_file, sim

TOWN01 = find_carla_file("Town01.xodr")
ROUTES = find_carla_file("routes_town01.xml")


class FakeSession:
    """Session's methods (envs.carla.session); `die_at`: the tick at which every call
    starts raising RuntimeError, as a dead server's RPCs do."""

    max_steer = 0.6

    def __init__(self, die_at: int | None = None, vehicles: tuple[ActorState, ...] = ()):
        self.text = Path(TOWN01).read_text()
        self.die_at = die_at
        self.ticks = 0
        self.vehicles = vehicles
        self.closed = False

    def _check(self) -> None:
        if self.die_at is not None and self.ticks >= self.die_at:
            raise RuntimeError("time-out of 10000ms while waiting for the simulator, make sure "
                               "the simulator is ready and connected to localhost:2000")

    def opendrive(self) -> str:
        return self.text

    def traffic_lights(self) -> dict:
        return {}

    def max_steer_rad(self) -> float:
        return self.max_steer

    def start_episode(self, start, num_vehicles, num_walkers, seed) -> Frame:
        self._check()
        self.x, self.y, self.yaw = start
        self.v = 0.0
        return self.frame()

    def frame(self) -> Frame:
        ego = ActorState(1, self.x, self.y, float(np.rad2deg(self.yaw)),
                         self.v * np.cos(self.yaw), self.v * np.sin(self.yaw), "vehicle.hero")
        return Frame(ego=ego, vehicles=self.vehicles, frame=self.ticks)

    def tick(self, c) -> Frame:
        self.ticks += 1
        self._check()
        accel = 3.0 * c.throttle - 8.0 * c.brake
        x, y, yaw, v, _ = sim.bicycle(self.x, self.y, self.yaw, self.v, c.steer * self.max_steer,
                                      accel, 0.1, 25.0)
        self.x, self.y, self.yaw, self.v = float(x), float(y), float(yaw), float(v)
        return self.frame()

    def close(self) -> None:
        self._check()
        self.closed = True


class FakeServer:
    """Connect function of a fake server: counts connections, hands out FakeSessions."""

    def __init__(self, die_at: int | None = None, **kw):
        self.die_at, self.kw = die_at, kw
        self.sessions: list[FakeSession] = []

    def __call__(self, host, port, town, tm_port, seed, timeout) -> FakeSession:
        # only the first session dies (the server is "restarted" for the next one)
        s = FakeSession(self.die_at if not self.sessions else None, **self.kw)
        self.sessions.append(s)
        return s
