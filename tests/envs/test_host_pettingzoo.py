"""PettingZoo input adapter: rock-paper-scissors (pettingzoo.classic.rps_v2, parallel and
AEC) step by step against the game stepped directly, batched games, agents that leave
early, errors."""

import functools
from typing import ClassVar

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pettingzoo import ParallelEnv
from pettingzoo.classic import rps_v2

from agents.marl import MARLConfig
from agents.marl import make_agent as make_marl
from envs.adapters.pettingzoo_in import PettingZooIn, make_pettingzoo
from mo_rl.batching import HostBatchedEnv, batched, seed_from_key
from mo_rl.runner import run
from mo_rl.wrappers import AutoReset

CYCLES = 6  # rps_v2 episodes are truncated after max_cycles rounds


def _rps(**kw):
    return rps_v2.parallel_env(max_cycles=CYCLES, **kw)


def _jax_rollout(env, p, actions, key):
    """AutoReset(single adapter) in a jitted scan over actions [T, A]."""
    e = AutoReset(env)

    def run(key):
        obs, s = e.reset(key, p)

        def body(s, a):
            r = e.step(key, s, a, p)
            return r.state, (r.obs, r.reward, r.terminated, r.truncated, r.info["final_obs"],
                             r.info["active"])

        return obs, jax.lax.scan(body, s, actions)[1]

    return jax.tree.map(np.asarray, jax.jit(run)(key))


def _direct(game, seed, actions):
    """The same rounds stepped on a PettingZoo game directly (reset by hand)."""
    agents = game.possible_agents
    obs, _ = game.reset(seed=seed)
    obs0 = np.stack([obs[a] for a in agents])
    rows = []
    for a in actions:
        o, r, _, tr, _ = game.step({ag: int(a[i]) for i, ag in enumerate(agents)})
        final = np.stack([o[ag] for ag in agents])
        done = not game.agents
        if done:
            o, _ = game.reset()
        rows.append((np.stack([o[ag] for ag in agents]),
                     np.array([[r[ag]] for ag in agents], np.float32),
                     done and not any(tr.values()), done and all(tr.values()), final))
    return obs0, [np.stack(x) for x in zip(*rows, strict=True)]


@pytest.mark.parametrize("kind", ["parallel", "aec"])
def test_rps_matches_the_game_stepped_directly(kind):
    factory = _rps if kind == "parallel" else functools.partial(rps_v2.env, max_cycles=CYCLES)
    env, p = make_pettingzoo(factory)
    assert env.num_agents == 2 and env.name == "rps_v2" and len(env.reward_spec) == 1
    assert env.observation_space(p).shape == (2,)  # joint spaces, agent axis first
    assert (env.action_space(p).n, env.action_space(p).shape) == (3, (2,))
    acts = np.random.default_rng(0).integers(0, 3, (3 * CYCLES + 2, 2))
    key = jax.random.key(4)
    obs0, (obs, rew, term, trunc, final, active) = _jax_rollout(
        env, p, jnp.asarray(acts, jnp.int32), key)
    seed = int(seed_from_key(key))
    r_obs0, (r_obs, r_rew, r_term, r_trunc, r_final) = _direct(_rps(), seed, acts)
    np.testing.assert_array_equal(obs0, r_obs0)
    np.testing.assert_array_equal(obs, r_obs)
    np.testing.assert_array_equal(rew, r_rew)
    np.testing.assert_array_equal(term, r_term)
    np.testing.assert_array_equal(trunc, r_trunc)
    np.testing.assert_array_equal(final, r_final)
    assert trunc.sum() == 3 and not term.any() and active.all()
    assert np.abs(rew).sum() > 0
    env.close()


def test_batched_games_match_single_games():
    env, p = make_pettingzoo(_rps)
    n = 3
    venv = batched(env, n)
    assert isinstance(venv, HostBatchedEnv)
    acts = np.random.default_rng(1).integers(0, 3, (2 * CYCLES + 1, n, 2))
    key = jax.random.key(2)

    def run(key):
        _, s = venv.reset(jax.random.split(key, n), p)

        def body(s, a):
            r = venv.step(jax.random.split(key, n), s, a, p)
            return r.state, (r.obs, r.reward, r.truncated, r.info["returned_episode_returns"],
                             r.info["active"])

        return jax.lax.scan(body, s, a_all)[1]

    a_all = jnp.asarray(acts, jnp.int32)
    obs, rew, trunc, ret, active = jax.tree.map(np.asarray, jax.jit(run)(key))
    assert rew.shape == (len(acts), n, 2, 1) and active.shape == (len(acts), n, 2)
    seeds = np.asarray(jax.vmap(seed_from_key)(jax.random.split(key, n)))
    for e in range(n):
        game = _rps()
        game.reset(seed=int(seeds[e]))
        for t, a in enumerate(acts):
            o, r, *_ = game.step({ag: int(a[e, i]) for i, ag in enumerate(game.possible_agents)})
            if not game.agents:
                np.testing.assert_array_equal(trunc[t, e], True)
                game.reset()
            else:
                np.testing.assert_array_equal(obs[t, e], [o["player_0"], o["player_1"]])
            np.testing.assert_array_equal(rew[t, e, :, 0], [r["player_0"], r["player_1"]])
    np.testing.assert_array_equal(ret[CYCLES - 1], rew[:CYCLES].sum(0))
    venv.close()
    env.close()


