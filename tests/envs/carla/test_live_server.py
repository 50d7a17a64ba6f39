"""One short route on a LIVE CARLA server (skipped unless CARLA_HOST is set).

    CARLA_HOST=localhost CARLA_PORT=2000 pytest tests/envs/carla/test_live_server.py

Drives the first 40 m of Town01 route 0 with the simulator's pursuit controller
(discrete meta-action: the speed limit, no lateral offset) under the leaderboard
rules, with light background traffic, and checks the episode metrics.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)

HOST = os.environ.get("CARLA_HOST")
pytestmark = pytest.mark.skipif(
    not HOST, reason="needs a running CARLA 0.9.15/0.9.16 server: set CARLA_HOST (and "
    "CARLA_PORT, default 2000; start one with scripts/carla_server.py)")


def test_drives_a_short_route_on_a_live_server():
    from envs.carla.env import CarlaEnv

    env = CarlaEnv(host=HOST, port=int(os.environ.get("CARLA_PORT", 2000)),
                   tm_port=int(os.environ.get("CARLA_TM_PORT", 8000)), timeout=30.0,
                   action_type="discrete", episode_end="leaderboard", num_vehicles=5,
                   num_walkers=5)
    try:
        obs, info = env.reset(seed=0, options={"route": 0})
        assert env.observation_space.contains(obs)
        length = float(env.params.routes.length[0])
        go = 2 * 3 + 1  # target speed = the speed limit, no lateral offset
        m = info
        for _ in range(600):  # 60 s
            obs, reward, term, trunc, info = env.step(go)
            assert not info["server_lost"], info.get("error")
            assert np.all(np.isfinite(reward)) and env.observation_space.contains(obs)
            m = info["episode_metrics"]
            if term or trunc or m["route_completion"] * length / 100 > 40.0:
                break
        else:
            pytest.fail("the ego did not drive 40 m in 60 s")
        assert set(m) == set(env.metric_names)
        assert 40.0 <= m["route_completion"] * length / 100 < 80.0
        assert m["deviation"] == 0.0 and m["blocked"] == 0.0
        assert 0.0 <= m["outside_lanes"] < 20.0  # a lane-following controller
        assert 0.0 < m["driving_score"] <= m["route_completion"]
        np.testing.assert_allclose(m["driving_score"],
                                   m["route_completion"] * m["infraction_score"], rtol=1e-4)
    finally:
        env.close()
