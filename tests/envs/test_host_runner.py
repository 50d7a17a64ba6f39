"""Host envs through mo_rl.runner: seeds run one after another (lax.map), a host env that
raises mid-run leaves the last complete checkpoint and nothing half written, and the
run resumes from it (with fresh host episodes: host env state is not checkpointed)."""

from typing import ClassVar

import numpy as np
import pytest
from gymnasium.envs.classic_control import CartPoleEnv

from agents.ppo import PPOConfig, make_agent
from envs.adapters.gymnasium_in import GymnasiumIn
from mo_rl.runner import run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CFG = PPOConfig(total_timesteps=64, num_envs=2, num_steps=8, update_epochs=1,
                minibatch_size=8, eval_episodes=2, eval_max_steps=20)  # 4 updates


class _Flaky(CartPoleEnv):
    """CartPole whose `fail_at`-th step call (over all copies) raises."""

    calls: ClassVar[int] = 0
    fail_at: ClassVar[int | None] = None

    def step(self, action):
        _Flaky.calls += 1
        if _Flaky.calls == _Flaky.fail_at:
            raise RuntimeError("simulator lost")
        return super().step(action)


def _run(tmp_path, **kw):
    env = GymnasiumIn(_Flaky())  # a new adapter each time, as in a new process
    try:
        return run(make_agent(CFG, env, env.default_params), CFG, seeds=[0, 1], study="host",
                   run_name="flaky", num_chunks=4, runs_root=tmp_path, results_root=None,
                   progress=False, **kw)
    finally:
        env.close()


def test_host_env_error_leaves_a_resumable_checkpoint(tmp_path):
    # one chunk = 2 seeds x 8 steps x 2 envs = 32 step calls: call 80 is in chunk 3 (index 2)
    _Flaky.calls, _Flaky.fail_at = 0, 80
    with pytest.raises(Exception, match=r"_Flaky x2>: host env raised in step \d+ .*simulator"):
        _run(tmp_path)
    run_dir = tmp_path / "host" / "flaky"
    saved = sorted(p.name for p in (run_dir / "chunk_metrics").iterdir())
    assert saved == ["chunk_000000.npz", "chunk_000001.npz"]  # nothing of the failed chunk
    _Flaky.fail_at = None
    res = _run(tmp_path, resume=True)
    assert res.completed and res.info["resumed_from_chunk"] == 2
    assert res.train["env_steps"].shape == (2, 4)
    np.testing.assert_array_equal(res.train["env_steps"][:, -1], [64, 64])
    assert res.eval["episode_return"].shape[0] == 2


def test_interrupted_and_resumed_host_run_continues_with_fresh_episodes(tmp_path):
    _Flaky.calls, _Flaky.fail_at = 0, None
    part = _run(tmp_path, stop_after=2)
    assert not part.completed
    res = _run(tmp_path, resume=True)
    assert res.completed and res.info["resumed_from_chunk"] == 2
    full = run(make_agent(CFG, e := GymnasiumIn(_Flaky()), e.default_params), CFG,
               seeds=[0, 1], study="host", run_name="full", num_chunks=4, runs_root=tmp_path,
               results_root=None, progress=False)
    e.close()
    # chunks before the interruption are the same computation; after it, host episodes
    # restarted (a truncation), so the runs may differ but both complete
    np.testing.assert_array_equal(res.train["loss"][:, :2], full.train["loss"][:, :2])
    assert np.isfinite(res.train["loss"]).all()
