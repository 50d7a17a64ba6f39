"""PPO: losses and the Beta policy against hand-computed values, config validation,
shapes under jit(vmap(train)), and (slow) solving CartPole and Pendulum."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from agents.ppo import (
    PPOConfig,
    beta_params,
    make_agent,
    make_policy,
    policy_loss,
    value_loss,
)
from envs.classic import CartPole, Pendulum
from mo_rl.agent import make_train
from mo_rl.spaces import Box, Discrete
from mo_rl.wrappers import Wrapper


# ---- losses ------------------------------------------------------------------
def test_policy_loss_hand_computed():
    logp_old = jnp.zeros(3)
    logp = jnp.log(jnp.array([1.5, 0.5, 1.05]))  # ratios 1.5, 0.5, 1.05
    adv = jnp.array([1.0, -2.0, 3.0])
    loss, kl, clip_frac = policy_loss(logp, logp_old, adv, clip_eps=0.2)
    # min(1.5, 1.2)=1.2 ; min(-1.0, -1.6)=-1.6 ; min(3.15, 3.15)=3.15 -> mean 2.75/3
    np.testing.assert_allclose(loss, -2.75 / 3, rtol=1e-6)
    np.testing.assert_allclose(clip_frac, 2 / 3, rtol=1e-6)
    ref_kl = np.mean([0.5 - math.log(1.5), -0.5 - math.log(0.5), 0.05 - math.log(1.05)])
    np.testing.assert_allclose(kl, ref_kl, rtol=1e-5)


def test_value_loss_hand_computed():
    v, v_old, t = jnp.array([1.0, 2.0, 1.0]), jnp.array([0.5, 2.5, 0.0]), jnp.array([2.0, 1.0, 0.5])
    # clipped preds 0.7, 2.3, 0.2 -> errors max(1, 1.69), max(1, 1.69), max(0.25, 0.09)
    np.testing.assert_allclose(value_loss(v, v_old, t, 0.2, clip=True),
                               0.5 * (1.69 + 1.69 + 0.25) / 3, rtol=1e-6)
    np.testing.assert_allclose(value_loss(v, v_old, t, 0.2, clip=False),
                               0.5 * (1.0 + 1.0 + 0.25) / 3, rtol=1e-6)


# ---- policies ----------------------------------------------------------------
def test_beta_parameterisation_and_action_mapping():
    a, b = beta_params(jnp.array([0.0, 2.0, -1.0, 0.5]))  # two action dims
    sp = lambda x: math.log1p(math.exp(x))
    np.testing.assert_allclose(a, [1 + sp(0.0), 1 + sp(2.0)], rtol=1e-6)
    np.testing.assert_allclose(b, [1 + sp(-1.0), 1 + sp(0.5)], rtol=1e-6)
    assert np.all(np.asarray(beta_params(jnp.full(4, -50.0))[0]) >= 1.0)  # unimodal

    pol = make_policy(Box(low=np.array([-2.0, 0.0]), high=np.array([2.0, 1.0]), shape=(2,)))
    raw = jnp.array([0.0, 2.0, -1.0, 0.5])
    u = jnp.array([0.25, 0.7])
    ref = sum(stats.beta.logpdf(u[i], float(a[i]), float(b[i])) for i in range(2))
    np.testing.assert_allclose(pol.dist(raw).log_prob(u), ref, rtol=1e-5)
    np.testing.assert_allclose(pol.to_env(u), [-1.0, 0.7], rtol=1e-6)
    np.testing.assert_allclose(pol.greedy(raw), a / (a + b), rtol=1e-6)  # the Beta mean
    samples = pol.dist(raw).sample(seed=jax.random.key(0), sample_shape=(1000,))
    env_a = pol.to_env(samples)
    assert np.all((env_a[:, 0] >= -2) & (env_a[:, 0] <= 2) & (env_a[:, 1] >= 0))


def test_categorical_policy_greedy_is_argmax():
    pol = make_policy(Discrete(3))
    raw = jnp.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    np.testing.assert_array_equal(pol.greedy(raw), [1, 0])
    np.testing.assert_allclose(pol.dist(raw).log_prob(jnp.array([1, 0])),
                               jax.nn.log_softmax(raw)[jnp.arange(2), jnp.array([1, 0])],
                               rtol=1e-6)


# ---- config ------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("num_envs", 0), ("minibatch_size", 100), ("gamma", 1.5), ("gae_lambda", -0.1),
    ("clip_eps", 0.0), ("total_timesteps", 10), ("activation", "nope"), ("update_epochs", 2.5),
    ("scalarization", "median"),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        PPOConfig(**{field: value})


def test_carl_preset_matches_reference():
    c = PPOConfig.carl()
    assert (c.num_envs, c.num_steps, c.minibatch_size, c.update_epochs) == (128, 512, 16384, 3)
    assert c.batch_size == 65536 and c.num_minibatches == 4
    assert (c.lr, c.adam_eps, c.gamma, c.gae_lambda, c.clip_eps) == (2.5e-4, 1e-5, .99, .95, .1)
    assert c.clip_value and c.norm_adv and c.anneal_lr
    assert (c.ent_coef, c.vf_coef, c.max_grad_norm) == (0.01, 0.5, 0.5)
    assert dataclasses.replace(c, minibatch_size=4096).num_minibatches == 16


# ---- training loop -------------------------------------------------------------
@pytest.mark.timeout(120)
def test_jit_vmap_train_shapes_cartpole():
    """2 seeds x 2 updates under jit(vmap) (guards the jax 0.10.2 CPU deadlock)."""
    env = CartPole()
    cfg = PPOConfig.cartpole(num_envs=4, num_steps=32, minibatch_size=32,
                             total_timesteps=2 * 4 * 32)
    agent = make_agent(cfg, env, env.default_params)
    assert agent.num_updates == 2
    keys = jax.random.split(jax.random.key(0), 2)
    state, m = jax.jit(jax.vmap(make_train(agent)))(keys)
    assert m["episode_return"].shape == (2, 2, 1)
    for k in ("loss", "policy_loss", "value_loss", "entropy", "episode_length", "env_steps"):
        assert m[k].shape == (2, 2), k
    np.testing.assert_array_equal(m["env_steps"], [[128, 256], [128, 256]])
    assert np.all(np.isfinite(np.asarray(m["loss"]))) and np.all(np.asarray(m["finite"]))
    # the two updates changed every parameter leaf of each seed (against its own init)
    init = jax.jit(jax.vmap(agent.init))(keys)
    for before, after in zip(jax.tree.leaves(init.params), jax.tree.leaves(state.params),
                             strict=True):
        for s in range(2):
            assert not np.allclose(before[s], after[s]), before.shape
    ev = jax.jit(agent.evaluate)(jax.tree.map(lambda x: x[0], state), jax.random.key(1))
    assert ev["episode_return"].shape == (cfg.eval_episodes, 1)


@pytest.mark.timeout(120)
def test_continuous_vector_reward_normalized_obs():
    """Beta policy on Pendulum with obs normalisation and a weighted-sum view."""
    env = Pendulum()
    cfg = PPOConfig.pendulum(num_envs=2, num_steps=16, minibatch_size=16, update_epochs=1,
                             total_timesteps=64, normalize_obs=True,
                             scalarization_kwargs={"weights": [2.0]}, eval_episodes=2,
                             eval_max_steps=20)
    agent = make_agent(cfg, env, env.default_params)
    state, m = jax.jit(make_train(agent))(jax.random.key(0))
    assert m["loss"].shape == (2,) and np.all(np.isfinite(np.asarray(m["loss"])))
    ev = jax.jit(agent.evaluate)(state, jax.random.key(1))
    assert ev["episode_return"].shape == (2, 1) and np.all(ev["episode_length"] == 20)


# ---- learning -------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_ppo_learns_the_known_optimum_of_a_chain():
    """Fast learning check (default suite): envs.toy.Chain(n=6), where exiting at once
    pays 0.1 and walking right to the end pays 1 (known optimum: walk, return 1; a
    random policy reaches the end in 1/32 of episodes). Every seed's greedy policy
    must walk; a PPO that does not learn exits (0.1) or wanders (0)."""
    from envs.toy import Chain

    env = Chain(n=6)
    cfg = PPOConfig(num_envs=8, num_steps=16, minibatch_size=64, update_epochs=4, lr=3e-3,
                    total_timesteps=8 * 16 * 40, gamma=0.95, ent_coef=0.01, hidden=(32, 32),
                    eval_episodes=8, eval_max_steps=20)
    agent = make_agent(cfg, env, env.default_params)
    keys = jax.random.split(jax.random.key(0), 4)

    def greedy_return(state, key):
        return jnp.mean(agent.evaluate(state, key)["episode_return"])

    before = jax.jit(jax.vmap(lambda k: greedy_return(agent.init(k), k)))(keys)
    assert np.all(np.asarray(before) < 0.5)  # untrained: not the optimum yet
    _, ev = _train_and_eval(cfg, env, seeds=4)
    np.testing.assert_allclose(np.asarray(ev["episode_return"]), 1.0)  # every episode, seed


# ---- learning (slow) -----------------------------------------------------------
def _train_and_eval(cfg, env, seeds):
    agent = make_agent(cfg, env, env.default_params)

    def run(key):
        state, m = make_train(agent)(key)
        return m, agent.evaluate(state, jax.random.fold_in(key, 1))

    return jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), seeds))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ppo_solves_cartpole():
    """PureJaxRL's budget (5e5 steps): greedy evaluation at the 500-step cap."""
    _, ev = _train_and_eval(PPOConfig.cartpole(), CartPole(), seeds=4)
    assert float(np.mean(ev["episode_return"])) >= 475.0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ppo_solves_pendulum():
    """1e6 steps, Beta policy: measured about -160 (greedy) on 2 seeds."""
    _, ev = _train_and_eval(PPOConfig.pendulum(), Pendulum(), seeds=2)
    assert float(np.mean(ev["episode_return"])) >= -250.0


class _EndsAtOnce(Wrapper):
    """Every episode terminates after its first step."""

    def step(self, key, state, action, params):
        return self.env.step(key, state, action, params)._replace(terminated=jnp.array(True))


def test_evaluate_runs_on_eval_env():
    env = CartPole()
    cfg = PPOConfig.cartpole(num_envs=2, num_steps=8, minibatch_size=8, total_timesteps=16,
                             eval_episodes=3, eval_max_steps=50)
    key = jax.random.key(0)
    own = make_agent(cfg, env, env.default_params)
    other = make_agent(cfg, env, env.default_params, eval_env=_EndsAtOnce(env))
    state = own.init(key)
    assert np.all(np.asarray(own.evaluate(state, key)["episode_length"]) > 1)
    np.testing.assert_array_equal(other.evaluate(state, key)["episode_length"], 1)
    with pytest.raises(ValueError, match="eval_env"):
        make_agent(cfg, env, env.default_params, eval_env=Pendulum())
    with pytest.raises(ValueError, match="eval_env"):
        make_agent(cfg, env, env.default_params, eval_env=_ThreeActions(env))


class _ThreeActions(Wrapper):
    def action_space(self, params):
        return Discrete(3)
