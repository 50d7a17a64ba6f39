"""Leaderboard rules and metrics (envs.driving.rules) on constructed states, values by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from envs.driving import expert_policy, make_driving, rules
from envs.driving.env import pursuit
from envs.driving.roadmap import PT_COLUMNS
from tests.envs.driving.test_driving import _before_red_light, _place, needs_town01, rollout


def test_infraction_score_by_hand():
    # 2 vehicle collisions, 1 red light, 1 stop sign, 1 pedestrian, 1 static, 12.5% outside
    got = float(rules.infraction_score(2, 1, 12.5, n_pedestrian=1, n_static=1, n_stop=1))
    assert got == pytest.approx(0.6 * 0.6 * 0.7 * 0.8 * 0.5 * 0.65 * 0.875, rel=1e-6)
    assert float(rules.infraction_score(0, 0, 0.0)) == 1.0


def test_route_timeout_from_length():
    # leaderboard-1.0: int(0.8 * 150 + 5) = 125 s -> 1250 steps at 10 Hz; int() floors 0.8 * 151
    assert int(rules.route_timeout_steps(jnp.float32(150.0), 0.1, 0.8, 5.0)) == 1250
    assert int(rules.route_timeout_steps(jnp.float32(151.0), 0.1, 0.8, 5.0)) == 1250


def test_collision_filter_counts_like_collision_test():
    s = rules.initial_state(0)
    xy = jnp.zeros(2)
    hit0 = jnp.array([True, False])
    hit1 = jnp.array([False, True])
    n = 0
    for t in range(1, 4):  # three steps touching vehicle 0: one collision
        new, s = rules.count_collision(s, hit0, jnp.int32(t), 0.1, xy, jnp.float32(3.0))
        n += int(new)
    assert n == 1
    # another vehicle within 5 m of the counted spot: filtered by COLLISION_RADIUS
    new, s = rules.count_collision(s, hit1, jnp.int32(4), 0.1, xy + 4.0 / np.sqrt(2), 3.0)
    assert not bool(new)
    # 6 m away: counted (a new id)
    new, s = rules.count_collision(s, hit1, jnp.int32(5), 0.1, jnp.array([6.0, 0.0]), 3.0)
    assert bool(new)
    # vehicle 1 again after > 5 s and > 5 m: counted again; below 0.1 m/s: never
    new, _ = rules.count_collision(s, hit1, jnp.int32(5 + 51), 0.1, jnp.array([20.0, 0.0]), 3.0)
    assert bool(new)
    new, _ = rules.count_collision(s, hit1, jnp.int32(5 + 51), 0.1, jnp.array([20.0, 0.0]), 0.05)
    assert not bool(new)
    # same vehicle within 5 s but far away: still the same collision id
    new, _ = rules.count_collision(s, hit1, jnp.int32(5 + 40), 0.1, jnp.array([20.0, 0.0]), 3.0)
    assert not bool(new)


def _pt_tab(rows):
    """A tiny lane-point table: rows of (lane, heading deg, junction)."""
    cols = {c: i for i, c in enumerate(PT_COLUMNS)}
    tab = np.zeros((len(rows), len(PT_COLUMNS)), np.float32)
    for i, (lane, deg, junc) in enumerate(rows):
        tab[i, cols["lane"]] = lane
        tab[i, cols["cos"]] = np.cos(np.deg2rad(deg))
        tab[i, cols["sin"]] = np.sin(np.deg2rad(deg))
        tab[i, cols["junction"]] = junc
        tab[i, cols["width"]] = 4.0
    return jnp.asarray(tab)


def test_outside_route_lanes_wrong_lane_and_off_lane_distances():
    # points: 0 own lane (east), 1 opposite lane (west), 2 junction connector, 3 own lane again
    tab = _pt_tab([(0, 0.0, -1), (1, 180.0, -1), (2, 0.0, 5), (3, 0.0, -1)])
    east = jnp.array([1.0, 0.0])
    s = rules.initial_state(0)
    seq = [  # (nearest point, lateral offset, metres of route passed, expected bad)
        (0, 0.0, 2.0, False),  # own lane
        (0, 2.6, 1.0, True),  # > 4 / 2 + 0.5 m off the lane centre
        (1, 0.0, 3.0, True),  # lane heading jumped 180 deg: wrong lane
        (1, 0.0, 1.0, True),  # stays wrong
        (0, 0.0, 2.0, False),  # back: toggled off
        (2, 0.0, 1.0, False),  # junction: never wrong
        (1, 0.0, 2.0, True),  # leaving the junction onto a lane heading 180 deg from the ego
        (3, 0.0, 3.0, False),  # lane 1 (west) -> lane 3 (east): 180 deg again, toggled off
    ]
    for pt, lat, gained, want in seq:
        bad, s = rules.outside_route_lanes(s, tab, jnp.int32(pt), jnp.float32(lat),
                                           jnp.float32(4.0), east, jnp.float32(gained))
        assert bool(bad) == want, (pt, lat)
    assert float(s.driven) == pytest.approx(15.0)
    assert float(s.outside) == pytest.approx(1.0 + 3.0 + 1.0 + 2.0)
    assert float(rules.outside_percent(s)) == pytest.approx(100 * 7.0 / 15.0, rel=1e-6)


def test_in_route_test_distance_and_share():
    s = rules.initial_state(0)
    failed, s = rules.in_route_failed(s, jnp.float32(29.9), 1.0, 100.0, 30.0, 0.3)
    assert not bool(failed)
    failed, _ = rules.in_route_failed(s, jnp.float32(30.0), 1.0, 100.0, 30.0, 0.3)
    assert bool(failed)
    s = rules.initial_state(0)
    for _ in range(30):  # 30 m driven 16 m off the route: 30% is not yet > 30%
        failed, s = rules.in_route_failed(s, jnp.float32(16.0), 1.0, 100.0, 30.0, 0.3)
    assert not bool(failed) and float(s.off_safe) == pytest.approx(30.0)
    failed, s = rules.in_route_failed(s, jnp.float32(16.0), 1.0, 100.0, 30.0, 0.3)
    assert bool(failed)


def _run(env, params, st, policy, steps):
    """Step `policy(state)` (or a constant action) until the episode ends."""
    step = jax.jit(env.step)
    out = []
    for t in range(steps):
        a = policy(st) if callable(policy) else policy
        r = step(jax.random.PRNGKey(t), st, a, params)
        st = r.state
        out.append(r)
        if bool(r.terminated | r.truncated):
            break
    return out


def test_leaderboard_collision_is_a_penalty_not_an_episode_end():
    env, params = make_driving("quick", num_vehicles=0, episode_end="leaderboard")
    params = params._replace(idm_accel=0.0)
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    st = _place(st, params, 12.0)._replace(v=jnp.float32(8.0))
    # pure pursuit on the route at 8 m/s: stays in its lane and drives through the car
    out = _run(env, params, st, lambda s: pursuit(s, params, jnp.zeros(()), 8.0), 40)
    contact = [bool(r.info["infractions"]["collision"]) for r in out]
    assert sum(contact) >= 3 and len(out) == 40  # drove through it, the episode went on
    assert not any(bool(r.terminated) for r in out)
    m = out[-1].info["episode_metrics"]
    assert float(m["collision"]) == 1.0 and int(out[-1].state.n_collision) == 1
    assert float(m["infraction_score"]) == pytest.approx(0.6)
    assert float(m["driving_score"]) == pytest.approx(0.6 * float(m["route_completion"]), 1e-5)


def test_leaderboard_red_light_is_a_penalty_not_an_episode_end():
    env, params = make_driving("quick", num_vehicles=0, episode_end="leaderboard")
    st, red_params, _, _ = _before_red_light(env, params)
    out = _run(env, red_params, st, jnp.array([0.0, 0.3]), 40)
    assert sum(bool(r.info["infractions"]["red_light"]) for r in out) == 1
    assert not any(bool(r.terminated) for r in out)
    assert float(out[-1].info["episode_metrics"]["infraction_score"]) == pytest.approx(0.7)


def test_leaderboard_timeout_truncates_without_penalty_and_blocked_at_180s():
    env, params = make_driving("quick", num_vehicles=0, episode_end="leaderboard")
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    length = float(params.routes.length[0])
    limit = int(np.ceil(np.floor(0.8 * length + 5.0) / 0.1))

    def stand(p, n):
        def body(s, k):
            r = env.step(k, s, jnp.array([0.0, -1.0]), p)
            return r.state, (r.terminated, r.truncated, r.info["episode_metrics"])
        return jax.lax.scan(body, st, jax.random.split(jax.random.PRNGKey(1), n))[1]

    term, trunc, met = jax.jit(stand, static_argnums=1)(params, limit)
    assert not np.asarray(term).any() and np.nonzero(np.asarray(trunc))[0].tolist() == [limit - 1]
    assert float(met["timeout"][-1]) == 1.0 and float(met["infraction_score"][-1]) == 1.0
    assert float(met["success"][-1]) == 0.0
    # blocked: strictly more than 180 s below 0.1 m/s, i.e. on step 1801 (timeout pushed away)
    p2 = params._replace(lb_timeout_delay_s=10_000.0)
    term, trunc, met = jax.jit(stand, static_argnums=1)(p2, 1805)
    assert np.nonzero(np.asarray(term))[0][0] == 1800  # step index 1800 = t 1801
    assert float(met["blocked"][1800]) == 1.0


def test_leaderboard_route_completion_rule():
    """Completed at > 99% within 10 m of the end (route completion then reads 100)."""
    env, params = make_driving("quick", num_vehicles=0, episode_end="leaderboard")
    rb = params.routes
    n = int(rb.num[0])
    cum = np.asarray(rb.cum[0, :n])
    length = float(rb.length[0])
    i99 = int(np.nonzero(cum > 0.99 * length)[0][0])
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    start = i99 - 3
    st = st._replace(x=rb.xy[0, start, 0], y=rb.xy[0, start, 1], yaw=rb.yaw[0, start],
                     prog=jnp.int32(start), v=jnp.float32(3.0))
    out = _run(env, params, st, jnp.array([0.0, 0.0]), 20)
    rcs = [float(r.info["episode_metrics"]["route_completion"]) for r in out]
    assert bool(out[-1].terminated) and rcs[-1] == 100.0
    assert all(rc <= 99.0 + 1e-3 for rc in rcs[:-1])  # the step before ends at <= 99%
    assert float(out[-1].info["episode_metrics"]["success"]) == 1.0


@needs_town01
def test_expert_drives_town01_with_traffic_without_leaderboard_infractions():
    """Done-when of issue 18: all 10 routes, traffic on, 3 seeds, leaderboard rules."""
    env, params = make_driving("town01", episode_end="leaderboard")
    routes = jnp.tile(jnp.arange(10), 3)

    def run(key):
        return rollout(env, params, expert_policy, routes, 6000, key=key)

    inf, met, done, _ = jax.jit(lambda: run(0))()
    done = np.asarray(done)
    assert done[:, -1].all(), "every route must end within 6000 steps"
    last = done.argmin(1) - 1
    last = np.where(last < 0, done.shape[1] - 1, last)
    pick = {k: np.asarray(v)[np.arange(len(routes)), last] for k, v in met.items()}
    bad = {k: np.nonzero(pick[k] > 0)[0].tolist() for k in
           ("collision", "red_light", "outside_lanes", "deviation", "blocked", "timeout")}
    assert not any(bad.values()), bad
    np.testing.assert_allclose(pick["route_completion"], 100.0)
    assert pick["success"].all()
    assert int(np.asarray(inf["collision_counted"]).sum()) == 0
