"""The runner: determinism, exact resume, clear errors, logs and results."""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pytest

from mo_rl.checkpoint import CheckpointCorruptError, CheckpointMismatchError
from mo_rl.config import ConfigError
from mo_rl.runner import NonFiniteError, RunExistsError, env_identity, run, study_identity
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
    with pytest.raises(CheckpointMismatchError, match=r"agent\.lr: saved 0\.1, now 0\.5"):
        _run(tmp_path, "y", cfg=ToyConfig(num_updates=24, lr=0.5), resume=True)


def _chain_identity(n=5, exit_reward=0.1, wrap=False, seeds=3):
    from envs.toy import Chain
    from mo_rl.wrappers import NormalizeObs

    env = Chain(n=n)
    params = env.default_params.replace(exit_reward=exit_reward)
    study = {"seeds": seeds, "env_preset": "quick", "resume": False, "results_root": "x"}
    return {"env": env_identity(NormalizeObs(env) if wrap else env, params),
            "study": study_identity(study)}


@pytest.mark.parametrize(("changed", "field"), [
    (dict(exit_reward=0.2), r"env\.params\.exit_reward: saved 0\.1\d*, now 0\.2"),
    (dict(n=6), r"env\.stack\.0\.n: saved 5, now 6"),  # a constructor setting of the env
    (dict(wrap=True), r"env\.stack\.0\.class: saved 'envs\.toy\.Chain', now "
                      r"'mo_rl\.wrappers\.NormalizeObs'"),  # the wrapper stack
    (dict(seeds=4), r"study\.seeds: saved 3, now 4"),
])
def test_resume_with_changed_env_or_study_config_is_refused(tmp_path, changed, field):
    """Same agent config and array shapes: only the identity tells the runs apart."""
    _run(tmp_path, "env", stop_after=2, identity=_chain_identity())
    with pytest.raises(CheckpointMismatchError, match=field):
        _run(tmp_path, "env", resume=True, identity=_chain_identity(**changed))
    # run-time fields of the study config (resume, results_root) are not identity
    same = _chain_identity()
    same["study"] = study_identity({**same["study"], "resume": True})
    assert same == _chain_identity()
    r = _run(tmp_path, "env", resume=True, identity=_chain_identity())
    assert r.completed and r.info["resumed_from_chunk"] == 2
    saved = json.loads((r.results_dir / "run.json").read_text())["identity"]
    assert saved["env"]["name"] == "Chain" and saved["study"] == {"seeds": 3,
                                                                   "env_preset": "quick"}


def test_nonfinite_update_stops_the_run_naming_seed_update_and_metric(tmp_path):
    cfg = ToyConfig(num_updates=24, nan_at=10, nan_seeds=(2,))  # chunk 3 = updates 9..12
    with pytest.raises(NonFiniteError, match=r"seed 2, update 10 of 24 \(chunk 3/6\): "
                                             r"non-finite loss\..*holds 2/6 chunks"):
        _run(tmp_path, "nan", cfg=cfg)
    ckpt = tmp_path / "runs" / "toy" / "nan" / "ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == ["chunk_000001", "chunk_000002"]
    assert not (tmp_path / "results" / "toy" / "nan").exists()  # no table from a diverged run
    # the last good checkpoint is intact: a resume recomputes chunk 3 and stops again
    with pytest.raises(NonFiniteError, match="update 10 of 24"):
        _run(tmp_path, "nan", cfg=cfg, resume=True)
    # asked for: trains on, writes the table, and says so
    r = _run(tmp_path, "nan", cfg=cfg, resume=True, allow_nonfinite=True)
    assert r.completed and r.info["nonfinite"]["update"] == 10
    info = json.loads((r.results_dir / "run.json").read_text())
    assert info["nonfinite"] == {"seed": 2, "run": 2, "update": 10, "chunk": 3,
                                 "metrics": ["loss"]}
    assert "NON-FINITE from update 10, seed 2" in (r.results_dir / "table.md").read_text()


def test_nan_loss_without_a_gradient_step_is_not_divergence():
    """IQN's warm-up: NaN loss with learned=False and finite=True must not stop a run;
    an agent without the flag falls back to its loss where it learned."""
    from mo_rl.runner import _first_nonfinite

    nan = np.full((2, 3), np.nan)
    assert _first_nonfinite({"loss": nan, "finite": np.ones((2, 3), bool)}) is None
    learned = np.array([[False, False, True], [False, True, True]])
    loss = np.where(learned, 1.0, np.nan)
    assert _first_nonfinite({"loss": loss, "learned": learned}) is None
    loss[1, 2] = np.inf
    assert _first_nonfinite({"loss": loss, "learned": learned}) == (1, 2)
    finite = np.ones((2, 3), bool)
    finite[1, 1] = finite[0, 2] = False
    assert _first_nonfinite({"finite": finite}) == (1, 1)  # first in time, then run


def test_resume_with_corrupt_checkpoint_raises(tmp_path):
    r = _run(tmp_path, "z", stop_after=2)
    ck = r.run_dir / "ckpt" / "chunk_000002"
    meta = json.loads((ck / "meta.json").read_text())
    meta["sha256"] = "0" * 64
    (ck / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointCorruptError, match="corrupt: array data SHA-256"):
        _run(tmp_path, "z", resume=True)
    (ck / "meta.json").unlink()  # an interrupted save: the chunk metrics are all there
    assert (r.run_dir / "chunk_metrics" / "chunk_000001.npz").is_file()
    with pytest.raises(CheckpointCorruptError, match="incomplete"):
        _run(tmp_path, "z", resume=True)


def test_resume_with_missing_chunk_metrics_raises(tmp_path):
    r = _run(tmp_path, "m", stop_after=2)
    (r.run_dir / "chunk_metrics" / "chunk_000001.npz").unlink()  # checkpoint itself is fine
    with pytest.raises(CheckpointCorruptError, match="metrics of chunk 1"):
        _run(tmp_path, "m", resume=True)


def test_command_history_keeps_the_training_version(tmp_path):
    _run(tmp_path, "h", stop_after=2, command="python -m toy --first")
    _run(tmp_path, "h", resume=True, command="python -m toy --resume")
    for i in range(2):  # re-evaluate a complete run twice
        r = _run(tmp_path, "h", resume=True, command=f"python -m toy --again {i}")
    info = json.loads((r.results_dir / "run.json").read_text())
    cmds = info["commands"]
    assert [c["kind"] for c in cmds] == ["train", "resume", "re-evaluate", "re-evaluate"]
    assert [c["command"] for c in cmds] == ["python -m toy --first", "python -m toy --resume",
                                            "python -m toy --again 0", "python -m toy --again 1"]
    assert cmds[0]["chunks"] == [0, 2] and cmds[1]["chunks"] == [2, 6]
    assert all({"commit", "dirty", "describe"} <= c["code_version"].keys() for c in cmds)
    # overwriting starts a new history
    r = _run(tmp_path, "h", overwrite=True, command="python -m toy --new")
    cmds = json.loads((r.results_dir / "run.json").read_text())["commands"]
    assert [c["command"] for c in cmds] == ["python -m toy --new"]


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
    assert info["device"]["backend"] == jax.default_backend()
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
