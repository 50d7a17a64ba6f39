"""The HERON study end to end at toy size: tables, plots, provenance, make_tables --check."""

import json

import numpy as np
import pandas as pd
import pytest

from experiments.heron import PRESETS, HeronStudyConfig, add_true_return, main
from mo_rl.config import ConfigError
from scripts.make_tables import main as make_tables


def test_heron_tiny_study_writes_tables_that_make_tables_rebuilds(tmp_path):
    root = tmp_path / "results"
    main(["--preset", "tiny", "--results-root", str(root), "--runs-root",
          str(tmp_path / "runs"), "--no-progress", "--scales", "1.0", "--b-grid", "0.1", "1.0",
          "--extra-sigmas", "0.5"])
    out = root / "heron" / "tiny"
    for f in ("table.md", "table.csv", "metrics.csv", "curves.png", "sensitivity.png",
              "study.json", "provenance.json", "command.txt", "timings.json",
              "s1/heron/run.json", "s1/linear/metrics.csv"):
        assert (out / f).is_file(), f
    df = pd.read_csv(out / "metrics.csv")
    ev = df[df.phase == "eval"]
    # every method x seed evaluated; the linear grid's two b values; true return finite
    sizes = ev.groupby(["method", "b"], dropna=False).size()
    assert sizes.tolist() == [2] * 5 and "heron_sigma0.5" in set(ev.method)
    assert np.isfinite(ev["true_return"]).all()
    assert "rm_heldout_accuracy" in df.columns
    md = (out / "table.md").read_text()
    assert "heron" in md and "best linear (tuned b)" in md
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["commands"][0]["command"].startswith("python -m experiments.heron")
    assert make_tables(["--root", str(root), "--check"]) == 0


def test_true_return_undoes_the_scale():
    names = ("theta2", "theta_dot2", "torque2")
    df = pd.DataFrame({"episode_return/theta2": [2.0], "episode_return/theta_dot2": [30.0],
                       "episode_return/torque2": [4.0]})
    got = add_true_return(df, names, 10.0, "theta_dot2")["true_return"].iloc[0]
    assert got == pytest.approx(-(2.0 + 0.1 * 3.0 + 0.001 * 4.0))


def test_presets_are_valid_and_driving_refuses_rescaling():
    for cfg in PRESETS.values():
        assert cfg.seeds >= 2
    assert all(PRESETS[p].seeds >= 5 for p in ("pendulum", "driving"))
    with pytest.raises(ConfigError, match="scales"):
        HeronStudyConfig(agent=PRESETS["driving"].agent, task="driving", scales=(1.0, 10.0))
