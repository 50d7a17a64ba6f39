"""Results: metric flattening, tables against hand-computed stats, plots, rebuild, logging."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from mo_rl import stats
from mo_rl.config import load_config
from mo_rl.metrics_log import MetricsLogger, flatten_metrics
from mo_rl.progress import ProgressLine, summarize_chunk
from mo_rl.results import plot_curves, rebuild_table, table_from_metrics, write_results
from scripts.make_tables import main as make_tables
from tests.mo_rl.toy_agent import ToyConfig


def _train(seeds=(0, 1, 2), u=5):
    s = len(seeds)
    rng = np.random.default_rng(0)
    ret = rng.normal(size=(s, u, 2))
    ret[:, 1] = np.nan  # no episode finished in update 2
    return {
        "env_steps": np.tile(np.arange(1, u + 1) * 10, (s, 1)),
        "episode_return": ret,
        "loss": rng.normal(size=(s, u)),
    }


def test_flatten_metrics_layout():
    m = _train()
    df = flatten_metrics(m, [0, 1, 2], ["safety", "progress"], update_offset=5)
    assert list(df.columns) == ["phase", "seed", "update", "env_steps", "episode_return/safety",
                                "episode_return/progress", "loss"]
    assert len(df) == 15 and df["update"].min() == 6 and df["update"].max() == 10
    row = df[(df.seed == 1) & (df["update"] == 8)].iloc[0]
    assert row["episode_return/progress"] == m["episode_return"][1, 2, 1]
    ev = flatten_metrics({"ret": np.ones((3, 2)), "x": np.arange(3.0)}, [0, 1, 2], ["a", "b"],
                         update_offset=5, phase="eval")
    assert list(ev.columns) == ["phase", "seed", "update", "ret/a", "ret/b", "x"]
    assert (ev["update"] == 5).all()


def test_table_matches_stats():
    ev = pd.DataFrame({"phase": "eval", "seed": range(6), "update": 9,
                       "score": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]})
    t = table_from_metrics(ev)
    r = t.iloc[0]
    assert r["metric"] == "score" and r["n"] == 6
    assert r["mean"] == pytest.approx(63 / 6)
    assert r["iqm"] == pytest.approx(stats.iqm(ev.score))
    assert (r["ci_low"], r["ci_high"]) == stats.bootstrap_ci(ev.score.to_numpy())


def test_write_results_and_rebuild(tmp_path):
    m = _train()
    df = pd.concat([
        flatten_metrics(m, [0, 1, 2], ["safety", "progress"]),
        flatten_metrics({"score": np.array([1.0, 2.0, 3.0])}, [0, 1, 2], ["safety", "progress"],
                        update_offset=5, phase="eval"),
    ], ignore_index=True)
    cfg = ToyConfig(lr=0.3)
    md = write_results(tmp_path, config=cfg, metrics=df, run_info={"seeds": [0, 1, 2]},
                       title="t")
    assert "| score | 2 |" in md and "| 3 |" in md  # mean 2, n seeds 3
    assert load_config(ToyConfig, tmp_path / "config.json") == cfg
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["table"]["title"] == "t" and info["seeds"] == [0, 1, 2]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    before = (tmp_path / "table.md").read_text()
    (tmp_path / "table.md").write_text("stale")
    assert rebuild_table(tmp_path) == before
    assert make_tables(["--root", str(tmp_path), "--check"]) == 0
    (tmp_path / "table.csv").write_text("metric,mean\nscore,99\n")
    assert make_tables(["--root", str(tmp_path), "--check"]) == 1
    assert make_tables(["--root", str(tmp_path)]) == 0
    assert make_tables(["--root", str(tmp_path), "--check"]) == 0


def test_plot_curves_per_objective(tmp_path):
    df = flatten_metrics(_train(), [0, 1, 2], ["safety", "progress"])
    cols = plot_curves(df, tmp_path / "c.png")
    assert cols == ["episode_return/safety", "episode_return/progress"]
    assert (tmp_path / "c.png").is_file()


def test_logger_csv_jsonl(tmp_path):
    df = flatten_metrics(_train(), [0, 1, 2], ["a", "b"])
    with MetricsLogger(tmp_path) as log:
        log.log(df.iloc[:6])
        log.log(df.iloc[6:])
    back = pd.read_csv(tmp_path / "train.csv")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 15 and rows[1]["episode_return/a"] is None  # NaN -> null
    with pytest.raises(ImportError, match="tensorboardX"):
        MetricsLogger(tmp_path / "tb", tensorboard=True)


def test_progress_line_and_chunk_summary():
    steps, ret = summarize_chunk(_train())
    assert steps == 150  # 3 seeds x 50 steps
    np.testing.assert_allclose(ret, np.nanmean(_train()["episode_return"].reshape(-1, 2), 0))
    buf = io.StringIO()
    p = ProgressLine(300, ["safety", "progress"], stream=buf, log_every_s=0)
    p.start()
    p.update(steps, ret)
    p.update(200, [np.nan, 1.0])  # NaN keeps the previous value
    p.close()
    out = buf.getvalue()
    assert "steps 150/300" in out and "steps/s" in out and "ETA" in out
    assert f"safety={ret[0]:.3g}" in out.splitlines()[-1] and "progress=1" in out


def _git_repo(path):
    import subprocess

    def git(*a):
        subprocess.run(["git", *a], cwd=path, check=True, capture_output=True)

    path.mkdir()
    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    (path / ".gitignore").write_text("runs/\n")
    (path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-qm", "init")
    return path


def test_results_refuse_a_dirty_tree_unless_allowed(tmp_path):
    from mo_rl.results import DirtyTreeError, check_clean, code_version, provenance

    repo = _git_repo(tmp_path / "repo")
    out = repo / "results" / "s" / "r"
    ver = check_clean(out, repo=repo)  # clean: fine
    assert ver["dirty"] is False and not ver["describe"].endswith("-dirty")
    (repo / "results" / "s").mkdir(parents=True)  # a run's own output is not a change
    (repo / "results" / "s" / "old.csv").write_text("a\n")
    assert code_version(repo)["dirty"] is False
    (repo / "code.py").write_text("x = 2\n")  # a tracked change
    assert code_version(repo)["describe"].endswith("-dirty")
    with pytest.raises(DirtyTreeError, match="--allow-dirty"):
        check_clean(out, repo=repo)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "new_module.py").write_text("y = 3\n")  # an untracked file counts too
    with pytest.raises(DirtyTreeError):
        provenance(out, command="c", kind="train", repo=repo)
    # outside the repository or under an ignored folder: recorded, not refused
    assert check_clean(tmp_path / "elsewhere", repo=repo)["dirty"] is True
    assert check_clean(repo / "runs" / "x", repo=repo)["dirty"] is True
    # allowed: the patch is stored next to the results
    prov = provenance(out, command="c", kind="train", allow_dirty=True, repo=repo)
    assert prov["code_version"]["patch"] == "patch.diff"
    assert "+y = 3" in (out / "patch.diff").read_text()
    assert prov["commands"][0]["command"] == "c"
