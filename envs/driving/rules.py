"""CARLA leaderboard episode rules and metrics as pure, jittable functions.

Every constant is checked against the leaderboard's code (file:line at the
commits fetched for issue 18: carla-simulator/leaderboard aec8131 (master =
2.x) and its leaderboard-1.0 branch, carla-simulator/scenario_runner 94ff3b8,
srunner/scenariomanager/scenarioatomics/atomic_criteria.py = "AC"):

* penalties (leaderboard/utils/statistics_manager.py:21-36; 1.0: 22-26):
  pedestrian 0.5, vehicle 0.6, static 0.65, red light 0.7, stop sign 0.8;
  outside route lanes multiplies by (1 - % of the driven route outside them)
  (2.x: PENALTY_PERC_DICT [0, 'increases'] -> statistics_manager.py:342;
  1.0: statistics_manager.py:164); a route timeout adds no penalty factor
  (statistics_manager.py:363-365 only records it).
* collisions do not end the route (route_scenario.py:427, CollisionTest without
  terminate_on_failure); repeated contacts are filtered (AC:294-296, 335-342, 358-413):
  same actor within 5 s, or within 5 m of the last counted collision, count
  once; contacts while the ego is slower than 0.1 m/s are not counted.
* OutsideRouteLanesTest (AC:987-1167): outside the driving lanes when the
  centre is > lane_width / 2 + 0.5 m from the nearest lane centre (AC:998,
  1129); wrong lane: switched off inside junctions, set on leaving a junction
  when the lane heads > 120 deg away from the ego (AC:999, 1140-1153), toggled when
  the lane heading jumps by > 150 deg between steps outside junctions
  (AC:1000, 1155-1162); the distance driven along the route while outside or
  on a wrong lane, over the distance driven, is the percentage (AC:1096).
* InRouteTest (route_scenario.py:433-434, AC:1411-1423, 1481-1493): the route
  fails when the ego is >= 30 m from the route, or when the route driven more
  than 15 m (offroad_max / 2) from it exceeds 30% of the route length.
* blocked: speed < 0.1 m/s for more than 180 s (route_scenario.py:435-436,
  AC:449-470); ends the route, no penalty factor.
* route completed: > 99% of the route and within 10 m of its end (AC:1538-1539,
  1604-1609).
* route timeout (leaderboard-1.0 route_scenario.py:51-52, 260-272):
  0.8 s per metre of route + 5 s; ends the route, no penalty factor.
* status (statistics_manager.py:398-403): 'Perfect' = route completed and no
  infraction entry at all; `success` here is exactly that.
* collisions are typed by the other actor (AC:394-400): walker -> pedestrian
  (0.5), static prop -> static (0.65), else vehicle (0.6); the filters above
  apply across types (actor ids are distinct).
* RunningStopTest (AC:1812-1970): the ego is affected by a stop sign while
  within PROXIMITY_THRESHOLD = 4 m of its trigger volume (AC:1821, 1867; the
  volume is taken to sit on the stop line), the stop counts when the speed drops
  below SPEED_THRESHOLD = 0.1 m/s while affected (AC:1822, 1935-1938), and a
  stop sign is run when the ego stops being affected without that stop
  (AC:1940-1943): here, when its route progress gets more than 4 m past the
  line.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from envs.driving.roadmap import COS, JUNC, LANE, SIN

PENALTY = dict(collision_pedestrian=0.5, collision_vehicle=0.6, collision_static=0.65,
               red_light=0.7, stop_sign=0.8)
COLLISION_RADIUS = 5.0  # m, AC:294
COLLISION_ID_TIME = 5.0  # s, AC:295
COLLISION_MIN_SPEED = 0.1  # m/s, AC:296
OUTSIDE_ALLOWED = 0.5  # m, AC:998
WRONG_LANE_VEHICLE_DEG = 120.0  # AC:999
WRONG_LANE_WAYPOINT_DEG = 150.0  # AC:1000
COMPLETE_PERCENT = 99.0  # AC:1539
COMPLETE_DISTANCE = 10.0  # m, AC:1538
STOP_PROXIMITY = 4.0  # m, AC:1821 (RunningStopTest.PROXIMITY_THRESHOLD)
STOP_SPEED = 0.1  # m/s, AC:1822 (RunningStopTest.SPEED_THRESHOLD)


class LeaderboardState(NamedTuple):
    """Per-episode memory of the leaderboard criteria (all scalars)."""

    coll_id: jax.Array  # int: vehicle of the last counted collision, -1 none
    coll_t: jax.Array  # int: step of the last counted collision
    coll_xy: jax.Array  # (2,) where it was counted
    coll_near: jax.Array  # bool: still within COLLISION_RADIUS of it
    wrong_lane: jax.Array  # bool
    last_pt: jax.Array  # int: the ego's nearest lane point at the last step
    driven: jax.Array  # m of route driven
    outside: jax.Array  # m of route driven outside the route lanes
    off_safe: jax.Array  # m of route driven > offroad_max / 2 from the route
    stop_done: jax.Array  # bool: stood still while affected by the current stop sign


def initial_state(start_pt: jax.Array) -> LeaderboardState:
    f = jnp.zeros((), jnp.float32)
    return LeaderboardState(
        coll_id=jnp.int32(-1), coll_t=jnp.int32(0), coll_xy=jnp.zeros(2, jnp.float32),
        coll_near=jnp.zeros((), bool), wrong_lane=jnp.zeros((), bool),
        last_pt=jnp.asarray(start_pt, jnp.int32), driven=f, outside=f, off_safe=f,
        stop_done=jnp.zeros((), bool))


def count_collision(s: LeaderboardState, hits: jax.Array, t: jax.Array, dt: float,
                    ego_xy: jax.Array, v: jax.Array) -> tuple[jax.Array, LeaderboardState]:
    """Whether this step adds a leaderboard collision (CollisionTest's filters,
    AC:335-342, 371-386), and the updated memory. `hits` (N,): the ego box overlaps
    actor i now; the counted actor is `collision_actor(hits)`."""
    near = s.coll_near & (jnp.linalg.norm(ego_xy - s.coll_xy) <= COLLISION_RADIUS)
    same_id_live = (s.coll_id >= 0) & ((t - s.coll_t) * dt <= COLLISION_ID_TIME)
    first = collision_actor(hits)
    repeat = same_id_live & (first == s.coll_id)
    new = jnp.any(hits) & ~repeat & ~near & (v >= COLLISION_MIN_SPEED)
    s = s._replace(coll_id=jnp.where(new, first, jnp.where(same_id_live, s.coll_id, -1)),
                   coll_t=jnp.where(new, t, s.coll_t),
                   coll_xy=jnp.where(new, ego_xy, s.coll_xy), coll_near=new | near)
    return new, s


def collision_actor(hits: jax.Array) -> jax.Array:
    """Lowest index in contact (hits.shape[0] when none): the actor a step's collision
    is counted against."""
    idx = jnp.arange(hits.shape[0])
    return jnp.min(jnp.where(hits, idx, hits.shape[0]))


def run_stop_sign(s: LeaderboardState, d_old: jax.Array, d_new: jax.Array, is_sign: jax.Array,
                  v: jax.Array) -> tuple[jax.Array, LeaderboardState]:
    """RunningStopTest for one step: (stop sign run now, memory). `d_old` / `d_new`: route
    metres from the ego to the stop line before / after the step (negative: past it),
    `is_sign`: that line has an active stop sign."""
    affected = is_sign & (jnp.abs(d_new) <= STOP_PROXIMITY)
    done = s.stop_done | (affected & (v < STOP_SPEED))
    left = is_sign & (d_old >= -STOP_PROXIMITY) & (d_new < -STOP_PROXIMITY)
    ran = left & ~done
    return ran, s._replace(stop_done=done & ~left)


def outside_route_lanes(s: LeaderboardState, pt_tab: jax.Array, ego_pt: jax.Array,
                        lat_lane: jax.Array, width: jax.Array, ego_cs: jax.Array,
                        gained: jax.Array, wrong_active: jax.Array | bool = True,
                        ) -> tuple[jax.Array, LeaderboardState]:
    """OutsideRouteLanesTest for one step: (outside or on a wrong lane now, memory).

    `wrong_active` False: the wrong-lane state is tracked but not counted, as while a
    scenario has sent SwitchWrongDirectionTest(False) (AC:1045-1051; leaderboard 2.0's
    *TwoWays obstacle scenarios, e.g. srunner/scenarios/route_obstacles.py:505-516).

    `ego_pt` is the nearest lane point (any lane), `lat_lane` the ego's lateral
    offset from it, `width` its lane width, `gained` the route metres passed.
    """
    row, last = pt_tab[ego_pt], pt_tab[s.last_pt]
    outside = jnp.abs(lat_lane) > 0.5 * width + OUTSIDE_ALLOWED
    in_junction = row[JUNC] >= 0
    changed = row[LANE] != last[LANE]
    # angle between the lane and the ego (on leaving a junction) / the last lane
    cos_ego = row[COS] * ego_cs[0] + row[SIN] * ego_cs[1]
    cos_last = row[COS] * last[COS] + row[SIN] * last[SIN]
    wrong_exit = cos_ego < jnp.cos(jnp.deg2rad(WRONG_LANE_VEHICLE_DEG))
    flip = cos_last < jnp.cos(jnp.deg2rad(WRONG_LANE_WAYPOINT_DEG))
    wrong = jnp.where(in_junction, False,
                      jnp.where(changed, jnp.where(last[JUNC] >= 0, wrong_exit,
                                                   s.wrong_lane ^ flip), s.wrong_lane))
    bad = outside | (wrong & wrong_active)
    s = s._replace(wrong_lane=wrong, last_pt=ego_pt.astype(jnp.int32),
                   driven=s.driven + gained, outside=s.outside + jnp.where(bad, gained, 0.0))
    return bad, s


def outside_percent(s: LeaderboardState) -> jax.Array:
    """% of the driven route outside the route lanes (AC:1096)."""
    return jnp.where(s.driven > 0, 100.0 * s.outside / jnp.maximum(s.driven, 1e-6), 0.0)


def in_route_failed(s: LeaderboardState, route_dist: jax.Array, gained: jax.Array,
                    route_length: jax.Array, max_m: float | jax.Array,
                    max_share: float | jax.Array) -> tuple[jax.Array, LeaderboardState]:
    """InRouteTest: >= max_m from the route, or > max_share of the route driven more
    than max_m / 2 from it (AC:1411-1423, 1481-1493)."""
    off_safe = s.off_safe + jnp.where(route_dist >= 0.5 * max_m, gained, 0.0)
    failed = (route_dist >= max_m) | (off_safe > max_share * route_length)
    return failed, s._replace(off_safe=off_safe)


def route_timeout_steps(route_length: jax.Array, dt: float | jax.Array,
                        s_per_m: float | jax.Array, delay_s: float | jax.Array) -> jax.Array:
    """Steps the leaderboard gives a route: int(0.8 s/m * length + 5 s) / dt (1.0 branch,
    route_scenario.py:260-272)."""
    seconds = jnp.floor(s_per_m * route_length + delay_s)
    return jnp.ceil(seconds / dt - 1e-3).astype(jnp.int32)  # 125 s / 0.1 s = 1250, not 1251


def infraction_score(n_vehicle: jax.Array, n_red: jax.Array, outside_pct: jax.Array,
                     n_pedestrian: jax.Array | int = 0, n_static: jax.Array | int = 0,
                     n_stop: jax.Array | int = 0) -> jax.Array:
    """Product of the leaderboard penalty factors (statistics_manager.py:21-36, 336-376)."""
    p = PENALTY
    return (p["collision_vehicle"] ** n_vehicle * p["collision_pedestrian"] ** n_pedestrian
            * p["collision_static"] ** n_static * p["red_light"] ** n_red
            * p["stop_sign"] ** n_stop * (1.0 - outside_pct / 100.0))
