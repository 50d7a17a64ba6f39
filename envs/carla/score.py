"""One step of the driving simulator's rewards, rules and metrics on an OBSERVED world.

`DrivingEnv.step` (envs/driving/env.py) moves the world itself (bicycle ego,
IDM traffic) and then scores the step. A live CARLA server moves the world
instead, so `score_step` takes the world as observed after a tick (ego pose,
vehicle poses, light states, collision-sensor contacts) and applies the
scoring half of that step: the same pure functions of envs.driving.rules
(leaderboard collisions, outside route lanes, InRouteTest, timeout),
envs.driving.rewards (CaRL's and Roach's rewards) and env.episode_metrics,
and the observation functions of envs.driving.observe. Their composition
follows DrivingEnv.step line by line; tests/envs/carla/test_score.py feeds
the JAX simulator's own trajectories through `score_step` and requires the
same rewards, infractions, metrics, observations and memory state, so a
change to the simulator's scoring that is not mirrored here fails a test.

Differences from the simulator, by design:
* collisions: the collision sensor's contacts (`Observed.hit_*`) replace the
  box-overlap test when given (the leaderboard's CollisionTest also reads the
  sensor); pedestrians and static objects go through the same
  leaderboard filter (one CollisionTest memory for every actor type) and count
  with their own penalty factors when the DrivingState has the road-user
  counters (n_ped_collision, n_static_collision);
* time-to-collision, lane centring, off-road and the outside-route-lanes test
  are computed from the observed poses on the map arrays built from the
  server's own OpenDRIVE (the map waypoints), exactly as in the simulator.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from envs.driving import rewards, road_users, rules, sim
from envs.driving.env import (
    ROUTE_WINDOW,
    DrivingEnv,
    DrivingParams,
    DrivingState,
    _box_off_road_share,
    episode_metrics,
)
from envs.driving.roadmap import COS, JUNC, SIN, WIDTH, X, Y


class Observed(NamedTuple):
    """The world after one tick, as plain arrays (N vehicle slots, W walkers, O statics)."""

    x: jax.Array
    y: jax.Array
    yaw: jax.Array  # rad
    v: jax.Array  # m/s
    steer: jax.Array  # applied steering, in the simulator's units (rad, max_steer at +-1)
    yaw_rate: jax.Array  # rad/s
    veh_xy: jax.Array  # (N, 2)
    veh_cs: jax.Array  # (N, 2) heading (cos, sin)
    veh_v: jax.Array  # (N,)
    veh_active: jax.Array  # (N,) bool
    veh_pt: jax.Array  # (N,) int nearest lane point (what the observation functions read)
    veh_u: jax.Array  # (N,) distance along that point's segment
    lights: jax.Array  # (NL,) int GREEN / YELLOW / RED of every map light
    veh_lat: jax.Array | None = None  # (N,) offset left of the lane centre (DrivingState.veh_lat)
    users: road_users.Users | None = None  # walkers / parked cars now; None: unchanged
    hit_vehicle: jax.Array | None = None  # (N,) bool sensor contacts; None: box overlap
    hit_walker: jax.Array | None = None  # (W,) bool sensor contacts; None: geometric test
    hit_static: jax.Array | None = None  # (S,) bool sensor contacts with static objects


def step_state(env: DrivingEnv, state: DrivingState, o: Observed, params: DrivingParams
               ) -> tuple[DrivingState, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
    """(new state, reward (K,), terminated, truncated, info) of the tick that led from
    `state` to the observed world `o`; info has DrivingEnv.step's keys."""
    p, m, rb = params, params.map, params.routes
    dt = p.dt
    x, y, yaw, v, steer, yaw_rate = o.x, o.y, o.yaw, o.v, o.steer, o.yaw_rate
    accel_eff = (v - state.v) / dt
    ego_xy = jnp.stack([x, y])
    t = state.t + 1
    lights = o.lights
    ego_pt, on_road = sim.grid_lookup(m, ego_xy)
    ego_row = m.pt_tab[ego_pt]
    ego_dir = jnp.stack([jnp.cos(yaw), jnp.sin(yaw)])
    veh_xy, veh_dir, veh_v = o.veh_xy, o.veh_cs, o.veh_v

    users = (road_users.Users(**{k: getattr(state, k) for k in road_users.Users._fields})
             if o.users is None else o.users)

    r = state.route
    win = jnp.minimum(state.prog + jnp.arange(ROUTE_WINDOW), rb.num[r] - 1)
    dists = jnp.linalg.norm(rb.xy[r, win] - ego_xy, axis=-1)
    route_dist = jnp.min(dists)
    prog = jnp.maximum(jnp.min(jnp.where(dists == route_dist, win, win[-1])), state.prog)
    gained = rb.cum[r, prog] - rb.cum[r, state.prog]
    rc_old = 100.0 * rb.cum[r, state.prog] / rb.length[r]
    rc_now = 100.0 * rb.cum[r, prog] / rb.length[r]
    to_end = jnp.linalg.norm(rb.xy[r, rb.num[r] - 1] - ego_xy)
    complete = (rc_now > rules.COMPLETE_PERCENT) & (to_end < rules.COMPLETE_DISTANCE)
    rc = jnp.where(complete, 100.0, rc_now)

    rel = sim.to_frame_cs(veh_xy - ego_xy, ego_dir[0], ego_dir[1])
    rc_ = veh_dir[:, 0] * ego_dir[0] + veh_dir[:, 1] * ego_dir[1]
    rs_ = veh_dir[:, 1] * ego_dir[0] - veh_dir[:, 0] * ego_dir[1]
    rel_vel = veh_v[:, None] * jnp.stack([rc_, rs_], -1) - jnp.stack([v, 0.0])
    ts = jnp.array((0.0,) + rewards.CARL["ttc_times"])[:, None, None]
    hits = sim.overlap_ego_frame(rel + ts * rel_vel, rc_, rs_) & o.veh_active
    hit_ped, hit_obst = road_users.ego_hits(ego_xy, ego_dir, users)
    # the collision sensor, where there is one, is the truth (the leaderboard reads it)
    hit_veh = hits[0] if o.hit_vehicle is None else o.hit_vehicle
    hit_ped = hit_ped if o.hit_walker is None else o.hit_walker
    hit_obst = hit_obst if o.hit_static is None else jnp.concatenate([hit_obst & False,
                                                                      o.hit_static])
    collide = jnp.any(hit_veh) | jnp.any(hit_ped) | jnp.any(hit_obst)
    ttc = (v >= rewards.CARL["ttc_min_speed"]) & (
        jnp.any(hits[1:]) | road_users.ego_ttc(ego_xy, ego_dir, v, users, ts[1:, 0, 0]))
    off_road = ~on_road
    stop_i = rb.next_stop[r, jnp.minimum(state.prog + 1, rb.next_stop.shape[1] - 1)]
    light_id = rb.stop_light[r, stop_i]
    crossed = (stop_i <= prog) & (stop_i > state.prog) & (light_id >= 0)
    red_run = crossed & (lights[jnp.maximum(light_id, 0)] == sim.RED)
    sign_i = rb.sign_next[r, jnp.maximum(state.prog - 5, 0)]
    is_sign = rb.sign[r, sign_i] & p.stop_signs
    d_sign_old = rb.cum[r, sign_i] - rb.cum[r, state.prog]
    d_sign = rb.cum[r, sign_i] - rb.cum[r, prog]
    limit = m.pt_speed[rb.pt[r, prog]]
    speeding = v > limit + p.speed_tol
    still = jnp.where(v < 0.1, state.still + 1, 0)

    lane_c, lane_s = ego_row[COS], ego_row[SIN]
    lat_lane = sim.to_frame_cs(ego_xy - ego_row[X:Y + 1], lane_c, lane_s)[1]
    in_junction = ego_row[JUNC] >= 0
    route_yaw = rb.yaw[r, prog]
    lat_route = sim.to_frame(ego_xy - rb.xy[r, prog], route_yaw)[1]
    yaw_err = jnp.mod(yaw - route_yaw + jnp.pi, 2 * jnp.pi) - jnp.pi

    all_hits = jnp.concatenate([hit_veh, hit_ped, hit_obst])
    counted, lb = rules.count_collision(state.lb, all_hits, t, dt, ego_xy, v)
    actor = rules.collision_actor(all_hits)
    nv, nw = hit_veh.shape[0], hit_ped.shape[0]
    count_ped = counted & (actor >= nv) & (actor < nv + nw)
    count_static = counted & (actor >= nv + nw)
    counted = counted & (actor < nv)  # vehicles
    stop_run, lb = rules.run_stop_sign(lb, d_sign_old, d_sign, is_sign, v)
    # the wrong-lane check is off within 50 m of a parked car (the leaderboard's TwoWays
    # obstacle scenarios); CARLA episodes here place no parked cars (obst_active False)
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

    over = jnp.clip((v - limit) / 2.23, 0.0, 1.0)
    lat_acc = v * yaw_rate
    jerk_lon = (accel_eff - state.accel) / dt
    jerk_lat = (lat_acc - state.lat_acc) / dt
    yaw_acc = (yaw_rate - state.yaw_rate) / dt
    c = rewards.COMFORT
    broken = ((accel_eff < c["lon_acc_min"]).astype(jnp.int32) + (accel_eff > c["lon_acc_max"])
              + (jnp.abs(lat_acc) > c["lat_acc"]) + (jnp.hypot(jerk_lon, jerk_lat) > c["jerk"])
              + (jnp.abs(jerk_lon) > c["lon_jerk"]) + (jnp.abs(yaw_rate) > c["yaw_rate"])
              + (jnp.abs(yaw_acc) > c["yaw_acc"]))
    broken = jnp.where(state.t == 0, 0, broken)
    deviate_vec = route_dist > p.deviation_m
    safety = -jnp.maximum(collide, off_road).astype(jnp.float32) - p.ttc_weight * ttc
    rules_r = -(red_run.astype(jnp.float32) + stop_run + deviate_vec) - p.speed_weight * over
    vec = jnp.stack([safety, rules_r, p.progress_scale * gained, -broken / 6.0])
    vec = vec.astype(jnp.float32)

    carl_mem = DrivingEnv._carl_memory(state, ego_xy, ego_dir, yaw, dt)
    ttc_on, ttc_ticks = rewards.penalty_window(state.ttc_ticks, ttc, rewards.CARL["ttc_ticks"])
    comfort_on, comfort_ticks = rewards.penalty_window(
        state.comfort_ticks, rewards.comfort_broken(carl_mem["hist"], carl_mem["hist_n"]),
        rewards.CARL["comfort_ticks"])
    centring, lane_counter = rewards.carl_centring(state.lane_counter, lat_lane, in_junction)
    carl = rewards.carl_reward(rc - rc_old, rewards.carl_speed_factor(v, limit), ttc_on,
                               jnp.sum(comfort_on), centring, outside_lanes,
                               collide | red_run, p.carl_hint)
    off_box = _box_off_road_share(m, ego_xy, ego_dir) > p.carl_off_road_share

    light_ahead = (light_id >= 0) & (stop_i > prog)
    ls = lights[jnp.maximum(light_id, 0)]
    stop_xy = rb.xy[r, stop_i]
    hit_xy = ego_xy - rewards.ROACH_TL_OFFSET * ego_dir
    light_stop = (light_ahead & ((ls == sim.RED) | (ls == sim.YELLOW))
                  & (jnp.linalg.norm(stop_xy - hit_xy) <= rewards.ROACH["light_dist"]))
    ped_rel = sim.to_frame_cs(users.ped_xy - ego_xy, ego_dir[0], ego_dir[1])
    ped_on_road = sim.grid_lookup(m, users.ped_xy)[1] & users.ped_active
    v_des = rewards.roach_desired_speed(
        rel, rc_, o.veh_active, jnp.linalg.norm(stop_xy - ego_xy), light_stop,
        ped_rel, ped_on_road, jnp.abs(d_sign),
        is_sign & (jnp.abs(d_sign) <= rules.STOP_PROXIMITY) & ~state.lb.stop_done)
    lat_abs = jnp.abs(lat_route)
    roach_lat_done = rewards.roach_lateral_done(lat_abs, state.roach_lat)
    roach_fatal = collide | red_run | stop_run
    roach_done = roach_fatal | blocked | roach_lat_done
    roach = rewards.roach_reward(v, v_des, lat_abs, yaw_err,
                                 jnp.abs(steer - state.steer) > 0.01 * p.max_steer,
                                 roach_done, roach_fatal, p.roach_terminal)

    cap = t >= p.max_steps
    rule_set = env.reward if env.episode_end == "reward" else env.episode_end
    if rule_set == "leaderboard":
        deviation, ended_blocked = lb_deviate, lb_blocked
        terminated = lb_deviate | lb_blocked | complete
        limit_hit = lb_timeout | cap
    elif rule_set == "carl":
        deviation, ended_blocked = lb_deviate, blocked
        terminated = (collide | red_run | stop_run | blocked | lb_deviate | off_box
                      | (t * dt > p.carl_eval_time_s) | complete)
        limit_hit = cap
    elif rule_set == "roach":
        deviation, ended_blocked = roach_lat_done, blocked
        terminated = roach_done | complete
        limit_hit = cap
    else:
        deviation, ended_blocked = deviate_vec, blocked
        terminated = collide | off_road | deviate_vec | blocked | complete
        limit_hit = cap
    truncated = limit_hit & ~terminated
    reward = {"vector": vec, "carl": carl[None], "roach": roach[None]}[env.reward]

    new = state._replace(
        x=x, y=y, yaw=yaw, v=v, steer=steer, accel=accel_eff, yaw_rate=yaw_rate,
        lat_acc=lat_acc, veh_pt=o.veh_pt, veh_u=o.veh_u, veh_v=veh_v,
        veh_active=o.veh_active, route=r, prog=prog, t=t, still=still,
        n_collision=state.n_collision + counted, n_off_road=state.n_off_road + off_road,
        n_red_light=state.n_red_light + red_run, n_speeding=state.n_speeding + speeding,
        deviation=state.deviation | deviation, blocked=state.blocked | ended_blocked,
        lb=lb, ttc_ticks=ttc_ticks, comfort_ticks=comfort_ticks,
        lane_counter=lane_counter, roach_lat=lat_abs,
        n_stop_sign=state.n_stop_sign + stop_run,
        n_ped_collision=state.n_ped_collision + count_ped,
        n_static_collision=state.n_static_collision + count_static,
        **users._asdict(), **carl_mem)
    if "veh_lat" in new._fields and o.veh_lat is not None:  # traffic's lane offsets
        new = new._replace(veh_lat=o.veh_lat)
    metrics = episode_metrics(new, rc, truncated)
    info = {
        "reward_views": {"vector": vec, "carl": carl[None].astype(jnp.float32),
                         "roach": roach[None].astype(jnp.float32)},
        "episode_metrics": metrics,
        "infractions": {"collision": collide, "collision_counted": counted,
                        "off_road": off_road, "off_road_box": off_box,
                        "red_light": red_run, "stop_sign": stop_run,
                        "collision_pedestrian": jnp.any(hit_ped),
                        "collision_static": jnp.any(hit_obst), "speeding": speeding,
                        "outside_lanes": outside_lanes, "deviation": deviation,
                        "blocked": ended_blocked, "ttc": ttc},
    }
    return new, reward.astype(jnp.float32), terminated, truncated, info
