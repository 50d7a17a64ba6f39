"""Neighbour look-ups of background traffic without N x N pairs (issue 19).

* Leaders on the own lane: the vehicles are sorted once per step by one packed
  uint32 key (lane point, position on its segment in 2^-b steps, vehicle index).
  Lane points are numbered along each lane, lane after lane, so this is the
  order by (lane, arc length); a vehicle's leader is next to it in that order.
  (XLA's CPU sort of one uint32 array is ~8x faster than a multi-key sort.)
* The first vehicle on the next lane: per-lane minima (segment reductions, O(N)).
* Junction conflicts: per junction, the occupants' headings reduced to an arc
  (mean heading and the extremes relative to it), so "does a vehicle inside
  junction J head more than 35 degrees away from me" is one comparison.

Exactness: the leaders equal the all-pairs search (tests/envs/driving/test_traffic.py)
unless three or more vehicles lie within one key step (< 1 mm) of each other on
a lane, i.e. overlap almost exactly (the sim lets background vehicles overlap
in rare cases); the junction test equals it up to float rounding at the 35 degree
threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from envs.driving.roadmap import COS, LANE, S_IN, SEG, SIN, TO_END

# cos(heading difference) below this = "conflicting" (sim.traffic_step's yield rule)
CONFLICT_COS = 0.82
# up to this many vehicles the all-pairs masks are cheaper on the CPU (batch 1024,
# traffic step alone: 0.5 vs 1.6 ms at 8 vehicles, 2.3 vs 4.5 at 32, 9.2 vs 7.8 at 64,
# 150 vs 29 at 256); both give the same leaders (tests/envs/driving/test_traffic.py)
ALL_PAIRS_MAX = 48


class LaneOrder(NamedTuple):
    """Vehicles sorted by (lane point, position on it); inactive ones last."""

    key: jax.Array  # (N,) uint32 sorted packed keys
    perm: jax.Array  # (N,) int32 vehicle index at each sorted position
    pos: jax.Array  # (N,) int32 sorted position of each vehicle
    shift_pt: int  # bit offset of the point index in the key
    shift_u: int  # bit offset of the quantised position on the segment
    u_steps: int  # quantisation steps per segment


def lane_order(pt: jax.Array, u: jax.Array, seg: jax.Array, active: jax.Array,
               num_points: int) -> LaneOrder:
    """Sort vehicles at lane point `pt` + `u` metres (segment length `seg`)."""
    n = pt.shape[0]
    idx_bits = max(1, (n - 1).bit_length())
    pt_bits = num_points.bit_length()  # points 0 .. num_points (= inactive)
    u_bits = 32 - idx_bits - pt_bits
    if u_bits < 6:
        raise ValueError(f"{n} vehicles on a map of {num_points} points do not fit the 32-bit "
                         "sort key of neighbours.lane_order")
    steps = 1 << u_bits
    q = jnp.clip(jnp.floor(u / seg * steps), 0, steps - 1).astype(jnp.uint32)
    p = jnp.where(active, pt, num_points).astype(jnp.uint32)
    idx = jnp.arange(n, dtype=jnp.uint32)
    key = jnp.sort((p << (u_bits + idx_bits)) | (q << idx_bits) | idx)
    perm = (key & ((1 << idx_bits) - 1)).astype(jnp.int32)
    pos = jnp.zeros(n, jnp.int32).at[perm].set(jnp.arange(n, dtype=jnp.int32))
    return LaneOrder(key, perm, pos, u_bits + idx_bits, idx_bits, steps)


def query_key(order: LaneOrder, pt: jax.Array, u: jax.Array, seg: jax.Array) -> jax.Array:
    """The sort key of a position (vehicle index bits 0): search it with searchsorted."""
    q = jnp.clip(jnp.floor(u / seg * order.u_steps), 0, order.u_steps - 1).astype(jnp.uint32)
    return (pt.astype(jnp.uint32) << order.shift_pt) | (q << order.shift_u)


def lane_leader(order: LaneOrder, lane: jax.Array, s: jax.Array, active: jax.Array,
                along: Callable[[jax.Array], jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(gap centre to centre, leader speed along the follower) of the nearest active
    vehicle strictly ahead on the own lane (inf / -inf: none). The candidates are the
    sorted neighbours one behind and three ahead (an order mixed up inside one key step,
    or a pair of vehicles on one spot, keeps the leaders there); among equal gaps the
    largest `along(j)` counts."""
    n = lane.shape[0]
    gaps, alongs = [], []
    for d in (-1, 1, 2, 3):
        c = order.pos + d
        j = order.perm[jnp.clip(c, 0, n - 1)]
        ok = (c >= 0) & (c < n) & active[j] & (lane[j] == lane) & (s[j] > s)
        gaps.append(jnp.where(ok, s[j] - s, jnp.inf))
        alongs.append(along(j))
    gap = jnp.minimum(jnp.minimum(gaps[0], gaps[1]), gaps[2])
    lead = jnp.full_like(gap, -jnp.inf)
    for g, a in zip(gaps, alongs, strict=True):
        lead = jnp.maximum(lead, jnp.where(g == gap, a, -jnp.inf))
    return gap, lead


