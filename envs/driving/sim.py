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


def overlap_ego_frame(d: jax.Array, c: jax.Array, s: jax.Array, length=VEH_LEN,
                      width=VEH_WID) -> jax.Array:
    """Separating-axis test of the ego box (origin, heading 0) against boxes at offsets
    `d` (..., 2) with relative heading (cos, sin) = (c, s), all in the ego frame.

    Same result as obb_overlap; the projection radii do not depend on the
    offset, so checking many future offsets costs ~20 flops each.
    """
    hl, hw = 0.5 * length, 0.5 * width
    ac, as_ = jnp.abs(c), jnp.abs(s)
    r_x = hl + hl * ac + hw * as_
    r_y = hw + hl * as_ + hw * ac
    r_a = hl + hl * ac + hw * as_
    r_n = hw + hl * as_ + hw * ac
    dx, dy = d[..., 0], d[..., 1]
    return ((jnp.abs(dx) <= r_x) & (jnp.abs(dy) <= r_y) & (jnp.abs(dx * c + dy * s) <= r_a)
            & (jnp.abs(dy * c - dx * s) <= r_n))


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
    root = jnp.sqrt(jnp.maximum(a_max * b, 1e-3))
    s_star = s0 + jnp.maximum(0.0, v * headway + v * dv / (2.0 * root))
    free = 1.0 - (v / jnp.maximum(v0, 0.1)) ** 4
    return a_max * (free - (s_star / jnp.maximum(gap, 0.1)) ** 2)


def traffic_step(m: MapArrays, key, pt, u, v, turn, v_factor, active, ego_xy, ego_yaw, ego_v,
                 ego_pt, lights, p) -> tuple[jax.Array, ...]:
    """One 0.1 s step of all background vehicles. Returns (pt, u, v, turn, accel).

    Vehicle-vehicle interactions are index comparisons on the lane graph
    (N x N, no trigonometry); only the ego column also gets the geometric test.
    """
    n = pt.shape[0]
    yaw = m.pt_yaw[pt]
    cs = jnp.stack(rot(yaw), -1)  # (N, 2) headings
    xy = m.pt_xy[pt] + u[:, None] * cs
    lane = m.pt_lane[pt]
    nl = next_lane(m, lane, turn)
    lane_len = m.pt_to_end[m.lane_start[lane]]
    to_end = m.pt_to_end[pt] - u
    s_here = lane_len - to_end
    entering = nl != lane

    # background leaders: exact along-lane gaps (centre to centre) on this or the next lane
    valid = active[None, :] & ~jnp.eye(n, dtype=bool)
    same = (lane[None, :] == lane[:, None]) & (s_here[None, :] > s_here[:, None])
    nxt = (lane[None, :] == nl[:, None]) & entering[:, None]
    gap_bb = jnp.where(same, s_here[None, :] - s_here[:, None],
                       jnp.where(nxt, to_end[:, None] + s_here[None, :], jnp.inf))
    gap_bb = jnp.where(valid, gap_bb, jnp.inf)
    lead = jnp.argmin(gap_bb, axis=1)
    gap_b = jnp.take_along_axis(gap_bb, lead[:, None], 1)[:, 0]
    lead_vb = v[lead] * jnp.sum(cs * cs[lead], -1)
    # the ego as a leader: along the lane, or geometrically in a corridor ahead
    e_lane = m.pt_lane[ego_pt]
    e_s = m.pt_to_end[m.lane_start[e_lane]] - m.pt_to_end[ego_pt]
    e_dir = jnp.stack(rot(ego_yaw))
    cos_e = cs @ e_dir
    d = ego_xy - xy
    lon = jnp.sum(d * cs, -1)
    lat = cs[:, 0] * d[:, 1] - cs[:, 1] * d[:, 0]
    gap_e = jnp.where((e_lane == lane) & (e_s > s_here), e_s - s_here, jnp.inf)
    gap_e = jnp.minimum(gap_e, jnp.where((e_lane == nl) & entering, to_end + e_s, jnp.inf))
    gap_e = jnp.minimum(gap_e, jnp.where((lon > 0.0) & (jnp.abs(lat) < 1.8) & (cos_e > -0.5),
                                         lon, jnp.inf))
    ego_leads = gap_e < gap_b
    gap = jnp.minimum(gap_b, gap_e) - VEH_LEN
    lead_v = jnp.where(ego_leads, ego_v * cos_e, lead_vb)
    dv = v - jnp.where(jnp.isfinite(gap), lead_v, v)

    # stop line: red / yellow light on the next connector, or junction occupied
    in_junc = m.pt_junction[pt] >= 0
    nl_light = m.lane_light[nl]
    state = jnp.where(nl_light >= 0, lights[jnp.maximum(nl_light, 0)], NO_LIGHT)
    stop_gap = to_end - 0.5 * VEH_LEN - 1.0
    can_stop = stop_gap > v**2 / (2 * 4.0)
    must_stop = (state == RED) | ((state == YELLOW) & can_stop)
    nl_junc = m.pt_junction[m.lane_start[nl]]
    junc = m.pt_junction[pt]
    cross_bb = (junc[None, :] == nl_junc[:, None]) & valid & ((cs @ cs.T) < 0.82)
    cross_e = (m.pt_junction[ego_pt] == nl_junc) & (cos_e < 0.82)
    occupied = (jnp.any(cross_bb, axis=1) | cross_e) & (nl_junc >= 0)
    yield_now = occupied & (to_end < 12.0) & (stop_gap > 0.0)
    stop = (must_stop | yield_now) & ~in_junc & entering
    use_stop = stop & (stop_gap < gap)
    gap_all = jnp.where(use_stop, stop_gap, gap)
    dv_all = jnp.where(use_stop, v, dv)

    v0 = m.pt_speed[pt] * v_factor
    acc = idm_accel(v, v0, gap_all, dv_all, p.idm_accel, p.idm_decel, p.idm_s0, p.idm_headway)
    acc = jnp.clip(acc, -9.0, p.idm_accel)
    v_new = jnp.maximum(v + acc * p.dt, 0.0)
    new_turn = jax.random.randint(key, (n,), 0, 1 << 16)
    pt2, u2, turn2 = advance(m, pt, u, turn, v_new * p.dt, new_turn)
    return (jnp.where(active, pt2, pt), jnp.where(active, u2, u), jnp.where(active, v_new, 0.0),
            jnp.where(active, turn2, turn), acc)


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
