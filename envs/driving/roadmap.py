"""Road networks as fixed-shape arrays (host-side build, device-side use).

Two sources produce the same host-side `RoadNetwork` (lanes as polylines,
successor links, junction ids, speed limits, traffic lights):

* `carla_network(xodr_text)`  OpenDRIVE parsed OFFLINE by `carla.Map`;
* `procedural_network(seed)`  a seeded grid of curved multi-lane roads with
  signalised intersections (the embedded default: no file needed).

`map_arrays(network)` resamples every lane every ~`ds` metres and flattens all
lanes into one point array, plus two look-up rasters so that the jitted step
never searches over all points:

* `grid_nearest[i, j]`  index of the lane point nearest to the cell centre,
* `grid_drivable[i, j]` whether the cell centre is on a drivable lane.

Lane points are sampled WITHOUT the lane end point: the segment of the last
point of a lane runs to the lane end, which is where every successor starts.
A vehicle therefore moves point to point with `pt_seg_len` and jumps to
`lane_start[successor]` after the last point of its lane.

Traffic lights control junction connector lanes: the stop line is the start
of the connector. Lights of one junction form a group that cycles one light
at a time (green, yellow, red for the others), so conflicting approaches
alternate. Stop signs (OpenDRIVE type 206; procedural: junctions without lights)
put their stop line at the start of the connectors they control too
(`MapArrays.stop_pt`).  Map building is cached: in memory (lru_cache) and on disk
(~/.cache/mo_rl/driving/<sha1 of the source>.npz).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

KMH = 1.0 / 3.6
CACHE_VERSION = "v5"  # v4: road-level speed records, lane width along the lane; v5: stop signs
SPEED_UNITS = {"m/s": 1.0, "km/h": KMH, "mph": 0.44704}  # OpenDRIVE <speed unit=...>


# --------------------------------------------------------------------------- host side
@dataclass
class Lane:
    """One lane as a dense polyline from its start to its end (direction of travel)."""

    xy: np.ndarray  # (n, 2) float, n >= 2
    width: float  # at the lane start
    junction: int = -1  # junction id, -1 outside junctions
    speed: float = 30 * KMH  # speed limit at the lane start [m/s]
    signs: list[tuple[float, float]] = field(default_factory=list)  # (s, limit m/s)
    key: tuple = ()
    widths: np.ndarray | None = None  # (n,) lane width at each xy point (None: constant)

    @property
    def length(self) -> float:
        return float(np.linalg.norm(np.diff(self.xy, axis=0), axis=1).sum())


@dataclass
class RoadNetwork:
    name: str
    lanes: list[Lane]
    succ: list[list[int]]  # successor lane indices
    lane_light: list[int]  # light id controlling entry into the lane, -1 if none
    light_group: list[int]  # per light: its group (junction)
    light_order: list[int]  # per light: position in the group's cycle
    # signal references that control no lane, with the reason (e.g. a shoulder lane)
    signal_issues: list[str] = field(default_factory=list)
    # lanes whose entry is a stop-sign stop line (junction connectors); empty: none
    lane_stop: list[bool] = field(default_factory=list)


def _link_successors(lanes: list[Lane], tol: float = 0.5) -> list[list[int]]:
    """Successor = a lane starting within `tol` m of this lane's end with a similar heading."""
    starts = np.array([ln.xy[0] for ln in lanes])
    start_dir = np.array([_unit(ln.xy[1] - ln.xy[0]) for ln in lanes])
    succ = []
    for ln in lanes:
        end, end_dir = ln.xy[-1], _unit(ln.xy[-1] - ln.xy[-2])
        d = np.linalg.norm(starts - end, axis=1)
        ok = (d < tol) & (start_dir @ end_dir > 0.5)
        succ.append([int(i) for i in np.nonzero(ok)[0]])
    return succ


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _propagate_speed(lanes: list[Lane], succ: list[list[int]], default: float) -> None:
    """Speed limit at a lane start = the last sign upstream (nearest by graph distance).

    CARLA keeps a vehicle's limit from the last sign it passed; this fixes one
    value per lane start by a Bellman-Ford style pass over predecessors.
    """
    n = len(lanes)
    best_d = np.full(n, np.inf)
    best_v = np.full(n, default)
    for i, ln in enumerate(lanes):  # lanes with a sign seed the propagation at their end
        if ln.signs:
            _s, v = max(ln.signs)
            best_d[i], best_v[i] = -1.0, v  # value at the lane END comes from its own sign
    end_d, end_v = best_d.copy(), best_v.copy()
    for _ in range(n):
        changed = False
        for i in range(n):
            if not np.isfinite(end_d[i]):
                continue
            for j in succ[i]:
                if lanes[j].signs:
                    continue
                d = max(end_d[i], 0.0) + lanes[j].length
                if d < end_d[j]:
                    end_d[j], end_v[j] = d, end_v[i]
                    changed = True
        if not changed:
            break
    preds: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in succ[i]:
            preds[j].append(i)
    for j, ln in enumerate(lanes):
        cands = [(end_d[i], end_v[i]) for i in preds[j] if np.isfinite(end_d[i])]
        ln.speed = min(cands)[1] if cands else default


