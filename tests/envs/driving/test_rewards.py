"""CaRL's and Roach's reward terms (envs.driving.rewards) on constructed states, by hand."""

from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import savgol_filter

import mo_rl  # noqa: F401  (XLA flags first)
from envs.driving import make_driving, rewards
from envs.driving.env import _box_off_road_share, pursuit
from tests.envs.driving.test_driving import _place


# ------------------------------------------------------------------ CaRL
def _carl_reference(lon, lat, mag, yaw, dt=0.1):
    """CaRL's compute_comfort_penalty filtering, written out from its code with deques."""
    h = [deque(maxlen=15) for _ in range(4)]
    out = []
    for a, b, c, d in zip(lon, lat, mag, yaw, strict=True):
        for q, val in zip(h, (a, b, c, d), strict=True):
            q.append(val)
        n = len(h[0])
        if n < 8:
            out.append(None)
            continue
        lo = savgol_filter(h[0], polyorder=2, window_length=min(8, n), axis=-1)
        la = savgol_filter(h[1], polyorder=2, window_length=min(8, n), axis=-1)
        ma = savgol_filter(h[2], polyorder=2, window_length=min(8, n), axis=-1)
        jerk = savgol_filter(ma, polyorder=2, deriv=1, delta=dt, window_length=min(15, n))
        ljerk = savgol_filter(lo, polyorder=2, deriv=1, delta=dt, window_length=min(15, n))
        y = np.array(h[3])
        adj = np.zeros_like(y)
        adj[1:] = np.cumsum(np.round(np.diff(y) / (2 * np.pi)))
        y = y - 2 * np.pi * adj
        yr = savgol_filter(y, polyorder=2, deriv=1, delta=dt, window_length=min(5, n))
        ya = savgol_filter(y, polyorder=3, deriv=2, delta=dt, window_length=min(5, n))
        out.append(np.array([lo[-1], la[-1], jerk[-1], ljerk[-1], yr[-1], ya[-1]]))
    return out


def test_comfort_filter_equals_carl_savgol_over_the_history():
    rng = np.random.default_rng(0)
    t = 25
    lon, lat = rng.normal(0, 2, t), rng.normal(0, 2, t)
    mag = np.hypot(lon, lat)
    yaw = np.cumsum(rng.normal(0, 0.1, t))  # unwrapped; our history keeps it unwrapped too
    ref = _carl_reference(lon, lat, mag, np.mod(yaw + np.pi, 2 * np.pi) - np.pi)
    hist = np.zeros((4, rewards.HISTORY), np.float32)
    for i in range(t):
        hist = np.concatenate([hist[:, 1:], np.array([[lon[i]], [lat[i]], [mag[i]],
                                                      [yaw[i]]])], axis=1)
        n = min(i + 1, rewards.HISTORY)
        got = np.asarray(rewards.comfort_filtered(jnp.asarray(hist), jnp.int32(n)))
        broken = np.asarray(rewards.comfort_broken(jnp.asarray(hist), jnp.int32(n)))
        if ref[i] is None:
            assert not broken.any()  # fewer than 8 entries: no comfort check
            continue
        np.testing.assert_allclose(got, ref[i], rtol=2e-4, atol=2e-3)


def test_comfort_broken_limits_by_hand():
    # a constant history: filtered accelerations equal it, derivatives are 0
    hist = np.zeros((4, rewards.HISTORY), np.float32)
    hist[0] = 2.5  # lon. acc above 2.40
    hist[1] = -5.0  # |lat. acc| above 4.89
    hist[2] = 3.0
    broken = np.asarray(rewards.comfort_broken(jnp.asarray(hist), jnp.int32(15)))
    assert broken.tolist() == [True, True, False, False, False, False]
    # ramps: |acc| +1.2 m/s^2 per step (12 m/s^3), lon. acc +0.6 per step (6 m/s^3), yaw
    # +0.1 rad per step (1 rad/s). The yaw filters (odd window 5) return the slopes exactly;
    # CaRL's even window 8 on the accelerations shifts the filtered interior by half a step
    # against its polynomial-fitted edge, so its jerks read 0.826 x the true slope (scipy's
    # behaviour, checked against the deque reference of CaRL's code)
    t = np.arange(15, dtype=np.float32)
    hist[0] = 0.6 * t - 8.4  # newest lon. acc 0: inside [-4.05, 2.40]
    hist[1] = 0.0
    hist[2] = 1.2 * t
    hist[3] = 0.1 * t
    f = np.asarray(rewards.comfort_filtered(jnp.asarray(hist), jnp.int32(15)))
    ref = _carl_reference(hist[0], hist[1], hist[2], hist[3])[-1]
    np.testing.assert_allclose(f, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f[2:4], [0.826 * 12.0, 0.826 * 6.0], rtol=2e-3)
    np.testing.assert_allclose(f[4:], [1.0, 0.0], atol=1e-3)
    broken = np.asarray(rewards.comfort_broken(jnp.asarray(hist), jnp.int32(15)))
    assert broken.tolist() == [False, False, True, True, True, False]  # 9.9 > 8.37, 4.96 > 4.13


