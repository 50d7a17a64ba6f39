"""Hand-computed checks of every coopetition formula and of the env protocol."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs.coopetition import GAMES, make_game, weights_for
from envs.coopetition import mechanics as M
from mo_rl.wrappers import AutoReset, EpisodeStats, VmapEnv


# ---- value creation -----------------------------------------------------------------
def test_synergy_is_the_geometric_mean_and_zero_when_one_agent_gives_nothing():
    assert float(M.synergy(jnp.array([50.0, 50.0]))) == pytest.approx(50.0)
    assert float(M.synergy(jnp.array([75.0, 25.0]))) == pytest.approx(np.sqrt(75 * 25), 1e-6)
    assert float(M.synergy(jnp.array([2.0, 4.0, 8.0]))) == pytest.approx(4.0, 1e-6)
    assert float(M.synergy(jnp.array([100.0, 0.0]))) == 0.0
    assert float(M.synergy(jnp.array([100.0, 60.0, 0.0]))) == 0.0


def test_individual_value_log_and_power_forms():
    log = M.individual_value(jnp.float32(50.0), 20.0, 0.75, 0.0)
    power = M.individual_value(jnp.float32(50.0), 20.0, 0.75, 1.0)
    assert float(log) == pytest.approx(20 * np.log(51), 1e-6)  # 78.63
    assert float(power) == pytest.approx(50**0.75, 1e-6)  # 18.80
    assert float(M.individual_value(jnp.float32(0.0), 20.0, 0.75, 0.0)) == 0.0


def test_private_payoff_and_total_value_by_hand():
    a = jnp.array([50.0, 20.0])
    e = jnp.array([100.0, 80.0])
    pi = M.private_payoffs(a, e, jnp.array([0.6, 0.4]), 20.0, 0.75, 0.0, 0.65)
    g = np.sqrt(50 * 20)
    want = [50 + 20 * np.log(51) + 0.6 * 0.65 * g, 60 + 20 * np.log(21) + 0.4 * 0.65 * g]
    np.testing.assert_allclose(pi, want, rtol=1e-6)
    V = M.total_value(a, 20.0, 0.75, 0.0, 0.65)
    assert float(V) == pytest.approx(20 * np.log(51) + 20 * np.log(21) + 0.65 * g, 1e-6)


def test_integrated_utility_uses_min_of_trust_and_reputation_ceiling():
    pi = jnp.array([10.0, 20.0, 30.0])
    D = jnp.array([[0, 0.5, 0.2], [0.4, 0, 0.1], [0.3, 0.6, 0]])
    T = jnp.array([[1, 0.9, 0.5], [0.2, 1, 0.7], [0.5, 0.5, 1]])
    R = jnp.array([[0, 0.3, 0.0], [0.0, 0, 0.5], [0.1, 0.0, 0]])
    U = M.integrated_utilities(pi, M.effective_weights(D, T, R))
    want = [10 + 0.7 * 0.5 * 20 + 0.5 * 0.2 * 30,
            20 + 0.2 * 0.4 * 10 + 0.5 * 0.1 * 30,
            30 + 0.5 * 0.3 * 10 + 0.5 * 0.6 * 20]
    np.testing.assert_allclose(U, want, rtol=1e-6)


def test_reward_modes_and_the_mixing_weight():
    pi, U = jnp.array([1.0, 3.0]), jnp.array([2.0, 6.0])
    np.testing.assert_allclose(M.mix_rewards(pi, U, weights_for("private")), [1, 3])
    np.testing.assert_allclose(M.mix_rewards(pi, U, weights_for("integrated")), [2, 6])
    np.testing.assert_allclose(M.mix_rewards(pi, U, weights_for("cooperative")), [4, 4])
    np.testing.assert_allclose(M.mix_rewards(pi, U, weights_for(0.25)), [1.75, 3.25])
    for bad in ("selfish", 1.5, -0.1):
        with pytest.raises(ValueError, match=r"mode|mixing"):
            weights_for(bad)


# ---- trust ----------------------------------------------------------------------------
def test_trust_update_by_hand():
    T = jnp.array([[1.0, 0.5], [0.6, 1.0]])
    R = jnp.array([[0.0, 0.2], [0.1, 0.0]])
    D = jnp.array([[0.0, 0.5], [0.8, 0.0]])
    b = jnp.array([30.0, 30.0])
    a = jnp.array([29.5, 30.2])  # agent 0 slightly below, agent 1 slightly above baseline
    T2, R2 = M.trust_update(T, R, a, b, D, 0.1, 0.3, 0.6, 0.03, 0.5, 1.0)
    s0, s1 = np.tanh(-0.5), np.tanh(0.2)
    t01 = 0.5 + 0.1 * s1 * max(0, min(1 - 0.5, 0.8 - 0.5))  # i=0 watches j=1 (s > 0)
    t10 = 0.6 + 0.3 * s0 * 0.6 * (1 + 0.5 * 0.8)  # i=1 watches j=0 (s < 0)
    np.testing.assert_allclose(T2, [[1, t01], [t10, 1]], rtol=1e-6)
    r10 = 0.1 + 0.6 * -s0 * (1 - 0.1)  # damage grows where the signal is negative
    np.testing.assert_allclose(R2, [[0, 0.2 - 0.03 * 0.2], [r10, 0]], rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_trust_stays_in_zero_to_one_minus_reputation(seed):
    rng = np.random.default_rng(seed)
    n = 3
    R = rng.uniform(0, 1, (n, n))
    T = rng.uniform(0, 1, (n, n)) * (1 - R)
    np.fill_diagonal(T, 1)
    np.fill_diagonal(R, 0)
    D = rng.uniform(0, 1, (n, n))
    np.fill_diagonal(D, 0)
    a = rng.uniform(0, 100, n)
    lp, lm, mu, dr = rng.uniform(0.01, 1, 4)
    T2, R2 = M.trust_update(jnp.asarray(T), jnp.asarray(R), jnp.asarray(a),
                            jnp.full(n, 30.0), jnp.asarray(D), lp, lm, mu, dr, 0.5,
                            rng.uniform(0.01, 2))
    off = ~np.eye(n, dtype=bool)
    T2, R2 = np.asarray(T2), np.asarray(R2)
    assert np.all(T2[off] >= 0) and np.all(T2[off] <= 1 - R[off] + 1e-6)  # ceiling: old R
    assert np.all((R2 >= 0) & (R2 <= 1))
    eff = np.asarray(M.effective_weights(jnp.ones((n, n)), jnp.asarray(T2), jnp.asarray(R2)))
    assert np.all(eff[off] >= 0) and np.all(eff[off] <= 1 - R2[off] + 1e-6)


# ---- collective action ------------------------------------------------------------------
def test_nash_effort_satisfies_the_first_order_condition():
    omega, beta, c, n = 25.0, 0.7, 1.0, 4
    a_star = M.nash_effort(omega, beta, c, n)

    def own_payoff(ai, others):
        return M.team_payoffs(jnp.concatenate([ai[None], others]), omega, beta, c)[0]

    others = jnp.full(n - 1, a_star)
    grad = jax.grad(own_payoff)(jnp.float32(a_star), others)
    assert abs(float(grad)) < 1e-4
    # and it is a maximum: a little more or less effort pays less
    for d in (-1.0, 1.0):
        assert own_payoff(jnp.float32(a_star + d), others) < own_payoff(jnp.float32(a_star),
                                                                        others)
    # the social optimum is the FOC of the summed payoff at symmetric effort
    a_opt = M.social_optimum_effort(omega, beta, c, n)
    welfare = lambda x: jnp.sum(M.team_payoffs(jnp.full(n, x), omega, beta, c))
    assert abs(float(jax.grad(welfare)(jnp.float32(a_opt)))) < 1e-3
    assert a_opt > a_star


def test_loyalty_term_by_hand():
    a = jnp.array([10.0, 20.0, 30.0])
    L = M.loyalty_term(a, jnp.array([0.5, 0.5, 0.5]), 25.0, 0.7, 1.0, 0.8, 0.3)
    Q = 25 * 60**0.7
    pi = Q / 3 - np.array([10, 20, 30])
    assert float(L[0]) == pytest.approx(0.5 * (0.8 * (pi[1] + pi[2]) / 2 + 0.3 * 10), 1e-5)


def test_collective_multiplier_by_hand():
    rates = jnp.array([0.2, 0.7, 0.9])
    loyalty = jnp.array([0.2, 0.65, 0.5])
    m = M.collective_multiplier(rates, loyalty, 0.3, 0.5, 0.6, 0.15, 0.5, 0.2)
    np.testing.assert_allclose(m, [0.5, 1 + 0.15 * 0.65, 1.0], rtol=1e-6)
    m = M.collective_multiplier(jnp.array([0.6, 0.7]), jnp.array([0.7, 0.1]), 0.3, 0.5, 0.6,
                                0.15, 0.5, 0.2)
    np.testing.assert_allclose(m, [1.2 * (1 + 0.15 * 0.7), 1.2], rtol=1e-6)


def test_team_production_check_value_from_the_reference_notes():
    env, p = make_game("TeamProduction-v0")
    _, s = env.reset(jax.random.key(0), p)
    r = env.step(jax.random.key(0), s, jnp.full((4, 1), 25.0), p).reward
    np.testing.assert_allclose(r[:, 0], 179.73, atol=0.01)
    np.testing.assert_allclose(r[:, 0], 94.22 * (1 + 3 * 0.55 * 0.55), atol=0.01)


# ---- reciprocity ------------------------------------------------------------------------
def test_window_mean_counts_only_rows_of_this_episode():
    hist = jnp.array([[9.0], [9.0], [1.0], [2.0], [3.0]])
    assert float(M.window_mean(hist, 3, 5)[0]) == pytest.approx(2.0)
    assert float(M.window_mean(hist, 3, 2)[0]) == pytest.approx(2.5)
    assert float(M.window_mean(hist, 3, 0)[0]) == 0.0


def test_reciprocity_multiplier_by_hand():
    a = jnp.array([60.0, 20.0])
    memory = jnp.array([59.0, 21.5])
    T = jnp.array([[1.0, 0.4], [0.7, 1.0]])
    D = jnp.array([[0.0, 0.4], [0.7, 0.0]])
    m = M.reciprocity_multiplier(a, memory, T, D, 1.2, 1.5, 1.0, 1.2, 0.8, 90.0)
    u0 = 1.2 * 0.4 * (1 + 0.8 * 0.4) * 1.2 * 0.4**1.5 * np.tanh(20 - 21.5)
    u1 = 1.2 * 0.7 * (1 + 0.8 * 0.7) * 1.2 * 0.7**1.5 * np.tanh(60 - 59)
    np.testing.assert_allclose(m, [1 + u0 / 90, 1 + u1 / 90], rtol=1e-6)
    floor = M.reciprocity_multiplier(a, memory, T, D, 1e4, 1.0, 1.0, 1e4, 0.8, 1.0)
    assert float(floor[0]) == pytest.approx(0.01)


# ---- env protocol ---------------------------------------------------------------------
def test_registry_lists_every_game():
    names = set(envs.registry.names())
    assert set(GAMES) <= names
    with pytest.raises(KeyError, match="unknown coopetition game"):
        make_game("NoSuchGame")
    with pytest.raises(TypeError, match="bad argument"):
        make_game("SLCD-v0", colour="red")


@pytest.mark.parametrize("name", sorted(GAMES))
def test_every_game_steps_under_the_usual_wrapper_stack(name):
    env, p = envs.make(name, reward_mode="cooperative")
    n = env.num_agents
    venv = VmapEnv(EpisodeStats(AutoReset(env)), 2)
    obs, s = venv.reset(jax.random.split(jax.random.key(0), 2), p)
    assert obs.shape == (2, n, env.obs_dim) == (2, *env.observation_space(p).shape)
    act = jnp.broadcast_to(p.endowment[:, None] * 0.5, (2, n, 1))
    res = jax.jit(venv.step)(jax.random.split(jax.random.key(1), 2), s, act, p)
    assert res.reward.shape == (2, n, 1) and bool(jnp.all(jnp.isfinite(res.reward)))
    assert env.action_space(p).shape == (n, 1)
    # cooperative mode: every agent gets the same reward where no per-agent multiplier acts
    if GAMES[name][0] in ("trust", "interdependence"):
        np.testing.assert_allclose(res.reward[:, :, 0], res.reward[:, :1, 0].repeat(n, 1),
                                   rtol=1e-6)


def test_mixing_weight_sweep_is_one_vmap():
    env, p = make_game("PublicGoods-v0")
    ws = jnp.linspace(0, 1, 5)
    params = jax.vmap(lambda m: p.replace(reward_weights=jnp.stack([1 - m, 0 * m, m])))(ws)

    def one(params):
        _, s = env.reset(jax.random.key(0), params)
        a = jnp.array([[10.0], [20.0], [30.0], [40.0], [50.0]])
        return env.step(jax.random.key(0), s, a, params).reward[:, 0]

    r = jax.jit(jax.vmap(one))(params)
    r0, r1 = r[0], r[-1]
    np.testing.assert_allclose(r, (1 - ws[:, None]) * r0 + ws[:, None] * r1, rtol=1e-5)


def test_team_payoff_option_is_the_tr3_reports_payoff():
    env, p = make_game("TeamProduction-v0", reward_mode="private", team_payoff=1.0,
                       trust_enabled=False)
    _, s = env.reset(jax.random.key(0), p)
    a = jnp.array([[10.0], [20.0], [30.0], [40.0]])
    r = env.step(jax.random.key(0), s, a, p).reward[:, 0]
    want = 25 * 100**0.7 / 4 - np.array([10, 20, 30, 40])
    np.testing.assert_allclose(r, want * np.array([1, 1, 1, 1]), rtol=1e-5)  # no rate < 0.2
