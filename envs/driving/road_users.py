"""Walkers, parked cars and stop signs of the driving sim (issue 19): jittable, O(W + O).

Road users live on the ego's route, where they matter (as background traffic
spawns near it):

* parked cars (obstacles): `num_obstacles` vehicle-sized boxes at distinct
  `RouteBank.curb` slots (rightmost lane, >= 10 m from junctions), parallel to
  the route, their inner side `obst_clear_*` m to the right of a lane-centred
  car's side: partly in the lane, so the ego passes close by or waits.
  Background vehicles drive lane-centred and clear them.
* walkers: each crosses the road on a line perpendicular to the route at a
  route index (a crosswalk `RouteBank.xwalk` with probability
  `ped_xwalk_share`, else a mid-block `curb` slot), from kerb to kerb (from
  `ped_kerb` m outside the ego lane to the same distance beyond one opposite
  lane), waits at the kerb and crosses back. A waiting walker starts with
  probability `ped_cross_rate` per second when the ego is more than
  `ped_gap_s` s (+ 5 m) away or has passed by 5 m (gap acceptance). A share
  `ped_sudden_share` is "sudden": it stands in front of a parked car (or at
  a kerb slot without one) and steps out when the ego is `ped_trigger_m` m
  away along the route, gap or not (CARLA's DynamicObjectCrossing).
* stop signs: MapArrays.stop_pt (Town01's OpenDRIVE has none; procedural maps
  put them on the approaches of the junctions without lights), active when
  `params.stop_signs`. Background vehicles stop at the stop line, then go
  (`veh_sign_done` remembers the stop until they leave the lane).

A walker is a 0.6 m square (WALKER_R = 0.3 m half side); the ego test is the
ego box grown by WALKER_R (exact for the square's axis-aligned case,
conservative by < 0.13 m at the corners otherwise).
Every draw comes from `mix32` hashes of per-walker words drawn at reset, so
no threefry call is added to the step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from envs.driving import sim
from envs.driving.roadmap import JUNC, LANE, NSUCC, S_IN, TO_END, WIDTH, MapArrays
from envs.driving.routes import RouteBank

WALKER_R = 0.3  # m, half side of a walker's square


class Users(NamedTuple):
    """Road-user state besides the contract fields (DrivingState holds these too)."""

    ped_xy: jax.Array  # (W, 2)
    ped_yaw: jax.Array  # (W,)
    ped_v: jax.Array  # (W,) current speed: 0 waiting, ped_vd crossing
    ped_active: jax.Array  # (W,) bool
    ped_ri: jax.Array  # (W,) int route index of the crossing
    ped_q: jax.Array  # (W,) lateral position on the crossing line (left of the route +)
    ped_dir: jax.Array  # (W,) +1 crossing to the left, -1 to the right
    ped_vd: jax.Array  # (W,) walking speed
    ped_armed: jax.Array  # (W,) bool a sudden walker not triggered yet
    ped_seed: jax.Array  # (W,) uint32 per-walker random word
    obst_xy: jax.Array  # (O, 2)
    obst_yaw: jax.Array  # (O,)
    obst_active: jax.Array  # (O,) bool
    obst_ri: jax.Array  # (O,) int route index of the parked car's centre
    obst_q: jax.Array  # (O,) lateral offset of its centre from the route (negative: right)


def _left(yaw: jax.Array) -> jax.Array:
    return jnp.stack([-jnp.sin(yaw), jnp.cos(yaw)], -1)


def _kerbs(m: MapArrays, rb: RouteBank, r: jax.Array, ri: jax.Array,
           kerb: Any) -> tuple[jax.Array, jax.Array]:
    """(right, left) kerb positions of crossings at route indices `ri` (one opposite lane)."""
    w = m.pt_tab[rb.pt[r, ri], WIDTH]
    return -(0.5 * w + kerb), 1.5 * w + kerb


def _slot(pool: jax.Array, n: jax.Array, k: jax.Array, word: jax.Array) -> jax.Array:
    """k distinct entries of pool[:n] (offset + stride, as the traffic spawn)."""
    count = pool.shape[0]
    stride = jnp.maximum(n // jnp.maximum(k.shape[0], 1), 1)
    idx = ((word % jnp.maximum(n, 1)).astype(jnp.int32) + k * stride) % jnp.maximum(n, 1)
    return pool[jnp.clip(idx, 0, count - 1)]


def init(word: jax.Array, params: Any, route: jax.Array, num_w: int, num_o: int) -> Users:
    """Road users of an episode on `route` from one random uint32 word."""
    m, rb, p = params.map, params.routes, params
    r = route
    # parked cars at distinct curb slots
    ko = jnp.arange(num_o)
    o_ri = _slot(rb.curb[r], rb.curb_n[r], ko, sim.mix32(word ^ jnp.uint32(0x51ED270B)))
    o_act = (ko < p.num_obstacles) & (ko < rb.curb_n[r])
    hw = sim.mix32(word + jnp.uint32(0x2545F491) * (ko.astype(jnp.uint32) + 1))
    clear = p.obst_clear_min + (p.obst_clear_max - p.obst_clear_min) * sim.unit_float(hw)
    o_q = -(sim.VEH_WID + clear)
    o_yaw = rb.yaw[r, o_ri]
    o_xy = rb.xy[r, o_ri] + o_q[:, None] * _left(o_yaw)
    # walkers
    kw = jnp.arange(num_w)
    seed = sim.mix32(word ^ (jnp.uint32(0x9E3779B9) * (kw.astype(jnp.uint32) + 7)))
    u1 = sim.unit_float(sim.mix32(seed ^ jnp.uint32(0x68E31DA4)))
    u2 = sim.unit_float(sim.mix32(seed ^ jnp.uint32(0xB5297A4D)))
    u3 = sim.unit_float(sim.mix32(seed ^ jnp.uint32(0x1B56C4E9)))
    sudden = u1 < p.ped_sudden_share
    if num_o > 0:
        ob = kw % num_o
        behind = sudden & o_act[ob]
        ri_behind = jnp.minimum(o_ri[ob] + 4, rb.num[r] - 1)  # 1.7 m ahead of its front
    else:
        behind = jnp.zeros(num_w, bool)
        ri_behind = jnp.zeros(num_w, jnp.int32)
    use_x = ~sudden & (u2 < p.ped_xwalk_share) & (rb.xwalk_n[r] > 0)
    pick = (seed >> 3).astype(jnp.int32)
    ri_x = rb.xwalk[r, pick % jnp.maximum(rb.xwalk_n[r], 1)]
    ri_c = rb.curb[r, pick % jnp.maximum(rb.curb_n[r], 1)]
    ri = jnp.where(behind, ri_behind, jnp.where(use_x, ri_x, ri_c))
    site = behind | use_x | (rb.curb_n[r] > 0)
    p_act = (kw < p.num_walkers) & site
    right, left = _kerbs(m, rb, r, ri, p.ped_kerb)
    start_right = sudden | (u3 < 0.5)
    q = jnp.where(start_right, right, left)
    direction = jnp.where(start_right, 1.0, -1.0)
    vd = p.ped_speed_min + (p.ped_speed_max - p.ped_speed_min) * u3
    yaw = rb.yaw[r, ri] + direction * 0.5 * jnp.pi
    xy = rb.xy[r, ri] + q[:, None] * _left(rb.yaw[r, ri])
    f32 = jnp.float32
    return Users(
        ped_xy=xy.astype(f32), ped_yaw=yaw.astype(f32), ped_v=jnp.zeros(num_w, f32),
        ped_active=p_act, ped_ri=ri.astype(jnp.int32), ped_q=q.astype(f32),
        ped_dir=direction.astype(f32), ped_vd=vd.astype(f32), ped_armed=sudden & p_act,
        ped_seed=seed, obst_xy=o_xy.astype(f32), obst_yaw=o_yaw.astype(f32),
        obst_active=o_act, obst_ri=o_ri.astype(jnp.int32), obst_q=o_q.astype(f32))


def walkers_step(u: Users, params: Any, route: jax.Array, prog: jax.Array, ego_v: jax.Array,
                 t: jax.Array) -> Users:
    """One step of every walker (O(W)): start (gap acceptance or sudden trigger), walk,
    stop at the far kerb and turn round."""
    m, rb, p = params.map, params.routes, params
    r = route
    d_ego = rb.cum[r, u.ped_ri] - rb.cum[r, prog]  # route metres from the ego to the crossing
    waiting = u.ped_v <= 0.0
    rnd = sim.unit_float(sim.mix32(u.ped_seed ^ (t.astype(jnp.uint32) * jnp.uint32(0x27D4EB2F))))
    gap_ok = (d_ego > ego_v * p.ped_gap_s + 5.0) | (d_ego < -5.0)
    go_random = ~u.ped_armed & (rnd < p.ped_cross_rate * p.dt) & gap_ok
    go_sudden = u.ped_armed & (d_ego < p.ped_trigger_m) & (d_ego > 0.0)
    moving = u.ped_active & (~waiting | go_random | go_sudden)
    right, left = _kerbs(m, rb, r, u.ped_ri, p.ped_kerb)
    target = jnp.where(u.ped_dir > 0, left, right)
    q = jnp.where(moving, u.ped_q + u.ped_dir * u.ped_vd * p.dt, u.ped_q)
    arrived = moving & (u.ped_dir * (q - target) >= 0.0)
    q = jnp.where(arrived, target, q)
    direction = jnp.where(arrived, -u.ped_dir, u.ped_dir)
    v = jnp.where(moving & ~arrived, u.ped_vd, 0.0)
    yaw_r = rb.yaw[r, u.ped_ri]
    xy = rb.xy[r, u.ped_ri] + q[:, None] * _left(yaw_r)
    xy, yaw, v, q, direction, armed = sim.keep(xy, yaw_r + direction * 0.5 * jnp.pi, v, q,
                                               direction, u.ped_armed & ~go_sudden)
    return u._replace(ped_xy=xy, ped_yaw=yaw, ped_v=v, ped_q=q, ped_dir=direction,
                      ped_armed=armed)


def ego_hits(ego_xy: jax.Array, ego_dir: jax.Array, u: Users) -> tuple[jax.Array, jax.Array]:
    """(walker hits (W,), parked-car hits (O,)): the ego box overlaps them now (O(W + O))."""
    rel_w = sim.to_frame_cs(u.ped_xy - ego_xy, ego_dir[0], ego_dir[1])
    hit_w = ((jnp.abs(rel_w[:, 0]) <= 0.5 * sim.VEH_LEN + WALKER_R)
             & (jnp.abs(rel_w[:, 1]) <= 0.5 * sim.VEH_WID + WALKER_R) & u.ped_active)
    rel_o = sim.to_frame_cs(u.obst_xy - ego_xy, ego_dir[0], ego_dir[1])
    oc, os_ = jnp.cos(u.obst_yaw), jnp.sin(u.obst_yaw)
    rc = oc * ego_dir[0] + os_ * ego_dir[1]
    rs = os_ * ego_dir[0] - oc * ego_dir[1]
    hit_o = sim.overlap_ego_frame(rel_o, rc, rs) & u.obst_active
    return hit_w, hit_o


def ego_ttc(ego_xy: jax.Array, ego_dir: jax.Array, ego_v: jax.Array, u: Users,
            times: jax.Array) -> jax.Array:
    """Walkers / parked cars the ego would touch at constant velocities after `times` s
    (CaRL's TTC counts walkers and static objects too: simple_reward.py
    does_agent_violate_ttc(..., vehicles_all, walkers_all, static_all))."""
    fwd = ego_v * times[:, None, None] * jnp.stack([1.0, 0.0])
    ped_vel = u.ped_v[:, None] * jnp.stack([jnp.cos(u.ped_yaw), jnp.sin(u.ped_yaw)], -1)
    rel_w = sim.to_frame_cs(u.ped_xy + times[:, None, None] * ped_vel - ego_xy, ego_dir[0],
                            ego_dir[1]) - fwd
    hit_w = ((jnp.abs(rel_w[..., 0]) <= 0.5 * sim.VEH_LEN + WALKER_R)
             & (jnp.abs(rel_w[..., 1]) <= 0.5 * sim.VEH_WID + WALKER_R) & u.ped_active)
    rel_o = sim.to_frame_cs(u.obst_xy - ego_xy, ego_dir[0], ego_dir[1]) - fwd
    oc, os_ = jnp.cos(u.obst_yaw), jnp.sin(u.obst_yaw)
    rc = oc * ego_dir[0] + os_ * ego_dir[1]
    rs = os_ * ego_dir[0] - oc * ego_dir[1]
    hit_o = sim.overlap_ego_frame(rel_o, rc, rs) & u.obst_active
    return jnp.any(hit_w) | jnp.any(hit_o)


# ----------------------------------------------------------------- background traffic
def traffic_gaps(m: MapArrays, rb: RouteBank, route: jax.Array, pt: jax.Array, u: jax.Array,
                 v: jax.Array, turn: jax.Array, sign_done: jax.Array, users: Users,
                 stop_signs: Any, s0: Any) -> tuple[jax.Array, jax.Array]:
    """(gap to a standing obstacle ahead (N,), updated stop memory) for traffic_step's
    extra_gap: the stop line of a stop-sign connector until the vehicle has stood there
    (< 0.1 m/s within s0 + 1.5 m of it), and walkers on the vehicle's lane (a walker's
    crossing point is compared with each vehicle's lane and position: N x W integer
    comparisons, no geometry)."""
    row = m.pt_tab[pt]
    lane = row[:, LANE].astype(jnp.int32)
    k = sim.choice(turn, row[:, NSUCC].astype(jnp.int32))
    nl = m.pt_tab[m.lane_next[lane, k], LANE].astype(jnp.int32)
    to_end = row[:, TO_END] - u
    stop_gap = to_end - 0.5 * sim.VEH_LEN - 1.0
    at_sign = stop_signs & m.lane_stop[nl] & (nl != lane) & (row[:, JUNC] < 0)
    done = sign_done | (at_sign & (v < 0.1) & (stop_gap < s0 + 1.5))
    gap = jnp.where(at_sign & ~done, stop_gap, jnp.inf)
    # walkers in the lane band of their crossing, on the vehicle's lane ahead of it
    c_row = m.pt_tab[rb.pt[route, users.ped_ri]]  # (W, C)
    c_lane = c_row[:, LANE].astype(jnp.int32)
    half = 0.5 * c_row[:, WIDTH] + 0.5
    in_lane = users.ped_active & (jnp.abs(users.ped_q) < half + WALKER_R)
    s_v = row[:, S_IN] + u
    ahead = c_row[None, :, S_IN] - s_v[:, None]
    on = (lane[:, None] == c_lane[None, :]) & in_lane[None, :] & (ahead > 0.0)
    gap_w = jnp.min(jnp.where(on, ahead - 0.5 * sim.VEH_LEN - WALKER_R - 1.0, jnp.inf), axis=1,
                    initial=jnp.inf)
    return jnp.minimum(gap, gap_w), done
