"""FactoredPendulum: its factors' weighted sum is Gymnasium's Pendulum-v1 reward."""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from envs import registry
from envs.classic import PENDULUM_WEIGHTS, FactoredPendulum, Pendulum, gym_reward
from mo_rl.scalarize import scalarizer


def test_weighted_sum_equals_gymnasium_reward_on_random_states():
    env, params = registry.make("FactoredPendulum-v1")
    genv = gym.make("Pendulum-v1").unwrapped
    genv.reset(seed=0)
    rng = np.random.default_rng(0)
    scal = scalarizer(env.reward_spec, "weighted_sum", weights=PENDULUM_WEIGHTS)
    plain = Pendulum()
    for _ in range(50):
        th, thdot = rng.uniform(-3 * np.pi, 3 * np.pi), rng.uniform(-8, 8)
        u = rng.uniform(-3, 3, size=(1,)).astype(np.float32)  # beyond the bounds: clipped
        genv.state = np.array([th, thdot])
        g_obs, g_rew, *_ = genv.step(u)
        _, state = env.reset(jax.random.key(0), params)
        state = state.replace(theta=jnp.float32(th), theta_dot=jnp.float32(thdot))
        res = env.step(jax.random.key(1), state, jnp.asarray(u), params)
        np.testing.assert_allclose(float(scal(res.reward)), g_rew, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(float(gym_reward(res.reward)), g_rew, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(res.obs), g_obs, rtol=1e-4, atol=1e-4)
        # same dynamics and the same scalar reward as the plain Pendulum
        pres = plain.step(jax.random.key(1), state, jnp.asarray(u), plain.default_params)
        np.testing.assert_allclose(float(pres.reward[0]), g_rew, rtol=1e-4, atol=1e-4)


def test_factor_scale_rescales_factors_not_the_true_reward():
    env = FactoredPendulum()
    p1 = env.default_params
    p10 = p1.replace(factor_scale=(1.0, 10.0, 1.0))
    _, state = env.reset(jax.random.key(3), p1)
    a = jnp.array([1.5])
    r1 = env.step(jax.random.key(0), state, a, p1).reward
    r10 = env.step(jax.random.key(0), state, a, p10).reward
    np.testing.assert_allclose(np.asarray(r10), np.asarray(r1) * np.array([1, 10, 1]),
                               rtol=1e-6)
    np.testing.assert_allclose(float(gym_reward(r10, (1.0, 10.0, 1.0))),
                               float(gym_reward(r1)), rtol=1e-5)
    assert env.reward_spec.levels == ((0,), (1,), (2,))
