"""Toy envs against exact dynamic programming / enumeration of their documented
answers (transitions are read from the env itself, not re-implemented)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401
from envs.toy import Chain, PosState, PreorderedShortcut, TailBandit
from mo_rl.rollout import evaluate_policy


def _step_all(env, params, num_states, num_actions, num_keys=1):
    """Step every (state, action) with `num_keys` keys: rewards[S, A, keys, K] etc."""
    pos = jnp.arange(num_states)
    acts = jnp.arange(num_actions)
    keys = jax.random.split(jax.random.key(0), num_keys)

    def one(s, a, k):
        r = env.step(k, PosState(s, jnp.int32(0)), a, params)
        return r.reward, jnp.argmax(r.obs), r.terminated

    f = jax.vmap(jax.vmap(jax.vmap(one, (None, None, 0)), (None, 0, None)), (0, None, None))
    return jax.tree.map(np.asarray, jax.jit(f)(pos, acts, keys))


@pytest.mark.parametrize("gamma", [0.99, 0.5])
def test_chain_value_iteration_matches_closed_form(gamma):
    env = Chain(n=10)
    p = env.default_params
    S = env.n - 1  # non-terminal states
    rew, nxt, term = _step_all(env, p, S, 2)
    rew, nxt, term = rew[:, :, 0, 0], nxt[:, :, 0], term[:, :, 0]
    q = np.zeros((S, 2))
    for _ in range(200):
        v = q.max(1)
        v_next = np.where(term, 0.0, v[np.minimum(nxt, S - 1)])
        q = rew + gamma * v_next
    np.testing.assert_allclose(q, env.q_star(p, gamma), rtol=1e-6, atol=1e-7)
    if gamma == 0.99:
        assert q[0].max() == pytest.approx(0.99**8)
        assert np.all(q.argmax(1) == 1)
    else:  # short-sighted: exit at 0..4 (0.5**(8-s) < 0.1), walk from 5 on
        np.testing.assert_array_equal(q.argmax(1), [0] * 5 + [1] * 4)


def _shortcut_model(env, p):
    """Exact expected rewards / next states read from the env (support checked)."""
    rew, nxt, term = _step_all(env, p, env.length, 2, num_keys=4000)
    # the env's outcome support: walk deterministic; shortcut safety in {0, -penalty}
    assert set(np.unique(rew[:, 0, :, 0])) == {0.0}
    assert set(np.unique(rew[:, 1, :, 0])) == {0.0, -p.crash_penalty}
    assert np.all(rew[:, :, :, 1] == rew[:, :, :1, 1])  # progress deterministic
    freq = np.mean(rew[:, 1, :, 0] < 0)
    assert abs(freq - p.crash_prob) < 4 * np.sqrt(0.25 * 0.75 / rew[:, 1, :, 0].size)
    exp_rew = rew[:, :, 0, :].copy()
    exp_rew[:, 1, 0] = -p.crash_penalty * p.crash_prob  # exact expectation
    return exp_rew, nxt, term


def _shortcut_values(env, model, policy):
    """Exact expected (safety, progress) return of a deterministic policy[pos]."""
    exp_rew, nxt, term = model
    v = np.zeros((env.length + 1, 2))
    for s in reversed(range(env.length)):
        a = policy[s]
        n = nxt[s, a, 0]
        v[s] = exp_rew[s, a] + (0.0 if term[s, a, 0] else v[n])
    return v


def test_shortcut_lexicographic_and_weighted_optima_differ():
    env = PreorderedShortcut()
    p = env.default_params
    assert env.reward_spec.levels == ((0,), (1,))  # safety > progress
    L = env.length
    # enumerate all 2**L deterministic policies, exact expected returns from every state
    model = _shortcut_model(env, p)
    values = {pol: _shortcut_values(env, model, pol) for pol in itertools.product((0, 1), repeat=L)}
    v0 = {pol: tuple(np.round(v[0], 6)) for pol, v in values.items()}
    lex_best = max(v0.values())  # tuple order = lexicographic (safety first)
    ws_best = max(sum(x) for x in v0.values())
    assert lex_best == (0.0, 4.0)
    assert ws_best == pytest.approx(6.5)
    lex_pols = [pol for pol, v in v0.items() if v == lex_best]
    assert lex_pols == [(0,) * L]  # walk everywhere, the unique lexicographic optimum
    # weighted-sum optimal at every state: shortcut at p < 3, walk at p >= 3
    ws_opt = (1, 1, 1, 0, 0, 0)
    ws_all_states = np.array([v.sum(1)[:L] for v in values.values()]).max(0)
    np.testing.assert_allclose(values[ws_opt].sum(1)[:L], ws_all_states)
    np.testing.assert_allclose(ws_all_states, [6.5, 6.5, 6.5, 7.0, 8.0, 9.0])
    np.testing.assert_allclose(values[ws_opt][0], [-2.5, 9.0])


def test_shortcut_monte_carlo_returns_match_documentation():
    env = PreorderedShortcut()
    p = env.default_params
    walk = lambda obs, k: jnp.int32(0)
    ws = lambda obs, k: (jnp.argmax(obs) < 3).astype(jnp.int32)
    out_walk = evaluate_policy(env, p, walk, jax.random.key(0), 16, 50)
    np.testing.assert_allclose(out_walk["returns"], np.tile([0.0, 4.0], (16, 1)))
    assert np.all(out_walk["lengths"] == 6)
    out_ws = jax.jit(lambda k: evaluate_policy(env, p, ws, k, 4000, 50))(jax.random.key(1))
    m = np.asarray(out_ws["mean_return"])
    assert m[1] == pytest.approx(9.0)
    assert abs(m[0] + 2.5) < 4 * 10 * np.sqrt(0.25 * 0.75 / 4000)


def test_tail_bandit_exact_distributions():
    env = TailBandit()
    p = env.default_params
    assert env.reward_spec.levels == ((0,), (1,))
    keys = jax.random.split(jax.random.key(0), 20000)
    _, s0 = env.reset(keys[0], p)
    rew = np.asarray(
        jax.jit(
            jax.vmap(jax.vmap(lambda k, a: env.step(k, s0, a, p).reward, (None, 0)), (0, None))
        )(keys, jnp.arange(3))
    )
    safety, progress = rew[..., 0], rew[..., 1]
    np.testing.assert_array_equal(np.unique(safety[:, 0]), [-1.0])
    np.testing.assert_array_equal(np.unique(safety[:, 1]), [-20.0, 0.0])
    np.testing.assert_array_equal(np.unique(safety[:, 2]), [-3.0])
    np.testing.assert_allclose(progress[0], [0.0, 0.1, 1.0], rtol=1e-6)
    tail = np.mean(safety[:, 1] == -20.0)
    assert abs(tail - 0.05) < 4 * np.sqrt(0.05 * 0.95 / 20000)
    # exact law: mean safety of the gamble = 0.95 * 0 + 0.05 * (-20) = -1 = steady
    # mean-based lexicographic choice: tie on safety, progress picks the gamble
    means = np.array([[-1.0, 0.0], [-1.0, 0.1], [-3.0, 1.0]])
    assert max(range(3), key=lambda a: tuple(means[a])) == 1
    # tail-aware: the 5% CVaR of safety is -1 (steady) vs -20 (gamble)
    cvar = [np.mean(np.sort(safety[:, a])[: len(safety) // 20]) for a in range(3)]
    assert int(np.argmax(cvar)) == 0 and cvar[1] < -15


@pytest.mark.parametrize("env", [Chain(), PreorderedShortcut(), TailBandit()])
def test_toy_obs_and_rewards_within_declared_bounds(env):
    p = env.default_params
    obs_space, spec = env.observation_space(p), env.reward_spec

    def body(c, k):
        _obs, s = c
        k1, k2, k3 = jax.random.split(k, 3)
        a = env.action_space(p).sample(k1)
        r = env.step(k2, s, a, p)
        done = r.terminated | r.truncated
        o2, s2 = env.reset(k3, p)
        s_next = jax.tree.map(lambda x, y: jnp.where(done, x, y), s2, r.state)
        return (jnp.where(done, o2, r.obs), s_next), (r.obs, r.reward)

    init = env.reset(jax.random.key(0), p)
    _, (obs, rew) = jax.jit(
        lambda: jax.lax.scan(body, init, jax.random.split(jax.random.key(1), 500))
    )()
    assert bool(jax.vmap(obs_space.contains)(obs).all())
    assert np.all(np.asarray(rew) >= np.array(spec.low) - 1e-6)
    assert np.all(np.asarray(rew) <= np.array(spec.high) + 1e-6)


def test_registry_builds_envs_and_explains_bad_names():
    from envs import make
    from envs.registry import names, register

    env, p = make("Chain", n=5, exit_reward=0.3)
    assert env.n == 5 and p.exit_reward == 0.3 and p.goal_reward == 1.0
    assert {"CartPole-v1", "Pendulum-v1", "Chain", "PreorderedShortcut", "TailBandit"} <= set(
        names()
    )
    with pytest.raises(KeyError, match=r"known envs: .*Chain"):
        make("Chian")
    with pytest.raises(TypeError, match="params fields are"):
        make("Chain", bogus=1)
    register("test-chain-3", lambda **kw: (Chain(n=3), Chain(n=3).default_params))
    assert make("test-chain-3")[0].n == 3
    with pytest.raises(ValueError, match="already registered"):
        register("test-chain-3", lambda **kw: None)
