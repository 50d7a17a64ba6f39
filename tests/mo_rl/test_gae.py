"""GAE against hand-computed values, including a terminated and a truncated step."""

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mo_rl.gae import gae, next_values

REWARDS = jnp.array([1.0, 2.0, 3.0, 4.0])
VALUES = jnp.array([0.5, 1.0, 1.5, 2.0])
FINAL = jnp.array([10.0, 20.0, 30.0, 40.0])  # V(info["final_obs"]) per step
LAST = jnp.array(3.0)  # V(obs after the rollout)
TERM = jnp.array([0, 1, 0, 0], bool)  # step 1 terminates: no bootstrap
TRUNC = jnp.array([0, 0, 1, 0], bool)  # step 2 truncates: bootstrap from final obs (30)


def test_next_values_pick_final_obs_only_where_done():
    nv = next_values(VALUES, LAST, FINAL, TERM | TRUNC)
    np.testing.assert_allclose(nv, [1.0, 20.0, 30.0, 3.0])


def test_gae_hand_computed_terminated_and_truncated():
    gamma, lam = 0.9, 0.8
    nv = next_values(VALUES, LAST, FINAL, TERM | TRUNC)
    adv, target = gae(REWARDS, VALUES, nv, TERM, TRUNC, gamma, lam)
    # deltas: 1+.9*1-.5=1.4 | 2-1=1 (terminated) | 3+.9*30-1.5=28.5 | 4+.9*3-2=4.7
    # A3=4.7, A2=28.5 (trace cut), A1=1.0 (trace cut), A0=1.4+.72*1.0=2.12
    np.testing.assert_allclose(adv, [2.12, 1.0, 28.5, 4.7], rtol=1e-6)
    np.testing.assert_allclose(target, [2.62, 2.0, 30.0, 6.7], rtol=1e-6)


def test_truncation_treated_as_termination_would_differ():
    """Guards the bootstrap: the same step marked terminated loses the 0.9*30 term."""
    nv = next_values(VALUES, LAST, FINAL, TERM | TRUNC)
    adv, _ = gae(REWARDS, VALUES, nv, TERM | TRUNC, jnp.zeros(4, bool), 0.9, 0.8)
    np.testing.assert_allclose(adv[2], 1.5, rtol=1e-6)


def test_gae_broadcasts_over_envs_and_objectives():
    """Flags [T, B] broadcast over a trailing objective axis K; each column matches 1-D."""
    rng = np.random.default_rng(0)
    t, b, k = 6, 3, 2
    r = jnp.asarray(rng.normal(size=(t, b, k)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(t, b, k)), jnp.float32)
    nv = jnp.asarray(rng.normal(size=(t, b, k)), jnp.float32)
    term = jnp.asarray(rng.random((t, b)) < 0.2)
    trunc = jnp.asarray(rng.random((t, b)) < 0.2)
    adv, _ = gae(r, v, nv, term, trunc, 0.99, 0.95)
    assert adv.shape == (t, b, k)
    for i in range(b):
        for j in range(k):
            a1, _ = gae(r[:, i, j], v[:, i, j], nv[:, i, j], term[:, i], trunc[:, i], 0.99, 0.95)
            np.testing.assert_allclose(adv[:, i, j], a1, rtol=1e-5, atol=1e-6)


def _reference(r, v, nv, term, trunc, gamma, lam):
    """Textbook loop: A_t = sum_l (gamma lam)^l delta_{t+l} until the episode ends."""
    n = len(r)
    delta = [r[i] + gamma * (1 - term[i]) * nv[i] - v[i] for i in range(n)]
    out = []
    for i in range(n):
        a, c = 0.0, 1.0
        for j in range(i, n):
            a += c * delta[j]
            if term[j] or trunc[j]:
                break
            c *= gamma * lam
        out.append(a)
    return np.array(out)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.floats(0.5, 1.0), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_gae_matches_textbook_loop(n, gamma, lam, seed):
    rng = np.random.default_rng(seed)
    r, v, nv = (rng.normal(size=n).astype(np.float32) for _ in range(3))
    term, trunc = rng.random(n) < 0.25, rng.random(n) < 0.25
    adv, target = gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv), jnp.asarray(term),
                      jnp.asarray(trunc), gamma, lam)
    ref = _reference(r, v, nv, term, trunc, gamma, lam)
    np.testing.assert_allclose(adv, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(target, ref + v, rtol=1e-4, atol=1e-4)


def test_discarded_step_teaches_nothing_and_cuts_the_trace():
    """A live simulator lost at step 2 (envs.carla): the env truncates it with reward 0 and
    the last real observation as final obs (V = 1.5). Discarded, it gets advantage 0 and
    its own value as target, and step 1 bootstraps from V(obs_2) with no lambda trace
    through the fake step."""
    rewards = jnp.array([1.0, 2.0, 0.0, 4.0])
    final = jnp.array([10.0, 20.0, 1.5, 40.0])
    trunc = jnp.array([0, 0, 1, 0], bool)
    discard = jnp.array([0, 0, 1, 0], bool)
    nv = next_values(VALUES, LAST, final, trunc)
    adv, target = gae(rewards, VALUES, nv, jnp.zeros(4, bool), trunc, 0.9, 0.8,
                      discard=discard)
    # deltas 1.4 | 2 + .9 * 1.5 - 1 = 2.35 | 0 (discarded) | 4.7; A0 = 1.4 + .72 * 2.35
    np.testing.assert_allclose(adv, [3.092, 2.35, 0.0, 4.7], rtol=1e-6)
    np.testing.assert_allclose(target, [3.592, 3.35, 1.5, 6.7], rtol=1e-6)
    kept, _ = gae(rewards, VALUES, nv, jnp.zeros(4, bool), trunc, 0.9, 0.8)
    assert abs(float(kept[1]) - 2.35) > 0.1  # without the flag the fake step leaks in
