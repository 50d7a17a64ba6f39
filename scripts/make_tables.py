"""Rebuild every table under results/ from the stored metrics.

    python scripts/make_tables.py                 # rewrite the tables everywhere
    python scripts/make_tables.py --check         # exit 1 if a table differs; writes nothing
    python scripts/make_tables.py --root results/demo

Two kinds of results folder:
* a runner folder: run.json (with its "table" spec: metrics, group_by, title)
  next to metrics.csv, written by mo_rl.results.write_results; its table.md /
  table.csv are rebuilt by mo_rl.results.rebuilt_tables;
* a study folder results/<study>/<name>/ holding provenance.json or study.json:
  its study-level tables (e.g. the paper table, significance.md) are rebuilt by
  `experiments.<study>.rebuild_tables(folder) -> {file name: text}` from the
  metrics the study stored there and in its runner sub-folders.
Bootstrap CIs use a fixed resampling seed, so rebuilt tables are identical.
"""

from __future__ import annotations

import argparse
import importlib
import io
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mo_rl.results import rebuilt_tables

STUDY_MARKERS = ("provenance.json", "study.json")


def find_studies(root: Path) -> list[Path]:
    return sorted({p.parent for m in STUDY_MARKERS for p in root.rglob(m)})


def find_results(root: Path) -> list[Path]:
    studies = set(find_studies(root))
    return sorted(p.parent for p in root.rglob("run.json")
                  if (p.parent / "metrics.csv").is_file() and p.parent not in studies)


def study_rebuilder(folder: Path) -> Callable[[Path], dict[str, str]]:
    """experiments.<study>.rebuild_tables for results/<study>/<name>/."""
    name = folder.parent.name
    try:
        module = importlib.import_module(f"experiments.{name}")
    except ModuleNotFoundError as e:
        raise SystemExit(f"{folder}: no module experiments.{name} to rebuild its tables") from e
    fn = getattr(module, "rebuild_tables", None)
    if fn is None:
        raise SystemExit(f"{folder}: experiments.{name} has no rebuild_tables(folder)")
    return fn


def same(path: Path, text: str) -> bool:
    """Stored file equals the rebuilt text (CSV files: equal as tables)."""
    if not path.is_file():
        return False
    old = path.read_text()
    if old == text:
        return True
    if path.suffix == ".csv":
        return pd.read_csv(io.StringIO(old)).equals(pd.read_csv(io.StringIO(text)))
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("results"))
    ap.add_argument("--check", action="store_true", help="compare, write nothing")
    args = ap.parse_args(argv)
    jobs = [(d, rebuilt_tables) for d in find_results(args.root)]
    jobs += [(d, study_rebuilder(d)) for d in find_studies(args.root)]
    if not jobs:
        print(f"no results (run.json + metrics.csv, or a study folder) under {args.root}")
        return 0
    bad = []
    for d, rebuild in sorted(jobs, key=lambda j: str(j[0])):
        for name, text in rebuild(d).items():
            ok = same(d / name, text)
            if not ok:
                bad.append(d / name)
                if not args.check:
                    (d / name).write_text(text)
            status = "ok     " if ok else ("differs" if args.check else "rewrote")
            print(f"{status} {d / name}")
    if bad and args.check:
        print(f"{len(bad)} table(s) differ from their stored metrics", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
