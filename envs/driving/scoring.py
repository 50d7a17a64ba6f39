"""One step's rewards, rules and metrics, apart from whatever moved the world.

`DrivingEnv.step` moves the world (bicycle ego, IDM traffic, walkers) and then
calls `score_step`; a live CARLA server moves the world itself and
envs.carla.score calls the same `score_step` on the world it observed after a
tick. So the simulator and CARLA share one scoring, not two copies.

    sc = score_step(state, world, params, reward="vector", episode_end="reward")
    sc.state       # `state` with the ego, vehicle speeds, road users and every
                   # scoring memory (route progress, counters, leaderboard state,
                   # CaRL's and Roach's memory) of the new step
    sc.reward      # (K,) the env's reward; every view in sc.info["reward_views"]
    sc.terminated, sc.truncated, sc.info  # DrivingEnv.step's flags and info

What a step is scored on (`World`): the ego pose, speed, applied steering and yaw
rate after the tick, the vehicles' exact poses (collisions, time to collision,
Roach's hazards), the light states, the road users, and optionally a collision
sensor's contacts (CARLA), which then replace the box-overlap test. The reward
views, rule sets and metrics are described in envs.driving.env's docstring; the
pieces are the pure functions of envs.driving.rules and envs.driving.rewards.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from envs.driving import rewards, road_users, rules, sim
from envs.driving.roadmap import COS, JUNC, SIN, WIDTH, MapArrays, X, Y

ROUTE_WINDOW = 12  # route points searched ahead of the last progress for the nearest one
RULE_SETS = ("vector", "carl", "roach", "leaderboard", "common")


class World(NamedTuple):
    """The world after one tick (N vehicle slots, W walkers, O parked cars)."""

    x: jax.Array
    y: jax.Array
    yaw: jax.Array  # rad
    v: jax.Array  # m/s
    steer: jax.Array  # applied steering angle, rad
    yaw_rate: jax.Array  # rad/s
    veh_xy: jax.Array  # (N, 2) exact vehicle centres
    veh_cs: jax.Array  # (N, 2) their headings (cos, sin)
    veh_v: jax.Array  # (N,)
    veh_active: jax.Array  # (N,) bool
    lights: jax.Array  # (NL,) GREEN / YELLOW / RED of every map light
    users: road_users.Users  # walkers and parked cars now
    hit_vehicle: jax.Array | None = None  # (N,) bool sensor contacts; None: box overlap
    hit_walker: jax.Array | None = None  # (W,) bool sensor contacts; None: geometric test
    hit_static: jax.Array | None = None  # (S,) bool sensor contacts with static objects


class Scored(NamedTuple):
    state: Any  # DrivingState after the step (traffic internals as in the given state)
    reward: jax.Array  # (K,) float32
    terminated: jax.Array
    truncated: jax.Array
    info: dict[str, Any]  # reward_views, episode_metrics, infractions


def rule_set(reward: str, episode_end: str) -> str:
    """The episode rules in force: the reward's own ("reward") or a named set."""
    return reward if episode_end == "reward" else episode_end


