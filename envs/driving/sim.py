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

from envs.driving import neighbours as nb
from envs.driving.roadmap import (
    COS,
    JUNC,
    LANE,
    LIGHT,
    NSUCC,
    S_IN,
    SEG,
    SIN,
    SPEED,
    TO_END,
    WIDTH,
    MapArrays,
    X,
    Y,
)

VEH_LEN = 4.6
VEH_WID = 2.0
WHEELBASE = 2.9
GREEN, YELLOW, RED, NO_LIGHT = 0, 1, 2, 3


# ----------------------------------------------------------------- geometry
def keep(*xs):
    """Materialise arrays: XLA's CPU fusion recomputes a long elementwise chain in every
    consumer (once per gathered column / stacked coordinate); a reduction is a fusion root
    it does not inline. (lax.optimization_barrier is dropped before fusion on the CPU.)"""
    out = []
    for x in xs:
        low = jnp.iinfo(x.dtype).min if jnp.issubdtype(x.dtype, jnp.integer) else (
            False if x.dtype == bool else -jnp.inf)
        out.append(jnp.max(jnp.stack([x, jnp.full_like(x, low)]), 0))
    return out[0] if len(out) == 1 else tuple(out)


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
    w, h = m.grid_code.shape
    inside = (ij[..., 0] >= 0) & (ij[..., 0] < w) & (ij[..., 1] >= 0) & (ij[..., 1] < h)
    code = m.grid_code[jnp.clip(ij[..., 0], 0, w - 1), jnp.clip(ij[..., 1], 0, h - 1)]
    return code >> 1, ((code & 1) > 0) & inside


def to_frame_cs(dxy: jax.Array, c: jax.Array, s: jax.Array) -> jax.Array:
    """to_frame with the heading given as (cos, sin) (no trigonometry)."""
    return jnp.stack([dxy[..., 0] * c + dxy[..., 1] * s, -dxy[..., 0] * s + dxy[..., 1] * c], -1)


def box_corners(xy: jax.Array, yaw: jax.Array, length=VEH_LEN, width=VEH_WID) -> jax.Array:
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    fwd = jnp.stack([c, s], -1) * (0.5 * length)
    left = jnp.stack([-s, c], -1) * (0.5 * width)
    return jnp.stack([xy + fwd + left, xy + fwd - left, xy - fwd - left, xy - fwd + left], -2)


