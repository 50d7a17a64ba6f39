"""One step of the driving simulator's rewards, rules and metrics on an OBSERVED world.

`DrivingEnv.step` (envs/driving/env.py) moves the world itself (bicycle ego,
IDM traffic) and then scores the step with envs.driving.scoring.score_step.
A live CARLA server moves the world instead, so `step_state` takes the world
as observed after a tick (ego pose, vehicle poses, light states,
collision-sensor contacts) and calls the SAME `score_step` on it: there is
one scoring for both. What is CARLA's own here is only the observation's
localisation of the vehicles (`veh_pt`, `veh_u`, `veh_lat`: the lane point
the observation functions read a vehicle at). tests/envs/carla/test_score.py
feeds the JAX simulator's own trajectories through `step_state` and requires
the same rewards, infractions, metrics, observations and memory state.

Differences from the simulator come from the world, not the scoring:
* collisions: the collision sensor's contacts (`Observed.hit_*`) replace the
  box-overlap test when given (the leaderboard's CollisionTest also reads the
  sensor); pedestrians and static objects go through the same
  leaderboard filter (one CollisionTest memory for every actor type) and count
  with their own penalty factors;
* time-to-collision, lane centring, off-road and the outside-route-lanes test
  are computed from the observed poses on the map arrays built from the
  server's own OpenDRIVE (the map waypoints), exactly as in the simulator.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from envs.driving import road_users
from envs.driving.env import DrivingEnv, DrivingParams, DrivingState
from envs.driving.scoring import World, score_step


class Observed(NamedTuple):
    """The world after one tick, as plain arrays (N vehicle slots, W walkers, O statics)."""

    x: jax.Array
    y: jax.Array
    yaw: jax.Array  # rad
    v: jax.Array  # m/s
    steer: jax.Array  # applied steering, in the simulator's units (rad, max_steer at +-1)
    yaw_rate: jax.Array  # rad/s
    veh_xy: jax.Array  # (N, 2)
    veh_cs: jax.Array  # (N, 2) heading (cos, sin)
    veh_v: jax.Array  # (N,)
    veh_active: jax.Array  # (N,) bool
    veh_pt: jax.Array  # (N,) int nearest lane point (what the observation functions read)
    veh_u: jax.Array  # (N,) distance along that point's segment
    lights: jax.Array  # (NL,) int GREEN / YELLOW / RED of every map light
    veh_lat: jax.Array | None = None  # (N,) offset left of the lane centre (DrivingState.veh_lat)
    users: road_users.Users | None = None  # walkers / parked cars now; None: unchanged
    hit_vehicle: jax.Array | None = None  # (N,) bool sensor contacts; None: box overlap
    hit_walker: jax.Array | None = None  # (W,) bool sensor contacts; None: geometric test
    hit_static: jax.Array | None = None  # (S,) bool sensor contacts with static objects


def step_state(env: DrivingEnv, state: DrivingState, o: Observed, params: DrivingParams
               ) -> tuple[DrivingState, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
    """(new state, reward (K,), terminated, truncated, info) of the tick that led from
    `state` to the observed world `o`; info has DrivingEnv.step's keys."""
    users = (road_users.Users(**{k: getattr(state, k) for k in road_users.Users._fields})
             if o.users is None else o.users)
    world = World(o.x, o.y, o.yaw, o.v, o.steer, o.yaw_rate, o.veh_xy, o.veh_cs, o.veh_v,
                  o.veh_active, o.lights, users, o.hit_vehicle, o.hit_walker, o.hit_static)
    sc = score_step(state, world, params, env.reward, env.episode_end)
    new = sc.state._replace(veh_pt=o.veh_pt, veh_u=o.veh_u)
    if o.veh_lat is not None:  # the traffic's lane offsets, as the observation reads them
        new = new._replace(veh_lat=o.veh_lat)
    return new, sc.reward, sc.terminated, sc.truncated, sc.info