def score_step(state: Any, world: World, params: Any, reward: str,
               episode_end: str) -> Scored:
    """Score the tick that led from `state` (a DrivingState) to `world`."""
    rules_in_force = rule_set(reward, episode_end)
    if rules_in_force not in RULE_SETS:
        raise ValueError(f"unknown rule set {rules_in_force!r} (reward {reward!r}, "
                         f"episode_end {episode_end!r})")
    p, m, rb = params, params.map, params.routes
    dt = p.dt
    x, y, yaw, v, steer, yaw_rate = world.x, world.y, world.yaw, world.v, world.steer, \
        world.yaw_rate
    accel_eff = (v - state.v) / dt
    ego_xy = jnp.stack([x, y])
    t = state.t + 1
    lights, users = world.lights, world.users
    ego_pt, on_road = sim.grid_lookup(m, ego_xy)
    ego_row = m.pt_tab[ego_pt]
    ego_dir = jnp.stack([jnp.cos(yaw), jnp.sin(yaw)])
    veh_xy, veh_dir, veh_v, veh_active = world.veh_xy, world.veh_cs, world.veh_v, \
        world.veh_active

    # route progress: nearest route point in a forward window
    r = state.route
    win = jnp.minimum(state.prog + jnp.arange(ROUTE_WINDOW), rb.num[r] - 1)
    dists = jnp.linalg.norm(rb.xy[r, win] - ego_xy, axis=-1)
    route_dist = jnp.min(dists)
    # first index of the minimum (argmin's paired reduction is slow on the CPU)
    prog = jnp.maximum(jnp.min(jnp.where(dists == route_dist, win, win[-1])), state.prog)
    gained = rb.cum[r, prog] - rb.cum[r, state.prog]
    rc_old = 100.0 * rb.cum[r, state.prog] / rb.length[r]
    rc_now = 100.0 * rb.cum[r, prog] / rb.length[r]
    # leaderboard: > 99% and within 10 m of the route's end
    to_end = jnp.linalg.norm(rb.xy[r, rb.num[r] - 1] - ego_xy)
    complete = (rc_now > rules.COMPLETE_PERCENT) & (to_end < rules.COMPLETE_DISTANCE)
    rc = jnp.where(complete, 100.0, rc_now)

    # vehicles in the ego frame: offset, relative heading, relative velocity
    rel = sim.to_frame_cs(veh_xy - ego_xy, ego_dir[0], ego_dir[1])
    rc_ = veh_dir[:, 0] * ego_dir[0] + veh_dir[:, 1] * ego_dir[1]
    rs_ = veh_dir[:, 1] * ego_dir[0] - veh_dir[:, 0] * ego_dir[1]
    rel_vel = veh_v[:, None] * jnp.stack([rc_, rs_], -1) - jnp.stack([v, 0.0])
    # collision now and time-to-collision (constant velocities at 0.1 .. 0.9 s)
    ts = jnp.array((0.0,) + rewards.CARL["ttc_times"])[:, None, None]
    hits = sim.overlap_ego_frame(rel + ts * rel_vel, rc_, rs_) & veh_active
    hit_ped, hit_obst = road_users.ego_hits(ego_xy, ego_dir, users)
    # a collision sensor, where there is one, is the truth (the leaderboard reads it)
    hit_veh = hits[0] if world.hit_vehicle is None else world.hit_vehicle
    hit_ped = hit_ped if world.hit_walker is None else world.hit_walker
    hit_obst = hit_obst if world.hit_static is None else jnp.concatenate(
        [hit_obst & False, world.hit_static])
    collide = jnp.any(hit_veh) | jnp.any(hit_ped) | jnp.any(hit_obst)
    ttc = (v >= rewards.CARL["ttc_min_speed"]) & (
        jnp.any(hits[1:]) | road_users.ego_ttc(ego_xy, ego_dir, v, users, ts[1:, 0, 0]))
    off_road = ~on_road
    stop_i = rb.next_stop[r, jnp.minimum(state.prog + 1, rb.next_stop.shape[1] - 1)]
    light_id = rb.stop_light[r, stop_i]
    crossed = (stop_i <= prog) & (stop_i > state.prog) & (light_id >= 0)
    red_run = crossed & (lights[jnp.maximum(light_id, 0)] == sim.RED)
    # stop sign: the line at or after the point 5 m behind the ego (RunningStopTest
    # still watches a sign up to 4 m past its line)
    sign_i = rb.sign_next[r, jnp.maximum(state.prog - 5, 0)]
    is_sign = rb.sign[r, sign_i] & p.stop_signs
    d_sign_old = rb.cum[r, sign_i] - rb.cum[r, state.prog]
    d_sign = rb.cum[r, sign_i] - rb.cum[r, prog]
    limit = m.pt_speed[rb.pt[r, prog]]
    speeding = v > limit + p.speed_tol
    still = jnp.where(v < 0.1, state.still + 1, 0)

    # localisation on the lane map (centring, lane direction)
    lane_c, lane_s = ego_row[COS], ego_row[SIN]
    lat_lane = sim.to_frame_cs(ego_xy - ego_row[X:Y + 1], lane_c, lane_s)[1]
    in_junction = ego_row[JUNC] >= 0
    route_yaw = rb.yaw[r, prog]
    lat_route = sim.to_frame(ego_xy - rb.xy[r, prog], route_yaw)[1]
    yaw_err = jnp.mod(yaw - route_yaw + jnp.pi, 2 * jnp.pi) - jnp.pi

    # leaderboard criteria (one collision filter over every actor type)
    all_hits = jnp.concatenate([hit_veh, hit_ped, hit_obst])
    counted, lb = rules.count_collision(state.lb, all_hits, t, dt, ego_xy, v)
    actor = rules.collision_actor(all_hits)
    nv, nw = hit_veh.shape[0], hit_ped.shape[0]
    count_ped = counted & (actor >= nv) & (actor < nv + nw)
    count_static = counted & (actor >= nv + nw)
    counted = counted & (actor < nv)  # vehicles
    stop_run, lb = rules.run_stop_sign(lb, d_sign_old, d_sign, is_sign, v)
    # passing a parked car may use the opposite lane: the leaderboard's TwoWays obstacle
    # scenarios switch the wrong-lane check off from 50 m before the car until 50 m
    # past it (scenario_runner 94ff3b8 route_obstacles.py:467-516; TRAFFIC, issue 19)
    d_obst = rb.cum[r, state.obst_ri] - rb.cum[r, prog]
    passing = jnp.any(state.obst_active & (jnp.abs(d_obst) < 50.0))
    outside_lanes, lb = rules.outside_route_lanes(lb, m.pt_tab, ego_pt, lat_lane,
                                                  ego_row[WIDTH], ego_dir, gained,
                                                  wrong_active=~passing)
    lb_deviate, lb = rules.in_route_failed(lb, route_dist, gained, rb.length[r],
                                           p.lb_deviation_m, p.lb_deviation_share)
    lb_blocked = still * dt > p.lb_blocked_s
    lb_timeout = t >= rules.route_timeout_steps(rb.length[r], dt, p.lb_timeout_s_per_m,
                                                p.lb_timeout_delay_s)
    blocked = still * dt > p.blocked_s

    # vector reward (comfort: nuPlan limits on this step's differences)
    over = jnp.clip((v - limit) / 2.23, 0.0, 1.0)
    lat_acc = v * yaw_rate
    broken = comfort_count(state, accel_eff, lat_acc, yaw_rate, dt)
    deviate_vec = route_dist > p.deviation_m
    safety = -jnp.maximum(collide, off_road).astype(jnp.float32) - p.ttc_weight * ttc
    rules_r = -(red_run.astype(jnp.float32) + stop_run + deviate_vec) - p.speed_weight * over
    vec = jnp.stack([safety, rules_r, p.progress_scale * gained, -broken / 6.0])
    vec = vec.astype(jnp.float32)

    # CaRL reward
    carl_mem = carl_memory(state, ego_xy, ego_dir, yaw, dt)
    ttc_on, ttc_ticks = rewards.penalty_window(state.ttc_ticks, ttc, rewards.CARL["ttc_ticks"])
    comfort_on, comfort_ticks = rewards.penalty_window(
        state.comfort_ticks, rewards.comfort_broken(carl_mem["hist"], carl_mem["hist_n"]),
        rewards.CARL["comfort_ticks"])
    centring, lane_counter = rewards.carl_centring(state.lane_counter, lat_lane, in_junction)
    carl = rewards.carl_reward(rc - rc_old, rewards.carl_speed_factor(v, limit), ttc_on,
                               jnp.sum(comfort_on), centring, outside_lanes,
                               collide | red_run, p.carl_hint)
    off_box = box_off_road_share(m, ego_xy, ego_dir) > p.carl_off_road_share

    # Roach reward
    light_ahead = (light_id >= 0) & (stop_i > prog)
    ls = lights[jnp.maximum(light_id, 0)]
    stop_xy = rb.xy[r, stop_i]
    hit_xy = ego_xy - rewards.ROACH_TL_OFFSET * ego_dir  # Roach's light search point
    light_stop = (light_ahead & ((ls == sim.RED) | (ls == sim.YELLOW))
                  & (jnp.linalg.norm(stop_xy - hit_xy) <= rewards.ROACH["light_dist"]))
    ped_rel = sim.to_frame_cs(users.ped_xy - ego_xy, ego_dir[0], ego_dir[1])
    ped_on_road = sim.grid_lookup(m, users.ped_xy)[1] & users.ped_active
    v_des = rewards.roach_desired_speed(
        rel, rc_, veh_active, jnp.linalg.norm(stop_xy - ego_xy), light_stop,
        ped_rel, ped_on_road, jnp.abs(d_sign),
        is_sign & (jnp.abs(d_sign) <= rules.STOP_PROXIMITY) & ~state.lb.stop_done)
    lat_abs = jnp.abs(lat_route)
    roach_lat_done = rewards.roach_lateral_done(lat_abs, state.roach_lat)
    roach_fatal = collide | red_run | stop_run
    roach_done = roach_fatal | blocked | roach_lat_done
    roach = rewards.roach_reward(v, v_des, lat_abs, yaw_err,
                                 jnp.abs(steer - state.steer) > 0.01 * p.max_steer,
                                 roach_done, roach_fatal, p.roach_terminal)

    # episode end under the rules in force
    cap = t >= p.max_steps
    if rules_in_force == "leaderboard":
        deviation, ended_blocked = lb_deviate, lb_blocked
        terminated = lb_deviate | lb_blocked | complete
        limit_hit = lb_timeout | cap
    elif rules_in_force == "carl":
        deviation, ended_blocked = lb_deviate, blocked
        terminated = (collide | red_run | stop_run | blocked | lb_deviate | off_box
                      | (t * dt > p.carl_eval_time_s) | complete)
        limit_hit = cap
    elif rules_in_force == "roach":
        deviation, ended_blocked = roach_lat_done, blocked
        terminated = roach_done | complete
        limit_hit = cap
    else:  # "vector" and "common"
        deviation, ended_blocked = deviate_vec, blocked
        terminated = collide | off_road | deviate_vec | blocked | complete
        limit_hit = cap
    truncated = limit_hit & ~terminated
    views = {"vector": vec, "carl": carl[None].astype(jnp.float32),
             "roach": roach[None].astype(jnp.float32)}

    new = state._replace(
        x=x, y=y, yaw=yaw, v=v, steer=steer, accel=accel_eff, yaw_rate=yaw_rate,
        lat_acc=lat_acc, veh_v=veh_v, veh_active=veh_active, prog=prog, t=t, still=still,
        n_collision=state.n_collision + counted, n_off_road=state.n_off_road + off_road,
        n_red_light=state.n_red_light + red_run, n_speeding=state.n_speeding + speeding,
        deviation=state.deviation | deviation, blocked=state.blocked | ended_blocked,
        lb=lb, ttc_ticks=ttc_ticks, comfort_ticks=comfort_ticks,
        lane_counter=lane_counter, roach_lat=lat_abs,
        n_stop_sign=state.n_stop_sign + stop_run,
        n_ped_collision=state.n_ped_collision + count_ped,
        n_static_collision=state.n_static_collision + count_static,
        **users._asdict(), **carl_mem)
    info = {
        "reward_views": views,
        "episode_metrics": episode_metrics(new, rc, truncated),
        "infractions": {"collision": collide, "collision_counted": counted,
                        "off_road": off_road, "off_road_box": off_box,
                        "red_light": red_run, "stop_sign": stop_run,
                        "collision_pedestrian": jnp.any(hit_ped),
                        "collision_static": jnp.any(hit_obst), "speeding": speeding,
                        "outside_lanes": outside_lanes, "deviation": deviation,
                        "blocked": ended_blocked, "ttc": ttc},
    }
    return Scored(new, views[reward], terminated, truncated, info)


