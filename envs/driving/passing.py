"""When the ego may pull out to pass a parked car (issue 19): the lane it moves into must
be clear of oncoming traffic for the whole manoeuvre.

Town01 has one lane per direction, so passing a car that blocks the lane means
briefly driving on the opposite lane, as CARLA leaderboard 2.0's
ParkedObstacleTwoWays scenario demands (scenario_runner 94ff3b8
srunner/scenarios/route_obstacles.py:467-516: the ego "has to invade the
opposite lane" while oncoming traffic keeps flowing with gaps). The expert
(env.expert_policy) waits behind the car until `oncoming_clear`, and once it
has pulled out more than COMMITTED_M it completes the pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs.driving import sim
from envs.driving.roadmap import MapArrays

COMMITTED_M = 1.0  # m left of the route: already pulling out, finish the pass
WAIT_GAP_M = 8.0  # m bumper to bumper: where the ego waits behind the parked car
HORIZON_S = 4.0  # s: oncoming vehicles that could arrive within this long count


def oncoming_clear(m: MapArrays, route_pts: jax.Array, ego_xy: jax.Array, ego_yaw: jax.Array,
                   ego_v: jax.Array, veh_pt: jax.Array, veh_xy: jax.Array, veh_v: jax.Array,
                   active: jax.Array, d_obst: jax.Array) -> jax.Array:
    """No active vehicle on a lane that runs the other way beside the route ahead
    (`route_pts`: route points sampled ahead; MapArrays lane_left / lane_right) closer
    than the parked car (`d_obst` m ahead) + 15 m + the distance it and the ego close in
    HORIZON_S seconds, and not more than 5 m behind the ego. Lane identity, not the
    ego frame: on curved roads the opposite lane 50 m ahead is not "to the left"."""
    lanes = m.pt_lane[route_pts]
    opp = jnp.concatenate([jnp.where(m.lane_left_same[lanes], -1, m.lane_left[lanes]),
                           jnp.where(m.lane_right_same[lanes], -1, m.lane_right[lanes])])
    veh_lane = m.pt_lane[veh_pt]
    on_opp = jnp.any((veh_lane[:, None] == opp[None, :]) & (opp[None, :] >= 0), axis=1)
    rel = sim.to_frame(veh_xy - ego_xy, ego_yaw)
    reach = d_obst + 15.0 + HORIZON_S * (ego_v + veh_v)
    near = (jnp.linalg.norm(veh_xy - ego_xy, axis=-1) < reach) & (rel[:, 0] > -5.0)
    return ~jnp.any(active & on_opp & near)


def wait_speed(d_obst: jax.Array, decel: float = 2.5) -> jax.Array:
    """Speed that stops WAIT_GAP_M behind a parked car `d_obst` m ahead (centres)."""
    gap = d_obst - sim.VEH_LEN - WAIT_GAP_M
    return jnp.sqrt(2 * decel * jnp.maximum(gap, 0.0))
