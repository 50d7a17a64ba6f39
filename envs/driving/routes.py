"""Routes: CARLA leaderboard route files densified on the lane graph, random routes.

A route is a sequence of map point indices (lane points ~1 m apart). Sparse
leaderboard waypoints are matched to the nearest lane point with a compatible
heading and joined by a lane-level Dijkstra (cost = lane length; no lane
changes, which Town01 does not need). All routes of a bank are padded to one
length R with their last point, so an episode picks one at reset by index.

Per route point the bank also stores the stop line ahead: `stop_light[i]` is
the light id if point i is the first point of a light-controlled junction
connector (i.e. the stop line), and `next_stop[i]` the index of the first
stop line at or after i (R - 1 with light -1 when none is left).
Per route it keeps the C map spawn slots nearest to the route (so traffic
meets the ego along its way), excluding slots within 20 m of its start.
Stop signs: `sign[i]` marks a stop-sign stop line (MapArrays.stop_pt) and
`sign_next[i]` the first one at or after i. Road users (envs.driving.road_users)
are placed at `curb` slots (route points >= 30 m from the start, 10 m before
a junction, 25 m after one, on straight stretches of the rightmost lane, >= 8 m
apart: parked cars and mid-block crossings) and `xwalk` slots (crosswalks 8 m
before a junction entry and 4 m after a junction exit).
"""

from __future__ import annotations

import heapq
import itertools
import xml.etree.ElementTree as ET
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from envs.driving.roadmap import MapArrays, RoadNetwork


class RouteBank(NamedTuple):
    xy: jnp.ndarray  # (NR, R, 2)
    yaw: jnp.ndarray  # (NR, R)
    cum: jnp.ndarray  # (NR, R) arc length from the route start
    pt: jnp.ndarray  # (NR, R) int map point index
    length: jnp.ndarray  # (NR,) total length [m]
    num: jnp.ndarray  # (NR,) int valid points
    stop_light: jnp.ndarray  # (NR, R) int, -1 if not a stop line
    next_stop: jnp.ndarray  # (NR, R) int index of the next stop line
    spawn: jnp.ndarray  # (NR, C) int map points where traffic spawns for this route
    spawn_ok: jnp.ndarray  # (NR, C) bool: the spawn point is > 20 m from the route start
    sign: jnp.ndarray  # (NR, R) bool: a stop-sign stop line
    sign_next: jnp.ndarray  # (NR, R) int index of the next stop-sign stop line (R - 1: none)
    curb: jnp.ndarray  # (NR, E) int route indices for parked cars / mid-block crossings
    curb_n: jnp.ndarray  # (NR,) int valid entries of curb
    xwalk: jnp.ndarray  # (NR, X) int route indices of crosswalks
    xwalk_n: jnp.ndarray  # (NR,) int valid entries of xwalk

    @property
    def num_routes(self) -> int:
        return int(self.xy.shape[0])


def parse_route_xml(path: str) -> list[np.ndarray]:
    """Leaderboard route file -> list of (n, 3) arrays of x, y, yaw [rad]."""
    out = []
    for route in ET.parse(path).getroot().iter("route"):
        wps = [(float(w.get("x")), float(w.get("y")), np.deg2rad(float(w.get("yaw", 0.0))))
               for w in route.iter("waypoint")]
        out.append(np.array(wps))
    return out


def _np(m: MapArrays) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(m, k)) for k in m._fields}


def nearest_point(m: MapArrays, x: float, y: float, yaw: float | None = None) -> int:
    """Nearest lane point; with `yaw`, only points heading within 90 degrees of it."""
    a = _np(m)
    d = np.hypot(a["pt_xy"][:, 0] - x, a["pt_xy"][:, 1] - y)
    if yaw is not None:
        d = np.where(np.cos(a["pt_yaw"] - yaw) > 0.0, d, np.inf)
    return int(np.argmin(d))


def _lane_path(net: RoadNetwork, a_lane: int, b_lane: int) -> list[int] | None:
    """Cheapest lane sequence a_lane -> ... -> b_lane (at least one hop), Dijkstra on length."""
    lengths = [ln.length for ln in net.lanes]
    dist: dict[int, float] = {}
    prev: dict[int, int] = {}
    heap = []
    for v in net.succ[a_lane]:
        if lengths[v] < dist.get(v, np.inf):
            dist[v], prev[v] = lengths[v], a_lane
            heapq.heappush(heap, (lengths[v], v))
    while heap:
        d, u = heapq.heappop(heap)
        if u == b_lane:
            path = [b_lane]
            while len(path) == 1 or path[-1] != a_lane:
                path.append(prev[path[-1]])
            return path[::-1]
        if d > dist.get(u, np.inf):
            continue
        for v in net.succ[u]:
            nd = d + lengths[v]
            if nd < dist.get(v, np.inf):
                dist[v], prev[v] = nd, u
                heapq.heappush(heap, (nd, v))
    return None