def test_penalty_window_lasts_500_steps_including_the_violation():
    rem = jnp.int32(0)
    active = []
    for t in range(520):
        on, rem = rewards.penalty_window(rem, jnp.asarray(t == 3), 500)
        active.append(bool(on))
    assert np.nonzero(active)[0].tolist() == list(range(3, 503))


def test_carl_speed_centring_and_product_by_hand():
    assert float(rewards.carl_speed_factor(jnp.float32(12.0), 10.0)) == pytest.approx(
        1.0 - 2.0 / 2.23)
    assert float(rewards.carl_speed_factor(jnp.float32(20.0), 10.0)) == 0.0
    assert float(rewards.carl_speed_factor(jnp.float32(9.0), 10.0)) == 1.0
    counter, factors = jnp.int32(0), []
    for _ in range(31):  # 0.6 m off the lane centre (> 0.5 m): counter 1..31
        f, counter = rewards.carl_centring(counter, jnp.float32(0.6), jnp.asarray(False))
        factors.append(float(f))
    assert factors[:30] == [1.0] * 30 and factors[30] == 0.5  # counter 31 > 30 steps
    f, c2 = rewards.carl_centring(counter, jnp.float32(0.6), jnp.asarray(True))
    assert float(f) == 1.0 and int(c2) == 31  # frozen inside junctions
    f, counter = rewards.carl_centring(counter, jnp.float32(0.2), jnp.asarray(False))
    assert int(counter) == 30 and float(f) == 1.0  # counts back down one step at a time
    r = rewards.carl_reward(jnp.float32(0.5), 0.8, jnp.asarray(True), jnp.int32(2), 0.5,
                            jnp.asarray(False), jnp.asarray(False))
    assert float(r) == pytest.approx(0.5 * 0.8 * 0.5 * (1 - 0.5 * 2 / 6) * 0.5)
    r = rewards.carl_reward(jnp.float32(0.5), 1.0, jnp.asarray(False), jnp.int32(0), 1.0,
                            jnp.asarray(True), jnp.asarray(True))
    assert float(r) == pytest.approx(-1.0)  # outside the route lanes: no progress; hint -1


def test_carl_collision_step_pays_the_hint_and_ends_the_episode():
    env, params = make_driving("quick", reward="carl", num_vehicles=0)
    params = params._replace(idm_accel=0.0)
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    st = _place(st, params, 12.0)._replace(v=jnp.float32(8.0))
    step = jax.jit(env.step)
    for t in range(30):
        r = step(jax.random.PRNGKey(t), st, pursuit(st, params, jnp.zeros(()), 8.0), params)
        if bool(r.info["infractions"]["collision"]):
            progress = float(r.info["episode_metrics"]["route_completion"]) - 100.0 * float(
                params.routes.cum[0, st.prog] / params.routes.length[0])
            assert bool(r.terminated)
            assert -1.0 <= float(r.reward[0]) <= -1.0 + progress + 1e-5
            return
        st = r.state
    pytest.fail("no collision")


