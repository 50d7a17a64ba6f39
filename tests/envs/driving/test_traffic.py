"""Background traffic: sorted neighbour look-ups equal the all-pairs search they replaced;
lane changes, cut-ins, and the ego passing a parked car."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from envs.driving import neighbours as nb
from envs.driving import sim
from envs.driving.roadmap import JUNC, LANE, NSUCC, S_IN, TO_END, load_procedural_map


def all_pairs_reference(m, pt, u, v, turn, active):
    """The N x N leader and junction-conflict search of sim.traffic_step before issue 19
    (commit ee8b571), kept verbatim as the reference: (leader gap, leader speed along the
    follower's heading, some vehicle in the next junction heads > 35 deg away)."""
    n = pt.shape[0]
    row = m.pt_tab[pt]
    cs = row[:, sim.COS:sim.SIN + 1]
    lane = row[:, LANE].astype(jnp.int32)
    k = sim.choice(turn, row[:, NSUCC].astype(jnp.int32))
    nl_row = m.pt_tab[m.lane_next[lane, k]]
    nl = nl_row[:, LANE].astype(jnp.int32)
    to_end = row[:, TO_END] - u
    s_here = row[:, S_IN] + u
    entering = nl != lane
    valid = active[None, :] & ~jnp.eye(n, dtype=bool)
    same = (lane[None, :] == lane[:, None]) & (s_here[None, :] > s_here[:, None])
    nxt = (lane[None, :] == nl[:, None]) & entering[:, None]
    gap_bb = jnp.where(same, s_here[None, :] - s_here[:, None],
                       jnp.where(nxt, to_end[:, None] + s_here[None, :], jnp.inf))
    gap_bb = jnp.where(valid, gap_bb, jnp.inf)
    gap_b = jnp.min(gap_bb, axis=1)
    cos_bb = cs[:, None, 0] * cs[None, :, 0] + cs[:, None, 1] * cs[None, :, 1]
    lead_vb = jnp.max(jnp.where(gap_bb == gap_b[:, None], v[None, :] * cos_bb, -jnp.inf), 1)
    junc = row[:, JUNC].astype(jnp.int32)
    nl_junc = nl_row[:, JUNC].astype(jnp.int32)
    cross_bb = (junc[None, :] == nl_junc[:, None]) & valid & (cos_bb < 0.82)
    return gap_b, lead_vb, jnp.any(cross_bb, axis=1) & (nl_junc >= 0)


def sorted_lookup(m, pt, u, v, turn, active):
    """The same three quantities from neighbours.py, as sim.traffic_step computes them."""
    row = m.pt_tab[pt]
    cs = row[:, sim.COS:sim.SIN + 1]
    lane = row[:, LANE].astype(jnp.int32)
    k = sim.choice(turn, row[:, NSUCC].astype(jnp.int32))
    nl_row = m.pt_tab[m.lane_next[lane, k]]
    nl = nl_row[:, LANE].astype(jnp.int32)
    gap_b, lead_vb = nb.leaders(m.pt_tab, m.lane_start.shape[0], pt, u, v, active, row, nl,
                                nl != lane)
    conflict = nb.junction_conflicts(row[:, JUNC].astype(jnp.int32), cs, active,
                                     nl_row[:, JUNC].astype(jnp.int32), m.lane_start.shape[0])
    return gap_b, lead_vb, conflict


def random_traffic(m, rng, n, n_lanes):
    """Vehicles crowded on a few random lanes and their successors (many leaders, shared
    junctions); some inactive; a few exact ties (pairs of vehicles on one spot)."""
    lane_start = np.asarray(m.lane_start)
    n_pts = np.diff(np.append(lane_start, m.num_points))
    succ = np.asarray(m.lane_succ)
    lanes = rng.choice(len(lane_start), n_lanes, replace=False)
    lanes = np.unique(np.concatenate([lanes, succ[lanes].ravel()]))
    lanes = lanes[lanes >= 0]
    ln = rng.choice(lanes, n)
    pt = lane_start[ln] + rng.integers(0, n_pts[ln])
    seg = np.asarray(m.pt_seg_len)[pt]
    u = rng.uniform(0, 1, n) * seg
    tie = np.nonzero(rng.random(n - 1) < 0.05)[0] + 1  # vehicle i on vehicle i - 1's spot
    tie = tie[~np.isin(tie - 1, tie)]  # pairs only (see neighbours.py on exactness)
    pt[tie], u[tie] = pt[tie - 1], u[tie - 1]
    v = rng.uniform(0, 15, n).astype(np.float32)
    turn = rng.integers(0, 1 << 24, n)
    active = rng.random(n) < 0.85
    return (jnp.asarray(pt, jnp.int32), jnp.asarray(u, jnp.float32), jnp.asarray(v),
            jnp.asarray(turn, jnp.int32), jnp.asarray(active))


@pytest.mark.parametrize("n, n_lanes", [(8, 3), (16, 4), (64, 6), (256, 12)])
def test_sorted_lookup_equals_all_pairs(n, n_lanes, monkeypatch):
    """Both paths of neighbours.py (sorted above ALL_PAIRS_MAX vehicles, masks below; the
    limit is lowered so that every size runs the sorted path too)."""
    m, _ = load_procedural_map(0)
    if n == 8:
        monkeypatch.setattr(nb, "ALL_PAIRS_MAX", 4)
    rng = np.random.default_rng(n)
    ref_fn, new_fn = jax.jit(all_pairs_reference), jax.jit(sorted_lookup)
    leaders = conflicts = 0
    for _ in range(20):
        args = random_traffic(m, rng, n, n_lanes)
        act = np.asarray(args[-1])
        g0, v0, c0 = (np.asarray(a) for a in ref_fn(m, *args))
        g1, v1, c1 = (np.asarray(a) for a in new_fn(m, *args))
        np.testing.assert_array_equal(g1[act], g0[act])
        fin = act & np.isfinite(g0)
        np.testing.assert_array_equal(v1[fin], v0[fin])
        np.testing.assert_array_equal(c1[act], c0[act])
        leaders += int(fin.sum())
        conflicts += int(c0[act].sum())
    assert leaders > 2 * n and conflicts > 0  # the states exercised both searches


def test_gaps_around_sorted_equals_masks(monkeypatch):
    """The lane-change gap query: sorted neighbours (> ALL_PAIRS_MAX vehicles) equal the
    masks on random crowded states and random query points."""
    m, _ = load_procedural_map(0)
    rng = np.random.default_rng(7)

    def gaps(a, q_pt, q_u):
        row = m.pt_tab[q_pt]
        return nb.gaps_around(m.pt_tab, a[0], a[1], a[4], row[:, LANE].astype(jnp.int32),
                              row[:, S_IN] + q_u, q_pt, q_u)

    found = 0
    for _ in range(10):
        a = random_traffic(m, rng, 64, 6)
        q_pt = a[0][jnp.asarray(rng.permutation(64))]  # query on lanes that hold vehicles
        q_u = jnp.asarray(rng.uniform(0, 1, 64) * np.asarray(m.pt_seg_len)[np.asarray(q_pt)],
                          jnp.float32)
        monkeypatch.setattr(nb, "ALL_PAIRS_MAX", 1 << 30)
        ref = gaps(a, q_pt, q_u)
        monkeypatch.setattr(nb, "ALL_PAIRS_MAX", 4)
        for x, y in zip(gaps(a, q_pt, q_u), ref, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        found += int(np.isfinite(np.asarray(ref[0])).sum())
    assert found > 100


def _two_lane_road(m, min_len=55.0):
    """A non-junction lane with a same-direction lane on its left, both >= min_len m."""
    start = np.asarray(m.lane_start)
    length = np.asarray(m.pt_to_end)[start]
    left, same = np.asarray(m.lane_left), np.asarray(m.lane_left_same)
    ok = np.nonzero(same & (length > min_len) & (length[np.maximum(left, 0)] > min_len))[0]
    assert len(ok), "the procedural map has no two-lane road"
    return int(ok[0]), int(left[ok[0]])


def _place_ego(st, m, lane, s, v):
    p = int(m.lane_start[lane]) + int(s)
    return st._replace(x=m.pt_xy[p, 0], y=m.pt_xy[p, 1], yaw=m.pt_yaw[p], v=jnp.float32(v),
                       last_xy=m.pt_xy[p])


def _cut_in_state(gap, **params):
    from envs.driving import make_driving

    env, prm = make_driving("quick", max_vehicles=4, num_vehicles=1, **params)
    m = prm.map
    lane_a, lane_b = _two_lane_road(m)
    _, st = env.reset(jax.random.PRNGKey(0), prm)
    st = _place_ego(st, m, lane_a, 5.0, 6.0)
    # vehicle 0 beside and ahead on the left lane: `gap` m from the ego's front bumper
    pt_b, u_b, _ = sim.beside(m, jnp.array([int(m.lane_start[lane_a]) + 5]), jnp.zeros(1),
                              jnp.array([lane_b]), jnp.array([True]))
    s_b = float(m.pt_tab[pt_b[0], S_IN] + u_b[0]) + gap + sim.VEH_LEN
    pt0 = int(m.lane_start[lane_b]) + int(s_b)
    st = st._replace(veh_pt=st.veh_pt.at[0].set(pt0), veh_u=st.veh_u.at[0].set(s_b % 1.0 * 0),
                     veh_v=st.veh_v.at[0].set(6.0),
                     veh_active=jnp.zeros_like(st.veh_active).at[0].set(True))
    return env, prm, st, lane_a, lane_b


def _drive(env, prm, st, steps):
    step = jax.jit(lambda k, s: env.step(k, s, jnp.array([0.0, 0.0]), prm).state)
    out = []
    for i in range(steps):
        st = step(jax.random.PRNGKey(i), st)
        out.append(st)
    return out


def test_cut_in_in_front_of_the_ego():
    env, prm, st, lane_a, _ = _cut_in_state(8.0, cutin_rate=100.0)
    m = prm.map
    traj = _drive(env, prm, st, 30)
    lanes = np.array([int(m.pt_lane[s.veh_pt[0]]) for s in traj])
    assert lanes[0] == lane_a  # merged into the ego's lane on the first step
    first = traj[0]
    lat0 = float(first.veh_lat[0])
    assert 2.5 < abs(lat0) < 4.5  # still where it was, a lane width beside its new lane
    # ahead of the ego with a short gap, then sliding over at lc_lat_speed
    ego_s = float(m.pt_tab[m.lane_start[lane_a] + 5, S_IN]) + float(first.v) * 0.1
    veh_s = float(m.pt_tab[first.veh_pt[0], S_IN] + first.veh_u[0])
    assert 4.0 <= veh_s - ego_s - sim.VEH_LEN <= 15.0
    lats = np.abs([float(s.veh_lat[0]) for s in traj])
    np.testing.assert_allclose(np.diff(lats[:20]), -prm.lc_lat_speed * prm.dt, atol=1e-4)
    assert lats[-1] < 0.5
    # the ego's corridor sees the car once it is within 2.2 m sideways
    xy = sim.veh_pose(m, traj[-1].veh_pt, traj[-1].veh_u, traj[-1].veh_lat)[0][0]
    rel = sim.to_frame(xy - jnp.stack([traj[-1].x, traj[-1].y]), traj[-1].yaw)
    assert float(rel[0]) > 0 and abs(float(rel[1])) < 2.2


@pytest.mark.parametrize("gap", [1.0, 25.0])
def test_no_cut_in_outside_the_gap_window(gap):
    env, prm, st, _lane_a, lane_b = _cut_in_state(gap, cutin_rate=100.0)
    traj = _drive(env, prm, st, 10)
    assert all(int(prm.map.pt_lane[s.veh_pt[0]]) == lane_b for s in traj)


def test_lane_changes_off_keep_the_old_step():
    """Rates 0: the step with lane-change state equals the step without it (issue-19
    baseline), bit for bit, on random crowded states."""
    from envs.driving import make_driving

    _, prm = make_driving("quick", max_vehicles=64, num_vehicles=64)
    m = prm.map
    rng = np.random.default_rng(3)
    f = jax.jit(lambda a, lat, bits: sim.traffic_step(
        m, *a[:4], jnp.ones(64), a[4], m.pt_xy[0], jnp.array([1.0, 0.0]), 5.0, m.pt_tab[0],
        jnp.zeros(m.light_group.shape[0], jnp.int32), prm, lat=lat, step_bits=bits))
    g = jax.jit(lambda a: sim.traffic_step(
        m, *a[:4], jnp.ones(64), a[4], m.pt_xy[0], jnp.array([1.0, 0.0]), 5.0, m.pt_tab[0],
        jnp.zeros(m.light_group.shape[0], jnp.int32), prm))
    for i in range(5):
        a = random_traffic(m, rng, 64, 10)
        new = f(a, jnp.zeros(64), jnp.uint32(i))
        old = g(a)
        for x, y in zip(new[:7], old, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        np.testing.assert_array_equal(np.asarray(new[7]), 0.0)


def test_background_lane_changes_move_continuously_to_parallel_lanes():
    from envs.driving import make_driving

    env, prm = make_driving("quick", max_vehicles=32, num_vehicles=32, lc_rate=0.5)
    m = prm.map
    left, right = np.asarray(m.lane_left), np.asarray(m.lane_right)
    _, st = env.reset(jax.random.PRNGKey(4), prm)
    step = jax.jit(lambda k, s: env.step(k, s, jnp.array([0.0, -1.0]), prm).state)
    changes = 0
    xy = np.asarray(sim.veh_pose(m, st.veh_pt, st.veh_u, st.veh_lat)[0])
    for i in range(150):
        st2 = step(jax.random.PRNGKey(i), st)
        xy2 = np.asarray(sim.veh_pose(m, st2.veh_pt, st2.veh_u, st2.veh_lat)[0])
        act = np.asarray(st.veh_active)
        jump = np.linalg.norm(xy2 - xy, axis=1)[act]
        assert (jump <= np.asarray(st2.veh_v)[act] * 0.1 + 0.2).all()  # no teleporting
        lane, lane2 = np.asarray(m.pt_lane[st.veh_pt]), np.asarray(m.pt_lane[st2.veh_pt])
        lat2 = np.asarray(st2.veh_lat)
        side = act & (lane2 != lane) & (np.abs(lat2) > 1.0)  # a lane change this step
        assert all(lane2[j] in (left[lane[j]], right[lane[j]]) for j in np.nonzero(side)[0])
        changes += int(side.sum())
        st, xy = st2, xy2
    assert changes > 0


def _parked_car_on_route(left_same: bool):
    """Route, start index and parked-car index (20 m ahead) of the first stretch of a quick
    route that stays 45 m on one lane whose left neighbour runs the same way (or the
    opposite way)."""
    from envs.driving import make_driving

    env, prm = make_driving("quick", num_vehicles=0, num_obstacles=1, episode_end="leaderboard")
    m, rb = prm.map, prm.routes
    lane = np.asarray(m.pt_lane)[np.asarray(rb.pt)]
    left, same = np.asarray(m.lane_left)[lane], np.asarray(m.lane_left_same)[lane]
    want = (left >= 0) & (same == left_same)
    for r in range(rb.num_routes):
        for i in range(5, int(rb.num[r]) - 80):
            if want[r, i] and (lane[r, i:i + 45] == lane[r, i]).all():
                return env, prm, r, i, i + 20
    pytest.skip("no such stretch on the quick routes")


@pytest.mark.parametrize("left_same", [True, False])
def test_expert_changes_lanes_to_pass_a_parked_car(left_same):
    """A parked car centred in the ego's lane (obst_* fields): the expert's route planner
    (env.parked_offset) moves into the lane on its left, passes without touching it and
    comes back, with no leaderboard infraction."""
    from envs.driving import expert_policy

    env, prm, r, i, ri = _parked_car_on_route(left_same)
    m, rb = prm.map, prm.routes
    _, st = env.reset_to_route(jax.random.PRNGKey(0), prm, r)
    st = st._replace(x=rb.xy[r, i, 0], y=rb.xy[r, i, 1], yaw=rb.yaw[r, i], prog=jnp.int32(i),
                     v=jnp.float32(6.0), last_xy=rb.xy[r, i],
                     obst_xy=rb.xy[r, ri][None], obst_yaw=rb.yaw[r, ri][None],
                     obst_active=jnp.ones(1, bool), obst_ri=jnp.array([ri], jnp.int32),
                     obst_q=jnp.zeros(1, jnp.float32))
    step = jax.jit(lambda k, s: env.step(k, s, expert_policy(s, prm), prm))
    own = int(m.pt_lane[rb.pt[r, i]])
    lanes = []
    for t in range(150):
        res = step(jax.random.PRNGKey(t), st)
        st = res.state
        assert not bool(res.info["infractions"]["collision_static"])
        lanes.append(int(m.pt_lane[sim.grid_lookup(m, jnp.stack([st.x, st.y]))[0]]))
    assert int(st.prog) > ri + 15  # passed it
    assert int(m.lane_left[own]) in lanes  # on the lane beside it meanwhile
    assert lanes[-1] != int(m.lane_left[own])  # and back on the route lanes after it
    # no leaderboard infraction: the opposite lane is lawful while passing (TwoWays rule)
    metrics = res.info["episode_metrics"]
    assert float(metrics["infraction_score"]) == 1.0 and float(metrics["outside_lanes"]) == 0.0


def test_expert_waits_for_oncoming_traffic_before_passing_on_the_opposite_lane():
    """Same parked car, single lane each way, an oncoming car on the opposite lane: the
    expert waits behind the parked car until the oncoming one has gone by, then passes;
    no collision of any kind."""
    from envs.driving import expert_policy

    env, prm, r, i, ri = _parked_car_on_route(False)
    m, rb = prm.map, prm.routes
    own = int(m.pt_lane[rb.pt[r, i]])
    opp = int(m.lane_left[own])
    _, st = env.reset_to_route(jax.random.PRNGKey(0), prm, r)
    # the oncoming car beside route point ri + 25, heading towards the ego at 7 m/s
    pt_o, u_o, _ = sim.beside(m, rb.pt[r, ri + 25][None], jnp.zeros(1), jnp.array([opp]),
                              jnp.array([False]))
    st = st._replace(x=rb.xy[r, i, 0], y=rb.xy[r, i, 1], yaw=rb.yaw[r, i], prog=jnp.int32(i),
                     v=jnp.float32(6.0), last_xy=rb.xy[r, i],
                     obst_xy=rb.xy[r, ri][None], obst_yaw=rb.yaw[r, ri][None],
                     obst_active=jnp.ones(1, bool), obst_ri=jnp.array([ri], jnp.int32),
                     obst_q=jnp.zeros(1, jnp.float32),
                     veh_pt=st.veh_pt.at[0].set(pt_o[0]), veh_u=st.veh_u.at[0].set(u_o[0]),
                     veh_v=st.veh_v.at[0].set(7.0), veh_vf=st.veh_vf.at[0].set(1.0),
                     veh_active=jnp.zeros_like(st.veh_active).at[0].set(True))
    step = jax.jit(lambda k, s: env.step(k, s, expert_policy(s, prm), prm))
    on_opp = []
    for t in range(200):
        res = step(jax.random.PRNGKey(t), st)
        st = res.state
        inf = res.info["infractions"]
        assert not bool(inf["collision"]) and not bool(inf["collision_static"])
        ego_lane = int(m.pt_lane[sim.grid_lookup(m, jnp.stack([st.x, st.y]))[0]])
        veh = sim.veh_pose(m, st.veh_pt, st.veh_u, st.veh_lat)[0][0]
        ahead = float(sim.to_frame(veh - jnp.stack([st.x, st.y]), st.yaw)[0])
        on_opp.append((ego_lane == opp, ahead))
    assert int(st.prog) > ri + 15  # passed the parked car in the end
    # never on the opposite lane while the oncoming car was still ahead of the ego
    assert not any(o and a > 0 for o, a in on_opp)
    assert any(o for o, _ in on_opp)
