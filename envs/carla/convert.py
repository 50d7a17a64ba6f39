"""CARLA actor lists (plain data) -> the driving simulator's state layout.

A `Frame` is what a session reads from a server after one tick: the ego's
and every other actor's pose and velocity, the traffic-light states and the
collision sensor's contacts, as plain numbers (tests write frames by hand,
no server needed). `WorldConverter` turns frames into `score.Observed` and
`DrivingState` records on the map arrays built from the SAME OpenDRIVE, so
envs.driving's observation, reward and rule functions run on them unchanged.

Conversions (what is exact and what is not):
* ego: pose, speed, steering exactly; acceleration and yaw rate are finite
  differences over the 0.1 s tick (the simulator integrates them).
* vehicles: exact poses (`Observed.veh_xy`, `veh_cs`) for collisions, TTC,
  Roach's hazard test and the observation (CarlaEnv passes them to
  envs.driving.observe as `veh_pose`); the state also keeps each vehicle as
  (lane point, distance along it, offset from the lane centre) (`veh_pt`,
  `veh_u`, `veh_lat`: its nearest lane point with a compatible heading), the
  simulator's layout, for what reads a bare state (e.g. expert_policy's
  hazard checks).
* the `max_vehicles` (`max_walkers`) actors nearest to the ego get slots, stable
  per actor id while they stay among the nearest (the leaderboard's same-actor
  collision filter needs it); farther ones are left out of the state (counted
  in `WorldConverter.dropped`; a collision with one still counts).
* walkers: world poses as is (ped_xy / ped_yaw / ped_v); their place on the
  route (ped_ri, ped_q, ped_dir) is computed from the pose.
* lights: each CARLA traffic light's stop waypoints are matched to the map
  light that controls the junction connectors starting there (`light_index`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from envs.carla.score import Observed
from envs.driving import road_users, sim
from envs.driving.roadmap import MapArrays

LIGHT_STATES = {"Green": sim.GREEN, "Yellow": sim.YELLOW, "Red": sim.RED}  # Off/Unknown: green


@dataclass(frozen=True)
class ActorState:
    """One actor at one tick, in CARLA's world frame (metres, yaw in DEGREES as CARLA
    reports rotation.yaw; velocity in m/s)."""

    id: int
    x: float
    y: float
    yaw: float
    vx: float = 0.0
    vy: float = 0.0
    type_id: str = ""

    @property
    def speed(self) -> float:
        return float(np.hypot(self.vx, self.vy))


@dataclass(frozen=True)
class Frame:
    """The world after one tick (see the module docstring)."""

    ego: ActorState
    vehicles: tuple[ActorState, ...] = ()
    walkers: tuple[ActorState, ...] = ()
    lights: dict[int, str] = field(default_factory=dict)  # light actor id -> "Red", ...
    collisions: tuple[tuple[int, str], ...] = ()  # (other actor id, its type_id) this tick
    steer: float = 0.0  # applied steering command in [-1, 1] (the simulator's units)
    frame: int = 0  # server frame number


def collision_kind(type_id: str) -> str:
    """The leaderboard's CollisionTest classes: 'vehicle', 'walker' or 'static'."""
    if type_id.startswith("vehicle"):
        return "vehicle"
    if type_id.startswith("walker"):
        return "walker"
    return "static"


def light_index(m: MapArrays, x: float, y: float, yaw: float, max_dist: float = 6.0) -> int:
    """The map light controlling the junction connectors entered from a stop waypoint at
    (x, y) heading `yaw` (rad): the light of the lane there if it is a connector, else of
    its successors. -1 when nothing matches within `max_dist` m."""
    xy = np.asarray(m.pt_xy)
    ok = np.cos(np.asarray(m.pt_yaw) - yaw) > 0.0
    d = np.where(ok, np.hypot(xy[:, 0] - x, xy[:, 1] - y), np.inf)
    pt = int(np.argmin(d))
    if not np.isfinite(d[pt]) or d[pt] > max_dist:
        return -1
    lane_light = np.asarray(m.lane_light)
    lane = int(np.asarray(m.pt_lane)[pt])
    if lane_light[lane] >= 0:
        return int(lane_light[lane])
    succ = np.asarray(m.lane_succ)[lane][: int(np.asarray(m.lane_nsucc)[lane])]
    lights = [int(lane_light[s]) for s in succ if lane_light[s] >= 0]
    return lights[0] if lights else -1


