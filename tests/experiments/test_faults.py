"""Faults of the README catalogue ("What happens when ...") not covered next to their module."""

import pytest

from mo_rl import config as C


def test_missing_map_names_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    from envs.driving import make_driving

    monkeypatch.setenv("MO_RL_CARLA_DIR", str(tmp_path))  # an empty map folder
    monkeypatch.delenv("CARLA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match=r"'Town99\.xodr' not found.*MO_RL_CARLA_DIR"):
        make_driving("Town99")
    with pytest.raises(FileNotFoundError, match=r"route file 'nope\.xml' not found"):
        make_driving("quick", routes="nope.xml")


def test_study_cli_rejects_unknown_preset_and_field(capsys):
    from experiments.demo import PRESETS, DemoConfig

    with pytest.raises(SystemExit):
        C.cli(DemoConfig, PRESETS, args=["--preset", "quik"])
    assert "invalid choice: 'quik'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        C.cli(DemoConfig, PRESETS, args=["--agent.lrr", "0.1"])
    assert "--agent.lrr" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a bad value names the field
        C.cli(DemoConfig, PRESETS, args=["--agent.gamma", "1.5"])
    assert "gamma" in capsys.readouterr().err


def test_study_cli_run_flags():
    from experiments.demo import PRESETS, DemoConfig

    cfg = C.cli(DemoConfig, PRESETS, args=["--preset", "tiny", "--allow-nonfinite"])
    flags = C.run_flags()
    assert cfg == PRESETS["tiny"] and flags.allow_nonfinite and not flags.allow_dirty
    assert flags.command.endswith("--preset tiny --allow-nonfinite")
    C.cli(DemoConfig, PRESETS, args=["--allow-dirty"])
    assert C.run_flags().allow_dirty and not C.run_flags().allow_nonfinite
