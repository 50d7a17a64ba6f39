"""Adapters: MO-Gymnasium envs inside a jitted scan (parity with direct
stepping), every built-in env through gymnasium's check_env, bad inputs."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
import mo_rl  # noqa: F401
from envs.adapters.gymnasium_in import GymnasiumIn, make_host_env, seed_from_key
from envs.adapters.gymnasium_out import to_gymnasium
from envs.classic import CartPole, Pendulum
from envs.registry import names
from envs.toy import Chain, PreorderedShortcut
from mo_rl.rollout import evaluate_policy
from mo_rl.wrappers import AutoReset, EpisodeStats, VmapEnv

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gymnasium's passive checker


def _scan(env, params, actions, key):
    def run(key):
        obs, s = env.reset(key, params)

        def body(s, xs):
            k, a = xs
            r = env.step(k, s, a, params)
            return r.state, (r.obs, r.reward, r.terminated, r.truncated)

        ks = jax.random.split(jax.random.key(99), len(actions))
        return obs, jax.lax.scan(body, s, (ks, actions))[1]

    return jax.jit(run)(key)


@pytest.mark.parametrize("env_id,k", [("mo-mountaincar-v0", 3), ("deep-sea-treasure-v0", 2)])
def test_mo_gymnasium_in_jitted_scan_matches_direct_stepping(env_id, k):
    env, p = envs.make(f"gym:{env_id}")
    assert len(env.reward_spec) == k
    n = env.action_space(p).n
    actions = jax.random.randint(jax.random.key(1), (80,), 0, n)
    key = jax.random.key(3)
    obs0, (obs, rew, term, trunc) = _scan(env, p, actions, key)
    direct = make_host_env(env_id)
    o, _ = direct.reset(seed=int(seed_from_key(key)))
    np.testing.assert_array_equal(obs0, o)
    for t in range(80):
        o, r, te, tr, _ = direct.step(int(actions[t]))
        np.testing.assert_array_equal(obs[t], o)
        np.testing.assert_array_equal(rew[t], np.asarray(r, np.float32))
        assert bool(term[t]) == te and bool(trunc[t]) == tr
        if te or tr:
            break
    assert obs.dtype == np.dtype(direct.observation_space.dtype)
    env.close()


class _CountResets(gymnasium.Wrapper):
    resets = 0

    def reset(self, **kw):
        _CountResets.resets += 1
        return self.env.reset(**kw)


def test_scalar_gymnasium_env_with_autoreset_resets_only_at_episode_end():
    _CountResets.resets = 0
    host = _CountResets(gymnasium.make("CartPole-v1"))
    base = GymnasiumIn(host)
    assert base.reward_spec.names == ("reward",)
    env = EpisodeStats(AutoReset(base))
    p = base.default_params
    actions = jax.random.randint(jax.random.key(0), (300,), 0, 2)
    _obs, s = env.reset(jax.random.key(0), p)

    def body(s, xs):
        k, a = xs
        r = env.step(k, s, a, p)
        return r.state, (r.info["returned_episode"], r.info["returned_episode_lengths"], r.reward)

    ks = jax.random.split(jax.random.key(1), 300)
    _, (done, lens, rew) = jax.jit(lambda s: jax.lax.scan(body, s, (ks, actions)))(s)
    assert rew.shape == (300, 1) and np.all(np.asarray(rew) == 1.0)
    assert int(done.sum()) >= 5
    assert _CountResets.resets == 1 + int(done.sum())
    # episode lengths recorded by EpisodeStats add up to the steps of finished episodes
    last_end = int(np.nonzero(np.asarray(done))[0][-1])
    assert int(np.asarray(lens)[np.asarray(done)].sum()) == last_end + 1
    base.close()


def test_host_env_sequential_evaluation_and_vmap_refusal():
    env, p = envs.make(
        "gym:deep-sea-treasure-v0",
        reward_names=("treasure", "time"),
        relations=("treasure > time",),
    )
    assert env.reward_spec.levels == ((0,), (1,))
    down = lambda obs, k: jnp.int32(1)  # straight down: first treasure (0.7) after 1 step
    out = evaluate_policy(env, p, down, jax.random.key(0), 3, 50, sequential=True)
    np.testing.assert_allclose(out["returns"], np.tile([0.7, -1.0], (3, 1)), rtol=1e-6)
    np.testing.assert_array_equal(out["lengths"], [1, 1, 1])
    with pytest.raises(ValueError, match="vmap"):
        VmapEnv(env, 2).reset(jax.random.split(jax.random.key(0), 2), p)
    env.close()


class _BadRewardEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)
    reward_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), np.zeros(3, np.float32), False, False, {}


def test_host_reward_of_wrong_length_is_a_clear_error():
    env = GymnasiumIn(_BadRewardEnv())
    p = env.default_params
    _obs, s = jax.jit(env.reset)(jax.random.key(0), p)
    with pytest.raises(Exception, match=r"reward of shape \(3,\).*expects \(2,\)"):
        jax.block_until_ready(jax.jit(env.step)(jax.random.key(0), s, 0, p))
    with pytest.raises(ValueError, match="pass exactly 2 names"):
        GymnasiumIn(_BadRewardEnv(), reward_names=("a", "b", "c"))
    with pytest.raises(NotImplementedError, match="FlattenObservation"):
        GymnasiumIn("breakable-bottles-v0")
    env.close()


@pytest.mark.parametrize("name", names())
def test_every_registered_env_passes_check_env(name):
    env, p = envs.make(name)
    if env.num_agents is not None:  # games export through PettingZoo (test_pettingzoo_out.py)
        with pytest.raises(ValueError, match="PettingZoo"):
            to_gymnasium(env, p)
        return
    check_env(to_gymnasium(env, p), skip_render_check=True)


def test_exporter_rewards_info_and_determinism():
    env = PreorderedShortcut()
    g = to_gymnasium(env)
    assert g.reward_space.shape == (2,)
    obs, _ = g.reset(seed=5)
    np.testing.assert_array_equal(obs, np.eye(7, dtype=np.float32)[0])
    seen = set()
    for seed in range(40):
        g.reset(seed=seed)
        _, r, term, trunc, info = g.step(1)  # shortcut: safety 0 or -10, progress 9
        assert term and not trunc
        assert r == pytest.approx(float(info["reward_vector"].sum()))
        assert info["reward_vector"][1] == pytest.approx(9.0)
        seen.add(float(info["reward_vector"][0]))
    assert seen == {0.0, -10.0}
    g2 = to_gymnasium(env, scalarize=lambda v: v[0] * 100 + v[1])
    traj = []
    for _ in range(2):
        g2.reset(seed=11)
        traj.append([g2.step(a)[1:3] for a in (0, 0, 1)])
    assert traj[0] == traj[1]
    assert traj[0][0] == (-1.0, False)  # walk: progress -1, safety 0


def test_exporter_rejects_bad_actions_with_the_allowed_range():
    g = to_gymnasium(CartPole())
    g.reset(seed=0)
    with pytest.raises(ValueError, match=r"allowed integers are 0\.\.1"):
        g.step(2)
    with pytest.raises(ValueError, match=r"allowed integers are 0\.\.1"):
        g.step(0.5)
    with pytest.raises(ValueError, match="expects shape"):
        g.step(np.array([0, 1]))
    p = to_gymnasium(Pendulum())
    p.reset(seed=0)
    with pytest.raises(ValueError, match=r"out of bounds.*\[-2\.\].*\[2\.\]"):
        p.step(np.array([2.5], np.float32))
    with pytest.raises(ValueError, match=r"expected shape \(1,\)"):
        p.step(np.float32(0.5))
    with pytest.raises(ValueError, match="out of bounds"):
        p.step(np.array([np.nan], np.float32))
    p.step(np.array([1.5], np.float32))  # in range: fine
    with pytest.raises(RuntimeError, match="reset"):
        to_gymnasium(Chain()).step(1)


@pytest.mark.parametrize("vector_reward", [False, True])
def test_round_trip_out_then_in_keeps_the_vector_reward(vector_reward):
    base = PreorderedShortcut()
    out = to_gymnasium(base, vector_reward=vector_reward)
    env = GymnasiumIn(
        out, reward_names=base.reward_spec.names, relations=base.reward_spec.relations
    )
    assert env.reward_spec == base.reward_spec
    p = env.default_params
    _, (obs, rew, term, _) = _scan(AutoReset(env), p, jnp.array([0] * 6 + [1]), jax.random.key(0))
    np.testing.assert_allclose(rew[:6], [[0, -1]] * 5 + [[0, 9]])
    assert bool(term[5]) and not bool(term[:5].any()) and bool(term[6])
    assert float(rew[6][1]) == 9.0 and float(rew[6][0]) in (0.0, -10.0)  # shortcut after reset
    np.testing.assert_array_equal(obs[6], np.eye(7)[0])  # auto-reset to the start
    env.close()


def test_exporter_refuses_multi_agent_envs():
    class TwoAgents(Chain):
        num_agents = 2

    with pytest.raises(ValueError, match="PettingZoo"):
        to_gymnasium(TwoAgents())


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "deep-sea-treasure-v0"])
def test_host_env_exported_back_passes_check_env(env_id):
    """gymnasium -> protocol (io_callback) -> gymnasium: Discrete and int Box obs."""
    env, p = envs.make(f"gym:{env_id}")
    g = to_gymnasium(env, p)
    check_env(g, skip_render_check=True)
    obs, _ = g.reset(seed=0)
    assert g.observation_space.contains(obs)
    env.close()
