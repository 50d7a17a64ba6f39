"""CartPole / Pendulum against gymnasium's own CartPole-v1 / Pendulum-v1,
step by step from the same state (an independent implementation)."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401
from envs.classic import CartPole, CartPoleState, Pendulum, PendulumState


def _rollout(env, params, actions, key):
    obs, state = env.reset(jax.random.key(key), params)

    def body(s, a):
        r = env.step(jax.random.key(0), s, a, params)
        return r.state, (s, r)

    _, (states, res) = jax.jit(lambda s: jax.lax.scan(body, s, actions))(state)
    return obs, states, res


def test_cartpole_matches_gymnasium_step_by_step():
    env, p = CartPole(), CartPole().default_params
    gym_env = gymnasium.make("CartPole-v1").unwrapped
    gym_env.reset(seed=0)
    rng = np.random.default_rng(0)
    checked = terminations = 0
    for ep in range(8):
        actions = jnp.asarray(rng.integers(0, 2, 60), jnp.int32)
        obs0, states, res = _rollout(env, p, actions, ep)
        assert np.all(np.abs(np.asarray(obs0)) <= 0.05)
        for t in range(60):
            s = jax.tree.map(lambda x, t=t: np.asarray(x[t]), states)
            gym_env.state = np.array([s.x, s.x_dot, s.theta, s.theta_dot], np.float64)
            gym_env.steps_beyond_terminated = None
            g_obs, g_rew, g_term, _g_trunc, _ = gym_env.step(int(actions[t]))
            np.testing.assert_allclose(res.obs[t], g_obs, rtol=1e-5, atol=1e-6)
            assert float(res.reward[t, 0]) == g_rew == 1.0
            assert bool(res.terminated[t]) == g_term
            checked += 1
            if g_term:
                terminations += 1
                break
    assert checked > 100 and terminations >= 6  # random play falls within 60 steps


def test_cartpole_long_trajectory_and_truncation():
    env, p = CartPole(), CartPole().default_params
    gym_env = gymnasium.make("CartPole-v1")
    assert gym_env.spec.max_episode_steps == p.max_steps == 500
    _obs, state = env.reset(jax.random.key(1), p)
    g = gym_env.unwrapped
    g.reset(seed=0)
    g.state = np.array([state.x, state.x_dot, state.theta, state.theta_dot], np.float64)
    for t in range(25):  # free-running: float32 vs float64 stays within 1e-4
        a = t % 2
        r = env.step(jax.random.key(0), state, a, p)
        g_obs, *_ = g.step(a)
        np.testing.assert_allclose(r.obs, g_obs, rtol=1e-4, atol=1e-5)
        state = r.state
    near_end = CartPoleState(*(jnp.float32(0.0),) * 4, time=jnp.int32(499))
    r = env.step(jax.random.key(0), near_end, 0, p)
    assert bool(r.truncated) and not bool(r.terminated)
    assert not bool(
        env.step(jax.random.key(0), near_end.replace(time=jnp.int32(10)), 0, p).truncated
    )


def test_pendulum_matches_gymnasium_step_by_step():
    env, p = Pendulum(), Pendulum().default_params
    gym_env = gymnasium.make("Pendulum-v1")
    assert gym_env.spec.max_episode_steps == p.max_steps == 200
    g = gym_env.unwrapped
    g.reset(seed=0)
    rng = np.random.default_rng(1)
    for ep in range(4):
        actions = jnp.asarray(rng.uniform(-3, 3, (50, 1)), jnp.float32)  # some get clipped
        obs0, states, res = _rollout(env, p, actions, ep)
        th0, thd0 = float(states.theta[0]), float(states.theta_dot[0])
        assert -np.pi <= th0 <= np.pi and -1 <= thd0 <= 1
        np.testing.assert_allclose(obs0, [np.cos(th0), np.sin(th0), thd0], rtol=1e-6)
        for t in range(50):
            g.state = np.array([states.theta[t], states.theta_dot[t]], np.float64)
            g_obs, g_rew, _g_term, _g_trunc, _ = g.step(np.asarray(actions[t]))
            np.testing.assert_allclose(res.obs[t], g_obs, rtol=1e-5, atol=1e-5)
            assert float(res.reward[t, 0]) == pytest.approx(g_rew, rel=1e-5, abs=1e-5)
            assert not bool(res.terminated[t])
    s = PendulumState(jnp.float32(1.0), jnp.float32(0.0), jnp.int32(199))
    assert bool(env.step(jax.random.key(0), s, jnp.zeros(1), p).truncated)


@pytest.mark.parametrize("cls", [CartPole, Pendulum])
def test_spaces_match_gymnasium(cls):
    env = cls()
    p = env.default_params
    gym_env = gymnasium.make(env.name)
    assert env.observation_space(p).to_gymnasium() == gym_env.observation_space
    assert env.action_space(p).to_gymnasium() == gym_env.action_space
    assert env.reward_spec.names == ("reward",)
