"""Host-batched Gymnasium envs (mo_rl.batching + envs.adapters.gymnasium_in): step-by-step
parity with independently stepped gymnasium envs, seeding, resume semantics and errors."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.envs.classic_control import CartPoleEnv

import envs
from envs.adapters.gymnasium_in import GymnasiumIn, make_host_env
from envs.classic import CartPole
from mo_rl.batching import HostBatchedEnv, batched, seed_from_key
from mo_rl.wrappers import AutoReset, EpisodeStats, VmapEnv
from tests.envs.test_adapters import _BadRewardEnv  # declares a (2,) reward, returns (3,)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gymnasium's passive checker


def _rollout(venv, params, actions, key):
    """Jitted scan of `venv` over actions [T, n]: per-step outputs stacked on axis 0."""
    n = actions.shape[1]

    def run(key):
        obs, s = venv.reset(jax.random.split(key, n), params)

        def body(s, a):
            r = venv.step(jax.random.split(key, n), s, a, params)
            out = (r.obs, r.reward, r.terminated, r.truncated, r.info["final_obs"],
                   r.info["returned_episode"], r.info["returned_episode_returns"],
                   r.info["returned_episode_lengths"])
            return r.state, out

        return obs, jax.lax.scan(body, s, actions)[1]

    return jax.jit(run)(key)


def _reference(env_id, seeds, actions, k):
    """The same episodes from n independently made gymnasium envs, reset by hand."""
    hosts = [make_host_env(env_id) for _ in seeds]
    obs0 = np.stack([h.reset(seed=int(s))[0] for h, s in zip(hosts, seeds, strict=True)])
    rows = []
    for a in actions:
        obs, rew, term, trunc, final = [], [], [], [], []
        for h, ai in zip(hosts, a, strict=True):
            o, r, te, tr, _ = h.step(int(ai))
            final.append(o)
            if te or tr:
                o, _ = h.reset()
            obs.append(o)
            rew.append(np.asarray(r, np.float32).reshape(k))
            term.append(te)
            trunc.append(tr)
        rows.append([np.stack(x) for x in (obs, rew, term, trunc, final)])
    return obs0, [np.stack(x) for x in zip(*rows, strict=True)]


@pytest.mark.parametrize("env_id,k,steps", [("CartPole-v1", 1, 120),
                                            ("mo-mountaincar-v0", 3, 230)])
def test_batched_adapter_matches_independent_gymnasium_envs_step_by_step(env_id, k, steps):
    env, p = envs.make(f"gym:{env_id}")
    n = 3
    venv = batched(env, n)
    assert isinstance(venv, HostBatchedEnv) and venv.num_envs == n
    acts = np.random.default_rng(0).integers(0, env.action_space(p).n, (steps, n))
    key = jax.random.key(7)
    obs0, (obs, rew, term, trunc, final, done, ret, length) = _rollout(
        venv, p, jnp.asarray(acts, jnp.int32), key)
    seeds = np.asarray(jax.vmap(seed_from_key)(jax.random.split(key, n)))
    r_obs0, (r_obs, r_rew, r_term, r_trunc, r_final) = _reference(env_id, seeds, acts, k)
    np.testing.assert_allclose(obs0, r_obs0, rtol=1e-6)
    np.testing.assert_allclose(obs, r_obs, rtol=1e-6)
    np.testing.assert_allclose(final, r_final, rtol=1e-6)
    np.testing.assert_array_equal(rew, r_rew)
    np.testing.assert_array_equal(term, r_term)
    np.testing.assert_array_equal(trunc, r_trunc)
    assert (r_term | r_trunc).any()  # the comparison covers auto-resets
    np.testing.assert_array_equal(done, term | trunc)
    # episode statistics: the return of each finished episode = sum of its rewards
    for e in range(n):
        ends = np.flatnonzero(done[:, e])
        starts = np.concatenate([[0], ends[:-1] + 1])
        for s0, s1 in zip(starts, ends, strict=True):
            np.testing.assert_allclose(ret[s1, e], r_rew[s0:s1 + 1, e].sum(0), rtol=1e-5)
            assert length[s1, e] == s1 - s0 + 1
    venv.close()
    env.close()


def test_async_vector_env_gives_the_same_episodes_as_sync():
    acts = jnp.asarray(np.random.default_rng(1).integers(0, 2, (40, 2)), jnp.int32)
    outs = []
    for vector in ("sync", "async"):
        env, p = envs.make("gym:CartPole-v1", vector=vector)
        venv = batched(env, 2)
        outs.append(jax.tree.map(np.asarray, _rollout(venv, p, acts, jax.random.key(3))))
        venv.close()
        env.close()
    jax.tree.map(np.testing.assert_array_equal, outs[0], outs[1])


def test_same_key_same_episodes_other_key_other_episodes():
    env, p = envs.make("gym:CartPole-v1")
    venv = batched(env, 2)
    acts = jnp.zeros((30, 2), jnp.int32)
    a = _rollout(venv, p, acts, jax.random.key(0))[1][0]
    b = _rollout(venv, p, acts, jax.random.key(0))[1][0]
    c = _rollout(venv, p, acts, jax.random.key(1))[1][0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert venv.num_open == 3  # one host env set per reset
    venv.close()
    assert venv.num_open == 0


def test_batched_builds_the_jax_stack_for_jax_envs_and_refuses_wrapped_host_envs():
    venv = batched(CartPole(), 4)
    assert isinstance(venv, VmapEnv) and venv.num_envs == 4
    assert isinstance(venv.env, EpisodeStats) and isinstance(venv.env.env, AutoReset)
    env, _ = envs.make("gym:CartPole-v1")
    with pytest.raises(TypeError, match="wrap the gymnasium env instead"):
        batched(AutoReset(env), 2)
    env.close()


def test_stale_state_after_resume_restarts_episodes_as_truncated():
    """What a resume means for host envs: a state that does not match its host env set
    (restored from a checkpoint after the host moved on) does not apply the action; the
    set's episodes restart and are reported truncated with zero reward."""
    env, p = envs.make("gym:CartPole-v1")
    venv = batched(env, 2)
    keys = jax.random.split(jax.random.key(0), 2)
    step = jax.jit(venv.step)
    _, s0 = jax.jit(venv.reset)(keys, p)
    a = jnp.ones(2, jnp.int32)
    r1 = step(keys, s0, a, p)
    r2 = step(keys, r1.state, a, p)
    assert not np.asarray(r2.truncated).any()
    stale = step(keys, r1.state, a, p)  # r1.state is a "checkpoint": the host is one step on
    np.testing.assert_array_equal(stale.truncated, [True, True])
    np.testing.assert_array_equal(stale.terminated, [False, False])
    np.testing.assert_array_equal(stale.reward, np.zeros((2, 1)))
    np.testing.assert_array_equal(stale.info["returned_episode_lengths"], [2, 2])
    # fresh episodes: the returned obs is a reset obs (|x| small), and stepping goes on
    assert np.all(np.abs(np.asarray(stale.obs)) <= 0.05)
    r3 = step(keys, stale.state, a, p)
    assert not np.asarray(r3.truncated).any()
    np.testing.assert_array_equal(r3.info["returned_episode_lengths"], [2, 2])
    venv.close()
    env.close()


