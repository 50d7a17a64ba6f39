"""CarlaIn (fake servers): several servers stepped by ONE callback through
mo_rl.batching, a server lost in one env of the set, held-out episodes through the
single-env protocol, endpoint lists and the server budget."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from envs.carla.protocol import CarlaIn, endpoints
from mo_rl.batching import batched
from mo_rl.rollout import evaluate_policy
from tests.envs.carla.fakes import ROUTES, TOWN01, FakeServer

pytestmark = pytest.mark.skipif(TOWN01 is None or ROUTES is None,
                                reason="Town01.xodr / routes_town01.xml not found")
GO = 2 * 3 + 1  # meta-action: the speed limit, no lateral offset


def _env(server, n=2, **kw):
    return CarlaIn(endpoints("localhost", 2000, n), connect=server, action_type="discrete",
                   max_vehicles=4, episode_end="leaderboard", max_steps=30, **kw)


def test_endpoints_from_cli_values():
    assert endpoints("h", 2000, 3) == [("h", 2000, 8000), ("h", 2003, 8001), ("h", 2006, 8002)]
    assert endpoints("h", "2000,2010") == [("h", 2000, 8000), ("h", 2010, 8001)]


def test_two_servers_one_callback_with_a_lost_server_and_auto_reset():
    server = FakeServer(die_at=10)  # the first session opened (env 0) dies at tick 10
    env = _env(server)
    venv = batched(env, 2)
    keys = jax.random.split(jax.random.key(0), 2)
    _, state = jax.jit(venv.reset)(keys)
    step = jax.jit(venv.step)
    act = jnp.full((2,), GO, jnp.int32)
    lost, done = [], []
    for _ in range(32):
        res = step(keys, state, act, None)
        state = res.state
        lost.append(np.asarray(res.info["server_lost"]))
        done.append(np.asarray(res.terminated | res.truncated))
        assert set(res.info["episode_metrics"]) == set(env.metric_names)
        if lost[-1][0]:
            np.testing.assert_array_equal(np.asarray(res.reward[0]), 0.0)
            assert bool(res.truncated[0]) and not bool(res.terminated[0])
            assert float(res.info["episode_metrics"]["server_lost"][0]) == 1.0
    lost, done = np.array(lost), np.array(done)
    assert lost[:, 0].sum() == 1 and np.argmax(lost[:, 0]) == 9  # the 10th step, once
    assert not lost[:, 1].any()
    assert done[29, 1]  # env 1 ends at the 30-step cap and auto-resets
    assert len(server.sessions) == 3  # env 0 reconnected after its loss
    venv.close()


def test_env_sets_need_their_own_servers():
    env = _env(FakeServer(), n=2)
    venv = batched(env, 2)
    keys = jax.random.split(jax.random.key(0), 2)
    venv.reset(keys)
    other = batched(env, 3)  # 3 envs, 2 servers
    with pytest.raises(Exception, match="needs 3 CARLA servers"):
        jax.block_until_ready(other.reset(jax.random.split(jax.random.key(1), 3)))


def test_held_out_episodes_through_the_single_env_protocol():
    env = _env(FakeServer(), n=1)
    ev = evaluate_policy(env, env.default_params, lambda obs, k: jnp.int32(GO),
                         jax.random.key(0), num_episodes=2, max_steps=40)
    assert np.asarray(ev["finished"]).all()  # the 30-step cap ends both
    np.testing.assert_array_equal(np.asarray(ev["lengths"]), [30, 30])
    m = {k: float(v) for k, v in ev["episode_metrics"].items()}
    assert m["timeout"] == 1.0 and m["server_lost"] == 0.0 and m["route_completion"] > 0


def test_learners_discard_the_lost_server_step(monkeypatch):
    """PPO and IQN on two fake servers, one dying mid-rollout: the lost step reaches the
    learners flagged as info["discard"], PPO gives it advantage 0 (mo_rl.gae) and IQN's
    replay stores the flag (td_targets cuts windows before it)."""
    import agents.ppo as ppo_mod
    from agents.iqn import IQNConfig
    from agents.iqn import make_agent as make_iqn
    from mo_rl.agent import make_train

    seen = []
    orig = ppo_mod.ppo_targets

    def spy(*args):
        adv, target = orig(*args)
        discard = args[-1]
        assert discard is not None  # the flag reached GAE
        jax.debug.callback(lambda a, d: seen.append((np.asarray(a), np.asarray(d))),
                           adv, discard)
        return adv, target

    monkeypatch.setattr(ppo_mod, "ppo_targets", spy)
    env = _env(FakeServer(die_at=10))
    cfg = ppo_mod.PPOConfig(num_envs=2, num_steps=16, total_timesteps=32, minibatch_size=16,
                            update_epochs=1, hidden=(16, 16))
    agent = ppo_mod.make_agent(cfg, env, None)
    state, _ = make_train(agent)(jax.random.key(0))
    jax.block_until_ready(state.params)
    adv, discard = seen[0]
    assert discard[:, 0].sum() == 1 and not discard[:, 1].any()
    assert adv[discard].tolist() == [0.0]
    env.close()

    env = _env(FakeServer(die_at=10))
    icfg = IQNConfig(num_envs=2, total_timesteps=32, steps_per_update=8, learning_starts=16,
                     buffer_size=64, batch_size=4, n_step=2, hidden=(16, 16), head_hidden=16,
                     num_tau=4, num_tau_prime=4, num_tau_act=4)
    iqn = make_iqn(icfg, env, None)
    istate = iqn.init(jax.random.key(1))
    assert istate.replay.experience.discard.dtype == jnp.bool_  # stored for this env
    env.close()


def test_bev_observations_cross_the_adapters_bit_for_bit():
    """obs_type="bev": the dict observation crosses the batched and the single-env callbacks
    as bytes and comes back equal to what CarlaEnv returns for the same episode."""
    from envs.carla.convert import ActorState
    from envs.carla.env import CarlaEnv
    from envs.driving import observe
    from mo_rl.batching import seed_from_key

    # route 0 starts at (338.70, 226.75) heading -y; a car 10 m ahead on its lane
    car = ActorState(101, 338.70, 216.75, -90.0, 0.0, -3.0, "vehicle.audi.tt")
    kw = dict(action_type="discrete", max_vehicles=4, episode_end="leaderboard", max_steps=30,
              obs_type="bev", route_ids=[0])
    env = CarlaIn(endpoints("localhost", 2000, 2), connect=FakeServer(vehicles=(car,)), **kw)
    venv = batched(env, 2)
    keys = jax.random.split(jax.random.key(0), 2)
    obs0, state = jax.jit(venv.reset)(keys)
    res = jax.jit(venv.step)(keys, state, jnp.full((2,), GO, jnp.int32), None)
    assert obs0["bev"].dtype == jnp.uint8 and obs0["bev"].shape == (2, 64, 64, 8)
    assert res.obs["measurements"].dtype == jnp.float32
    assert int(np.asarray(obs0["bev"])[..., observe.BEV_CHANNELS.index("vehicles")].max()) > 0
    seeds = np.asarray(jax.vmap(seed_from_key)(keys))
    for i in range(2):  # the same episode, straight from a CarlaEnv on a fresh fake server
        direct = CarlaEnv(connect=FakeServer(vehicles=(car,)), **kw)
        want0 = direct.reset(seed=int(seeds[i]))[0]
        want1 = direct.step(GO)[0]
        for k in ("bev", "measurements"):
            np.testing.assert_array_equal(np.asarray(obs0[k][i]), want0[k])
            np.testing.assert_array_equal(np.asarray(res.obs[k][i]), want1[k])
            np.testing.assert_array_equal(np.asarray(res.info["final_obs"][k][i]), want1[k])
    assert float(np.abs(want1["measurements"]).max()) > 0  # a real float went through
    venv.close()
    # single env (held-out episodes)
    one = CarlaIn(endpoints("localhost", 2000, 1), connect=FakeServer(vehicles=(car,)), **kw)
    obs, _ = jax.jit(one.reset)(jax.random.key(5))
    direct = CarlaEnv(connect=FakeServer(vehicles=(car,)), **kw)
    want = direct.reset(seed=int(seed_from_key(jax.random.key(5))))[0]
    for k in ("bev", "measurements"):
        np.testing.assert_array_equal(np.asarray(obs[k]), want[k])
    one.close()
