"""The CaRL mini-batch study end to end at toy size: table, re-evaluation on --resume."""

import dataclasses
import json

import pytest

from experiments.carl_minibatch import PRESETS, CarlMinibatchConfig, main
from mo_rl.config import ConfigError


def test_study_writes_table_and_resume_only_re_evaluates(tmp_path):
    cfg = dataclasses.replace(PRESETS["tiny"], rewards=("carl",), minibatch_sizes=(64,),
                              seeds=1, results_root=str(tmp_path / "results"),
                              runs_root=str(tmp_path / "runs"), progress=False)
    out = tmp_path / "results" / "carl_minibatch" / "tiny"
    main(cfg, ["--preset", "tiny"])
    first = json.loads((out / "timings.json").read_text())
    assert "collisions and red lights are penalties" in (out / "table.md").read_text()

    main(dataclasses.replace(cfg, resume=True, eval_rules="reward"), ["--resume"])
    again = json.loads((out / "timings.json").read_text())
    assert again["total_s"] == first["total_s"]  # training time kept, not overwritten
    assert again["runs"]["carl_mb64"]["train_s"] == first["runs"]["carl_mb64"]["train_s"]
    assert "re_evaluated_wall_s" in again["runs"]["carl_mb64"]
    assert "CaRL's also end on a red light" in (out / "table.md").read_text()
    prov = json.loads((out / "provenance.json").read_text())
    assert [c["kind"] for c in prov["commands"]] == ["train", "re-evaluate"]
    runs = json.loads((out / "carl_mb64" / "run.json").read_text())["commands"]
    assert [c["kind"] for c in runs] == ["train", "re-evaluate"]  # training version kept
    from scripts.make_tables import main as make_tables

    assert make_tables(["--root", str(tmp_path / "results"), "--check"]) == 0


def test_eval_rules_are_checked():
    with pytest.raises(ConfigError, match="eval_rules"):
        dataclasses.replace(PRESETS["tiny"], eval_rules="nope")
    assert CarlMinibatchConfig(agent=PRESETS["quick"].agent).eval_rules == "leaderboard"
