"""The Pr-IQN driving study's configuration checks (the study itself runs in results/)."""

import dataclasses
import itertools

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


def test_baselines_see_the_preorder():
    from experiments.driving_pr_iqn import lexicographic_weights, method_config

    cfg = PRESETS["quick"]
    lex = lexicographic_weights(cfg)
    assert lex[0] == 1.0 and all(a > 100 * b for a, b in itertools.pairwise(lex))
    assert method_config(cfg, "iqn_lex").scalarization_weights == lex
    assert method_config(cfg, "ensemble_lex").variant == "ensemble"
    assert method_config(cfg, "iqn").scalarization_weights == cfg.weights
    assert method_config(cfg, "pr_iqn").variant == "pr_iqn"


def test_weight_choice_uses_driving_score_then_collisions():
    import pandas as pd

    from experiments.driving_pr_iqn import choose_weights

    def ev(ds, col):
        return pd.DataFrame({"driving_score": ds, "collision": col})

    sweep = {(1.0,): ev([50, 60], [0.3, 0.3]), (2.0,): ev([70, 40], [0.1, 0.2]),
             (3.0,): ev([40, 40], [0.0, 0.0])}
    assert choose_weights(sweep) == (2.0,)  # 55 mean ties (1.0,); fewer collisions wins
    sweep[(4.0,)] = ev([56, 56], [0.9, 0.9])
    assert choose_weights(sweep) == (4.0,)


def test_sensitivity_config_and_validation():
    from experiments.driving_pr_iqn import sensitivity_config

    cfg = PRESETS["quick"]
    c = sensitivity_config(cfg, 1.0, 2.0, "mean")
    assert c.rho == (1.0,) * 4 and c.tie_break == "mean"
    assert c.dominance_eps == tuple(2 * e for e in cfg.agent.dominance_eps)
    with pytest.raises(ConfigError, match="sensitivity"):
        dataclasses.replace(cfg, sensitivity=((1.5, 1.0, "mean"),))
    with pytest.raises(ConfigError, match="selection_seed_offset"):
        dataclasses.replace(cfg, selection_seed_offset=2)  # would reuse table seeds 2..4


def test_medium_reuses_the_weights_quick_chose():
    """medium has no sweep of its own: its fixed weights must be the ones the committed
    quick sweep chose on selection seeds, and its table must say where they come from."""
    import json
    from pathlib import Path

    from experiments.driving_pr_iqn import baselines_note

    sweep = Path(__file__).parents[2] / "results/driving_pr_iqn/quick/weight_sweep.json"
    chosen = tuple(json.loads(sweep.read_text())["chosen"])
    cfg = PRESETS["medium"]
    assert not cfg.weight_grid and cfg.weights == chosen
    assert min(json.loads(sweep.read_text())["selection_seeds"]) >= cfg.seeds
    assert "quick's weight sweep" in baselines_note(cfg)
    assert cfg.agent.total_timesteps == 4 * PRESETS["quick"].agent.total_timesteps
