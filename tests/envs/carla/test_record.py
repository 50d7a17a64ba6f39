"""Recorded CARLA actor states (plain numbers, written by hand) -> observations, rewards,
rules and metrics through the simulator's functions, on Town01 built by carla.Map from
its OpenDRIVE (no server). Also: traffic-light actors -> map lights, and the route bank
the CARLA env builds from a server's OpenDRIVE."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from envs.carla.convert import ActorState, Frame, WorldConverter, as_jnp, light_index
from envs.carla.score import step_state
from envs.driving import make_driving, observe, sim
from tests.envs.carla.fakes import ROUTES, TOWN01

pytestmark = pytest.mark.skipif(TOWN01 is None or ROUTES is None,
                                reason="Town01.xodr / routes_town01.xml not found "
                                "(MO_RL_CARLA_DIR or shared/carla)")

# Route 0 of routes_town01.xml starts at (338.70, 226.75) heading 270 deg (-y in CARLA's
# frame). A hand-written recording of its first metres: the ego, one car 10 m ahead on
# the same lane at 3 m/s, a walker by the road and the contacts the collision sensor
# reported (actor ids as a server would give them).
EGO, CAR, WALKER = 1, 101, 201
RECORDING = [
    Frame(ego=ActorState(EGO, 338.70, 226.75, -90.02),
          vehicles=(ActorState(CAR, 338.70, 216.75, -90.0, 0.0, -3.0, "vehicle.audi.tt"),),
          walkers=(ActorState(WALKER, 345.0, 212.0, 180.0, -1.2, 0.0,
                              "walker.pedestrian.0001"),)),
    Frame(ego=ActorState(EGO, 338.70, 225.75, -90.02, 0.0, -10.0),
          vehicles=(ActorState(CAR, 338.70, 216.45, -90.0, 0.0, -3.0, "vehicle.audi.tt"),),
          collisions=((CAR, "vehicle.audi.tt"),)),  # rear-ends the car (counted)
    Frame(ego=ActorState(EGO, 338.70, 224.75, -90.02, 0.0, -10.0),
          vehicles=(ActorState(CAR, 338.70, 216.15, -90.0, 0.0, -3.0, "vehicle.audi.tt"),),
          collisions=((CAR, "vehicle.audi.tt"),)),  # same car within 5 s: not again
    Frame(ego=ActorState(EGO, 338.70, 219.75, -90.02, 0.0, -10.0),
          collisions=((WALKER, "walker.pedestrian.0001"),)),  # 6 m on: a pedestrian
    Frame(ego=ActorState(EGO, 338.70, 213.75, -90.02, 0.0, -10.0),
          collisions=((9999, "static.prop.streetbarrier"),)),  # and a static object
]


@pytest.fixture(scope="module")
def town01():
    env, params = make_driving("town01", reward="vector", action_type="discrete",
                               max_vehicles=4, num_walkers=2, episode_end="leaderboard")
    return env, params


def _run(env, params, frames, light_of=None, route=0):
    conv = WorldConverter(params.map, params.routes, light_of or {}, env.max_vehicles,
                          env.max_walkers)
    step = jax.jit(lambda s, o: step_state(env, s, o, params))
    _, s = env.reset_to_route(jax.random.key(0), params, route)
    o = as_jnp(conv.observed(frames[0], None))
    s = s._replace(x=o.x, y=o.y, yaw=o.yaw, v=o.v, veh_pt=o.veh_pt, veh_u=o.veh_u,
                   veh_v=o.veh_v, veh_active=o.veh_active, last_xy=np.array([o.x, o.y]),
                   **conv.users(frames[0], route, s)._asdict())
    out = [(s, observe.vector_obs(s, params, env.num_obs_vehicles, o.lights), None)]
    for f in frames[1:]:
        o = as_jnp(conv.observed(f, float(s.yaw)))
        o = o._replace(users=conv.users(f, route, s))
        s, reward, _term, _trunc, info = step(s, o)
        out.append((s, reward, info))
    return out


def test_recorded_frames_give_the_simulators_observation(town01):
    env, params = town01
    s0, obs, _ = _run(env, params, RECORDING[:1])[0]
    cars = np.asarray(obs[33:33 + 7])  # first car slot (vector layout: envs.driving.observe)
    assert cars[6] == 1.0  # valid
    np.testing.assert_allclose(cars[0] * 30, 10.0, atol=0.3)  # 10 m ahead
    np.testing.assert_allclose(cars[1] * 30, 0.0, atol=0.5)  # same lane
    np.testing.assert_allclose(cars[2] * 10, 3.0, atol=1e-3)  # closing speed 3 m/s
    np.testing.assert_allclose(cars[4:6], [1.0, 0.0], atol=1e-3)  # same heading
    assert np.all(np.asarray(obs[33 + 7:33 + 14]) == 0.0)  # one car only
    ped = np.asarray(s0.ped_xy)[0]
    np.testing.assert_allclose(ped, [345.0, 212.0], atol=1e-4)
    assert bool(s0.ped_active[0]) and not bool(s0.ped_active[1])
    np.testing.assert_allclose(float(s0.ped_v[0]), 1.2, atol=1e-6)


def test_recorded_collisions_follow_the_leaderboard_filter_and_penalties(town01):
    env, params = town01
    out = _run(env, params, RECORDING)
    counts = [(int(s.n_collision), int(s.n_ped_collision), int(s.n_static_collision))
              for s, _, _ in out[1:]]
    # vehicle; the same vehicle again (not counted); a walker 6 m on; a static object
    assert counts == [(1, 0, 0), (1, 0, 0), (1, 1, 0), (1, 1, 1)]
    assert all(bool(i["infractions"]["collision"]) for _, _, i in out[1:])
    s = out[-1][0]
    assert int(s.n_collision) == 1
    assert int(s.n_ped_collision) == 1 and int(s.n_static_collision) == 1
    _, reward, info = out[1]
    ttc = float(info["infractions"]["ttc"])  # the car 9 m ahead at a 7 m/s closing speed
    np.testing.assert_allclose(float(reward[0]), -1.0 - 0.1 * ttc)  # vector reward: safety
    m = {k: float(v) for k, v in out[-1][2]["episode_metrics"].items()}
    expected = 0.6 * 0.5 * 0.65  # leaderboard: vehicle, pedestrian, static
    outside = m["outside_lanes"] / 100
    np.testing.assert_allclose(m["infraction_score"], expected * (1 - outside), rtol=1e-5)
    assert m["collision"] == 1.0 and m["route_completion"] > 0


def test_recorded_red_light_run_and_route_completion(town01):
    env, params = town01
    rb = params.routes
    r = 0
    stop = int(rb.next_stop[r, 1])
    light = int(rb.stop_light[r, stop])
    assert light >= 0
    xy, yaw = np.asarray(rb.xy[r]), np.asarray(rb.yaw[r])
    # the ego drives the route 1 point (~1 m) per tick through the first stop line; the
    # light's actor (id 301) shows red
    frames = [Frame(ego=ActorState(EGO, *xy[i], float(np.rad2deg(yaw[i])),
                                   *(10.0 * np.array([np.cos(yaw[i]), np.sin(yaw[i])]))),
                    lights={301: "Red"}) for i in range(stop + 6)]
    out = _run(env, params, frames, light_of={301: light})
    red = [bool(i["infractions"]["red_light"]) for _, _, i in out[1:]]
    assert sum(red) == 1 and red.index(True) + 1 == stop  # the tick that crosses the line
    m = out[-1][2]["episode_metrics"]
    rc = 100 * float(rb.cum[r, stop + 5]) / float(rb.length[r])
    np.testing.assert_allclose(float(m["route_completion"]), rc, rtol=1e-4)
    assert float(m["red_light"]) == 1.0
    # green: no infraction
    green = [replace(f, lights={301: "Green"}) for f in frames]
    out = _run(env, params, green, light_of={301: light})
    assert not any(bool(i["infractions"]["red_light"]) for _, _, i in out[1:])


def test_recorded_wrong_lane_counts_outside_route_lanes(town01):
    env, params = town01
    rb = params.routes
    xy, yaw = np.asarray(rb.xy[0]), np.asarray(rb.yaw[0])
    left = np.array([-np.sin(yaw[0]), np.cos(yaw[0])])
    frames = []
    for i in range(16):  # 4 ticks in the lane, then 12 on the opposite lane (4 m left)
        p = xy[i] + (4.0 * left if i >= 4 else 0.0)
        frames.append(Frame(ego=ActorState(EGO, *p, float(np.rad2deg(yaw[i])), 0.0, -10.0)))
    out = _run(env, params, frames)
    bad = [bool(i["infractions"]["outside_lanes"]) for _, _, i in out[1:]]
    assert not any(bad[:3]) and all(bad[4:])
    m = out[-1][2]["episode_metrics"]
    assert 60.0 < float(m["outside_lanes"]) < 90.0  # ~11 of ~15 m driven


def test_carla_traffic_lights_map_to_the_lights_of_their_connectors(town01):
    """Every Town01 traffic-light reference on a driving lane (what a light actor's stop
    waypoints are) maps to a map light, and that light controls a junction connector
    starting within 8 m of the waypoint."""
    import carla

    _, params = town01
    m = params.map
    cmap = carla.Map("Town01", Path(TOWN01).read_text())
    lane_light = np.asarray(m.lane_light)
    starts = np.asarray(m.pt_xy)[np.asarray(m.lane_start)]
    found = set()
    for lm in cmap.get_all_landmarks_of_type("1000001"):
        for lo, hi in lm.get_lane_validities():
            for lid in range(lo, hi + 1):
                wp = cmap.get_waypoint_xodr(lm.road_id, lid, lm.s) if lid else None
                if wp is None or wp.lane_type != carla.LaneType.Driving:
                    continue
                x, y = wp.transform.location.x, wp.transform.location.y
                i = light_index(m, x, y, np.deg2rad(wp.transform.rotation.yaw))
                assert i >= 0, (lm.id, lm.road_id, lid)
                near = np.hypot(starts[:, 0] - x, starts[:, 1] - y) < 8.0
                assert np.any(near & (lane_light == i)), (lm.id, i)
                found.add(i)
    assert len(found) == int(np.asarray(m.light_group).shape[0])  # every map light


def test_the_env_plans_the_simulators_routes_on_the_servers_opendrive(town01):
    """CarlaEnv builds its map and route bank from the OpenDRIVE a server sends (here the
    fake one's Town01 text) with envs.driving's reader, parser and planner: the same bank
    as the simulator's town01 preset, through every sparse route waypoint."""
    from envs.carla.env import CarlaEnv
    from envs.driving.routes import parse_route_xml
    from tests.envs.carla.fakes import FakeServer

    env = CarlaEnv(connect=FakeServer(), action_type="discrete", max_vehicles=4,
                   episode_end="leaderboard", num_walkers=2)
    env.reset(seed=0)
    _, params = town01
    for a, b in zip(jax.tree.leaves(env.params.routes), jax.tree.leaves(params.routes),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rb = env.params.routes
    for r, wps in enumerate(parse_route_xml(str(ROUTES))):
        pts = np.asarray(rb.xy[r, : int(rb.num[r])])
        d = np.linalg.norm(pts[None] - wps[:, None, :2], axis=-1).min(1)
        assert d.max() < 2.5, (r, d.max())
    assert sim.RED == 2  # the light states the converter writes


def test_vehicle_slots_go_to_the_nearest_and_stay_stable(town01):
    _, params = town01
    conv = WorldConverter(params.map, params.routes, {}, 2)
    ego = ActorState(EGO, 338.70, 226.75, -90.0)

    def car(i, dy):
        return ActorState(i, 338.70, 226.75 - dy, -90.0, 0.0, 0.0, "vehicle.audi.tt")

    conv.observed(Frame(ego=ego, vehicles=(car(7, 30), car(5, 10), car(6, 20))), None)
    assert conv.slots == {5: 0, 6: 1} and conv.dropped == 1  # the two nearest
    conv.observed(Frame(ego=ego, vehicles=(car(7, 15), car(5, 12), car(6, 40))), None)
    assert conv.slots == {5: 0, 7: 1}  # 5 keeps its slot, 7 takes the one 6 left
    o = conv.observed(Frame(ego=ego, vehicles=(car(7, 15), car(5, 12)),
                            collisions=((6, "vehicle.audi.tt"),)), None)
    assert o.hit_vehicle.tolist() == [True, False]  # a car without a slot still counts
