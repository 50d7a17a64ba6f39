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
    trained = json.loads((out / "carl_mb64" / "run.json").read_text())
    assert "collisions and red lights are penalties" in (out / "table.md").read_text()
    assert "critic EV (last 10%)" in (out / "table.md").read_text()

    main(dataclasses.replace(cfg, resume=True, eval_rules="reward"), ["--resume"])
    again = json.loads((out / "timings.json").read_text())
    assert again["total_s"] == first["total_s"]  # training time kept, not overwritten
    assert again["runs"]["carl_mb64"]["train_s"] == first["runs"]["carl_mb64"]["train_s"]
    assert "re_evaluated_wall_s" in again["runs"]["carl_mb64"]
    assert "CaRL's also end on a red light" in (out / "table.md").read_text()
    prov = json.loads((out / "provenance.json").read_text())
    assert [c["kind"] for c in prov["commands"]] == ["train", "re-evaluate"]
    run_json = json.loads((out / "carl_mb64" / "run.json").read_text())
    assert [c["kind"] for c in run_json["commands"]] == ["train", "re-evaluate"]
    # the run's own record keeps its training times too; the re-evaluation's are apart
    assert run_json["train_s"] == trained["train_s"] > 0
    assert run_json["steps_per_s"] == trained["steps_per_s"] > 0
    assert run_json["re_evaluation"]["steps_per_s"] is None
    from scripts.make_tables import main as make_tables

    assert make_tables(["--root", str(tmp_path / "results"), "--check"]) == 0


def test_eval_rules_are_checked():
    with pytest.raises(ConfigError, match="eval_rules"):
        dataclasses.replace(PRESETS["tiny"], eval_rules="nope")
    assert CarlMinibatchConfig(agent=PRESETS["quick"].agent).eval_rules == "leaderboard"
    with pytest.raises(ConfigError, match="minibatches_per_epoch"):  # set per cell
        CarlMinibatchConfig(agent=PRESETS["quick"].agent.replace(minibatches_per_epoch=2))


def test_equal_gradient_steps_control_cells():
    from experiments.carl_minibatch import Cell, cell_label, cells, gradient_steps, is_control

    cfg = PRESETS["quick"]  # batch 4096, mini-batches 256 .. 4096, 3 epochs, 60 updates
    got = cells(cfg)
    assert len(got) == 2 * 5 + 2 + 2
    large, small = got[-4:-2], got[-2:]
    assert large == [("carl", 4096, 48, 1), ("roach", 4096, 48, 1)]
    assert small == [("carl", 256, 3, 1), ("roach", 256, 3, 1)]
    # large end: 60 updates x 3 epochs x 16 mini-batches = the control's 60 x 48 x 1
    assert gradient_steps(cfg, Cell("carl", 256, 3, 16)) == 2880 == gradient_steps(cfg,
                                                                                   large[0])
    # small end: mini-batch 256 taking 1 mini-batch per epoch = mini-batch 4096's 180 steps
    assert gradient_steps(cfg, Cell("carl", 4096, 3, 1)) == 180 == gradient_steps(cfg, small[0])
    assert [cell_label(cfg, c) for c in (large[0], small[1], got[0])] == [
        "carl_mb4096_ep48", "roach_mb256_k1", "carl_mb256"]
    assert [is_control(cfg, c) for c in got] == [False] * 10 + [True] * 4
    off = dataclasses.replace(cfg, equal_steps_control=False, small_end_control=False)
    assert len(cells(off)) == 10
    # the medium preset keeps only the cheap small-end control on 2 CPU cores
    med = cells(PRESETS["medium"])
    assert len(med) == 2 * 7 + 2 and med[-1] == ("roach", 256, 3, 1)


def test_critic_ev_is_each_seeds_tail_mean():
    import pandas as pd

    from experiments.carl_minibatch import critic_ev

    # 10 updates, 2 seeds: the last 10% is update 10 only; seed 1 ends at 0.5, seed 0 at 0.9
    rows = [{"reward": "carl", "minibatch_size": 256, "update_epochs": 3,
             "sgd_steps_per_epoch": 16, "seed": s, "update": u,
             "explained_variance": (0.9 if s == 0 else 0.5) if u == 10 else -1.0}
            for s in (0, 1) for u in range(1, 11)]
    t = critic_ev(pd.DataFrame(rows))
    assert len(t) == 1 and t.iloc[0]["metric"] == "critic_ev"
    assert t.iloc[0]["mean"] == pytest.approx(0.7) and t.iloc[0]["n"] == 2


def _fake_metrics(cfg):
    """Eval and train rows for every cell: driving score = 10 x sgd steps per epoch +
    epochs + seed, so each cell's table entry is known by hand."""
    import pandas as pd

    from experiments.carl_minibatch import TABLE_METRICS, cells

    rows = []
    for c in cells(cfg):
        for seed in (0, 1):
            ds = 10.0 * c.sgd_steps_per_epoch + c.update_epochs + seed
            rows.append({**c._asdict(), "phase": "eval", "seed": seed,
                         **{m: 0.0 for m in TABLE_METRICS}, "driving_score": ds})
            rows += [{**c._asdict(), "phase": "train", "seed": seed, "update": u,
                      "env_steps": 256 * u, "explained_variance": 0.5,
                      "train/driving_score": ds} for u in (1, 2)]
    return pd.DataFrame(rows)


def test_tables_plots_and_old_folders_with_controls(tmp_path):
    from experiments.carl_minibatch import (
        is_control,
        plot_curves,
        plot_sweep,
        rebuild_tables,
        summary_table,
        tables,
    )
    from mo_rl.config import save_config

    cfg = dataclasses.replace(PRESETS["tiny"], seeds=2)  # batch 256, mini-batch 64 and 256
    df = _fake_metrics(cfg)
    md = tables(cfg, df)["table.md"]
    rows = [r for r in md.splitlines() if r.startswith("| carl") or r.startswith("| roach")]
    # sweep (64: 4 steps per epoch, 256: 1) then the controls: 256 x 12 epochs, 64 x 1
    # 2 updates: gradient steps = 2 x epochs x SGD steps per epoch
    assert [r.split(" | ")[1:5] for r in rows[:2]] == [["64", "3", "4", "24"],
                                                      ["256", "3", "1", "6"]]
    assert rows[4].startswith("| carl | 256 | 12 | 1 | 24 | 22.5 [")  # 10 + 12 + 0.5
    assert rows[6].startswith("| carl | 64 | 3 | 1 | 6 | 13.5 [")  # 10 + 3 + 0.5
    assert "control at the small end" in md and "control at the large end" in md
    plot_sweep(summary_table(df[df.phase == "eval"]), cfg, tmp_path / "sweep.png")
    plot_curves(df[df.phase == "train"], cfg, tmp_path / "curves.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0 and (tmp_path / "curves.png").exists()
    # a folder written before the controls existed: no update_epochs / sgd_steps_per_epoch
    sweep = df[[not is_control(cfg, c) for c in df[["reward", "minibatch_size",
                "update_epochs", "sgd_steps_per_epoch"]].itertuples(index=False)]]
    old = tmp_path / "old"
    old.mkdir()
    save_config(cfg, old / "study.json")
    sweep.drop(columns=["update_epochs", "sgd_steps_per_epoch"]).to_csv(
        old / "metrics.csv", index=False)
    got = rebuild_tables(old)["table.md"]
    assert "| carl | 64 | 3 | 4 | 24 | 43.5 [" in got and "control" not in got
    assert got.count("| roach |") == 2
