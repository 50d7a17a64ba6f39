"""IQN / ensemble-IQN / Pr-IQN: config validation, head shapes, jit(vmap), learning.

Learning tests use envs.toy with parameters where the project's Quantile
Dominance definition (shared/reference/pr_iqn.md, rho in (0.5, 1]) can see the
risk: the risky action is worse on the MAJORITY of safety quantile levels. A
risk carried by a tail of mass < 1 - rho is invisible to QD by construction
(measured on the default TailBandit and PreorderedShortcut: Pr-IQN takes the
risky action there; see the IQN section of the results notes).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents.iqn import IQNConfig, QuantileNetwork, make_agent, preset
from mo_rl.agent import make_train
from mo_rl.config import ConfigError


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match=r"IQNConfig\.variant"):
        IQNConfig(variant="qr")
    with pytest.raises(ConfigError, match=r"IQNConfig\.rho"):
        IQNConfig(rho=(0.0,))
    with pytest.raises(ConfigError, match=r"IQNConfig\.buffer_size"):
        IQNConfig(num_envs=8, buffer_size=8, n_step=3)
    env, params = envs.make("TailBandit")
    with pytest.raises(ConfigError, match=r"IQNConfig\.rho"):
        make_agent(IQNConfig(variant="pr_iqn", rho=(0.6, 0.7, 0.8)), env, params)


def test_network_shape_and_shared_taus():
    net = QuantileNetwork(num_actions=3, num_objectives=2, obs_shape=(4,), hidden=(16,),
                          head_hidden=8)
    tau = jnp.array([0.1, 0.5, 0.9, 0.5])
    p = net.init(jax.random.PRNGKey(0), jnp.zeros(4), tau)
    out = net.apply(p, jnp.ones(4), tau)
    assert out.shape == (2, 3, 4)  # (K, A, N)
    # the same fraction gives the same quantile for every action/objective slot
    np.testing.assert_allclose(out[..., 1], out[..., 3], rtol=1e-6)
    # quantiles at one fraction do not depend on the other fractions evaluated with it
    np.testing.assert_allclose(net.apply(p, jnp.ones(4), tau[:1])[..., 0], out[..., 0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("variant", "k", "lead"), [("iqn", 1, ()), ("ensemble", 1, (3,)),
                                                    ("pr_iqn", 2, ())])
def test_head_shapes_of_the_three_variants(variant, k, lead):
    env, params = envs.make("PreorderedShortcut")
    cfg = preset("toy", variant=variant, ensemble_size=3, total_timesteps=64)
    agent = make_agent(cfg, env, params)
    state = agent.init(jax.random.PRNGKey(0))
    net = QuantileNetwork(2, k, (7,), cfg.hidden, cfg.activation, cfg.num_cosines,
                          cfg.head_hidden)
    apply = net.apply
    for _ in lead:
        apply = jax.vmap(apply, in_axes=(0, None, None))
    out = apply(state.params, jnp.ones(7), jnp.full((5,), 0.5))
    assert out.shape == lead + (k, 2, 5)
    leaves = jax.tree.leaves(state.params)
    if lead:  # members are initialised independently
        assert all(x.shape[0] == 3 for x in leaves)
        assert not np.allclose(out[0], out[1])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("variant", ["iqn", "ensemble", "pr_iqn"])
def test_jit_vmap_two_seeds_tiny_run(variant):
    env, params = envs.make("PreorderedShortcut")
    cfg = preset("toy", variant=variant, ensemble_size=2, total_timesteps=160, learning_starts=48,
                 target_update_period=5, n_step=2, steps_per_update=2, gradient_steps=2)
    agent = make_agent(cfg, env, params)
    state, m = jax.jit(jax.vmap(make_train(agent)))(jax.random.split(jax.random.PRNGKey(0), 2))
    assert m["env_steps"].shape == (2, agent.num_updates)
    np.testing.assert_array_equal(m["env_steps"][:, -1], [160, 160])
    loss = np.asarray(m["loss"])
    assert np.all(np.isnan(loss[:, :2])) and np.all(np.isfinite(loss[:, -3:]))  # learning_starts
    assert m["episode_return"].shape == (2, agent.num_updates, 2)
    assert int(state.grad_steps[0]) == 2 * (agent.num_updates - 2)
    # seeds differ
    assert not np.allclose(jax.tree.leaves(state.params)[0][0], jax.tree.leaves(state.params)[0][1])


def _train_and_eval(variant, env_name, env_kw, seeds=3, **overrides):
    env, params = envs.make(env_name, **env_kw)
    cfg = preset("toy", variant=variant, **overrides)
    agent = make_agent(cfg, env, params)
    keys = jax.random.split(jax.random.PRNGKey(42), seeds)
    state, _ = jax.jit(jax.vmap(make_train(agent)))(keys)
    ev = jax.jit(jax.vmap(agent.evaluate))(state, jax.random.split(jax.random.PRNGKey(7), seeds))
    return np.asarray(ev["episode_return"]).mean(axis=1)  # (seeds, K)


PR = dict(rho=(0.6,), dominance_eps=(0.25,))


@pytest.mark.timeout(300)
def test_preordered_shortcut_pr_iqn_lexicographic_iqn_weighted_sum():
    """Shortcut crashes (safety -4) w.p. 0.7, i.e. on 70% of the safety quantile levels.

    Lexicographic optimum (safety > progress): walk, return (0, 4). Weighted sum:
    shortcut now has mean -2.8 + 9 = 6.2 > 4 (walk) -> return (-2.8, 9) in mean.
    """
    kw = dict(crash_prob=0.7, crash_penalty=4.0)
    pr = _train_and_eval("pr_iqn", "PreorderedShortcut", kw, **PR)
    np.testing.assert_allclose(pr, [[0.0, 4.0]] * 3, atol=1e-5)  # walks, every seed
    iqn = _train_and_eval("iqn", "PreorderedShortcut", kw)
    np.testing.assert_allclose(iqn[:, 1], 9.0, atol=1e-5)  # shortcut, every seed
    assert np.all(iqn[:, 0] < -1.0)  # and pays for it in safety


@pytest.mark.timeout(300)
def test_same_mean_different_tails_pr_iqn_avoids_the_gamble():
    """TailBandit: steady safety -1; gamble -2 w.p. 0.75 else +2 (mean -1, same as
    steady), progress 0.5. Only the safety distribution's shape differs; IQN on the
    weighted sum prefers the gamble (-0.5 > -1), Pr-IQN keeps the steady action."""
    kw = dict(tail_prob=0.75, tail_value=-2.0, gamble_progress=0.5)
    pr = _train_and_eval("pr_iqn", "TailBandit", kw, total_timesteps=4000, **PR)
    np.testing.assert_allclose(pr[:, 1], 0.0, atol=1e-5)  # steady (progress 0) every seed
    iqn = _train_and_eval("iqn", "TailBandit", kw, total_timesteps=4000)
    np.testing.assert_allclose(iqn[:, 1], 0.5, atol=1e-5)  # gamble every seed


@pytest.mark.slow
def test_iqn_solves_cartpole():
    env, params = envs.make("CartPole-v1")
    agent = make_agent(preset("cartpole"), env, params)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state, _ = jax.jit(jax.vmap(make_train(agent)))(keys)
    ev = jax.jit(jax.vmap(agent.evaluate))(state, jax.random.split(jax.random.PRNGKey(1), 2))
    returns = np.asarray(ev["episode_return"])[..., 0].mean(axis=1)
    print("CartPole greedy eval return per seed:", returns)
    assert np.all(returns >= 475.0), returns


def test_presets_are_valid_configs():
    for name in ("cartpole", "toy", "driving_quick", "driving_full"):
        cfg = preset(name)
        assert cfg.num_updates > 0
        assert dataclasses.replace(cfg, variant="pr_iqn").variant == "pr_iqn"
