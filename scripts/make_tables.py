"""Rebuild every table under results/ from the stored metrics.csv files.

    python scripts/make_tables.py                 # rewrite table.md / table.csv everywhere
    python scripts/make_tables.py --check         # exit 1 if a stored table differs
    python scripts/make_tables.py --root results/demo

A results directory is any folder holding run.json (with its "table" spec:
metrics, group_by, title) next to metrics.csv; both are written by
mo_rl.results.write_results and by study scripts such as experiments/demo.py.
Bootstrap CIs use a fixed resampling seed, so rebuilt tables are identical.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from mo_rl.results import rebuild_table


def find_results(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("run.json") if (p.parent / "metrics.csv").is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("results"))
    ap.add_argument("--check", action="store_true", help="compare, do not write")
    args = ap.parse_args(argv)
    dirs = find_results(args.root)
    if not dirs:
        print(f"no results (run.json + metrics.csv) under {args.root}")
        return 0
    bad = []
    for d in dirs:
        old = pd.read_csv(d / "table.csv") if (d / "table.csv").is_file() else None
        old_md = (d / "table.md").read_text() if (d / "table.md").is_file() else None
        md = rebuild_table(d)
        new = pd.read_csv(d / "table.csv")
        same = old is not None and old.equals(new) and old_md == md
        if args.check and not same:
            bad.append(d)
            if old is not None:  # restore what was there; --check never changes files
                old.to_csv(d / "table.csv", index=False)
            if old_md is not None:
                (d / "table.md").write_text(old_md)
        print(f"{'ok     ' if same else 'changed'} {d}/table.md")
    if bad:
        print(f"{len(bad)} table(s) differ from their metrics.csv", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