class _Leaver(ParallelEnv):
    """Three agents; "b" terminates after 2 steps, the others are truncated at step 4.
    Reward = step number (vector (2,) per agent via reward_space)."""

    metadata: ClassVar = {"name": "leaver"}
    possible_agents: ClassVar = ["a", "b", "c"]

    def observation_space(self, agent):
        return gymnasium.spaces.Box(0, 10, (1,), np.float32)

    def action_space(self, agent):
        return gymnasium.spaces.Discrete(2)

    def reward_space(self, agent):
        return gymnasium.spaces.Box(-10, 10, (2,), np.float32)

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: np.zeros(1, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), (actions, self.agents)
        self.t += 1
        obs = {a: np.full(1, self.t, np.float32) for a in self.agents}
        rew = {a: np.array([self.t, -1.0], np.float32) for a in self.agents}
        term = {a: a == "b" and self.t == 2 for a in self.agents}
        trunc = {a: self.t == 4 for a in self.agents}
        self.agents = [a for a in self.agents if not (term[a] or trunc[a])]
        return obs, rew, term, trunc, {a: {} for a in obs}


def test_agents_that_leave_early_are_masked():
    env, p = make_pettingzoo(_Leaver, reward_names=("progress", "cost"),
                             relations=("progress > cost",))
    assert len(env.reward_spec) == 2
    _, (obs, rew, term, trunc, final, active) = _jax_rollout(
        env, p, jnp.zeros((5, 3), jnp.int32), jax.random.key(0))
    np.testing.assert_array_equal(active[:4], [[1, 1, 1], [1, 1, 1], [1, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(rew[:4, :, 0], [[1, 1, 1], [2, 2, 2], [3, 0, 3], [4, 0, 4]])
    np.testing.assert_array_equal(obs[2, :, 0], [3, 0, 3])  # the leaver observes zeros
    np.testing.assert_array_equal(trunc[:5], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(final[3, :, 0], [4, 0, 4])
    np.testing.assert_array_equal(obs[3, :, 0], [0, 0, 0])  # fresh episode after auto-reset
    assert active[4].all() and not term.any()
    env.close()


class _Mixed(_Leaver):
    def action_space(self, agent):
        return gymnasium.spaces.Discrete(3 if agent == "c" else 2)


class _Dict(_Leaver):
    def observation_space(self, agent):
        return gymnasium.spaces.Dict({"x": gymnasium.spaces.Discrete(2)})


class _WrongReward(_Leaver):
    def step(self, actions):
        obs, rew, term, trunc, info = super().step(actions)
        return obs, {a: np.zeros(3, np.float32) for a in rew}, term, trunc, info


def test_errors_spaces_reward_closed():
    with pytest.raises(NotImplementedError, match="one space for every agent"):
        PettingZooIn(_Mixed)
    with pytest.raises(NotImplementedError, match="not supported"):
        PettingZooIn(_Dict)
    with pytest.raises(TypeError, match="ParallelEnv or AECEnv"):
        PettingZooIn(lambda: gymnasium.make("CartPole-v1"))
    env, p = make_pettingzoo(_WrongReward)
    with pytest.raises(Exception, match=r"reward of shape \(3,\), expected \(2,\)"):
        _jax_rollout(env, p, jnp.zeros((2, 3), jnp.int32), jax.random.key(0))
    env.close()
    env, p = make_pettingzoo(_rps)
    env.close()
    with pytest.raises(Exception, match="host game was closed"):
        jax.block_until_ready(jax.jit(env.reset)(jax.random.key(0), p))


def test_ippo_trains_on_a_pettingzoo_game_through_the_runner(tmp_path):
    env, p = make_pettingzoo(_Leaver, reward_names=("progress", "cost"))
    cfg = MARLConfig(total_timesteps=64, num_envs=2, num_steps=8, update_epochs=1,
                     minibatch_size=16, eval_episodes=2, eval_max_steps=10)
    res = run(make_marl(cfg, env, p), cfg, seeds=[0, 1], study="pz", num_chunks=2,
              runs_root=tmp_path, results_root=None, progress=False)
    assert res.completed and np.isfinite(res.train["loss"]).all()
    # greedy episodes last 4 steps; "a" and "c" earn 1 + 2 + 3 + 4 progress and -4 cost,
    # "b" (leaves after 2) 1 + 2 and -2; the runner reports the mean over agents per seed
    np.testing.assert_allclose(res.eval["episode_return"], [[23 / 3, -10 / 3]] * 2, rtol=1e-6)
    env.close()
