"""The runner: determinism, exact resume, clear errors, logs and results."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mo_rl.checkpoint import CheckpointCorruptError, CheckpointMismatchError
from mo_rl.config import ConfigError
from mo_rl.runner import RunExistsError, run
from tests.mo_rl.toy_agent import ToyConfig, make_agent

CFG = ToyConfig(num_updates=24)
SEEDS = [0, 1, 2, 3]


def _run(tmp_path, name, cfg=CFG, **kw):
    kw = {"num_chunks": 6, "objectives": ["x", "y"], "progress": False,
          "runs_root": tmp_path / "runs", "results_root": tmp_path / "results", **kw}
    return run(make_agent, cfg, SEEDS, study="toy", run_name=name, **kw)


def _assert_same(r1, r2):
    assert r1.train.keys() == r2.train.keys()
    for k in r1.train:
        np.testing.assert_array_equal(r1.train[k], r2.train[k])
    for k in r1.eval:
        np.testing.assert_array_equal(r1.eval[k], r2.eval[k])


def test_determinism_same_config_same_metrics(tmp_path):
    a = _run(tmp_path, "a", results_root=None)
    b = _run(tmp_path, "b", results_root=None)
    _assert_same(a, b)
    assert a.train["loss"].shape == (4, 24)
    assert a.train["episode_return"].shape == (4, 24, 2)
    np.testing.assert_array_equal(a.train["env_steps"][:, -1], 24 * CFG.batch)
    c = run(make_agent, CFG, [5, 6, 7, 8], study="toy", run_name="c", num_chunks=6,
            progress=False, runs_root=tmp_path / "runs", results_root=None)
    assert not np.array_equal(a.train["loss"], c.train["loss"])  # seeds matter


def test_resume_is_exact(tmp_path):
    full = _run(tmp_path, "full", checkpoint_every=2)
    part = _run(tmp_path, "part", checkpoint_every=2, stop_after=3)  # "killed" after chunk 3
    assert not part.completed and part.train["loss"].shape == (4, 12)
    # the checkpoint is after chunk 2 (every 2): chunk 3 is recomputed on resume
    done = _run(tmp_path, "part", checkpoint_every=2, resume=True)
    assert done.completed and done.info["resumed_from_chunk"] == 2
    _assert_same(full, done)
    m_full = pd.read_csv(full.results_dir / "metrics.csv")
    m_done = pd.read_csv(done.results_dir / "metrics.csv")
    pd.testing.assert_frame_equal(m_full, m_done)
    # the live log of the resumed run holds each update exactly once
    tr = pd.read_csv(done.run_dir / "train.csv")
    assert len(tr) == 4 * 24 and not tr.duplicated(["seed", "update"]).any()


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    _run(tmp_path, "x", stop_after=2)
    with pytest.raises(RunExistsError, match="resume=True"):
        _run(tmp_path, "x")
    r = _run(tmp_path, "x", overwrite=True)
    assert r.completed and r.info["resumed_from_chunk"] == 0


def test_resume_with_other_config_raises(tmp_path):
    _run(tmp_path, "y", stop_after=2)
    with pytest.raises(CheckpointMismatchError, match="config hash"):
        _run(tmp_path, "y", cfg=ToyConfig(num_updates=24, lr=0.5), resume=True)


def test_resume_with_corrupt_checkpoint_raises(tmp_path):
    r = _run(tmp_path, "z", stop_after=2)
    ck = r.run_dir / "ckpt" / "chunk_000002"
    meta = json.loads((ck / "meta.json").read_text())
    meta["sha256"] = "0" * 64
    (ck / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointCorruptError, match="corrupt"):
        _run(tmp_path, "z", resume=True)
    shutil.rmtree(r.run_dir / "chunk_metrics")
    (ck / "meta.json").unlink()
    with pytest.raises(CheckpointCorruptError, match="incomplete"):
        _run(tmp_path, "z", resume=True)


def test_bad_chunking_names_field(tmp_path):
    with pytest.raises(ConfigError, match="num_chunks"):
        _run(tmp_path, "w", num_chunks=5)


def test_results_written(tmp_path):
    r = _run(tmp_path, "res")
    d = r.results_dir
    for f in ("config.json", "run.json", "metrics.csv", "table.md", "table.csv", "curves.png"):
        assert (d / f).is_file(), f
    info = json.loads((d / "run.json").read_text())
    assert {"describe", "commit", "dirty"} <= info["code_version"].keys()
    assert info["device"]["backend"] == "cpu"
    table = pd.read_csv(d / "table.csv")
    row = table[table.metric == "greedy_value"].iloc[0]
    np.testing.assert_allclose(row["mean"], r.eval["greedy_value"].mean(), rtol=1e-6)
    assert row["n"] == len(SEEDS)
    assert "| episode_return/x |" in (d / "table.md").read_text()


def test_grid_run_groups_table(tmp_path):
    from mo_rl.sweep import make_grid

    grid = make_grid(lr=[0.05, 0.2], w=[[1.0, 0.0], [0.0, 1.0]])
    r = _run(tmp_path, "grid", grid=grid, num_chunks=2)
    assert r.train["loss"].shape == (16, 24)
    table = pd.read_csv(r.results_dir / "table.csv")
    assert set(table.columns) >= {"lr", "w", "metric", "mean"}
    assert len(table[table.metric == "greedy_value"]) == 4


def test_in_loop_progress_matches(tmp_path, capsys):
    a = _run(tmp_path, "p0", results_root=None)
    b = _run(tmp_path, "p1", results_root=None, progress=True, in_loop_progress=True,
             progress_every=2)
    _assert_same(a, b)
    assert "steps/s" in capsys.readouterr().err