class WorldConverter:
    """Frames of one server -> Observed / DrivingState fields on map `m`, route bank `rb`.

    `lights_of` maps CARLA light actor ids to map light indices (see `light_index`);
    `max_vehicles` / `max_walkers` are the slot counts of the DrivingEnv.
    """

    def __init__(self, m: MapArrays, routes, light_of: dict[int, int], max_vehicles: int,
                 max_walkers: int = 0, max_steer: float = 0.6):
        self.m, self.rb = m, routes
        self.pt_xy = np.asarray(m.pt_xy, np.float64)
        self.pt_yaw = np.asarray(m.pt_yaw, np.float64)
        self.seg = np.asarray(m.pt_seg_len, np.float64)
        self.tree = cKDTree(self.pt_xy)
        self.light_of = dict(light_of)
        self.num_lights = int(np.asarray(m.light_group).shape[0])
        self.max_vehicles, self.max_walkers = max_vehicles, max_walkers
        self.max_steer = max_steer
        self.slots: dict[int, int] = {}
        self.walker_slots: dict[int, int] = {}
        self.dropped = 0

    def new_episode(self) -> None:
        self.slots, self.walker_slots, self.dropped = {}, {}, 0

    # ---- localisation ---------------------------------------------------------------------
    def localise(self, xy: np.ndarray, yaw: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lane point, distance along its segment, offset left of the lane centre) of
        poses (n, 2), yaw (n,) rad: the nearest of the 8 nearest points heading within
        90 deg (else the nearest)."""
        if len(xy) == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.float32)
        k = min(8, len(self.pt_xy))
        _, idx = self.tree.query(xy, k=k)
        idx = idx.reshape(len(xy), k)
        ok = np.cos(self.pt_yaw[idx] - yaw[:, None]) > 0.0
        pick = idx[np.arange(len(xy)), np.where(ok.any(1), ok.argmax(1), 0)]
        d = xy - self.pt_xy[pick]
        c, s = np.cos(self.pt_yaw[pick]), np.sin(self.pt_yaw[pick])
        u = np.clip(d[:, 0] * c + d[:, 1] * s, 0.0, self.seg[pick])
        lat = d[:, 1] * c - d[:, 0] * s
        return pick.astype(np.int32), u.astype(np.float32), lat.astype(np.float32)

    def _slotted(self, actors, table: dict[int, int], capacity: int,
                 ego: ActorState) -> list[tuple[int, ActorState]]:
        """(slot, actor) of the `capacity` actors nearest to the ego. An actor keeps its
        slot while it stays among them (the same-actor collision filter needs stable
        indices); newcomers take the slots that were freed. Updates `table` in place."""
        near = sorted(actors, key=lambda a: (np.hypot(a.x - ego.x, a.y - ego.y), a.id))
        keep, rest = near[:capacity], near[capacity:]
        self.dropped += len(rest)
        ids = {a.id for a in keep}
        for gone in [i for i in table if i not in ids]:
            del table[gone]
        free = sorted(set(range(capacity)) - set(table.values()))
        for a in keep:
            if a.id not in table:
                table[a.id] = free.pop(0)
        return [(table[a.id], a) for a in keep]

    # ---- frames -----------------------------------------------------------------------------
    def observed(self, frame: Frame, prev_yaw: float | None) -> Observed:
        """The Observed record of a frame; `prev_yaw` (rad) of the last tick gives the yaw
        rate (0 on the first frame of an episode)."""
        n = self.max_vehicles
        veh_xy = np.zeros((n, 2), np.float32)
        veh_yaw = np.zeros(n, np.float64)
        veh_v = np.zeros(n, np.float32)
        active = np.zeros(n, bool)
        for s, a in self._slotted(frame.vehicles, self.slots, n, frame.ego):
            veh_xy[s], veh_yaw[s], veh_v[s], active[s] = (a.x, a.y), np.deg2rad(a.yaw), a.speed, 1
        pt, u, lat = self.localise(veh_xy.astype(np.float64), veh_yaw)
        pt = np.where(active, pt, 0).astype(np.int32)
        u = np.where(active, u, 0.0).astype(np.float32)
        lat = np.where(active, lat, 0.0).astype(np.float32)
        lights = np.full(max(self.num_lights, 1), sim.GREEN, np.int32)
        for actor_id, state in frame.lights.items():
            i = self.light_of.get(actor_id, -1)
            if i >= 0:
                lights[i] = LIGHT_STATES.get(state, sim.GREEN)
        hit_v = np.zeros(n, bool)
        hit_w = np.zeros(self.max_walkers, bool)
        hit_s = np.zeros(1, bool)  # one slot for every static object
        for other, type_id in frame.collisions:
            kind = collision_kind(type_id)
            if kind == "vehicle" and n:
                # an actor without a slot (beyond max_vehicles) still counts as a vehicle:
                # on a free slot, else slot 0 (the slot only feeds the same-actor filter)
                free = np.nonzero(~active)[0]
                s = self.slots.get(other, int(free[0]) if len(free) else 0)
                hit_v[s] = True
            elif kind == "walker" and self.max_walkers:
                hit_w[self.walker_slots.get(other, 0)] = True
            else:  # static objects (and road users the env has no slots for)
                hit_s[0] = True
        e = frame.ego
        yaw = np.deg2rad(e.yaw)
        yaw_rate = 0.0 if prev_yaw is None else (
            (yaw - prev_yaw + np.pi) % (2 * np.pi) - np.pi) / 0.1
        f32 = np.float32
        return Observed(
            x=f32(e.x), y=f32(e.y), yaw=f32((yaw + np.pi) % (2 * np.pi) - np.pi),
            v=f32(e.speed), steer=f32(frame.steer * self.max_steer), yaw_rate=f32(yaw_rate),
            veh_xy=veh_xy, veh_cs=np.stack([np.cos(veh_yaw), np.sin(veh_yaw)], 1).astype(f32),
            veh_v=veh_v, veh_active=active, veh_pt=pt, veh_u=u, veh_lat=lat, lights=lights,
            hit_vehicle=hit_v, hit_walker=hit_w, hit_static=hit_s)

    def walkers(self, frame: Frame, route: int) -> dict[str, np.ndarray]:
        """The walker fields of DrivingState (road_users.Users layout) for a frame: world
        poses, and each walker's crossing place on the route (nearest route index, lateral
        offset, direction of its lateral motion)."""
        w = self.max_walkers
        xy = np.zeros((w, 2), np.float32)
        yaw = np.zeros(w, np.float32)
        v = np.zeros(w, np.float32)
        vel = np.zeros((w, 2), np.float32)
        active = np.zeros(w, bool)
        for s, a in self._slotted(frame.walkers, self.walker_slots, w, frame.ego):
            xy[s], yaw[s], v[s] = (a.x, a.y), np.deg2rad(a.yaw), a.speed
            vel[s], active[s] = (a.vx, a.vy), True
        rb = self.rb
        n = int(np.asarray(rb.num)[route])
        rxy = np.asarray(rb.xy)[route, :n]
        ryaw = np.asarray(rb.yaw)[route, :n]
        ri = np.argmin(np.linalg.norm(xy[:, None] - rxy[None], axis=-1), axis=1) if n else \
            np.zeros(w, int)
        left = np.stack([-np.sin(ryaw[ri]), np.cos(ryaw[ri])], 1)
        q = np.sum((xy - rxy[ri]) * left, 1)
        lat_v = np.sum(vel * left, 1)
        return dict(ped_xy=xy, ped_yaw=yaw, ped_v=v, ped_active=active,
                    ped_ri=ri.astype(np.int32), ped_q=q.astype(np.float32),
                    ped_dir=np.where(lat_v < 0, -1.0, 1.0).astype(np.float32),
                    ped_vd=v.copy(), ped_armed=np.zeros(w, bool))


    def users(self, frame: Frame, route: int, state) -> road_users.Users:
        """The road users of `state` with the walkers of `frame` (parked cars and the
        per-walker memory the simulator keeps stay as they are)."""
        now = road_users.Users(**{k: getattr(state, k) for k in road_users.Users._fields})
        return now._replace(**{k: jnp.asarray(v) for k, v in self.walkers(frame, route).items()})


def as_jnp(o: Observed) -> Observed:
    return Observed(*(None if x is None else jax.tree.map(jnp.asarray, x) for x in o))
