"""Observations: ego-centric vector features and a BEV raster, both jittable.

Vector (float32, length 8 + 20 + 5 + 7 K + 2):
  ego   [v/10, steer/max_steer, accel/max_accel, limit/10, route lateral/2,
         sin(yaw error), cos(yaw error), in junction]
  route 10 route points every 4 m ahead, (lon, lat)/20 in the ego frame
  light [distance to the next stop line on the route / 50 (<= 1),
         one-hot green, yellow, red, none]
  cars  K nearest active vehicles: (lon, lat)/30, relative (vlon, vlat)/10,
         cos / sin of the relative heading, valid flag (zeros when absent)
  time  [remaining route fraction, step / max_steps]

BEV (uint8, S x S x 5, ego at the centre column, 3/4 down, heading up, res m/px):
  0 road (drivable raster), 1 route (next ~60 m), 2 lane boundaries,
  3 vehicles (value 100 + 155 * min(v / 15, 1)), 4 stop lines of lights
  (255 red, 160 yellow, 80 green).
Map channels are one world look-up per pixel in the map rasters; route
points and vehicles are composited in small windows around each object
(`_splat`), so the cost is O(S^2 + 30 * 49 + N * 225) per env at 0.5 m/px.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs.driving import sim
from envs.driving.roadmap import COS, JUNC, LIGHT, S_IN, SIN, WIDTH, X, Y

BEV_CHANNELS = 5
VEC_CLIP = 10.0  # vector features are clipped to [-VEC_CLIP, VEC_CLIP]
NUM_ROUTE_OBS = 10
ROUTE_STEP = 4


def vector_size(num_vehicles: int) -> int:
    return 8 + 2 * NUM_ROUTE_OBS + 5 + 7 * num_vehicles + 2


def vector_obs(state, params, k: int, lights: jax.Array) -> jax.Array:
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
    xy, cs = sim.veh_pose(m, state.veh_pt, state.veh_u)
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


def _pixel_world(i: jax.Array, j: jax.Array, size: int, res: float, ego: jax.Array,
                 c: jax.Array, s: jax.Array) -> jax.Array:
    """World (x, y) of the centres of BEV pixels (row i, column j): row 0 = far ahead,
    the ego at row 3/4 * size, heading up; columns to the right = negative lateral."""
    lon = (0.75 * size - (i + 0.5)) * res
    lat = -(((j + 0.5) - 0.5 * size) * res)
    return jnp.stack([ego[0] + lon * c - lat * s, ego[1] + lon * s + lat * c], -1)


def _splat(img: jax.Array, centres: jax.Array, half: int, size: int, res: float,
           ego: jax.Array, c: jax.Array, s: jax.Array, value_fn) -> jax.Array:
    """Max-composite small objects into img (S, S): each object tests only the
    (2 half + 1)^2 pixels around its centre, `value_fn(k, world_xy (W, 2)) -> (W,)`.

    Equal to testing every pixel against every object when the window covers the
    object; O(objects * window) instead of O(S^2 * objects).
    """
    rel = sim.to_frame_cs(centres - ego, c, s)  # (n, 2) lon, lat
    i0 = jnp.round(0.75 * size - rel[:, 0] / res - 0.5).astype(jnp.int32)
    j0 = jnp.round(0.5 * size - rel[:, 1] / res - 0.5).astype(jnp.int32)
    d = jnp.arange(-half, half + 1)
    di, dj = (x.ravel() for x in jnp.meshgrid(d, d, indexing="ij"))
    i = i0[:, None] + di  # (n, W)
    j = j0[:, None] + dj
    world = _pixel_world(i, j, size, res, ego, c, s)  # (n, W, 2)
    vals = jax.vmap(value_fn)(jnp.arange(centres.shape[0]), world)
    inside = (i >= 0) & (i < size) & (j >= 0) & (j < size)
    i = jnp.where(inside, i, size)  # out of range: dropped (negative indices would wrap)
    return img.at[i, j].max(vals, mode="drop")


def bev_obs(state, params, size: int, res: float, lights: jax.Array) -> jax.Array:
    m, rb = params.map, params.routes
    ego = jnp.stack([state.x, state.y])
    c, s = jnp.cos(state.yaw), jnp.sin(state.yaw)
    pix = jnp.arange(size)
    wxy = _pixel_world(pix[:, None], pix[None, :], size, res, ego, c, s)  # (S, S, 2)
    near, drivable = sim.grid_lookup(m, wxy)
    road = drivable
    # lane boundaries: |lateral offset to the nearest centreline| close to half the width
    row = m.pt_tab[near]  # (S, S, columns)
    off = sim.to_frame_cs(wxy - row[..., X:Y + 1], row[..., COS], row[..., SIN])[..., 1]
    half = 0.5 * row[..., WIDTH]
    marking = drivable & (jnp.abs(jnp.abs(off) - half) < 0.6 * res + 0.1)
    # route: pixels within 1 m of the next 60 route points (every 2nd)
    r = state.route
    ridx = jnp.minimum(state.prog + jnp.arange(0, 60, 2), rb.num[r] - 1)
    rpts = rb.xy[r, ridx]
    zeros = jnp.zeros((size, size), jnp.float32)
    route = _splat(zeros, rpts, int(np.ceil(1.0 / res)) + 1, size, res, ego, c, s,
                   lambda k, w: jnp.where(jnp.sum((w - rpts[k]) ** 2, -1) < 1.0, 255.0, 0.0))
    # vehicles: pixel centres inside the box, valued by speed
    vxy, vcs = sim.veh_pose(m, state.veh_pt, state.veh_u)
    box_half = jnp.array([0.5 * sim.VEH_LEN, 0.5 * sim.VEH_WID])
    speed_val = jnp.where(state.veh_active,
                          100.0 + 155.0 * jnp.minimum(state.veh_v / 15.0, 1.0), 0.0)

    def vehicle(k, w):
        rel = sim.to_frame_cs(w - vxy[k], vcs[k, 0], vcs[k, 1])
        return jnp.where(jnp.all(jnp.abs(rel) < box_half, -1), speed_val[k], 0.0)

    reach = int(np.ceil(np.hypot(0.5 * sim.VEH_LEN, 0.5 * sim.VEH_WID) / res)) + 1
    veh = _splat(zeros, vxy, reach, size, res, ego, c, s, vehicle)
    # stop lines: the first 1.5 m of light-controlled connectors
    lid = row[..., LIGHT].astype(jnp.int32)
    s_in = row[..., S_IN]
    on_line = drivable & (lid >= 0) & (s_in < 1.5)
    ls = lights[jnp.maximum(lid, 0)]
    light_val = jnp.where(ls == sim.RED, 255, jnp.where(ls == sim.YELLOW, 160, 80))
    lights_ch = jnp.where(on_line, light_val, 0)
    img = jnp.stack([road * 255, route, marking * 255, veh, lights_ch], -1)
    return img.astype(jnp.uint8)