def plan_route(m: MapArrays, net: RoadNetwork, waypoints: np.ndarray) -> np.ndarray:
    """Dense map point indices through sparse (x, y, yaw) waypoints."""
    a = _np(m)
    lane_start, pt_lane = a["lane_start"], a["pt_lane"]
    lane_end = np.append(lane_start[1:], len(pt_lane)) - 1
    pts = [nearest_point(m, x, y, yaw) for x, y, yaw in waypoints]
    route: list[int] = [pts[0]]
    for p, q in itertools.pairwise(pts):
        la, lb = int(pt_lane[p]), int(pt_lane[q])
        if la == lb and q >= p:
            seg = list(range(p, q + 1))
        else:
            lanes = _lane_path(net, la, lb)
            if lanes is None:
                raise ValueError(f"no lane path from point {p} (lane {la}) to {q} (lane {lb})")
            seg = list(range(p, lane_end[la] + 1))
            for ln in lanes[1:-1]:
                seg += list(range(lane_start[ln], lane_end[ln] + 1))
            seg += list(range(lane_start[lb], q + 1))
        route += seg[1:]
    return np.array(route, np.int32)


def random_routes(m: MapArrays, net: RoadNetwork, num: int, length: float,
                  seed: int = 0) -> list[np.ndarray]:
    """`num` random walks on the lane graph, each ~`length` m, starting at spawn points."""
    a = _np(m)
    rng = np.random.default_rng(seed)
    lane_start, pt_lane, seg = a["lane_start"], a["pt_lane"], a["pt_seg_len"]
    lane_end = np.append(lane_start[1:], len(pt_lane)) - 1
    out = []
    for _ in range(num):
        p = int(rng.choice(a["spawn_pts"]))
        route, dist = [p], 0.0
        while dist < length:
            lane = int(pt_lane[p])
            if p < lane_end[lane]:
                p += 1
            else:
                if not net.succ[lane]:
                    break
                p = int(lane_start[rng.choice(net.succ[lane])])
            dist += float(seg[route[-1]])
            route.append(p)
        out.append(np.array(route, np.int32))
    return out


def _curb_slots(a: dict[str, np.ndarray], p: np.ndarray, cum: np.ndarray, n: int,
                gap: float = 8.0) -> np.ndarray:
    """Route indices where a car can park at the right kerb (see the module docstring)."""
    junc = a["pt_junction"][p[:n]] >= 0
    # no junction point from 25 points (~m) behind to 10 ahead: a car leaving a turn is
    # still settling on its lane (the expert: up to 0.8 m off the centre line)
    near_junc = np.convolve(junc.astype(float), np.ones(36), mode="full")[10:10 + n] > 0
    ok = ~near_junc & (cum[:n] >= 30.0) & (np.arange(n) < n - 15)
    # straight stretches only: the heading turns < 0.15 rad within 15 points either way
    # (Town01's curved road corners are no junctions; a straight box there juts into the lane)
    yaw = a["pt_yaw"][p[:n]]
    uw = np.unwrap(yaw)
    pad = np.concatenate([np.full(15, uw[0]), uw, np.full(15, uw[-1])])
    win = np.lib.stride_tricks.sliding_window_view(pad, 31)
    ok &= np.abs(win - uw[:, None]).max(1) < 0.15
    # rightmost lane: no drivable cell of a same-direction lane one lane width to the right
    right = np.stack([np.sin(yaw), -np.cos(yaw)], 1)
    probe = a["pt_xy"][p[:n]] + right * a["pt_width"][p[:n], None]
    ij = np.floor((probe - a["grid_origin"]) / a["grid_res"]).astype(int)
    w, h = a["grid_nearest"].shape
    ij[:, 0], ij[:, 1] = np.clip(ij[:, 0], 0, w - 1), np.clip(ij[:, 1], 0, h - 1)
    near = a["grid_nearest"][ij[:, 0], ij[:, 1]]
    same_dir = np.cos(a["pt_yaw"][near] - yaw) > 0.5
    ok &= ~(a["grid_drivable"][ij[:, 0], ij[:, 1]] & same_dir)
    out, last = [], -np.inf
    for i in np.nonzero(ok)[0]:
        if cum[i] - last >= gap:
            out.append(i)
            last = cum[i]
    return np.array(out, np.int32)


def _xwalk_slots(a: dict[str, np.ndarray], p: np.ndarray, cum: np.ndarray, n: int) -> np.ndarray:
    """Route indices of crosswalks: 8 m before each junction entry, 4 m after each exit."""
    junc = a["pt_junction"][p[:n]] >= 0
    enter = np.nonzero(junc[1:] & ~junc[:-1])[0] + 1
    leave = np.nonzero(~junc[1:] & junc[:-1])[0] + 1
    idx = np.concatenate([np.searchsorted(cum[:n], cum[enter] - 8.0),
                          np.searchsorted(cum[:n], cum[leave] + 4.0)]).astype(int)
    idx = np.clip(idx, 0, n - 1)
    ok = (~junc[idx]) & (cum[idx] >= 30.0) & (idx < n - 15)
    return np.unique(idx[ok]).astype(np.int32)


