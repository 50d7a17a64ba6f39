"""The demo study end to end at toy size: tables, provenance, make_tables --check."""

import json

from experiments.demo import main
from scripts.make_tables import main as make_tables


def test_demo_writes_tables_that_make_tables_rebuilds(tmp_path):
    root = tmp_path / "results"
    args = ["--preset", "tiny", "--results-root", str(root), "--runs-root",
            str(tmp_path / "runs"), "--no-progress"]
    main(args)
    out = root / "demo" / "tiny"
    for f in ("table.md", "table.csv", "significance.md", "metrics.csv", "provenance.json",
              "command.txt", "lexicographic/run.json", "weighted_sum/table.md"):
        assert (out / f).is_file(), f
    prov = json.loads((out / "provenance.json").read_text())
    assert [c["kind"] for c in prov["commands"]] == ["train"]
    assert prov["commands"][0]["command"].startswith("python -m experiments.demo --preset tiny")
    assert {"commit", "dirty", "describe"} <= prov["code_version"].keys()
    assert make_tables(["--root", str(root), "--check"]) == 0
    sig = (out / "significance.md").read_text()
    (out / "significance.md").write_text(sig.replace("| episode_length |", "| episode_len |"))
    assert make_tables(["--root", str(root), "--check"]) == 1  # study-level tables are checked
    assert (out / "significance.md").read_text() != sig  # --check wrote nothing
    assert make_tables(["--root", str(root)]) == 0
    assert (out / "significance.md").read_text() == sig
    # a resume of the complete runs only re-evaluates and keeps the training entry
    main([*args, "--resume"])
    prov = json.loads((out / "provenance.json").read_text())
    assert [c["kind"] for c in prov["commands"]] == ["train", "re-evaluate"]
