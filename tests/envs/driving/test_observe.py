"""BEV raster + measurements (envs.driving.observe): every channel drawn where its object
is (constructed states), the field of view in metres, CaRL's measurements by hand, and the
spaces the env reports."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.driving import make_driving, observe, sim
from envs.driving.env import expert_policy

CH = {name: k for k, name in enumerate(observe.BEV_CHANNELS)}


@pytest.fixture(scope="module")
def world():
    env, params = make_driving("quick", obs_type="bev", num_vehicles=16, road_users=True)
    _, st = env.reset(jax.random.PRNGKey(3), params)
    return env, params, st


def _empty(st):
    """No background vehicles, walkers or parked cars."""
    return st._replace(veh_active=jnp.zeros_like(st.veh_active),
                       ped_active=jnp.zeros_like(st.ped_active),
                       obst_active=jnp.zeros_like(st.obst_active))


def _world(st, lon, lat):
    """World position of an ego-frame offset."""
    c, s = np.cos(float(st.yaw)), np.sin(float(st.yaw))
    return np.array([float(st.x) + lon * c - lat * s, float(st.y) + lon * s + lat * c],
                    np.float32)


def _pixel(view, lon, lat):
    """(row, column) of the pixel that contains an ego-frame point."""
    return (int(np.floor(view.ego_row - lon / view.res)),
            int(np.floor(0.5 * view.size - lat / view.res)))


def _bev(env, params, st):
    return np.asarray(env.observe(st, params)["bev"])


def test_spaces_describe_the_observations(world):
    env, params, st = world
    obs = env.observe(st, params)
    space = env.observation_space(params)
    assert set(obs) == {"bev", "measurements"} == set(space.spaces)
    for k, sp in space.spaces.items():
        assert obs[k].shape == sp.shape and obs[k].dtype == sp.dtype
    assert space.spaces["bev"].shape == (64, 64, len(observe.BEV_CHANNELS))
    assert bool(space.contains(obs))
    assert space.to_gymnasium().contains(jax.tree.map(np.asarray, obs))
    venv, vparams = make_driving("quick", obs_type="vector")
    vobs, _ = venv.reset(jax.random.PRNGKey(0), vparams)
    assert vobs.shape == venv.observation_space(vparams).shape


def test_field_of_view_in_metres(world):
    _, params, st = world
    view = observe.BevView(64)
    assert view.res == pytest.approx(2.0) and view.ego_row == pytest.approx(39.0)
    env = make_driving("quick", obs_type="bev", road_users=True, bev_size=40, bev_ahead=30.0,
                       bev_behind=10.0)[0]
    assert env.bev_res == pytest.approx(1.0) and env.bev_view.ego_row == pytest.approx(30.0)
    st = _empty(st)
    # a parked car just inside / just beyond the far edge, ahead / behind / to the side
    for lon, lat, seen in [(28.0, 0.0, True), (34.0, 0.0, False), (-8.5, 0.0, True),
                           (-14.0, 0.0, False), (5.0, 17.0, True), (5.0, 23.0, False)]:
        s2 = st._replace(obst_xy=st.obst_xy.at[0].set(_world(st, lon, lat)),
                         obst_yaw=st.obst_yaw.at[0].set(st.yaw),
                         obst_active=st.obst_active.at[0].set(True))
        static = _bev(env, params, s2)[..., CH["static"]]
        assert (static.max() == 255) == seen, (lon, lat)
    with pytest.raises(ValueError, match="bev_ahead"):
        make_driving("quick", obs_type="bev", bev_ahead=-1.0)


@pytest.mark.parametrize("kind", ["walkers", "static", "vehicles"])
def test_each_object_is_drawn_where_it_is(world, kind):
    env, params, st = world
    view = env.bev_view
    st = _empty(st)
    lon, lat = 14.3, -6.7
    if kind == "walkers":
        st = st._replace(ped_xy=st.ped_xy.at[0].set(_world(st, lon, lat)),
                         ped_v=st.ped_v.at[0].set(1.5), ped_active=st.ped_active.at[0].set(True))
        value = 100 + int(155 * 1.5 / 15)
    elif kind == "static":
        st = st._replace(obst_xy=st.obst_xy.at[0].set(_world(st, lon, lat)),
                         obst_yaw=st.obst_yaw.at[0].set(st.yaw + 0.3),
                         obst_active=st.obst_active.at[0].set(True))
        value = 255
    else:  # a background car on the lane point nearest to the offset
        pt = jnp.argmin(jnp.linalg.norm(params.map.pt_xy - _world(st, lon, lat), axis=-1))
        st = st._replace(veh_pt=st.veh_pt.at[0].set(pt), veh_u=st.veh_u.at[0].set(0.0),
                         veh_v=st.veh_v.at[0].set(6.0), veh_active=st.veh_active.at[0].set(True))
        xy = np.asarray(sim.veh_pose(params.map, st.veh_pt[:1], st.veh_u[:1])[0][0])
        rel = np.asarray(sim.to_frame(jnp.asarray(xy) - jnp.stack([st.x, st.y]), st.yaw))
        lon, lat = float(rel[0]), float(rel[1])
        value = 100 + int(155 * 6.0 / 15)
    bev = _bev(env, params, st)
    i, j = _pixel(view, lon, lat)
    assert bev[i, j, CH[kind]] == value
    ys, xs = np.nonzero(bev[..., CH[kind]])
    assert np.abs(ys - i).max() <= 2 and np.abs(xs - j).max() <= 2  # only around the object
    others = [c for c in ("vehicles", "walkers", "static") if c != kind]
    assert all(bev[..., CH[c]].max() == 0 for c in others)
    # an inactive object is not drawn
    off = st._replace(veh_active=st.veh_active.at[0].set(False),
                      ped_active=st.ped_active.at[0].set(False),
                      obst_active=st.obst_active.at[0].set(False))
    assert _bev(env, params, off)[..., CH[kind]].max() == 0


def _dense_boxes(view, centres, cs, half, values):
    """Reference: every pixel centre tested against every box (plus each centre's pixel)."""
    pix = np.arange(view.size) + 0.5
    lon = ((view.ego_row - pix) * view.res)[:, None, None]
    lat = ((0.5 * view.size - pix) * view.res)[None, :, None]
    dlon, dlat = lon - centres[:, 0], lat - centres[:, 1]
    u = dlon * cs[:, 0] + dlat * cs[:, 1]
    v = dlat * cs[:, 0] - dlon * cs[:, 1]
    inside = (np.abs(u) <= half[0]) & (np.abs(v) <= half[1])
    ic = np.floor(view.ego_row - centres[:, 0] / view.res).astype(int)
    jc = np.floor(0.5 * view.size - centres[:, 1] / view.res).astype(int)
    rows, cols = np.arange(view.size)[:, None, None], np.arange(view.size)[None, :, None]
    inside |= (rows == ic) & (cols == jc)
    return np.max(np.where(inside, values, 0), axis=-1, initial=0).astype(np.uint8)


@pytest.mark.parametrize("size,ahead,behind", [(64, 78.0, 50.0), (48, 18.0, 6.0)])
def test_windowed_boxes_equal_dense_rasterisation(size, ahead, behind):
    env, params = make_driving("quick", obs_type="bev", num_vehicles=16, road_users=True,
                               bev_size=size, bev_ahead=ahead, bev_behind=behind)
    step = jax.jit(lambda k, s: env.step(k, s, expert_policy(s, params), params))
    _, st = env.reset(jax.random.PRNGKey(5), params)
    seen = np.zeros(3, int)
    rng = np.random.default_rng(0)
    obs = jax.jit(env.observe)
    for i in range(20):
        st = step(jax.random.PRNGKey(i), st).state
        # walkers, parked cars and car 0 scattered around the ego, at any heading
        near = [jnp.asarray(np.stack([_world(st, *rng.uniform(-ahead, ahead, 2))
                                      for _ in range(n)]))
                for n in (1, st.ped_xy.shape[0], st.obst_xy.shape[0])]
        yaws = [jnp.asarray(rng.uniform(-4, 4, n), jnp.float32) for n in (len(near[1]),
                                                                           len(near[2]))]
        pt = jnp.argmin(jnp.linalg.norm(params.map.pt_xy - near[0], axis=-1))
        st = st._replace(ped_xy=near[1], ped_yaw=yaws[0], obst_xy=near[2], obst_yaw=yaws[1],
                         veh_pt=st.veh_pt.at[0].set(pt), veh_active=st.veh_active.at[0].set(True))
        ego = jnp.stack([st.x, st.y])
        c, s = jnp.cos(st.yaw), jnp.sin(st.yaw)

        def frame(xy, heading, ego=ego, c=c, s=s):
            rel = np.asarray(sim.to_frame_cs(xy - ego, c, s))
            rcs = np.asarray(sim.to_frame_cs(heading, c, s))
            return rel, rcs

        vxy, vcs = sim.veh_pose(params.map, st.veh_pt, st.veh_u)
        rel, rcs = frame(vxy, vcs)
        vval = np.where(st.veh_active, np.asarray(observe.speed_value(st.veh_v)), 0)
        veh = _dense_boxes(env.bev_view, rel, rcs, observe.CAR_HALF, vval)
        rel, rcs = frame(st.ped_xy, jnp.stack([jnp.cos(st.ped_yaw), jnp.sin(st.ped_yaw)], -1))
        pval = np.where(st.ped_active, np.asarray(observe.speed_value(st.ped_v)), 0)
        walk = _dense_boxes(env.bev_view, rel, rcs, observe.WALKER_HALF, pval)
        rel, rcs = frame(st.obst_xy, jnp.stack([jnp.cos(st.obst_yaw), jnp.sin(st.obst_yaw)], -1))
        stat = _dense_boxes(env.bev_view, rel, rcs, observe.CAR_HALF,
                            np.where(st.obst_active, 255, 0))
        bev = np.asarray(obs(st, params)["bev"])
        for k, (name, ref) in enumerate([("vehicles", veh), ("walkers", walk), ("static", stat)]):
            np.testing.assert_array_equal(bev[..., CH[name]], ref, err_msg=name)
            seen[k] += int((ref > 0).sum())
    assert (seen > 0).all()  # each kind was in view at some step


def test_route_band_covers_the_route_ahead(world):
    env, params, st = world
    view, rb = env.bev_view, params.routes
    r, prog = int(st.route), int(st.prog)
    route = _bev(env, params, _empty(st))[..., CH["route"]]
    cum = np.asarray(rb.cum[r])
    ahead = np.nonzero((cum >= cum[prog]) & (cum <= cum[prog] + view.ahead - 2 * view.res)
                       & (np.arange(len(cum)) < int(rb.num[r])))[0]
    rel = np.asarray(sim.to_frame(rb.xy[r, ahead] - jnp.stack([st.x, st.y]), st.yaw))
    for lon, lat in rel:
        i, j = _pixel(view, lon, lat)
        if 0 <= i < view.size and 0 <= j < view.size:  # drawn there or in a pixel beside it
            assert route[max(i - 1, 0): i + 2, max(j - 1, 0): j + 2].max() == 255, (lon, lat)
    # and nothing far from it
    pts = np.asarray(sim.to_frame(rb.xy[r, : int(rb.num[r])] - jnp.stack([st.x, st.y]), st.yaw))
    ys, xs = np.nonzero(route)
    lon = (view.ego_row - ys - 0.5) * view.res
    lat = (0.5 * view.size - xs - 0.5) * view.res
    d = np.min(np.hypot(lon[:, None] - pts[:, 0], lat[:, None] - pts[:, 1]), axis=1)
    assert d.max() <= observe.ROUTE_HALF_WIDTH + 1.5 + view.res


def test_road_layer_is_the_drivable_raster(world):
    env, params, st = world
    view = env.bev_view
    bev = _bev(env, params, st)
    pix = np.arange(view.size) + 0.5
    lon = ((view.ego_row - pix) * view.res)[:, None] + 0 * pix[None, :]
    lat = 0 * pix[:, None] + ((0.5 * view.size - pix) * view.res)[None, :]
    xy = jnp.stack([jnp.asarray(_world(st, 0, 0)[0] + lon * np.cos(float(st.yaw))
                                - lat * np.sin(float(st.yaw))),
                    jnp.asarray(_world(st, 0, 0)[1] + lon * np.sin(float(st.yaw))
                                + lat * np.cos(float(st.yaw)))], -1)
    near, drivable = sim.grid_lookup(params.map, xy.astype(jnp.float32))
    agree = (bev[..., CH["road"]] == 255) == np.asarray(drivable)
    assert agree.mean() > 0.995  # float rounding at cell borders only
    lane = bev[..., CH["lane"]] == 255
    assert lane.any() and (bev[..., CH["road"]][lane] == 255).all()
    junction = np.asarray(params.map.pt_tab[near, sim.JUNC]) >= 0
    assert not (lane & junction).any()  # no markings inside junctions (as CARLA's maps)
    # the precomputed layers equal the ones built on the fly
    fresh = _bev(env, params._replace(bev_map=None), st)
    np.testing.assert_array_equal(fresh, bev)


def _line_state(params, start_pt, back=12.0):
    """An empty state with the ego `back` metres before the lane point, on its heading."""
    xy = np.asarray(params.map.pt_xy[start_pt])
    yaw = float(params.map.pt_yaw[start_pt])
    return xy - back * np.array([np.cos(yaw), np.sin(yaw)]), yaw


def _line_pixels(env, params, st, pt, back=12.0):
    xy, yaw = _line_state(params, pt, back)
    st = _empty(st)._replace(x=jnp.float32(xy[0]), y=jnp.float32(xy[1]), yaw=jnp.float32(yaw))
    i, j = _pixel(env.bev_view, back + 0.5, 0.0)  # just past the line, on the lane centre
    return st, i, j


def test_stop_sign_lines(world):
    env, params, st = world
    stops = np.asarray(params.map.stop_pt)
    assert (stops >= 0).any()  # the procedural map has all-way stops
    st, i, j = _line_pixels(env, params, st, int(stops[stops >= 0][0]))
    bev = _bev(env, params._replace(stop_signs=True), st)
    assert bev[i - 1: i + 2, j - 1: j + 2, CH["stop_signs"]].max() == 255
    ys, _ = np.nonzero(bev[..., CH["stop_signs"]])
    assert ys.max() <= i + 1  # nothing on the approach (other stop lines of the junction: ahead)
    assert _bev(env, params._replace(stop_signs=False), st)[..., CH["stop_signs"]].max() == 0


@pytest.mark.parametrize("light,value", [(sim.RED, 255), (sim.YELLOW, 170), (sim.GREEN, 80)])
def test_light_lines_are_coloured_by_their_state(world, light, value):
    env, params, st = world
    lane_light = np.asarray(params.map.lane_light)
    lane = int(np.nonzero(lane_light >= 0)[0][0])
    st, i, j = _line_pixels(env, params, st, int(params.map.lane_start[lane]))
    lights = jnp.full(params.map.light_group.shape, light, jnp.int32)
    bev = np.asarray(observe.bev_obs(st, params, env.bev_view, lights))
    window = bev[i - 1: i + 2, j - 1: j + 2, CH["lights"]]
    assert window.max() == value
    assert set(np.unique(bev[..., CH["lights"]])) <= {0, value}


def test_measurements_by_hand(world):
    env, params, st = world
    limit = float(params.map.pt_speed[params.routes.pt[st.route, st.prog]])
    steer = 0.3  # rad; max_steer 0.6
    beta = np.arctan(0.5 * np.tan(steer))
    s2 = st._replace(v=jnp.float32(5.0), steer=jnp.float32(steer), accel=jnp.float32(1.5))
    expect = [0.5, 0.5, 0.0, 1.0, 5 * np.cos(beta), 5 * np.sin(beta), 5 * np.cos(beta), limit]
    np.testing.assert_allclose(env.observe(s2, params)["measurements"], expect, rtol=1e-5)
    s3 = s2._replace(accel=jnp.float32(-4.0), steer=jnp.float32(-0.6))
    got = np.asarray(env.observe(s3, params)["measurements"])
    np.testing.assert_allclose(got[:3], [-1.0, 0.0, 0.5], rtol=1e-6)
    assert got[5] < 0  # steering right: the centre slips to the right (negative lateral)


def test_normalize_obs_scales_the_measurements_and_passes_the_raster():
    from mo_rl.wrappers import NormalizeObs, VmapEnv

    env, params = make_driving("quick", obs_type="bev")
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    raw, _ = jax.vmap(env.reset, (0, None))(keys, params)
    obs, state = NormalizeObs(VmapEnv(env, 4)).reset(keys, params)
    assert set(state.mean) == {"measurements"}  # only the float part has statistics
    np.testing.assert_array_equal(obs["bev"], raw["bev"])
    assert obs["bev"].dtype == jnp.uint8 and obs["measurements"].dtype == jnp.float32
    expect = (raw["measurements"] - state.mean["measurements"]) / jnp.sqrt(
        state.var["measurements"] + 1e-8)
    np.testing.assert_allclose(obs["measurements"], jnp.clip(expect, -10, 10), rtol=1e-5)
