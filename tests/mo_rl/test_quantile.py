"""Quantile Huber loss, cosine tau embedding and n-step returns against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from mo_rl.quantile import CosineTauEmbedding, cosine_features, nstep_return, quantile_huber_loss

PRED = jnp.array([0.0, 1.0])
TAU = jnp.array([0.25, 0.75])
TARGET = jnp.array([0.5, 3.0])


@pytest.mark.parametrize(
    ("kappa", "expected"),
    # hand computation: delta = [[0.5, 3.0], [-0.5, 2.0]], weights [[.25,.25],[.25,.75]]
    [(1.0, 0.90625), (2.0, 0.640625), (0.0, 1.25)],
)
def test_quantile_huber_loss_hand_values(kappa, expected):
    loss = quantile_huber_loss(PRED, TAU, TARGET, kappa)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


def test_quantile_huber_loss_vs_rlax_convention():
    """rlax does not divide by kappa: equal for kappa=1, factor kappa otherwise."""
    ours1 = quantile_huber_loss(PRED, TAU, TARGET, 1.0)
    np.testing.assert_allclose(ours1, rlax.quantile_regression_loss(PRED, TAU, TARGET, 1.0),
                               rtol=1e-6)
    ours2 = quantile_huber_loss(PRED, TAU, TARGET, 2.0)
    np.testing.assert_allclose(2.0 * ours2, rlax.quantile_regression_loss(PRED, TAU, TARGET, 2.0),
                               rtol=1e-6)


def test_quantile_huber_loss_gradients():
    """d/dpred_i = -(1/N') sum_j w_ij clip(delta_ij, -kappa, kappa) / kappa; none into target."""
    g_pred, g_target = jax.grad(quantile_huber_loss, argnums=(0, 2))(PRED, TAU, TARGET, 1.0)
    # i=0: -(.25*.5 + .25*1)/2 = -0.1875; i=1: -(.25*-.5 + .75*1)/2 = -0.3125
    np.testing.assert_allclose(g_pred, [-0.1875, -0.3125], rtol=1e-6)
    np.testing.assert_allclose(g_target, [0.0, 0.0])


def test_quantile_loss_minimised_at_true_quantiles():
    """Fitting pred to many target samples recovers the target's quantiles."""
    samples = jnp.arange(1.0, 101.0)  # uniform on 1..100
    tau = jnp.array([0.1, 0.5, 0.9])
    grid = jnp.linspace(0.0, 101.0, 1011)
    losses = jax.vmap(lambda v: quantile_huber_loss(jnp.full(3, v), tau, samples, 0.0))(grid)
    # the pinball loss at one tau is minimised on [q_tau]: check each tau separately
    for i, t in enumerate([0.1, 0.5, 0.9]):
        per = jax.vmap(lambda v, i=i, t=t: quantile_huber_loss(
            jnp.array([v]), jnp.array([t]), samples, 0.0))(grid)
        best = float(grid[jnp.argmin(per)])
        assert 100 * t <= best <= 100 * t + 1.0, (t, best)
    assert jnp.all(jnp.isfinite(losses))


def test_cosine_features_hand_values():
    np.testing.assert_allclose(cosine_features(jnp.array(0.5), 4), [1.0, 0.0, -1.0, 0.0],
                               atol=1e-6)
    np.testing.assert_allclose(cosine_features(jnp.array([0.0, 1.0]), 3),
                               [[1, 1, 1], [1, -1, 1]], atol=1e-6)
    assert cosine_features(jnp.zeros((5, 7)), 64).shape == (5, 7, 64)


def test_cosine_features_match_float64_cos():
    # the polynomial (not jnp.cos) against cos(pi i tau) in float64 on the same float32 tau,
    # over random fractions, the ends, quarter points and values outside [0, 1]
    tau = jnp.concatenate([jax.random.uniform(jax.random.PRNGKey(0), (20_000,)),
                           jnp.array([0.0, 1.0, 0.5, 0.25, 0.75, 1e-7, 1 - 6e-8, 1 / 3,
                                      -0.3, 1.7, 2.0])])
    exact = np.cos(np.pi * np.arange(64) * np.asarray(tau, np.float64)[:, None])
    err = np.abs(np.asarray(cosine_features(tau, 64), np.float64) - exact)
    # float32 rounding of i * tau bounds both; it grows with |tau| outside [0, 1]
    assert err[:20_000].max() < 1e-5 and err.max() < 3e-5, err.max()

def test_tau_embedding_is_relu_dense_of_cosines():
    module = CosineTauEmbedding(features=2, num_cosines=3)
    params = {"params": {"Dense_0": {"kernel": jnp.array([[1.0, -1.0], [2.0, 0.0], [0.0, 3.0]]),
                                     "bias": jnp.array([0.5, -0.5])}}}
    # tau = 0 -> cos = [1, 1, 1] -> [1+2+0+0.5, -1+0+3-0.5] = [3.5, 1.5]
    # tau = 1 -> cos = [1, -1, 1] -> [1-2+0+0.5, -1-0+3-0.5] = [-0.5 -> 0, 1.5]
    out = module.apply(params, jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(out, [[3.5, 1.5], [0.0, 1.5]], atol=1e-6)
    init = module.init(jax.random.PRNGKey(0), jnp.zeros((4,)))
    assert init["params"]["Dense_0"]["kernel"].shape == (3, 2)
    assert CosineTauEmbedding(16).apply(
        CosineTauEmbedding(16).init(jax.random.PRNGKey(0), jnp.zeros((8,))),
        jnp.zeros((8,))).shape == (8, 16)


@pytest.mark.parametrize(
    ("terminated", "truncated", "ret", "discount", "last"),
    [
        ([0, 0, 0], [0, 0, 0], 3.0, 0.125, 2),  # 1 + .5*2 + .25*4
        ([0, 1, 0], [0, 0, 0], 2.0, 0.0, 1),  # terminal at step 1: no bootstrap
        ([0, 0, 0], [0, 1, 0], 2.0, 0.25, 1),  # truncation still bootstraps
        ([1, 0, 1], [0, 0, 0], 1.0, 0.0, 0),
        ([0, 0, 0], [0, 0, 1], 3.0, 0.125, 2),
    ],
)
def test_nstep_return_by_hand(terminated, truncated, ret, discount, last):
    rewards = jnp.array([1.0, 2.0, 4.0])
    g, d, i = nstep_return(rewards, jnp.array(terminated, bool), jnp.array(truncated, bool), 0.5)
    np.testing.assert_allclose(g, ret, rtol=1e-6)
    np.testing.assert_allclose(d, discount, rtol=1e-6)
    assert int(i) == last


def test_nstep_return_vector_reward_and_vmap():
    rewards = jnp.array([[1.0, -1.0], [2.0, 0.0], [4.0, 10.0]])  # (n, K)
    term = jnp.array([False, True, False])
    g, d, i = nstep_return(rewards, term, jnp.zeros(3, bool), 0.5)
    np.testing.assert_allclose(g, [2.0, -1.0])
    assert float(d) == 0.0 and int(i) == 1
    batch = jax.vmap(nstep_return, in_axes=(0, 0, 0, None))(
        jnp.stack([rewards, rewards]), jnp.stack([term, jnp.zeros(3, bool)]),
        jnp.zeros((2, 3), bool), 0.5)
    np.testing.assert_allclose(batch[0], [[2.0, -1.0], [3.0, 1.5]])
    np.testing.assert_allclose(batch[1], [0.0, 0.125])