# ---------------------------------------------------------------- CARLA (OpenDRIVE)
def road_speed_records(xodr_text: str) -> dict[int, list[tuple[float, float]]]:
    """Per road id: sorted (s, max speed m/s) of its OpenDRIVE <type><speed> records
    (Town01: <speed max="25" unit="mph"/> on every non-junction road)."""
    import xml.etree.ElementTree as ET

    out: dict[int, list[tuple[float, float]]] = {}
    for road in ET.fromstring(xodr_text).iter("road"):
        recs = []
        for typ in road.findall("type"):
            for sp in typ.findall("speed"):
                unit = sp.get("unit", "m/s")
                if unit not in SPEED_UNITS:
                    raise ValueError(f"road {road.get('id')}: unknown speed unit {unit!r}")
                recs.append((float(typ.get("s", 0.0)), float(sp.get("max")) * SPEED_UNITS[unit]))
        if recs:
            out[int(road.get("id"))] = sorted(recs)
    return out


def _record_signs(s_road: np.ndarray, arc: np.ndarray,
                  recs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Road speed records as lane 'signs' (arc length, m/s): the record in force at each
    point's road s, one entry wherever it changes along the lane (either direction)."""
    starts = np.array([r[0] for r in recs])
    idx = np.searchsorted(starts, s_road + 1e-6, side="right") - 1
    val = np.array([recs[max(i, 0)][1] for i in idx])
    change = np.concatenate([[True], val[1:] != val[:-1]])
    return [(float(arc[i]), float(val[i])) for i in np.nonzero(change)[0]]


def carla_network(xodr_text: str, name: str = "map", step: float = 1.0) -> RoadNetwork:
    """Read lanes, links, junctions, lights, road speed records and speed signs with
    carla.Map (offline). A signal reference to a driving lane that matches no lane
    raises; one to a non-driving lane is listed in `signal_issues` (and warned)."""
    import carla

    cmap = carla.Map(name, xodr_text)
    records = road_speed_records(xodr_text)
    lanes: list[Lane] = []
    keys: dict[tuple, list[int]] = {}
    for w0, w1 in cmap.get_topology():
        ws = [w0, *w0.next_until_lane_end(step)]
        xy = np.array([[w.transform.location.x, w.transform.location.y] for w in ws])
        widths = np.array([w.lane_width for w in ws])
        s_road = np.array([w.s for w in ws])
        end = np.array([w1.transform.location.x, w1.transform.location.y])
        if np.linalg.norm(xy[-1] - end) > 1e-3:
            xy = np.vstack([xy, end])
            widths, s_road = np.append(widths, widths[-1]), np.append(s_road, s_road[-1])
        keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-3])
        xy, widths, s_road = xy[keep], widths[keep], s_road[keep]
        if len(xy) < 2:
            continue
        key = (w0.road_id, w0.section_id, w0.lane_id)
        lane = Lane(xy=xy, width=float(widths[0]), widths=widths,
                    junction=int(w0.junction_id) if w0.is_junction else -1, key=key)
        if w0.road_id in records:
            arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
            lane.signs += _record_signs(s_road, arc, records[w0.road_id])
        lanes.append(lane)
        keys.setdefault((w0.road_id, w0.lane_id), []).append(len(lanes) - 1)
    succ = _link_successors(lanes)
    issues: list[str] = []

    def lanes_at(road: int, lane_id: int, s: float) -> list[int]:
        wp = cmap.get_waypoint_xodr(road, lane_id, s)
        if wp is None:
            return []
        p = np.array([wp.transform.location.x, wp.transform.location.y])
        out = []
        for i in keys.get((road, lane_id), []):
            d = np.linalg.norm(lanes[i].xy - p, axis=1).min()
            if d < 1.5:
                out.append(i)
        return out[:1]

    def signal_lanes(lm, report: bool) -> list[tuple[int, float]]:
        """Lanes (and point index) a signal applies to. A reference to a non-driving lane
        is listed in `issues` when `report` (traffic lights; a speed sign's validity
        normally spans sidewalks and shoulders too)."""
        res = []
        for lo, hi in lm.get_lane_validities():
            for lid in range(lo, hi + 1):
                if lid == 0:
                    continue
                wp = cmap.get_waypoint_xodr(lm.road_id, lid, lm.s)
                where = f"signal {lm.id} ({lm.name}) on road {lm.road_id} lane {lid} s={lm.s:.1f}"
                if wp is None or wp.lane_type != carla.LaneType.Driving:
                    kind = "no lane" if wp is None else f"a {wp.lane_type} lane"
                    if report:
                        issues.append(f"{where}: {kind}, controls nothing")
                    continue
                found = lanes_at(lm.road_id, lid, lm.s)
                if not found:
                    raise ValueError(f"{where}: no lane of the network matches this driving lane")
                for i in found:
                    p = np.array([wp.transform.location.x, wp.transform.location.y])
                    s_on = float(np.linalg.norm(lanes[i].xy - p, axis=1).argmin())
                    res.append((i, s_on))
        return res

    # speed signs (CARLA reads Speed_30/60/90 as km/h although the file says mph); a road's
    # <speed> record acts as a sign at the road's start, so a posted sign overrides it
    # downstream on that road, and lanes without either inherit the last value upstream
    for lm in cmap.get_all_landmarks_of_type("274"):
        v = float(lm.value) * KMH
        for i, s_idx in signal_lanes(lm, report=False):
            s = float(np.linalg.norm(np.diff(lanes[i].xy[: int(s_idx) + 1], axis=0), axis=1).sum())
            lanes[i].signs.append((s, v))
    _propagate_speed(lanes, succ, default=30 * KMH)

    # traffic lights -> the junction connectors they control
    lane_light = [-1] * len(lanes)
    sig_ids: dict[int, int] = {}
    for lm in cmap.get_all_landmarks_of_type("1000001"):
        for i, _ in signal_lanes(lm, report=True):
            targets = [i] if lanes[i].junction >= 0 else [
                j for j in succ[i] if lanes[j].junction >= 0]
            lid = sig_ids.setdefault(int(lm.id), len(sig_ids))
            for j in targets:
                lane_light[j] = lid
    groups: dict[int, list[int]] = {}
    for j, lid in enumerate(lane_light):
        if lid >= 0:
            g = groups.setdefault(lanes[j].junction, [])
            if lid not in g:
                g.append(lid)
    light_group = [0] * len(sig_ids)
    light_order = [0] * len(sig_ids)
    for gi, (_, members) in enumerate(sorted(groups.items())):
        for k, lid in enumerate(sorted(members)):
            light_group[lid], light_order[lid] = gi, k
    # stop signs (OpenDRIVE type 206) -> the junction connectors they control, as for lights
    # (Town01 has none: its 36 signals are all traffic lights, type 1000001)
    lane_stop = [False] * len(lanes)
    for lm in cmap.get_all_landmarks_of_type("206"):
        for i, _ in signal_lanes(lm, report=True):
            for j in [i] if lanes[i].junction >= 0 else [
                    j for j in succ[i] if lanes[j].junction >= 0]:
                lane_stop[j] = lane_light[j] < 0  # a light takes precedence
    if issues:
        warnings.warn(f"{name}: {len(issues)} signal reference(s) control no driving lane: "
                      + "; ".join(issues), stacklevel=2)
    return RoadNetwork(name, lanes, succ, lane_light, light_group, light_order, issues,
                       lane_stop)


