"""The sim-to-CARLA check end to end without a server: a policy trained by the runner in
the JAX simulator is restored from its checkpoint and scored on (fake) CARLA servers by
experiments.carla.eval_only, which writes its table."""

from __future__ import annotations

import dataclasses

import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from agents.iqn import make_agent
from agents.iqn import preset as iqn_preset
from envs.carla.protocol import CarlaIn, endpoints
from envs.driving import make_driving
from experiments.carla import CarlaOptions, carla_args, eval_only
from mo_rl.runner import run
from tests.envs.carla.fakes import ROUTES, TOWN01, FakeServer


def test_carla_flags_are_taken_out_and_checked():
    opts, rest = carla_args(["--preset", "tiny", "--env", "carla", "--carla-port", "2000,2003",
                             "--eval-only", "--checkpoint", "runs/x", "--seeds", "1"])
    assert rest == ["--preset", "tiny", "--seeds", "1"]
    assert opts.port == "2000,2003" and opts.eval_only and opts.checkpoint == "runs/x"
    assert carla_args(["--preset", "tiny"]) == (None, ["--preset", "tiny"])
    with pytest.raises(SystemExit, match="need --env carla"):
        carla_args(["--carla-port", "2000"])
    with pytest.raises(SystemExit, match="--checkpoint"):
        carla_args(["--env", "carla", "--eval-only"])


@pytest.mark.skipif(TOWN01 is None or ROUTES is None, reason="Town01 files not found")
def test_policy_trained_in_the_simulator_is_scored_on_carla(tmp_path):
    env, params = make_driving("quick", reward="vector", action_type="discrete",
                               max_vehicles=4, num_vehicles=4)
    cfg = iqn_preset("driving_quick", variant="pr_iqn", total_timesteps=64, num_envs=2,
                     steps_per_update=4, learning_starts=32, buffer_size=256, batch_size=8,
                     hidden=(16,), head_hidden=16, num_tau=4, num_tau_prime=4, num_tau_act=4,
                     eval_episodes=1, eval_max_steps=2_000)
    run(lambda c: make_agent(c, env, params), cfg, seeds=[0], study="s", run_name="n/pr_iqn",
        num_chunks=1, runs_root=tmp_path / "runs", results_root=None, progress=False)
    carla = CarlaIn(endpoints("localhost", 2000), connect=FakeServer(), action_type="discrete",
                    max_vehicles=4, episode_end="leaderboard", max_steps=25)
    ev_cfg = dataclasses.replace(cfg, eval_max_steps=40, eval_episodes=2)
    opts = CarlaOptions(checkpoint=str(tmp_path / "runs" / "s" / "n"), out=str(tmp_path / "out"))
    df = eval_only("s", "n", opts, 1, {"pr_iqn": (lambda: make_agent(cfg, env, params),
                                                  lambda: make_agent(ev_cfg, carla,
                                                                     carla.default_params))},
                   ("route_completion", "driving_score", "collision"))
    assert len(df) == 1 and df["episodes_finished"].iloc[0] == 2  # both hit the 25-step cap
    assert 0.0 <= df["route_completion"].iloc[0] < 100.0 and df["server_lost"].iloc[0] == 0.0
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| pr_iqn |" in table and "scored on CARLA" in table
    # a missing run names where it looked
    with pytest.raises(FileNotFoundError, match="no checkpoint of run 'iqn'"):
        eval_only("s", "n", opts, 1, {"iqn": (lambda: None, lambda: None)}, ())
