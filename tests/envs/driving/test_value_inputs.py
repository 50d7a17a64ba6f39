"""CaRL's 11 value-only measurements (envs.driving.value_inputs), checked by hand on
constructed states, and the env option that adds them (off by default)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.driving import make_driving, value_inputs
from mo_rl.env import VALUE_INPUTS


@pytest.fixture(scope="module")
def quick():
    return make_driving("quick", reward="carl", num_vehicles=0, max_vehicles=2)


def _state(env, params):
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 3)
    return st._replace(t=jnp.int32(300), still=jnp.int32(45), prog=jnp.int32(40),
                       ttc_ticks=jnp.int32(250),
                       comfort_ticks=jnp.array([500, 0, 100, 0, 0, 50], jnp.int32),
                       lane_counter=jnp.int32(45))


def test_eleven_measurements_by_hand(quick):
    env, params = quick
    st = _state(env, params)
    length = float(params.routes.length[3])
    left = (length - float(params.routes.cum[3, 40])) / 100.0
    # carl rules on the quick preset: the 2000-step cap comes before CaRL's 1200 s;
    # blocked after 90 s; 45 still steps = 4.5 s
    expect = [(2000 - 300) / 2000, (90 - 4.5) / 90, left, 250 / 500,
              1.0, 0.0, 0.2, 0.0, 0.0, 0.1, 45 / 30]
    got = value_inputs.value_measurements(st, params, "carl")
    assert got.shape == (11,) and got.dtype == jnp.float32 and len(value_inputs.NAMES) == 11
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    # leaderboard rules: route timeout int(0.8 s/m * length + 5 s) / 0.1 s, blocked 180 s
    timeout_steps = np.floor(0.8 * length + 5.0) / 0.1
    lb = value_inputs.value_measurements(st, params, "leaderboard")
    np.testing.assert_allclose(lb[:2], [(timeout_steps - 300) / timeout_steps, (180 - 4.5) / 180],
                               rtol=1e-5)
    np.testing.assert_allclose(lb[2:], got[2:], rtol=1e-6)
    # CaRL's own eval_time (1200 s = 12000 steps) where it comes before the cap
    long = params._replace(max_steps=20000)
    np.testing.assert_allclose(value_inputs.value_measurements(st, long, "carl")[0],
                               (12000 - 300) / 12000, rtol=1e-6)
    # the other rule sets: the cap only
    np.testing.assert_allclose(value_inputs.value_measurements(st, long, "roach")[0],
                               (20000 - 300) / 20000, rtol=1e-6)


def test_start_of_an_episode(quick):
    env, params = quick
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 3)
    got = np.asarray(value_inputs.value_measurements(st, params, "carl"))
    np.testing.assert_allclose(got[:3], [1.0, 1.0, float(params.routes.length[3]) / 100.0],
                               rtol=1e-6)
    np.testing.assert_array_equal(got[3:], 0.0)


def test_option_is_off_by_default_and_adds_the_key_when_on(quick):
    env, params = quick
    obs, _ = env.reset(jax.random.PRNGKey(0), params)
    assert isinstance(obs, jax.Array) and not env.value_inputs  # unchanged by default
    for obs_type in ("vector", "bev"):
        env_v, p = make_driving("quick", reward="carl", obs_type=obs_type, value_inputs=True,
                                num_vehicles=0, max_vehicles=2)
        base, _ = make_driving("quick", reward="carl", obs_type=obs_type, num_vehicles=0,
                               max_vehicles=2)
        key = jax.random.PRNGKey(1)
        o, st = env_v.reset(key, p)
        o_base, _ = base.reset(key, p)
        assert env_v.observation_space(p).contains(o)
        np.testing.assert_array_equal(o[VALUE_INPUTS],
                                      value_inputs.value_measurements(st, p, "carl"))
        # the rest of the observation is the plain env's
        rest = {k: v for k, v in o.items() if k != VALUE_INPUTS}
        plain = o_base if isinstance(o_base, dict) else {value_inputs.VECTOR_KEY: o_base}
        assert set(rest) == set(plain)
        for k in plain:
            np.testing.assert_array_equal(rest[k], plain[k])
        # steps and route resets carry it too (every observation goes through observe)
        r = jax.jit(env_v.step)(key, st, jnp.array([0.0, 0.5]), p)
        assert float(r.obs[VALUE_INPUTS][0]) == pytest.approx((2000 - 1) / 2000)
        assert VALUE_INPUTS in env_v.reset_to_route(key, p, 0)[0]


def test_rules_in_force_follow_the_env():
    """An env on leaderboard rules reports the leaderboard's limits."""
    env, params = make_driving("quick", reward="carl", episode_end="leaderboard",
                               value_inputs=True, num_vehicles=0, max_vehicles=2)
    st = _state(env, params)
    obs = env.observe(st, params)
    np.testing.assert_allclose(obs[VALUE_INPUTS],
                               value_inputs.value_measurements(st, params, "leaderboard"))
    assert float(obs[VALUE_INPUTS][1]) == pytest.approx((180 - 4.5) / 180)