# ---------------------------------------------------------------- procedural
def procedural_network(
    seed: int = 0,
    nx: int = 3,
    ny: int = 3,
    spacing: float = 90.0,
    jitter: float = 10.0,
    bulge: float = 8.0,
    lanes_per_dir: tuple[int, ...] = (1, 2),
    lane_width: float = 3.5,
    junction_radius: float = 14.0,
    speeds_kmh: tuple[float, ...] = (30.0, 50.0),
) -> RoadNetwork:
    """A seeded grid of curved two-way roads (1-2 lanes each way) and signalised junctions.

    Nodes sit on a jittered grid; each road between neighbours is a quadratic
    Bezier with a random sideways bulge (curves). Road ends are cut back by
    `junction_radius`; connectors are cubic Hermite curves between incoming
    and outgoing lane ends (no U-turns; with several lanes the rightmost lane
    turns right or goes straight, the leftmost turns left or goes straight).
    Every node with >= 3 roads gets one light per approach; the approaches of the
    other nodes (grid corners) get stop signs.
    """
    rng = np.random.default_rng(seed)
    nodes = np.array([[i * spacing, j * spacing] for j in range(ny) for i in range(nx)], float)
    nodes += rng.uniform(-jitter, jitter, nodes.shape)
    edges = [(j * nx + i, j * nx + i + 1) for j in range(ny) for i in range(nx - 1)]
    edges += [(j * nx + i, (j + 1) * nx + i) for j in range(ny - 1) for i in range(nx)]
    lanes: list[Lane] = []
    # per node: list of (road lanes arriving [(lane idx, lateral rank)], leaving [...], direction)
    arrive: dict[int, list[tuple[int, int, int]]] = {n: [] for n in range(len(nodes))}
    leave: dict[int, list[tuple[int, int, int]]] = {n: [] for n in range(len(nodes))}
    for ei, (a, b) in enumerate(edges):
        pa, pb = nodes[a], nodes[b]
        mid = 0.5 * (pa + pb)
        nrm = _unit(np.array([-(pb - pa)[1], (pb - pa)[0]]))
        ctrl = mid + nrm * rng.uniform(-bulge, bulge)
        t = np.linspace(0, 1, 200)[:, None]
        curve = (1 - t) ** 2 * pa + 2 * (1 - t) * t * ctrl + t**2 * pb
        cum = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
        keep = (cum > junction_radius) & (cum < cum[-1] - junction_radius)
        centre = curve[keep]
        nlanes = int(rng.choice(lanes_per_dir))
        speed = float(rng.choice(speeds_kmh)) * KMH
        for direction, (src, dst, line) in enumerate(((a, b, centre), (b, a, centre[::-1]))):
            tang = np.gradient(line, axis=0)
            tang /= np.linalg.norm(tang, axis=1, keepdims=True)
            right = np.stack([tang[:, 1], -tang[:, 0]], 1)  # +90 deg clockwise: right-hand traffic
            for k in range(nlanes):
                xy = line + right * lane_width * (k + 0.5)
                lanes.append(Lane(xy=xy, width=lane_width, speed=speed, key=(ei, direction, k)))
                li = len(lanes) - 1
                arrive[dst].append((li, k, ei))  # k = 0: the lane next to the centre line
                leave[src].append((li, k, ei))
    n_road_lanes = len(lanes)
    lane_light = [-1] * n_road_lanes
    light_group: list[int] = []
    light_order: list[int] = []
    group = 0
    for node in range(len(nodes)):
        roads_in = sorted({e for _, _, e in arrive[node]})
        signalised = len(roads_in) >= 3
        approach_light = {}
        if signalised:
            for k, e in enumerate(roads_in):
                approach_light[e] = len(light_group)
                light_group.append(group)
                light_order.append(k)
            group += 1
        for li, _rk, e_in in arrive[node]:
            lin = lanes[li]
            n_in = sum(1 for _, _, e in arrive[node] if e == e_in)
            rank_in = lin.key[2]  # k: 0 = leftmost in our construction
            p0, d0 = lin.xy[-1], _unit(lin.xy[-1] - lin.xy[-2])
            chosen, fallback = [], []
            for lo, _rk2, e_out in leave[node]:
                if e_out == e_in:
                    continue
                lout = lanes[lo]
                p1, d1 = lout.xy[0], _unit(lout.xy[1] - lout.xy[0])
                cross = d0[0] * d1[1] - d0[1] * d1[0]
                turn = "straight" if d0 @ d1 > 0.7 else ("left" if cross > 0 else "right")
                n_out = sum(1 for _, _, e in leave[node] if e == e_out)
                if lout.key[2] == min(rank_in, n_out - 1):
                    fallback.append(lo)
                if turn == "straight" and lout.key[2] != min(rank_in, n_out - 1):
                    continue
                if turn == "right" and (rank_in != n_in - 1 or lout.key[2] != n_out - 1):
                    continue
                if turn == "left" and (rank_in != 0 or lout.key[2] != 0):
                    continue
                chosen.append(lo)
            for lo in chosen or fallback:  # a lane never dead-ends
                lout = lanes[lo]
                p1, d1 = lout.xy[0], _unit(lout.xy[1] - lout.xy[0])
                xy = _hermite(p0, d0, p1, d1)
                lanes.append(Lane(xy=xy, width=lane_width, junction=node,
                                  speed=min(lin.speed, lout.speed), key=("conn", li, lo)))
                lane_light.append(approach_light.get(e_in, -1))
    succ = _link_successors(lanes)
    # stop signs on every junction approach without lights (all-way stops)
    lane_stop = [ln.junction >= 0 and lane_light[i] < 0 for i, ln in enumerate(lanes)]
    return RoadNetwork(f"procedural-{seed}", lanes, succ, lane_light, light_group, light_order,
                       lane_stop=lane_stop)


