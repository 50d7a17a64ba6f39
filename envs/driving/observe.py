"""Observations: ego-centric vector features, and a BEV raster with measurements, jittable.

Vector (float32, length 8 + 20 + 5 + 7 K + 2):
  ego   [v/10, steer/max_steer, accel/max_accel, limit/10, route lateral/2,
         sin(yaw error), cos(yaw error), in junction]
  route 10 route points every 4 m ahead, (lon, lat)/20 in the ego frame
  light [distance to the next stop line on the route / 50 (<= 1),
         one-hot green, yellow, red, none]
  cars  K nearest active vehicles: (lon, lat)/30, relative (vlon, vlat)/10,
         cos / sin of the relative heading, valid flag (zeros when absent)
  time  [remaining route fraction, step / max_steps]

BEV (CaRL's observation, autonomousvision/CaRL CARLA/team_code): a dict
  "bev"          uint8 (S, S, 8), heading up, the ego at the centre column and
                 `ahead` metres below the top row (BevView). CaRL's channels
                 (birds_eye_view/bev_observation.py, get_observation: final_masks[0..8]
                 = road, route, lane markings, vehicles, walkers, traffic lights, stop
                 signs, speed signs, static) without speed signs and shoulders, which this
                 map has not, and grouped static map first (BEV_CHANNELS):
    0 road        255 on the drivable raster
    1 lane        255 within half a pixel of a lane boundary outside junctions
                  (CaRL: lane_marking_all; solid / broken is not told apart)
    2 lights      stop lines of lights: red 255, yellow 170, green 80 (CaRL: factors 1.0,
                  0.67, 0.315 of 255)
    3 stop signs  255 on stop-sign stop lines (when params.stop_signs; CaRL draws only
                  the next one not yet obeyed)
    4 route       255 on a 3 m wide band along the next `ahead` metres of the route
                  (CaRL: route_width 6 px at 2 px/m)
    5 vehicles    background vehicles' boxes, 100 + 155 min(v / 15 m/s, 1)
    6 walkers     walkers' boxes (at least 1.6 m square: CaRL's min_ext_bounding_box
                  0.8 m), valued by speed like vehicles
    7 static      255 on parked cars / static obstacles
  "measurements" float32 (8,): CaRL's eight (env_agent.py, preprocess_observation:
                 steer, throttle, brake, gear, ego velocity x / y, forward speed,
                 speed limit), in its units: controls in [-1, 1] / [0, 1], m/s.

CaRL's view is 256 x 256 px at 2 px/m with the ego 100 px above the bottom edge
(train script flags --bev_semantics_width 256 --pixels_ev_to_bottom 100
--pixels_per_meter 2): 78 m ahead, 50 m behind, 64 m to each side. BevView takes
the same field of view in metres at any pixel count (default 64 px = 2 m/px, where
lane markings are coarse: bev_size=256 is CaRL's 0.5 m/px at 16x the pixels).

Speed: the static map layers (road, lane boundaries, stop lines) are precomputed once
per map into one packed int32 raster (`bev_map`), so a pixel costs one gather of it
plus shifts (light colours come from 2-bit packed words, no per-env table); objects
(vehicles, walkers, parked cars, route segments) are oriented boxes max-composited in
one scatter over a small window around each (`_box_window`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from envs.driving import sim
from envs.driving.roadmap import COS, JUNC, LANE, LIGHT, S_IN, SIN, WIDTH, X, Y
from mo_rl.spaces import Box, Dict

VEC_CLIP = 10.0  # vector features are clipped to [-VEC_CLIP, VEC_CLIP]
NUM_ROUTE_OBS = 10
ROUTE_STEP = 4


def vector_size(num_vehicles: int) -> int:
    return 8 + 2 * NUM_ROUTE_OBS + 5 + 7 * num_vehicles + 2


def vector_obs(state, params, k: int, lights: jax.Array, veh_pose=None) -> jax.Array:
    """`veh_pose`: the vehicles' exact (centres (N, 2), headings (cos, sin) (N, 2)) where
    known (CARLA); None: their lane pose (sim.veh_pose)."""
    m, rb = params.map, params.routes
    r = state.route
    ego = jnp.stack([state.x, state.y])
    limit = m.pt_speed[rb.pt[r, state.prog]]
    rel0 = sim.to_frame(ego - rb.xy[r, state.prog], rb.yaw[r, state.prog])
    yaw_err = state.yaw - rb.yaw[r, state.prog]
    ego_pt, _ = sim.grid_lookup(m, ego)
    c, s = jnp.cos(state.yaw), jnp.sin(state.yaw)
    f_ego = jnp.stack([state.v / 10, state.steer / params.max_steer,
                       state.accel / params.max_accel, limit / 10, rel0[1] / 2,
                       jnp.sin(yaw_err), jnp.cos(yaw_err),
                       (m.pt_tab[ego_pt, JUNC] >= 0).astype(jnp.float32)])
    idx = jnp.minimum(state.prog + ROUTE_STEP * jnp.arange(1, NUM_ROUTE_OBS + 1), rb.num[r] - 1)
    f_route = (sim.to_frame_cs(rb.xy[r, idx] - ego, c, s) / 20.0).ravel()
    stop_i = rb.next_stop[r, state.prog]
    light_id = rb.stop_light[r, stop_i]
    dist = rb.cum[r, stop_i] - rb.cum[r, state.prog]
    ls = jnp.where(light_id >= 0, lights[jnp.maximum(light_id, 0)], sim.NO_LIGHT)
    ls = jnp.where(dist > 50.0, sim.NO_LIGHT, ls)
    f_light = jnp.concatenate([jnp.minimum(dist, 50.0)[None] / 50.0,
                               jax.nn.one_hot(ls, 4)])
    xy, cs = sim.veh_pose(m, state.veh_pt, state.veh_u) if veh_pose is None else veh_pose
    rel = sim.to_frame_cs(xy - ego, c, s)
    d2 = jnp.sum(rel**2, -1)
    near_ok = state.veh_active & (d2 < 60.0**2)
    d2 = jnp.where(near_ok, d2, jnp.inf)
    rel_cs = sim.to_frame_cs(cs, c, s)  # (cos, sin) of the relative heading
    rel_vel = state.veh_v[:, None] * rel_cs - jnp.stack([state.v, 0.0])
    feats = jnp.concatenate([rel / 30.0, rel_vel / 10.0, rel_cs,
                             jnp.ones((cs.shape[0], 1))], -1)
    feats = jnp.where(near_ok[:, None], feats, 0.0)
    # K nearest by rank (ties by index): a one-hot selection matmul, cheaper than top_k on CPU
    n = cs.shape[0]
    idx = jnp.arange(n)
    tie = (d2[None, :] == d2[:, None]) & (idx[None, :] < idx[:, None])
    closer = (d2[None, :] < d2[:, None]) | tie
    rank = jnp.sum(closer, 1)
    sel = (rank[None, :] == jnp.arange(k)[:, None]).astype(jnp.float32)  # (k, N)
    f_cars = (sel @ feats).ravel()
    f_time = jnp.stack([1.0 - rb.cum[r, state.prog] / rb.length[r],
                        state.t / params.max_steps])
    out = jnp.concatenate([f_ego, f_route, f_light, f_cars, f_time])
    return jnp.clip(out, -VEC_CLIP, VEC_CLIP).astype(jnp.float32)



# ----------------------------------------------------------------------------- BEV
# CaRL's channels (module docstring), the static map layers first, then the objects
BEV_CHANNELS = ("road", "lane", "lights", "stop_signs", "route", "vehicles", "walkers", "static")
MEASUREMENTS = ("steer", "throttle", "brake", "gear", "vel_x", "vel_y", "speed", "speed_limit")
CARL_AHEAD, CARL_BEHIND = 78.0, 50.0  # metres: 156 / 100 px at 2 px/m (module docstring)
ROUTE_HALF_WIDTH = 1.5  # m: CaRL's route_width = 6 px at 2 px/m
MIN_HALF_EXTENT = 0.8  # m: CaRL's min_ext_bounding_box (walkers are drawn at least this big)
WALKER_HALF = (MIN_HALF_EXTENT, MIN_HALF_EXTENT)
CAR_HALF = (0.5 * sim.VEH_LEN, 0.5 * sim.VEH_WID)
STOP_LINE_M = 1.5  # m: stop lines are this deep (CaRL: red_light_thickness 3 px at 2 px/m)
LIGHT_VALUES = (80, 170, 255)  # green, yellow, red: CaRL's 0.315, 0.67, 1.0 x 255
_BQ, _SQ = 0.05, 0.1  # m per unit of the packed boundary distance / stop-line arc length


class BevView(NamedTuple):
    """Static BEV geometry: `size` x `size` square pixels covering `ahead` metres in front
    of the ego centre and `behind` metres behind it, so (ahead + behind) / 2 to each side."""

    size: int = 64
    ahead: float = CARL_AHEAD
    behind: float = CARL_BEHIND

    @property
    def res(self) -> float:
        """Metres per pixel."""
        return (self.ahead + self.behind) / self.size

    @property
    def ego_row(self) -> float:
        """Distance of the ego centre from the top edge, in pixels."""
        return self.size * self.ahead / (self.ahead + self.behind)

    def check(self) -> BevView:
        if int(self.size) != self.size or self.size < 8:
            raise ValueError(f"bev_size must be an integer >= 8, got {self.size!r}")
        if not (self.ahead > 0 and self.behind >= 0):
            raise ValueError(f"bev_ahead must be > 0 and bev_behind >= 0 (metres), got "
                             f"{self.ahead!r}, {self.behind!r}")
        return self


def bev_map(m) -> jax.Array:
    """The static map layers of the BEV on the map's raster cells (same (W, H) as
    m.grid_code), packed in one int32 per cell so a BEV pixel costs one gather:

      bit 0       drivable
      bits 1-7    distance from the cell centre to the nearest lane boundary in 0.05 m
                  (127: in a junction, off the road, or >= 6.35 m)
      bits 8-15   arc length from the start of the cell's lane in 0.1 m (255: >= 25.5 m)
      bits 16-30  stop line at that lane's start: 0 none, 1 stop sign, 2 + light id

    Stop lines of lights and of stop signs are both the start of the junction connector
    they control (roadmap: lane_light, MapArrays.stop_pt). Computed once per map
    (make_driving stores it in DrivingParams.bev_map); it does not depend on the view.
    """
    code = jnp.asarray(m.grid_code)
    w, h = code.shape
    near, drivable = code >> 1, (code & 1) > 0
    cx = m.grid_origin[0] + (jnp.arange(w)[:, None] + 0.5) * m.grid_res
    cy = m.grid_origin[1] + (jnp.arange(h)[None, :] + 0.5) * m.grid_res
    row = m.pt_tab[near]
    dx, dy = cx - row[..., X], cy - row[..., Y]
    lon = dx * row[..., COS] + dy * row[..., SIN]
    lat = -dx * row[..., SIN] + dy * row[..., COS]
    bq = jnp.clip(jnp.round(jnp.abs(jnp.abs(lat) - 0.5 * row[..., WIDTH]) / _BQ), 0, 127)
    bq = jnp.where(drivable & (row[..., JUNC] < 0), bq, 127).astype(jnp.int32)
    s = row[..., S_IN] + lon
    sq = jnp.where(s < 0, 255, jnp.clip(jnp.round(s / _SQ), 0, 255)).astype(jnp.int32)
    nl = m.lane_start.shape[0]
    stop_lane = jnp.where(m.stop_pt >= 0, m.pt_lane[jnp.maximum(m.stop_pt, 0)], nl)
    is_stop = jnp.zeros(nl, bool).at[stop_lane].set(True, mode="drop")
    light = row[..., LIGHT].astype(jnp.int32)
    lane = row[..., LANE].astype(jnp.int32)
    line = jnp.where(light >= 0, light + 2, jnp.where(is_stop[lane], 1, 0))
    line = jnp.where(drivable, line, 0)
    return drivable.astype(jnp.int32) | (bq << 1) | (sq << 8) | (line << 16)


_BEV_MAPS: dict[int, tuple] = {}


def cached_bev_map(m) -> jax.Array:
    """bev_map(m) once per map object (the map loaders cache their maps, so every
    make_driving / default_params of one map shares it; ~2 s per build on the CPU)."""
    hit = _BEV_MAPS.get(id(m))
    if hit is None or hit[0] is not m:  # the map is kept alive with its layers
        hit = _BEV_MAPS[id(m)] = (m, jax.block_until_ready(bev_map(m)))
    return hit[1]


def _box_window(view: BevView, rel: jax.Array, rc: jax.Array, rs: jax.Array, hl, hw,
                radius: float, value: jax.Array, ok: jax.Array, chan: int, nchan: int):
    """Flat indices into an (S, S, nchan) image and values of the pixels whose centres lie
    in oriented boxes: centres `rel` (n, 2) (lon, lat in the ego frame), heading (rc, rs)
    relative to the ego, half extents (hl, hw) (scalars or (n,)), `radius` >= the box's
    half diagonal. Only a (2 r + 1)^2 window around each centre is tested,
    r = floor(radius / res + 0.5); the centre's own pixel is always drawn, so objects
    smaller than a pixel stay visible. Rejected pixels get an out-of-range index."""
    size, res = view.size, view.res
    reach = math.floor(radius / res + 0.5)
    ic = view.ego_row - rel[:, 0] / res - 0.5  # continuous row / column of the centre
    jc = 0.5 * size - rel[:, 1] / res - 0.5
    i0 = jnp.floor(ic + 0.5).astype(jnp.int32)  # the pixel that contains the centre
    j0 = jnp.floor(jc + 0.5).astype(jnp.int32)
    d = np.arange(-reach, reach + 1)
    di, dj = (x.ravel() for x in np.meshgrid(d, d, indexing="ij"))
    i = i0[:, None] + di  # (n, window)
    j = j0[:, None] + dj
    dlon = (ic[:, None] - i) * res  # pixel centre - object centre, ego frame
    dlat = (jc[:, None] - j) * res
    rc, rs = rc[:, None], rs[:, None]
    u = dlon * rc + dlat * rs
    v = dlat * rc - dlon * rs
    hl = jnp.asarray(hl)[..., None] if jnp.ndim(hl) else hl
    hw = jnp.asarray(hw)[..., None] if jnp.ndim(hw) else hw
    inside = ((jnp.abs(u) <= hl) & (jnp.abs(v) <= hw)) | ((di == 0) & (dj == 0))
    keep = inside & ok[:, None] & (i >= 0) & (i < size) & (j >= 0) & (j < size)
    idx = jnp.where(keep, (i * size + j) * nchan + chan, nchan * size * size)  # (S, S, C)
    return idx.ravel(), jnp.broadcast_to(value[:, None], idx.shape).ravel()


def speed_value(v: jax.Array) -> jax.Array:
    """uint8 pixel value of a moving object: 100 + 155 min(v / 15 m/s, 1)."""
    return (100.0 + 155.0 * jnp.minimum(jnp.maximum(v, 0.0) / 15.0, 1.0)).astype(jnp.uint8)


def _ego_frame(xy: jax.Array, cs: jax.Array, ego: jax.Array, c: jax.Array, s: jax.Array):
    """Centres (n, 2) and headings (cos, sin) (n, 2) -> ego-frame centres, relative cos, sin."""
    rel = sim.to_frame_cs(xy - ego, c, s)
    return rel, cs[:, 0] * c + cs[:, 1] * s, cs[:, 1] * c - cs[:, 0] * s


def _light_words(lights: jax.Array) -> jax.Array:
    """Light states packed 2 bits each (0 none, 1 green, 2 yellow, 3 red), 16 per uint32:
    a pixel finds its light's colour with shifts and a few selects instead of a gather from
    a per-env table (that gather ran ~5x slower than the map look-up on the CPU)."""
    nl = lights.shape[0]
    nw = -(-nl // 16)
    st = jnp.clip(lights, 0, 2).astype(jnp.uint32) + 1
    st = jnp.pad(st, (0, 16 * nw - nl)).reshape(nw, 16)
    return jnp.sum(st << (2 * jnp.arange(16, dtype=jnp.uint32)), axis=1, dtype=jnp.uint32)


def _map_layers(state, params, view: BevView, bm: jax.Array, lights: jax.Array) -> jax.Array:
    """uint32 (S, S): the road, lane, lights and stop-sign channels as its four bytes."""
    m, size, res = params.map, view.size, view.res
    c, s = jnp.cos(state.yaw), jnp.sin(state.yaw)
    pix = np.arange(size) + 0.5
    lon = jnp.asarray((view.ego_row - pix) * res, jnp.float32)  # per row
    lat = jnp.asarray((0.5 * size - pix) * res, jnp.float32)  # per column
    inv = 1.0 / m.grid_res
    gx = ((state.x - m.grid_origin[0]) * inv + (lon * c * inv)[:, None]
          - (lat * s * inv)[None, :])
    gy = ((state.y - m.grid_origin[1]) * inv + (lon * s * inv)[:, None]
          + (lat * c * inv)[None, :])
    ix, iy = jnp.floor(gx).astype(jnp.int32), jnp.floor(gy).astype(jnp.int32)
    w, h = bm.shape
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    code = jnp.where(inside, bm.reshape(-1)[jnp.where(inside, ix * h + iy, 0)], 0)
    u32 = jnp.uint32
    road = (code & 1).astype(u32) * 255
    lane = jnp.where(((code >> 1) & 127) < round(max(0.5 * res, 0.25) / _BQ), 255, 0)
    on_line = ((code >> 8) & 255) < round(max(STOP_LINE_M, res) / _SQ)
    line = code >> 16
    words = _light_words(lights)
    lid = jnp.maximum(line - 2, 0).astype(u32)
    word = words[0]
    for k in range(1, words.shape[0]):
        word = jnp.where((lid >> 4) == k, words[k], word)
    state2 = (word >> (2 * (lid & 15))) & 3
    colour = jnp.asarray((0,) + LIGHT_VALUES, u32)
    light = jnp.where(on_line & (line >= 2), jnp.where(state2 == 3, colour[3], jnp.where(
        state2 == 2, colour[2], colour[1])), 0)
    stop = jnp.where(on_line & (line == 1) & params.stop_signs, 255, 0)
    return road | (lane.astype(u32) << 8) | (light.astype(u32) << 16) | (stop.astype(u32) << 24)


def _object_layers(state, params, view: BevView, veh_pose=None) -> jax.Array:
    """uint8 (S, S, 4): route, vehicles, walkers and static objects (oriented boxes),
    max-composited in one scatter. `veh_pose` as in vector_obs."""
    m, rb = params.map, params.routes
    size, res = view.size, view.res
    ego = jnp.stack([state.x, state.y])
    c, s = jnp.cos(state.yaw), jnp.sin(state.yaw)
    parts = []
    vxy, vcs = sim.veh_pose(m, state.veh_pt, state.veh_u) if veh_pose is None else veh_pose
    rel, rc, rs = _ego_frame(vxy, vcs, ego, c, s)
    parts.append(_box_window(view, rel, rc, rs, *CAR_HALF, float(np.hypot(*CAR_HALF)),
                             speed_value(state.veh_v), state.veh_active, 1, 4))
    if state.ped_xy.shape[0]:
        pcs = jnp.stack([jnp.cos(state.ped_yaw), jnp.sin(state.ped_yaw)], -1)
        rel, rc, rs = _ego_frame(state.ped_xy, pcs, ego, c, s)
        parts.append(_box_window(view, rel, rc, rs, *WALKER_HALF,
                                 float(np.hypot(*WALKER_HALF)), speed_value(state.ped_v),
                                 state.ped_active, 2, 4))
    if state.obst_xy.shape[0]:
        ocs = jnp.stack([jnp.cos(state.obst_yaw), jnp.sin(state.obst_yaw)], -1)
        rel, rc, rs = _ego_frame(state.obst_xy, ocs, ego, c, s)
        full = jnp.full(state.obst_active.shape, 255, jnp.uint8)
        parts.append(_box_window(view, rel, rc, rs, *CAR_HALF, float(np.hypot(*CAR_HALF)),
                                 full, state.obst_active, 3, 4))
    # route: the next `ahead` metres as boxes between route points ~max(2 m, 2 px) apart
    stride = max(1, round(max(2.0, 2.0 * res)))  # route points are ~1 m apart
    nseg = math.ceil(view.ahead / stride) + 1
    r = state.route
    ridx = jnp.minimum(state.prog + stride * jnp.arange(nseg + 1), rb.num[r] - 1)
    pts = rb.xy[r, ridx]
    seg = pts[1:] - pts[:-1]
    seg_len = jnp.linalg.norm(seg, axis=-1)
    seg_cs = seg / jnp.maximum(seg_len, 1e-3)[:, None]
    rel, rc, rs = _ego_frame(0.5 * (pts[1:] + pts[:-1]), seg_cs, ego, c, s)
    max_half = 0.5 * stride * 1.05 + 0.25  # route points are <= 1.04 m apart (quick, Town01)
    parts.append(_box_window(view, rel, rc, rs, jnp.minimum(0.5 * seg_len + 0.25, max_half),
                             ROUTE_HALF_WIDTH, float(np.hypot(max_half, ROUTE_HALF_WIDTH)),
                             jnp.full(seg_len.shape, 255, jnp.uint8), seg_len > 1e-3, 0, 4))
    idx = jnp.concatenate([p[0] for p in parts])
    val = jnp.concatenate([p[1] for p in parts])
    obj = jnp.zeros(4 * size * size, jnp.uint8).at[idx].max(val, mode="drop")
    return obj.reshape(size, size, 4)


def _materialised(f, opaque_one: jax.Array):
    """f() run as the body of a one-trip while loop (CPU only).

    XLA's CPU fusion pulls the map look-up (a gather) into any consumer that reshapes
    its result (here: the uint32 -> 4 x uint8 bitcast and the channel concatenation) and
    then runs it ~5x slower (measured 8-14 ms instead of 2-3 ms per 256 x 64 x 64
    pixels); a loop carry is always materialised, so the look-up runs in its own kernel.
    `opaque_one` is 1 at run time but unknown to the compiler (else it removes the loop).
    """
    if jax.default_backend() != "cpu":
        return f()
    out = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(f))
    return jax.lax.while_loop(lambda c: c[0] < opaque_one, lambda c: (c[0] + 1, f()),
                              (jnp.zeros((), jnp.int32), out))[1]


def bev_obs(state, params, view: BevView, lights: jax.Array, veh_pose=None) -> jax.Array:
    """uint8 (S, S, len(BEV_CHANNELS)) raster, see the module docstring."""
    bm = getattr(params, "bev_map", None)
    bm = bev_map(params.map) if bm is None else bm
    words = _materialised(lambda: _map_layers(state, params, view, bm, lights),
                          1 + (state.t < 0).astype(jnp.int32))
    # road, lane, lights, stop signs (the bytes of the map word), then the objects
    return jnp.concatenate([jax.lax.bitcast_convert_type(words, jnp.uint8),
                            _object_layers(state, params, view, veh_pose)], -1)


def measurements(state, params) -> jax.Array:
    """CaRL's eight measurements (module docstring). Throttle and brake come from the
    applied acceleration (the state keeps no command); the bicycle model has one forward
    gear (gear = 1); the velocity is the centre's, at the slip angle of the steer; the
    lateral component is positive to the left (sim.py's convention)."""
    beta = jnp.arctan(0.5 * jnp.tan(state.steer))
    vx, vy = state.v * jnp.cos(beta), state.v * jnp.sin(beta)
    limit = params.map.pt_speed[params.routes.pt[state.route, state.prog]]
    return jnp.stack([state.steer / params.max_steer,
                      jnp.clip(state.accel / params.max_accel, 0.0, 1.0),
                      jnp.clip(-state.accel / params.max_brake, 0.0, 1.0),
                      jnp.ones_like(vx), vx, vy, vx, limit]).astype(jnp.float32)


def bev_with_measurements(state, params, view: BevView, lights: jax.Array,
                          veh_pose=None) -> dict:
    """The BEV observation: {"bev": uint8 (S, S, C), "measurements": float32 (8,)}."""
    return {"bev": bev_obs(state, params, view, lights, veh_pose),
            "measurements": measurements(state, params)}


def bev_space(view: BevView) -> Dict:
    """The space of bev_with_measurements' output."""
    v = 100.0  # m/s: bounds the speeds (gymnasium's checker warns on infinite ones)
    return Dict({"bev": Box(0, 255, (view.size, view.size, len(BEV_CHANNELS)), jnp.uint8),
                 "measurements": Box(np.array([-1, 0, 0, 0, -v, -v, -v, 0], np.float32),
                                     np.array([1, 1, 1, 1, v, v, v, v], np.float32),
                                     (len(MEASUREMENTS),))})
