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