def comfort_count(state: Any, accel: jax.Array, lat_acc: jax.Array, yaw_rate: jax.Array,
                  dt: Any) -> jax.Array:
    """How many nuPlan comfort limits (rewards.COMFORT) this step breaks, from its
    differences to the last step (0 on an episode's first step: no history)."""
    jerk_lon = (accel - state.accel) / dt
    jerk_lat = (lat_acc - state.lat_acc) / dt
    yaw_acc = (yaw_rate - state.yaw_rate) / dt
    c = rewards.COMFORT
    broken = ((accel < c["lon_acc_min"]).astype(jnp.int32) + (accel > c["lon_acc_max"])
              + (jnp.abs(lat_acc) > c["lat_acc"]) + (jnp.hypot(jerk_lon, jerk_lat) > c["jerk"])
              + (jnp.abs(jerk_lon) > c["lon_jerk"]) + (jnp.abs(yaw_rate) > c["yaw_rate"])
              + (jnp.abs(yaw_acc) > c["yaw_acc"]))
    return jnp.where(state.t == 0, 0, broken)


def carl_memory(state: Any, ego_xy: jax.Array, ego_dir: jax.Array, yaw: jax.Array,
                dt: Any) -> dict[str, jax.Array]:
    """CaRL's comfort history: finite-difference velocity and acceleration of the
    ego position (compute_comfort_penalty; zero on its first call), projected on the
    ego's forward / right axes, |acceleration| and the unwrapped yaw."""
    first = state.hist_n == 0
    vel = jnp.where(first, 0.0, (ego_xy - state.last_xy) / dt)
    acc = jnp.where(first, 0.0, (vel - state.last_vel) / dt)
    lon = acc @ ego_dir
    lat = acc[0] * ego_dir[1] - acc[1] * ego_dir[0]
    last_yaw = state.hist[3, -1]
    unwrapped = jnp.where(first, yaw,
                          last_yaw + jnp.mod(yaw - last_yaw + jnp.pi, 2 * jnp.pi) - jnp.pi)
    column = jnp.stack([lon, lat, jnp.linalg.norm(acc), unwrapped])
    hist = jnp.concatenate([state.hist[:, 1:], column[:, None]], axis=1)
    return dict(hist=hist, hist_n=jnp.minimum(state.hist_n + 1, rewards.HISTORY),
                last_xy=ego_xy, last_vel=vel)