# ---- errors -------------------------------------------------------------------------------


class _Raises(CartPoleEnv):
    """CartPole whose 5th step raises."""

    def reset(self, **kw):
        self.t = 0
        return super().reset(**kw)

    def step(self, action):
        self.t += 1
        if self.t == 5:
            raise RuntimeError("boom")
        return super().step(action)


def _steps(venv, p, n_steps):
    keys = jax.random.split(jax.random.key(0), venv.num_envs)

    def run():
        _, s = venv.reset(keys, p)
        a = jnp.zeros(venv.num_envs, jnp.int32)
        return jax.lax.scan(lambda s, _: (venv.step(keys, s, a, p).state, None), s, None,
                            length=n_steps)[0]

    return jax.block_until_ready(jax.jit(run)())


def test_wrong_reward_length_names_both_shapes():
    env = GymnasiumIn(_BadRewardEnv())
    venv = batched(env, 2)
    with pytest.raises(Exception, match=r"rewards of shape \(2, 3\), expected \(2, 2\)"):
        _steps(venv, env.default_params, 2)
    env.close()


def test_raise_inside_step_names_env_and_step():
    env = GymnasiumIn(_Raises())
    venv = batched(env, 2)
    with pytest.raises(Exception, match=r"_Raises x2>: host env raised in step 5 .*boom"):
        _steps(venv, env.default_params, 8)
    venv.close()
    env.close()


def test_closed_env_is_a_clear_error():
    env, p = envs.make("gym:CartPole-v1")
    venv = batched(env, 2)
    keys = jax.random.split(jax.random.key(0), 2)
    _, s = jax.jit(venv.reset)(keys, p)
    venv.close()
    with pytest.raises(Exception, match="host env set 0 was closed"):
        jax.block_until_ready(jax.jit(venv.step)(keys, s, jnp.zeros(2, jnp.int32), p))
    env.close()
    with pytest.raises(Exception, match="not registered"):
        jax.block_until_ready(jax.jit(env.reset)(jax.random.key(0), p))


def test_unsupported_spaces_are_refused_with_a_hint():
    dict_env = gymnasium.make("CartPole-v1")
    dict_env.observation_space = gymnasium.spaces.Dict({"x": dict_env.observation_space})
    with pytest.raises(NotImplementedError, match="FlattenObservation"):
        GymnasiumIn(dict_env)
    with pytest.raises(NotImplementedError, match="Discrete"):
        GymnasiumIn(_shifted_discrete())
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        batched(GymnasiumIn("CartPole-v1"), 0)


def _shifted_discrete():
    env = gymnasium.make("CartPole-v1")
    env.action_space = gymnasium.spaces.Discrete(2, start=1)
    return env
