"""CarlaEnv without a server: gymnasium's checker, driving a Town01 route through a fake
session, a server that dies mid-episode, and the unreachable-server error."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from envs.carla.env import CarlaEnv
from envs.carla.server import CarlaUnreachableError, connect
from tests.envs.carla.fakes import ROUTES, TOWN01, FakeServer

needs_town01 = pytest.mark.skipif(TOWN01 is None or ROUTES is None,
                                  reason="Town01.xodr / routes_town01.xml not found "
                                  "(MO_RL_CARLA_DIR or shared/carla)")


def _free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_within_the_timeout_naming_host_port_and_how():
    port = _free_port()
    t0 = time.monotonic()
    with pytest.raises(CarlaUnreachableError) as e:
        connect("127.0.0.1", port, timeout=2.0)
    assert time.monotonic() - t0 < 2.0
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "carla_server.py" in msg and "CarlaUE4.sh" in msg


def test_unreachable_server_through_the_env():
    port = _free_port()
    env = CarlaEnv(host="127.0.0.1", port=port, timeout=1.0, reconnect_tries=1)
    t0 = time.monotonic()
    with pytest.raises(CarlaUnreachableError, match=f"127.0.0.1:{port}"):
        env.reset(seed=0)
    assert time.monotonic() - t0 < 1.5


@needs_town01
def test_gymnasium_checker_on_a_fake_server():
    from gymnasium.utils.env_checker import check_env

    env = CarlaEnv(connect=FakeServer(), action_type="discrete", max_vehicles=4)
    check_env(env, skip_render_check=True)


@needs_town01
def test_drives_a_route_and_reports_the_simulators_metrics():
    env = CarlaEnv(connect=FakeServer(), action_type="discrete", episode_end="leaderboard",
                   max_vehicles=4)
    obs, info = env.reset(seed=0, options={"route": 0})
    assert obs.shape == env.observation_space.shape and info["route"] == 0
    straight = 2 * 3 + 1  # target speed 1.0 x limit, no lateral offset
    for _ in range(60):
        obs, reward, _term, _trunc, info = env.step(straight)
        assert env.observation_space.contains(obs)
        assert reward.shape == (4,) and not info["server_lost"]
    m = info["episode_metrics"]
    assert set(env.metric_names) == set(m)
    assert 1.0 < m["route_completion"] < 100.0  # ~6 s of driving on a ~1 km route
    assert m["collision"] == 0 and m["server_lost"] == 0
    assert reward[2] > 0  # progress


@needs_town01
def test_server_lost_mid_episode_is_truncated_marked_and_reconnected():
    server = FakeServer(die_at=5)
    env = CarlaEnv(connect=server, action_type="discrete", max_vehicles=4)
    obs, _ = env.reset(seed=1, options={"route": 0})
    for _ in range(4):
        obs, *_ = env.step(7)
    last = obs.copy()
    obs, reward, term, trunc, info = env.step(7)  # tick 5: the server is gone
    assert trunc and not term and info["server_lost"]
    assert info["episode_metrics"]["server_lost"] == 1.0
    np.testing.assert_array_equal(reward, 0.0)  # nothing invented
    np.testing.assert_array_equal(obs, last)  # the last REAL observation
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(7)
    obs, info = env.reset(seed=2, options={"route": 0})  # reconnects
    assert len(server.sessions) == 2 and env.lost_episodes == 1
    obs, reward, term, trunc, info = env.step(7)
    assert not info["server_lost"] and info["episode_metrics"]["server_lost"] == 0.0


@needs_town01
def test_observations_draw_vehicles_at_their_exact_pose():
    """A car 10 m ahead, 1 m to the left of the ego's lane centre, turned 20 deg left: the
    observation shows that pose, not its lane point's (lateral 0, heading of the lane)."""
    from envs.carla.convert import ActorState
    from envs.driving import observe

    # route 0 starts at (338.70, 226.75) heading -90.02 deg; its left is +x
    car = ActorState(101, 339.70, 216.75, -70.0, 0.0, 0.0, "vehicle.audi.tt")
    env = CarlaEnv(connect=FakeServer(vehicles=(car,)), action_type="discrete", max_vehicles=4)
    obs, _ = env.reset(seed=0, options={"route": 0})
    slot = obs[33:40]  # first car slot of the vector layout (envs.driving.observe)
    assert slot[6] == 1.0
    s = env.state  # the ego at the route's first point
    yaw = float(s.yaw)
    d = np.array([car.x - float(s.x), car.y - float(s.y)])
    lon_lat = [d[0] * np.cos(yaw) + d[1] * np.sin(yaw), d[1] * np.cos(yaw) - d[0] * np.sin(yaw)]
    assert lon_lat[1] > 0.5  # the car is to the left of the ego
    np.testing.assert_allclose(slot[:2] * 30, lon_lat, atol=1e-3)
    rel = np.deg2rad(-70.0) - yaw
    np.testing.assert_allclose(slot[4:6], [np.cos(rel), np.sin(rel)], atol=1e-4)
    # the lane-point pose of the same state (what the simulator draws) is visibly different
    lane = np.asarray(observe.vector_obs(env.state, env.params, env.sim.num_obs_vehicles,
                                         np.zeros(env.conv.num_lights, np.int32)))[33:40]
    assert abs(lane[1] * 30) < 0.5 and abs(lane[5]) < 0.05
    # BEV: the same car, drawn from the same exact pose
    bev_env = CarlaEnv(connect=FakeServer(vehicles=(car,)), action_type="discrete",
                       max_vehicles=4, obs_type="bev")
    bev, _ = bev_env.reset(seed=0, options={"route": 0})
    o = bev_env.conv.observed(bev_env.session.frame(), None)
    want = observe.bev_obs(bev_env.state, bev_env.params, bev_env.sim.bev_view,
                           np.asarray(o.lights), (np.asarray(o.veh_xy), np.asarray(o.veh_cs)))
    np.testing.assert_array_equal(bev["bev"], np.asarray(want))
    at_lane = observe.bev_obs(bev_env.state, bev_env.params, bev_env.sim.bev_view,
                              np.asarray(o.lights))
    assert not np.array_equal(bev["bev"], np.asarray(at_lane))  # the pose is visible
    cars = observe.BEV_CHANNELS.index("vehicles")
    assert (bev["bev"][..., cars] > 0).any()


@needs_town01
def test_value_inputs_as_in_the_simulator():
    """make_driving(value_inputs=True) (the CaRL study's critic inputs): CarlaEnv's observation
    carries them too, computed from its state as the simulator does."""
    from envs.driving import value_inputs

    env = CarlaEnv(connect=FakeServer(), action_type="discrete", max_vehicles=4,
                   episode_end="leaderboard", value_inputs=True)
    obs, _ = env.reset(seed=0, options={"route": 0})
    for _ in range(3):
        obs, *_ = env.step(7)
    assert env.observation_space.contains(obs)
    want = value_inputs.value_measurements(env.state, env.params, "leaderboard")
    np.testing.assert_array_equal(obs[value_inputs.VALUE_INPUTS], np.asarray(want))
