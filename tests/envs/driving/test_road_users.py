"""Road users (issue 19): walkers, parked cars, stop signs; constructed states, values by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from envs.driving import ROAD_USERS, expert_policy, make_driving, rules
from envs.driving.env import pursuit
from tests.envs.driving.test_driving import needs_town01


def _drive(env, params, st, policy, steps):
    """Roll `policy(state)` for `steps` steps (stops at termination): list of StepResults."""
    step = jax.jit(lambda k, s: env.step(k, s, policy(s), params))
    out = []
    for t in range(steps):
        r = step(jax.random.PRNGKey(t), st)
        out.append(r)
        st = r.state
        if bool(r.terminated | r.truncated):
            break
    return out


def _at(st, rb, route, i, v):
    return st._replace(x=rb.xy[route, i, 0], y=rb.xy[route, i, 1], yaw=rb.yaw[route, i],
                       prog=jnp.int32(i), v=jnp.float32(v), last_xy=rb.xy[route, i])


# ------------------------------------------------------------------ walkers
def _walker_ahead(ahead_m: float = 16.0):
    """Ego at 8 m/s on route 0, one walker stepping off the right kerb `ahead_m` route
    metres ahead at 1.3 m/s (no traffic, no parked cars)."""
    env, params = make_driving("quick", num_vehicles=0, num_walkers=1,
                               episode_end="leaderboard")
    rb = params.routes
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    start = 5
    ri = int(np.searchsorted(np.asarray(rb.cum[0]), float(rb.cum[0, start]) + ahead_m))
    q0 = -(0.5 * float(params.map.pt_width[rb.pt[0, ri]]) + 1.5)
    st = _at(st, rb, 0, start, 8.0)._replace(
        ped_ri=jnp.array([ri], jnp.int32), ped_q=jnp.array([q0], jnp.float32),
        ped_dir=jnp.ones(1, jnp.float32), ped_vd=jnp.full(1, 1.3, jnp.float32),
        ped_v=jnp.full(1, 1.3, jnp.float32), ped_active=jnp.ones(1, bool),
        ped_armed=jnp.zeros(1, bool))
    return env, params, st


def test_walker_crossing_is_hit_without_braking():
    env, params, st = _walker_ahead()

    def keep_going(s):  # steer like the expert, hold the throttle
        return jnp.stack([expert_policy(s, params)[0], 0.2])

    out = _drive(env, params, st, keep_going, 40)
    hit = [bool(r.info["infractions"]["collision_pedestrian"]) for r in out]
    assert any(hit)
    last = out[-1]
    assert int(last.state.n_ped_collision) == 1 and int(last.state.n_collision) == 0
    m = last.info["episode_metrics"]
    assert float(m["collision_pedestrian"]) == 1.0 and float(m["collision"]) == 1.0
    assert float(m["infraction_score"]) == pytest.approx(rules.PENALTY["collision_pedestrian"])
    first = out[hit.index(True)]
    assert float(first.info["reward_views"]["vector"][0]) <= -1.0  # safety component


@pytest.mark.parametrize("policy", ["brake", "expert"])
def test_walker_crossing_is_not_hit_when_braking(policy):
    env, params, st = _walker_ahead()

    def act(s):
        if policy == "expert":
            return expert_policy(s, params)
        return jnp.stack([expert_policy(s, params)[0], -1.0])

    out = _drive(env, params, st, act, 120)
    assert not any(bool(r.info["infractions"]["collision"]) for r in out)
    assert int(out[-1].state.n_ped_collision) == 0
    # the walker did cross the ego's lane
    assert float(out[-1].state.ped_q[0]) > 0.0


def test_walkers_move_only_when_active_and_cross_kerb_to_kerb():
    env, params = make_driving("quick", num_vehicles=0, num_walkers=4, max_walkers=6,
                               ped_cross_rate=5.0, ped_sudden_share=0.0)
    _, st = env.reset_to_route(jax.random.PRNGKey(1), params, 0)
    assert np.asarray(st.ped_active).tolist()[4:] == [False, False]
    out = _drive(env, params, st, lambda s: jnp.zeros(2), 150)
    q = np.stack([np.asarray(r.state.ped_q) for r in out])
    v = np.stack([np.asarray(r.state.ped_v) for r in out])
    assert (v[:, 4:] == 0).all() and (np.ptp(q[:, 4:], axis=0) == 0).all()
    act = np.asarray(st.ped_active)
    assert (v[:, act].max(0) > 0).all()  # every active walker started (rate 5 / s, ego still)
    w = np.asarray(params.map.pt_width[params.routes.pt[0, st.ped_ri]])
    lo, hi = -(0.5 * w + 1.5), 1.5 * w + 1.5
    assert (q[:, act] >= lo[act] - 1e-4).all() and (q[:, act] <= hi[act] + 1e-4).all()


# ------------------------------------------------------------------ parked cars
def test_parked_car_collision_counts_as_static():
    env, params = make_driving("quick", num_vehicles=0, num_obstacles=1,
                               episode_end="leaderboard")
    rb = params.routes
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    st = _at(st, rb, 0, 5, 6.0)
    ahead = jnp.stack([st.x, st.y]) + 10.0 * jnp.stack([jnp.cos(st.yaw), jnp.sin(st.yaw)])
    st = st._replace(obst_xy=ahead[None], obst_yaw=st.yaw[None], obst_active=jnp.ones(1, bool))
    out = _drive(env, params, st, lambda s: jnp.array([0.0, 0.3]), 30)
    assert any(bool(r.info["infractions"]["collision_static"]) for r in out)
    last = out[-1]
    assert int(last.state.n_static_collision) == 1 and int(last.state.n_collision) == 0
    m = last.info["episode_metrics"]
    assert float(m["collision_static"]) == 1.0 and float(m["success"]) == 0.0
    assert float(m["infraction_score"]) == pytest.approx(rules.PENALTY["collision_static"])
    assert not bool(last.terminated)  # leaderboard: the route goes on


def test_parked_cars_sit_partly_in_the_lane_and_clear_a_centred_car():
    env, params = make_driving("town01", num_vehicles=0, num_obstacles=4) if _town01() else \
        make_driving("quick", num_vehicles=0, num_obstacles=4)
    for seed in range(4):
        _, st = env.reset(jax.random.PRNGKey(seed), params)
        act = np.asarray(st.obst_active)
        w = np.asarray(params.map.pt_width[params.routes.pt[st.route, st.obst_ri]])
        inner = np.asarray(st.obst_q) + 1.0  # the parked car's side towards the lane
        assert (inner[act] > -0.5 * w[act]).all()  # partly in the lane
        assert (inner[act] < -1.0 - 0.09).all()  # a lane-centred car (half width 1 m) clears


def _town01() -> bool:
    from envs.driving import find_carla_file

    return find_carla_file("Town01.xodr") is not None


# ------------------------------------------------------------------ stop signs
def _before_stop_sign(d_before: float = 25.0, v: float = 6.0):
    env, params = make_driving("quick", num_vehicles=0, stop_signs=True,
                               episode_end="leaderboard")
    rb = params.routes
    # the first stop sign >= 30 m from its route's start and >= 20 points before its end
    signs = np.asarray(rb.sign) & (np.asarray(rb.cum) >= 30.0)
    signs &= np.arange(signs.shape[1])[None, :] < np.asarray(rb.num)[:, None] - 20
    route = int(np.nonzero(signs.any(1))[0][0])
    line = int(np.nonzero(signs[route])[0][0])
    cum = np.asarray(rb.cum[route])
    start = int(np.searchsorted(cum, cum[line] - d_before))
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, route)
    return env, params, _at(st, rb, route, start, v), route, line


def test_procedural_stop_signs_sit_on_unsignalised_junction_approaches():
    _, params = make_driving("quick")
    m = params.map
    sp = np.asarray(m.stop_pt)
    lane = np.asarray(m.pt_lane)[sp]
    assert len(sp) == 12  # the connectors of the quick map's 4 unsignalised grid corners
    assert (np.asarray(m.lane_start)[lane] == sp).all()  # the connector's first point
    assert (np.asarray(m.pt_junction)[sp] >= 0).all() and (np.asarray(m.lane_light)[lane] < 0).all()
    assert np.asarray(m.lane_stop).sum() == 12


@needs_town01
def test_town01_has_no_stop_signs():
    # Town01.xodr's 36 signals are all traffic lights (type 1000001), no type 206
    _, params = make_driving("town01")
    assert np.asarray(params.map.stop_pt).tolist() == [-1]
    assert not np.asarray(params.routes.sign).any()


@needs_town01
def test_opendrive_stop_signs_control_the_connectors_after_them():
    """Town01 with one traffic light (signal 362) retyped as a stop sign (206): the
    connectors that light controlled become stop-sign lanes and nothing else changes."""
    import re
    import warnings

    from envs.driving import find_carla_file
    from envs.driving.roadmap import carla_network, load_carla_map

    path = find_carla_file("Town01.xodr")
    text = path.read_text()
    new, n = re.subn(r'(<signal name="Signal_3Light_Post01" id="362"[^>]*?)type="1000001"',
                     r'\1type="206"', text)
    assert n == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net0 = load_carla_map(str(path))[1]
        net = carla_network(new, "Town01-stop")
    was_lit = [i for i, (a, b) in enumerate(zip(net0.lane_light, net.lane_light, strict=True))
               if a >= 0 and b < 0]
    assert len(was_lit) == 2 and was_lit == [i for i, on in enumerate(net.lane_stop) if on]
    assert all(net.lanes[i].junction >= 0 for i in was_lit)
    assert not any(net0.lane_stop)


def test_stop_sign_run_is_detected():
    env, params, st, _route, _line = _before_stop_sign()
    out = _drive(env, params, st, lambda s: jnp.stack([pursuit(s, params, 0.0, 6.0)[0], 0.0]),
                 80)
    ran = [bool(r.info["infractions"]["stop_sign"]) for r in out]
    assert sum(ran) == 1
    first = out[ran.index(True)]
    assert float(first.info["reward_views"]["vector"][1]) <= -1.0  # rules component
    m = out[-1].info["episode_metrics"]
    assert float(m["stop_sign"]) == 1.0
    assert float(m["infraction_score"]) == pytest.approx(rules.PENALTY["stop_sign"])
    # CaRL and Roach end the episode on it (simple_reward.py termination; VT done 5)
    for reward in ("carl", "roach"):
        env2, params2 = make_driving("quick", reward=reward, num_vehicles=0, stop_signs=True)
        out2 = _drive(env2, params2, st, lambda s, p=params2: jnp.stack(
            [pursuit(s, p, 0.0, 6.0)[0], 0.0]), 80)
        assert bool(out2[-1].terminated) and bool(out2[-1].info["infractions"]["stop_sign"])


def test_full_stop_at_the_line_is_no_run_but_a_stop_too_early_is():
    env, params, st, route, line = _before_stop_sign()
    out = _drive(env, params, st, lambda s: expert_policy(s, params), 200)
    cum = np.asarray(params.routes.cum[route])
    d = cum[line] - cum[[int(r.state.prog) for r in out]]
    v = np.array([float(r.state.v) for r in out])
    assert ((v < rules.STOP_SPEED) & (np.abs(d) <= rules.STOP_PROXIMITY)).any()
    assert d[-1] < -rules.STOP_PROXIMITY  # went on past the line
    assert int(out[-1].state.n_stop_sign) == 0
    # standing still 10 m before the line, then rolling over it: a run (4 m rule)
    env, params, st, route, line = _before_stop_sign(10.0, 0.0)

    def roll(s):
        return jnp.stack([pursuit(s, params, 0.0, 4.0)[0], 0.5])

    out = _drive(env, params, st, roll, 80)
    assert int(out[-1].state.n_stop_sign) == 1


def test_background_vehicle_stops_at_a_stop_sign():
    env, params, st, route, line = _before_stop_sign()
    rb = params.routes
    # vehicle 0 on the route 20 m before the line at 6 m/s; the ego parked far behind it
    cum = np.asarray(rb.cum[route])
    i = int(np.searchsorted(cum, cum[line] - 20.0))
    st = st._replace(veh_pt=st.veh_pt.at[0].set(rb.pt[route, i]), veh_u=st.veh_u.at[0].set(0.0),
                     veh_v=st.veh_v.at[0].set(6.0), veh_active=st.veh_active.at[0].set(True),
                     v=jnp.float32(0.0))
    st = _at(st, rb, route, int(np.searchsorted(cum, cum[line] - 45.0)), 0.0)
    out = _drive(env, params, st, lambda s: jnp.array([0.0, -1.0]), 200)
    lane = np.asarray(params.map.pt_lane)
    conn = lane[int(rb.pt[route, line])]
    on_conn = np.array([lane[int(r.state.veh_pt[0])] == conn for r in out])
    v0 = np.array([float(r.state.veh_v[0]) for r in out])
    assert on_conn.any(), "the vehicle went on after its stop"
    assert v0[: int(np.argmax(on_conn))].min() < 0.1  # it stood before entering


# ------------------------------------------------------------------ defaults and expert
def test_inactive_road_users_change_nothing():
    """Capacity for walkers / parked cars with none active and stop signs off: the same
    trajectories bit for bit as the env without road users (traffic on)."""
    env0, params = make_driving("quick", num_vehicles=8)
    env1, _ = make_driving("quick", num_vehicles=8, max_walkers=4, max_obstacles=3)

    def run(env, key):
        _, s = env.reset(key, params)

        def body(s, k):
            a = expert_policy(s, params) + 0.3 * jax.random.normal(k, (2,))
            r = env.step(k, s, a, params)
            return r.state, (r.state.x, r.state.v, r.state.veh_u, r.reward, r.obs,
                             r.info["reward_views"]["carl"], r.info["reward_views"]["roach"])

        return jax.lax.scan(body, s, jax.random.split(key, 150))[1]

    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    a = jax.jit(jax.vmap(lambda k: run(env0, k)))(keys)
    b = jax.jit(jax.vmap(lambda k: run(env1, k)))(keys)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_road_users_preset():
    env, params = make_driving("quick", road_users=True)
    assert env.max_walkers == ROAD_USERS["num_walkers"] == int(params.num_walkers)
    assert env.max_obstacles == ROAD_USERS["num_obstacles"] == int(params.num_obstacles)
    assert bool(params.stop_signs)
    env, params = make_driving("quick", road_users=True, num_walkers=2)
    assert env.max_walkers == 2


def _expert_town01(seeds: int):
    """The expert on all 10 routes with traffic, walkers, parked cars (and stop signs,
    which Town01 lacks) under the leaderboard rules: every route completed, no infraction."""
    env, params = make_driving("town01", episode_end="leaderboard", road_users=True)

    def run(key, route):
        _, s = env.reset_to_route(key, params, route)
        m0 = {k: jnp.zeros(()) for k in ("route_completion", "success", "infraction_score")}

        def body(c, k):
            s, done, bad, m = c
            r = env.step(k, s, expert_policy(s, params), params)
            inf = r.info["infractions"]
            now = (inf["collision"] | inf["red_light"] | inf["stop_sign"] | inf["outside_lanes"]
                   | inf["deviation"] | inf["blocked"])
            m = {n: jnp.where(done, m[n], r.info["episode_metrics"][n]) for n in m}
            return (r.state, done | r.terminated | r.truncated, bad | (now & ~done), m), None

        c0 = (s, jnp.zeros((), bool), jnp.zeros((), bool), m0)
        (s, done, bad, m), _ = jax.lax.scan(body, c0, jax.random.split(key, 9000))
        return done, bad, m, s.ped_active.sum(), s.obst_active.sum()

    keys = jax.random.split(jax.random.PRNGKey(11), seeds)
    k, r = jnp.meshgrid(jnp.arange(seeds), jnp.arange(10), indexing="ij")
    done, bad, m, n_ped, n_obst = jax.jit(jax.vmap(run))(keys[k.ravel()], r.ravel())
    assert np.asarray(n_ped).min() > 0 and np.asarray(n_obst).min() > 0  # on every route
    assert np.asarray(done).all()
    assert not np.asarray(bad).any(), f"infractions at {np.nonzero(np.asarray(bad))[0]}"
    np.testing.assert_allclose(np.asarray(m["route_completion"]), 100.0)
    assert np.asarray(m["success"]).all() and (np.asarray(m["infraction_score"]) == 1.0).all()


@needs_town01
def test_expert_drives_town01_with_road_users_without_infractions():
    _expert_town01(1)


@pytest.mark.slow
@needs_town01
def test_expert_drives_town01_with_road_users_without_infractions_several_seeds():
    _expert_town01(8)
