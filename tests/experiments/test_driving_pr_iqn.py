"""The Pr-IQN driving study's configuration checks (the study itself runs in results/)."""

import dataclasses

import pytest

from experiments.driving_pr_iqn import PRESETS, check_eval_horizon, make_env
from mo_rl.config import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_evaluate_to_the_env_step_cap(name):
    cfg = PRESETS[name]
    _, params = make_env(cfg)
    check_eval_horizon(cfg, params)  # would raise if evaluation cut episodes early


def test_short_eval_horizon_is_refused():
    cfg = PRESETS["quick"]
    _, params = make_env(cfg)
    short = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, eval_max_steps=500))
    with pytest.raises(ConfigError, match=r"eval_max_steps.*max_steps=2000"):
        check_eval_horizon(short, params)
