"""Jittable pieces of the driving simulation (10 Hz): geometry, lights, traffic, ego.

Conventions: positions in metres in the map frame, headings in radians with
direction (cos yaw, sin yaw); "lateral" is positive towards +90 degrees
(the left of the heading in a y-up plot). Every vehicle is a box of
VEH_LEN x VEH_WID around its centre.

Background traffic (all vehicles at once, no Python loops):
* a vehicle sits on a lane point `pt` plus a distance `u` along its segment
  and moves point to point; after the last point of a lane it enters the
  successor `lane_succ[lane, turn % nsucc]`, `turn` being redrawn on entry;
* IDM car-following; the leader is the nearest vehicle (ego included) ahead
  on the same or the next lane (exact, along the lane), or, as a fallback
  for crossing lanes, geometrically inside a narrow corridor ahead;
* a red or yellow light of the next connector is a standing obstacle at the
  stop line (yellow only when the vehicle can still stop at 4 m/s^2);
* junction yield rule: a vehicle that is within 12 m of a junction does not
  enter it while any other vehicle (ego included) inside that junction
  heads more than 35 degrees away from its own heading;
* background vehicles ignore each other's collisions (they can overlap in
  rare cases); collisions count only for the ego.

Traffic lights: light k of a group of n cycles green (G s), yellow (Y s),
red; lights of a group take turns with an all-red gap (R s) between them,
so the cycle is n (G + Y + R) s and conflicting approaches alternate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs.driving.roadmap import MapArrays

VEH_LEN = 4.6
VEH_WID = 2.0
WHEELBASE = 2.9
GREEN, YELLOW, RED, NO_LIGHT = 0, 1, 2, 3


# ----------------------------------------------------------------- geometry
def rot(yaw: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.cos(yaw), jnp.sin(yaw)


def to_frame(dxy: jax.Array, yaw: jax.Array) -> jax.Array:
    """World offsets (..., 2) -> a frame with heading `yaw` (broadcast): (lon, lat)."""
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    return jnp.stack([dxy[..., 0] * c + dxy[..., 1] * s, -dxy[..., 0] * s + dxy[..., 1] * c], -1)


def obb_overlap(c1, yaw1, c2, yaw2, length=VEH_LEN, width=VEH_WID) -> jax.Array:
    """Exact separating-axis test of two oriented boxes of the same size (broadcasts).

    The four candidate axes are the two box headings and their normals; the
    boxes overlap iff their projections overlap on all four.
    """
    d = c2 - c1
    hl, hw = 0.5 * length, 0.5 * width
    a1 = jnp.stack(rot(yaw1), -1)
    a2 = jnp.stack(rot(yaw2), -1)
    n1 = jnp.stack([-a1[..., 1], a1[..., 0]], -1)
    n2 = jnp.stack([-a2[..., 1], a2[..., 0]], -1)

    def sep(ax):
        proj = jnp.abs(jnp.sum(d * ax, -1))
        r1 = hl * jnp.abs(jnp.sum(a1 * ax, -1)) + hw * jnp.abs(jnp.sum(n1 * ax, -1))
        r2 = hl * jnp.abs(jnp.sum(a2 * ax, -1)) + hw * jnp.abs(jnp.sum(n2 * ax, -1))
        return proj > r1 + r2

    a1b, n1b = jnp.broadcast_to(a1, d.shape), jnp.broadcast_to(n1, d.shape)
    a2b, n2b = jnp.broadcast_to(a2, d.shape), jnp.broadcast_to(n2, d.shape)
    return ~(sep(a1b) | sep(n1b) | sep(a2b) | sep(n2b))


def grid_lookup(m: MapArrays, xy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(nearest lane point, drivable) of positions (..., 2) from the map rasters."""
    ij = jnp.floor((xy - m.grid_origin) / m.grid_res).astype(jnp.int32)
    w, h = m.grid_nearest.shape
    inside = (ij[..., 0] >= 0) & (ij[..., 0] < w) & (ij[..., 1] >= 0) & (ij[..., 1] < h)
    i = jnp.clip(ij[..., 0], 0, w - 1)
    j = jnp.clip(ij[..., 1], 0, h - 1)
    return m.grid_nearest[i, j], m.grid_drivable[i, j] & inside