def _hermite(p0, d0, p1, d1, n: int = 40) -> np.ndarray:
    scale = float(np.linalg.norm(p1 - p0))
    t = np.linspace(0, 1, n)[:, None]
    h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
    h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * p0 + h10 * d0 * scale + h01 * p1 + h11 * d1 * scale


# --------------------------------------------------------------------------- arrays
class MapArrays(NamedTuple):
    """Fixed-shape map for the jitted step (P points, L lanes, G light groups)."""

    pt_xy: jnp.ndarray  # (P, 2)
    pt_yaw: jnp.ndarray  # (P,) heading of the segment leaving the point
    pt_width: jnp.ndarray  # (P,)
    pt_lane: jnp.ndarray  # (P,) int
    pt_seg_len: jnp.ndarray  # (P,) length of the segment leaving the point
    pt_is_last: jnp.ndarray  # (P,) bool: last point of its lane
    pt_junction: jnp.ndarray  # (P,) int junction index, -1 outside
    pt_speed: jnp.ndarray  # (P,) speed limit m/s
    pt_to_end: jnp.ndarray  # (P,) distance to the lane end
    lane_start: jnp.ndarray  # (L,) int first point
    lane_succ: jnp.ndarray  # (L, S) int, -1 padded
    lane_nsucc: jnp.ndarray  # (L,) int
    lane_light: jnp.ndarray  # (L,) int light controlling entry, -1 none
    light_group: jnp.ndarray  # (NL,) int
    light_order: jnp.ndarray  # (NL,) int
    light_nphase: jnp.ndarray  # (NL,) int size of the light's group
    spawn_pts: jnp.ndarray  # (NS,) int points where vehicles may spawn
    grid_origin: jnp.ndarray  # (2,)
    grid_res: jnp.ndarray  # () metres per cell
    grid_nearest: jnp.ndarray  # (H, W) int
    grid_drivable: jnp.ndarray  # (H, W) bool
    # packed views of the above for the jitted step: on the CPU a gather costs about the
    # same for one value as for a short row, so each look-up fetches a whole row
    pt_tab: jnp.ndarray  # (P, len(PT_COLUMNS)) float32, columns PT_COLUMNS
    lane_next: jnp.ndarray  # (L, S) int first point of successor k (own start: dead end)
    grid_code: jnp.ndarray  # (H, W) int32 nearest point * 2 + drivable
    # stop signs (issue 19): lane point of each stop line (-1 = padding, T >= 1)
    stop_pt: jnp.ndarray  # (T,) int32
    lane_stop: jnp.ndarray  # (L,) bool: the lane starts at a stop-sign stop line (from stop_pt)
    # lane changes (issue 19, sim.traffic_step): the parallel driving lane beside each
    # non-junction lane (-1 none) and whether it runs the same way (lane_adjacency)
    lane_left: jnp.ndarray  # (L,) int32
    lane_right: jnp.ndarray  # (L,) int32
    lane_left_same: jnp.ndarray  # (L,) bool
    lane_right_same: jnp.ndarray  # (L,) bool

    @property
    def num_points(self) -> int:
        return int(self.pt_xy.shape[0])