def mix32(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash (murmur3's finaliser): many cheap random streams from one
    threefry draw (threefry costs about 1 ms per 16 values x 4096 envs on the CPU)."""
    x = jnp.asarray(x).astype(jnp.uint32)
    x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def unit_float(x: jax.Array) -> jax.Array:
    """uint32 bits -> float32 in [0, 1)."""
    return (x >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


# ----------------------------------------------------------------- lights
def light_states(m: MapArrays, time_s: jax.Array, group_offset: jax.Array, green: jax.Array,
                 yellow: jax.Array, allred: jax.Array) -> jax.Array:
    """(NL,) int GREEN / YELLOW / RED of every light at `time_s`."""
    phase = green + yellow + allred
    cycle = m.light_nphase * phase
    local = jnp.mod(time_s + group_offset[m.light_group], cycle) - m.light_order * phase
    return keep(jnp.where((local >= 0) & (local < green), GREEN,
                          jnp.where((local >= green) & (local < green + yellow), YELLOW, RED)))


# ----------------------------------------------------------------- traffic
def veh_pose(m: MapArrays, pt: jax.Array, u: jax.Array,
             lat: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(centre (..., 2), heading (cos, sin) (..., 2)) of vehicles at lane point + u, `lat` m
    left of the lane centre (DrivingState.veh_lat, during lane changes)."""
    row = m.pt_tab[:, X:SIN + 1][pt]  # a 4-column table: a cheaper gather
    cs = row[..., 2:4]
    xy = row[..., 0:2] + u[..., None] * cs
    if lat is not None:
        xy = xy + lat[..., None] * jnp.stack([-cs[..., 1], cs[..., 0]], -1)
    return xy, cs


def choice(turn: jax.Array, nsucc: jax.Array) -> jax.Array:
    """Successor index of a vehicle's turn draw among `nsucc` successors."""
    return jnp.mod(jnp.right_shift(turn, 8), jnp.maximum(nsucc, 1))


def next_turn(turn: jax.Array) -> jax.Array:
    """The next pseudo-random turn draw of each vehicle (a 24-bit LCG on its own state).

    The draw only has to vary between lanes and vehicles, and seeding it at
    reset from the episode key keeps episodes random; a threefry draw of
    every vehicle on every step cost ~0.8 ms of a ~14 ms step (batch 4096, CPU).
    """
    return jnp.bitwise_and(turn * 1140671485 + 12820163, (1 << 24) - 1)


def lane_point(start: jax.Array, seg: jax.Array, length: jax.Array,
               s: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(point, u) at arc length s of a lane with first point `start`, equal segments of
    `seg` m and `length` m (points are equally spaced along every lane)."""
    n = jnp.round(length / seg).astype(jnp.int32)
    k = jnp.clip(jnp.floor(s / seg).astype(jnp.int32), 0, n - 1)
    return start + k, jnp.clip(s - k * seg, 0.0, seg)


def advance(row: jax.Array, nl_row: jax.Array, pt: jax.Array, u: jax.Array, turn: jax.Array,
            nl_start: jax.Array, dist: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Move `dist` metres along the lane graph: arithmetic on the pt_tab rows of the
    current point (`row`) and of the next lane's first point (`nl_row`), no look-ups.
    A step ends at most on the next lane (a lane shorter than one step is crossed
    at the speed of one lane per step)."""
    seg = row[..., SEG]
    s_in = row[..., S_IN]
    length = s_in + row[..., TO_END]
    s = s_in + u + dist
    start = pt - jnp.round(s_in / seg).astype(jnp.int32)
    pt_here, u_here = lane_point(start, seg, length, s)
    pt_next, u_next = lane_point(nl_start, nl_row[..., SEG], nl_row[..., TO_END], s - length)
    cross = s >= length
    return (jnp.where(cross, pt_next, pt_here), jnp.where(cross, u_next, u_here),
            jnp.where(cross, next_turn(turn), turn))


def idm_accel(v, v0, gap, dv, a_max, b, s0, headway):
    """Intelligent Driver Model acceleration (Treiber et al. 2000)."""
    root = jnp.sqrt(jnp.maximum(a_max * b, 1e-3))
    s_star = s0 + jnp.maximum(0.0, v * headway + v * dv / (2.0 * root))
    free = 1.0 - (v / jnp.maximum(v0, 0.1)) ** 4
    return a_max * (free - (s_star / jnp.maximum(gap, 0.1)) ** 2)


def traffic_step(m: MapArrays, pt, u, v, turn, v_factor, active, ego_xy, ego_cs, ego_v,
                 ego_row, lights, p, extra_gap: jax.Array | None = None,
                 lat: jax.Array | None = None,
                 step_bits: jax.Array | None = None) -> tuple[jax.Array, ...]:
    """One 0.1 s step of all background vehicles.

    Returns (pt, u, v, turn, accel, xy, heading (cos, sin)) after the step.
    Vehicle-vehicle interactions are look-ups in the vehicles' (lane, s) order
    and per-junction heading arcs (neighbours.py, O(N log N)); only the ego also
    gets the geometric test. `ego_row` is the pt_tab row of the ego's nearest
    lane point. `extra_gap` (N,):
    gaps to standing obstacles from envs.driving.road_users (stop signs, walkers), or None.
    `lat` (N,): lateral offsets from the lane centres (lane changes, see `lane_changes`;
    needs `step_bits`, a uint32 drawn per step); then the result also ends with the new
    offsets. None: no lane changes (the step before issue 19).
    """
    row = m.pt_tab[pt]
    cs = row[:, COS:SIN + 1]  # (N, 2) headings
    xy = row[:, X:Y + 1] + u[:, None] * cs
    if lat is not None:
        xy = xy + lat[:, None] * jnp.stack([-cs[:, 1], cs[:, 0]], -1)
    lane = row[:, LANE].astype(jnp.int32)
    k = choice(turn, row[:, NSUCC].astype(jnp.int32))
    nl_start = m.lane_next[lane, k]
    nl_row = m.pt_tab[nl_start]
    nl = nl_row[:, LANE].astype(jnp.int32)
    to_end = row[:, TO_END] - u
    s_here = row[:, S_IN] + u
    entering = nl != lane

    # background leaders: exact along-lane gaps (centre to centre) on this or the next lane,
    # from the vehicles' (lane, s) order and per-lane minima (neighbours.py; was N x N)
    gap_b, lead_vb = nb.leaders(m.pt_tab, m.lane_start.shape[0], pt, u, v, active, row, nl,
                                entering)
    # the ego as a leader: along the lane, or geometrically in a corridor ahead
    e_lane = ego_row[LANE].astype(jnp.int32)
    e_s = ego_row[S_IN]
    cos_e = cs[:, 0] * ego_cs[0] + cs[:, 1] * ego_cs[1]
    d = ego_xy - xy
    lon = jnp.sum(d * cs, -1)
    lat_e = cs[:, 0] * d[:, 1] - cs[:, 1] * d[:, 0]
    gap_e = jnp.where((e_lane == lane) & (e_s > s_here), e_s - s_here, jnp.inf)
    gap_e = jnp.minimum(gap_e, jnp.where((e_lane == nl) & entering, to_end + e_s, jnp.inf))
    gap_e = jnp.minimum(gap_e, jnp.where((lon > 0.0) & (jnp.abs(lat_e) < 1.8) & (cos_e > -0.5),
                                         lon, jnp.inf))
    ego_leads = gap_e < gap_b
    gap = jnp.minimum(gap_b, gap_e) - VEH_LEN
    lead_v = jnp.where(ego_leads, ego_v * cos_e, lead_vb)
    dv = v - jnp.where(jnp.isfinite(gap), lead_v, v)

    # stop line: red / yellow light on the next connector, or junction occupied
    junc = row[:, JUNC].astype(jnp.int32)
    in_junc = junc >= 0
    nl_light = nl_row[:, LIGHT].astype(jnp.int32)
    state = jnp.where(nl_light >= 0, lights[jnp.maximum(nl_light, 0)], NO_LIGHT)
    stop_gap = to_end - 0.5 * VEH_LEN - 1.0
    can_stop = stop_gap > v**2 / (2 * 4.0)
    must_stop = (state == RED) | ((state == YELLOW) & can_stop)
    nl_junc = nl_row[:, JUNC].astype(jnp.int32)
    cross_b = nb.junction_conflicts(junc, cs, active, nl_junc, m.lane_start.shape[0])
    cross_e = (ego_row[JUNC].astype(jnp.int32) == nl_junc) & (cos_e < nb.CONFLICT_COS)
    occupied = (cross_b | cross_e) & (nl_junc >= 0)
    yield_now = occupied & (to_end < 12.0) & (stop_gap > 0.0)
    stop = (must_stop | yield_now) & ~in_junc & entering
    use_stop = stop & (stop_gap < gap)
    gap_all = jnp.where(use_stop, stop_gap, gap)
    dv_all = jnp.where(use_stop, v, dv)
    if extra_gap is not None:  # road users: standing obstacles (envs.driving.road_users)
        dv_all = jnp.where(extra_gap < gap_all, v, dv_all)
        gap_all = jnp.minimum(gap_all, extra_gap)

    v0 = row[:, SPEED] * v_factor
    acc = idm_accel(v, v0, gap_all, dv_all, p.idm_accel, p.idm_decel, p.idm_s0, p.idm_headway)
    acc = jnp.clip(acc, -9.0, p.idm_accel)
    v_new = jnp.maximum(v + acc * p.dt, 0.0)
    pt2, u2, turn2 = advance(row, nl_row, pt, u, turn, nl_start, v_new * p.dt)
    pt_out, u_out = jnp.where(active, pt2, pt), jnp.where(active, u2, u)
    if lat is None:
        xy_out, cs_out = veh_pose(m, pt_out, u_out)
        return (pt_out, u_out, jnp.where(active, v_new, 0.0), jnp.where(active, turn2, turn),
                acc, xy_out, cs_out)
    # lane-change decisions only when enabled (a real branch unless params are vmapped)
    pt_out, u_out, lat_out = jax.lax.cond(
        (p.lc_rate > 0) | (p.cutin_rate > 0),
        lambda: lane_changes(m, pt, u, v, active, lat, lane, gap_b, ego_row, step_bits, p,
                             pt_out, u_out),
        lambda: (pt_out, u_out, slide(lat, active, p)))
    pt_out, u_out, lat_out = keep(pt_out, u_out, lat_out)
    xy_out, cs_out = veh_pose(m, pt_out, u_out, lat_out)
    return (pt_out, u_out, jnp.where(active, v_new, 0.0), jnp.where(active, turn2, turn), acc,
            xy_out, cs_out, lat_out)


def beside(m: MapArrays, pt: jax.Array, u: jax.Array, target: jax.Array,
           same: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(point, u, arc length) on the parallel lane `target` beside lane point `pt` + `u`: the
    same share of the lane length, counted from the other end when it runs the other way."""
    row = m.pt_tab[pt]
    frac = (row[:, S_IN] + u) / jnp.maximum(row[:, S_IN] + row[:, TO_END], 1e-3)
    start = m.lane_start[jnp.maximum(target, 0)]
    t_row = m.pt_tab[start]
    length = t_row[:, TO_END]
    s_t = jnp.where(same, frac, 1.0 - frac) * length
    pt_t, u_t = lane_point(start, t_row[:, SEG], length, s_t)
    return pt_t, u_t, s_t


def lane_changes(m: MapArrays, pt, u, v, active, lat, lane, gap_ahead, ego_row, step_bits, p,
                 pt_new, u_new) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Lane changes of background vehicles to a parallel same-direction lane (MapArrays
    lane_left / lane_right), decided on the positions at the start of the step and
    applied to the advanced ones: (pt, u, lateral offset) after the step.

    A vehicle outside junctions, not already changing, that can finish before its lane
    ends, changes lanes when the gaps on the target lane are safe (bumper gaps ahead
    > max(lc_gap_min, 0.5 s * v), behind > lc_gap_min + 1 s * v) and
    * at `lc_rate` per second, when the target lane has > 10 m more room ahead; or
    * at `cutin_rate` per second, when the ego drives behind on the target lane with a
      bumper gap in [cutin_gap_min, cutin_gap_max] (a cut-in; the ego's gap is exempt
      from the safe-gap rule).
    The vehicle switches lane index at once, keeping its position, and its lateral
    offset from the new lane centre then shrinks at lc_lat_speed m/s (heading kept
    along the lane). Lateral positive = left of the heading (+90 degrees).
    """
    n = pt.shape[0]
    row = m.pt_tab[pt]
    to_end = row[:, TO_END] - u
    bits = mix32(step_bits ^ (jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)))
    pick_right = (bits & 1) > 0
    left, right = m.lane_left[lane], m.lane_right[lane]
    ok_l = (left >= 0) & m.lane_left_same[lane]
    ok_r = (right >= 0) & m.lane_right_same[lane]
    go_right = ok_r & (~ok_l | pick_right)
    target = jnp.where(go_right, right, left)
    target, bits = keep(target, bits)
    width = row[:, WIDTH]
    duration = width / jnp.maximum(p.lc_lat_speed, 0.1)
    eligible = (active & (ok_l | ok_r) & (row[:, JUNC] < 0) & (jnp.abs(lat) < 0.05)
                & (to_end > v * duration + 10.0))
    pt_t, u_t, s_t = beside(m, pt, u, target, jnp.ones_like(active))
    ahead, behind = nb.gaps_around(m.pt_tab, pt, u, active, target, s_t, pt_t, u_t)
    # the ego on the target lane
    e_lane, e_s = ego_row[LANE].astype(jnp.int32), ego_row[S_IN]
    ego_there = e_lane == target
    ego_ahead = jnp.where(ego_there & (e_s > s_t), e_s - s_t, jnp.inf)
    ego_behind = jnp.where(ego_there & (e_s <= s_t), s_t - e_s, jnp.inf)
    front_ok = jnp.minimum(ahead, ego_ahead) - VEH_LEN > jnp.maximum(p.lc_gap_min, 0.5 * v)
    rear_ok = behind - VEH_LEN > p.lc_gap_min + v
    ego_gap = ego_behind - VEH_LEN
    r1 = unit_float(mix32(bits ^ jnp.uint32(0x85EBCA6B)))
    r2 = unit_float(mix32(bits ^ jnp.uint32(0xC2B2AE35)))
    wish = (r1 < p.lc_rate * p.dt) & (ahead > gap_ahead + 10.0) & (ego_gap - v > p.lc_gap_min)
    cut_in = ((r2 < p.cutin_rate * p.dt) & (ego_gap >= p.cutin_gap_min)
              & (ego_gap <= p.cutin_gap_max))
    change = eligible & front_ok & rear_ok & (wish | cut_in)
    # apply to the advanced position (cancelled if the vehicle has left the lane meanwhile)
    change = change & (m.pt_tab[pt_new, LANE].astype(jnp.int32) == lane)
    pt_c, u_c, _ = beside(m, pt_new, u_new, target, jnp.ones_like(active))
    pt_c, u_c, change = keep(pt_c, u_c, change)
    old_xy = veh_pose(m, pt_new, u_new)[0]
    new_xy, new_cs = veh_pose(m, pt_c, u_c)
    lat_c = to_frame_cs(old_xy - new_xy, new_cs[:, 0], new_cs[:, 1])[:, 1]
    return (jnp.where(change, pt_c, pt_new), jnp.where(change, u_c, u_new),
            jnp.where(change, lat_c, slide(lat, active, p)))


def slide(lat: jax.Array, active: jax.Array, p) -> jax.Array:
    """Lateral offsets one step closer to the lane centre (lc_lat_speed m/s)."""
    step = jnp.minimum(jnp.abs(lat), p.lc_lat_speed * p.dt)
    return jnp.where(active, lat - jnp.sign(lat) * step, lat)


# ----------------------------------------------------------------- ego
def bicycle(x, y, yaw, v, steer, accel, dt, v_max):
    """Kinematic bicycle about the centre (lf = lr = WHEELBASE / 2)."""
    beta = jnp.arctan(0.5 * jnp.tan(steer))
    x = x + v * jnp.cos(yaw + beta) * dt
    y = y + v * jnp.sin(yaw + beta) * dt
    yaw_rate = v / (0.5 * WHEELBASE) * jnp.sin(beta)
    yaw = jnp.mod(yaw + yaw_rate * dt + jnp.pi, 2 * jnp.pi) - jnp.pi
    v = jnp.clip(v + accel * dt, 0.0, v_max)
    return keep(x, y, yaw, v, yaw_rate)