def lane_rear(lane: jax.Array, s: jax.Array, v: jax.Array, pt: jax.Array, active: jax.Array,
              num_lanes: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per lane: (arc length of the rearmost active vehicle (inf: none), the largest speed
    among the vehicles at that arc length, the lowest lane point they occupy)."""
    seg = jnp.where(active, lane, num_lanes)  # out of range: dropped
    s_min = jax.ops.segment_min(jnp.where(active, s, jnp.inf), seg, num_lanes)
    rear = active & (s == s_min[jnp.clip(lane, 0, num_lanes - 1)])
    seg_r = jnp.where(rear, lane, num_lanes)
    v_max = jax.ops.segment_max(v, seg_r, num_lanes)
    pt_min = jax.ops.segment_min(pt, seg_r, num_lanes)
    return s_min, v_max, pt_min


def _leaders_all_pairs(v, active, cs, lane, s, to_end, nl, entering):
    """`leaders` by N x N masks (the search before issue 19; cheaper for few vehicles)."""
    n = v.shape[0]
    valid = active[None, :] & ~jnp.eye(n, dtype=bool)
    same = (lane[None, :] == lane[:, None]) & (s[None, :] > s[:, None])
    nxt = (lane[None, :] == nl[:, None]) & entering[:, None]
    gap_bb = jnp.where(same, s[None, :] - s[:, None],
                       jnp.where(nxt, to_end[:, None] + s[None, :], jnp.inf))
    gap_bb = jnp.where(valid, gap_bb, jnp.inf)
    gap = jnp.min(gap_bb, axis=1)
    # heading cosines of every pair, elementwise (a batched 16 x 2 x 16 matmul is slow on CPU)
    cos_bb = cs[:, None, 0] * cs[None, :, 0] + cs[:, None, 1] * cs[None, :, 1]
    # the leader's speed along our heading (max over exact ties; argmin is slow on CPU)
    return gap, jnp.max(jnp.where(gap_bb == gap[:, None], v[None, :] * cos_bb, -jnp.inf), 1)


def leaders(pt_tab: jax.Array, num_lanes: int, pt: jax.Array, u: jax.Array, v: jax.Array,
            active: jax.Array, row: jax.Array, nl: jax.Array,
            entering: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(gap centre to centre along the lanes, leader speed along the follower's heading)
    of each vehicle's nearest active vehicle ahead on its lane or, when `entering` the
    next lane `nl`, on that one; inf gap when none. `row` = pt_tab[pt]. Among leaders at
    exactly the same gap the largest speed counts (as the all-pairs search had it)."""
    cs = row[:, COS:SIN + 1]
    lane = row[:, LANE].astype(jnp.int32)
    s = row[:, S_IN] + u
    to_end = row[:, TO_END] - u

    if v.shape[0] <= ALL_PAIRS_MAX:
        return _leaders_all_pairs(v, active, cs, lane, s, to_end, nl, entering)

    def along(j):  # speed of vehicle j along our heading
        return v[j] * (cs[:, 0] * cs[j, 0] + cs[:, 1] * cs[j, 1])

    order = lane_order(pt, u, row[:, SEG], active, pt_tab.shape[0])
    gap_same, along_same = lane_leader(order, lane, s, active, along)
    s_rear, v_rear, pt_rear = lane_rear(lane, s, v, pt, active, num_lanes)
    gap_next = jnp.where(entering & jnp.isfinite(s_rear[nl]), to_end + s_rear[nl], jnp.inf)
    cs_rear = pt_tab[jnp.clip(pt_rear[nl], 0, pt_tab.shape[0] - 1)][:, COS:SIN + 1]
    along_next = v_rear[nl] * (cs[:, 0] * cs_rear[:, 0] + cs[:, 1] * cs_rear[:, 1])
    gap = jnp.minimum(gap_same, gap_next)
    lead = jnp.maximum(jnp.where(gap_same == gap, along_same, -jnp.inf),
                       jnp.where(jnp.isfinite(gap_next) & (gap_next == gap), along_next, -jnp.inf))
    return gap, lead


def gaps_around(pt_tab: jax.Array, pt: jax.Array, u: jax.Array, active: jax.Array,
                lane_q: jax.Array, s_q: jax.Array, pt_q: jax.Array,
                u_q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(distance to the nearest active vehicle ahead, to the nearest behind) of positions
    (lane point `pt_q` + `u_q`, lane `lane_q`, arc length `s_q`) on another lane than the
    asking vehicle's own, centre to centre along `lane_q`; inf when none. Masks up to
    ALL_PAIRS_MAX vehicles, else the nearest neighbours in the sorted order."""
    row = pt_tab[pt]
    lane = row[:, LANE].astype(jnp.int32)
    s = row[:, S_IN] + u
    n = pt.shape[0]
    if n <= ALL_PAIRS_MAX:
        on = active[None, :] & (lane[None, :] == lane_q[:, None])
        d = s[None, :] - s_q[:, None]
        ahead = jnp.min(jnp.where(on & (d > 0), d, jnp.inf), 1)
        return ahead, jnp.min(jnp.where(on & (d <= 0), -d, jnp.inf), 1)
    order = lane_order(pt, u, row[:, SEG], active, pt_tab.shape[0])
    key = query_key(order, pt_q, u_q, pt_tab[pt_q, SEG])
    q = jnp.searchsorted(order.key, key, method="scan_unrolled").astype(jnp.int32)
    ahead, behind = jnp.full_like(s_q, jnp.inf), jnp.full_like(s_q, jnp.inf)
    for c in (q - 1, q, q + 1):  # the query sits between q - 1 and q (up to one key step)
        j = order.perm[jnp.clip(c, 0, n - 1)]
        ok = (c >= 0) & (c < n) & active[j] & (lane[j] == lane_q)
        d = s[j] - s_q
        ahead = jnp.minimum(ahead, jnp.where(ok & (d > 0), d, jnp.inf))
        behind = jnp.minimum(behind, jnp.where(ok & (d <= 0), -d, jnp.inf))
    return ahead, behind


def junction_conflicts(junc: jax.Array, cs: jax.Array, active: jax.Array, junc_q: jax.Array,
                       num_junctions: int) -> jax.Array:
    """Per vehicle: its next junction `junc_q` holds another active vehicle heading more
    than acos(CONFLICT_COS) (34.9 degrees) away from its own heading `cs`."""
    n = junc.shape[0]
    if n <= ALL_PAIRS_MAX:
        valid = active[None, :] & ~jnp.eye(n, dtype=bool)
        cos_bb = cs[:, None, 0] * cs[None, :, 0] + cs[:, None, 1] * cs[None, :, 1]
        cross = (junc[None, :] == junc_q[:, None]) & valid & (cos_bb < CONFLICT_COS)
        return jnp.any(cross, axis=1) & (junc_q >= 0)
    return junction_conflict(junction_arcs(junc, cs, active, num_junctions), junc_q, cs)


def junction_arcs(junc: jax.Array, cs: jax.Array, active: jax.Array,
                  num_junctions: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per junction: (occupied, reference heading (J, 2), lowest and highest occupant
    heading relative to it [rad]). The reference is the occupants' mean heading: when
    all of them fit in an arc narrower than 180 degrees it lies inside that arc, so
    the extremes relative to it are the arc's ends."""
    seg = jnp.where(active & (junc >= 0), junc, num_junctions)  # out of range: dropped
    sums = jax.ops.segment_sum(jnp.concatenate([cs, jnp.ones_like(cs[:, :1])], 1), seg,
                               num_junctions)
    total = sums[:, :2]
    ref = jnp.where(jnp.sum(total**2, -1, keepdims=True) > 1e-12, total,
                    jnp.array([1.0, 0.0], cs.dtype))
    rel = _angle_to(ref[jnp.clip(junc, 0, num_junctions - 1)], cs)
    ext = jax.ops.segment_max(jnp.stack([-rel, rel], 1), seg, num_junctions)
    return sums[:, 2] > 0, ref, -ext[:, 0], ext[:, 1]


def _angle_to(ref: jax.Array, cs: jax.Array) -> jax.Array:
    """Signed angle from `ref` (not normalised) to the heading `cs`."""
    return jnp.arctan2(ref[:, 0] * cs[:, 1] - ref[:, 1] * cs[:, 0],
                       ref[:, 0] * cs[:, 0] + ref[:, 1] * cs[:, 1])


def junction_conflict(arcs, junc_q: jax.Array, cs_q: jax.Array) -> jax.Array:
    """Whether junction `junc_q` holds a vehicle heading more than acos(CONFLICT_COS)
    (34.9 degrees) away from `cs_q`: the query is further than that from one end of
    the occupants' arc (always so when the arc is wider than twice that)."""
    occupied, ref, lo, hi = arcs
    nj = ref.shape[0]
    j = jnp.clip(junc_q, 0, nj - 1)
    rel = _angle_to(ref[j], cs_q)
    half = jnp.arccos(jnp.float32(CONFLICT_COS))
    fits = (rel >= hi[j] - half) & (rel <= lo[j] + half)
    return occupied[j] & (junc_q >= 0) & ~fits