def _build_arrays(net: RoadNetwork, ds: float = 1.0, res: float = 0.5,
                  spawn_gap: float = 12.0) -> dict[str, np.ndarray]:
    pts, yaw, width, lane_id, seg, last, junc, speed, to_end, start = ([] for _ in range(10))
    jmap: dict[int, int] = {}
    for li, ln in enumerate(net.lanes):
        cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ln.xy, axis=0), axis=1))])
        length = cum[-1]
        n = max(1, round(length / ds))
        s = np.arange(n) * (length / n)
        x = np.interp(s, cum, ln.xy[:, 0])
        y = np.interp(s, cum, ln.xy[:, 1])
        nxt_s = np.minimum(s + length / n, length)
        nx_, ny_ = np.interp(nxt_s, cum, ln.xy[:, 0]), np.interp(nxt_s, cum, ln.xy[:, 1])
        start.append(len(np.concatenate(pts)) if pts else 0)
        pts.append(np.stack([x, y], 1))
        yaw.append(np.arctan2(ny_ - y, nx_ - x))
        width.append(np.full(n, ln.width) if ln.widths is None
                     else np.interp(s, cum, ln.widths))
        lane_id.append(np.full(n, li))
        seg.append(np.full(n, length / n))
        last.append(np.arange(n) == n - 1)
        j = -1 if ln.junction < 0 else jmap.setdefault(ln.junction, len(jmap))
        junc.append(np.full(n, j))
        sp = np.full(n, ln.speed)
        for s_sign, v in sorted(ln.signs):
            sp[s >= s_sign] = v
        speed.append(sp)
        to_end.append(length - s)
    pt_xy = np.concatenate(pts).astype(np.float32)
    nsucc = np.array([len(s) for s in net.succ])
    smax = max(1, int(nsucc.max()))
    succ = np.full((len(net.lanes), smax), -1)
    for i, s in enumerate(net.succ):
        succ[i, : len(s)] = s
    nl = max(1, len(net.light_group))
    lg = np.array(net.light_group or [0])
    lo = np.array(net.light_order or [0])
    gsize = np.bincount(lg, minlength=lg.max() + 1)
    pt_junc = np.concatenate(junc)
    pt_lane = np.concatenate(lane_id)
    pt_to_end = np.concatenate(to_end)
    # spawn slots: non-junction points at least `spawn_gap` apart along each lane
    pt_seg = np.concatenate(seg)
    pt_s = np.concatenate([np.arange(len(p)) * sg[0] for p, sg in zip(pts, seg, strict=True)])
    bucket_start = np.floor(pt_s / spawn_gap) != np.floor((pt_s - pt_seg) / spawn_gap)
    spawn = np.nonzero((pt_junc < 0) & bucket_start & (pt_to_end > 6.0))[0]
    # look-up rasters
    lo_xy = pt_xy.min(0) - 10.0
    hi_xy = pt_xy.max(0) + 10.0
    shape = np.ceil((hi_xy - lo_xy) / res).astype(int)  # (W, H) in x, y
    from scipy.spatial import cKDTree

    cx = lo_xy[0] + (np.arange(shape[0]) + 0.5) * res
    cy = lo_xy[1] + (np.arange(shape[1]) + 0.5) * res
    gx, gy = np.meshgrid(cx, cy, indexing="ij")  # (W, H)
    q = np.stack([gx.ravel(), gy.ravel()], 1)
    _, near = cKDTree(pt_xy).query(q)
    # drivable test against a dense (0.25 m) copy of the centrelines
    dense, dwidth = [], []
    for ln in net.lanes:
        cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ln.xy, axis=0), axis=1))])
        s = np.linspace(0, cum[-1], max(2, int(cum[-1] / 0.25) + 1))
        dense.append(np.stack([np.interp(s, cum, ln.xy[:, 0]), np.interp(s, cum, ln.xy[:, 1])], 1))
        dwidth.append(np.full(len(s), ln.width) if ln.widths is None
                      else np.interp(s, cum, ln.widths))
    dense_xy = np.concatenate(dense)
    stops = [start[i] for i, on in enumerate(net.lane_stop) if on]
    dist, di = cKDTree(dense_xy).query(q)
    drivable = dist <= 0.5 * np.concatenate(dwidth)[di] + 0.1
    return dict(
        pt_xy=pt_xy, pt_yaw=np.concatenate(yaw).astype(np.float32),
        pt_width=np.concatenate(width).astype(np.float32), pt_lane=pt_lane.astype(np.int32),
        pt_seg_len=np.concatenate(seg).astype(np.float32), pt_is_last=np.concatenate(last),
        pt_junction=pt_junc.astype(np.int32), pt_speed=np.concatenate(speed).astype(np.float32),
        pt_to_end=pt_to_end.astype(np.float32),
        lane_start=np.array(start, np.int32), lane_succ=succ.astype(np.int32),
        lane_nsucc=nsucc.astype(np.int32), lane_light=np.array(net.lane_light, np.int32),
        light_group=lg.astype(np.int32), light_order=lo.astype(np.int32),
        light_nphase=gsize[lg].astype(np.int32) if nl else np.ones(1, np.int32),
        spawn_pts=spawn.astype(np.int32), grid_origin=lo_xy.astype(np.float32),
        grid_res=np.float32(res), grid_nearest=near.reshape(shape).astype(np.int32),
        grid_drivable=drivable.reshape(shape),
        stop_pt=np.array(stops or [-1], np.int32),
    )


