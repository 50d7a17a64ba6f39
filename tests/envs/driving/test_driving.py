"""Driving env: maps, routes, expert drives Town01 routes cleanly, constructed infractions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from envs.driving import expert_policy, find_carla_file, make_driving, sim
from envs.driving.env import DrivingEnv
from envs.driving.roadmap import load_procedural_map
from envs.driving.routes import parse_route_xml

TOWN01 = find_carla_file("Town01.xodr")
ROUTES = find_carla_file("routes_town01.xml")
needs_town01 = pytest.mark.skipif(
    TOWN01 is None or ROUTES is None,
    reason="CARLA Town01.xodr / routes_town01.xml not found (set MO_RL_CARLA_DIR)",
)


def rollout(env, params, policy, route, steps, key=0):
    """Run `policy` on one route until done; returns per-step infractions and final metrics."""

    def body(carry, k):
        st, done = carry
        r = env.step(k, st, policy(st, params), params)
        d = done | r.terminated | r.truncated
        st2 = jax.tree.map(lambda a, b: jnp.where(done, a, b), st, r.state)
        return (st2, d), (r.info["infractions"], r.info["episode_metrics"], done, r.reward)

    def run(key, route):
        _, s = env.reset_to_route(key, params, route)
        return jax.lax.scan(body, (s, jnp.array(False)), jax.random.split(key, steps))[1]

    return (
        run(jax.random.PRNGKey(key), route)
        if np.ndim(route) == 0
        else jax.vmap(run)(jax.random.split(jax.random.PRNGKey(key), len(route)), route)
    )


@needs_town01
def test_town01_routes_load_and_densify():
    _env, params = make_driving("town01", num_vehicles=0)
    rb = params.routes
    sparse = parse_route_xml(str(ROUTES))
    assert rb.num_routes == len(sparse) == 10
    xy = np.asarray(rb.xy)
    for i, wps in enumerate(sparse):
        n = int(rb.num[i])
        steps = np.linalg.norm(np.diff(xy[i, :n], axis=0), axis=1)
        assert steps.max() < 1.6 and steps.min() > 0.3  # dense and connected
        # every sparse waypoint lies on the dense route
        d = np.linalg.norm(xy[i, :n, None, :] - wps[None, :, :2], axis=-1).min(0)
        assert d.max() < 2.5
        assert np.isclose(float(rb.length[i]), steps.sum(), rtol=1e-4)
    m = params.map
    assert int(m.lane_start.shape[0]) == 159  # topology segments
    assert int(m.light_group.max()) + 1 == 12  # signalised junctions
    # every road carries <speed max="25" unit="mph"/> (40.2 km/h) from its start; Speed_30 /
    # 60 / 90 signs (read as km/h, as CARLA does) override it after them on their road
    kmh = np.round(np.asarray(m.pt_speed, np.float64) * 3.6, 1)
    values, counts = np.unique(kmh, return_counts=True)
    assert set(values.tolist()) == {30.0, 40.2, 60.0, 90.0}
    assert values[np.argmax(counts)] == 40.2


@needs_town01
def test_expert_completes_all_town01_routes_without_infractions():
    env, params = make_driving("town01", num_vehicles=0)
    inf, met, done, _ = jax.jit(lambda r: rollout(env, params, expert_policy, r, 4000))(
        jnp.arange(10)
    )
    finished = np.asarray(done[:, -1])
    assert finished.all(), "every route must finish within 4000 steps"
    last = np.asarray(done).argmin(1) - 1  # last live step index
    last = np.where(last < 0, done.shape[1] - 1, last)
    rc = np.asarray(met["route_completion"])[np.arange(10), last]
    success = np.asarray(met["success"])[np.arange(10), last]
    np.testing.assert_allclose(rc, 100.0)
    for name, flags in inf.items():
        if name == "ttc":
            continue
        count = np.asarray(flags & ~done).sum(1)
        assert (count == 0).all(), f"{name} infractions on routes {np.nonzero(count)[0]}"
    assert success.all()


def _place(state, params, rel_lon, rel_lat=0.0):
    """Put background vehicle 0 at the lane point nearest to ego + offset (ego frame)."""
    m = params.map
    c, s = jnp.cos(state.yaw), jnp.sin(state.yaw)
    xy = jnp.stack([state.x + rel_lon * c - rel_lat * s, state.y + rel_lon * s + rel_lat * c])
    pt = jnp.argmin(jnp.linalg.norm(m.pt_xy - xy, axis=-1))
    return state._replace(
        veh_pt=state.veh_pt.at[0].set(pt),
        veh_u=state.veh_u.at[0].set(0.0),
        veh_v=state.veh_v.at[0].set(0.0),
        veh_active=state.veh_active.at[0].set(True),
    )


def test_car_in_path_is_collision():
    env, params = make_driving("quick", num_vehicles=0)
    params = params._replace(idm_accel=0.0)  # the parked car stays parked
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    st = _place(st, params, 12.0)._replace(v=jnp.float32(8.0))
    step = jax.jit(env.step)
    hit = False
    for t in range(30):
        r = step(jax.random.PRNGKey(t), st, jnp.array([0.0, 0.5]), params)
        st = r.state
        if bool(r.info["infractions"]["collision"]):
            hit = True
            assert bool(r.terminated)
            assert float(r.reward[0]) <= -1.0  # safety component
            assert float(r.info["episode_metrics"]["collision"]) == 1.0
            break
    assert hit
    # the same car 6 m to the side is no collision (box test is not a circle test)
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    st = _place(st, params, 0.0)
    assert bool(
        sim.obb_overlap(jnp.stack([st.x, st.y]), st.yaw, jnp.stack([st.x, st.y + 2.2]), st.yaw)
    )
    assert not bool(
        sim.obb_overlap(
            jnp.stack([st.x, st.y]),
            st.yaw,
            jnp.stack([st.x + 6.0 * jnp.sin(st.yaw), st.y - 6.0 * jnp.cos(st.yaw)]),
            st.yaw,
        )
    )


def test_obb_overlap_matches_sampling():
    """SAT against a Monte-Carlo point-in-both-boxes check on random pairs."""
    rng = np.random.default_rng(0)
    c2 = rng.uniform(-6, 6, (300, 2)).astype(np.float32)
    yaw2 = rng.uniform(-np.pi, np.pi, 300).astype(np.float32)
    got = np.asarray(sim.obb_overlap(jnp.zeros(2), jnp.float32(0.3), c2, yaw2))
    pts = rng.uniform(-8, 8, (200000, 2))

    def inside(p, c, yaw):
        d = p - c
        lon = d[:, 0] * np.cos(yaw) + d[:, 1] * np.sin(yaw)
        lat = -d[:, 0] * np.sin(yaw) + d[:, 1] * np.cos(yaw)
        return (np.abs(lon) <= sim.VEH_LEN / 2) & (np.abs(lat) <= sim.VEH_WID / 2)

    in1 = inside(pts, np.zeros(2), 0.3)
    p1 = pts[in1]
    ref = np.array([inside(p1, c, y).any() for c, y in zip(c2, yaw2, strict=True)])
    # sampling can miss tiny overlaps: it may only say "no" where SAT says "yes"
    assert not np.any(ref & ~got)
    assert (got == ref).mean() > 0.97


def test_ego_frame_overlap_equals_world_sat():
    rng = np.random.default_rng(1)
    c1 = rng.uniform(-3, 3, (500, 2)).astype(np.float32)
    y1 = rng.uniform(-np.pi, np.pi, 500).astype(np.float32)
    c2 = c1 + rng.uniform(-6, 6, (500, 2)).astype(np.float32)
    y2 = rng.uniform(-np.pi, np.pi, 500).astype(np.float32)
    world = np.asarray(sim.obb_overlap(c1, y1, c2, y2))
    d = sim.to_frame(jnp.asarray(c2 - c1), jnp.asarray(y1))
    frame = np.asarray(sim.overlap_ego_frame(d, jnp.cos(y2 - y1), jnp.sin(y2 - y1)))
    assert 0.2 < world.mean() < 0.8
    assert (world == frame).mean() > 0.995  # equal up to float rounding on touching boxes


def test_driving_off_road():
    env, params = make_driving("quick", num_vehicles=0)
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    st = st._replace(v=jnp.float32(6.0))
    step = jax.jit(env.step)
    off = False
    for t in range(150):  # a steady turn (radius ~10 m) leaves the road within seconds
        r = step(jax.random.PRNGKey(t), st, jnp.array([0.25, 0.0]), params)
        st = r.state
        if bool(r.info["infractions"]["off_road"]):
            off = True
            assert bool(r.terminated)
            break
    assert off
    # ground truth: the ego centre is farther than half a lane width from every centreline
    d = np.linalg.norm(np.asarray(params.map.pt_xy) - np.array([float(st.x), float(st.y)]), axis=1)
    assert d.min() > 0.5 * float(params.map.pt_width[0]) - 0.6


def _before_red_light(env, params):
    """The ego 10 m before the first stop line of a light-controlled route at 6 m/s, with
    params that keep every light red: (state, red params, stop index, light id)."""
    rb = params.routes
    stops = np.asarray(rb.stop_light)
    route = int(np.nonzero((stops >= 0).any(1))[0][0])
    stop_i = int(np.nonzero(stops[route] >= 0)[0][0])
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, route)
    start = max(stop_i - 10, 0)
    st = st._replace(x=rb.xy[route, start, 0], y=rb.xy[route, start, 1],
                     yaw=rb.yaw[route, start], prog=jnp.int32(start), v=jnp.float32(6.0))
    red_params = params._replace(green_s=0.0, yellow_s=0.0, allred_s=100.0)
    return st, red_params, stop_i, int(stops[route, stop_i])


def test_red_light_running_and_stopping():
    env, params = make_driving("quick", num_vehicles=0)
    st, red_params, stop_i, light = _before_red_light(env, params)
    assert int(env.lights(st, red_params)[light]) == sim.RED
    step = jax.jit(env.step)
    ran, s = False, st
    for t in range(40):
        r = step(jax.random.PRNGKey(t), s, jnp.array([0.0, 0.3]), red_params)
        s = r.state
        ran |= bool(r.info["infractions"]["red_light"])
    assert ran and int(s.n_red_light) == 1
    # the expert stops at the line instead
    s = st
    for t in range(100):
        r = step(jax.random.PRNGKey(t), s, expert_policy(s, red_params), red_params)
        s = r.state
        assert not bool(r.info["infractions"]["red_light"])
    assert float(s.v) < 0.1
    # green light: crossing is fine
    green_params = params._replace(green_s=1000.0, yellow_s=0.0, allred_s=0.0)
    s = st._replace(light_offset=jnp.zeros_like(st.light_offset))
    lo = int(params.map.light_order[light])
    s = s._replace(light_offset=s.light_offset + lo * 1000.0)  # this light's slot now
    ran = False
    for t in range(40):
        r = step(jax.random.PRNGKey(t), s, jnp.array([0.0, 0.3]), green_params)
        s = r.state
        ran |= bool(r.info["infractions"]["red_light"])
    assert not ran and int(s.prog) > stop_i


def test_procedural_map_without_files():
    m, net = load_procedural_map(3)
    assert int(np.asarray(m.lane_nsucc).min()) >= 1  # no dead ends
    assert len(net.light_group) > 0
    widths = {
        len([ln for ln in net.lanes if ln.junction < 0 and ln.key[:2] == k[:2]])
        for k in (ln.key for ln in net.lanes if ln.junction < 0)
    }
    assert widths == {1, 2}, "roads with one and with two lanes per direction"
    env, params = make_driving("quick", map_seed=3)
    obs, _st = env.reset(jax.random.PRNGKey(0), params)
    assert obs.shape == env.observation_space(params).shape


def test_expert_on_quick_preset_with_traffic():
    env, params = make_driving("quick")
    inf, _met, done, rew = jax.jit(lambda r: rollout(env, params, expert_policy, r, 500))(
        jnp.arange(8)
    )
    live = ~np.asarray(done)
    coll = (np.asarray(inf["collision"]) & live).sum()
    red = (np.asarray(inf["red_light"]) & live).sum()
    assert red == 0
    assert coll <= 2  # the expert only follows; background cars may still hit it
    assert np.asarray(rew).shape == (8, 500, 4)


@pytest.mark.parametrize(
    "reward,action_type,obs_type",
    [
        ("vector", "discrete", "vector"),
        ("carl", "continuous", "bev"),
        ("roach", "continuous", "vector"),
    ],
)
def test_modes_jit_vmap(reward, action_type, obs_type):
    env, params = make_driving("quick", reward=reward, action_type=action_type, obs_type=obs_type)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    obs, st = jax.vmap(env.reset, (0, None))(keys, params)
    space = env.observation_space(params)
    parts = space.spaces if obs_type == "bev" else {"obs": space}  # BEV: raster + measurements
    for k, sp in parts.items():
        o = obs[k] if obs_type == "bev" else obs
        assert o.shape == (4, *sp.shape) and o.dtype == sp.dtype
    acts = jax.vmap(env.action_space(params).sample)(keys)
    r = jax.jit(jax.vmap(env.step, (0, 0, 0, None)))(keys, st, acts, params)
    assert r.reward.shape == (4, len(env.reward_spec))
    views = r.info["reward_views"]
    assert views["vector"].shape == (4, 4) and views["carl"].shape == (4, 1)
    # the vector view does not depend on which reward the env trains on: an env built for
    # another reward, stepped from the same states with the same actions, reports the same
    # vector and returns it as its reward when it is the vector env
    other = "vector" if reward != "vector" else "carl"
    env2, params2 = make_driving("quick", reward=other, action_type=action_type,
                                 obs_type=obs_type)
    r2 = jax.jit(jax.vmap(env2.step, (0, 0, 0, None)))(keys, st, acts, params2)
    np.testing.assert_allclose(r2.info["reward_views"]["vector"], views["vector"], rtol=1e-6)
    vec_reward = r2.reward if other == "vector" else r.reward
    np.testing.assert_allclose(vec_reward, views["vector"], rtol=1e-6)
    assert env.reward_spec.num_levels == (4 if reward == "vector" else 1)


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="reward"):
        DrivingEnv(reward="nope")


@pytest.mark.parametrize("action_type,obs_type", [("continuous", "vector"), ("discrete", "bev")])
def test_gymnasium_check_env(action_type, obs_type):
    from gymnasium.utils.env_checker import check_env

    from envs import registry
    from envs.adapters.gymnasium_out import GymnasiumOut

    env, params = registry.make("Driving", preset="quick", action_type=action_type,
                                obs_type=obs_type, bev_size=32)
    genv = GymnasiumOut(env, params)
    check_env(genv, skip_render_check=True)
    obs, _ = genv.reset(seed=0)
    assert genv.observation_space.contains(obs)


class _GenericReset(DrivingEnv):
    """The same env without the observe-once hooks (AutoReset's generic path)."""

    observes_state = False


def test_autoreset_observe_once_equals_generic_path():
    from mo_rl.wrappers import AutoReset

    fast, params = make_driving("quick", num_vehicles=8)
    slow = _GenericReset(max_vehicles=16)
    keys = jax.random.split(jax.random.PRNGKey(3), 64)
    _, st = jax.vmap(fast.reset, (0, None))(keys, params)
    st = st._replace(t=jnp.where(jnp.arange(64) % 2 == 0, params.max_steps - 1, st.t))
    act = jnp.zeros((64, 2))
    rf = jax.vmap(AutoReset(fast).step, (0, 0, 0, None))(keys, st, act, params)
    rs = jax.vmap(AutoReset(slow).step, (0, 0, 0, None))(keys, st, act, params)
    assert np.asarray(rf.truncated)[::2].all()  # half of the batch resets
    for a, b in zip(jax.tree.leaves((rf.obs, rf.state, rf.info["final_obs"])),
                    jax.tree.leaves((rs.obs, rs.state, rs.info["final_obs"])), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_vehicles_advance_their_speed_along_the_lane_graph():
    """Lane-level advance: the travelled arc length equals v * dt, across lane ends."""
    env, params = make_driving("quick", num_vehicles=16)
    m = params.map
    _, st = env.reset(jax.random.PRNGKey(1), params)
    step = jax.jit(env.step)
    crossed = 0
    for i in range(60):
        s_in = np.asarray(m.pt_tab[st.veh_pt, sim.S_IN] + st.veh_u)
        lane_len = np.asarray(m.pt_tab[st.veh_pt, sim.S_IN] + m.pt_tab[st.veh_pt, sim.TO_END])
        lane = np.asarray(m.pt_lane[st.veh_pt])
        st2 = step(jax.random.PRNGKey(i), st, jnp.zeros(2), params).state
        s2 = np.asarray(m.pt_tab[st2.veh_pt, sim.S_IN] + st2.veh_u)
        lane2 = np.asarray(m.pt_lane[st2.veh_pt])
        travelled = np.where(lane2 == lane, s2 - s_in, lane_len - s_in + s2)
        act = np.asarray(st.veh_active)
        np.testing.assert_allclose(travelled[act], np.asarray(st2.veh_v * 0.1)[act], atol=2e-3)
        nxt = np.asarray(params.map.lane_succ)[lane]
        assert all(lane2[j] in nxt[j] for j in np.nonzero(act & (lane2 != lane))[0])
        crossed += int((act & (lane2 != lane)).sum())
        st = st2
    assert crossed > 0  # some vehicle changed lanes in the window


@pytest.mark.parametrize("episode_end, ends", [("reward", True), ("common", False)])
def test_carl_red_light_ends_the_episode_only_under_its_own_rules(episode_end, ends):
    env, params = make_driving("quick", reward="carl", num_vehicles=0, episode_end=episode_end)
    st, red_params, _, _ = _before_red_light(env, params)
    step = jax.jit(env.step)
    s = st
    for t in range(40):
        r = step(jax.random.PRNGKey(t), s, jnp.array([0.0, 0.3]), red_params)
        s = r.state
        if bool(r.info["infractions"]["red_light"]):
            assert bool(r.terminated) == ends
            assert int(r.state.n_red_light) == 1  # an infraction under either rule set
            return
    pytest.fail("the ego never ran the red light")


def test_episode_end_rejects_unknown_rules():
    with pytest.raises(ValueError, match="episode_end"):
        make_driving("quick", episode_end="nope")
