"""evaluate_policy: exact returns/lengths on deterministic toy envs, masking
after the end, max_steps cut-off, episode_metrics averaged over finished ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401
from envs.toy import Chain, PreorderedShortcut
from mo_rl.env import StepResult
from mo_rl.rollout import evaluate_policy
from mo_rl.wrappers import Wrapper

right = lambda obs, k: jnp.int32(1)
exit_ = lambda obs, k: jnp.int32(0)


def test_chain_returns_and_lengths_exact():
    env = Chain(n=6)
    p = env.default_params
    out = jax.jit(lambda k: evaluate_policy(env, p, right, k, 5, 100))(jax.random.key(0))
    np.testing.assert_allclose(out["returns"], np.ones((5, 1)))
    np.testing.assert_array_equal(out["lengths"], [5] * 5)
    assert bool(out["finished"].all())
    np.testing.assert_allclose(out["mean_return"], [1.0])
    assert out["episode_metrics"] == {}
    out = evaluate_policy(env, p, exit_, jax.random.key(0), 3, 100)
    np.testing.assert_allclose(out["returns"], np.full((3, 1), 0.1), rtol=1e-6)
    np.testing.assert_array_equal(out["lengths"], [1, 1, 1])


def test_max_steps_cuts_episodes_and_mixed_lengths_are_masked():
    env = Chain(n=10)
    p = env.default_params
    out = evaluate_policy(env, p, right, jax.random.key(0), 2, 3)
    np.testing.assert_array_equal(out["lengths"], [3, 3])
    assert not bool(out["finished"].any())
    np.testing.assert_allclose(out["returns"], 0.0)
    # random policy: each episode's return is 0.1 (exit) or 1.0 (goal), never summed past its end
    rand = lambda obs, k: jax.random.bernoulli(k, 0.7).astype(jnp.int32)
    out = evaluate_policy(env, p, rand, jax.random.key(1), 64, 100)
    r = np.asarray(out["returns"][:, 0], np.float64)
    assert set(np.round(r, 5)) <= {0.1, 1.0}
    lengths = np.asarray(out["lengths"])
    assert np.all(lengths[np.round(r, 5) == 1.0] == 9)  # goal reached after 9 steps right
    assert np.all(lengths <= 9)
    assert lengths.min() >= 1 and len(set(lengths)) > 2  # different lengths in one batch


class _WithMetrics(Wrapper):
    """Chain + info["episode_metrics"] = {"success": reached goal, "pos": position}."""

    def step(self, key, state, action, params):
        r = self._env.step(key, state, action, params)
        success = (r.reward[0] == params.goal_reward) & r.terminated
        info = {"episode_metrics": {"success": success, "pos": r.state.pos}}
        return StepResult(r.obs, r.state, r.reward, r.terminated, r.truncated, info)


@pytest.mark.parametrize("sequential", [False, True])
def test_episode_metrics_averaged_over_finished_episodes(sequential):
    env = _WithMetrics(Chain(n=5))
    p = env.default_params

    # exit at states 0/1 in episode with odd seed; policy by position: go right until pos 2,
    # then exit (success 0, pos 2) or right to the goal (success 1, pos 4), by coin flip
    def pol(obs, k):
        pos = jnp.argmax(obs)
        return jnp.where(pos < 2, 1, jax.random.bernoulli(k, 0.5).astype(jnp.int32))

    out = jax.jit(lambda k: evaluate_policy(env, p, pol, k, 200, 50, sequential=sequential))(
        jax.random.key(2)
    )
    succ = np.asarray(out["returns"][:, 0]) == 1.0
    pos_end = np.asarray(out["lengths"])  # exit at pos j happens on step j+1
    assert bool(out["finished"].all())
    assert out["episode_metrics"]["success"] == pytest.approx(succ.mean())
    exp_pos = np.where(succ, 4, pos_end - 1).mean()
    assert out["episode_metrics"]["pos"] == pytest.approx(exp_pos)
    # none finished -> NaN metrics
    out = evaluate_policy(env, p, right, jax.random.key(0), 4, 2, sequential=sequential)
    assert np.isnan(out["episode_metrics"]["success"])


def test_sequential_equals_vmapped_and_multi_objective_shapes():
    env = PreorderedShortcut()
    p = env.default_params
    pol = lambda obs, k: jax.random.bernoulli(k, 0.3).astype(jnp.int32)
    a = evaluate_policy(env, p, pol, jax.random.key(7), 32, 20)
    b = evaluate_policy(env, p, pol, jax.random.key(7), 32, 20, sequential=True)
    assert a["returns"].shape == (32, 2) and a["mean_return"].shape == (2,)
    np.testing.assert_allclose(a["returns"], b["returns"])
    np.testing.assert_array_equal(a["lengths"], b["lengths"])
