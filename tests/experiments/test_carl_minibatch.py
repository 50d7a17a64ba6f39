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


def test_equal_gradient_steps_control_cells():
    from experiments.carl_minibatch import cell_label, cells, gradient_steps

    cfg = PRESETS["quick"]  # batch 4096, mini-batches 256 .. 4096, 3 epochs, 60 updates
    got = cells(cfg)
    assert len(got) == 2 * 5 + 2
    assert got[-2:] == [("carl", 4096, 48), ("roach", 4096, 48)]
    # 60 updates x 3 epochs x 16 mini-batches = the control's 60 x 48 x 1
    assert gradient_steps(cfg, 256, 3) == 2880 == gradient_steps(cfg, 4096, 48)
    assert gradient_steps(cfg, 4096, 3) == 180
    assert cell_label("carl", 4096, 48, 3) == "carl_mb4096_ep48"
    assert cell_label("carl", 4096, 3, 3) == "carl_mb4096"
    off = dataclasses.replace(cfg, equal_steps_control=False)
    assert len(cells(off)) == 10
