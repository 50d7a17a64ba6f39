"""PPO as CaRL runs it (issue 18, item 4): targets, normalisation, step counts, schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from agents.ppo import (
    PPOConfig,
    explained_variance,
    linear_lr,
    make_agent,
    optimizer_steps,
    ppo_targets,
)
from envs.classic import CartPole
from mo_rl.agent import make_train


def _chain(terminated, truncated, bootstrap=True):
    """One env, 3 steps of reward 1, V = 0.5 everywhere, V(final obs) = 2, V(last obs) = 3,
    gamma 0.9, lambda 1 (targets = discounted returns)."""
    def col(x):
        return jnp.asarray(x, jnp.float32)[:, None]

    adv, target = ppo_targets(col([1, 1, 1]), col([0.5, 0.5, 0.5]), jnp.array([3.0]),
                              col([2.0, 2.0, 2.0]), col(terminated) > 0, col(truncated) > 0,
                              0.9, 1.0, bootstrap)
    return np.asarray(target)[:, 0], np.asarray(adv)[:, 0]


def test_three_step_chain_targets_by_hand():
    # episode goes on past the rollout: bootstrap V(last obs) = 3
    g2 = 1 + 0.9 * 3.0
    np.testing.assert_allclose(_chain([0, 0, 0], [0, 0, 0])[0],
                               [1 + 0.9 * (1 + 0.9 * g2), 1 + 0.9 * g2, g2], rtol=1e-6)
    # terminated at step 2 (a collision, or a completed route: the env terminates it)
    np.testing.assert_allclose(_chain([0, 0, 1], [0, 0, 0])[0], [2.71, 1.9, 1.0], rtol=1e-6)
    # truncated at step 2 (time limit): bootstrap V(final obs) = 2
    np.testing.assert_allclose(_chain([0, 0, 0], [0, 0, 1])[0],
                               [1 + 0.9 * 3.52, 3.52, 2.8], rtol=1e-6)
    # CaRL's dd_ppo: a truncation is not bootstrapped either
    np.testing.assert_allclose(_chain([0, 0, 0], [0, 0, 1], bootstrap=False)[0],
                               [2.71, 1.9, 1.0], rtol=1e-6)
    # an end at step 0 cuts the trace: step 0 sees only its own reward
    t, a = _chain([1, 0, 0], [0, 0, 0])
    assert t[0] == pytest.approx(1.0) and a[0] == pytest.approx(0.5)


def test_completed_route_terminates_the_driving_episode():
    """Completion is a termination under CaRL's own rules too (CaRL's reward calls it a
    truncation; its PPO does not bootstrap either), so PPO never bootstraps past it."""
    from envs.driving import make_driving

    env, params = make_driving("quick", reward="carl", num_vehicles=0)
    rb = params.routes
    n = int(rb.num[0])
    start = n - 4
    _, st = env.reset_to_route(jax.random.PRNGKey(0), params, 0)
    st = st._replace(x=rb.xy[0, start, 0], y=rb.xy[0, start, 1], yaw=rb.yaw[0, start],
                     prog=jnp.int32(start), v=jnp.float32(3.0))
    step = jax.jit(env.step)
    for t in range(20):
        r = step(jax.random.PRNGKey(t), st, jnp.array([0.0, 0.0]), params)
        st = r.state
        if bool(r.terminated | r.truncated):
            break
    assert bool(r.terminated) and not bool(r.truncated)
    assert float(r.info["episode_metrics"]["route_completion"]) == 100.0


def test_linear_lr_first_and_last_update():
    spu, nu = 6, 5  # 3 epochs x 2 mini-batches, 5 updates
    assert float(linear_lr(jnp.int32(0), 2.5e-4, spu, nu)) == pytest.approx(2.5e-4)
    assert float(linear_lr(jnp.int32(spu - 1), 2.5e-4, spu, nu)) == pytest.approx(2.5e-4)
    last = (nu - 1) * spu
    assert float(linear_lr(jnp.int32(last), 2.5e-4, spu, nu)) == pytest.approx(2.5e-4 / nu)


def test_explained_variance_by_hand():
    t = jnp.array([1.0, 2.0, 3.0, 4.0])
    assert float(explained_variance(t, t)) == 1.0
    assert float(explained_variance(jnp.full(4, 2.5), t)) == pytest.approx(0.0)
    # residual [0.5, -0.5, 0.5, -0.5]: variance 0.25 against 1.25
    assert float(explained_variance(t - jnp.array([0.5, -0.5, 0.5, -0.5]), t)) == (
        pytest.approx(0.8))


@pytest.mark.parametrize("adv_norm", ["rollout", "minibatch"])
def test_update_counts_steps_logs_lr_and_first_step_is_on_policy(adv_norm):
    env = CartPole()
    cfg = PPOConfig(num_envs=4, num_steps=16, minibatch_size=16, update_epochs=3,
                    total_timesteps=64 * 3, adv_norm=adv_norm, clip_eps=0.1)
    agent = make_agent(cfg, env)
    state, metrics = jax.jit(make_train(agent))(jax.random.PRNGKey(0))
    # optimiser steps = epochs x rollout / mini-batch per update
    count = int(optimizer_steps(state.opt_state))
    assert count == cfg.num_updates * cfg.update_epochs * cfg.batch_size // cfg.minibatch_size
    np.testing.assert_allclose(np.asarray(metrics["lr"]), [2.5e-4, 2.5e-4 * 2 / 3,
                                                           2.5e-4 / 3], rtol=1e-6)
    assert np.isfinite(np.asarray(metrics["explained_variance"])).all()
    # one epoch of one mini-batch: the only gradient step is taken at the rollout's
    # parameters, so its approx KL and clip fraction are 0
    one = make_agent(cfg.replace(update_epochs=1, minibatch_size=64, total_timesteps=64), env)
    _, m = jax.jit(make_train(one))(jax.random.PRNGKey(1))
    assert abs(float(m["approx_kl"][0])) < 1e-6 and float(m["clip_frac"][0]) == 0.0


def test_minibatches_per_epoch_caps_the_gradient_steps():
    """The equal-gradient-steps control at small mini-batches: k of the rollout's
    mini-batches per epoch, so epochs x k optimiser steps; the schedule follows them."""
    env = CartPole()
    cfg = PPOConfig(num_envs=4, num_steps=16, minibatch_size=8, update_epochs=3,
                    total_timesteps=64 * 2, minibatches_per_epoch=2)
    state, metrics = jax.jit(make_train(make_agent(cfg, env)))(jax.random.PRNGKey(0))
    assert int(optimizer_steps(state.opt_state)) == 2 * 3 * 2  # updates x epochs x k
    np.testing.assert_allclose(np.asarray(metrics["lr"]), [2.5e-4, 2.5e-4 / 2], rtol=1e-6)
    assert cfg.sgd_steps_per_epoch == 2 and cfg.replace(minibatches_per_epoch=0) \
        .sgd_steps_per_epoch == 8
    with pytest.raises(ValueError, match="minibatches_per_epoch"):
        cfg.replace(minibatches_per_epoch=9)


def test_bad_adv_norm_is_rejected():
    with pytest.raises(ValueError, match="adv_norm"):
        PPOConfig(adv_norm="batch")


def test_carl_preset_switches():
    c = PPOConfig.carl()
    assert (c.adv_norm, c.scale_uint8, c.layer_norm, c.shared_torso, c.bootstrap_truncated) == (
        "rollout", True, True, True, True)
    assert (c.update_epochs, c.clip_eps, c.clip_value, c.lr) == (3, 0.1, True, 2.5e-4)
