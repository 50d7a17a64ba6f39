"""IQN / ensemble-IQN / Pr-IQN: config validation, the Bellman target by hand, head
shapes, jit(vmap), ensemble diversity, learning on toy MDPs with known optima."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents.iqn import (
    IQNConfig,
    QuantileNetwork,
    SubsetRule,
    greedy_actions,
    make_agent,
    member_targets,
    preset,
    td_targets,
    window_weights,
)
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
    with pytest.raises(ConfigError, match=r"IQNConfig\.rho.*majority"):
        IQNConfig(rho=(0.5,), dominance_rule="majority")
    assert IQNConfig(rho=(0.3,)).dominance_rule == "not_worse"  # rho <= 0.5: new rule only
    with pytest.raises(ConfigError, match=r"IQNConfig\.dominance_rule"):
        IQNConfig(dominance_rule="fsd")
    with pytest.raises(ConfigError, match=r"IQNConfig\.ensemble_diversity"):
        IQNConfig(ensemble_diversity="dropout")


# ------------------------------------------------------- the Bellman target, by hand
# Bootstrap observations are integers 0..2 standing for states; the "networks" are
# lookup tables of quantiles (M=1, K, A=2, N') so every target is checked by hand.
GAMMA = 0.9


def _tables(k: int):
    """Online and target quantiles per state (3 states, K objectives, 2 actions, 2
    fractions). The online net prefers action 1 in every state, the target net action 0:
    double DQN must take a* from the online net and its value from the target net."""
    online = np.zeros((3, k, 2, 2), np.float32)
    online[:, :, 1] = 1.0
    target = np.zeros((3, k, 2, 2), np.float32)
    for st in range(3):
        for obj in range(k):
            target[st, obj, 0] = [100.0 + st, 100.0 + st]  # the target net's favourite
            target[st, obj, 1] = [10.0 * (st + 1) + obj, 10.0 * (st + 1) + obj + 2.0]
    lookup = lambda table: (lambda o: jnp.asarray(table)[o][None])  # -> (1, B, K, A, N)
    return lookup(online), lookup(target)


def _window_batch(k: int):
    """Three 3-step windows: no episode end; a termination at step 1; a truncation at
    step 0. next_obs[i, t] = the bootstrap state of step t (here always state t)."""
    rewards = np.ones((3, 3, k), np.float32) * np.arange(1, k + 1, dtype=np.float32)
    terminated = np.zeros((3, 3), bool)
    truncated = np.zeros((3, 3), bool)
    terminated[1, 1] = True
    truncated[2, 0] = True
    next_obs = np.tile(np.arange(3), (3, 1))
    return jnp.asarray(rewards), jnp.asarray(terminated), jnp.asarray(truncated), next_obs


@pytest.mark.parametrize("k", [1, 3])
def test_td_targets_by_hand(k):
    online_q, target_q = _tables(k)
    rewards, terminated, truncated, next_obs = _window_batch(k)
    select = lambda q: greedy_actions(q, None) if k == 1 else greedy_actions(
        q, SubsetRule(jnp.eye(k, dtype=bool), jnp.ones(k), jnp.zeros(k)))
    out = np.asarray(td_targets(online_q, target_q, select, rewards, terminated, truncated,
                                jnp.asarray(next_obs), GAMMA))
    assert out.shape == (1, 3, k, 2)
    for obj in range(k):
        r = obj + 1.0
        z1 = lambda st, obj=obj: np.array([10.0 * (st + 1) + obj, 10.0 * (st + 1) + obj + 2])
        # window 0: 3 rewards, bootstrap from state 2 with gamma^3, action 1 (online's pick)
        np.testing.assert_allclose(out[0, 0, obj], r * (1 + GAMMA + GAMMA**2)
                                   + GAMMA**3 * z1(2), rtol=1e-6)
        # window 1: terminated at step 1: two rewards, no bootstrap
        np.testing.assert_allclose(out[0, 1, obj], [r * (1 + GAMMA)] * 2, rtol=1e-6)
        # window 2: truncated at step 0: one reward, bootstrap from that step's final obs
        np.testing.assert_allclose(out[0, 2, obj], r + GAMMA * z1(0), rtol=1e-6)


def test_td_targets_cut_before_a_discarded_step():
    """Step 1 of the window is not a real transition (a lost CARLA server: truncated,
    reward 0). The window must end at step 0 and bootstrap from state 0, not run into the
    fake step and bootstrap from its final observation."""
    online_q, target_q = _tables(1)
    rewards = jnp.asarray([[[1.0], [0.0], [1.0]]])
    truncated = jnp.asarray([[False, True, False]])
    discard = jnp.asarray([[False, True, False]])
    args = (online_q, target_q, lambda q: greedy_actions(q, None), rewards,
            jnp.zeros((1, 3), bool), truncated, jnp.asarray([[0, 1, 2]]), GAMMA)
    out = np.asarray(td_targets(*args, discard=discard))
    np.testing.assert_allclose(out[0, 0, 0], 1.0 + GAMMA * np.array([10.0, 12.0]), rtol=1e-6)
    old = np.asarray(td_targets(*args))  # without the flag: 1 + gamma^2 Z(state 1)
    np.testing.assert_allclose(old[0, 0, 0], 1.0 + GAMMA**2 * np.array([20.0, 22.0]),
                               rtol=1e-6)


def test_window_weights_drop_windows_that_start_discarded():
    discard = jnp.asarray([[True, False, False], [False, True, False]])
    np.testing.assert_array_equal(window_weights(None, discard), [0.0, 1.0])
    np.testing.assert_array_equal(window_weights(jnp.ones((2, 2)), discard),
                                  [[0.0, 1.0], [0.0, 1.0]])
    assert window_weights(None, None) is None


def test_td_targets_pr_iqn_uses_the_optimal_subset_action():
    """Two objectives, safety > progress. Online quantiles: action 1 has more progress but a
    5% safety tail of -1, so the subset is {0}; a* = 0 although a progress argmax says 1."""
    taus = (np.arange(20) + 0.5) / 20
    online = np.zeros((1, 2, 2, 20), np.float32)
    online[0, 0, 1] = np.where(taus < 0.05, -1.0, 0.0)  # safety of action 1: rare tail
    online[0, 1] = [[0.5] * 20, [1.5] * 20]  # progress
    target = np.zeros((1, 2, 2, 2), np.float32)
    target[0, :, 0] = 7.0
    target[0, :, 1] = -7.0
    rule = SubsetRule(jnp.eye(2, dtype=bool), jnp.full(2, 0.75), jnp.full(2, 0.05))
    out = td_targets(lambda o: jnp.asarray(online)[o][None], lambda o: jnp.asarray(target)[o][None],
                     lambda q: greedy_actions(q, rule), jnp.zeros((1, 1, 2)),
                     jnp.zeros((1, 1), bool), jnp.zeros((1, 1), bool), jnp.zeros((1, 1), int),
                     GAMMA)
    np.testing.assert_allclose(out[0, 0], GAMMA * 7.0)
    majority = rule._replace(rule="majority")
    out = td_targets(lambda o: jnp.asarray(online)[o][None], lambda o: jnp.asarray(target)[o][None],
                     lambda q: greedy_actions(q, majority), jnp.zeros((1, 1, 2)),
                     jnp.zeros((1, 1), bool), jnp.zeros((1, 1), bool), jnp.zeros((1, 1), int),
                     GAMMA)
    np.testing.assert_allclose(out[0, 0], -GAMMA * 7.0)  # the old rule bootstraps the risk


def test_member_targets_mixture_and_own():
    samples = jnp.arange(2 * 1 * 1 * 3, dtype=jnp.float32).reshape(2, 1, 1, 3)
    mix = np.asarray(member_targets(samples, "mixture"))
    assert mix.shape == (2, 1, 1, 6)
    np.testing.assert_array_equal(mix[0, 0, 0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(mix[0], mix[1])
    np.testing.assert_array_equal(member_targets(samples, "own"), samples)


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
    assert np.all(m["learned"][:, -3:]) and not np.any(m["learned"][:, :2])
    assert np.all(m["finite"])
    # training moved the parameters away from the same seed's initial parameters
    init = jax.vmap(agent.init)(jax.random.split(jax.random.PRNGKey(0), 2))
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max()
             for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(init.params),
                             strict=True)]
    assert max(moved) > 1e-3


def _member_spread(diversity: str) -> float:
    """Train a 4-member ensemble from IDENTICAL member initialisations on TailBandit
    (30% tail) and return the members' disagreement: the std over members of each
    action's Q (mean over 64 grid fractions), averaged over actions and the last 50
    updates."""
    env, params = envs.make("TailBandit", tail_prob=0.3)
    cfg = preset("toy", variant="ensemble", ensemble_size=4, total_timesteps=1500,
                 ensemble_diversity=diversity, learning_starts=100)
    agent = make_agent(cfg, env, params)
    state = agent.init(jax.random.PRNGKey(0))
    same = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), state.params)
    state = state.replace(params=same, target_params=same)
    net = QuantileNetwork(3, 1, (1,), cfg.hidden, cfg.activation, cfg.num_cosines,
                          cfg.head_hidden)
    grid = (jnp.arange(64) + 0.5) / 64
    q_of = lambda p: jax.vmap(net.apply, in_axes=(0, None, None))(p, jnp.ones(1), grid)

    def body(s, _):
        s, _ = agent.update(s)
        return s, jnp.std(q_of(s.params).mean(-1), axis=0).mean()

    _, spread = jax.jit(lambda s: jax.lax.scan(body, s, None, agent.num_updates))(state)
    return float(np.mean(np.asarray(spread)[-50:]))


@pytest.mark.timeout(300)
def test_ensemble_diversity_members_disagree():
    """Members that start identical and share every batch differ only by their own sampled
    fractions: that spread is one net's noise. Bootstrap masks and per-member batches must
    make them disagree clearly more (measured: none 0.006, bootstrap 0.03, minibatch 0.03)."""
    noise = _member_spread("none")
    boot, mini = _member_spread("bootstrap"), _member_spread("minibatch")
    print(f"member spread: none {noise:.4f} bootstrap {boot:.4f} minibatch {mini:.4f}")
    assert boot > 2.5 * noise and mini > 2.5 * noise


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
    """Every preset builds an agent of every variant (shapes checked by jax.eval_shape, no
    allocation), and a preset changed through dataclasses.replace is validated again."""
    env, params = envs.make("CartPole-v1")
    for name in ("cartpole", "toy", "driving_quick", "driving_full"):
        cfg = preset(name)
        assert cfg.num_updates > 0
        for variant in ("iqn", "ensemble", "pr_iqn"):
            agent = make_agent(dataclasses.replace(cfg, variant=variant, ensemble_size=2),
                               env, params)
            state = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
            assert state.env_steps.shape == ()
        with pytest.raises(ConfigError, match=r"IQNConfig\.rho"):
            dataclasses.replace(cfg, rho=(1.5,))