def box_corners(xy: jax.Array, yaw: jax.Array, length=VEH_LEN, width=VEH_WID) -> jax.Array:
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    fwd = jnp.stack([c, s], -1) * (0.5 * length)
    left = jnp.stack([-s, c], -1) * (0.5 * width)
    return jnp.stack([xy + fwd + left, xy + fwd - left, xy - fwd - left, xy - fwd + left], -2)


# ----------------------------------------------------------------- lights
def light_states(m: MapArrays, time_s: jax.Array, group_offset: jax.Array, green: jax.Array,
                 yellow: jax.Array, allred: jax.Array) -> jax.Array:
    """(NL,) int GREEN / YELLOW / RED of every light at `time_s`."""
    phase = green + yellow + allred
    cycle = m.light_nphase * phase
    local = jnp.mod(time_s + group_offset[m.light_group], cycle) - m.light_order * phase
    return jnp.where((local >= 0) & (local < green), GREEN,
                     jnp.where((local >= green) & (local < green + yellow), YELLOW, RED))


# ----------------------------------------------------------------- traffic
def veh_pose(m: MapArrays, pt: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    yaw = m.pt_yaw[pt]
    xy = m.pt_xy[pt] + u[..., None] * jnp.stack(rot(yaw), -1)
    return xy, yaw


def next_lane(m: MapArrays, lane: jax.Array, turn: jax.Array) -> jax.Array:
    n = jnp.maximum(m.lane_nsucc[lane], 1)
    nl = m.lane_succ[lane, jnp.mod(turn, n)]
    return jnp.where(m.lane_nsucc[lane] > 0, nl, lane)


def advance(m: MapArrays, pt, u, turn, dist, new_turn, substeps: int = 3):
    """Move `dist` metres along the lane graph (at most `substeps` segments per step)."""
    u = u + dist
    for _ in range(substeps):
        seg = m.pt_seg_len[pt]
        over = u >= seg
        lane = m.pt_lane[pt]
        last = m.pt_is_last[pt]
        nxt = jnp.where(last, m.lane_start[next_lane(m, lane, turn)], pt + 1)
        pt = jnp.where(over, nxt, pt)
        u = jnp.where(over, u - seg, u)
        turn = jnp.where(over & last, new_turn, turn)
    return pt, jnp.minimum(u, m.pt_seg_len[pt]), turn


def idm_accel(v, v0, gap, dv, a_max, b, s0, headway):
    """Intelligent Driver Model acceleration (Treiber et al. 2000)."""
    s_star = s0 + jnp.maximum(0.0, v * headway + v * dv / (2.0 * jnp.sqrt(a_max * b)))
    free = 1.0 - (v / jnp.maximum(v0, 0.1)) ** 4
    return a_max * (free - (s_star / jnp.maximum(gap, 0.1)) ** 2)


def traffic_step(m: MapArrays, key, pt, u, v, turn, v_factor, active, ego_xy, ego_yaw, ego_v,
                 ego_pt, lights, p) -> tuple[jax.Array, ...]:
    """One 0.1 s step of all background vehicles. Returns (pt, u, v, turn, accel)."""
    n = pt.shape[0]
    xy, yaw = veh_pose(m, pt, u)
    lane = m.pt_lane[pt]
    nl = next_lane(m, lane, turn)
    to_end = m.pt_to_end[pt] - u
    s_here = m.pt_to_end[m.lane_start[lane]] - to_end  # distance from my lane start

    # candidates: all background vehicles + the ego (index n)
    o_xy = jnp.concatenate([xy, ego_xy[None]], 0)
    o_yaw = jnp.concatenate([yaw, ego_yaw[None]])
    o_v = jnp.concatenate([v, ego_v[None]])
    o_pt = jnp.concatenate([pt, ego_pt[None]])
    o_u = jnp.concatenate([u, jnp.zeros(1)])
    o_act = jnp.concatenate([active, jnp.ones(1, bool)])
    o_lane = m.pt_lane[o_pt]
    o_s = m.pt_to_end[m.lane_start[o_lane]] - m.pt_to_end[o_pt] + o_u
    not_self = ~jnp.eye(n, n + 1, dtype=bool)
    valid = o_act[None, :] & not_self
    # exact along-lane gaps (centre to centre)
    same = (o_lane[None, :] == lane[:, None]) & (o_s[None, :] > s_here[:, None])
    gap_same = jnp.where(same, o_s[None, :] - s_here[:, None], jnp.inf)
    on_next = (o_lane[None, :] == nl[:, None]) & (nl != lane)[:, None]
    gap_next = jnp.where(on_next, to_end[:, None] + o_s[None, :], jnp.inf)
    # geometric corridor fallback
    rel = to_frame(o_xy[None, :, :] - xy[:, None, :], yaw[:, None])
    cosd = jnp.cos(o_yaw[None, :] - yaw[:, None])
    is_ego = jnp.arange(n + 1) == n
    corridor = (rel[..., 0] > 0.0) & (jnp.abs(rel[..., 1]) < 1.8) & (
        cosd > jnp.where(is_ego, -0.5, 0.5)[None, :])
    gap_geo = jnp.where(corridor, rel[..., 0], jnp.inf)
    gap_c = jnp.where(valid, jnp.minimum(jnp.minimum(gap_same, gap_next), gap_geo), jnp.inf)
    lead = jnp.argmin(gap_c, axis=1)
    gap = jnp.take_along_axis(gap_c, lead[:, None], 1)[:, 0] - VEH_LEN
    lead_v = o_v[lead] * jnp.take_along_axis(cosd, lead[:, None], 1)[:, 0]
    dv = v - jnp.where(jnp.isfinite(gap), lead_v, v)

    # stop line: red / yellow light on the next connector, or junction occupied
    in_junc = m.pt_junction[pt] >= 0
    nl_light = m.lane_light[nl]
    state = jnp.where(nl_light >= 0, lights[jnp.maximum(nl_light, 0)], NO_LIGHT)
    stop_gap = to_end - 0.5 * VEH_LEN - 1.0
    can_stop = stop_gap > v**2 / (2 * 4.0)
    must_stop = (state == RED) | ((state == YELLOW) & can_stop)
    nl_junc = m.pt_junction[m.lane_start[nl]]
    o_junc = m.pt_junction[o_pt]
    conflict = (o_junc[None, :] == nl_junc[:, None]) & (nl_junc >= 0)[:, None] & valid & (
        cosd < 0.82)
    yield_now = jnp.any(conflict, axis=1) & (to_end < 12.0) & (stop_gap > 0.0)
    stop = (must_stop | yield_now) & ~in_junc & (nl != lane)
    gap_all = jnp.where(stop & (stop_gap < gap), stop_gap, gap)
    dv_all = jnp.where(stop & (stop_gap < gap), v, dv)

    v0 = m.pt_speed[pt] * v_factor
    acc = idm_accel(v, v0, gap_all, dv_all, p.idm_accel, p.idm_decel, p.idm_s0, p.idm_headway)
    acc = jnp.clip(acc, -9.0, p.idm_accel)
    v_new = jnp.maximum(v + acc * p.dt, 0.0)
    new_turn = jax.random.randint(key, (n,), 0, 1 << 16)
    pt2, u2, turn2 = advance(m, pt, u, turn, v_new * p.dt, new_turn)
    keep = active
    return (jnp.where(keep, pt2, pt), jnp.where(keep, u2, u), jnp.where(keep, v_new, 0.0),
            jnp.where(keep, turn2, turn), acc)


# ----------------------------------------------------------------- ego
def bicycle(x, y, yaw, v, steer, accel, dt, v_max):
    """Kinematic bicycle about the centre (lf = lr = WHEELBASE / 2)."""
    beta = jnp.arctan(0.5 * jnp.tan(steer))
    x = x + v * jnp.cos(yaw + beta) * dt
    y = y + v * jnp.sin(yaw + beta) * dt
    yaw_rate = v / (0.5 * WHEELBASE) * jnp.sin(beta)
    yaw = jnp.mod(yaw + yaw_rate * dt + jnp.pi, 2 * jnp.pi) - jnp.pi
    v = jnp.clip(v + accel * dt, 0.0, v_max)
    return x, y, yaw, v, yaw_rate
