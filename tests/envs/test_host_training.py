"""(slow) Agents train on host envs through mo_rl.runner: PPO learns gym:CartPole-v1;
IQN and Pr-IQN train end to end (with an interruption and --resume) on MO-Gymnasium's
mo-mountaincar-v0 under a preorder; PPO runs on highway-fast-v0 and mo-highway-fast-v0."""

import numpy as np
import pytest

import envs
from agents.iqn import make_agent as make_iqn
from agents.iqn import preset
from agents.ppo import PPOConfig
from agents.ppo import make_agent as make_ppo
from mo_rl.runner import run

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _run(agent, cfg, tmp_path, name, seeds=(0,), **kw):
    return run(agent, cfg, seeds=list(seeds), study="host_training", run_name=name,
               runs_root=tmp_path, results_root=None, progress=False, **kw)


def test_ppo_learns_cartpole_through_gym_adapter(tmp_path):
    env, p = envs.make("gym:CartPole-v1")
    cfg = PPOConfig.cartpole(eval_episodes=10, eval_max_steps=500)
    res = _run(make_ppo(cfg, env, p), cfg, tmp_path, "cartpole", seeds=(0, 1), num_chunks=4)
    greedy = res.eval["episode_return"][:, 0]  # per seed, mean over 10 greedy episodes
    print("gym:CartPole-v1 PPO greedy return per seed:", greedy, res.info["train_s"], "s")
    assert np.mean(greedy) >= 475.0, greedy
    env.close()


@pytest.mark.parametrize("variant", ["iqn", "pr_iqn"])
def test_iqn_family_trains_on_mo_mountaincar_under_a_preorder_and_resumes(tmp_path, variant):
    env, p = envs.make("gym:mo-mountaincar-v0", reward_names=("time", "reverse", "forward"),
                       relations=("time > reverse", "reverse ~ forward"))
    cfg = preset("toy", variant=variant, num_envs=4, total_timesteps=8_000, gamma=0.99,
                 n_step=3, learning_starts=500, eval_episodes=2, eval_max_steps=200)
    agent = make_iqn(cfg, env, p)
    part = _run(agent, cfg, tmp_path, variant, num_chunks=4, stop_after=2)
    assert not part.completed
    res = _run(make_iqn(cfg, env, p), cfg, tmp_path, variant, num_chunks=4, resume=True)
    assert res.completed and res.info["resumed_from_chunk"] == 2
    loss = res.train["loss"][0]
    assert np.isfinite(loss[res.train["learned"][0].astype(bool)]).all()
    ev = res.eval["episode_return"]
    print(f"mo-mountaincar {variant}: eval return {ev}, train_s {res.info['train_s']}")
    assert ev.shape == (1, 3) and -200 <= ev[0, 0] <= 0
    env.close()


@pytest.mark.parametrize("env_id,k", [("highway-fast-v0", 1), ("mo-highway-fast-v0", 3)])
def test_ppo_runs_on_highway(tmp_path, env_id, k):
    pytest.importorskip("highway_env")
    import highway_env  # noqa: F401  (registers highway-*)

    env, p = envs.make(f"gym:{env_id}")
    cfg = PPOConfig(total_timesteps=1_024, num_envs=4, num_steps=64, update_epochs=2,
                    minibatch_size=64, eval_episodes=2, eval_max_steps=60)
    res = _run(make_ppo(cfg, env, p), cfg, tmp_path, env_id, num_chunks=2)
    assert res.completed and np.isfinite(res.train["loss"]).all()
    ev = res.eval["episode_return"]
    print(f"{env_id} PPO: eval return {ev}, {res.info['steps_per_s']} steps/s")
    assert ev.shape == (1, k) and np.isfinite(ev).all()
    env.close()
