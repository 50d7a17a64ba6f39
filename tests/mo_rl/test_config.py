"""Config helpers: validation names the field, JSON round trip without eval, presets + CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from mo_rl import config as C


@dataclass(frozen=True)
class AgentCfg:
    lr: float = 1e-3
    gamma: float = 0.99
    hidden: tuple[int, ...] = (64, 64)
    kind: str = "weighted_sum"

    def __post_init__(self):
        C.check_positive(self, "lr")
        C.check_range(self, "gamma", 0.0, 1.0)
        C.check_choice(self, "kind", ("weighted_sum", "lexicographic"))


@dataclass(frozen=True)
class StudyCfg:
    seeds: int = 2
    total_steps: int = 1000
    agent: AgentCfg = field(default_factory=AgentCfg)
    weights: tuple[float, ...] | None = None
    note: str = ""

    def __post_init__(self):
        C.check_positive(self, "seeds")


PRESETS = {"quick": StudyCfg(seeds=2, agent=AgentCfg(lr=0.01)), "paper": StudyCfg(seeds=10)}


def test_validation_error_names_field():
    with pytest.raises(C.ConfigError, match=r"AgentCfg\.lr: must be > 0 \(got -1\.0\)"):
        AgentCfg(lr=-1.0)
    with pytest.raises(C.ConfigError, match=r"AgentCfg\.gamma: must lie in \[0\.0, 1\.0\]"):
        AgentCfg(gamma=1.5)
    with pytest.raises(C.ConfigError, match=r"AgentCfg\.kind: must be one of"):
        AgentCfg(kind="nope")
    with pytest.raises(C.ConfigError) as e:
        StudyCfg(seeds=0)
    assert e.value.field == "StudyCfg.seeds"


def test_json_round_trip_and_hash(tmp_path):
    cfg = StudyCfg(seeds=3, agent=AgentCfg(lr=3e-4, hidden=(8,)), weights=(1.0, 0.5))
    p = tmp_path / "c.json"
    C.save_config(cfg, p)
    back = C.load_config(StudyCfg, p)
    assert back == cfg
    assert C.config_hash(back) == C.config_hash(cfg)
    assert C.config_hash(C.replace(cfg, **{"agent.lr": 1e-3})) != C.config_hash(cfg)
    assert isinstance(back.agent.hidden, tuple) and isinstance(back.weights, tuple)


def test_loading_never_evaluates_and_rejects_bad_values():
    # a string that would run code under eval stays a plain string
    d = C.to_dict(StudyCfg())
    d["note"] = "__import__('os').system('false')"
    assert C.from_dict(StudyCfg, d).note == d["note"]
    with pytest.raises(C.ConfigError, match=r"StudyCfg\.agent\.lr: expected"):
        C.from_dict(StudyCfg, {**C.to_dict(StudyCfg()), "agent": {"lr": "1e-3"}})
    with pytest.raises(C.ConfigError, match="unknown field"):
        C.from_dict(StudyCfg, {"seeds": 2, "bogus": 1})
    with pytest.raises(C.ConfigError, match=r"AgentCfg\.lr: must be > 0"):
        C.from_dict(StudyCfg, json.loads('{"agent": {"lr": 0}}'))


def test_replace_dotted():
    cfg = C.replace(StudyCfg(), seeds=5, **{"agent.lr": 0.5, "agent.gamma": 0.9})
    assert (cfg.seeds, cfg.agent.lr, cfg.agent.gamma) == (5, 0.5, 0.9)


def test_cli_preset_then_overrides():
    cfg = C.cli(StudyCfg, PRESETS, args=["--preset", "quick", "--seeds", "8", "--agent.lr", "3e-4"])
    assert cfg == StudyCfg(seeds=8, agent=AgentCfg(lr=3e-4))
    # defaults come from the chosen preset, not the dataclass defaults
    assert C.cli(StudyCfg, PRESETS, args=["--preset", "paper"]).seeds == 10
    assert C.cli(StudyCfg, PRESETS, args=[]).agent.lr == 0.01  # first preset is the default
    cfg = C.cli(StudyCfg, PRESETS, args=["--weights", "1", "0.5", "--agent.hidden", "4"])
    assert cfg.weights == (1.0, 0.5) and cfg.agent.hidden == (4,)


def test_cli_bad_value_exits_naming_field(capsys):
    with pytest.raises(SystemExit):
        C.cli(StudyCfg, PRESETS, args=["--agent.gamma", "2"])
    assert "gamma" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        C.cli(StudyCfg, PRESETS, args=["--preset", "nope"])