def _pad(rows: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(NR, width) zero-padded rows (evenly thinned when longer) and their counts."""
    out = np.zeros((len(rows), width), np.int32)
    cnt = np.zeros(len(rows), np.int32)
    for i, row in enumerate(rows):
        if len(row) > width:
            row = row[np.linspace(0, len(row) - 1, width).round().astype(int)]
        out[i, : len(row)], cnt[i] = row, len(row)
    return out, cnt


def route_bank(m: MapArrays, routes: list[np.ndarray], max_len: int | None = None,
               num_spawn: int = 64, num_curb: int = 32, num_xwalk: int = 16) -> RouteBank:
    """Pad the routes (map point indices) to one length and precompute their geometry."""
    a = _np(m)
    lane_start, pt_lane, lane_light = a["lane_start"], a["pt_lane"], a["lane_light"]
    r = max_len or max(len(x) for x in routes)
    nr = len(routes)
    xy = np.zeros((nr, r, 2), np.float32)
    yaw = np.zeros((nr, r), np.float32)
    cum = np.zeros((nr, r), np.float32)
    pt = np.zeros((nr, r), np.int32)
    stop = np.full((nr, r), -1, np.int32)
    nxt = np.full((nr, r), r - 1, np.int32)
    length = np.zeros(nr, np.float32)
    num = np.zeros(nr, np.int32)
    sp = a["spawn_pts"]
    c = min(num_spawn, len(sp))
    spawn = np.zeros((nr, c), np.int32)
    spawn_ok = np.zeros((nr, c), bool)
    stop_lane = np.zeros(len(lane_start), bool)
    sp_pt = a["stop_pt"][a["stop_pt"] >= 0]
    stop_lane[pt_lane[sp_pt]] = True
    sign = np.zeros((nr, r), bool)
    sign_next = np.full((nr, r), r - 1, np.int32)
    curbs, xwalks = [], []
    for i, route in enumerate(routes):
        route = np.asarray(route)[:r]
        n = len(route)
        p = np.concatenate([route, np.full(r - n, route[-1])])
        pt[i], num[i] = p, n
        xy[i] = a["pt_xy"][p]
        d = np.linalg.norm(np.diff(xy[i], axis=0), axis=1)
        cum[i] = np.concatenate([[0.0], np.cumsum(d)])
        length[i] = cum[i, n - 1]
        yaw[i, :-1] = np.arctan2(np.diff(xy[i][:, 1]), np.diff(xy[i][:, 0]))
        yaw[i, :] = np.where(d.tolist() + [0.0] > np.float32(1e-6), yaw[i], a["pt_yaw"][p])
        lane = pt_lane[p]
        is_stop = (p == lane_start[lane]) & (lane_light[lane] >= 0)
        is_stop[0] = False  # starting inside a connector is not crossing its stop line
        is_stop[n:] = False
        stop[i] = np.where(is_stop, lane_light[lane], -1)
        sxy = a["pt_xy"][sp]
        d_route = np.linalg.norm(sxy[:, None] - xy[i, :n:10][None], axis=-1).min(1)
        d_start = np.linalg.norm(sxy - xy[i, 0], axis=-1)
        order = np.argsort(np.where(d_start > 20.0, d_route, np.inf), kind="stable")[:c]
        spawn[i], spawn_ok[i] = sp[order], d_start[order] > 20.0
        is_sign = (p == lane_start[lane]) & stop_lane[lane]
        is_sign[0] = False
        is_sign[n:] = False
        sign[i] = is_sign
        following = following_sign = r - 1
        for j in range(r - 1, -1, -1):
            if is_stop[j]:
                following = j
            if is_sign[j]:
                following_sign = j
            nxt[i, j] = following
            sign_next[i, j] = following_sign
        curbs.append(_curb_slots(a, p, cum[i], n))
        xwalks.append(_xwalk_slots(a, p, cum[i], n))
    curb, curb_n = _pad(curbs, num_curb)
    xwalk, xwalk_n = _pad(xwalks, num_xwalk)
    return RouteBank(*(jnp.asarray(v) for v in (xy, yaw, cum, pt, length, num, stop, nxt, spawn,
                                                 spawn_ok, sign, sign_next, curb, curb_n,
                                                 xwalk, xwalk_n)))


def carla_route_bank(m: MapArrays, net: RoadNetwork, route_file: str,
                     max_len: int | None = None) -> RouteBank:
    return route_bank(m, [plan_route(m, net, w) for w in parse_route_xml(route_file)], max_len)
