"""envs.driving.scoring.score_step on its own: worlds built by hand (no physics), values by
hand. (Its agreement with the simulator's step is tests/envs/carla/test_score.py.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from envs.driving import make_driving, road_users
from envs.driving.scoring import World, score_step


@pytest.fixture(scope="module")
def start():
    env, params = make_driving("quick", reward="vector", max_vehicles=2, num_vehicles=0)
    _, s = env.reset_to_route(jax.random.key(0), params, 0)
    return params, s


def _world(params, s, k: int, v: float = 5.0, veh_xy=None, **hits) -> World:
    """The ego on route point k heading along the route, no vehicle near (unless veh_xy)."""
    rb = params.routes
    xy, yaw = rb.xy[s.route, k], rb.yaw[s.route, k]
    far = jnp.full((2, 2), 1e4)
    vxy = far if veh_xy is None else jnp.stack([veh_xy, far[1]])
    users = road_users.Users(**{f: getattr(s, f) for f in road_users.Users._fields})
    return World(x=xy[0], y=xy[1], yaw=yaw, v=jnp.float32(v), steer=jnp.float32(0.0),
                 yaw_rate=jnp.float32(0.0), veh_xy=vxy,
                 veh_cs=jnp.stack([jnp.cos(yaw), jnp.sin(yaw)])[None].repeat(2, 0),
                 veh_v=jnp.zeros(2), veh_active=jnp.array([veh_xy is not None, False]),
                 lights=jnp.zeros(params.map.light_group.shape[0], jnp.int32), users=users,
                 **hits)


def test_progress_is_route_metres(start):
    params, s = start
    rb = params.routes
    k = 5
    sc = score_step(s, _world(params, s, k), params, "vector", "reward")
    gained = float(rb.cum[s.route, k] - rb.cum[s.route, 0])
    assert gained > 3.0
    assert int(sc.state.prog) == k and int(sc.state.t) == 1
    np.testing.assert_allclose(float(sc.reward[2]), 0.1 * gained, rtol=1e-6)  # progress
    assert float(sc.reward[0]) == 0.0  # safety: no collision, on the road
    rc = 100 * gained / float(rb.length[s.route])
    np.testing.assert_allclose(float(sc.info["episode_metrics"]["route_completion"]), rc,
                               rtol=1e-5)
    assert not bool(sc.terminated) and not bool(sc.truncated)
    # every view is there, the chosen one is the env's reward
    assert set(sc.info["reward_views"]) == {"vector", "carl", "roach"}
    np.testing.assert_array_equal(sc.info["reward_views"]["vector"], sc.reward)


def test_box_overlap_collision_counts_a_vehicle(start):
    params, s = start
    w = _world(params, s, 5)
    hit = score_step(s, w._replace(veh_xy=w.veh_xy.at[0].set(jnp.stack([w.x, w.y])),
                                   veh_active=jnp.array([True, False])),
                     params, "vector", "reward")
    assert bool(hit.info["infractions"]["collision_counted"])
    assert int(hit.state.n_collision) == 1
    assert float(hit.reward[0]) <= -1.0
    np.testing.assert_allclose(float(hit.info["episode_metrics"]["infraction_score"]), 0.6)
    # the same car, inactive: nothing
    miss = score_step(s, w._replace(veh_xy=w.veh_xy.at[0].set(jnp.stack([w.x, w.y]))),
                      params, "vector", "reward")
    assert not bool(miss.info["infractions"]["collision"])


def test_sensor_contact_replaces_the_box_test_and_rule_sets_differ(start):
    params, s = start
    w = _world(params, s, 5, hit_vehicle=jnp.zeros(2, bool), hit_static=jnp.array([True]))
    vec = score_step(s, w, params, "vector", "reward")
    lb = score_step(s, w, params, "vector", "leaderboard")
    for sc in (vec, lb):
        assert bool(sc.info["infractions"]["collision_static"])
        assert int(sc.state.n_static_collision) == 1 and int(sc.state.n_collision) == 0
        np.testing.assert_allclose(float(sc.info["episode_metrics"]["infraction_score"]),
                                   0.65, rtol=1e-6)
    assert bool(vec.terminated)  # the vector rules end on a collision
    assert not bool(lb.terminated)  # the leaderboard's are penalties only
    # a sensor that saw nothing overrules an overlapping box
    w2 = w._replace(veh_xy=w.veh_xy.at[0].set(jnp.stack([w.x, w.y])),
                    veh_active=jnp.array([True, False]), hit_static=None)
    assert not bool(score_step(s, w2, params, "vector", "reward").info["infractions"]["collision"])


def test_unknown_rule_set_is_an_error(start):
    params, s = start
    with pytest.raises(ValueError, match="rule set"):
        score_step(s, _world(params, s, 1), params, "vector", "nascar")
