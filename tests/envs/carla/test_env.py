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