def episode_metrics(s: Any, rc: jax.Array, timeout: jax.Array) -> dict[str, jax.Array]:
    """The leaderboard's metrics of the episode so far (final on its last step): no penalty
    for a timeout, speeding and off-road are reported but are no infractions; success =
    route completed with no infraction entry ('Perfect', statistics_manager.py:401)."""
    outside = rules.outside_percent(s.lb)
    score = rules.infraction_score(s.n_collision, s.n_red_light, outside, s.n_ped_collision,
                                   s.n_static_collision, s.n_stop_sign)
    n_coll = s.n_collision + s.n_ped_collision + s.n_static_collision
    clean = ((n_coll + s.n_red_light + s.n_stop_sign) == 0) & (s.lb.outside <= 0.0)
    f = jnp.float32
    return {
        "route_completion": rc.astype(f),
        "infraction_score": score.astype(f),
        "driving_score": (rc * score).astype(f),
        "success": ((rc >= 100.0) & clean & ~(s.deviation | s.blocked | timeout)).astype(f),
        "collision": (n_coll > 0).astype(f),
        "collision_vehicle": (s.n_collision > 0).astype(f),
        "collision_pedestrian": (s.n_ped_collision > 0).astype(f),
        "collision_static": (s.n_static_collision > 0).astype(f),
        "stop_sign": s.n_stop_sign.astype(f),
        "off_road": (s.n_off_road > 0).astype(f),
        "outside_lanes": outside.astype(f),
        "red_light": s.n_red_light.astype(f),
        "speeding": (s.n_speeding > 0).astype(f),
        "deviation": s.deviation.astype(f),
        "blocked": s.blocked.astype(f),
        "timeout": timeout.astype(f),
    }


def box_off_road_share(m: MapArrays, xy: jax.Array, heading: jax.Array) -> jax.Array:
    """Share of the ego box off the drivable raster (8 x 4 sample points), CaRL's
    perc_off_road (it terminates above off_road_term_perc = 0.95)."""
    u = (jnp.arange(8) + 0.5) / 8 - 0.5
    w = (jnp.arange(4) + 0.5) / 4 - 0.5
    lon = jnp.repeat(u * sim.VEH_LEN, 4)
    lat = jnp.tile(w * sim.VEH_WID, 8)
    pts = xy + lon[:, None] * heading + lat[:, None] * jnp.stack([-heading[1], heading[0]])
    _, on = sim.grid_lookup(m, pts)
    return 1.0 - jnp.mean(on.astype(jnp.float32))
