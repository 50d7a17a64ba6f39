"""DrivingEnv: a jittable, vmappable urban driving env with CARLA-leaderboard rules.

    env, params = make_driving(map="procedural", reward="vector", obs_type="vector")
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

Reward choice (constructor) fixes `reward_spec`; all three views are computed
in every step and returned in info["reward_views"]:
* "vector" (K=4): safety, rules, progress, comfort with the preorder
  safety > rules > progress > comfort.
    safety   = -1 on collision or off-road, - ttc_weight on a time-to-collision violation
    rules    = -1 on running a red light, -1 on route deviation,
               - speed_weight * clip((v - limit) / 2.23, 0, 1)
    progress = progress_scale * metres gained along the route
    comfort  = -(number of nuPlan comfort limits broken this step) / 6
* "carl" (K=1): CaRL's simple reward as in its code (envs.driving.rewards).
* "roach" (K=1): Roach's summed reward as in its code (envs.driving.rewards).

Episode rules (`episode_end`, static):
* "reward" (default, training): each reward's own rules.
    carl:   collision, red light, blocked (90 s), route deviation (the
            leaderboard's InRouteTest), >= 95% of the ego box off the
            drivable area, CaRL's eval_time (1200 s; a termination in its
            code), route completed;
    roach:  collision, red light, blocked (90 s), lateral distance to the
            route > 3.5 m and growing, route completed;
    vector: collision, off-road (centre off every lane strip), route
            deviation > deviation_m, blocked (blocked_s), route completed.
* "leaderboard" (the evaluation default of the studies): CARLA's leaderboard
  (envs.driving.rules): collisions and red lights are penalties, not episode
  ends; the route ends when completed (> 99% and within 10 m of its end), on
  route deviation (30 m / 30% of the route > 15 m away), when blocked for
  180 s, or at the route timeout (0.8 s per metre + 5 s; no penalty).
* "common": the "vector" rules for every reward (earlier evaluation rule set,
  kept so committed results stay reproducible).
Completing a route TERMINATES the episode under every rule set (no reward can
follow it); only time limits (the route timeout and the hard cap `max_steps`)
truncate.

Metrics (info["episode_metrics"], the same under every rule set): route
completion, the leaderboard's infraction score (vehicle collisions counted with
its filters x 0.6, red lights x 0.7, x (1 - % of the driven route outside the
route lanes)), driving score = RC x infraction score, success = route completed
with no leaderboard infraction ('Perfect'); speeding and off-road are reported
but are no leaderboard infractions.

Geometry: collision = exact box overlap (separating axes) of the ego with an
active vehicle; off-road = the ego centre lies off every drivable lane (raster,
0.5 m); red light = the ego's route progress passes a stop line (start of a
light-controlled junction connector) while that light is red (yellow is
allowed); speeding = v > limit + speed_tol.

Actions: action_type="continuous": Box(-1, 1, (2,)) = (steer, accel), steer
* max_steer, accel > 0 throttle (* max_accel), < 0 brake (* max_brake).
action_type="discrete": meta-actions (target speed x lateral offset):
a = i_speed * len(offsets) + i_offset, target speed = speeds[i] * limit,
the offset shifts the pure-pursuit target sideways from the route (+ =
lateral direction of sim.py); a low-level pursuit + speed controller
(the same as expert_policy's) turns it into steer and accel.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from envs.driving import observe, passing, rewards, road_users, rules, scoring, sim, value_inputs
from envs.driving.roadmap import LANE, MapArrays
from envs.driving.routes import RouteBank
from envs.driving.scoring import box_off_road_share as _box_off_road_share  # noqa: F401 (tests)
from mo_rl.env import Env, StepResult
from mo_rl.reward import RewardSpec
from mo_rl.spaces import Box, Discrete

COMFORT = rewards.COMFORT  # nuPlan comfort limits (CaRL's rl_config)
PENALTY = rules.PENALTY  # leaderboard penalty factors
EPISODE_END = ("reward", "leaderboard", "common")


class DrivingParams(NamedTuple):
    map: MapArrays
    routes: RouteBank
    num_vehicles: Any = 16
    max_steps: Any = 1000
    dt: Any = 0.1
    green_s: Any = 10.0
    yellow_s: Any = 3.0
    allred_s: Any = 2.0
    blocked_s: Any = 90.0  # CaRL's and Roach's Blocked() default; the vector rules too
    deviation_m: Any = 6.0  # vector / common rules
    # leaderboard rules (envs.driving.rules cites the code)
    lb_deviation_m: Any = 30.0
    lb_deviation_share: Any = 0.30
    lb_blocked_s: Any = 180.0
    lb_timeout_s_per_m: Any = 0.8
    lb_timeout_delay_s: Any = 5.0
    speed_tol: Any = 0.0
    max_steer: Any = 0.6
    max_accel: Any = 3.0
    max_brake: Any = 8.0
    v_max: Any = 25.0
    idm_accel: Any = 2.0
    idm_decel: Any = 3.0
    idm_s0: Any = 2.5
    idm_headway: Any = 1.2
    ttc_weight: Any = 0.1
    speed_weight: Any = 0.1
    progress_scale: Any = 0.1
    carl_hint: Any = rewards.CARL["terminal_hint"]
    carl_eval_time_s: Any = rewards.CARL["eval_time"]
    carl_off_road_share: Any = rewards.CARL["off_road_share"]
    roach_terminal: Any = -1.0
    # road users (issue 19; envs.driving.road_users). Capacities are the env's static
    # max_walkers / max_obstacles (array shapes, like max_vehicles); these are the active
    # counts (<= capacity), so 0 keeps today's world exactly
    num_walkers: Any = 0
    num_obstacles: Any = 0
    stop_signs: Any = False  # obey / count the map's stop signs (MapArrays.stop_pt)
    # observe.bev_map(map): the BEV's static map layers, precomputed once per map
    # (make_driving fills it for obs_type="bev"; None: computed in every observation)
    bev_map: Any = None
    ped_cross_rate: Any = 0.1  # 1/s: a waiting walker starts crossing (if the gap is safe)
    ped_gap_s: Any = 4.0  # s: a walker waits while the ego is closer than this (+ 5 m)
    ped_sudden_share: Any = 0.25  # share of walkers stepping out in front of the ego
    ped_trigger_m: Any = 25.0  # m: route distance at which a sudden walker steps out
    ped_xwalk_share: Any = 0.5  # share of the other walkers crossing at crosswalks
    ped_speed_min: Any = 1.0  # m/s
    ped_speed_max: Any = 1.6
    ped_kerb: Any = 1.5  # m: walkers wait this far outside the road edges
    obst_clear_min: Any = 0.1  # m between a parked car and a lane-centred car's side
    obst_clear_max: Any = 0.6
    # lane changes of background traffic (issue 19; sim.lane_changes); rates 0 = none
    lc_rate: Any = 0.0  # 1/s: a vehicle moves to a parallel lane with > 10 m more room ahead
    cutin_rate: Any = 0.0  # 1/s: a vehicle beside and ahead of the ego cuts into its lane
    cutin_gap_min: Any = 4.0  # m, bumper gap to the ego that a cut-in leaves, at least
    cutin_gap_max: Any = 15.0  # m, at most
    lc_gap_min: Any = 4.0  # m, safe bumper gap to other vehicles on the target lane (+ speed)
    lc_lat_speed: Any = 1.2  # m/s sideways (a 3.5 m lane in about 3 s)


class DrivingState(NamedTuple):
    x: jax.Array
    y: jax.Array
    yaw: jax.Array
    v: jax.Array
    steer: jax.Array
    accel: jax.Array
    yaw_rate: jax.Array
    lat_acc: jax.Array
    veh_pt: jax.Array  # (N,)
    veh_u: jax.Array
    veh_v: jax.Array
    veh_turn: jax.Array
    veh_vf: jax.Array  # desired-speed factor
    veh_active: jax.Array
    veh_lat: jax.Array  # (N,) lateral offset from the lane centre during a lane change
    route: jax.Array  # route index in the bank
    prog: jax.Array  # route point index reached
    light_offset: jax.Array  # (G,)
    t: jax.Array
    still: jax.Array  # consecutive steps with v < 0.1
    n_collision: jax.Array  # vehicle collisions as the leaderboard counts them
    n_off_road: jax.Array
    n_red_light: jax.Array
    n_speeding: jax.Array
    deviation: jax.Array  # the active rules' route deviation ended the episode
    blocked: jax.Array  # the active rules' blocked condition ended the episode
    lb: rules.LeaderboardState
    # CaRL's reward memory: penalty windows, comfort history, lane-centring counter
    ttc_ticks: jax.Array
    comfort_ticks: jax.Array  # (6,)
    hist: jax.Array  # (4, HISTORY) lon. acc, lat. acc, |acc|, unwrapped yaw (oldest first)
    hist_n: jax.Array
    last_xy: jax.Array  # (2,) ego position at the last step (finite differences)
    last_vel: jax.Array  # (2,)
    lane_counter: jax.Array
    roach_lat: jax.Array  # Roach's last lateral distance to the route
    # road users (issue 19): W = env.max_walkers, O = env.max_obstacles
    ped_xy: jax.Array  # (W, 2) walker centre, world m
    ped_yaw: jax.Array  # (W,) walker heading
    ped_v: jax.Array  # (W,) walker speed (0 while waiting at the kerb)
    ped_active: jax.Array  # (W,) bool walker present
    obst_xy: jax.Array  # (O, 2) parked car centre (a sim.VEH_LEN x sim.VEH_WID box)
    obst_yaw: jax.Array  # (O,)
    obst_active: jax.Array  # (O,) bool
    n_stop_sign: jax.Array  # stop signs run (leaderboard RunStopSign, 0.8)
    n_ped_collision: jax.Array  # pedestrian collisions (leaderboard 0.5)
    n_static_collision: jax.Array  # static collisions (leaderboard 0.65)
    # road-user memory (envs.driving.road_users.Users)
    ped_ri: jax.Array  # (W,) route index of the walker's crossing
    ped_q: jax.Array  # (W,) lateral position on its crossing line
    ped_dir: jax.Array  # (W,) +1 / -1 crossing direction
    ped_vd: jax.Array  # (W,) walking speed
    ped_armed: jax.Array  # (W,) bool sudden walker waiting for the ego
    ped_seed: jax.Array  # (W,) uint32
    obst_ri: jax.Array  # (O,) route index of the parked car
    obst_q: jax.Array  # (O,) its lateral offset from the route
    veh_sign_done: jax.Array  # (N,) bool: stood at the coming stop sign's line


class DrivingEnv(Env[DrivingState, DrivingParams]):
    """See the module docstring. Static choices are constructor arguments."""

    def __init__(self, reward: str = "vector", action_type: str = "continuous",
                 obs_type: str = "vector", max_vehicles: int = 16,
                 discrete_speeds: tuple[float, ...] = (0.0, 0.5, 1.0, 1.25),
                 discrete_offsets: tuple[float, ...] = (-1.5, 0.0, 1.5),
                 bev_size: int = 64, bev_ahead: float = observe.CARL_AHEAD,
                 bev_behind: float = observe.CARL_BEHIND, num_obs_vehicles: int = 8,
                 episode_end: str = "reward", max_walkers: int = 0, max_obstacles: int = 0,
                 value_inputs: bool = False):
        if reward not in ("vector", "carl", "roach"):
            raise ValueError(f"reward must be 'vector', 'carl' or 'roach', got {reward!r}")
        if episode_end not in EPISODE_END:
            raise ValueError(f"episode_end must be one of {EPISODE_END}, got {episode_end!r}")
        if action_type not in ("continuous", "discrete"):
            raise ValueError(f"action_type must be 'continuous' or 'discrete', got {action_type!r}")
        if obs_type not in ("vector", "bev"):
            raise ValueError(f"obs_type must be 'vector' or 'bev', got {obs_type!r}")
        self.reward = reward
        self.episode_end = episode_end
        self.action_type = action_type
        self.obs_type = obs_type
        self.max_vehicles = max_vehicles
        self.max_walkers = int(max_walkers)
        self.max_obstacles = int(max_obstacles)
        self.discrete_speeds = tuple(discrete_speeds)
        self.discrete_offsets = tuple(discrete_offsets)
        # BEV field of view in metres (CaRL's 78 m ahead / 50 m behind by default)
        self.bev_view = observe.BevView(bev_size, float(bev_ahead), float(bev_behind)).check()
        self.bev_size = bev_size
        self.bev_res = self.bev_view.res  # metres per pixel
        self.num_obs_vehicles = num_obs_vehicles
        self.value_inputs = bool(value_inputs)  # + CaRL's critic-only inputs (value_inputs.py)
        if reward == "vector":
            self.reward_spec = RewardSpec(
                ("safety", "rules", "progress", "comfort"),
                ("safety > rules", "rules > progress", "progress > comfort"),
                low=(-1.0 - 1.0, -3.0, 0.0, -1.0), high=(0.0, 0.0, 1.0, 0.0))
        elif reward == "carl":
            self.reward_spec = RewardSpec(("carl",), low=-1.0, high=1.0)
        else:
            self.reward_spec = RewardSpec(("roach",), low=-40.0, high=1.0)

    @property
    def name(self) -> str:
        return f"Driving-{self.reward}-{self.action_type}-{self.obs_type}"

    @property
    def default_params(self) -> DrivingParams:
        """Params of the "quick" preset (procedural map, short random routes)."""
        from envs.driving import make_driving

        return make_driving("quick", max_vehicles=self.max_vehicles, obs_type=self.obs_type)[1]

    # ------------------------------------------------------------------ spaces
    def action_space(self, params: DrivingParams | None = None):
        if self.action_type == "continuous":
            return Box(-1.0, 1.0, (2,))
        return Discrete(len(self.discrete_speeds) * len(self.discrete_offsets))

    def observation_space(self, params: DrivingParams | None = None):
        if self.obs_type == "vector":
            space = Box(-observe.VEC_CLIP, observe.VEC_CLIP,
                        (observe.vector_size(self.num_obs_vehicles),))
        else:
            space = observe.bev_space(self.bev_view)
        return value_inputs.space(space) if self.value_inputs else space

    # ------------------------------------------------------------------ reset
    observes_state = True

    def reset(self, key: jax.Array, params: DrivingParams) -> tuple[jax.Array, DrivingState]:
        state = self.reset_state(key, params)
        return self.observe(state, params), state

    def reset_state(self, key: jax.Array, params: DrivingParams) -> DrivingState:
        bits = jax.random.bits(key, (self.max_vehicles + 3,), jnp.uint32)
        route = (bits[-1] % params.routes.num_routes).astype(jnp.int32)
        return self._initial_state(bits, params, route)

    def reset_to_route(self, key: jax.Array, params: DrivingParams,
                       route: jax.Array) -> tuple[jax.Array, DrivingState]:
        """Reset on a given route of the bank (tests, evaluation over all routes)."""
        bits = jax.random.bits(key, (self.max_vehicles + 3,), jnp.uint32)
        state = self._initial_state(bits, params, jnp.asarray(route, jnp.int32))
        return self.observe(state, params), state

    def _initial_state(self, bits: jax.Array, params: DrivingParams,
                       route: jax.Array) -> DrivingState:
        """Episode start from random bits (n vehicle words, 2 episode words, route word);
        per-vehicle draws are hashed from one word (see sim.mix32)."""
        m, rb = params.map, params.routes
        xy0 = rb.xy[route, 0]
        yaw0 = rb.yaw[route, 0]
        # traffic: n distinct slots among the route's C spawn slots, by a random offset and
        # a jittered stride (O(n), unlike a weighted choice without replacement)
        n = self.max_vehicles
        c = rb.spawn.shape[1]
        stride = max(c // n, 1)
        w = bits[:n]
        idx = ((bits[n] % c).astype(jnp.int32) + jnp.arange(n) * stride
               + (w % stride).astype(jnp.int32)) % c
        veh_pt = rb.spawn[route, idx]
        active = rb.spawn_ok[route, idx] & (jnp.arange(n) < params.num_vehicles)
        turn = (sim.mix32(w ^ jnp.uint32(0x9E3779B9)) >> 8).astype(jnp.int32)
        veh_vf = 0.7 + 0.3 * sim.unit_float(sim.mix32(w ^ jnp.uint32(0x7F4A7C15)))
        ng = m.light_nphase.shape[0]
        groups = jnp.arange(ng, dtype=jnp.uint32)
        light_offset = 100.0 * sim.unit_float(sim.mix32(bits[n + 1] + groups))
        f = jnp.zeros((), jnp.float32)
        i = jnp.zeros((), jnp.int32)
        return DrivingState(
            x=xy0[0], y=xy0[1], yaw=yaw0, v=f, steer=f, accel=f, yaw_rate=f, lat_acc=f,
            veh_pt=veh_pt, veh_u=jnp.zeros(n), veh_v=m.pt_speed[veh_pt] * 0.5,
            veh_turn=turn, veh_vf=veh_vf,
            veh_active=active, veh_lat=jnp.zeros(n, jnp.float32), route=route,
            prog=jnp.zeros((), jnp.int32),
            light_offset=light_offset,
            t=jnp.zeros((), jnp.int32), still=jnp.zeros((), jnp.int32),
            n_collision=jnp.zeros((), jnp.int32), n_off_road=jnp.zeros((), jnp.int32),
            n_red_light=jnp.zeros((), jnp.int32), n_speeding=jnp.zeros((), jnp.int32),
            deviation=jnp.zeros((), bool), blocked=jnp.zeros((), bool),
            lb=rules.initial_state(rb.pt[route, 0]), ttc_ticks=i,
            comfort_ticks=jnp.zeros(6, jnp.int32),
            hist=jnp.zeros((4, rewards.HISTORY), jnp.float32), hist_n=i,
            last_xy=xy0, last_vel=jnp.zeros(2, jnp.float32), lane_counter=i, roach_lat=f,
            n_stop_sign=i, n_ped_collision=i, n_static_collision=i,
            veh_sign_done=jnp.zeros(n, bool),
            **road_users.init(sim.mix32(bits[n + 1] ^ jnp.uint32(0x3C6EF372)), params, route,
                              self.max_walkers, self.max_obstacles)._asdict())

    # ------------------------------------------------------------------ helpers
    def lights(self, state: DrivingState, params: DrivingParams) -> jax.Array:
        return sim.light_states(params.map, state.t * params.dt, state.light_offset,
                                params.green_s, params.yellow_s, params.allred_s)

    def _controls(self, state, action, params):
        """Action -> (steer angle, acceleration)."""
        if self.action_type == "continuous":
            a = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
            steer = a[0] * params.max_steer
            accel = jnp.where(a[1] > 0, a[1] * params.max_accel, a[1] * params.max_brake)
            return steer, accel
        no = len(self.discrete_offsets)
        i_speed, i_off = action // no, action % no
        limit = params.map.pt_speed[params.routes.pt[state.route, state.prog]]
        v_target = jnp.asarray(self.discrete_speeds)[i_speed] * limit
        offset = jnp.asarray(self.discrete_offsets)[i_off]
        a = pursuit(state, params, offset, v_target)
        return a[0] * params.max_steer, jnp.where(a[1] > 0, a[1] * params.max_accel,
                                                   a[1] * params.max_brake)

    # ------------------------------------------------------------------ step
    def step(self, key: jax.Array, state: DrivingState, action: jax.Array,
             params: DrivingParams) -> StepResult:
        """Physics (ego, traffic, walkers), then scoring.score_step."""
        p, m, rb = params, params.map, params.routes
        dt = p.dt
        steer, accel = self._controls(state, action, p)
        x, y, yaw, v, yaw_rate = sim.bicycle(state.x, state.y, state.yaw, state.v, steer, accel,
                                             dt, p.v_max)
        ego_xy = jnp.stack([x, y])
        t = state.t + 1
        lights = sim.light_states(m, t * dt, state.light_offset, p.green_s, p.yellow_s,
                                  p.allred_s)
        ego_row = m.pt_tab[sim.grid_lookup(m, ego_xy)[0]]
        ego_dir = jnp.stack([jnp.cos(yaw), jnp.sin(yaw)])
        # background traffic (stop signs and walkers as standing obstacles), walkers
        users = road_users.Users(**{k: getattr(state, k) for k in road_users.Users._fields})
        extra_gap, sign_done = road_users.traffic_gaps(
            m, rb, state.route, state.veh_pt, state.veh_u, state.veh_v, state.veh_turn,
            state.veh_sign_done, users, p.stop_signs, p.idm_s0)
        veh_pt, veh_u, veh_v, veh_turn, _, veh_xy, veh_dir, veh_lat = sim.traffic_step(
            m, state.veh_pt, state.veh_u, state.veh_v, state.veh_turn, state.veh_vf,
            state.veh_active, ego_xy, ego_dir, v, ego_row, lights, p, extra_gap=extra_gap,
            lat=state.veh_lat, step_bits=sim.mix32(t + 0x51ED27))
        sign_done = sign_done & (m.pt_tab[veh_pt, LANE] == m.pt_tab[state.veh_pt, LANE])
        users = road_users.walkers_step(users, p, state.route, state.prog, state.v, t)

        # everything else is scoring, shared with the live CARLA env (envs.driving.scoring)
        world = scoring.World(x, y, yaw, v, steer, yaw_rate, veh_xy, veh_dir, veh_v,
                              state.veh_active, lights, users)
        sc = scoring.score_step(state, world, p, self.reward, self.episode_end)
        new = sc.state._replace(veh_pt=veh_pt, veh_u=veh_u, veh_turn=veh_turn, veh_lat=veh_lat,
                                veh_sign_done=sign_done)
        return StepResult(self.observe(new, p), new, sc.reward, sc.terminated, sc.truncated,
                          sc.info)

    def observe(self, state: DrivingState, params: DrivingParams) -> jax.Array | dict:
        """Vector features, or {"bev": raster, "measurements": CaRL's 8} (observe.py)."""
        if self.obs_type == "vector":
            obs = observe.vector_obs(state, params, self.num_obs_vehicles,
                                     self.lights(state, params))
        else:
            obs = observe.bev_with_measurements(state, params, self.bev_view,
                                                self.lights(state, params))
        if self.value_inputs:  # {..., "value_measurements": CaRL's 11 (value_inputs.py)}
            return value_inputs.observation(obs, state, params, self.reward, self.episode_end)
        return obs


# --------------------------------------------------------------------------- controllers
def pursuit(state: DrivingState, params: DrivingParams, offset: jax.Array,
            v_target: jax.Array) -> jax.Array:
    """Pure pursuit on the route (shifted sideways by `offset`) + P speed control -> action."""
    rb = params.routes
    r = state.route
    look = jnp.maximum(4.0, 0.9 * state.v)  # metres
    target_s = rb.cum[r, state.prog] + look
    idx = jnp.clip(jnp.searchsorted(rb.cum[r], target_s), 0, rb.num[r] - 1)
    tgt = rb.xy[r, idx] + offset * jnp.stack([-jnp.sin(rb.yaw[r, idx]), jnp.cos(rb.yaw[r, idx])])
    rear = jnp.stack([state.x, state.y]) - 0.5 * sim.WHEELBASE * jnp.stack(
        [jnp.cos(state.yaw), jnp.sin(state.yaw)])
    rel = sim.to_frame(tgt - rear, state.yaw)
    ld2 = jnp.maximum(jnp.sum(rel**2), 1.0)
    steer = jnp.arctan(2.0 * sim.WHEELBASE * rel[1] / ld2)
    a = jnp.clip(2.5 * (v_target - state.v), -4.0, 2.0)  # m/s^2, inside the comfort limits
    accel_cmd = jnp.where(a > 0, a / params.max_accel, a / params.max_brake)
    return jnp.stack([jnp.clip(steer / params.max_steer, -1, 1), jnp.clip(accel_cmd, -1, 1)])


def hazard_speed(state: DrivingState, params: DrivingParams, decel: float = 2.5,
                 lights: jax.Array | None = None, veh_xy: jax.Array | None = None) -> jax.Array:
    """Highest speed that still stops before a red/yellow stop line or a vehicle ahead."""
    m, rb = params.map, params.routes
    r = state.route
    if lights is None:
        lights = sim.light_states(m, state.t * params.dt, state.light_offset, params.green_s,
                                  params.yellow_s, params.allred_s)
    stop_i = rb.next_stop[r, state.prog]
    light_id = rb.stop_light[r, stop_i]
    d_stop = rb.cum[r, stop_i] - rb.cum[r, state.prog] - 3.5  # stop 3.5 m before the line
    ls = lights[jnp.maximum(light_id, 0)]
    # yellow: stop if that takes < 5 m/s^2 (twice `decel`) before the line itself, or below
    # 4.5 m/s. The speed controller trails the `decel` profile by ~1 m/s; judged against
    # the stopping point 3.5 m before the line the decision flipped back to "go" a few
    # metres before it and the light turned red on the way (2 red-light runs in 80 Town01
    # expert runs with traffic, before)
    stop_yellow = (ls == sim.YELLOW) & ((d_stop + 3.5 > state.v**2 / 10.0) | (state.v < 4.5))
    must = (light_id >= 0) & ((ls == sim.RED) | stop_yellow)
    v_light = jnp.where(must & (stop_i > state.prog),
                        jnp.sqrt(2 * decel * jnp.maximum(d_stop, 0.0)), jnp.inf)
    xy = sim.veh_pose(m, state.veh_pt, state.veh_u, state.veh_lat)[0] if veh_xy is None else veh_xy
    rel = sim.to_frame(xy - jnp.stack([state.x, state.y]), state.yaw)
    # leaders: in a 2.2 m corridor ahead, oncoming ones only when truly in the ego's path
    # (a stopped oncoming car 2.1 m aside on a bend is passed, not queued behind)
    veh_cos = jnp.cos(m.pt_yaw[state.veh_pt] - state.yaw)
    lane_w = jnp.where(veh_cos > -0.5, 2.2, sim.VEH_WID)
    ahead = (rel[:, 0] > 0) & (jnp.abs(rel[:, 1]) < lane_w) & state.veh_active
    gap = jnp.min(jnp.where(ahead, rel[:, 0] - sim.VEH_LEN - 3.0, jnp.inf))
    # and vehicles on the route's own lane points within 30 route points (a car standing
    # just after a junction exit is out of the corridor while the ego is still turning)
    win = jnp.minimum(state.prog + jnp.arange(1, 31), rb.num[r] - 1)
    on_route = (state.veh_pt[:, None] == rb.pt[r, win][None, :]) & state.veh_active[:, None]
    d_route = jnp.min(jnp.where(on_route, rb.cum[r, win][None, :] - rb.cum[r, state.prog],
                                jnp.inf))
    gap = jnp.minimum(gap, d_route - sim.VEH_LEN - 3.0)
    v_lead = jnp.sqrt(2 * decel * jnp.maximum(gap, 0.0))
    return jnp.minimum(jnp.minimum(v_light, v_lead), road_user_speed(state, params, decel))


def road_user_speed(state: DrivingState, params: DrivingParams, decel: float = 2.5,
                    ped_decel: float = 2.0) -> jax.Array:
    """Highest speed that still stops in time for a stop sign (centre 2.5 m before the
    line, inside RunningStopTest's 4 m, until the stop is done) and for walkers in the
    ego's corridor or walking towards it (a gentler profile than `decel`: the speed
    controller trails a profile by ~1 m/s and would overrun a walker by the lag).
    Walkers are placed on the route, so their distance is route metres."""
    rb = params.routes
    r = state.route
    s_ego = rb.cum[r, state.prog]
    sign_i = rb.sign_next[r, jnp.maximum(state.prog - 5, 0)]
    d_sign = rb.cum[r, sign_i] - s_ego
    must = (rb.sign[r, sign_i] & params.stop_signs & ~state.lb.stop_done
            & (d_sign > -rules.STOP_PROXIMITY))
    v_sign = jnp.where(must, jnp.sqrt(2 * decel * jnp.maximum(d_sign - 2.5, 0.0)), jnp.inf)
    corridor = 0.5 * sim.VEH_WID + 0.6 + road_users.WALKER_R
    d_w = rb.cum[r, state.ped_ri] - s_ego
    in_path = jnp.abs(state.ped_q) < corridor
    towards = (state.ped_v > 0) & (state.ped_dir * state.ped_q < corridor)
    hazard = (state.ped_active & (in_path | towards) & (d_w < 40.0)
              & (d_w > -(0.5 * sim.VEH_LEN + road_users.WALKER_R)))
    gap = d_w - 0.5 * sim.VEH_LEN - road_users.WALKER_R - 2.0
    v_ped = jnp.min(jnp.where(hazard, jnp.sqrt(2 * ped_decel * jnp.maximum(gap, 0.0)), jnp.inf),
                    initial=jnp.inf)
    return jnp.minimum(v_sign, v_ped)


def parked_offset(state: DrivingState, params: DrivingParams, margin: float = 0.8) -> jax.Array:
    """Sideways shift (left, m) that passes the parked cars from 25 m before to 6 m after
    them with `margin` m between the boxes."""
    rb = params.routes
    d = rb.cum[state.route, state.obst_ri] - rb.cum[state.route, state.prog]
    near = state.obst_active & (d > -6.0) & (d < 25.0)
    need = state.obst_q + sim.VEH_WID + margin  # ego centre >= parked centre + 2 half widths
    return jnp.max(jnp.where(near, jnp.maximum(need, 0.0), 0.0), initial=0.0)


def expert_policy(state: DrivingState, params: DrivingParams, vmax: float = 10.0) -> jax.Array:
    """Scripted lane-following baseline: continuous action (steer, accel) in [-1, 1].

    Pure pursuit on the route, speed = min(vmax, limit - 1 m/s, curve speed at
    2 m/s^2 lateral over the next 25 m, stopping speed for red/yellow
    lights, the nearest vehicle in the ego's corridor, stop signs and walkers),
    shifted left past parked cars.
    """
    rb, m = params.routes, params.map
    r = state.route
    ahead = jnp.minimum(state.prog + jnp.arange(0, 26, 5), rb.num[r] - 1)
    yaws = rb.yaw[r, ahead]
    dyaw = jnp.abs(jnp.mod(jnp.diff(yaws) + jnp.pi, 2 * jnp.pi) - jnp.pi)
    kappa = jnp.max(dyaw) / 5.0
    v_curve = jnp.sqrt(2.0 / jnp.maximum(kappa, 1e-3))
    limit = jnp.min(m.pt_speed[rb.pt[r, ahead]])  # slow down before a lower limit
    v_target = jnp.minimum(jnp.minimum(limit - 1.0, v_curve), hazard_speed(state, params))
    v_target = jnp.minimum(v_target, vmax)
    # pull out past a parked car only when the lane beside is clear of oncoming traffic,
    # else wait behind it (envs.driving.passing; TRAFFIC, issue 19)
    offset = parked_offset(state, params)
    d = rb.cum[r, state.obst_ri] - rb.cum[r, state.prog]
    d_next = jnp.min(jnp.where(state.obst_active & (d > 0) & (d < 25.0), d, jnp.inf),
                     initial=jnp.inf)
    ego_xy = jnp.stack([state.x, state.y])
    pulled = sim.to_frame(ego_xy - rb.xy[r, state.prog], rb.yaw[r, state.prog])[1]
    veh_xy = sim.veh_pose(m, state.veh_pt, state.veh_u, state.veh_lat)[0]
    ahead_pts = rb.pt[r, jnp.minimum(state.prog + jnp.arange(0, 120, 5), rb.num[r] - 1)]
    clear = passing.oncoming_clear(m, ahead_pts, ego_xy, state.yaw, state.v, state.veh_pt,
                                   veh_xy, state.veh_v, state.veh_active, d_next)
    go = clear | (pulled > passing.COMMITTED_M) | (offset < passing.COMMITTED_M)
    v_target = jnp.where(go, v_target, jnp.minimum(v_target, passing.wait_speed(d_next)))
    return pursuit(state, params, jnp.where(go, offset, 0.0), jnp.maximum(v_target, 0.0))