def test_box_off_road_share_and_carl_off_road_end():
    env, params = make_driving("quick", reward="carl", num_vehicles=0)
    m, rb = params.map, params.routes
    heading = jnp.stack([jnp.cos(rb.yaw[0, 5]), jnp.sin(rb.yaw[0, 5])])
    assert float(_box_off_road_share(m, rb.xy[0, 5], heading)) == 0.0
    far = jnp.asarray(m.grid_origin) + 1.0  # the raster margin is 10 m off any lane
    assert float(_box_off_road_share(m, far, heading)) == 1.0
    # the centre 0.3 m beyond the lane edge: at most half the box is off the road
    side = rb.xy[0, 5] + (0.5 * float(m.pt_width[0]) + 0.3) * jnp.stack([-heading[1],
                                                                          heading[0]])
    assert float(_box_off_road_share(m, side, heading)) <= 0.5
    # CaRL's rules end the episode once > 95% of the box is off the drivable area
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    for xy, ends in ((side, False), (far, True)):
        s = st._replace(x=xy[0], y=xy[1], yaw=rb.yaw[0, 5], prog=jnp.int32(5),
                        last_xy=jnp.asarray(xy))
        r = env.step(jax.random.PRNGKey(0), s, jnp.array([0.0, -1.0]), params)
        assert bool(r.info["infractions"]["off_road_box"]) == ends
        assert bool(r.terminated) == ends


# ------------------------------------------------------------------ Roach
def test_roach_desired_speed_by_hand():
    def vdes(rel, cos=1.0, light_d=100.0, light=False):
        return float(rewards.roach_desired_speed(jnp.array([rel], jnp.float32),
                                                 jnp.array([cos]), jnp.array([True]),
                                                 jnp.float32(light_d), jnp.asarray(light)))

    assert vdes([9.0, 0.0]) == pytest.approx(6.0 * 1.0 / 5.0)  # 9 m ahead: ramp from 8 m
    assert vdes([7.0, 0.0]) == 0.0
    assert vdes([9.6, 0.0]) == 6.0  # beyond 9.5 m: no hazard
    assert vdes([6.0, 6.1]) == 6.0  # more than 45 deg off the heading
    assert vdes([9.0, 0.0], cos=np.cos(np.deg2rad(160))) == 6.0  # heading > 150 deg apart
    assert vdes([50.0, 0.0], light_d=7.0, light=True) == pytest.approx(6.0 * 2.0 / 5.0)


def test_roach_lateral_end_rule():
    def done(lat, last):
        return bool(rewards.roach_lateral_done(jnp.float32(lat), jnp.float32(last)))

    assert not done(3.6, 0.0)  # a jump of > 0.8 m in one step: threshold lat + 0.5
    assert done(3.6, 3.5)  # beyond 3.5 m and growing
    assert not done(3.65, 3.7)  # beyond 3.5 m but shrinking
    assert not done(3.0, 2.9)


def test_roach_reward_terms_by_hand():
    r = rewards.roach_reward(jnp.float32(5.0), 2.4, jnp.float32(1.0), jnp.float32(-0.1),
                             jnp.asarray(True), jnp.asarray(True), jnp.asarray(True))
    want = (1.0 - 2.6 / 6.0) - 0.5 - 0.1 - 0.1 + (-1.0 - 5.0)
    assert float(r) == pytest.approx(want, rel=1e-6)
    r = rewards.roach_reward(jnp.float32(5.0), 6.0, jnp.float32(0.0), jnp.float32(0.0),
                             jnp.asarray(False), jnp.asarray(True), jnp.asarray(False))
    assert float(r) == pytest.approx(1.0 - 1.0 / 6.0 - 1.0)  # blocked / lateral end: -1


def test_roach_collision_step_in_the_env():
    env, params = make_driving("quick", reward="roach", num_vehicles=0)
    params = params._replace(idm_accel=0.0)
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    st = _place(st, params, 12.0)._replace(v=jnp.float32(8.0))
    step = jax.jit(env.step)
    for t in range(30):
        r = step(jax.random.PRNGKey(t), st, pursuit(st, params, jnp.zeros(()), 8.0), params)
        if bool(r.info["infractions"]["collision"]):
            assert bool(r.terminated)
            v = float(r.state.v)
            # r_speed <= 1, other shaping terms <= 0, terminal -1 - v
            assert float(r.reward[0]) <= 1.0 - 1.0 - v + 1e-5
            return
        st = r.state
    pytest.fail("no collision")