# columns of MapArrays.pt_tab; integer columns hold exact integers (< 2^24) as float32
PT_COLUMNS = ("x", "y", "cos", "sin", "seg_len", "to_end", "s_in", "speed", "lane",
              "junction", "light", "width", "nsucc")
X, Y, COS, SIN, SEG, TO_END, S_IN, SPEED, LANE, JUNC, LIGHT, WIDTH, NSUCC = range(len(PT_COLUMNS))


def _packed(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The row tables of MapArrays (derived from the cached arrays at load time)."""
    lane, start = d["pt_lane"], d["lane_start"]
    nsucc, succ = d["lane_nsucc"], d["lane_succ"]
    n_lanes, s_max = succ.shape
    lane_len = d["pt_to_end"][start]
    cols = dict(x=d["pt_xy"][:, 0], y=d["pt_xy"][:, 1], cos=np.cos(d["pt_yaw"]),
                sin=np.sin(d["pt_yaw"]), seg_len=d["pt_seg_len"], to_end=d["pt_to_end"],
                s_in=lane_len[lane] - d["pt_to_end"], speed=d["pt_speed"], lane=lane,
                junction=d["pt_junction"], light=d["lane_light"][lane], width=d["pt_width"],
                nsucc=nsucc[lane])
    pt_tab = np.stack([np.asarray(cols[c], np.float32) for c in PT_COLUMNS], 1)
    k = np.arange(s_max)[None, :]
    pick = succ[np.arange(n_lanes)[:, None], k % np.maximum(nsucc, 1)[:, None]]
    lane_next = np.where(nsucc[:, None] > 0, start[np.maximum(pick, 0)], start[:, None])
    grid_code = d["grid_nearest"] * 2 + d["grid_drivable"]
    stop_pt = np.asarray(d.get("stop_pt", np.full(1, -1)), np.int32)
    lane_stop = np.zeros(n_lanes, bool)
    lane_stop[lane[stop_pt[stop_pt >= 0]]] = True
    return dict(pt_tab=pt_tab, lane_next=lane_next.astype(np.int32),
                grid_code=grid_code.astype(np.int32), stop_pt=stop_pt, lane_stop=lane_stop,
                **lane_adjacency(d))


def lane_adjacency(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Left / right neighbour lane of every non-junction lane: the lane whose point lies
    one lane width to that side (within 35% of a width) at 25%, 50% and 75% of the lane,
    the same lane each time, outside junctions, parallel or antiparallel (|cos| > 0.95).
    Lanes are built per road section, so a neighbour spans the same stretch."""
    from scipy.spatial import cKDTree

    xy, yaw, lane, start = d["pt_xy"], d["pt_yaw"], d["pt_lane"], d["lane_start"]
    width, junc = d["pt_width"], d["pt_junction"]
    n_lanes = len(start)
    n_pts = np.diff(np.append(start, len(lane)))
    tree = cKDTree(xy)
    out = {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        found = np.full((3, n_lanes), -1)
        same = np.zeros((3, n_lanes), bool)
        for k, frac in enumerate((0.25, 0.5, 0.75)):
            p = start + np.minimum((n_pts * frac).astype(int), n_pts - 1)
            nrm = np.stack([-np.sin(yaw[p]), np.cos(yaw[p])], 1)
            dist, q = tree.query(xy[p] + sign * width[p, None] * nrm)
            cos = np.cos(yaw[q] - yaw[p])
            ok = (dist < 0.35 * width[p]) & (junc[p] < 0) & (junc[q] < 0) & (np.abs(cos) > 0.95)
            ok &= lane[q] != np.arange(n_lanes)
            found[k] = np.where(ok, lane[q], -1)
            same[k] = cos > 0
        agree = (found[0] == found[1]) & (found[1] == found[2]) & (same[0] == same[2])
        out[f"lane_{side}"] = np.where(agree, found[1], -1).astype(np.int32)
        out[f"lane_{side}_same"] = agree & (found[1] >= 0) & same[1]
    return out


def _to_jnp(d: dict[str, np.ndarray]) -> MapArrays:
    d = {**d, **_packed(d)}
    return MapArrays(**{k: jnp.asarray(d[k]) for k in MapArrays._fields})


def _cache_dir() -> Path:
    return Path(os.environ.get("MO_RL_CACHE", Path.home() / ".cache" / "mo_rl")) / "driving"


def _cached(tag: str, build) -> tuple[dict[str, np.ndarray], dict]:
    path = _cache_dir() / f"{tag}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    except OSError:
        pass
    return arrays


@lru_cache(maxsize=8)
def _carla_network_cached(xodr_text: str, name: str) -> RoadNetwork:
    return carla_network(xodr_text, name)


@lru_cache(maxsize=8)
def load_carla_map(path: str, name: str | None = None) -> tuple[MapArrays, RoadNetwork]:
    """Map arrays (+ host network, for routing) of an OpenDRIVE file; cached."""
    text = Path(path).read_text()
    name = name or Path(path).stem
    tag = hashlib.sha1((CACHE_VERSION + text).encode()).hexdigest()[:16]
    net = _carla_network_cached(text, name)
    return _to_jnp(_cached(tag, lambda: _build_arrays(net))), net


@lru_cache(maxsize=8)
def load_procedural_map(seed: int = 0, **kw) -> tuple[MapArrays, RoadNetwork]:
    net = procedural_network(seed, **kw)
    tag = hashlib.sha1(f"{CACHE_VERSION}proc{seed}{sorted(kw.items())}".encode()).hexdigest()[:16]
    return _to_jnp(_cached(tag, lambda: _build_arrays(net))), net
