"""Wrappers: auto-reset keeps the final obs, per-component episode stats,
running observation normalisation against numpy, vmapped batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mo_rl  # noqa: F401
from envs.classic import CartPole
from envs.toy import Chain, PreorderedShortcut
from mo_rl.wrappers import (
    ActionOutOfRangeError,
    AutoReset,
    EpisodeStats,
    NormalizeObs,
    NormalizeObsState,
    VmapEnv,
    Wrapper,
)


def _run(env, params, actions, key=0):
    """Reset then step through `actions` in a jitted scan; returns stacked outputs."""
    obs, state = env.reset(jax.random.key(key), params)

    def body(state, xs):
        k, a = xs
        res = env.step(k, state, a, params)
        return res.state, res

    keys = jax.random.split(jax.random.key(key + 1), len(actions))
    _, out = jax.jit(lambda s: jax.lax.scan(body, s, (keys, jnp.asarray(actions))))(state)
    return obs, out


def test_autoreset_keeps_final_obs_on_termination():
    env, p = AutoReset(Chain(n=4)), Chain(n=4).default_params
    _, out = _run(env, p, [1, 1, 1, 1, 1])
    onehot = np.eye(4, dtype=np.float32)
    # steps: 0->1, 1->2, 2->3 (goal, terminated) | reset 0 -> 1, 1 -> 2
    np.testing.assert_array_equal(out.terminated, [False, False, True, False, False])
    np.testing.assert_array_equal(out.obs, onehot[[1, 2, 0, 1, 2]])
    np.testing.assert_array_equal(out.info["final_obs"], onehot[[1, 2, 3, 1, 2]])
    np.testing.assert_array_equal(out.reward[:, 0], [0, 0, 1, 0, 0])


def test_autoreset_on_truncation_keeps_flags():
    base = Chain(n=10)
    p = base.default_params.replace(max_steps=3)
    _, out = _run(AutoReset(base), p, [1] * 4)
    np.testing.assert_array_equal(out.truncated, [False, False, True, False])
    np.testing.assert_array_equal(out.terminated, [False] * 4)
    assert int(np.argmax(out.info["final_obs"][2])) == 3
    assert int(np.argmax(out.obs[2])) == 0
    assert int(np.argmax(out.obs[3])) == 1


def test_episode_stats_per_component_returns():
    base = PreorderedShortcut()
    env, p = EpisodeStats(AutoReset(base)), base.default_params
    # two walked episodes (6 steps each, return (0, 4)) then shortcuts (1 step each)
    actions = [0] * 12 + [1] * 3
    _, out = _run(env, p, actions)
    done = np.asarray(out.info["returned_episode"])
    np.testing.assert_array_equal(np.nonzero(done)[0], [5, 11, 12, 13, 14])
    rets = np.asarray(out.info["returned_episode_returns"])
    lens = np.asarray(out.info["returned_episode_lengths"])
    np.testing.assert_allclose(rets[5], [0.0, 4.0])
    np.testing.assert_allclose(rets[11], [0.0, 4.0])
    assert lens[5] == lens[11] == 6
    # between ends the last finished episode is held; before the first, zeros
    np.testing.assert_allclose(rets[:5], 0.0)
    np.testing.assert_allclose(rets[6:11], np.tile([0.0, 4.0], (5, 1)))
    for t in (12, 13, 14):
        assert lens[t] == 1
        assert rets[t][1] == pytest.approx(9.0)
        assert rets[t][0] in (0.0, -10.0)
        np.testing.assert_allclose(rets[t], out.reward[t])


def test_vmap_env_matches_single_envs_and_batched_params():
    base = Chain(n=5)
    p = base.default_params
    env = VmapEnv(AutoReset(base), 3, params_axis=0)
    bp = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 3), p)
    bp = bp.replace(exit_reward=jnp.array([0.1, 0.2, 0.3]))
    keys = jax.random.split(jax.random.key(0), 3)
    obs, st = env.reset(keys, bp)
    assert obs.shape == (3, 5)
    res = jax.jit(env.step)(keys, st, jnp.array([0, 0, 1]), bp)
    np.testing.assert_allclose(res.reward[:, 0], [0.1, 0.2, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(res.terminated, [True, True, False])
    # each row equals the unbatched env with that row's params
    for i in range(3):
        pi = jax.tree.map(lambda x, i=i: x[i], bp)
        _, si = AutoReset(base).reset(keys[i], pi)
        ri = AutoReset(base).step(keys[i], si, jnp.array([0, 0, 1])[i], pi)
        np.testing.assert_allclose(ri.reward, res.reward[i])
        np.testing.assert_allclose(ri.obs, res.obs[i])
    with pytest.raises(ValueError, match="batch of 3 keys"):
        env.reset(jax.random.split(jax.random.key(0), 2), bp)


def test_wrappers_forward_spec_spaces_and_attributes():
    base = PreorderedShortcut()
    p = base.default_params
    env = NormalizeObs(VmapEnv(EpisodeStats(AutoReset(base)), 2))
    assert env.reward_spec == base.reward_spec
    assert env.num_agents is None
    assert env.num_envs == 2
    assert env.observation_space(p) == base.observation_space(p)
    assert env.action_space(p) == base.action_space(p)
    assert env.unwrapped is base
    assert env.length == base.length  # plain attributes of inner envs
    assert env.default_params == p


def test_normalize_obs_matches_numpy_moments_batched():
    base = CartPole()
    p = base.default_params
    raw_env = VmapEnv(AutoReset(base), 8)
    norm_env = NormalizeObs(raw_env, clip=None)
    keys = jax.random.split(jax.random.key(3), 8)
    actions = jax.random.bernoulli(jax.random.key(4), 0.5, (40, 8)).astype(jnp.int32)
    step_keys = jax.random.split(jax.random.key(5), 40 * 8).reshape(40, 8)

    def roll(env):
        obs0, s = env.reset(keys, p)

        def body(s, xs):
            k, a = xs
            r = env.step(k, s, a, p)
            return r.state, r.obs

        s, obs = jax.lax.scan(body, s, (step_keys, actions))
        return obs0, obs, s

    raw0, raw, _ = jax.jit(lambda: roll(raw_env))()
    _n0, nobs, s = jax.jit(lambda: roll(norm_env))()
    allobs = np.concatenate([np.asarray(raw0)[None], np.asarray(raw)]).reshape(-1, 4)
    np.testing.assert_allclose(s.mean, allobs.mean(0), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(s.var, allobs.var(0), rtol=1e-3, atol=1e-6)
    assert float(s.count) == pytest.approx(41 * 8, abs=1e-3)
    expected_last = (np.asarray(raw[-1]) - s.mean) / np.sqrt(s.var + 1e-8)
    np.testing.assert_allclose(nobs[-1], expected_last, rtol=1e-4, atol=1e-4)


def test_normalize_obs_single_env_and_frozen_stats():
    base = Chain(n=4)
    p = base.default_params
    env = NormalizeObs(AutoReset(base), clip=5.0)
    _, out = _run(env, p, [1, 1, 1, 1])
    raw = np.eye(4, dtype=np.float32)[[0, 1, 2, 0, 1]]  # reset + 4 steps (auto-reset)
    st = out.state
    np.testing.assert_allclose(st.mean[-1], raw.mean(0), atol=1e-4)
    np.testing.assert_allclose(st.var[-1], raw.var(0), atol=1e-4)
    assert np.all(np.abs(np.asarray(out.obs)) <= 5.0)  # clip
    frozen = NormalizeObs(AutoReset(base), update=False)
    obs, fs = frozen.reset(jax.random.key(0), p)
    np.testing.assert_allclose(obs, raw[0], atol=1e-6)  # mean 0, var 1
    r = frozen.step(jax.random.key(1), fs, 1, p)
    assert float(r.state.count) == pytest.approx(1e-4)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.1, 50.0),
)
def test_normalize_obs_update_is_chunking_invariant(sizes, seed, scale):
    """Merging batch moments chunk by chunk equals numpy over all observations."""
    env = NormalizeObs(Chain(n=3))
    rng = np.random.default_rng(seed)
    chunks = [rng.normal(2.0, scale, (b, 3)).astype(np.float32) for b in sizes]
    state = NormalizeObsState(None, jnp.zeros(3), jnp.ones(3), jnp.float32(1e-4))
    for c in chunks:
        state = env._update(state, c, None)
    allobs = np.concatenate(chunks).astype(np.float64)
    n, c = len(allobs), 1e-4
    # exact moments of the data plus the pseudo-count prior (weight c, mean 0, var 1)
    mean = allobs.sum(0) / (n + c)
    var = (c * (1.0 + mean**2) + ((allobs - mean) ** 2).sum(0)) / (n + c)
    tol = 1e-5 * (4.0 + scale**2)  # float32 round-off relative to E[x^2]
    np.testing.assert_allclose(state.mean, mean, rtol=1e-5, atol=tol)
    np.testing.assert_allclose(state.var, var, rtol=1e-4, atol=tol)
    assert float(state.count) == pytest.approx(n + c, rel=1e-6)


# ---- debug mode: out-of-range actions ---------------------------------------------------


def _scan_actions(env, params, actions, batch=None):
    """jit(scan) of env.step over `actions`, vmapped over a leading batch axis if given."""

    def roll(key, acts):
        _, s = env.reset(key, params)

        def body(s, xs):
            k, a = xs
            r = env.step(k, s, a, params)
            return r.state, (r.obs, r.reward)

        return jax.lax.scan(body, s, (jax.random.split(key, acts.shape[0]), acts))[1]

    acts = jnp.asarray(actions)
    if batch is None:
        return jax.jit(roll)(jax.random.key(0), acts)
    keys = jax.random.split(jax.random.key(0), batch)
    return jax.jit(jax.vmap(roll))(keys, acts)


# JAX re-raises an exception from a host callback either as itself or wrapped in a
# JaxRuntimeError whose message holds it ("CpuCallback error ... ActionOutOfRangeError: ...")
OUT_OF_RANGE = (ActionOutOfRangeError, jax.errors.JaxRuntimeError)


def test_check_actions_raises_naming_env_and_bound_inside_jit_vmap_scan():
    from mo_rl.wrappers import CheckActions

    base = Chain(n=4)
    p = base.default_params
    env = AutoReset(CheckActions(base))
    # in range: bit-identical to the unchecked env
    good = np.array([[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 0]])
    ref = _scan_actions(AutoReset(base), p, good, batch=3)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(_scan_actions(env, p, good, 3)),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    # the unchecked env takes index 2 silently (JAX clamps it); the checked one raises
    bad = good.copy()
    bad[1, 2] = 2
    _scan_actions(AutoReset(base), p, bad, batch=3)
    with pytest.raises(OUT_OF_RANGE,
                       match=r"Chain: action 2 outside its action space \(batch index \[1\]\): "
                             r"Discrete\(2\): integers 0\.\.1"):
        jax.block_until_ready(_scan_actions(env, p, bad, batch=3))
    with pytest.raises(OUT_OF_RANGE, match="action -1"):
        jax.block_until_ready(_scan_actions(env, p, np.array([1, -1])))


def test_check_actions_box_bounds_and_nan():
    from envs.classic import Pendulum
    from mo_rl.wrappers import CheckActions

    pend = Pendulum()
    p = pend.default_params
    env = CheckActions(pend)
    _scan_actions(env, p, np.array([[1.5], [-2.0], [2.0]], np.float32))  # bounds inclusive
    with pytest.raises(OUT_OF_RANGE,
                       match=r"Pendulum-v1: action \[2\.5\] .*low=\[-2\.0\], high=\[2\.0\]"):
        jax.block_until_ready(_scan_actions(env, p, np.array([[0.0], [2.5]], np.float32)))
    with pytest.raises(OUT_OF_RANGE, match=r"action \[nan\]"):
        jax.block_until_ready(_scan_actions(env, p, np.array([[np.nan]], np.float32)))
    assert CheckActions(pend).name == "CheckActions<Pendulum-v1>"


def test_debug_mode_puts_the_check_under_every_training_stack(monkeypatch):
    from mo_rl.batching import batched
    from mo_rl.wrappers import CheckActions, maybe_check_actions

    base = Chain(n=4)
    monkeypatch.setenv("MO_RL_CHECK_ACTIONS", "1")
    venv = batched(base, 2)
    assert isinstance(venv.env.env.env, CheckActions)  # VmapEnv(EpisodeStats(AutoReset(.)))
    monkeypatch.setenv("MO_RL_CHECK_ACTIONS", "0")
    assert maybe_check_actions(base) is base
    assert not isinstance(batched(base, 2).env.env.env, CheckActions)


def test_check_actions_keeps_the_observe_once_path():
    from envs.driving import make_driving
    from mo_rl.wrappers import CheckActions

    env, _ = make_driving("quick", num_vehicles=0)
    assert CheckActions(env).observes_state is True  # AutoReset observes once through it


class _ThreeRewards(Wrapper):
    """PreorderedShortcut whose step returns 3 reward components for a 2-name spec."""

    def step(self, key, state, action, params):
        r = self._env.step(key, state, action, params)
        return r._replace(reward=jnp.concatenate([r.reward, r.reward[:1]]))


def test_reward_of_the_wrong_length_is_a_clear_error():
    """Without the check the (2,) running return would broadcast against a (3,) reward
    or fail deep inside jnp with no env name."""
    base = PreorderedShortcut()
    env = EpisodeStats(AutoReset(_ThreeRewards(base)))
    with pytest.raises(ValueError, match=r"reward of shape \(3,\).*\('safety', 'progress'\).*"
                                         r"needs shape \(2,\)"):
        _run(env, base.default_params, [0, 1])


def test_normalize_obs_scales_final_obs_with_the_same_statistics():
    """PPO bootstraps V(final obs) (issue 18): the final observation of an ended episode
    must be normalised like every other observation, with the statistics after the step."""
    env = NormalizeObs(AutoReset(Chain(n=4)), clip=None)
    _, out = _run(env, Chain(n=4).default_params, [1, 1, 1])
    onehot = np.eye(4)
    seen = onehot[[0, 1, 2, 0]]  # reset obs, then each step's obs (step 2 auto-resets to 0)
    mean, var = seen.mean(0), seen.var(0)  # the 1e-4 prior count is negligible here
    assert bool(out.terminated[2])
    want = (onehot[3] - mean) / np.sqrt(var + 1e-8)
    got = np.asarray(out.info["final_obs"][2])
    # component 3 was never seen: its variance is the prior's alone, so only its sign is
    # robust; every other component is checked by value
    np.testing.assert_allclose(got[:3], want[:3], rtol=1e-3)
    assert got[3] > 100.0
    np.testing.assert_allclose(np.asarray(out.obs[2])[:3], (onehot[0] - mean)[:3]
                               / np.sqrt(var[:3]), rtol=1e-3)
